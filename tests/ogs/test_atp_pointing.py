"""The station ATP's pointing laws without instruments: program-track prediction, azimuth
branch, acquisition spiral coverage, fine-steering law, sky <-> mount conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.ephemeris import SPEED_OF_LIGHT_M_S, Station, topocentric
from satqkd_core.errors import InputError
from satqkd_ogs.pointing import (
    URAD_PER_DEG,
    FineSteeringLaw,
    PassPrediction,
    SpiralScan,
    sky_offset_to_mount_deg,
)

# A 70-degree pass of a 500 km sun-synchronous orbit over Xinglong (configs/scenarios
# jinan1-xinglong-clear.yaml, seed 7): AOS at 10 deg elevation, azimuth through 180 deg.
TLE1 = "1 99999U          26335.00000000  .00000000  00000-0  00000+0 0    06"
TLE2 = "2 99999  97.4018  47.3668 0000000   0.0000   0.0000 15.22444802    02"
XINGLONG = Station(40.3958, 117.5775, 900.0)
AOS, LOS = 1796134727.421875, 1796135166.1035156


@pytest.fixture(scope="module")
def prediction() -> PassPrediction:
    return PassPrediction(TLE1, TLE2, XINGLONG, AOS - 20.0, LOS)


def _apparent(unix_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    geometric = topocentric(TLE1, TLE2, XINGLONG, unix_s)
    seen = topocentric(TLE1, TLE2, XINGLONG, unix_s - geometric.range_m / SPEED_OF_LIGHT_M_S)
    return seen.azimuth_deg, seen.elevation_deg


def test_prediction_matches_the_ephemeris_between_grid_points(prediction: PassPrediction) -> None:
    times = AOS + np.random.default_rng(3).uniform(0.0, LOS - AOS, 400)
    az_true, el_true = _apparent(times)
    for t, az, el in zip(times, az_true, el_true, strict=True):
        p = prediction.at(float(t))
        sky_x = ((p.az_deg - az + 180.0) % 360.0 - 180.0) * math.cos(math.radians(el))
        assert abs(sky_x) * URAD_PER_DEG < 1.0  # urad on the sky
        assert abs(p.el_deg - el) * URAD_PER_DEG < 1.0


def test_prediction_rates_are_the_track_s_derivative(prediction: PassPrediction) -> None:
    for t in (AOS + 30.0, AOS + 218.0, LOS - 40.0):  # rising, culmination, setting
        p, before, after = prediction.at(t), prediction.at(t - 0.05), prediction.at(t + 0.05)
        assert p.az_rate_deg_s == pytest.approx((after.az_deg - before.az_deg) / 0.1, abs=1e-4)
        assert p.el_rate_deg_s == pytest.approx((after.el_deg - before.el_deg) / 0.1, abs=1e-4)
    assert prediction.at(AOS + 10.0).el_rate_deg_s > 0 > prediction.at(LOS - 10.0).el_rate_deg_s


def test_light_time_shifts_the_direction_by_tens_of_urad(prediction: PassPrediction) -> None:
    t = AOS + 218.0
    geometric = topocentric(TLE1, TLE2, XINGLONG, np.array([t]))
    p = prediction.at(t)
    dx = (p.az_deg - geometric.azimuth_deg[0]) * math.cos(math.radians(p.el_deg))
    shift_urad = math.hypot(dx, p.el_deg - geometric.elevation_deg[0]) * URAD_PER_DEG
    assert 5.0 < shift_urad < 100.0


def test_azimuth_branch_keeps_most_of_the_pass_inside_the_travel(
    prediction: PassPrediction,
) -> None:
    # the pass runs from az 174 through 180 to 343: a +-180 deg mount cannot hold all of it
    times = np.linspace(AOS, LOS, 500)

    def inside_fraction(shift: float, low: float, high: float) -> float:
        prediction.set_branch(shift)
        return float(np.mean([low <= prediction.at(t).az_deg <= high for t in times]))

    try:
        shift = prediction.best_branch(-180.0, 180.0, 0.0, 90.0, [(AOS, LOS)])
        fractions = {s: inside_fraction(s, -180.0, 180.0) for s in (-720.0, -360.0, 0.0, 360.0)}
        assert shift == max(fractions, key=fractions.get)
        assert 0.5 < fractions[shift] < 1.0  # the first part (az 174..180) stays outside
        # a mount with cable wrap (+-270 deg) holds the whole pass on one branch
        wide = prediction.best_branch(-270.0, 270.0, 0.0, 90.0, [(AOS, LOS)])
        assert inside_fraction(wide, -270.0, 270.0) == 1.0
    finally:
        prediction.set_branch(0.0)
    with pytest.raises(InputError, match="whole number of turns"):
        prediction.set_branch(90.0)


def test_sky_offsets_become_wider_azimuth_steps_at_high_elevation() -> None:
    daz, del_ = sky_offset_to_mount_deg(1000.0, -500.0, 60.0)
    assert daz == pytest.approx(math.degrees(1000e-6) / 0.5)
    assert del_ == pytest.approx(math.degrees(-500e-6))
    # near the zenith the conversion is bounded rather than exploding
    assert abs(sky_offset_to_mount_deg(1.0, 0.0, 89.99)[0]) <= math.degrees(1e-6) / 0.05 + 1e-12


@settings(max_examples=100, deadline=None)
@given(
    radius=st.floats(0.0, 1.0),
    angle=st.floats(0.0, 2 * math.pi),
    fov=st.sampled_from([100.0, 200.0, 500.0]),
    rate=st.sampled_from([300.0, 2000.0]),
)
def test_spiral_passes_within_half_a_field_of_view_of_any_point(
    radius: float, angle: float, fov: float, rate: float
) -> None:
    spiral = SpiralScan(fov, rate, 0.1, 1000.0)
    target = (1000.0 * radius * math.cos(angle), 1000.0 * radius * math.sin(angle))
    offsets = np.array([spiral.offset(k) for k in range(spiral.samples_per_cycle)])
    distance = np.hypot(offsets[:, 0] - target[0], offsets[:, 1] - target[1])
    assert distance.min() <= fov / 2.0


def test_spiral_starts_at_the_centre_moves_in_bounded_steps_and_restarts() -> None:
    spiral = SpiralScan(200.0, 2000.0, 0.1, 1000.0)
    assert spiral.offset(0) == (0.0, 0.0)
    cycle = spiral.samples_per_cycle
    points = np.array([spiral.offset(k) for k in range(cycle + 1)])
    steps = np.hypot(*np.diff(points[:cycle], axis=0).T)
    assert steps.max() <= spiral.step_urad + 1e-9  # chords never exceed the path step
    assert spiral.step_urad == pytest.approx(0.7 * 200.0)
    # one turn beyond the radius to cover, then it starts again from the centre
    assert np.hypot(*points[:cycle].T).max() <= 1000.0 + spiral.pitch_urad + spiral.step_urad
    assert tuple(points[cycle]) == (0.0, 0.0)
    with pytest.raises(InputError, match="field_of_view_urad"):
        SpiralScan(0.0, 2000.0, 0.1, 1000.0)


@settings(max_examples=100, deadline=None)
@given(
    gain=st.floats(0.05, 1.9),
    offset=st.tuples(st.floats(-800.0, 800.0), st.floats(-800.0, 800.0)),
)
def test_fine_law_nulls_a_fixed_offset_through_a_one_sample_delay(
    gain: float, offset: tuple[float, float]
) -> None:
    law = FineSteeringLaw(gain, 0.0, (-2000.0, 2000.0), (-2000.0, 2000.0))
    command, previous = (0.0, 0.0), None
    for _ in range(400):
        spot = (offset[0] - command[0], offset[1] - command[1])  # spot left by the last command
        command, previous = law.update(command, spot, previous), spot
    assert command == pytest.approx(offset, abs=1e-3)


def test_fine_law_clamps_to_the_mirror_travel() -> None:
    law = FineSteeringLaw(1.0, 0.2, (-100.0, 100.0), (-50.0, 60.0))
    assert law.update((90.0, 0.0), (40.0, 500.0), None) == (100.0, 60.0)
    assert law.update((0.0, 0.0), (-400.0, -400.0), (0.0, 0.0)) == (-100.0, -50.0)
    with pytest.raises(InputError, match="integral_gain"):
        FineSteeringLaw(2.0, 0.0, (-1.0, 1.0), (-1.0, 1.0))
