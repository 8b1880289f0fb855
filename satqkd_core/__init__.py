"""satqkd_core."""
