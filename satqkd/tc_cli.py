"""`satqkd tc send`: the operation control centre's command line for one telecommand.

    satqkd tc send NODE COMMAND [field=value ...] --broker URL --mission M --occ-keys DIR

Builds the telecommand from the dictionary (each `field=value` parsed by the field's declared
type), signs it with the destination node's telecommand key and next sequence number
(`satqkd_runtime.telecommand_auth`, docs/telecommands.md), publishes it and waits for the node's
TC_ACK. Exit status: 0 accepted, 1 rejected or no acknowledgement, 2 a usage mistake; every
mistake is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from satqkd_core import dictionary as dct
from satqkd_core.codec import CodecError, decode_envelope, encode_body
from satqkd_core.dictionary import MessageSpec, parse_field_type
from satqkd_core.errors import InputError

if TYPE_CHECKING:  # the parser is built on every `satqkd` call: the rest loads when used
    from satqkd_runtime.bus_tls import BusTls
    from satqkd_runtime.telecommand_auth import TelecommandSigner

EXIT_USAGE = 2
EXIT_FAILED = 1
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class TcUsageError(ValueError):
    """A mistake on the `tc send` command line (one line for the user)."""


def add_tc_parser(
    sub: Any, add_tls_arguments: Callable[[argparse.ArgumentParser, str], None]
) -> None:
    """Control: add the `tc` group (`tc send`) to the `satqkd` parser's sub-parsers, with the
    command line's TLS options (`--tls-ca/--tls-cert/--tls-key`, identity `occ`)."""
    group = sub.add_parser("tc", help="telecommands").add_subparsers(dest="command", required=True)
    send = group.add_parser(
        "send",
        help="sign and send one telecommand, then wait for the node's TC_ACK",
        usage="satqkd tc send [NODE] COMMAND [field=value ...] --broker URL --mission M "
        "--occ-keys DIR [--node NODE] [--timeout-s S] [--tls-ca F --tls-cert F --tls-key F]",
    )
    send.add_argument(
        "--broker", required=True, help="mqtt://HOST:PORT, or mqtts://HOST:PORT with --tls-*"
    )
    add_tls_arguments(send, "occ")
    send.add_argument("--mission", required=True, help="mission name (e.g. jinan1)")
    send.add_argument(
        "--node", default=None, help="'payload' or 'ogs-<station>' (or give NODE before COMMAND)"
    )
    send.add_argument(
        "--occ-keys", required=True, help="the control centre's key directory (telecommand keys)"
    )
    send.add_argument(
        "--timeout-s", type=float, default=10.0, help="wait this long for the TC_ACK (default 10)"
    )
    send.add_argument(
        "words",
        nargs="+",
        metavar="WORD",
        help="the node (unless --node), the telecommand (NOOP, RESET_COUNTERS, SOURCE_ENABLE, "
        "...) and its fields",
    )


def _fields_help(spec: MessageSpec) -> str:
    if not spec.fields:
        return f"{spec.name} has no fields"
    return f"{spec.name} fields: " + ", ".join(f"{f.name} ({f.type})" for f in spec.fields)


def _parse_scalar(type_name: str, text: str) -> Any:
    """Get: a field value from its command-line text (ValueError if it does not parse)."""
    if type_name in ("u8", "u16", "u32", "u64", "i64"):
        return int(text, 0)
    if type_name == "f64":
        return float(text)
    if type_name == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("expected true or false")
    if type_name == "bytes":
        return bytes.fromhex(text)
    return text  # str


def telecommand_spec(name: str) -> MessageSpec:
    """Get: the declared telecommand `name` (case-insensitive); TcUsageError listing them."""
    spec = dct.DICTIONARY.get(name.upper())
    if spec is None or spec.kind != "tc":
        known = ", ".join(s.name for s in dct.DICTIONARY.values() if s.kind == "tc")
        raise TcUsageError(f"{name!r} is not a telecommand; telecommands: {known}")
    return spec


def parse_fields(spec: MessageSpec, items: list[str]) -> dict[str, Any]:
    """Get: the fields of `spec` from `field=value` items, each parsed by its declared type
    (arrays as comma-separated values, bytes as hex); TcUsageError listing the fields."""
    declared = {f.name: f.type for f in spec.fields}
    fields: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise TcUsageError(f"{item!r} is not field=value; {_fields_help(spec)}")
        if name not in declared:
            raise TcUsageError(f"{spec.name} has no field {name!r}; {_fields_help(spec)}")
        if name in fields:
            raise TcUsageError(f"{spec.name}.{name} is given twice")
        element, _, is_array = parse_field_type(declared[name])
        try:
            if is_array:
                parts = [p for p in text.split(",") if p.strip()]
                fields[name] = [_parse_scalar(element, p.strip()) for p in parts]
            else:
                fields[name] = _parse_scalar(element, text)
        except ValueError:
            raise TcUsageError(
                f"{spec.name}.{name}: {text!r} is not a {declared[name]}; {_fields_help(spec)}"
            ) from None
    missing = [n for n in declared if n not in fields]
    if missing:
        raise TcUsageError(f"{spec.name}: missing {', '.join(missing)}; {_fields_help(spec)}")
    return fields


