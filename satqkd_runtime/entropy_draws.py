"""Drawing protocol values from a node's entropy source (any object with an async `read`).

Both daemons' sessions draw every random value through these, so each value takes exactly the
bytes it is credited with (satqkd_core.random_values) and is counted under its purpose.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from satqkd_core import random_values as rv

__all__ = ["RandomBytes", "draw_bits", "draw_hash_key_words", "draw_key_id", "draw_seed"]


class RandomBytes(Protocol):
    """What a session needs of an entropy source (drivers.interfaces.EntropySource)."""

    async def read(self, n_bytes: int, purpose: str) -> bytes:
        """Get: `n_bytes` fresh random bytes for `purpose`."""
        ...


async def draw_bits(source: RandomBytes, count: int, purpose: str) -> np.ndarray:
    """Get: `count` random bits (uint8 0/1)."""
    if count == 0:
        return np.zeros(0, dtype=np.uint8)
    raw = await source.read(rv.bytes_for_bits(count), purpose)
    return rv.bits_from_bytes(raw, count)


async def draw_seed(source: RandomBytes, purpose: str) -> int:
    """Get: a public seed in [0, 2^63)."""
    return rv.seed_from_bytes(await source.read(rv.SEED_BYTES, purpose))


async def draw_key_id(source: RandomBytes, purpose: str) -> str:
    """Get: a fresh key id (UUID version 4)."""
    return rv.key_id_from_bytes(await source.read(rv.KEY_ID_BYTES, purpose))


async def draw_hash_key_words(source: RandomBytes, count: int, purpose: str) -> np.ndarray:
    """Get: `count` words uniform on GF(2^61 - 1) (rejection sampling, see random_values)."""
    words = np.zeros(0, dtype=np.uint64)
    while words.size < count:
        raw = await source.read(8 * (count - words.size), purpose)
        words = np.concatenate([words, rv.words_below_mersenne61(raw)])
    return words[:count]
