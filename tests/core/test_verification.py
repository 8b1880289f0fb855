"""Tests for satqkd_core.verification: polynomial hashing over GF(2^61 - 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.verification import (
    MERSENNE_PRIME_61,
    poly_hash_words,
    poly_hash_words_reference,
    random_verification_hash_key,
    verification_hash_key_words,
    verification_tag,
    verification_tag_bits,
    verification_word_count,
)

P = MERSENNE_PRIME_61
field_words = st.one_of(
    st.integers(0, P - 1), st.sampled_from([0, 1, 2, P - 2, P - 1, (1 << 60) + 12345])
)


def _bits(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2, n).astype(np.uint8)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=150),
    bit_length=st.integers(0, P - 1),
    keys=st.lists(field_words, min_size=1, max_size=4),
)
def test_kernel_matches_reference(data: bytes, bit_length: int, keys: list[int]) -> None:
    raw = np.frombuffer(data, dtype=np.uint8)
    hash_keys = np.array(keys, dtype=np.uint64)
    got = poly_hash_words(raw, np.uint64(bit_length), hash_keys)
    assert got.tolist() == poly_hash_words_reference(raw, bit_length, hash_keys).tolist()


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 700), seed=st.integers(0, 2**32 - 1))
def test_equal_keys_give_equal_tags(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    key = _bits(rng, n)
    hash_key = random_verification_hash_key(rng, 2)
    assert verification_tag(key, hash_key) == verification_tag(key.copy(), hash_key.copy())


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 700), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_single_flipped_bit_changes_tag(n: int, seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    key = _bits(rng, n)
    position = data.draw(st.integers(0, n - 1))
    flipped = key.copy()
    flipped[position] ^= 1
    hash_key = random_verification_hash_key(rng, 1)
    # a collision here has probability <= (L + 1) / 2^61 < 1e-16
    assert verification_tag(key, hash_key) != verification_tag(flipped, hash_key)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 65, 511])
def test_appended_zero_bit_changes_tag(n: int) -> None:
    rng = np.random.default_rng(n)
    key = _bits(rng, n)
    hash_key = random_verification_hash_key(rng, 2)
    longer = np.concatenate([key, np.zeros(1, dtype=np.uint8)])
    assert verification_tag(key, hash_key) != verification_tag(longer, hash_key)


def test_tag_layout_is_big_endian_evaluations() -> None:
    rng = np.random.default_rng(5)
    key = _bits(rng, 1000)
    hash_key = random_verification_hash_key(rng, 3)
    tag = verification_tag(key, hash_key)
    assert len(tag) == 24
    expected = poly_hash_words_reference(np.packbits(key), 1000, hash_key)
    assert [int.from_bytes(tag[8 * i : 8 * i + 8], "big") for i in range(3)] == expected.tolist()


@pytest.mark.parametrize("eps_cor", [1e-3, 1e-9, 1e-15, 1e-30, 1e-60])
@pytest.mark.parametrize("key_bits", [1, 1000, 10**6, 10**8])
def test_hash_key_words_meet_eps_and_are_minimal(eps_cor: float, key_bits: int) -> None:
    words = verification_hash_key_words(eps_cor, key_bits)
    single = verification_word_count(key_bits) / P
    assert single**words <= eps_cor
    if words > 1:
        assert single ** (words - 1) > eps_cor
    assert verification_tag_bits(eps_cor, key_bits) == 61 * words


def test_word_count_counts_seven_byte_words_and_length_word() -> None:
    assert verification_word_count(1) == 2
    assert verification_word_count(56) == 2
    assert verification_word_count(57) == 3
    assert verification_word_count(10**6) == math.ceil(125000 / 7) + 1


def test_typical_tag_size() -> None:
    # eps_cor = 1e-15 on a 1e6-bit key: (L + 1) / p ~ 8e-15, so two evaluations (122 bits)
    assert verification_tag_bits(1e-15, 10**6) == 122


def test_random_hash_key_lies_in_field() -> None:
    words = random_verification_hash_key(np.random.default_rng(1), 1000)
    assert words.dtype == np.uint64 and words.size == 1000
    assert int(words.max()) < P


@pytest.mark.parametrize(
    ("key", "hash_key", "match"),
    [
        (np.array([], dtype=np.uint8), np.array([1], dtype=np.uint64), "key must hold"),
        (np.array([0, 2], dtype=np.uint8), np.array([1], dtype=np.uint64), "key must hold only"),
        (np.array([[0, 1]], dtype=np.uint8), np.array([1], dtype=np.uint64), "one-dimensional"),
        (np.array([0.0, 1.0]), np.array([1], dtype=np.uint64), "integer"),
        (np.array([0, 1], dtype=np.uint8), np.array([], dtype=np.uint64), "hash_key must hold"),
        (np.array([0, 1], dtype=np.uint8), np.array([P], dtype=np.uint64), "word 0"),
        (np.array([0, 1], dtype=np.uint8), np.array([1, 2**64 - 1], dtype=np.uint64), "word 1"),
        (np.array([0, 1], dtype=np.uint8), np.array([-1], dtype=np.int64), "non-negative"),
        (np.array([0, 1], dtype=np.uint8), [1, 2], "hash_key must be"),
    ],
)
def test_bad_inputs_are_rejected(key: object, hash_key: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        verification_tag(key, hash_key)  # type: ignore[arg-type]


@pytest.mark.parametrize("eps_cor", [0.0, 1.0, -1e-9, float("nan"), "x"])
def test_bad_eps_rejected(eps_cor: object) -> None:
    with pytest.raises(InputError, match="eps_cor"):
        verification_hash_key_words(eps_cor, 100)  # type: ignore[arg-type]


def test_bad_key_bits_rejected() -> None:
    with pytest.raises(InputError, match="key_bits"):
        verification_tag_bits(1e-15, 0)
