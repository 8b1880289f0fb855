"""`satqkd broker certs|config`: a secure MQTT broker's certificates and configuration
(docs/broker.md).

A command group module (satqkd/cli.py calls :func:`register` and :func:`run`).
"""

from __future__ import annotations

import argparse

from satqkd.cli import EXIT_USAGE, _days, _fail, _port

GROUP = "broker"


def register(sub: argparse._SubParsersAction) -> None:
    """Control: add the `broker` group: `broker certs` and `broker config`."""
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
        command.add_argument(
            "--bridge",
            action="append",
            default=[],
            metavar="NAME",
            help="a bridge between the network's brokers (identity bridge-NAME; repeat): "
            "certs makes its certificate, config admits it in the ACL",
        )
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
    config.add_argument(
        "--bridge-to",
        default=None,
        metavar="HOST:PORT",
        help="bridge this broker to the broker there (the mission's topics both ways, TLS)",
    )
    config.add_argument(
        "--bridge-as",
        default=None,
        metavar="NAME",
        help="with --bridge-to: connect as bridge NAME (its certificate bridge-NAME.crt)",
    )


def run(args: argparse.Namespace) -> int:
    """`satqkd broker certs|config`: write a broker's certificates or its configuration."""
    from satqkd.broker_security import write_broker_config, write_certificates

    try:
        if args.command == "certs":
            written = write_certificates(
                args.out_dir, args.mission, args.station, hosts=args.host, days=args.days,
                force=args.force, bridges=args.bridge,
            )  # fmt: skip
        else:
            written = write_broker_config(
                args.out_dir, args.mission, args.station, port=args.port, certs_dir=args.certs,
                acl_file=args.acl_file, bind=args.bind, force=args.force, bridges=args.bridge,
                bridge_to=args.bridge_to, bridge_as=args.bridge_as,
            )  # fmt: skip
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(f"{exc.filename or args.out_dir}: {exc.strerror}")
    print("\n".join(str(path) for path in written))
    return 0
