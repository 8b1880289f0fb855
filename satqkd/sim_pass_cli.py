"""`satqkd sim pass`: one simulated pass end to end, with progress on stderr.

Its arguments are registered by :func:`register_sim_pass` (under the `sim` group that
satqkd/cli.py builds) and run by :func:`run_sim_pass`; the argument types, exit statuses and the
one-line failure come from satqkd/cli.py.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from satqkd.cli import (
    EXIT_NO_KEY,
    EXIT_USAGE,
    _broker_url,
    _fail,
    _non_negative,
    _output_dir,
    _positive,
    _seed,
)


def register_sim_pass(sim: argparse._SubParsersAction) -> None:
    """Control: add `pass` and its arguments to the `sim` group's subcommands."""
    parser = sim.add_parser("pass", help="run one simulated pass end to end")
    parser.add_argument("config", help="scenario YAML (configs/scenarios/...)")
    parser.add_argument("--seed", type=_seed, default=None, help="override the scenario's seed")
    parser.add_argument(
        "--out",
        type=_output_dir,
        default=None,
        help="output directory, new or empty (default runs/<time>); one holding an earlier "
        "run is refused unless --force",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="clear an earlier run from --out first (its keys erased, report, archives, plots)",
    )
    parser.add_argument(
        "--require-key",
        action="store_true",
        help=f"exit with status {EXIT_NO_KEY} when the pass gives no key (default: 0, key or not)",
    )
    parser.add_argument(
        "--csv", action="store_true", help="also write the archives as frames.csv and atp.csv"
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="write no plots (batch runs: ~2 s less a pass)"
    )
    parser.add_argument(
        "--broker", type=_broker_url, default=None, help="mqtt://HOST:PORT (default: embedded)"
    )
    parser.add_argument("--max-duration-s", type=_positive, default=None, help="cap QKD time")
    parser.add_argument(
        "--start-after-aos-s",
        type=_non_negative,
        default=None,
        help="start QKD no earlier than this after AOS (e.g. a short pass near culmination)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--instruments",
        choices=("in-process", "emulator"),
        default=None,
        help="reach every instrument in-process or through its wire-level emulator on a port "
        "(the shipped benches sim-{payload,station}[-emulated].yaml; default: the benches the "
        "scenario names in simulation.benches)",
    )


def run_sim_pass(args: argparse.Namespace) -> int:
    """Control: run `satqkd sim pass`; get its exit status."""
    from satqkd.api import (
        clear_earlier_run,
        earlier_run_outputs,
        execute_pass,
        with_start_after_aos,
    )
    from satqkd.assembly import AssemblyError
    from satqkd.config import load_scenario
    from satqkd.report import explain_no_key
    from satqkd.simulation import SimulationError

    if args.broker is not None and args.broker.startswith("mqtts:"):
        return _fail(
            "--broker: a simulated pass runs every node in one process and takes plain mqtt:// "
            "only; give a test broker (or none: an embedded one)",
            EXIT_USAGE,
        )
    scenario = load_scenario(args.config, seed=args.seed)
    if args.max_duration_s is not None and args.max_duration_s <= 0:
        return _fail("--max-duration-s must be positive", EXIT_USAGE)
    scenario = with_start_after_aos(scenario, args.start_after_aos_s)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out) if args.out else Path("runs") / stamp
    earlier = earlier_run_outputs(out_dir)
    if earlier and not args.force:
        # a second run would find the first run's keys beside its own report
        return _fail(
            f"--out {out_dir}: already holds an earlier run ({', '.join(earlier)}); "
            "give a new or empty directory, or --force to clear it first",
            EXIT_USAGE,
        )
    if earlier:
        clear_earlier_run(out_dir)
        if not args.quiet:
            print(f"satqkd: cleared the earlier run in {out_dir}", file=sys.stderr)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create output directory {out_dir}: {exc.strerror}", EXIT_USAGE)
    if not args.quiet and not _kernels_cached():
        print("satqkd: compiling kernels (first run only, ~20 s)", file=sys.stderr, flush=True)
    progress = None if args.quiet else _progress_lines(sys.stderr)
    run = functools.partial(
        execute_pass, scenario, out_dir, broker_url=args.broker,
        max_duration_s=args.max_duration_s, instruments=args.instruments, csv=args.csv,
        plots=not args.no_plots,
    )  # fmt: skip
    try:
        if progress is not None and sys.stderr.isatty():
            result = _run_with_progress(run)
        else:
            result = run(progress=progress)
    except (SimulationError, AssemblyError) as exc:
        return _fail(str(exc))
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    report = result.report
    if not args.quiet:
        key = report["key"]
        outcome = (
            f"{key['secret_key_bits']} secret key bits, payload and station digests "
            f"{'equal' if key['sha256_payload'] == key['sha256_ogs'] else 'DIFFER'}"
            if key["secret_key_bits"]
            else f"no key: {explain_no_key(report, result.culmination_after_aos_s)}"
        )
        q = report["quantum"]
        print(
            f"{report['mission']} over {report['station']}, max elevation "
            f"{report['pass']['max_elevation_deg']:.1f} deg: {q['detections']} detections, "
            f"{q['sifted_bits']} sifted bits, QBER {100 * q['qber']:.2f} %: {outcome}.\n"
            f"Report: {out_dir / 'report.json'}"
        )
    if args.require_key and not report["key"]["secret_key_bits"]:
        return EXIT_NO_KEY
    return 0


def _kernels_cached() -> bool:
    """Get: whether numba's cache holds the synchronisation kernels (every pass compiles them
    on the first run, ~20 s, and loads them afterwards)."""
    import importlib.util

    spec = importlib.util.find_spec("satqkd_core.sync_tracking")
    if spec is None or spec.origin is None:
        return False
    places = [Path(spec.origin).parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    places.append(Path.home() / ".cache" / "numba")
    return any(next(place.rglob("sync_tracking.*.nbi"), None) for place in places if place.is_dir())


def _progress_lines(stream: Any, step: float = 0.1):
    """Get: a progress callback writing one plain line per `step` of the pass (for output
    that is not a terminal: a log file, a pipe, CI)."""
    state = {"next": 0.0}

    def progress(fraction: float, text: str) -> None:
        if fraction + 1e-9 >= state["next"] or fraction >= 1.0:
            print(f"pass: {100 * fraction:5.1f} % {text}", file=stream, flush=True)
            state["next"] = (int(fraction / step + 1e-9) + 1) * step

    return progress


def _run_with_progress(run: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]pass[/bold]"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("starting: plan, instruments, daemons", total=1.0)

        def progress(fraction: float, text: str) -> None:
            bar.update(task, completed=fraction, description=text)

        return run(progress=progress)
