"""The `satqkd` command line.

User mistakes (a bad config, a missing file, a broker that is not there) end with one line on
stderr and a non-zero exit status, never a traceback. Exit statuses (EXIT_STATUSES, shown by
`satqkd --help`): 0 done (a pass ran to its end, key or not), 1 failed, 2 bad input, 3 a
pass ran to its end without a key and `--require-key` was given, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from satqkd.config import NAME_PATTERN, ConfigError

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_NO_KEY = 3
EXIT_STATUSES = """exit status:
  0    done (`sim pass`: the pass ran to its end, whatever key came out of it)
  1    failed (a daemon that did not answer, an instrument that did not connect, ...)
  2    bad input: a config, file or argument; one line on stderr names it
  3    `sim pass --require-key`: the pass ran to its end but gave no key
  130  interrupted"""
# verbosity may be given anywhere on the line (before or after the subcommand)
_VERBOSE_FLAGS = {"-v": 1, "-vv": 2, "-vvv": 3, "--verbose": 1}

# Command groups that live in a module of their own. Each module provides
#   GROUP: str                                   the group's name on the command line
#   register(sub: argparse._SubParsersAction)    adds its parser(s) (keep imports light)
#   run(args: argparse.Namespace) -> int         runs it (import heavy things in here)
_GROUP_MODULES: tuple[str, ...] = (
    "satqkd.tm_cli",
    "satqkd.kms_cli",
    "satqkd.monitor_cli",
    "satqkd.init_cli",
    "satqkd.atp_cli",
    "satqkd.occ_cli",
    "satqkd.missions_cli",
)

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
# a pre-shared authentication pool: at least the reserve a daemon keeps before it accepts a plan
# (satqkd_runtime.qkd_channel.DEFAULT_PASS_RESERVE_MESSAGES: one whole pass and one crash)
_messages = _int_in(2048, 10_000_000, "a message count")
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
    from satqkd import __version__

    parser = _Parser(
        prog="satqkd",
        description="Satellite QKD payload and ground-station control stack.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (anywhere on the line)"
    )
    parser.add_argument("--version", action="version", version=f"satqkd {__version__}")
    sub = parser.add_subparsers(dest="group", required=True)

    sim = sub.add_parser("sim", help="simulations").add_subparsers(dest="command", required=True)
    from satqkd.night_cli import register_sim_night
    from satqkd.sim_network_cli import register_sim_network
    from satqkd.sim_pass_cli import register_sim_pass

    register_sim_pass(sim)
    register_sim_network(sim)
    register_sim_night(sim)
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
    sim_link.add_argument("--seed", type=_seed, default=None, help="override the scenario's seed")
    sim_link.add_argument(
        "--max-duration-s", type=_positive, default=None, help="cap QKD time (as sim pass)"
    )
    sim_link.add_argument(
        "--start-after-aos-s",
        type=_non_negative,
        default=None,
        help="start QKD no earlier than this after AOS (as sim pass)",
    )

    instruments = sub.add_parser("instruments", help="lab instruments").add_subparsers(
        dest="command", required=True
    )
    check = instruments.add_parser("check", help="connect to every instrument and report health")
    check.add_argument("config", help="instrument config (configs/instruments/...)")

    keyrate = sub.add_parser("keyrate", help="finite-key analysis").add_subparsers(
        dest="command", required=True
    )
    estimate = keyrate.add_parser(
        "estimate", help="key length from observed counts (JSON) or a pass's report.json"
    )
    estimate.add_argument(
        "file",
        help="counts JSON (format in docs/keyrate.md; example configs/keyrate/"
        "jinan1-clear-pass.json) or a pass's report.json",
    )

    from satqkd import broker_cli, daemon_cli, keys_cli

    # registered here, not through _GROUP_MODULES, to keep their place in `satqkd --help`
    daemon_cli.register(sub)
    keys_cli.register(sub)
    from satqkd.tc_cli import add_tc_parser

    add_tc_parser(sub, _add_tls_arguments)
    broker_cli.register(sub)
    for module in _group_modules():
        module.register(sub)
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


def _group_modules() -> list:
    """The command-group modules of _GROUP_MODULES, imported."""
    import importlib

    return [importlib.import_module(name) for name in _GROUP_MODULES]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `satqkd` command: a user's mistake is one line on stderr, never a
    traceback (exit status 2); an unexpected failure is one line too (status 1; -v logs it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _take_verbose_flags(argv)
    try:
        args = _build_parser().parse_args(argv)
        args.verbose = max(getattr(args, "verbose", 0), 0) + verbose
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


def _take_verbose_flags(argv: list[str]) -> int:
    """Control: remove -v/-vv/--verbose from anywhere before `--` in argv; get their count."""
    end = argv.index("--") if "--" in argv else len(argv)
    count = 0
    for k in range(end - 1, -1, -1):
        if argv[k] in _VERBOSE_FLAGS:
            count += _VERBOSE_FLAGS[argv.pop(k)]
    return count


def _main(args: argparse.Namespace) -> int:
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("amqtt", "transitions", "numba"):
        logging.getLogger(noisy).setLevel(max(level, logging.CRITICAL))
    # the daemons' one-line status at start and per pass shows without -v
    logging.getLogger("satqkd.status").setLevel(min(level, logging.INFO))
    try:
        if args.group == "sim" and args.command == "emulator":
            from satqkd.emulator_cli import run_emulator

            return run_emulator(args.name, args.serve_on, args.port, args.dark_count_rate_hz)
        if args.group == "sim" and args.command == "link":
            from satqkd.link_cli import run_sim_link

            return run_sim_link(
                args.config,
                args.out,
                seed=args.seed,
                start_after_aos_s=args.start_after_aos_s,
                max_duration_s=args.max_duration_s,
            )
        if args.group == "sim" and args.command == "night":
            from satqkd.night_cli import run_sim_night

            return run_sim_night(args)
        if args.group == "sim" and args.command == "network":
            from satqkd.sim_network_cli import run_sim_network

            return run_sim_network(args)
        if args.group == "sim":
            from satqkd.sim_pass_cli import run_sim_pass

            return run_sim_pass(args)
        if args.group == "instruments":
            from satqkd.instruments_cli import run_instruments_check

            return run_instruments_check(args.config)
        if args.group == "keyrate":
            from satqkd.keyrate_cli import run_keyrate_estimate

            return run_keyrate_estimate(args.file)
        if args.group in ("payload", "ogs"):
            from satqkd.daemon_cli import run_daemon

            return run_daemon(args)
        if args.group == "keys":
            from satqkd.keys_cli import run as run_keys

            return run_keys(args)
        if args.group == "tc":
            from satqkd.tc_cli import run_tc_send

            return run_tc_send(args)
        if args.group == "broker":
            from satqkd.broker_cli import run as run_broker

            return run_broker(args)
        for module in _group_modules():
            if args.group == module.GROUP:
                return module.run(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return _fail(f"unknown command {args.group}", EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
