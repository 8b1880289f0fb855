"""The `satqkd` command line.

User mistakes (a bad config, a missing file, a broker that is not there) end with one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

from satqkd.config import ConfigError

EXIT_USAGE = 2
EXIT_FAILED = 1


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"satqkd: {message}", file=sys.stderr)
    return status


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="satqkd", description="Satellite QKD payload and ground-station control stack."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="group", required=True)

    sim = sub.add_parser("sim", help="simulations").add_subparsers(dest="command", required=True)
    sim_pass = sim.add_parser("pass", help="run one simulated pass end to end")
    sim_pass.add_argument("config", help="scenario YAML (configs/scenarios/...)")
    sim_pass.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    sim_pass.add_argument("--out", default=None, help="output directory (default runs/<time>)")
    sim_pass.add_argument("--broker", default=None, help="mqtt://HOST:PORT (default: embedded)")
    sim_pass.add_argument("--max-duration-s", type=float, default=None, help="cap QKD time")
    sim_pass.add_argument(
        "--start-after-aos-s",
        type=float,
        default=None,
        help="start QKD no earlier than this after AOS (e.g. a short pass near culmination)",
    )
    sim_pass.add_argument("--quiet", action="store_true", help="no progress output")
    sim_pass.add_argument(
        "--instruments",
        choices=("in-process", "emulator"),
        default=None,
        help="reach every instrument in-process or through its wire-level emulator on a port "
        "(the shipped benches sim-{payload,station}[-emulated].yaml; default: the benches the "
        "scenario names in simulation.benches)",
    )
    sim_emulator = sim.add_parser(
        "emulator", help="serve one instrument emulator on its own until interrupted"
    )
    sim_emulator.add_argument(
        "name", help="emulator (gimbal, fsm, beacon, laser, detectors, tdc1, tagger)"
    )
    sim_emulator.add_argument(
        "--port", type=int, default=0, help="TCP port for a LAN instrument (default: free)"
    )
    sim_emulator.add_argument(
        "--dark-count-rate-hz",
        type=float,
        default=100.0,
        help="a tagger's dark counts per channel while it acquires (default 100)",
    )
    sim_emulator.add_argument(
        "--serve-on",
        choices=("pty", "tcp"),
        default=None,
        help="kind of port (default: the instrument's own)",
    )
    sim_link = sim.add_parser("link", help="link budget over a pass, without daemons")
    sim_link.add_argument("config", help="scenario YAML")
    sim_link.add_argument("--out", default=None, help="output directory (default runs/<time>)")

    instruments = sub.add_parser("instruments", help="lab instruments").add_subparsers(
        dest="command", required=True
    )
    check = instruments.add_parser("check", help="connect to every instrument and report health")
    check.add_argument("config", help="instrument config (configs/instruments/...)")

    keyrate = sub.add_parser("keyrate", help="finite-key analysis").add_subparsers(
        dest="command", required=True
    )
    estimate = keyrate.add_parser("estimate", help="key length from observed counts (JSON)")
    estimate.add_argument("file", help="counts JSON (format in docs/keyrate.md)")

    for node, help_text in (("payload", "the payload daemon"), ("ogs", "a ground-station daemon")):
        group = sub.add_parser(node, help=help_text).add_subparsers(dest="command", required=True)
        run = group.add_parser("run", help=f"run {help_text} against a broker")
        run.add_argument("config", help="mission YAML" if node == "payload" else "station YAML")
        run.add_argument(
            "--instruments",
            default=None,
            metavar="BENCH",
            help="bench file (configs/instruments/...): the "
            + ("source" if node == "payload" else "time tagger, gimbal, mirror, beacon sensor "
               "and detectors") + " this node drives (default: simulated ones)",
        )  # fmt: skip
        if node == "payload":
            run.add_argument(
                "--link",
                default=None,
                metavar="RESOURCE",
                help="payload controller link (e.g. serial:///dev/ttyUSB1?baud=115200): drive "
                "the source through the controller over PUS (default: a simulated source)",
            )
        if node == "ogs":
            run.add_argument("--mission", required=True, help="mission YAML the station serves")
            run.add_argument(
                "--reports",
                default=None,
                metavar="DIR",
                help="write each pass's report.json and telemetry.jsonl to DIR/<plan_id>/ "
                "(default: ./runs/ogs-<station>/)",
            )
        run.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
        run.add_argument("--keys", required=True, help="key store directory")
        run.add_argument("--seed", type=int, default=None, help="deterministic entropy (tests)")
        run.add_argument(
            "--housekeeping-period-s", type=float, default=10.0, help="telemetry period"
        )

    keys = sub.add_parser("keys", help="key stores").add_subparsers(dest="command", required=True)
    boot = keys.add_parser(
        "bootstrap", help="install one pre-shared authentication key at both ends"
    )
    boot.add_argument("--payload-keys", required=True, help="payload key store root")
    boot.add_argument("--ogs-keys", required=True, help="station key store directory")
    boot.add_argument("--station", required=True, help="station name")
    boot.add_argument("--messages", type=int, default=65536, help="messages per direction")
    boot.add_argument(
        "--force",
        action="store_true",
        help="replace a pre-shared key already installed (and forget its sequence state) at "
        "both ends",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `satqkd` command."""
    args = _build_parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("amqtt", "transitions", "numba"):
        logging.getLogger(noisy).setLevel(max(level, logging.CRITICAL))
    try:
        if args.group == "sim" and args.command == "emulator":
            from satqkd.emulator_cli import run_emulator

            return run_emulator(args.name, args.serve_on, args.port, args.dark_count_rate_hz)
        if args.group == "sim" and args.command == "link":
            from satqkd.link_cli import run_sim_link

            return run_sim_link(args.config, args.out)
        if args.group == "sim":
            return _sim_pass(args)
        if args.group == "instruments":
            from satqkd.instruments_cli import run_instruments_check

            return run_instruments_check(args.config)
        if args.group == "keyrate":
            from satqkd.keyrate_cli import run_keyrate_estimate

            return run_keyrate_estimate(args.file)
        if args.group in ("payload", "ogs"):
            return _run_daemon(args)
        if args.group == "keys":
            return _bootstrap_keys(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return _fail(f"unknown command {args.group}", EXIT_USAGE)


def _sim_pass(args: argparse.Namespace) -> int:
    from satqkd.assembly import AssemblyError
    from satqkd.config import load_scenario
    from satqkd.report import build_report, write_plots, write_report, write_telemetry
    from satqkd.simulation import SimulationError, run_pass

    scenario = load_scenario(args.config, seed=args.seed)
    if args.max_duration_s is not None and args.max_duration_s <= 0:
        return _fail("--max-duration-s must be positive", EXIT_USAGE)
    if args.start_after_aos_s is not None:
        if args.start_after_aos_s < 0:
            return _fail("--start-after-aos-s must not be negative", EXIT_USAGE)
        simulation = scenario.scenario.simulation.model_copy(
            update={"qkd_start_after_aos_s": args.start_after_aos_s}
        )
        scenario = scenario.model_copy(
            update={"scenario": scenario.scenario.model_copy(update={"simulation": simulation})}
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out) if args.out else Path("runs") / stamp
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create output directory {out_dir}: {exc.strerror}", EXIT_USAGE)
    show_progress = not args.quiet and sys.stderr.isatty()
    try:
        if show_progress:
            run = _run_with_progress(scenario, out_dir, args)
        else:
            run = asyncio.run(
                run_pass(
                    scenario, out_dir, args.broker, None, args.max_duration_s, args.instruments
                )
            )
    except (SimulationError, AssemblyError) as exc:
        return _fail(str(exc))
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    report = build_report(run)
    write_report(report, out_dir)
    write_telemetry(run, out_dir)
    write_plots(run, out_dir)
    if not args.quiet:
        key = report["key"]
        outcome = (
            f"{key['secret_key_bits']} secret key bits, payload and station digests "
            f"{'equal' if key['sha256_payload'] == key['sha256_ogs'] else 'DIFFER'}"
            if key["secret_key_bits"]
            else f"no key: {key['abort_reason']}"
        )
        q = report["quantum"]
        print(
            f"{report['mission']} over {report['station']}, max elevation "
            f"{report['pass']['max_elevation_deg']:.1f} deg: {q['detections']} detections, "
            f"{q['sifted_bits']} sifted bits, QBER {100 * q['qber']:.2f} %: {outcome}. "
            f"Report: {out_dir / 'report.json'}"
        )
    return 0


def _run_with_progress(scenario, out_dir: Path, args: argparse.Namespace):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from satqkd.simulation import run_pass

    with Progress(
        TextColumn("[bold]pass[/bold]"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=1.0)

        def progress(fraction: float, text: str) -> None:
            bar.update(task, completed=fraction, description=text)

        return asyncio.run(
            run_pass(
                scenario, out_dir, args.broker, progress, args.max_duration_s, args.instruments
            )
        )


def _run_daemon(args: argparse.Namespace) -> int:
    from satqkd.daemons import run_ogs_daemon, run_payload_daemon

    entropy = args.seed if args.seed is not None else secrets.randbits(63)
    runner = run_payload_daemon if args.group == "payload" else run_ogs_daemon

    from satqkd.signals import run_until_signalled

    try:
        asyncio.run(run_until_signalled(runner(args, entropy)))
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    return 0


def _bootstrap_keys(args: argparse.Namespace) -> int:
    from satqkd_core.authentication import preshared_key_bytes
    from satqkd_runtime.keystore import KeyStore

    if args.messages < 1:
        return _fail("--messages must be positive", EXIT_USAGE)
    stores = (KeyStore(Path(args.payload_keys) / args.station), KeyStore(Path(args.ogs_keys)))
    holding = [str(store.directory) for store in stores if store.has_secret("preshared-auth")]
    if holding and not args.force:
        # overwriting one end alone, or a pool whose words were already used, would break
        # authentication or reuse one-time-pad words: replacing is an explicit decision
        return _fail(
            f"{', '.join(holding)} already hold(s) a pre-shared authentication key; "
            "give --force to replace it at both ends",
            EXIT_USAGE,
        )
    key = secrets.token_bytes(preshared_key_bytes(args.messages))
    for store in stores:
        store.delete_secret("auth-sequence")  # the new pool starts at its first word
        store.store_secret("preshared-auth", key)
    print(f"pre-shared authentication key for {args.station} installed ({len(key)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
