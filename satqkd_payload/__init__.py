"""satqkd_payload."""
