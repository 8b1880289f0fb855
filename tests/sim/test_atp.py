"""Tests of the ATP acquisition and tracking-residual model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from sim_backends.atp import (
    AtpModel,
    acquisition_time_s,
    ou_residual,
    ou_residual_reference,
    tracking_residual_urad,
)

MODEL = AtpModel(
    initial_pointing_uncertainty_urad=1000.0,
    acquisition_field_of_view_urad=100.0,
    spiral_scan_rate_urad_per_s=2000.0,
    tracking_residual_rms_urad=1.5,
    tracking_bandwidth_hz=50.0,
)


def test_acquisition_is_immediate_when_the_field_of_view_covers_the_cone() -> None:
    wide = AtpModel(40.0, 100.0, 2000.0, 1.0, 50.0)
    assert all(acquisition_time_s(wide, seed) == 0.0 for seed in range(20))


def test_acquisition_time_is_bounded_by_the_full_spiral_and_seeded() -> None:
    times = np.array([acquisition_time_s(MODEL, seed) for seed in range(300)])
    assert acquisition_time_s(MODEL, 12) == acquisition_time_s(MODEL, 12)
    # Covering a cone of radius U + FOV/2 with pitch 0.9 FOV takes about pi (U + FOV/2)^2 /
    # (0.9 FOV) of scan path: 38.5e3 urad, 19.2 s at 2000 urad/s.
    full_spiral_s = math.pi * (1000.0 + 50.0) ** 2 / 90.0 / 2000.0
    assert np.all(times >= 0.0) and times.max() <= full_spiral_s
    # With a 3-sigma Gaussian start the scan time scales as r^2: mean ~ pi * 2 sigma^2 / (pitch
    # * rate) = 3.9 s minus the part swept before the FOV edge; the median is lower than the mean.
    assert 2.0 < times.mean() < 5.0
    assert np.median(times) < times.mean()


def test_acquisition_takes_longer_for_larger_uncertainty() -> None:
    small = AtpModel(300.0, 100.0, 2000.0, 1.0, 50.0)
    large = AtpModel(3000.0, 100.0, 2000.0, 1.0, 50.0)
    mean_small = np.mean([acquisition_time_s(small, s) for s in range(100)])
    mean_large = np.mean([acquisition_time_s(large, s) for s in range(100)])
    assert mean_large > 20.0 * mean_small


def test_tracking_residual_is_rayleigh_with_the_given_rms() -> None:
    unix_s = np.arange(0.0, 200.0, 0.002)
    residual = tracking_residual_urad(MODEL, unix_s, seed=3)
    assert np.sqrt(np.mean(residual**2)) == pytest.approx(1.5, rel=0.03)
    # Rayleigh median = rms * sqrt(ln 2).
    assert np.median(residual) == pytest.approx(1.5 * math.sqrt(math.log(2.0)), rel=0.04)
    np.testing.assert_array_equal(residual, tracking_residual_urad(MODEL, unix_s, seed=3))
    assert not np.array_equal(residual, tracking_residual_urad(MODEL, unix_s, seed=4))


def test_tracking_residual_is_band_limited() -> None:
    # Squared magnitude of a 2-D OU process: autocorrelation exp(-4 pi f tau).
    unix_s = np.arange(0.0, 400.0, 0.001)
    power = tracking_residual_urad(MODEL, unix_s, seed=5) ** 2
    centred = power - power.mean()

    def autocorrelation(lag: int) -> float:
        return float(np.mean(centred[:-lag] * centred[lag:]) / np.var(power))

    assert autocorrelation(1) == pytest.approx(math.exp(-4 * math.pi * 50 * 0.001), abs=0.03)
    assert autocorrelation(10) == pytest.approx(math.exp(-4 * math.pi * 50 * 0.010), abs=0.03)
    assert abs(autocorrelation(200)) < 0.03
    # Steps far longer than 1 / bandwidth give independent samples.
    coarse = tracking_residual_urad(MODEL, np.arange(0.0, 20_000.0, 1.0), seed=6) ** 2
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
    with pytest.raises(InputError, match="acquisition_field_of_view_urad"):
        AtpModel(1000.0, 0.0, 2000.0, 1.0, 50.0)
    with pytest.raises(InputError, match="tracking_residual_rms_urad"):
        AtpModel(1000.0, 100.0, 2000.0, -1.0, 50.0)
    with pytest.raises(InputError, match="non-decreasing"):
        tracking_residual_urad(MODEL, np.array([0.0, 2.0, 1.0]), seed=1)
    with pytest.raises(InputError, match="seed"):
        acquisition_time_s(MODEL, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="model"):
        acquisition_time_s(None, seed=1)  # type: ignore[arg-type]
    assert tracking_residual_urad(MODEL, np.zeros(0), seed=1).shape == (0,)
