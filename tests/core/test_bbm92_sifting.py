"""Tests for satqkd_core.bbm92: sifting coincidences on the BB84 kernel and the test decision."""

from __future__ import annotations

import numpy as np
import pytest

from satqkd_core.bbm92 import check_test_sample, sift_coincidences
from satqkd_core.errors import InputError


def test_both_ends_keep_the_same_coincidences_split_by_basis():
    rng = np.random.default_rng(4)
    a_basis, b_basis = rng.integers(0, 2, 1000, np.uint8), rng.integers(0, 2, 1000, np.uint8)
    a_bits = rng.integers(0, 2, 1000, np.uint8)
    b_bits = a_bits ^ (rng.random(1000) < 0.05).astype(np.uint8)
    a = sift_coincidences(a_basis, b_basis, a_bits)
    b = sift_coincidences(b_basis, a_basis, b_bits)
    same = a_basis == b_basis
    np.testing.assert_array_equal(a.key_bits, a_bits[same & (a_basis == 0)])
    np.testing.assert_array_equal(b.test_bits, b_bits[same & (a_basis == 1)])
    assert a.key_bits.size == b.key_bits.size and a.test_bits.size == b.test_bits.size
    result = check_test_sample(a.test_bits, b.test_bits, 0.08)
    errors = int(np.count_nonzero(a.test_bits != b.test_bits))
    assert (result.test_errors, result.passed) == (errors, errors / a.test_bits.size <= 0.08)


def test_a_test_over_tolerance_or_empty_fails():
    ones, zeros = np.ones(100, np.uint8), np.zeros(100, np.uint8)
    assert not check_test_sample(ones, zeros, 0.1).passed
    assert not check_test_sample(ones[:0], zeros[:0], 0.1).passed
    assert check_test_sample(ones, ones, 0.0).passed


def test_bad_input_is_named():
    with pytest.raises(InputError, match="qber_tolerance"):
        check_test_sample(np.ones(3, np.uint8), np.ones(3, np.uint8), 0.7)
    with pytest.raises(InputError, match=r"peer_basis|ogs_basis"):
        sift_coincidences(np.zeros(3, np.uint8), np.zeros(4, np.uint8), np.zeros(3, np.uint8))
