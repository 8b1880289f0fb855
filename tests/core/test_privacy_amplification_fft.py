"""Tests for satqkd_core.privacy_amplification_fft: the float64 FFT fallback of Toeplitz hashing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import satqkd_core.privacy_amplification_fft as fft
from satqkd_core.privacy_amplification import toeplitz_hash, toeplitz_hash_reference
from satqkd_core.privacy_amplification_fft import (
    NTT_PRIME,
    ntt_cyclic_convolution,
    ntt_cyclic_convolution_reference,
    toeplitz_product_parity_fft,
)
from tests.core.toeplitz_cases import dense_product, sizes, toeplitz_inputs


@settings(max_examples=120, deadline=None)
@given(size=sizes, seed=st.integers(0, 2**32 - 1))
def test_one_shot_path_matches_reference(size: tuple[int, int], seed: int) -> None:
    n, m = size
    key, toeplitz_seed = toeplitz_inputs(seed, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    assert np.array_equal(toeplitz_product_parity_fft(key, toeplitz_seed, m), expected)


@settings(max_examples=120, deadline=None)
@given(size=sizes, seed=st.integers(0, 2**32 - 1), block_bits=st.integers(1, 40))
def test_blocked_path_matches_reference(size: tuple[int, int], seed: int, block_bits: int) -> None:
    n, m = size
    key, toeplitz_seed = toeplitz_inputs(seed, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    assert np.array_equal(fft._blocked(key, toeplitz_seed, m, block_bits), expected)


@settings(max_examples=60, deadline=None)
@given(size=sizes, seed=st.integers(0, 2**32 - 1), block_bits=st.integers(1, 40))
def test_exact_fallback_matches_reference(
    size: tuple[int, int], seed: int, block_bits: int
) -> None:
    n, m = size
    key, toeplitz_seed = toeplitz_inputs(seed, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    limit = fft.ROUNDING_MARGIN_LIMIT
    fft.ROUNDING_MARGIN_LIMIT = -1.0  # every margin check fails: every block takes the NTT path
    try:
        assert np.array_equal(toeplitz_product_parity_fft(key, toeplitz_seed, m), expected)
        assert np.array_equal(fft._blocked(key, toeplitz_seed, m, block_bits), expected)
    finally:
        fft.ROUNDING_MARGIN_LIMIT = limit


def test_margin_check_fires_on_corrupted_values() -> None:
    assert fft._rounded_parity(np.array([1.0, 2.1, 3.0])) is not None
    assert fft._rounded_parity(np.array([1.0, 2.3, 3.0])) is None
    assert fft._rounded_parity(np.array([0.9, 2.0, 2.76])).tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("n", "m", "block_bits"), [(3000, 1500, 256), (3000, 3000, 1000), (2500, 1, 64)]
)
def test_mid_size_paths_matchdense_product(n: int, m: int, block_bits: int) -> None:
    key, toeplitz_seed = toeplitz_inputs(n + m, n, m)
    expected = dense_product(key, toeplitz_seed, m)
    assert np.array_equal(toeplitz_product_parity_fft(key, toeplitz_seed, m), expected)
    assert np.array_equal(
        toeplitz_product_parity_fft(key, toeplitz_seed, m, block_bits, one_shot_max=1), expected
    )


def test_large_input_blocked_and_one_shot_agree_with_the_public_hash() -> None:
    n, m = 200_000, 100_000
    key, toeplitz_seed = toeplitz_inputs(1, n, m)
    expected = toeplitz_hash(key, toeplitz_seed, m)
    assert np.array_equal(toeplitz_product_parity_fft(key, toeplitz_seed, m), expected)
    assert np.array_equal(fft._blocked(key, toeplitz_seed, m, 1 << 15), expected)


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
        length = fft._fast_length(minimum)
        assert length >= minimum
        rest = length
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        assert rest == 1
        assert length <= fft._next_power_of_two(minimum)
