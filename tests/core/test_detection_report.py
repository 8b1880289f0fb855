"""Tests for satqkd_core.detection_report: Golomb-Rice coded detection reports."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.detection_report import (
    HEADER_BYTES,
    _rice_decode_kernel,
    _rice_decode_kernel_reference,
    _rice_encode_kernel,
    _rice_encode_kernel_reference,
    _rice_stream_bits,
    decode_detection_report,
    encode_detection_report,
    gap_entropy_bits,
    rice_parameter_for_mean_gap,
)
from satqkd_core.errors import InputError

EDGE_LENGTHS = [0, 1, 2, 7, 8, 9, 63, 64, 65, 129]
lengths = st.sampled_from(EDGE_LENGTHS) | st.integers(0, 400)


def random_report(seed: int, n: int, mean_gap: float, start_max: int = 10**12):
    rng = np.random.default_rng(seed)
    first = int(rng.integers(0, start_max))
    gaps = rng.geometric(1.0 / mean_gap, max(n - 1, 0)).astype(np.int64)
    pulse_index = first + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)[:n]
    basis = rng.integers(0, 2, n, dtype=np.uint8)
    return pulse_index, basis


@settings(max_examples=200, deadline=None)
@given(
    n=lengths,
    seed=st.integers(0, 2**32 - 1),
    log_mean_gap=st.floats(0.0, 7.0),
)
def test_round_trip(n, seed, log_mean_gap):
    pulse_index, basis = random_report(seed, n, 10**log_mean_gap)
    data = encode_detection_report(pulse_index, basis)
    decoded_index, decoded_basis = decode_detection_report(data)
    np.testing.assert_array_equal(decoded_index, pulse_index)
    np.testing.assert_array_equal(decoded_basis, basis)
    assert decoded_index.dtype == np.int64 and decoded_basis.dtype == np.uint8


def test_round_trip_of_extreme_indices():
    top = 2**63 - 1
    pulse_index = np.array([0, 1, 2, 2**40, top - 1, top], dtype=np.int64)
    basis = np.array([1, 0, 1, 1, 0, 1], dtype=np.uint8)
    decoded_index, decoded_basis = decode_detection_report(
        encode_detection_report(pulse_index, basis)
    )
    np.testing.assert_array_equal(decoded_index, pulse_index)
    np.testing.assert_array_equal(decoded_basis, basis)


@settings(max_examples=150, deadline=None)
@given(
    n=lengths,
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(0, 20) | st.integers(21, 62),
    gap_scale=st.sampled_from([0.5, 2.0, 150.0]),
)
def test_encode_kernel_matches_reference(n, seed, k, gap_scale):
    # Gaps of about 2^k, or far longer (unary parts of hundreds of bits), within int64.
    mean_gap = max(1.0, min(gap_scale * 2.0**k, 2.0**61 / (n + 1)))
    pulse_index, _ = random_report(seed, n, mean_gap, start_max=2**40)
    n_bits = int(_rice_stream_bits(pulse_index, k))
    got = np.zeros((n_bits + 7) // 8, dtype=np.uint8)
    want = np.zeros_like(got)
    assert _rice_encode_kernel(pulse_index, k, got) == n_bits
    assert _rice_encode_kernel_reference(pulse_index, k, want) == n_bits
    np.testing.assert_array_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(
    stream=st.binary(max_size=64),
    k=st.sampled_from([0, 1, 3, 8, 13, 40, 61, 62]),
    n=st.integers(1, 40),
    first=st.sampled_from([0, 5, 2**62, 2**63 - 3]),
)
def test_decode_kernel_matches_reference_on_arbitrary_bytes(stream, k, n, first):
    # Arbitrary bytes exercise every status: ok, truncated, overflow and trailing data.
    buf = np.frombuffer(stream, dtype=np.uint8)
    got = np.zeros(n, dtype=np.int64)
    want = np.zeros(n, dtype=np.int64)
    status_got, pos_got = _rice_decode_kernel(buf, k, np.int64(first), got)
    status_want, pos_want = _rice_decode_kernel_reference(buf, k, first, want)
    assert (int(status_got), int(pos_got)) == (status_want, pos_want)
    if status_want == 0:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mean_gap", [1e3, 1e4, 1e5, 1e6])
def test_index_part_is_within_ten_percent_of_geometric_entropy(mean_gap):
    n = 20_000
    pulse_index, basis = random_report(11, n, mean_gap)
    data = encode_detection_report(pulse_index, basis)
    basis_bytes = (n + 7) // 8
    index_bits = 8 * (len(data) - HEADER_BYTES - basis_bytes) / n
    entropy = gap_entropy_bits(pulse_index)
    assert entropy == pytest.approx(math.log2(math.e * mean_gap), rel=0.01)
    assert entropy <= index_bits <= 1.10 * entropy


def test_rice_parameter_follows_the_mean_gap():
    assert rice_parameter_for_mean_gap(0.0) == 0
    assert rice_parameter_for_mean_gap(0.5) == 0
    # For large means the optimum is near log2(mean * ln 2) (Gallager and Van Voorhis 1975).
    for mean in (1e3, 1e4, 1e5, 1e6):
        assert abs(rice_parameter_for_mean_gap(mean) - math.log2(mean * math.log(2))) <= 1.0


def test_header_layout():
    pulse_index = np.array([1000, 1003, 1010], dtype=np.int64)
    basis = np.array([1, 0, 1], dtype=np.uint8)
    data = encode_detection_report(pulse_index, basis)
    version, k, count, first = struct.unpack_from("<BBIQ", data)
    assert (version, count, first) == (1, 3, 1000)
    assert data[HEADER_BYTES] == 0b1010_0000
    assert len(data) == HEADER_BYTES + 1 + math.ceil(((2 >> k) + (6 >> k) + 2 * (k + 1)) / 8)


def test_empty_report():
    data = encode_detection_report(np.empty(0, np.int64), np.empty(0, np.uint8))
    assert len(data) == HEADER_BYTES
    idx, basis = decode_detection_report(data)
    assert idx.size == 0 and basis.size == 0


def test_gap_entropy_edge_cases():
    assert gap_entropy_bits(np.array([5], dtype=np.int64)) == 0.0
    assert gap_entropy_bits(np.arange(10, dtype=np.int64)) == 0.0
    # Mean gap 2: p = 1/2, H = h(1/2) / (1/2) = 2 bits.
    assert gap_entropy_bits(np.array([0, 2, 4], dtype=np.int64)) == pytest.approx(2.0)


def _valid_report() -> bytes:
    pulse_index, basis = random_report(3, 50, 300.0)
    return encode_detection_report(pulse_index, basis)


def _header(version=1, k=3, n=2, first=0) -> bytes:
    return struct.pack("<BBIQ", version, k, n, first)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^data: 0 bytes is shorter than the 14-byte header$"),
        (_header()[:-1], r"^data: 13 bytes is shorter than the 14-byte header$"),
        (_header(version=2) + b"\x00\x00", r"^data: unsupported report version 2"),
        (_header(k=63) + b"\x00\x00", r"^data: Rice parameter 63 exceeds 62$"),
        (_header(first=2**63) + b"\x00\x00", r"^data: first pulse index .* exceeds the int64"),
        (_header(n=2**32 - 1) + b"\x00" * 8, r"^data: truncated: 4294967295 detections need"),
        (_header(n=0, first=5), r"^data: an empty report must have first index 0"),
        (_header(n=3, k=0) + bytes([0b1110_0000, 0xFF]), r"^data: truncated: the gap code ends"),
        (_header(n=2, k=0) + bytes([0b0100_0000, 0b0010_0000]), r"^data: unexpected data after"),
        (_header(n=2, k=0) + bytes([0, 0, 0]), r"^data: unexpected data after"),
        (_header(n=2, k=0) + bytes([0b1110_0000, 0]), r"^data: padding bits after the last basis"),
        (_header(n=2, k=62, first=2**62) + bytes([0, 0b1000_0000] + [0xFF] * 7),
         r"^data: a decoded gap overflows"),
        ("not bytes", r"^data: must be bytes"),
    ],
)  # fmt: skip
def test_malformed_reports_raise_input_error(data, message):
    with pytest.raises(InputError, match=message):
        decode_detection_report(data)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), junk=st.binary(max_size=8))
def test_corrupted_reports_never_crash(cut, flip, junk):
    data = bytearray(_valid_report())
    mutated = [bytes(data[: cut % len(data)]), bytes(data) + junk]
    flipped = bytearray(data)
    flipped[flip % len(flipped)] ^= 1 << (flip % 8)
    mutated.append(bytes(flipped))
    for candidate in mutated:
        try:
            idx, basis = decode_detection_report(candidate)
        except InputError:
            continue
        # Anything accepted must be a well-formed report that re-encodes consistently.
        assert idx.size == basis.size
        assert np.all(np.diff(idx) > 0)


@pytest.mark.parametrize(
    ("pulse_index", "basis", "message"),
    [
        (np.array([3, 3]), np.zeros(2, np.uint8), r"^pulse_index: must be strictly increasing"),
        (np.array([5, 4]), np.zeros(2, np.uint8), r"^pulse_index: must be strictly increasing"),
        (np.array([-1, 4]), np.zeros(2, np.uint8), r"^pulse_index: must be >= 0, got -1"),
        (np.array([1, 4], np.int32), np.zeros(2, np.uint8), r"^pulse_index: must have dtype int64"),
        (np.array([1, 4]), np.zeros(3, np.uint8), r"^basis: length 3 does not match pulse_index"),
        (np.array([1, 4]), np.array([0, 2], np.uint8), r"^basis: values must be 0 or 1, got 2"),
        (np.array([1, 4]), np.zeros(2, np.int8), r"^basis: must have dtype uint8"),
        ([1, 4], np.zeros(2, np.uint8), r"^pulse_index: must be a 1-D numpy array"),
    ],
)
def test_encode_rejects_bad_input(pulse_index, basis, message):
    with pytest.raises(InputError, match=message):
        encode_detection_report(pulse_index, basis)
