"""satqkd_ogs."""
