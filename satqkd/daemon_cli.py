"""`satqkd payload run` and `satqkd ogs run`: a node's daemon against a broker.

:func:`register` adds the `payload` and `ogs` groups to the parser satqkd/cli.py builds;
:func:`run_daemon` runs either until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from pathlib import Path

from satqkd.cli import EXIT_USAGE, _add_tls_arguments, _broker_url, _fail, _positive, _seed


def register(sub: argparse._SubParsersAction) -> None:
    """Control: add the `payload` and `ogs` groups, each with its `run` command."""
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


def run_daemon(args: argparse.Namespace) -> int:
    """Control: run `satqkd payload run` or `satqkd ogs run` until signalled; get its exit
    status."""
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
