"""Data files shipped with the protocol core."""
