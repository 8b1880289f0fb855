"""`satqkd sim network SCENARIO --seed N --out DIR`: a QKD network over simulated days
(docs/network.md).

A subcommand of the `sim` group that satqkd/cli.py builds: `register_sim_network` adds it, and
`run_sim_network` runs it (satqkd.network_run does the work). Writes DIR/network-report.json,
DIR/plan-timeline.png, DIR/key-inventory.png, DIR/timing.json, each node's key stores under
DIR/nodes/ and DIR/fibre/.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from satqkd.cli import EXIT_USAGE, _fail, _output_dir, _seed

GROUP = "sim"
COMMAND = "network"
_OUTPUTS = ("network-report.json", "nodes", "fibre", "chains")


def register_sim_network(sim: argparse._SubParsersAction) -> None:
    """Control: add `network` and its arguments to the `sim` group's subcommands."""
    parser = sim.add_parser(
        COMMAND, help="OCC plan, passes with the daemons, relays and fibre over simulated days"
    )
    parser.add_argument("config", help="network scenario YAML (kind: network)")
    parser.add_argument("--seed", type=_seed, default=None, help="override the scenario's seed")
    parser.add_argument(
        "--out",
        type=_output_dir,
        default=None,
        help="output directory, new or empty (default runs/network-<time>)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--no-plots", action="store_true", help="write no plots")


def run_sim_network(args: argparse.Namespace) -> int:
    """Control: run `satqkd sim network`; get its exit status."""
    from satqkd.assembly import AssemblyError
    from satqkd.network_plots import write_network_plots
    from satqkd.network_report import build_network_report, write_network_report
    from satqkd.network_run import run_network
    from satqkd.network_scenario import load_network_scenario
    from satqkd.relay_run import RelayError

    path = Path(args.config)
    scenario = load_network_scenario(path, seed=args.seed)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else Path("runs") / f"network-{stamp}"
    earlier = [name for name in _OUTPUTS if (out / name).exists()]
    if earlier:
        return _fail(
            f"--out {out}: already holds an earlier run ({', '.join(earlier)}); give a new or "
            "empty directory",
            EXIT_USAGE,
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create output directory {out}: {exc.strerror}", EXIT_USAGE)

    def say(line: str) -> None:
        if not args.quiet:
            print(f"network: {line}", file=sys.stderr, flush=True)

    try:
        run = run_network(scenario, path, out, say)
    except RelayError as exc:
        return _fail(f"relay: {exc}")
    except AssemblyError as exc:  # an instrument of a pass's bench that cannot be reached
        return _fail(str(exc))
    report = build_network_report(run)
    report_path = write_network_report(report, run, out)
    if not args.no_plots:
        write_network_plots(run, out)
    if not args.quiet:
        passes = report["passes"]
        print(
            f"{scenario.name}: {passes['planned']} passes planned, {passes['flown']} flown, "
            f"{passes['lost_to_weather']} lost to weather, {passes['failed']} failed; "
            f"{len(report['relays'])} relays, {len(report['fibre_deliveries'])} fibre "
            f"deliveries; demand met {report['demand_met']} of {report['demand_total']}"
        )
        for d in report["demand"]:
            print(
                f"  {d['id']}: {d['delivered_bits']} of {d['bits']} bits "
                f"{'met' if d['met'] else 'NOT met'}"
            )
        for c in report.get("chains", []):
            state = "met, digests equal" if c["digests_equal"] else f"NOT met: {c['refused']}"
            print(f"  chain {c['id']} {'-'.join(c['path'])}: {c['bits']} bits {state}")
        print(f"Report: {report_path}")
    return 0
