"""Tests for satqkd_core.privacy_amplification: exact Toeplitz hashing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import satqkd_core.privacy_amplification as pa
from satqkd_core.errors import InputError
from satqkd_core.privacy_amplification import (
    NTT_PRIME,
    ntt_cyclic_convolution,
    ntt_cyclic_convolution_reference,
    toeplitz_hash,
    toeplitz_hash_reference,
    toeplitz_seed_bits,
)


def _inputs(seed: int, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 2, n).astype(np.uint8)
    toeplitz_seed = rng.integers(0, 2, n + m - 1).astype(np.uint8)
    return key, toeplitz_seed


def _dense_product(key: np.ndarray, toeplitz_seed: np.ndarray, m: int) -> np.ndarray:
    """T x mod 2 with T[i, j] = seed[i - j + n - 1] built as a dense matrix."""
    n = key.size
    index = np.arange(m)[:, None] - np.arange(n)[None, :] + n - 1
    matrix = toeplitz_seed[index].astype(np.int64)
    return ((matrix @ key.astype(np.int64)) % 2).astype(np.uint8)


sizes = st.integers(1, 140).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n)))


@settings(max_examples=200, deadline=None)
@given(size=sizes, seed=st.integers(0, 2**32 - 1))
def test_fast_path_matches_reference(size: tuple[int, int], seed: int) -> None:
    n, m = size
    key, toeplitz_seed = _inputs(seed, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    assert np.array_equal(toeplitz_hash(key, toeplitz_seed, m), expected)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 1), (2, 2), (9, 1), (9, 9), (63, 63), (65, 1)])
def test_edge_sizes_match_reference(n: int, m: int) -> None:
    key, toeplitz_seed = _inputs(n * 1000 + m, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    assert np.array_equal(toeplitz_hash(key, toeplitz_seed, m), expected)
    assert np.array_equal(_dense_product(key, toeplitz_seed, m), expected)


def test_matrix_convention() -> None:
    # n = 3, m = 2: T = [[s2, s1, s0], [s3, s2, s1]]; a one-hot key picks a column.
    toeplitz_seed = np.array([1, 0, 0, 1], dtype=np.uint8)  # s0..s3
    columns = [toeplitz_hash(np.eye(3, dtype=np.uint8)[j], toeplitz_seed, 2) for j in range(3)]
    assert [c.tolist() for c in columns] == [[0, 1], [0, 0], [1, 0]]


@settings(max_examples=120, deadline=None)
@given(size=sizes, seed=st.integers(0, 2**32 - 1), block_bits=st.integers(1, 40))
def test_blocked_path_matches_reference(size: tuple[int, int], seed: int, block_bits: int) -> None:
    n, m = size
    key, toeplitz_seed = _inputs(seed, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    assert np.array_equal(pa._blocked(key, toeplitz_seed, m, block_bits), expected)


@settings(max_examples=60, deadline=None)
@given(size=sizes, seed=st.integers(0, 2**32 - 1), block_bits=st.integers(1, 40))
def test_exact_fallback_matches_reference(
    size: tuple[int, int], seed: int, block_bits: int
) -> None:
    n, m = size
    key, toeplitz_seed = _inputs(seed, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    limit = pa.ROUNDING_MARGIN_LIMIT
    pa.ROUNDING_MARGIN_LIMIT = -1.0  # every margin check fails: every block takes the NTT path
    try:
        assert np.array_equal(toeplitz_hash(key, toeplitz_seed, m), expected)
        assert np.array_equal(pa._blocked(key, toeplitz_seed, m, block_bits), expected)
    finally:
        pa.ROUNDING_MARGIN_LIMIT = limit


def test_margin_check_fires_on_corrupted_values() -> None:
    assert pa._rounded_parity(np.array([1.0, 2.1, 3.0])) is not None
    assert pa._rounded_parity(np.array([1.0, 2.3, 3.0])) is None
    assert pa._rounded_parity(np.array([0.9, 2.0, 2.76])).tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("n", "m", "block_bits"), [(3000, 1500, 256), (3000, 3000, 1000), (2500, 1, 64)]
)
def test_mid_size_paths_match_dense_product(n: int, m: int, block_bits: int) -> None:
    key, toeplitz_seed = _inputs(n + m, n, m)
    expected = _dense_product(key, toeplitz_seed, m)
    assert np.array_equal(toeplitz_hash(key, toeplitz_seed, m), expected)
    assert np.array_equal(pa._toeplitz_product_parity(key, toeplitz_seed, m, block_bits), expected)


def test_large_input_is_linear_and_matches_blocked_path() -> None:
    n, m = 200_000, 100_000
    key_a, toeplitz_seed = _inputs(1, n, m)
    key_b, _ = _inputs(2, n, m)
    hash_a = toeplitz_hash(key_a, toeplitz_seed, m)
    hash_b = toeplitz_hash(key_b, toeplitz_seed, m)
    assert np.array_equal(toeplitz_hash(key_a ^ key_b, toeplitz_seed, m), hash_a ^ hash_b)
    assert np.array_equal(pa._blocked(key_a, toeplitz_seed, m, 1 << 15), hash_a)
    # spot-check a few output bits against the definition
    for i in (0, 1, m // 2, m - 1):
        window = toeplitz_seed[i : i + n][::-1]  # seed[i - j + n - 1] for j = 0..n-1
        assert hash_a[i] == int(window.astype(np.int64) @ key_a.astype(np.int64)) % 2


@settings(max_examples=100, deadline=None)
@given(
    log_size=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
    extremes=st.booleans(),
)
def test_ntt_matches_reference(log_size: int, seed: int, extremes: bool) -> None:
    size = 1 << log_size
    rng = np.random.default_rng(seed)
    if extremes:
        a = np.full(size, NTT_PRIME - 1, dtype=np.int64)
        b = rng.choice(np.array([0, 1, NTT_PRIME - 1]), size).astype(np.int64)
    else:
        a = rng.integers(0, NTT_PRIME, size).astype(np.int64)
        b = rng.integers(0, NTT_PRIME, size).astype(np.int64)
    expected = ntt_cyclic_convolution_reference(a, b)
    assert np.array_equal(ntt_cyclic_convolution(a, b), expected)


def test_fast_length_is_smooth_and_not_smaller() -> None:
    for minimum in [1, 2, 7, 97, 1000, 1_499_999, 1_500_001, 8_388_609]:
        length = pa._fast_length(minimum)
        assert length >= minimum
        rest = length
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        assert rest == 1
        assert length <= pa._next_power_of_two(minimum)


def test_seed_bits() -> None:
    assert toeplitz_seed_bits(10, 1) == 10
    assert toeplitz_seed_bits(10, 10) == 19
    with pytest.raises(InputError, match="must not exceed"):
        toeplitz_seed_bits(10, 11)
    with pytest.raises(InputError, match="output_bits"):
        toeplitz_seed_bits(10, 0)


@pytest.mark.parametrize(
    ("n", "seed_bits", "m", "match"),
    [
        (10, 13, 5, "got 13"),
        (10, 15, 5, "got 15"),
        (10, 20, 11, "must not exceed"),
        (10, 10, 0, "output_bits"),
    ],
)
def test_bad_sizes_rejected(n: int, seed_bits: int, m: int, match: str) -> None:
    key = np.zeros(n, dtype=np.uint8)
    toeplitz_seed = np.zeros(seed_bits, dtype=np.uint8)
    with pytest.raises(InputError, match=match):
        toeplitz_hash(key, toeplitz_seed, m)


def test_non_bit_values_rejected() -> None:
    with pytest.raises(InputError, match="key must hold only 0 and 1"):
        toeplitz_hash(np.array([0, 1, 3]), np.zeros(3, dtype=np.uint8), 1)
    with pytest.raises(InputError, match="seed must hold only 0 and 1"):
        toeplitz_hash(np.array([0, 1, 1]), np.array([0, -1, 0]), 1)
