# Type stubs for the part of sgp4 (no py.typed marker) that satqkd_core uses; see api.pyi.
