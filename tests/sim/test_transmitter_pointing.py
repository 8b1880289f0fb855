"""Tests of the satellite transmitter's pointing residual (sim_backends.transmitter_pointing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from sim_backends.transmitter_pointing import (
    TransmitterPointing,
    ou_residual,
    ou_residual_reference,
    pointing_residual_urad,
)

MODEL = TransmitterPointing(residual_rms_urad=1.5, bandwidth_hz=50.0)


def test_residual_is_rayleigh_with_the_given_rms() -> None:
    unix_s = np.arange(0.0, 200.0, 0.002)
    residual = pointing_residual_urad(MODEL, unix_s, seed=3)
    assert np.sqrt(np.mean(residual**2)) == pytest.approx(1.5, rel=0.03)
    # Rayleigh median = rms * sqrt(ln 2).
    assert np.median(residual) == pytest.approx(1.5 * math.sqrt(math.log(2.0)), rel=0.04)
    np.testing.assert_array_equal(residual, pointing_residual_urad(MODEL, unix_s, seed=3))
    assert not np.array_equal(residual, pointing_residual_urad(MODEL, unix_s, seed=4))


def test_residual_is_band_limited() -> None:
    # Squared magnitude of a 2-D OU process: autocorrelation exp(-4 pi f tau).
    unix_s = np.arange(0.0, 400.0, 0.001)
    power = pointing_residual_urad(MODEL, unix_s, seed=5) ** 2
    centred = power - power.mean()

    def autocorrelation(lag: int) -> float:
        return float(np.mean(centred[:-lag] * centred[lag:]) / np.var(power))

    assert autocorrelation(1) == pytest.approx(math.exp(-4 * math.pi * 50 * 0.001), abs=0.03)
    assert autocorrelation(10) == pytest.approx(math.exp(-4 * math.pi * 50 * 0.010), abs=0.03)
    assert abs(autocorrelation(200)) < 0.03
    # Steps far longer than 1 / bandwidth give independent samples.
    coarse = pointing_residual_urad(MODEL, np.arange(0.0, 20_000.0, 1.0), seed=6) ** 2
    coarse -= coarse.mean()
    assert abs(np.mean(coarse[:-1] * coarse[1:]) / np.var(coarse)) < 0.04


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(st.floats(min_value=0.0, max_value=0.1), max_size=70),
    sigma=st.floats(min_value=0.0, max_value=10.0),
    corner_hz=st.floats(min_value=0.01, max_value=1000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_ou_kernel_matches_reference(
    steps: list[float], sigma: float, corner_hz: float, seed: int
) -> None:
    unix_s = np.cumsum(np.array(steps, dtype=np.float64))
    normals = np.random.default_rng(seed).standard_normal((2, unix_s.shape[0]))
    got = ou_residual(unix_s, normals[0].copy(), normals[1].copy(), sigma, corner_hz)
    want = ou_residual_reference(unix_s, normals[0], normals[1], sigma, corner_hz)
    np.testing.assert_array_equal(got, want)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(InputError, match="bandwidth_hz"):
        TransmitterPointing(1.0, 0.0)
    with pytest.raises(InputError, match="residual_rms_urad"):
        TransmitterPointing(-1.0, 50.0)
    with pytest.raises(InputError, match="non-decreasing"):
        pointing_residual_urad(MODEL, np.array([0.0, 2.0, 1.0]), seed=1)
    with pytest.raises(InputError, match="seed"):
        pointing_residual_urad(MODEL, np.zeros(3), seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="model"):
        pointing_residual_urad(None, np.zeros(3), seed=1)  # type: ignore[arg-type]
    assert pointing_residual_urad(MODEL, np.zeros(0), seed=1).shape == (0,)
    assert np.all(pointing_residual_urad(TransmitterPointing(0.0, 50.0), np.zeros(4), 1) == 0.0)
