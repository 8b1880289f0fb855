"""A station's part of a trusted relay: RELAY_XOR in, the relay key filed for ETSI 014 delivery.

The payload's RELAY_XOR arrives on the station's authenticated QKD channel (a bad tag or a
replayed sequence number is refused there, counted, before this module sees it). The station
takes the keys of its own link that the message names from its key management store
(`<key store>/kms/keys.sqlite`; confirmed keys of the key store are entered first), erasing
them, and files the relay key: station A its own key, station B the XOR with its own key
(= A's key). Both file it as one block of origin `relay` under the same block id
(satqkd_core.trusted_relay.relay_block_id), so its keys get the same ids at both stations, with
the other station's node (`ogs-<station>`) as the peer: `satqkd kms serve --peer ogs-<other>`
hands them out.

A relay id is handled once: it is recorded (`relay-record`, owner-only, in the key store, with
the provenance: stations, the keys used, the relay block, SHA-256 of the relay key and of the
XOR) before any key is taken, and a second RELAY_XOR with the same relay id is refused and
counted. Every outcome is a RELAY_DONE telemetry packet and a RELAY_FILED or RELAY_REFUSED
event; none carries key bits or the XOR.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from satqkd_core import dictionary as dct
from satqkd_core.codec import Envelope
from satqkd_core.errors import InputError
from satqkd_core.trusted_relay import (
    KeyRange,
    parse_key_ranges,
    range_key_count,
    recover_key,
    relay_block_id,
    relay_problem,
    sha256_hex,
)
from satqkd_runtime.key_management import KeyManagement, KeyManagementError, key_id_for
from satqkd_runtime.key_management_import import import_confirmed_keys
from satqkd_runtime.keystore import KeyStore, KeyStoreError

if TYPE_CHECKING:
    from satqkd_ogs.daemon import OgsDaemon

log = logging.getLogger("satqkd.ogs")

RELAY_RECORD_SECRET = "relay-record"
KMS_DIR = "kms"


class RelayRefused(Exception):
    """A relay this station does not file; the message says why (one line)."""


def relay_records(store: KeyStore) -> dict[str, dict[str, Any]]:
    """Get: the relays this station handled, by relay id (provenance, never key material)."""
    if not store.has_secret(RELAY_RECORD_SECRET):
        return {}
    try:
        records = json.loads(store.load_secret(RELAY_RECORD_SECRET))["relays"]
        if not isinstance(records, dict):
            raise TypeError("relays is not an object")
        return records
    except (ValueError, KeyError, TypeError) as exc:
        raise RelayRefused(f"{store.directory}: {RELAY_RECORD_SECRET} is damaged ({exc})") from None


def _record(store: KeyStore, relay_id: int, record: dict[str, Any]) -> None:
    records = relay_records(store)
    records[str(relay_id)] = record
    store.store_secret(RELAY_RECORD_SECRET, json.dumps({"relays": records}, indent=1).encode())


async def file_relay_key(daemon: OgsDaemon, envelope: Envelope, message_bytes: int) -> None:
    """Control: handle an authenticated RELAY_XOR: file the relay key, or refuse the relay
    (counted as a rejected QKD message); either way report RELAY_DONE."""
    f = envelope.fields
    relay_id = int(f["relay_id"])
    try:
        block_id, digest = _file(daemon, f)
    except RelayRefused as exc:
        daemon.runtime.counters.qkd_rejected += 1
        await daemon.runtime.emit_event("RELAY_REFUSED", f"relay {relay_id}: {exc}")
        await daemon.runtime.publish_telemetry(
            "RELAY_DONE",
            relay_id=relay_id,
            filed=False,
            reason=str(exc)[:500],
            bits=0,
            relay_block_id="",
            message_bytes=message_bytes,
        )
        return
    await daemon.runtime.emit_event(
        "RELAY_FILED",
        f"relay {relay_id}: {f['bits']} bits shared by {f['station_a']} and {f['station_b']} "
        f"filed as block {block_id} (key sha256 {digest[:16]}...)",
    )
    await daemon.runtime.publish_telemetry(
        "RELAY_DONE",
        relay_id=relay_id,
        filed=True,
        reason="",
        bits=int(f["bits"]),
        relay_block_id=block_id,
        message_bytes=message_bytes,
    )


def _check(station: str, f: dict[str, Any]) -> tuple[list[KeyRange], str]:
    """Get: this station's key ranges and the other station; RelayRefused if the message is
    not addressed to this station or does not hold together."""
    size, bits = int(f["key_size_bits"]), int(f["bits"])
    problem = relay_problem(int(f["relay_id"]), f["station_a"], f["station_b"], bits, max(size, 1))
    if problem:
        raise RelayRefused(problem)
    if station not in (f["station_a"], f["station_b"]):
        raise RelayRefused(f"relay of {f['station_a']} and {f['station_b']}, not of {station}")
    try:
        ranges_a = parse_key_ranges(f["keys_a"], "keys_a")
        ranges_b = parse_key_ranges(f["keys_b"], "keys_b")
    except InputError as exc:
        raise RelayRefused(str(exc)) from None
    for name, ranges in (("keys_a", ranges_a), ("keys_b", ranges_b)):
        if range_key_count(ranges) * size != bits:
            raise RelayRefused(f"{name} holds {range_key_count(ranges)} keys, not {bits} bits")
    if len(f["xor"]) * 8 != bits:
        raise RelayRefused(f"xor holds {len(f['xor']) * 8} bits, not {bits}")
    if station == f["station_a"]:
        return ranges_a, f["station_b"]
    return ranges_b, f["station_a"]


def _file(daemon: OgsDaemon, f: dict[str, Any]) -> tuple[str, str]:
    """File the relay key; get (relay block id, SHA-256 of the relay key)."""
    station, store = daemon.settings.station, daemon.keystore
    relay_id = int(f["relay_id"])
    own_ranges, other = _check(station, f)
    if str(relay_id) in relay_records(store):
        raise RelayRefused(f"relay id {relay_id} was handled before (replay)")
    block_id = relay_block_id(daemon.settings.mission, relay_id, f["station_a"], f["station_b"])
    size = int(f["key_size_bits"])
    record: dict[str, Any] = {
        "station_a": f["station_a"],
        "station_b": f["station_b"],
        "bits": int(f["bits"]),
        "keys_used": f["keys_a"] if station == f["station_a"] else f["keys_b"],
        "relay_block_id": block_id,
        "xor_sha256": sha256_hex(bytes(f["xor"])),
        "filed": False,
    }
    try:
        kms = KeyManagement(store.directory / KMS_DIR, size)
    except KeyManagementError as exc:
        raise RelayRefused(str(exc)) from None
    try:
        if kms.has_block(block_id):
            raise RelayRefused(f"relay block {block_id} is filed already (replay)")
        import_confirmed_keys(store, kms)
        _record(store, relay_id, record)  # on disk before a key is taken: never twice
        key_ids = [key_id_for(r.block_id, size, i) for r in own_ranges for i in r.indices]
        own = b"".join(k.material for k in kms.take_available(key_ids, f"relay-{relay_id}"))
        relay_key = own if station == f["station_a"] else recover_key(bytes(f["xor"]), own)
        digest = sha256_hex(relay_key)
        kms.add_block(
            block_id,
            relay_key,
            int(f["bits"]),
            peer=dct.ogs_node(other),
            origin="relay",
            created_unix_s=daemon.clock.now_unix_s(),
        )
    except (KeyManagementError, KeyStoreError) as exc:
        raise RelayRefused(str(exc)) from None
    finally:
        kms.close()
    _record(store, relay_id, {**record, "filed": True, "key_sha256": digest})
    log.info("relay %d: filed %s bits as block %s", relay_id, f["bits"], block_id)
    return block_id, digest
