"""Tests of the spiral-scan time a pass plan allows for acquisition (sim_backends.acquisition)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from satqkd_core.errors import InputError
from sim_backends.acquisition import SpiralAcquisition, acquisition_time_s

MODEL = SpiralAcquisition(
    initial_pointing_uncertainty_urad=1000.0,
    acquisition_field_of_view_urad=100.0,
    spiral_scan_rate_urad_per_s=2000.0,
)


def test_acquisition_is_immediate_when_the_field_of_view_covers_the_cone() -> None:
    wide = SpiralAcquisition(40.0, 100.0, 2000.0)
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
    small = SpiralAcquisition(300.0, 100.0, 2000.0)
    large = SpiralAcquisition(3000.0, 100.0, 2000.0)
    mean_small = np.mean([acquisition_time_s(small, s) for s in range(100)])
    mean_large = np.mean([acquisition_time_s(large, s) for s in range(100)])
    assert mean_large > 20.0 * mean_small


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(InputError, match="acquisition_field_of_view_urad"):
        SpiralAcquisition(1000.0, 0.0, 2000.0)
    with pytest.raises(InputError, match="spiral_scan_rate_urad_per_s"):
        SpiralAcquisition(1000.0, 100.0, "fast")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="seed"):
        acquisition_time_s(MODEL, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="model"):
        acquisition_time_s(None, seed=1)  # type: ignore[arg-type]
