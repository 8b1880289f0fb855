"""satqkd."""
