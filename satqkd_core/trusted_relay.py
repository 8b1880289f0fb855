"""Trusted relay through the satellite: the pure parts (issue 14, step e; docs/relay.md).

The payload shares key_A with station A and key_B with station B (confirmed keys of two passes,
carved into keys of one size by key management, with ids both ends of a link derive alike). A
relay takes `bits` of each, in agreed ranges of those keys, and broadcasts
x = key_A XOR key_B. Station A already holds key_A; station B recovers key_A = x XOR key_B.
x is a one-time-pad encryption of key_A under key_B (and of key_B under key_A): it reveals
nothing about either key to anyone who holds neither, so it may travel in the clear; it is
authenticated so that nobody can make B file a key of their choosing. The payload sees both
keys: it is a trusted node.

This module: the relay's checks, which keys a relay takes (ranges of key indices per block),
their text form on the wire, the relay block id (the same at both stations), XOR and recovery.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from satqkd_core.errors import InputError

__all__ = [
    "MAX_RELAY_BITS",
    "KeyRange",
    "choose_key_ranges",
    "format_key_ranges",
    "parse_block_list",
    "parse_key_ranges",
    "range_key_count",
    "recover_key",
    "relay_block_id",
    "relay_problem",
    "sha256_hex",
    "xor_keys",
]

MAX_RELAY_BITS = 1 << 24  # 2 MiB of key per relay: one message, well inside a pass's key
MAX_RANGES = 4096
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STATION = re.compile(r"[a-z0-9_-]+")
# relay block ids (RFC 4122 version 5) in a namespace of their own
_RELAY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:satqkd:trusted-relay")


@dataclass(frozen=True)
class KeyRange:
    """Keys `first` .. `first + count - 1` carved from one block (a confirmed key)."""

    block_id: str
    first: int
    count: int

    @property
    def indices(self) -> range:
        """Get: the key indices of the range."""
        return range(self.first, self.first + self.count)


def relay_problem(
    relay_id: int, station_a: str, station_b: str, bits: int, key_size_bits: int
) -> str | None:
    """Get: why a relay request cannot be carried out as asked (None if it can): stations that
    are not two distinct names, a number of bits that is not a positive multiple of the key
    size or above MAX_RELAY_BITS."""
    if isinstance(relay_id, bool) or not isinstance(relay_id, int) or not 0 <= relay_id < 2**32:
        return f"relay_id {relay_id!r} is not a u32"
    for name, station in (("station_a", station_a), ("station_b", station_b)):
        if not isinstance(station, str) or not _STATION.fullmatch(station):
            return f"{name} {station!r} is not a station name ([a-z0-9_-]+)"
    if station_a == station_b:
        return f"station_a and station_b are both {station_a!r}: a relay joins two stations"
    if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
        return f"bits {bits!r} is not a positive number"
    if bits % key_size_bits:
        return f"bits {bits} is not a multiple of the key size {key_size_bits}"
    if bits > MAX_RELAY_BITS:
        return f"bits {bits} above the limit of {MAX_RELAY_BITS} per relay"
    return None


def parse_block_list(text: str, field: str) -> list[str]:
    """Get: the block ids of a comma-separated list (empty text: none); InputError naming
    `field` for an id that is not a UUID or is given twice."""
    if not isinstance(text, str):
        raise InputError(f"{field}: must be a str, got {type(text).__name__}")
    blocks = [part.strip() for part in text.split(",")] if text.strip() else []
    for block in blocks:
        if not _UUID.fullmatch(block):
            raise InputError(f"{field}: {block!r} is not a key id (UUID)")
    if len(set(blocks)) != len(blocks):
        raise InputError(f"{field}: a key id is named twice")
    return blocks


def choose_key_ranges(
    available: Sequence[tuple[str, Sequence[int]]], count: int
) -> list[KeyRange] | None:
    """Get: the first `count` keys of `available` ((block id, available key indices, increasing)
    in the agreed block order) as ranges of consecutive indices; None if fewer are available."""
    ranges: list[KeyRange] = []
    needed = count
    for block_id, indices in available:
        taken = list(indices[:needed])
        needed -= len(taken)
        start = 0
        while start < len(taken):
            stop = start + 1  # the run of consecutive indices from taken[start]
            while stop < len(taken) and taken[stop] == taken[stop - 1] + 1:
                stop += 1
            ranges.append(KeyRange(block_id, taken[start], stop - start))
            start = stop
        if needed == 0:
            break
    return ranges if needed == 0 else None


def format_key_ranges(ranges: Sequence[KeyRange]) -> str:
    """Get: the wire text of key ranges: `block:first:count` joined by ';'."""
    return ";".join(f"{r.block_id}:{r.first}:{r.count}" for r in ranges)


def parse_key_ranges(text: str, field: str) -> list[KeyRange]:
    """Get: the key ranges of a wire text; InputError naming `field` if it is malformed, empty,
    has too many ranges, or names a key twice."""
    if not isinstance(text, str) or not text:
        raise InputError(f"{field}: no key ranges")
    parts = text.split(";")
    if len(parts) > MAX_RANGES:
        raise InputError(f"{field}: {len(parts)} ranges, at most {MAX_RANGES}")
    ranges = []
    seen: set[tuple[str, int]] = set()
    for part in parts:
        match = re.fullmatch(rf"({_UUID.pattern}):(\d{{1,9}}):(\d{{1,9}})", part)
        if match is None:
            raise InputError(f"{field}: {part[:80]!r} is not block:first:count")
        key_range = KeyRange(match.group(1), int(match.group(2)), int(match.group(3)))
        if key_range.count < 1:
            raise InputError(f"{field}: range {part!r} holds no key")
        for index in key_range.indices:
            if (key_range.block_id, index) in seen:
                raise InputError(f"{field}: key {index} of {key_range.block_id} named twice")
            seen.add((key_range.block_id, index))
        ranges.append(key_range)
    return ranges


def range_key_count(ranges: Sequence[KeyRange]) -> int:
    """Get: the number of keys the ranges hold."""
    return sum(r.count for r in ranges)


def relay_block_id(mission: str, relay_id: int, station_a: str, station_b: str) -> str:
    """Get: the id of the block a relay files at both stations (the same at both, so its keys
    get the same ids at both)."""
    return str(uuid.uuid5(_RELAY_NAMESPACE, f"{mission}/{relay_id}/{station_a}/{station_b}"))


def xor_keys(key_a: bytes, key_b: bytes) -> bytes:
    """Get: key_a XOR key_b, byte by byte; InputError unless both are bytes of one length."""
    for name, key in (("key_a", key_a), ("key_b", key_b)):
        if not isinstance(key, bytes | bytearray):
            raise InputError(f"{name} must be bytes, got {type(key).__name__}")
    if len(key_a) != len(key_b) or not key_a:
        raise InputError(f"keys of {len(key_a)} and {len(key_b)} bytes: a relay XORs equal keys")
    return (int.from_bytes(key_a, "big") ^ int.from_bytes(key_b, "big")).to_bytes(len(key_a), "big")


def recover_key(broadcast: bytes, own_key: bytes) -> bytes:
    """Get: the far station's key from the broadcast XOR and this station's own key."""
    return xor_keys(broadcast, own_key)


def sha256_hex(data: bytes) -> str:
    """Get: the SHA-256 digest of `data`, hex (for comparing two ends, not secret)."""
    return hashlib.sha256(data).hexdigest()
