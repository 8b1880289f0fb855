"""`satqkd tm`: the daemons' telemetry and events, decoded, live or from an archive.

- `tm watch [NODE] [--events] [--json]`: one line per message as it arrives (`--json`: the
  archive record, one JSON object a line);
- `tm record --out FILE [NODE]`: append every TM/EVT message to a telemetry archive
  (`satqkd.telemetry_archive`) until interrupted, `--duration-s` or `--count`;
- `tm report ARCHIVE --out DIR [--plan-id N]`: the pass report of an archived pass;
- `tm xtce --out FILE`: the dictionary as an XTCE 1.2 mission database (YAMCS);
- `tm export ARCHIVE --format influx|csv --out FILE|DIR`: an archive as InfluxDB line protocol
  (Grafana) or one CSV table a packet (`satqkd.telemetry_export`).

Exit status: 0 done, 1 the broker failed or went away, 2 a usage mistake (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from satqkd.pass_recorder import Record
    from satqkd_runtime.bus_tls import BusTls

GROUP = "tm"
EXIT_USAGE = 2
EXIT_FAILED = 1


class TmUsageError(ValueError):
    """A mistake on the `tm` command line (one line for the user)."""


def add_broker_arguments(parser: Any, *, required: bool = True) -> None:
    """Control: add --broker, --mission and the TLS options of a telemetry reader (to a
    parser or an argument group)."""
    parser.add_argument(
        "--broker", required=required, help="mqtt://HOST:PORT, or mqtts://HOST:PORT with --tls-*"
    )
    parser.add_argument(
        "--mission", default="+", help="only this mission's messages (default: every mission)"
    )
    parser.add_argument("--tls-ca", metavar="FILE", help="with mqtts://: the broker's CA (ca.crt)")
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="with mqtts://: a certificate that may read telemetry (occ.crt or recorder-S.crt)",
    )
    parser.add_argument("--tls-key", metavar="FILE", help="with mqtts://: its private key")


def register(sub: Any) -> None:
    """Control: add the `tm` group (watch, record, report, xtce, export) to the `satqkd`
    parser."""
    group = sub.add_parser("tm", help="telemetry: watch, record, report, XTCE export")
    commands = group.add_subparsers(dest="command", required=True)
    watch = commands.add_parser("watch", help="print the daemons' telemetry and events, decoded")
    watch.add_argument("node", nargs="?", default=None, help="'payload' or 'ogs-<station>'")
    watch.add_argument("--events", action="store_true", help="events only")
    watch.add_argument("--json", action="store_true", help="one JSON record a line")
    _add_stream_arguments(watch)
    record = commands.add_parser("record", help="append every TM/EVT message to an archive")
    record.add_argument("node", nargs="?", default=None, help="'payload' or 'ogs-<station>'")
    record.add_argument("--out", required=True, metavar="FILE", help="the archive (JSON lines)")
    _add_stream_arguments(record)
    report = commands.add_parser("report", help="the pass report (report.json) of an archive")
    report.add_argument("archive", help="a telemetry archive or a report's telemetry.jsonl")
    report.add_argument("--out", required=True, metavar="DIR", help="where report.json goes")
    report.add_argument(
        "--plan-id", type=int, default=None, help="the pass (default: the last one summarised)"
    )
    xtce = commands.add_parser("xtce", help="the dictionary as an XTCE 1.2 mission database")
    xtce.add_argument("--out", required=True, metavar="FILE", help="the XML file to write")
    xtce.add_argument("--name", default="satqkd", help="the SpaceSystem's name")
    export = commands.add_parser(
        "export", help="an archive as InfluxDB line protocol or CSV tables (Grafana, spreadsheets)"
    )
    export.add_argument("archive", help="a telemetry archive (satqkd tm record)")
    export.add_argument("--format", required=True, choices=("influx", "csv"), help="what to write")
    export.add_argument(
        "--out",
        required=True,
        metavar="FILE_OR_DIR",
        help="influx: the line-protocol file; csv: a directory for one <packet>.csv a packet",
    )


def _add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument(
        "--packet",
        action="append",
        default=None,
        metavar="NAME",
        help="only this telemetry packet (repeatable; e.g. HOUSEKEEPING)",
    )
    parser.add_argument("--count", type=int, default=None, help="stop after N messages")
    parser.add_argument("--duration-s", type=float, default=None, help="stop after S seconds")


def topic_filters(
    mission: str,
    node: str | None,
    *,
    telemetry: bool = True,
    events: bool = True,
    packets: list[str] | None = None,
) -> list[str]:
    """Get: the topic filters of a node's (every node's) telemetry (only `packets`, if given)
    and events; TmUsageError naming a bad mission, node or packet name."""
    from satqkd_core import dictionary as dct
    from satqkd_core.errors import InputError

    node_level = node if node is not None else "+"
    try:
        if mission != "+":
            dct.event_topic(mission, dct.PAYLOAD_NODE)
        if node is not None:
            dct.event_topic("m", node)
    except InputError as exc:
        raise TmUsageError(str(exc)) from None
    filters = []
    if packets:
        for name in packets:
            spec = dct.DICTIONARY.get(name.upper())
            if spec is None or spec.kind != "tm":
                known = ", ".join(s.name for s in dct.DICTIONARY.values() if s.kind == "tm")
                raise TmUsageError(f"--packet {name}: not a telemetry packet; packets: {known}")
            filters.append(f"satqkd/{mission}/{node_level}/tm/{spec.name.lower()}")
    elif telemetry:
        filters.append(f"satqkd/{mission}/{node_level}/tm/#")
    if events:
        filters.append(f"satqkd/{mission}/{node_level}/evt")
    return filters


def reader_tls(args: argparse.Namespace) -> BusTls | None:
    """Get: the TLS settings of a telemetry reader's connection (None for mqtt://): the
    certificate must be one whose identity may read telemetry (occ or recorder-<station>)."""
    from satqkd.broker_security import bus_tls_from_options, common_name, load_certificate

    identity = "occ"
    if args.tls_cert:
        try:
            identity = common_name(load_certificate(args.tls_cert))
        except (OSError, ValueError) as exc:
            raise TmUsageError(f"--tls-cert {args.tls_cert}: {exc}") from None
        # the identities the broker's ACL lets read every node's telemetry (docs/broker.md),
        # and a read-only `monitor` one where the broker grants it
        if not (identity in ("occ", "monitor") or identity.startswith("recorder-")):
            raise TmUsageError(
                f"--tls-cert {args.tls_cert}: issued to {identity!r}, which may not read "
                "telemetry: give occ.crt or recorder-<station>.crt"
            )
    return bus_tls_from_options(
        args.broker, args.tls_ca, args.tls_cert, args.tls_key, identity=identity
    )


def _value_text(value: Any) -> str:
    if value is None:
        return "nan"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if (" " in value or not value) else value
    return str(value).lower() if isinstance(value, bool) else str(value)


def format_record(record: Record) -> str:
    """Get: one line a person reads for a decoded message: time, node, name, fields (an
    event: its severity, name and text)."""
    received = record.get("received_unix_s")
    when = (
        datetime.fromtimestamp(received, UTC).strftime("%H:%M:%S.%f")[:-3]
        if isinstance(received, int | float) and math.isfinite(received)
        else "--:--:--.---"
    )
    fields = record["fields"]
    if record.get("kind") == "evt":
        event = record.get("event", f"event {fields.get('event_id')}")
        return f"{when} {record['node']} {fields.get('severity')} {event}: {fields.get('text')}"
    body = " ".join(f"{name}={_value_text(value)}" for name, value in fields.items())
    return f"{when} {record['node']} {record['name']} {body}"


async def stream_records(
    broker: str,
    filters: list[str],
    on_record: Callable[[Record], None],
    *,
    tls: BusTls | None = None,
    count: int | None = None,
    duration_s: float | None = None,
    on_undecodable: Callable[[str, str], None] | None = None,
    stop: asyncio.Event | None = None,
    on_subscribed: Callable[[], None] | None = None,
) -> int:
    """Control: subscribe to `filters` and call `on_record` with each decoded TM/EVT message
    until `count` messages, `duration_s` or `stop` is set; get the number passed on."""
    from satqkd.telemetry_archive import record_from_bus
    from satqkd_core.codec import CodecError
    from satqkd_runtime.bus import MessageBus

    stop = stop if stop is not None else asyncio.Event()
    seen = 0
    client_id = f"satqkd-tm-{os.getpid()}-{secrets.token_hex(3)}"
    async with MessageBus(broker, client_id, persistent_session=False, tls=tls) as bus:
        for topic_filter in filters:
            await bus.subscribe(topic_filter, qos=1)
        if on_subscribed is not None:
            on_subscribed()

        async def receive() -> None:
            nonlocal seen
            async for message in bus.messages():
                try:
                    record = record_from_bus(message.topic, message.payload)
                except CodecError as exc:
                    if on_undecodable is not None:
                        on_undecodable(message.topic, str(exc))
                    continue
                on_record(record)
                seen += 1
                if count is not None and seen >= count:
                    return
            raise ConnectionError("the broker connection closed")

        receiver = asyncio.create_task(receive())
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {receiver, stopper}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:  # also when cancelled: no task outlives the bus
            for task in (receiver, stopper):
                task.cancel()
            await asyncio.gather(receiver, stopper, return_exceptions=True)
        if receiver in done and receiver.exception() is not None:
            raise receiver.exception()  # type: ignore[misc]
    return seen


def _check_limits(args: argparse.Namespace) -> None:
    if args.count is not None and args.count < 1:
        raise TmUsageError(f"--count must be at least 1, got {args.count}")
    if args.duration_s is not None and not (math.isfinite(args.duration_s) and args.duration_s > 0):
        raise TmUsageError(f"--duration-s must be a positive number, got {args.duration_s:g}")


def _run_stream(args: argparse.Namespace, on_record: Callable[[Record], None]) -> int:
    """Run `stream_records` for watch/record until done or SIGINT/SIGTERM."""

    def undecodable(topic: str, reason: str) -> None:
        print(f"satqkd: {topic}: not a decodable message ({reason})", file=sys.stderr, flush=True)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        return await stream_records(
            args.broker,
            args.filters,
            on_record,
            tls=args.tls,
            count=args.count,
            duration_s=args.duration_s,
            on_undecodable=undecodable,
            stop=stop,
        )

    return asyncio.run(main())


def _watch(args: argparse.Namespace) -> int:
    def show(record: Record) -> None:
        line = json.dumps(record, allow_nan=False) if args.json else format_record(record)
        print(line, flush=True)

    _run_stream(args, show)
    return 0


def _record(args: argparse.Namespace) -> int:
    from satqkd.telemetry_archive import ArchiveWriter

    with ArchiveWriter(args.out) as writer:
        seen = _run_stream(args, writer.write)
    print(f"recorded {seen} message(s) to {args.out}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from satqkd.report_builder import build_report, write_report
    from satqkd.telemetry_archive import plan_ids, read_archive

    records = read_archive(args.archive)
    summarised = plan_ids(records)
    if not summarised:
        raise TmUsageError(
            f"{args.archive}: no OGS_PASS_SUMMARY in the archive: the station's part of a pass "
            "never ended while it was recorded"
        )
    if args.plan_id is not None and args.plan_id not in summarised:
        raise TmUsageError(
            f"--plan-id {args.plan_id}: not summarised in {args.archive}; plans: "
            + ", ".join(map(str, summarised))
        )
    report = build_report(records, plan_id=args.plan_id)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = write_report(report, out)
    key = report["key"]["secret_key_bits"]
    plan = args.plan_id if args.plan_id is not None else summarised[-1]
    outcome = f"{key} key bits" if key else f"no key ({report['key']['abort_reason']})"
    print(f"{path}: plan {plan}, {outcome}")
    return 0


def _xtce(args: argparse.Namespace) -> int:
    from satqkd.xtce import write_xtce

    path = write_xtce(args.out, args.name)
    print(f"{path}: XTCE 1.2 mission database of the satqkd dictionary")
    return 0


def _export(args: argparse.Namespace) -> int:
    from satqkd.telemetry_archive import read_archive
    from satqkd.telemetry_export import write_csv, write_influx

    out = Path(args.out)
    if out.is_dir() if args.format == "influx" else (out.exists() and not out.is_dir()):
        wanted = "a file, not a directory" if args.format == "influx" else "a directory"
        raise TmUsageError(f"--out {out}: --format {args.format} writes {wanted}")
    records = read_archive(args.archive)
    if args.format == "influx":
        points = write_influx(records, args.out, args.archive)
        print(f"{args.out}: {points} point(s) in InfluxDB line protocol")
    else:
        tables = write_csv(records, args.out)
        listed = ", ".join(f"{name} ({rows})" for name, rows in tables.items())
        print(f"{args.out}: {listed}")
    return 0


def run(args: argparse.Namespace) -> int:
    """`satqkd tm ...`: see the module's docstring."""
    from satqkd.telemetry_archive import ArchiveError

    try:
        if args.command in ("watch", "record"):
            _check_limits(args)
            events_only = args.command == "watch" and args.events
            if events_only and args.packet:
                raise TmUsageError("--events shows events only: leave out --packet")
            args.filters = topic_filters(
                args.mission,
                args.node,
                telemetry=not events_only,
                # watch --packet shows those packets alone; an archive keeps the events too
                events=events_only or args.command == "record" or not args.packet,
                packets=args.packet,
            )
            args.tls = reader_tls(args)
            return _watch(args) if args.command == "watch" else _record(args)
        if args.command == "report":
            return _report(args)
        if args.command == "export":
            return _export(args)
        return _xtce(args)
    except (TmUsageError, ArchiveError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except ValueError as exc:  # a malformed broker url, a TLS option
        return _fail(str(exc), EXIT_USAGE)


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"satqkd: {message}", file=sys.stderr)
    return status
