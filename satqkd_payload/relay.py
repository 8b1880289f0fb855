"""The payload's part of a trusted relay: RELAY_KEYS in, one RELAY_XOR to each station out.

On RELAY_KEYS (signed by the control centre, like every telecommand) the payload takes `bits`
of the key it shares with station A and as many of the key it shares with B, from the
confirmed keys the command names (all, oldest first, when it names none), erases both, and
sends key_A XOR key_B to A and to B, each copy authenticated on that station's QKD channel
(Wegman-Carter, the station's own pre-shared pool). Nothing else of the relay leaves the
payload; the XOR reveals neither key (satqkd_core.trusted_relay).

Keys move from the link's key store into the link's key management store
(`<key root>/<station>/kms/keys.sqlite`) before a relay uses them: the key-store file is
destroyed once its block is there, so a key's bits live in one place, and a used key's bits are
erased in the transaction that takes them. Relay ids are recorded
(`<key root>/relay-record.secret`, owner-only) before any key is taken: a relay id is carried
out once, across restarts too.

A refusal (the reason in TC_ACK and a RELAY_REFUSED event) takes nothing. Events name relay
ids, key ids, counts and the SHA-256 of the XOR; never key bits, nor the XOR itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from satqkd_core.codec import Envelope
from satqkd_core.errors import InputError
from satqkd_core.trusted_relay import (
    KeyRange,
    choose_key_ranges,
    format_key_ranges,
    parse_block_list,
    relay_problem,
    sha256_hex,
    xor_keys,
)
from satqkd_runtime.key_management import KeyManagement, KeyManagementError, key_id_for
from satqkd_runtime.keystore import KeyStore, KeyStoreError

if TYPE_CHECKING:
    from satqkd_payload.daemon import PayloadDaemon
    from satqkd_payload.pass_endings import StationLink

log = logging.getLogger("satqkd.payload")

KEY_SIZE_BITS = 256  # the key management key size of every node (satqkd kms serve's default)
RELAY_RECORD_SECRET = "relay-record"
KMS_DIR = "kms"


class RelayRefused(Exception):
    """A relay the payload does not carry out; the message says why (one line)."""


def relay_ids_used(key_root: Path) -> set[int]:
    """Get: the relay ids this payload has carried out (or started to)."""
    store = KeyStore(key_root)
    if not store.has_secret(RELAY_RECORD_SECRET):
        return set()
    try:
        return {int(r) for r in json.loads(store.load_secret(RELAY_RECORD_SECRET))["relay_ids"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise RelayRefused(f"{store.directory}: {RELAY_RECORD_SECRET} is damaged ({exc})") from None


def _record_relay_id(key_root: Path, relay_id: int) -> None:
    used = sorted(relay_ids_used(key_root) | {relay_id})
    KeyStore(key_root).store_secret(RELAY_RECORD_SECRET, json.dumps({"relay_ids": used}).encode())


def link_key_management(link: StationLink) -> KeyManagement:
    """Get: the key management store of one link (opened; the caller closes it)."""
    return KeyManagement(link.keystore.directory / KMS_DIR, KEY_SIZE_BITS)


def _move_into_key_management(
    store: KeyStore, kms: KeyManagement, block_ids: Sequence[str]
) -> None:
    """Enter each named confirmed key of the link's key store into its key management store
    and destroy the key-store copy (a block already entered only loses a leftover copy)."""
    for block_id in block_ids:
        if not kms.has_block(block_id):
            try:
                meta = store.metadata(block_id)
                if meta.state != "confirmed":
                    raise RelayRefused(f"key {block_id} is not confirmed by the station")
                bits = store.load(block_id)
            except KeyStoreError:
                raise RelayRefused(f"key {block_id} is not a key of this link") from None
            kms.add_block(
                block_id,
                np.packbits(bits, bitorder="big").tobytes(),
                meta.key_bits,
                peer=meta.peer,
                origin="pass",
                plan_id=meta.plan_id,
                created_unix_s=meta.created_unix_s,
            )
        with contextlib.suppress(KeyStoreError):  # gone: moved by an earlier relay
            store.discard(block_id)


def discard_moved_key(link_keys: Path, block_id: str) -> bool:
    """Control: destroy what is left of a confirmed key that moved into the link's key
    management store (a late ABORT from the station: it holds no such key): its available keys
    are taken and erased. False if the key never moved or nothing of it is left."""
    if not (Path(link_keys) / KMS_DIR).is_dir():
        return False
    with KeyManagement(Path(link_keys) / KMS_DIR, KEY_SIZE_BITS) as kms:
        if not kms.has_block(block_id):
            return False
        left = [key_id_for(block_id, KEY_SIZE_BITS, i) for i in kms.available_indices(block_id)]
        if left:
            kms.take_available(left, "discarded")
        return bool(left)


def _link_blocks(link: StationLink, kms: KeyManagement, named: list[str]) -> list[str]:
    """Get: the blocks a relay may take key from on one link, in order: the named ones, or
    every confirmed key of the link (entered ones first), oldest first."""
    if named:
        return named
    entered = [b.block_id for b in kms.blocks() if b.origin == "pass"]
    return entered + [k for k in link.keystore.key_ids(state="confirmed") if k not in entered]


def _take_link_keys(
    link: StationLink, kms: KeyManagement, named: list[str], count: int, side: str
) -> list[KeyRange]:
    """Get: the key ranges a relay takes on one link (RelayRefused saying why if it cannot)."""
    blocks = _link_blocks(link, kms, named)
    _move_into_key_management(link.keystore, kms, blocks)
    available = [(block, kms.available_indices(block)) for block in blocks]
    for block, indices in available:
        if named and not indices:
            raise RelayRefused(f"key {block} of the link with {side} {link.station} is used up")
    ranges = choose_key_ranges(available, count)
    if ranges is None:
        have = sum(len(indices) for _, indices in available)
        raise RelayRefused(
            f"link with {side} {link.station}: {have} keys of {KEY_SIZE_BITS} bits available "
            f"in the named keys, {count} needed"
        )
    return ranges


def _key_ids(ranges: list[KeyRange]) -> list[str]:
    return [key_id_for(r.block_id, KEY_SIZE_BITS, i) for r in ranges for i in r.indices]


async def relay_keys(daemon: PayloadDaemon, envelope: Envelope) -> None:
    """Control: carry out a RELAY_KEYS telecommand (accepted once both copies of the
    broadcast are sent), or refuse it with the reason."""
    f = envelope.fields
    try:
        xor_digest = await _relay(daemon, f)
    except RelayRefused as exc:
        await daemon.runtime.emit_event("RELAY_REFUSED", f"relay {f['relay_id']}: {exc}")
        await daemon.runtime.reject_telecommand(envelope, f"relay refused: {exc}")
        return
    await daemon.runtime.emit_event(
        "RELAY_FILED",
        f"relay {f['relay_id']}: {f['bits']} bits of {f['station_a']} XOR {f['station_b']} sent "
        f"to both (xor sha256 {xor_digest})",
    )
    await daemon.runtime.accept_telecommand(envelope)


async def _relay(daemon: PayloadDaemon, f: dict[str, Any]) -> str:
    relay_id, bits = int(f["relay_id"]), int(f["bits"])
    station_a, station_b = str(f["station_a"]), str(f["station_b"])
    problem = relay_problem(relay_id, station_a, station_b, bits, KEY_SIZE_BITS)
    if problem:
        raise RelayRefused(problem)
    for station in (station_a, station_b):
        if station not in daemon.links:
            raise RelayRefused(f"no pre-shared key with station {station!r}")
        channel = daemon.links[station].channel
        if channel.failure_limit_reached or channel.pad_words_remaining < 1:
            raise RelayRefused(f"the QKD channel with {station} cannot authenticate a message")
    if relay_id in relay_ids_used(daemon.key_root):
        raise RelayRefused(f"relay id {relay_id} was used before")
    try:
        named_a = parse_block_list(f["blocks_a"], "blocks_a")
        named_b = parse_block_list(f["blocks_b"], "blocks_b")
    except InputError as exc:
        raise RelayRefused(str(exc)) from None
    link_a, link_b = daemon.links[station_a], daemon.links[station_b]
    count = bits // KEY_SIZE_BITS
    kms_a, kms_b = link_key_management(link_a), link_key_management(link_b)
    try:
        ranges_a = _take_link_keys(link_a, kms_a, named_a, count, "A")
        ranges_b = _take_link_keys(link_b, kms_b, named_b, count, "B")
        _record_relay_id(daemon.key_root, relay_id)  # on disk before a key is taken
        holder = f"relay-{relay_id}"
        key_a = b"".join(k.material for k in kms_a.take_available(_key_ids(ranges_a), holder))
        key_b = b"".join(k.material for k in kms_b.take_available(_key_ids(ranges_b), holder))
    except (KeyManagementError, KeyStoreError) as exc:
        raise RelayRefused(str(exc)) from None
    finally:
        kms_a.close()
        kms_b.close()
    xor = xor_keys(key_a, key_b)
    key_a = key_b = b""  # the payload's copies end with this call
    message = {
        "relay_id": relay_id,
        "station_a": station_a,
        "station_b": station_b,
        "key_size_bits": KEY_SIZE_BITS,
        "bits": bits,
        "keys_a": format_key_ranges(ranges_a),
        "keys_b": format_key_ranges(ranges_b),
        "xor": xor,
    }
    for link in (link_a, link_b):
        await link.channel.send("RELAY_XOR", **message)
    log.info("relay %d: %d keys of each link used", relay_id, count)
    return sha256_hex(xor)