async def send_and_wait(
    broker: str,
    mission: str,
    node: str,
    signer: TelecommandSigner,
    spec: MessageSpec,
    fields: dict[str, Any],
    timeout_s: float,
    tls: BusTls | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Control: sign and publish one telecommand, then wait for its TC_ACK; get (seq, the
    acknowledgement's fields or None if none came within `timeout_s`)."""
    from satqkd_runtime.bus import MessageBus

    ack_topic = dct.telemetry_topic(mission, node, "TC_ACK")
    client_id = f"satqkd-tc-{os.getpid()}-{secrets.token_hex(3)}"
    async with MessageBus(broker, client_id, persistent_session=False, tls=tls) as bus:
        await bus.subscribe(ack_topic)  # before publishing, so the answer cannot be missed
        seq, data = signer.sign(spec.name, fields)
        await bus.publish(dct.telecommand_topic(mission, node), data, qos=spec.qos)

        async def ack() -> dict[str, Any]:
            async for message in bus.messages():
                try:
                    answer = decode_envelope(message.payload)
                except CodecError:
                    continue
                f = answer.fields
                if answer.spec.name != "TC_ACK":
                    continue
                if f["command_id"] == spec.id and f["command_seq"] == seq:
                    return f
            raise ConnectionError("the broker connection closed")

        try:
            async with asyncio.timeout(timeout_s):  # not wait_for (issue 13)
                return seq, await ack()
        except TimeoutError:
            return seq, None


def split_node_and_command(args: argparse.Namespace) -> None:
    """Control: set args.node (unless --node gave it), args.name and args.fields from the
    positional words `[NODE] COMMAND [field=value ...]`; TcUsageError if one is missing."""
    words = list(args.words)
    if args.node is None:
        if len(words) < 2 or "=" in words[1]:
            raise TcUsageError(
                "give the node and the command: tc send NODE COMMAND [field=value ...] "
                "(NODE: 'payload' or 'ogs-<station>')"
            )
        args.node = words.pop(0)
    args.name, args.fields = words[0], words[1:]


def run_tc_send(args: argparse.Namespace) -> int:
    """`satqkd tc send`: sign, send, wait for the TC_ACK and print accepted/rejected."""
    from satqkd.broker_security import OCC, bus_tls_from_options
    from satqkd_runtime.keystore import KeyStoreError
    from satqkd_runtime.telecommand_auth import TelecommandKeyError, TelecommandSigner

    try:
        split_node_and_command(args)
        spec = telecommand_spec(args.name)
        dct.telecommand_topic(args.mission, args.node)  # checks both names
        if spec.direction == "occ->payload" and args.node != dct.PAYLOAD_NODE:
            raise TcUsageError(f"{spec.name} is a payload command: give --node payload")
        fields = parse_fields(spec, list(args.fields))
        if not 0 < args.timeout_s <= 3600:
            raise TcUsageError(f"--timeout-s must be within (0, 3600] s, got {args.timeout_s:g}")
        try:
            encode_body(spec, fields)  # a value outside its type's range, before connecting
        except CodecError as exc:
            raise TcUsageError(f"{exc}; {_fields_help(spec)}") from None
        tls = bus_tls_from_options(
            args.broker, args.tls_ca, args.tls_cert, args.tls_key, identity=OCC
        )
        signer = TelecommandSigner.for_node(args.occ_keys, args.node, reservation=1)
    except (TcUsageError, InputError, KeyStoreError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        seq, ack = asyncio.run(
            send_and_wait(
                args.broker, args.mission, args.node, signer, spec, fields, args.timeout_s, tls
            )
        )
    except ConnectionError as exc:
        return _fail(f"broker: {exc}")
    except (TelecommandKeyError, KeyStoreError) as exc:
        return _fail(str(exc))
    except OSError as exc:  # the sequence state could not be written
        return _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else f"broker: {exc}")
    except ValueError as exc:  # a malformed broker url
        return _fail(f"--broker: {exc}", EXIT_USAGE)
    where = f"{spec.name} (seq {seq}) to {args.node}"
    if ack is None:
        return _fail(
            f"{where}: no TC_ACK within {args.timeout_s:g} s (is the node running and "
            "subscribed to this broker?)"
        )
    if ack["accepted"]:
        print(f"{where}: accepted")
        return 0
    print(f"{where}: rejected: {ack['reason']}")
    return EXIT_FAILED


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"satqkd: {message}", file=sys.stderr)
    return status
