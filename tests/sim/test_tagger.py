"""Tests of the time tagger's digital bins."""

from __future__ import annotations

import numpy as np
import pytest

from satqkd_core.errors import InputError
from sim_backends.tagger import TaggerModel, quantise_timestamps


def test_timestamps_fall_to_the_start_of_their_bin() -> None:
    ts = np.array([0, 1, 3, 4, 5, 7, 8, -1, -4, -5], dtype=np.int64)
    np.testing.assert_array_equal(quantise_timestamps(ts, 4), [0, 0, 0, 4, 4, 4, 8, -4, -4, -8])


def test_one_picosecond_bins_change_nothing() -> None:
    ts = np.array([123456789012345, -7, 0], dtype=np.int64)
    out = quantise_timestamps(ts, 1)
    np.testing.assert_array_equal(out, ts)
    assert out is not ts


def test_quantisation_error_is_uniform_over_a_bin() -> None:
    ts = np.random.default_rng(3).integers(0, 10**12, 200_000).astype(np.int64)
    error = (ts - quantise_timestamps(ts, 64)).astype(float)
    assert error.min() >= 0 and error.max() <= 63
    assert error.mean() == pytest.approx(31.5, abs=0.3)  # (bin - 1) / 2 for integer ps
    assert error.std() == pytest.approx(np.sqrt((64**2 - 1) / 12.0), rel=0.01)


def test_tagger_inputs_are_validated() -> None:
    with pytest.raises(InputError, match="resolution_ps"):
        TaggerModel(0)
    with pytest.raises(InputError, match="resolution_ps"):
        TaggerModel(2.5)
    with pytest.raises(InputError, match="int64"):
        quantise_timestamps(np.array([1.0, 2.0]), 4)
    with pytest.raises(InputError, match="1-D"):
        quantise_timestamps(np.zeros((2, 2), dtype=np.int64), 4)
