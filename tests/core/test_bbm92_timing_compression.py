"""Tests for satqkd_core.timing_compression: round trips, kernels against references, the
size against the entropy of the gaps, malformed messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.timing_compression import (
    ESCAPE_QUOTIENT,
    CompressedTiming,
    decode_timing,
    encode_timing,
    rice_code_bits,
    rice_decode,
    rice_decode_reference,
    rice_encode,
    rice_encode_reference,
    timing_entropy_bits,
)

gaps_strategy = st.lists(
    st.integers(0, 2**20) | st.integers(0, 2**45) | st.sampled_from([0, 1, 2**ESCAPE_QUOTIENT]),
    max_size=60,
)


@settings(max_examples=120, deadline=None)
@given(gaps=gaps_strategy, k=st.integers(0, 12))
def test_rice_kernels_match_references_and_round_trip(gaps, k):
    values = np.array(gaps, dtype=np.uint64)
    n_bits = rice_code_bits(values, k)
    out = np.zeros((n_bits + 7) // 8, dtype=np.uint8)
    assert rice_encode(values, k, out) == n_bits
    data, ref_bits = rice_encode_reference(values, k)
    assert (out.tobytes(), n_bits) == (data, ref_bits)
    decoded = np.empty(len(gaps), dtype=np.uint64)
    assert rice_decode(out, n_bits, k, decoded) == n_bits
    assert decoded.tolist() == gaps == rice_decode_reference(data, n_bits, k, len(gaps))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    resolution=st.sampled_from([1, 125, 1000]),
)
def test_timing_and_basis_round_trip_through_the_wire(seed, n, resolution):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(-(10**12), 10**13, n)).astype(np.int64)
    basis = rng.integers(0, 2, n, dtype=np.uint8)
    message = encode_timing(t, basis, resolution)
    times, bases = decode_timing(CompressedTiming.from_bytes(message.to_bytes()))
    np.testing.assert_array_equal(times, np.floor_divide(t, resolution) * resolution)
    np.testing.assert_array_equal(bases, basis)


@pytest.mark.parametrize("rate_hz", [1e3, 2e4, 1e6])
def test_poisson_timing_costs_within_ten_percent_of_its_entropy(rate_hz):
    rng = np.random.default_rng(5)
    t = np.cumsum(rng.exponential(1e12 / rate_hz, 50_000)).astype(np.int64)
    message = encode_timing(t, np.zeros(t.size, dtype=np.uint8), 125)
    entropy = timing_entropy_bits(t, 125)
    assert entropy < message.timing_bits <= 1.10 * entropy


def test_a_long_gap_is_escaped_not_spelled_in_unary():
    t = np.array([0, 10_000, 10**15, 10**15 + 10_000], dtype=np.int64)
    message = encode_timing(t, np.zeros(4, dtype=np.uint8), 125)
    assert message.timing_bits < 200
    np.testing.assert_array_equal(decode_timing(message)[0], (t // 125) * 125)


def test_truncated_or_padded_messages_are_refused():
    rng = np.random.default_rng(1)
    t = np.sort(rng.integers(0, 10**12, 100)).astype(np.int64)
    wire = encode_timing(t, rng.integers(0, 2, 100, dtype=np.uint8)).to_bytes()
    with pytest.raises(InputError, match="header announces"):
        CompressedTiming.from_bytes(wire[:-1])
    with pytest.raises(InputError, match="bad magic"):
        CompressedTiming.from_bytes(b"XXXX" + wire[4:])
    message = CompressedTiming.from_bytes(wire)
    cut = CompressedTiming(
        message.count,
        125,
        0,
        message.rice_k,
        message.timing,
        message.timing_bits - 9,
        message.basis,
    )
    with pytest.raises(InputError, match="compressed timing"):
        decode_timing(cut)


@pytest.mark.parametrize(
    ("t", "basis", "message"),
    [
        (np.array([5, 3], np.int64), np.zeros(2, np.uint8), "must be sorted"),
        (np.array([1, 3], np.int64), np.array([0, 2], np.uint8), "0 \\(X\\) or 1 \\(Z\\)"),
        (np.array([1, 3], np.int64), np.zeros(3, np.uint8), "does not match"),
        (np.array([1.0, 3.0]), np.zeros(2, np.uint8), "int64"),
    ],
)
def test_bad_input_is_named(t, basis, message):
    with pytest.raises(InputError, match=message):
        encode_timing(t, basis)


def test_a_header_announcing_an_impossible_span_is_refused():
    gaps = np.array([2**50, 2**50], dtype=np.uint64)
    out = np.zeros((rice_code_bits(gaps, 0) + 7) // 8, dtype=np.uint8)
    n_bits = rice_encode(gaps, 0, out)
    message = CompressedTiming(3, 1_000_000, 0, 0, out.tobytes(), n_bits, b"\0")
    with pytest.raises(InputError, match="span more than"):
        decode_timing(message)
