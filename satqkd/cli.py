"""The `satqkd` command line.

User mistakes (a bad config, a missing file, a broker that is not there) end with one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import re
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from satqkd.config import NAME_PATTERN, ConfigError

EXIT_USAGE = 2
EXIT_FAILED = 1

_log = logging.getLogger("satqkd.cli")


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"satqkd: {' '.join(str(message).split())}", file=sys.stderr)
    return status


# --- argument validation: each type gives argparse a one-line reason --------------------------


class _UsageError(Exception):
    """A command line argparse refused; main() prints it as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `satqkd: ...` line instead of usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("satqkd").strip()
        where = f"{command}: " if command else ""
        raise _UsageError(f"{where}{message} (see {self.prog} --help)")


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def _int_in(low: int, high: int, what: str = "an integer"):
    def parse(text: str) -> int:
        try:
            value = int(text, 10) if len(text) <= 40 else None
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} in {low}..{high}, got {text[:40]!r}")
        return value

    parse.__name__ = what
    return parse


_seed = _int_in(0, 2**63 - 1, "a seed")
_messages = _int_in(1, 10_000_000, "a message count")
_any_port = _int_in(0, 65535, "a port (0: any free one)")
_port = _int_in(1, 65535, "a port")
_days = _int_in(1, 36500, "a number of days")


def _broker_url(text: str) -> str:
    form = "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r} ({exc})") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or port == 0:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise argparse.ArgumentTypeError(f"expected {form} with nothing else, got {text!r}")
    return text


def _name(text: str) -> str:
    if re.fullmatch(NAME_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(
            f"a name is lower-case letters, digits, '_' and '-' ({NAME_PATTERN}), got {text!r}"
        )
    return text


def _output_dir(text: str) -> str:
    """An output directory that exists and is writable, or can be created."""
    path = Path(text)
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link
            raise argparse.ArgumentTypeError(f"{existing}: is a dangling symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing}: not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{existing}: not writable")
    return text


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="satqkd", description="Satellite QKD payload and ground-station control stack."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="group", required=True)

    sim = sub.add_parser("sim", help="simulations").add_subparsers(dest="command", required=True)
    sim_pass = sim.add_parser("pass", help="run one simulated pass end to end")
    sim_pass.add_argument("config", help="scenario YAML (configs/scenarios/...)")
    sim_pass.add_argument("--seed", type=_seed, default=None, help="override the scenario's seed")
    sim_pass.add_argument(
        "--out",
        type=_output_dir,
        default=None,
        help="output directory, new or empty (default runs/<time>)",
    )
    sim_pass.add_argument(
        "--broker", type=_broker_url, default=None, help="mqtt://HOST:PORT (default: embedded)"
    )
    sim_pass.add_argument("--max-duration-s", type=_positive, default=None, help="cap QKD time")
    sim_pass.add_argument(
        "--start-after-aos-s",
        type=_non_negative,
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
        "--port", type=_any_port, default=0, help="TCP port for a LAN instrument (default: free)"
    )
    sim_emulator.add_argument(
        "--dark-count-rate-hz",
        type=_non_negative,
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
    sim_link.add_argument(
        "--out", type=_output_dir, default=None, help="output directory (default runs/<time>)"
    )

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
        run.add_argument(
            "--broker",
            type=_broker_url,
            required=True,
            help="mqtt://HOST:PORT, or mqtts://HOST:PORT with --tls-*",
        )
        _add_tls_arguments(run, "payload" if node == "payload" else "ogs-<station>")
        if node == "ogs":
            run.add_argument(
                "--tls-reports-cert",
                metavar="FILE",
                help="with mqtts://: the report recorder's certificate (recorder-<station>.crt)",
            )
            run.add_argument(
                "--tls-reports-key", metavar="FILE", help="and its key (recorder-<station>.key)"
            )
        run.add_argument("--keys", required=True, help="key store directory")
        run.add_argument(
            "--seed", type=_seed, default=None, help="seed of emulated instruments' noise (tests)"
        )
        run.add_argument(
            "--insecure-seeded-entropy",
            action="store_true",
            help="draw every secret from a source seeded with --seed: predictable, tests only "
            "(default: the bench's entropy source, else the operating system's CSPRNG)",
        )
        run.add_argument(
            "--housekeeping-period-s", type=_positive, default=10.0, help="telemetry period"
        )

    keys = sub.add_parser("keys", help="key stores").add_subparsers(dest="command", required=True)
    boot = keys.add_parser(
        "bootstrap", help="install one pre-shared authentication key at both ends"
    )
    boot.add_argument("--payload-keys", required=True, help="payload key store root")
    boot.add_argument("--ogs-keys", required=True, help="station key store directory")
    boot.add_argument("--station", type=_name, required=True, help="station name")
    boot.add_argument("--messages", type=_messages, default=65536, help="messages per direction")
    boot.add_argument(
        "--force",
        action="store_true",
        help="replace a pre-shared key already installed (and forget its sequence state) at "
        "both ends",
    )
    tc_keys = keys.add_parser(
        "telecommand", help="install one telecommand key (AES-256-CMAC) at a node and the OCC"
    )
    tc_keys.add_argument("--node", required=True, help="'payload' or 'ogs-<station>'")
    tc_keys.add_argument(
        "--node-keys",
        required=True,
        help="the node's key directory: the payload's key root, or the station's key store",
    )
    tc_keys.add_argument("--occ-keys", required=True, help="the control centre's key directory")
    tc_keys.add_argument(
        "--force",
        action="store_true",
        help="replace a telecommand key already installed (sequence numbers restart at both ends)",
    )
    from satqkd.tc_cli import add_tc_parser

    add_tc_parser(sub, _add_tls_arguments)
    _add_broker_parser(sub)
    return parser


def _add_tls_arguments(parser: argparse.ArgumentParser, identity: str) -> None:
    """Control: add --tls-ca, --tls-cert and --tls-key (for an mqtts:// --broker)."""
    parser.add_argument("--tls-ca", metavar="FILE", help="with mqtts://: the broker's CA (ca.crt)")
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help=f"with mqtts://: this client's certificate ({identity}.crt)",
    )
    parser.add_argument("--tls-key", metavar="FILE", help=f"and its key ({identity}.key)")


