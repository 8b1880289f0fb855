"""`satqkd keys relay`: a trusted relay through the satellite between two stations (docs/relay.md).

    satqkd keys relay --payload-keys DIR --station A=DIR --station B=DIR --bits N --out DIR

Runs the payload daemon and both station daemons on an embedded broker (or `--broker`), sends
the signed RELAY_KEYS telecommand and waits for both stations. The first `--station` is A (its
key is relayed), the second B (it recovers A's key). Writes `OUT/relay.json` (ids, counts and
digests, never key material); exit status 0 when both stations filed the key, 1 with the
reason on stderr when a node refused, 2 for bad input.
"""

from __future__ import annotations

import argparse
import re

from satqkd.cli import EXIT_FAILED, EXIT_USAGE, _fail

__all__ = ["add_relay_parser", "run_relay_command"]


def _station(text: str) -> tuple[str, str]:
    match = re.fullmatch(r"([a-z0-9_-]+)=(.+)", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"give NAME=DIR (a station name and its key store), got {text!r}"
        )
    return match.group(1), match.group(2)


def _ids(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_relay_parser(keys: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Control: add `keys relay` to the `keys` group."""
    relay = keys.add_parser(
        "relay",
        help="relay a key between two stations through the satellite (key_A XOR key_B)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    relay.add_argument(
        "--payload-keys", required=True, help="payload key root (payload run --keys)"
    )
    relay.add_argument(
        "--station", type=_station, action="append", required=True, metavar="NAME=DIR",
        help="a station and its key store; twice: A (its key is relayed), then B",
    )  # fmt: skip
    relay.add_argument("--bits", type=int, required=True, help="relay key bits (multiple of 256)")
    relay.add_argument("--out", required=True, help="directory for relay.json")
    relay.add_argument("--relay-id", type=int, help="relay id (default: the next unused one)")
    relay.add_argument("--mission", default="jinan1", help="mission profile name or YAML file")
    relay.add_argument("--blocks-a", type=_ids, default=(), help="key ids of A's link to use")
    relay.add_argument("--blocks-b", type=_ids, default=(), help="key ids of B's link to use")
    relay.add_argument("--occ-keys", help="control centre keys (default: PAYLOAD_KEYS/../occ)")
    relay.add_argument("--broker", help="MQTT broker URL (default: an embedded one)")
    relay.add_argument("--timeout-s", type=float, default=30.0, help="wait for the nodes")


def run_relay_command(args: argparse.Namespace) -> int:
    """Control: run `keys relay`; get the exit status."""
    import asyncio
    import dataclasses
    import json
    from pathlib import Path

    from satqkd.relay_run import RelayError, RelayRequest, run_relay
    from satqkd_payload.relay import RelayRefused, relay_ids_used

    if len(args.station) != 2:
        return _fail("--station: give exactly two, A then B", EXIT_USAGE)
    (station_a, keys_a), (station_b, keys_b) = args.station
    payload_keys = Path(args.payload_keys)
    if not payload_keys.is_dir():
        return _fail(f"--payload-keys {payload_keys}: no such directory", EXIT_USAGE)
    try:
        relay_id = args.relay_id
        if relay_id is None:
            relay_id = max(relay_ids_used(payload_keys), default=0) + 1
        request = RelayRequest(
            relay_id, station_a, station_b, args.bits, args.blocks_a, args.blocks_b
        )
        result = asyncio.run(
            run_relay(
                payload_keys,
                {station_a: Path(keys_a), station_b: Path(keys_b)},
                request,
                mission=args.mission,
                broker_url=args.broker,
                occ_keys=Path(args.occ_keys) if args.occ_keys else None,
                timeout_s=args.timeout_s,
            )
        )
    except (RelayError, RelayRefused) as exc:
        return _fail(str(exc), EXIT_USAGE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {"schema": "satqkd.relay/1", **dataclasses.asdict(result)}
    (out / "relay.json").write_text(json.dumps(document, indent=1) + "\n")
    if not result.ok:
        return _fail(f"relay {relay_id} not completed: {result.abort_reason}", EXIT_FAILED)
    print(
        f"relay {relay_id}: {result.bits} bits shared by {station_a} and {station_b} "
        f"({len(result.key_ids)} keys, sha256 {result.sha256[station_a][:16]}... at both); "
        f"{result.relay_bytes} bytes of relay traffic; {out / 'relay.json'}"
    )
    return 0
