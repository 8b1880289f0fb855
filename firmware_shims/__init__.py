"""firmware_shims."""
