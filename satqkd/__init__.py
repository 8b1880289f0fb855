"""satqkd: the application (command line, configs, simulation harness, reports) and the
Python API for notebooks: `satqkd.run_pass(scenario, seed=..., ...)` (satqkd.api)."""

from __future__ import annotations

from typing import Any

__all__ = ["PassResult", "__version__", "load_pass", "run_pass"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("satqkd")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()


def __getattr__(name: str) -> Any:
    # the API pulls in the whole stack: imported on first use, not by `satqkd --help`
    if name in ("run_pass", "load_pass", "PassResult"):
        from satqkd import api

        return getattr(api, name)
    raise AttributeError(f"module 'satqkd' has no attribute {name!r}")
