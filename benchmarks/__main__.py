"""`python -m benchmarks [--quick] [--json FILE]`: measure the figures of docs/performance.md.

Each module `benchmarks/bench_*.py` provides `figures(quick: bool) -> list[dict]` with
`{"name", "value", "unit", "params"}`; this runner prints one line per figure and, with
--json, writes them all as a list. With `--repeat N` each module runs N times and every figure
is the median of its N values (`median_figures`): on a shared machine a single run of a rate
can move by 2x.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import statistics
import sys
import time
from pathlib import Path

import benchmarks


def median_figures(runs: list[list[dict]]) -> list[dict]:
    """One module's figures from several runs of it: each figure the run whose value is the
    median (the lower middle one for an even count: a value that was measured, with its own
    params), its params adding every run's value (`repeat_values`, in run order).

    The runs must give the same figures in the same order (name and unit); ValueError if not.
    """
    if not runs:
        raise ValueError("median_figures needs at least one run")
    first = runs[0]
    for index, run in enumerate(runs[1:], start=2):
        shape = [(f["name"], f["unit"]) for f in run]
        if shape != [(f["name"], f["unit"]) for f in first]:
            raise ValueError(f"run {index} gave other figures than run 1: {shape}")
    if len(runs) == 1:
        return first
    merged = []
    for position in range(len(first)):
        versions = [run[position] for run in runs]
        values = [figure["value"] for figure in versions]
        middle = statistics.median_low(values)
        chosen = versions[values.index(middle)]
        params = {**chosen.get("params", {}), "repeat_values": values}
        merged.append({**chosen, "params": params})
    return merged


def _show(figure: dict) -> None:
    value = figure["value"]
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    print(f"{figure['name']:<40} {shown:>14} {figure['unit']:<12} {figure['params']}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark module and report its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--only", default=None, help="run only modules whose name contains this")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each module N times; report each median"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    figures: list[dict] = []
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    for name in names:
        if args.only and args.only not in name:
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        runs = []
        for run in range(args.repeat):
            results = module.figures(args.quick)
            for figure in results:
                figure.setdefault("params", {})
            runs.append(results)
            if args.repeat > 1:
                print(f"# {name}: run {run + 1} of {args.repeat} done", file=sys.stderr)
        try:
            merged = median_figures(runs)
        except ValueError as exc:
            print(f"python -m benchmarks: {name}: {exc}", file=sys.stderr)
            return 1
        for figure in merged:
            _show(figure)
        figures.extend(merged)
        print(f"# {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.json:
        meta = {"python": platform.python_version(), "machine": platform.machine()}
        for figure in figures:
            figure["params"].setdefault("host", meta)
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
