"""Protocol values made from entropy bytes without stretching them."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from satqkd_core import random_values as rv
from satqkd_core.errors import InputError
from satqkd_core.verification import MERSENNE_PRIME_61


@given(st.binary(min_size=0, max_size=64), st.integers(min_value=0, max_value=512))
def test_bits_are_the_bytes_bits_in_order(raw: bytes, count: int) -> None:
    if 8 * len(raw) < count:
        with pytest.raises(InputError, match="fewer than"):
            rv.bits_from_bytes(raw, count)
        return
    bits = rv.bits_from_bytes(raw, count)
    expected = [(byte >> (7 - k)) & 1 for byte in raw for k in range(8)][:count]
    assert bits.tolist() == expected


def test_seed_and_key_id_take_exactly_their_bytes() -> None:
    assert rv.seed_from_bytes(b"\xff" * 8) == 2**63 - 1
    assert rv.seed_from_bytes(bytes(8)) == 0
    key_id = rv.key_id_from_bytes(bytes(range(16)))
    assert uuid.UUID(key_id).version == 4
    for bad in (bytes(7), bytes(9)):
        with pytest.raises(InputError, match="8 bytes"):
            rv.seed_from_bytes(bad)
    with pytest.raises(InputError, match="16 bytes"):
        rv.key_id_from_bytes(bytes(15))


def test_hash_key_words_reject_the_prime_and_keep_61_bits() -> None:
    p = MERSENNE_PRIME_61
    raw = b"".join(int(w).to_bytes(8, "big") for w in (p, p - 1, 0, (1 << 64) - 1, (7 << 61) | 5))
    words = rv.words_below_mersenne61(raw)
    # the top 3 bits dropped; 2^61 - 1 itself (twice: once with top bits set) rejected
    assert words.tolist() == [p - 1, 0, 5]
    assert words.dtype == np.uint64 and bool(np.all(words < np.uint64(p)))
    with pytest.raises(InputError, match="multiple of 8"):
        rv.words_below_mersenne61(bytes(12))