def _add_broker_parser(sub: argparse._SubParsersAction) -> None:
    """Control: add the `broker` group: `broker certs` and `broker config` (docs/broker.md)."""
    group = sub.add_parser("broker", help="a secure MQTT broker (TLS, certificates, ACL)")
    commands = group.add_subparsers(dest="command", required=True)
    certs = commands.add_parser(
        "certs", help="make a CA, the broker's certificate and one per daemon identity"
    )
    config = commands.add_parser("config", help="write mosquitto.conf and its ACL")
    for command in (certs, config):
        command.add_argument("out_dir", metavar="OUT_DIR", help="directory to write to")
        command.add_argument("--mission", required=True, help="mission name (e.g. jinan1)")
        command.add_argument(
            "--station", action="append", required=True, help="station name (repeat for more)"
        )
        command.add_argument("--force", action="store_true", help="replace existing files")
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="a name the daemons reach the broker by (repeat; localhost and 127.0.0.1 always)",
    )
    certs.add_argument("--days", type=_days, default=365, help="validity (default 365 days)")
    config.add_argument("--port", type=_port, default=8883, help="TLS listener port (default 8883)")
    config.add_argument(
        "--certs", required=True, metavar="CERT_DIR", help="where the broker host keeps them"
    )
    config.add_argument(
        "--acl-file", metavar="PATH", help="where the broker reads the ACL (default OUT_DIR/acl)"
    )
    config.add_argument("--bind", default=None, metavar="ADDRESS", help="listen on this address")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `satqkd` command: a user's mistake is one line on stderr, never a
    traceback (exit status 2); an unexpected failure is one line too (status 1; -v logs it)."""
    try:
        args = _build_parser().parse_args(argv)
    except _UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        return _main(args)
    except _UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    except OSError as exc:
        where = exc.filename if exc.filename is not None else "input/output"
        return _fail(f"{where}: {exc.strerror or exc}")
    except RecursionError:
        return _fail("input nested too deeply", EXIT_USAGE)
    except Exception as exc:  # the last line of defence against a traceback
        _log.info("unexpected error", exc_info=True)
        detail = str(exc)[:200] or "no detail"
        return _fail(f"unexpected error: {type(exc).__name__}: {detail} (run with -v for detail)")


def _main(args: argparse.Namespace) -> int:
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
        if args.group == "keys" and args.command == "telecommand":
            return _telecommand_keys(args)
        if args.group == "keys":
            return _bootstrap_keys(args)
        if args.group == "tc":
            from satqkd.tc_cli import run_tc_send

            return run_tc_send(args)
        if args.group == "broker":
            return _broker(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return _fail(f"unknown command {args.group}", EXIT_USAGE)


# what a simulated pass writes into its --out (report.py, simulation.py)
_RUN_OUTPUTS = ("report.json", "keys", "telemetry.jsonl")


def _sim_pass(args: argparse.Namespace) -> int:
    from satqkd.assembly import AssemblyError
    from satqkd.config import load_scenario
    from satqkd.report import build_report, write_plots, write_report, write_telemetry
    from satqkd.simulation import SimulationError, run_pass

    if args.broker is not None and args.broker.startswith("mqtts:"):
        return _fail(
            "--broker: a simulated pass runs every node in one process and takes plain mqtt:// "
            "only; give a test broker (or none: an embedded one)",
            EXIT_USAGE,
        )
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
    earlier = [name for name in _RUN_OUTPUTS if (out_dir / name).exists()]
    if earlier:
        # a second run would find the first run's keys and overwrite its report
        return _fail(
            f"--out {out_dir}: already holds an earlier run ({', '.join(earlier)}); "
            "give a new or empty directory",
            EXIT_USAGE,
        )
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

    keys = Path(args.keys)
    if keys.exists() and not keys.is_dir():
        return _fail(f"--keys {keys}: not a directory", EXIT_USAGE)
    entropy = args.seed if args.seed is not None else secrets.randbits(63)
    runner = run_payload_daemon if args.group == "payload" else run_ogs_daemon

    from satqkd.signals import run_until_signalled
    from satqkd_runtime.bus import SubscriptionRefusedError
    from satqkd_runtime.keystore import KeyStoreError

    try:
        asyncio.run(run_until_signalled(runner(args, entropy)))
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    except KeyStoreError as exc:  # e.g. a pad pool without its sequence state: refuse to start
        return _fail(str(exc), EXIT_USAGE)
    except SubscriptionRefusedError as exc:
        return _fail(f"{exc} (is the broker's ACL generated for this mission and station?)")
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    return 0


def _broker(args: argparse.Namespace) -> int:
    """`satqkd broker certs|config`: write a broker's certificates or its configuration."""
    from satqkd.broker_security import write_broker_config, write_certificates

    try:
        if args.command == "certs":
            written = write_certificates(
                args.out_dir, args.mission, args.station, hosts=args.host, days=args.days,
                force=args.force,
            )  # fmt: skip
        else:
            written = write_broker_config(
                args.out_dir, args.mission, args.station, port=args.port, certs_dir=args.certs,
                acl_file=args.acl_file, bind=args.bind, force=args.force,
            )  # fmt: skip
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(f"{exc.filename or args.out_dir}: {exc.strerror}")
    print("\n".join(str(path) for path in written))
    return 0


def _bootstrap_keys(args: argparse.Namespace) -> int:
    from satqkd_core.authentication import preshared_key_bytes
    from satqkd_runtime.keystore import KeyStore
    from satqkd_runtime.qkd_channel import install_preshared_key

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
        install_preshared_key(store, key)  # the new pool starts at its first word, no extension
    print(f"pre-shared authentication key for {args.station} installed ({len(key)} bytes)")
    return 0


def _telecommand_keys(args: argparse.Namespace) -> int:
    """`satqkd keys telecommand`: one fresh 256-bit key at the node and the OCC."""
    from satqkd_core.errors import InputError
    from satqkd_runtime.keystore import KeyStoreError
    from satqkd_runtime.telecommand_auth import TelecommandKeyError, install_telecommand_key

    try:
        key = install_telecommand_key(args.node_keys, args.occ_keys, args.node, args.force)
    except (TelecommandKeyError, InputError, KeyStoreError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(f"{exc.filename or 'key directory'}: {exc.strerror}")
    print(
        f"telecommand key for {args.node} installed (key id {key.key_id}, AES-256-CMAC) in "
        f"{args.node_keys} and {Path(args.occ_keys) / args.node}; sequence numbers start at 1"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
