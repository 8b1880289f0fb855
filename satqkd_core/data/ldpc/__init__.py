"""LDPC mother codes (parity-check matrices), written by satqkd_core.ldpc_construction."""
