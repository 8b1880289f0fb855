"""`python -m benchmarks [--quick] [--json FILE]`: measure the figures of docs/performance.md.

Each module `benchmarks/bench_*.py` provides `figures(quick: bool) -> list[dict]` with
`{"name", "value", "unit", "params"}`; this runner prints one line per figure and, with
--json, writes them all as a list.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

import benchmarks


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark module and report its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--only", default=None, help="run only modules whose name contains this")
    args = parser.parse_args(argv)
    figures: list[dict] = []
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    for name in names:
        if args.only and args.only not in name:
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        for figure in module.figures(args.quick):
            figure.setdefault("params", {})
            figures.append(figure)
            value = figure["value"]
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            print(f"{figure['name']:<40} {shown:>14} {figure['unit']:<12} {figure['params']}")
            sys.stdout.flush()
        print(f"# {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.json:
        meta = {"python": platform.python_version(), "machine": platform.machine()}
        for figure in figures:
            figure["params"].setdefault("host", meta)
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
