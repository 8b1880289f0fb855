"""sim_backends."""
