"""`satqkd sim night SCENARIO [--seed N] [--out DIR] [--quiet]`: one station, several
missions, one night (satqkd.night_run; docs/missions.md, "Several missions in one night").

Registered under the `sim` group by satqkd/cli.py, as `sim pass` is. Exit status: 0 when every
held pass was flown (key or not), 2 for a user's mistake (one line `satqkd: ...`), 1 when a
pass could not run.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from satqkd.cli import EXIT_USAGE, _fail, _output_dir, _seed


def register_sim_night(sim: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Control: add `night` and its arguments to the `sim` group's subcommands."""
    parser = sim.add_parser(
        "night", help="one station, several missions, one night: every pass end to end"
    )
    parser.add_argument("config", help="night scenario YAML (configs/scenarios/night-*.yaml)")
    parser.add_argument("--seed", type=_seed, default=None, help="override the scenario's seed")
    parser.add_argument(
        "--out",
        type=_output_dir,
        default=None,
        help="output directory, new or empty (default runs/night-<time>)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _summary(report: dict[str, Any]) -> list[str]:
    lines = []
    for row in report["passes"]:
        outcome = (
            f"{row['secret_key_bits']} bits, digests "
            f"{'equal' if row['digests_equal'] else 'DIFFER'}"
            if row["secret_key_bits"]
            else f"no key: {row['no_key_reason']}"
        )
        lines.append(
            f"  {row['index']}. {row['mission']} ({row['protocol']}) AOS {row['aos_utc']}, "
            f"max {row['max_elevation_deg']:.1f} deg, QKD {row['qkd_duration_s']:.0f} s: "
            f"QBER {100 * row['qber']:.2f} %, {outcome}"
        )
    for refused in report["refused"]:
        lines.append(
            f"  refused {refused['mission']} AOS {refused['aos_utc']}: {refused['reason']}"
        )
    for name, total in report["missions"].items():
        lines.append(
            f"  {name}: {total['passes_flown']} pass(es), {total['secret_key_bits']} key bits, "
            f"station store {total['station_key_store']}"
        )
    return lines


def run_sim_night(args: argparse.Namespace) -> int:
    """Control: run `satqkd sim night`; get its exit status."""
    from satqkd.assembly import AssemblyError
    from satqkd.night_run import load_night, run_night
    from satqkd.simulation import SimulationError

    night = load_night(args.config, seed=args.seed)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out) if args.out else Path("runs") / f"night-{stamp}"
    if out_dir.exists() and any(out_dir.iterdir()):
        return _fail(f"--out {out_dir}: not empty; give a new or empty directory", EXIT_USAGE)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create output directory {out_dir}: {exc.strerror}", EXIT_USAGE)

    def progress(text: str) -> None:
        print(f"night: {text}", file=sys.stderr, flush=True)

    try:
        night_run, wall = run_night(night, out_dir, None if args.quiet else progress)
    except (SimulationError, AssemblyError) as exc:
        return _fail(str(exc))
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    if not args.quiet:
        report = night_run.report
        print(
            f"{report['night']} at {report['station']}: {len(report['passes'])} pass(es) "
            f"flown, {len(report['refused'])} refused, "
            f"{report['station_missions']['profile_switches']} profile switch(es), "
            f"{wall:.0f} s"
        )
        print("\n".join(_summary(report)))
        print(f"Report: {out_dir / 'night.json'}, plot: {out_dir / 'night-timeline.png'}")
    return 0
