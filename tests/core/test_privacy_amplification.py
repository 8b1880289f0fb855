"""Tests for satqkd_core.privacy_amplification: exact Toeplitz hashing."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import satqkd_core.privacy_amplification as pa
from satqkd_core.errors import InputError
from satqkd_core.privacy_amplification import (
    toeplitz_hash,
    toeplitz_hash_reference,
    toeplitz_seed_bits,
)
from tests.conftest import examples
from tests.core.toeplitz_cases import dense_product, sizes, toeplitz_inputs


@settings(max_examples=examples(200, 60), deadline=None)
@given(size=sizes, seed=st.integers(0, 2**32 - 1))
def test_fast_path_matches_reference(size: tuple[int, int], seed: int) -> None:
    n, m = size
    key, toeplitz_seed = toeplitz_inputs(seed, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    assert np.array_equal(toeplitz_hash(key, toeplitz_seed, m), expected)


@pytest.mark.parametrize(
    ("n", "m"),
    [(1, 1), (2, 1), (2, 2), (9, 1), (9, 9), (63, 63), (65, 1), (64, 64), (129, 65), (600, 513)],
)
def test_edge_sizes_match_reference(n: int, m: int) -> None:
    key, toeplitz_seed = toeplitz_inputs(n * 1000 + m, n, m)
    expected = toeplitz_hash_reference(key, toeplitz_seed, m)
    assert np.array_equal(toeplitz_hash(key, toeplitz_seed, m), expected)
    assert np.array_equal(dense_product(key, toeplitz_seed, m), expected)


def test_matrix_convention() -> None:
    # n = 3, m = 2: T = [[s2, s1, s0], [s3, s2, s1]]; a one-hot key picks a column.
    toeplitz_seed = np.array([1, 0, 0, 1], dtype=np.uint8)  # s0..s3
    columns = [toeplitz_hash(np.eye(3, dtype=np.uint8)[j], toeplitz_seed, 2) for j in range(3)]
    assert [c.tolist() for c in columns] == [[0, 1], [0, 0], [1, 0]]


def test_fft_fallback_is_taken_without_hardware_clmul_and_gives_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, toeplitz_seed = toeplitz_inputs(5, 3000, 1200)
    expected = toeplitz_hash(key, toeplitz_seed, 1200)
    monkeypatch.setattr(pa, "CLMUL_INSTRUCTION", "")
    monkeypatch.setattr(pa, "_toeplitz_product_parity_clmul", None)  # must not be reached
    assert np.array_equal(toeplitz_hash(key, toeplitz_seed, 1200), expected)
    assert np.array_equal(expected, dense_product(key, toeplitz_seed, 1200))


def test_large_input_is_linear_and_matches_the_definition() -> None:
    n, m = 200_000, 100_000
    key_a, toeplitz_seed = toeplitz_inputs(1, n, m)
    key_b, _ = toeplitz_inputs(2, n, m)
    hash_a = toeplitz_hash(key_a, toeplitz_seed, m)
    hash_b = toeplitz_hash(key_b, toeplitz_seed, m)
    assert np.array_equal(toeplitz_hash(key_a ^ key_b, toeplitz_seed, m), hash_a ^ hash_b)
    # spot-check output bits against the definition, at block and word edges too
    for i in (0, 1, 63, 64, 4095, 4096, m // 2, m - 1):
        window = toeplitz_seed[i : i + n][::-1]  # seed[i - j + n - 1] for j = 0..n-1
        assert hash_a[i] == int(window.astype(np.int64) @ key_a.astype(np.int64)) % 2


# ---- carry-less multiplication kernels ------------------------------------------------------

needs_clmul = pytest.mark.skipif(
    not pa.CLMUL_INSTRUCTION, reason="numba target without carry-less multiply"
)
_clmul_dot_128 = pa._make_clmul_dot("pclmulqdq")


@numba.njit
def _clmul_dot_128_kernel(words, a_end, x_start, groups):
    return _clmul_dot_128(words, a_end, x_start, groups)


def _random_words(rng: np.random.Generator, count: int, extremes: bool) -> np.ndarray:
    if extremes:  # all-ones and single-bit words: the longest carry-less products
        choices = np.array([_WORD_MASK, 1, 1 << 63, 0], dtype=np.uint64)
        return rng.choice(choices, count)
    return rng.integers(0, 2**64, count, dtype=np.uint64)


_WORD_MASK = 2**64 - 1


@needs_clmul
@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    groups=st.integers(0, 4),
    extremes=st.booleans(),
    data=st.data(),
)
def test_clmul_dot_kernels_match_reference(
    seed: int, groups: int, extremes: bool, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    words = _random_words(rng, 80, extremes)
    span = 8 * groups
    a_end = data.draw(st.integers(max(span - 1, 0), 79))
    x_start = data.draw(st.integers(0, 80 - span))
    expected = pa._clmul_dot_kernel_reference(words, a_end, x_start, groups)
    for kernel in (pa._clmul_dot_kernel, _clmul_dot_128_kernel):
        low, high = kernel(words, a_end, x_start, groups)
        assert (int(low), int(high)) == expected


@needs_clmul
def test_clmul_dot_known_product() -> None:
    # (z^63 + 1)^2 = z^126 + 1 in GF(2)[z]; eight equal products cancel pairwise to zero.
    words = np.array([(1 << 63) | 1] * 8 + [(1 << 63) | 1] + [0] * 7, dtype=np.uint64)
    low, high = pa._clmul_dot_kernel(words, 8, 8, 1)
    assert (int(low), int(high)) == (1, 1 << 62)
    low, high = pa._clmul_dot_kernel(words, 7, 0, 1)
    assert (int(low), int(high)) == (0, 0)


def _tmvp_reference_by_integers(u: np.ndarray, x: np.ndarray) -> np.ndarray:
    """out bits i < 64 k: coefficient 64 k + i of u(z) x(z), by Python-int carry-less product."""
    k = x.size
    u_int = int.from_bytes(u.astype("<u8").tobytes(), "little")
    x_int = int.from_bytes(x.astype("<u8").tobytes(), "little")
    product = 0
    for j in range(64 * k):
        if (x_int >> j) & 1:
            product ^= u_int << j
    middle = (product >> (64 * k)) & ((1 << (64 * k)) - 1)
    return np.frombuffer(middle.to_bytes(8 * k, "little"), dtype="<u8").astype(np.uint64)


@needs_clmul
@settings(max_examples=examples(60, 25), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    leaf=st.sampled_from([8, 16, 24]),
    levels=st.integers(0, 2),
    extremes=st.booleans(),
)
def test_tmvp_kernel_matches_reference(seed: int, leaf: int, levels: int, extremes: bool) -> None:
    k = leaf << levels
    rng = np.random.default_rng(seed)
    # seed words, key words, output, scratch, then a guard region that must stay untouched
    work = _random_words(rng, 8 * k + 16, extremes)
    u, x = work[: 2 * k].copy(), work[2 * k : 3 * k].copy()
    guard = work[8 * k :].copy()
    pa._tmvp_kernel(work, 0, 2 * k, 3 * k, k, leaf, 4 * k)
    assert np.array_equal(work[3 * k : 4 * k], _tmvp_reference_by_integers(u, x))
    assert np.array_equal(work[: 3 * k], np.concatenate([u, x]))  # inputs unchanged
    assert np.array_equal(work[8 * k :], guard)
    if k <= 8:  # the bit-by-bit reference is slow: small blocks only
        reference = work.copy()
        pa._tmvp_kernel_reference(reference, 0, 2 * k, 3 * k, k, leaf, 4 * k)
        assert np.array_equal(reference[3 * k : 4 * k], work[3 * k : 4 * k])


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_words=st.sampled_from([0, 1, 2, 7, 8, 9]) | st.integers(0, 40),
    out_words=st.integers(0, 12),
    out_at=st.integers(0, 3),
    data=st.data(),
)
def test_bit_window_kernel_matches_reference(
    seed: int, n_words: int, out_words: int, out_at: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**64, n_words, dtype=np.uint64)
    first_bit = data.draw(st.integers(-64 * out_words - 130, 64 * n_words + 130))
    got = np.full(out_at + out_words, 7, dtype=np.uint64)
    want = got.copy()
    pa._bit_window_kernel(words, first_bit, got, out_at)
    pa._bit_window_kernel_reference(words, first_bit, want, out_at)
    assert np.array_equal(got, want)


@needs_clmul
@pytest.mark.parametrize(
    ("n", "m", "block_words", "leaf"),
    [
        (3000, 1500, 24, 24),  # one column block wider than m, two blocks
        (3000, 1500, 32, 8),  # two levels of splitting
        (5000, 37, 8, 8),  # ten narrow column blocks
        (1024, 1024, 16, 16),  # square, exactly one block
        (4097, 512, 8, 8),  # a last column block of one bit
    ],
)
def test_toeplitz_kernel_with_other_block_shapes(
    n: int, m: int, block_words: int, leaf: int
) -> None:
    key, toeplitz_seed = toeplitz_inputs(n * 7 + m, n, m)
    out = np.empty(block_words, dtype=np.uint64)
    pa._toeplitz_kernel(
        pa._packed_words(key), pa._packed_words(toeplitz_seed), n, block_words, leaf, out
    )
    got = np.unpackbits(out.view(np.uint8), count=m, bitorder="little")
    assert np.array_equal(got, dense_product(key, toeplitz_seed, m))


def test_block_shape_covers_the_output_with_leaves_of_whole_vectors() -> None:
    for m in [1, 63, 64, 65, 511, 512, 513, 4096, 169_043, 500_000, 5 * 10**7]:
        block_words, leaf = pa._block_shape(m)
        assert 64 * block_words >= m
        assert leaf % 8 == 0 and 8 <= leaf <= 64
        levels = (block_words // leaf).bit_length() - 1
        assert block_words == leaf << levels
        # padding past m is at most one leaf's granularity per level
        assert block_words <= -(-m // 64) + (8 << levels)


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
