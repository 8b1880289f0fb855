"""Random protocol values made from entropy-source bytes, at exactly the length credited.

Each function turns bytes drawn from a node's entropy source into one kind of value without
stretching them: bits are the bytes' bits, seeds and key ids are the bytes themselves, and the
GF(2^61 - 1) hash keys of error verification are 61-bit words accepted only below the prime
(rejection sampling, so each word is exactly uniform; a word is rejected with probability
2^-61). The sessions draw the bytes (an async read) and call these.
"""

from __future__ import annotations

import uuid

import numpy as np

from satqkd_core.bits import as_count
from satqkd_core.errors import InputError
from satqkd_core.verification import MERSENNE_PRIME_61

__all__ = [
    "KEY_ID_BYTES",
    "SEED_BYTES",
    "bits_from_bytes",
    "bytes_for_bits",
    "key_id_from_bytes",
    "seed_from_bytes",
    "words_below_mersenne61",
]

KEY_ID_BYTES = 16
SEED_BYTES = 8
_MASK61 = np.uint64((1 << 61) - 1)


def _as_bytes(raw: object, name: str = "raw") -> bytes:
    if not isinstance(raw, bytes | bytearray):
        raise InputError(f"{name} must be bytes, got {type(raw).__name__}")
    return bytes(raw)


def bytes_for_bits(bits: int) -> int:
    """Get: the bytes that hold `bits` bits."""
    return (as_count(bits, "bits") + 7) // 8


def bits_from_bytes(raw: bytes, count: int) -> np.ndarray:
    """Get: the first `count` bits of `raw` (big-endian bit order), uint8 0/1."""
    data = _as_bytes(raw)
    n = as_count(count, "count")
    if 8 * len(data) < n:
        raise InputError(f"{len(data)} bytes hold fewer than {n} bits")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n, bitorder="big")


def seed_from_bytes(raw: bytes) -> int:
    """Get: a seed in [0, 2^63) from 8 bytes (the top bit dropped: wire fields are int64)."""
    data = _as_bytes(raw)
    if len(data) != SEED_BYTES:
        raise InputError(f"a seed takes {SEED_BYTES} bytes, got {len(data)}")
    return int.from_bytes(data, "big") >> 1


def key_id_from_bytes(raw: bytes) -> str:
    """Get: a version-4 UUID string from 16 bytes (122 of them random)."""
    data = _as_bytes(raw)
    if len(data) != KEY_ID_BYTES:
        raise InputError(f"a key id takes {KEY_ID_BYTES} bytes, got {len(data)}")
    return str(uuid.UUID(bytes=data, version=4))


def words_below_mersenne61(raw: bytes) -> np.ndarray:
    """Get: the 61-bit words of `raw` (8 bytes each, top 3 bits dropped) that lie below
    2^61 - 1, in order; each is uniform on GF(2^61 - 1). The caller draws again for any
    word rejected."""
    data = _as_bytes(raw)
    if len(data) % 8:
        raise InputError(f"raw must be a multiple of 8 bytes, got {len(data)}")
    words = np.frombuffer(data, dtype=">u8").astype(np.uint64) & _MASK61
    return words[words < np.uint64(MERSENNE_PRIME_61)]
