"""Tests for satqkd_core.sifting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.sifting import (
    _count_bit_errors_kernel,
    _count_bit_errors_kernel_reference,
    _count_by_basis_intensity_kernel,
    _count_by_basis_intensity_kernel_reference,
    _sift_kernel,
    _sift_kernel_reference,
    count_bit_errors,
    count_by_basis_intensity,
    pack_intensity_labels,
    sift_detections,
    sift_mask,
    unpack_intensity_labels,
)

EDGE_LENGTHS = [0, 1, 7, 8, 9, 63, 64, 65, 127, 129]
lengths = st.sampled_from(EDGE_LENGTHS) | st.integers(0, 500)


def _labels(rng, n, high):
    return rng.integers(0, high, n, dtype=np.uint8)


@settings(max_examples=150, deadline=None)
@given(n=lengths, seed=st.integers(0, 2**32 - 1), with_errors=st.booleans())
def test_count_by_basis_intensity_kernel_matches_reference(n, seed, with_errors):
    rng = np.random.default_rng(seed)
    basis, intensity, errors = _labels(rng, n, 2), _labels(rng, n, 3), _labels(rng, n, 2)
    got = _count_by_basis_intensity_kernel(basis, intensity, errors, with_errors)
    want = _count_by_basis_intensity_kernel_reference(basis, intensity, errors, with_errors)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@settings(max_examples=150, deadline=None)
@given(n=lengths, seed=st.integers(0, 2**32 - 1))
def test_count_bit_errors_kernel_matches_reference(n, seed):
    rng = np.random.default_rng(seed)
    a, b = _labels(rng, n, 2), _labels(rng, n, 2)
    assert int(_count_bit_errors_kernel(a, b)) == _count_bit_errors_kernel_reference(a, b)


def test_count_by_basis_intensity_known_tally():
    basis = np.array([0, 0, 1, 1, 0, 1, 0], dtype=np.uint8)
    intensity = np.array([0, 1, 2, 0, 0, 0, 2], dtype=np.uint8)
    errors = np.array([1, 0, 1, 0, 1, 1, 0], dtype=np.uint8)
    det, err = count_by_basis_intensity(basis, intensity, errors)
    np.testing.assert_array_equal(det, [[2, 1, 1], [2, 0, 1]])
    np.testing.assert_array_equal(err, [[2, 0, 0], [1, 0, 1]])
    assert det.dtype == np.int64 and err.dtype == np.int64
    det2, err2 = count_by_basis_intensity(basis, intensity)
    np.testing.assert_array_equal(det2, det)
    np.testing.assert_array_equal(err2, np.zeros((2, 3)))


def test_sift_mask_and_bit_errors():
    payload = np.array([0, 1, 1, 0, 1], dtype=np.uint8)
    ogs = np.array([0, 0, 1, 1, 1], dtype=np.uint8)
    mask = sift_mask(payload, ogs)
    assert mask.dtype == np.bool_
    assert mask.tolist() == [True, False, True, False, True]
    assert count_bit_errors(payload, ogs) == 2
    assert count_bit_errors(np.empty(0, np.uint8), np.empty(0, np.uint8)) == 0
    assert sift_mask(np.empty(0, np.uint8), np.empty(0, np.uint8)).size == 0


def test_bool_arrays_are_accepted_as_bits():
    a = np.array([True, False, True])
    b = np.array([1, 1, 1], dtype=np.uint8)
    assert count_bit_errors(a, b) == 1
    assert sift_mask(a, b).tolist() == [True, False, True]


@settings(max_examples=150, deadline=None)
@given(n=lengths, seed=st.integers(0, 2**32 - 1))
def test_intensity_labels_round_trip(n, seed):
    labels = _labels(np.random.default_rng(seed), n, 3)
    packed = pack_intensity_labels(labels)
    assert len(packed) == (n + 3) // 4
    np.testing.assert_array_equal(unpack_intensity_labels(packed, n), labels)


def test_intensity_label_layout_is_msb_first():
    labels = np.array([2, 1, 0, 2, 1], dtype=np.uint8)
    assert pack_intensity_labels(labels) == bytes([0b10_01_00_10, 0b01_00_00_00])


@pytest.mark.parametrize(
    ("data", "n", "message"),
    [
        (b"\x00", 5, r"^data: 5 labels need 2 bytes, got 1$"),
        (b"\x00\x00", 4, r"^data: 4 labels need 1 bytes, got 2$"),
        (bytes([0b00_11_00_00]), 4, r"^data: label 1 has value 3"),
        (bytes([0b00_00_00_01]), 3, r"^data: padding bits after the last label are not zero$"),
        (b"", -1, r"^n: must be a non-negative integer"),
        ("abc", 3, r"^data: must be bytes"),
    ],
)
def test_unpack_rejects_malformed_data(data, n, message):
    with pytest.raises(InputError, match=message):
        unpack_intensity_labels(data, n)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sift_mask(np.zeros(3, np.uint8), np.zeros(4, np.uint8)),
         r"^ogs_basis: length 4 does not match payload_basis length 3$"),
        (lambda: sift_mask(np.array([0, 2], np.uint8), np.zeros(2, np.uint8)),
         r"^payload_basis: values must be 0 or 1, got 2 at index 1$"),
        (lambda: sift_mask(np.zeros(2, np.int64), np.zeros(2, np.uint8)),
         r"^payload_basis: must have dtype uint8, got int64$"),
        (lambda: sift_mask([0, 1], np.zeros(2, np.uint8)),
         r"^payload_basis: must be a 1-D numpy array"),
        (lambda: count_by_basis_intensity(np.zeros(2, np.uint8), np.array([0, 3], np.uint8)),
         r"^intensity: values must be 0\.\.2, got 3 at index 1$"),
        (lambda: count_by_basis_intensity(np.zeros(2, np.uint8), np.zeros(3, np.uint8)),
         r"^intensity: length 3 does not match basis length 2$"),
        (lambda: count_by_basis_intensity(np.zeros(2, np.uint8), np.zeros(2, np.uint8),
                                          np.array([0, 5], np.uint8)),
         r"^errors: values must be 0 or 1, got 5 at index 1$"),
        (lambda: count_by_basis_intensity(np.zeros(2, np.uint8), np.zeros(2, np.uint8),
                                          np.zeros(1, np.uint8)),
         r"^errors: length 1 does not match basis length 2$"),
        (lambda: count_bit_errors(np.zeros((2, 2), np.uint8), np.zeros(4, np.uint8)),
         r"^a_bits: must be a 1-D numpy array"),
        (lambda: count_bit_errors(np.zeros(2, np.uint8), np.zeros(3, np.uint8)),
         r"^b_bits: length 3 does not match a_bits length 2$"),
        (lambda: pack_intensity_labels(np.array([0, 1, 2, 3], np.uint8)),
         r"^labels: values must be 0\.\.2, got 3 at index 3$"),
    ],
)  # fmt: skip
def test_bad_input_raises_input_error_naming_the_argument(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_sifted_tally_of_a_simulated_block_matches_numpy():
    rng = np.random.default_rng(7)
    n = 100_003
    payload_basis, ogs_basis = _labels(rng, n, 2), _labels(rng, n, 2)
    intensity = _labels(rng, n, 3)
    payload_bits = _labels(rng, n, 2)
    ogs_bits = payload_bits ^ (rng.random(n) < 0.03).astype(np.uint8)
    keep = sift_mask(payload_basis, ogs_basis)
    errors = payload_bits[keep] ^ ogs_bits[keep]
    det, err = count_by_basis_intensity(payload_basis[keep], intensity[keep], errors)
    for b in range(2):
        for k in range(3):
            sel = (payload_basis[keep] == b) & (intensity[keep] == k)
            assert det[b, k] == sel.sum()
            assert err[b, k] == errors[sel].sum()
    assert det.sum() == keep.sum()
    assert count_bit_errors(payload_bits[keep], ogs_bits[keep]) == err.sum()


def _block(rng, n):
    payload_basis, ogs_basis = _labels(rng, n, 2), _labels(rng, n, 2)
    intensity = _labels(rng, n, 3)
    payload_bits = _labels(rng, n, 2)
    ogs_bits = payload_bits ^ (rng.random(n) < 0.1).astype(np.uint8)
    return payload_basis, ogs_basis, intensity, payload_bits, ogs_bits


@settings(max_examples=150, deadline=None)
@given(n=lengths, seed=st.integers(0, 2**32 - 1), with_ogs_bits=st.booleans())
def test_sift_kernel_matches_reference(n, seed, with_ogs_bits):
    inputs = _block(np.random.default_rng(seed), n)
    outputs = []
    for kernel in (_sift_kernel, _sift_kernel_reference):
        keep = np.zeros(n, dtype=np.bool_)
        kept = np.zeros((4, n), dtype=np.uint8)
        tally = np.zeros(12, dtype=np.int64)
        n_kept = kernel(*inputs, with_ogs_bits, keep, *kept, tally)
        outputs.append((n_kept, keep, kept[:, :n_kept], tally))
    (got_n, *got), (want_n, *want) = outputs
    assert got_n == want_n
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@settings(max_examples=150, deadline=None)
@given(n=lengths, seed=st.integers(0, 2**32 - 1), with_ogs_bits=st.booleans())
def test_sift_detections_equals_mask_compress_and_tallies(n, seed, with_ogs_bits):
    payload_basis, ogs_basis, intensity, payload_bits, ogs_bits = _block(
        np.random.default_rng(seed), n
    )
    given_ogs_bits = ogs_bits if with_ogs_bits else None
    sifted = sift_detections(payload_basis, ogs_basis, intensity, payload_bits, given_ogs_bits)
    keep = sift_mask(payload_basis, ogs_basis)
    np.testing.assert_array_equal(sifted.keep, keep)
    np.testing.assert_array_equal(sifted.basis, payload_basis[keep])
    np.testing.assert_array_equal(sifted.intensity, intensity[keep])
    np.testing.assert_array_equal(sifted.payload_bits, payload_bits[keep])
    errors = payload_bits[keep] ^ ogs_bits[keep] if with_ogs_bits else None
    detections, error_counts = count_by_basis_intensity(
        payload_basis[keep], intensity[keep], errors
    )
    np.testing.assert_array_equal(sifted.detections, detections)
    np.testing.assert_array_equal(sifted.errors, error_counts)
    if with_ogs_bits:
        np.testing.assert_array_equal(sifted.ogs_bits, ogs_bits[keep])
        assert sifted.errors.sum() == count_bit_errors(payload_bits[keep], ogs_bits[keep])
    else:
        assert sifted.ogs_bits is None and not sifted.errors.any()
    for array in (sifted.basis, sifted.intensity, sifted.payload_bits):
        assert array.dtype == np.uint8 and array.size == int(keep.sum())
    assert sifted.detections.dtype == np.int64 and sifted.detections.shape == (2, 3)


def test_sift_detections_known_block():
    payload_basis = np.array([0, 1, 1, 0, 1, 0], dtype=np.uint8)
    ogs_basis = np.array([0, 0, 1, 1, 1, 0], dtype=np.uint8)
    intensity = np.array([2, 0, 1, 0, 1, 0], dtype=np.uint8)
    payload_bits = np.array([1, 0, 1, 1, 0, 0], dtype=np.uint8)
    ogs_bits = np.array([0, 0, 1, 0, 1, 0], dtype=np.uint8)
    sifted = sift_detections(payload_basis, ogs_basis, intensity, payload_bits, ogs_bits)
    assert sifted.keep.tolist() == [True, False, True, False, True, True]
    assert sifted.basis.tolist() == [0, 1, 1, 0]
    assert sifted.intensity.tolist() == [2, 1, 1, 0]
    assert sifted.payload_bits.tolist() == [1, 1, 0, 0]
    assert sifted.ogs_bits.tolist() == [0, 1, 1, 0]
    np.testing.assert_array_equal(sifted.detections, [[1, 0, 1], [0, 2, 0]])
    np.testing.assert_array_equal(sifted.errors, [[0, 0, 1], [0, 1, 0]])


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"ogs_basis": np.zeros(5, np.uint8)}, r"^ogs_basis: length 5 does not match payload"),
        ({"intensity": np.array([0, 3, 0, 0], np.uint8)}, r"^intensity: values must be 0\.\.2"),
        ({"payload_bits": np.zeros(3, np.uint8)}, r"^payload_bits: length 3 does not match"),
        ({"ogs_bits": np.array([0, 1, 2, 0], np.uint8)}, r"^ogs_bits: values must be 0 or 1"),
        ({"payload_basis": np.zeros(4, np.int32)}, r"^payload_basis: must have dtype uint8"),
    ],
)
def test_sift_detections_rejects_bad_input_naming_the_argument(replace, message):
    args = {name: np.zeros(4, np.uint8) for name in
            ("payload_basis", "ogs_basis", "intensity", "payload_bits", "ogs_bits")}  # fmt: skip
    args.update(replace)
    with pytest.raises(InputError, match=message):
        sift_detections(**args)
