"""Tests of the polarisation reference frames: geometry, compensation residual, added QBER."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load, wgs84

from satqkd_core.ephemeris import (
    Station,
    gmst_1982_rad,
    polarisation_frame_rotation_deg,
    topocentric,
    unix_to_julian_date,
    wrap_polarisation_angle_deg,
)
from satqkd_core.errors import InputError
from sim_backends.orbit import circular_orbit_tle
from sim_backends.polarisation import (
    PolarisationCompensation,
    combined_polarisation_error,
    misalignment_error_probability,
    residual_misalignment_deg,
)

MICIUS_1 = "1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993"
MICIUS_2 = "2 41731  97.3699 267.4500 0013200 178.5836 246.0824 15.23915303 19063"
XINGLONG = Station(latitude_deg=40.3958, longitude_deg=117.5775, altitude_m=890.0)
LIAO_PASS_START = dt.datetime(2016, 12, 19, 16, 45, tzinfo=dt.UTC).timestamp()
EPOCH = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()


def test_wrap_reduces_modulo_180_into_minus_90_to_90() -> None:
    angles = np.array([0.0, 95.0, -95.0, 90.0, -90.0, 270.0, 180.0, 44.5])
    np.testing.assert_allclose(
        wrap_polarisation_angle_deg(angles), [0.0, -85.0, 85.0, 90.0, 90.0, 90.0, 0.0, 44.5]
    )


def test_misalignment_error_is_sin_squared() -> None:
    np.testing.assert_allclose(
        misalignment_error_probability(np.array([0.0, 30.0, 45.0, 90.0, -45.0])),
        [0.0, 0.25, 0.5, 1.0, 0.5],
        atol=1e-15,
    )


def test_combined_error_adds_one_flip_of_two_independent_ones() -> None:
    # e0 = 1 %, residual 10 deg: s = sin^2(10 deg) = 0.0301537; 0.01 + 0.98 s = 0.0395506.
    assert combined_polarisation_error(0.01, np.array([10.0]))[0] == pytest.approx(0.0395506, 1e-6)
    # Limits: no misalignment leaves the source's error; 90 deg swaps every state.
    assert combined_polarisation_error(0.01, np.array([0.0]))[0] == 0.01
    assert combined_polarisation_error(0.01, np.array([90.0]))[0] == pytest.approx(0.99)
    assert combined_polarisation_error(0.0, np.array([45.0]))[0] == pytest.approx(0.5)


def test_predicted_compensation_leaves_its_rms_error() -> None:
    rotation = np.linspace(-80.0, 80.0, 20_000)
    model = PolarisationCompensation("predicted", 2.0)
    residual = residual_misalignment_deg(rotation, model, seed=5)
    assert np.sqrt(np.mean(residual**2)) == pytest.approx(2.0, rel=0.02)
    assert abs(np.mean(residual)) < 0.05  # no bias: 3 sigma of the mean is 0.042 deg
    np.testing.assert_array_equal(residual, residual_misalignment_deg(rotation, model, seed=5))
    perfect = residual_misalignment_deg(rotation, PolarisationCompensation("predicted", 0.0), 5)
    np.testing.assert_array_equal(perfect, np.zeros_like(rotation))


def test_no_compensation_leaves_the_rotation_since_the_first_instant() -> None:
    rotation = np.array([10.0, 30.0, 80.0, -70.0])
    residual = residual_misalignment_deg(rotation, PolarisationCompensation("none"), seed=1)
    np.testing.assert_allclose(residual, [0.0, 20.0, 70.0, -80.0])


def test_compensation_inputs_are_validated() -> None:
    with pytest.raises(InputError, match="mode"):
        PolarisationCompensation("guess", 1.0)
    with pytest.raises(InputError, match="error_rms_deg"):
        PolarisationCompensation("predicted", -1.0)
    with pytest.raises(InputError, match="frame_rotation_deg"):
        residual_misalignment_deg(np.zeros((2, 2)), PolarisationCompensation(), 1)
    with pytest.raises(InputError, match="seed"):
        residual_misalignment_deg(np.zeros(2), PolarisationCompensation(), 1.5)
    with pytest.raises(InputError, match="intrinsic_error"):
        combined_polarisation_error(0.7, np.zeros(1))


def _skyfield_rotation_deg(unix_s: np.ndarray) -> tuple[np.ndarray, float]:
    """The same angle from skyfield's GCRS vectors (an independent frame pipeline), and the
    UT1 - UTC skyfield used."""
    ts = load.timescale(builtin=True)
    t = ts.from_datetimes([dt.datetime.fromtimestamp(u, dt.UTC) for u in unix_s])
    satellite = EarthSatellite(MICIUS_1, MICIUS_2, ts=ts)
    site = wgs84.latlon(XINGLONG.latitude_deg, XINGLONG.longitude_deg, XINGLONG.altitude_m)
    sat = satellite.at(t)
    r, v = sat.position.m.T, sat.velocity.m_per_s.T
    normal = np.cross(r, v)
    propagation = site.at(t).position.m.T - r
    propagation /= np.linalg.norm(propagation, axis=1)[:, None]
    payload = normal - np.sum(normal * propagation, axis=1)[:, None] * propagation
    payload /= np.linalg.norm(payload, axis=1)[:, None]
    # Local east and north of the site in GCRS, from small steps in longitude and latitude.
    east = wgs84.latlon(XINGLONG.latitude_deg, XINGLONG.longitude_deg + 1e-4, 890.0)
    north = wgs84.latlon(XINGLONG.latitude_deg + 1e-4, XINGLONG.longitude_deg, 890.0)
    e = east.at(t).position.m.T - site.at(t).position.m.T
    n = north.at(t).position.m.T - site.at(t).position.m.T
    e /= np.linalg.norm(e, axis=1)[:, None]
    n /= np.linalg.norm(n, axis=1)[:, None]
    look = -propagation
    azimuth = np.arctan2(np.sum(look * e, axis=1), np.sum(look * n, axis=1))
    receiver = np.cos(azimuth)[:, None] * e - np.sin(azimuth)[:, None] * n
    sine = np.sum(propagation * np.cross(payload, receiver), axis=1)
    cosine = np.sum(payload * receiver, axis=1)
    return wrap_polarisation_angle_deg(np.degrees(np.arctan2(sine, cosine))), float(np.mean(t.dut1))


def test_rotation_matches_an_independent_skyfield_computation() -> None:
    unix_s = LIAO_PASS_START + np.arange(60.0, 840.0, 30.0)
    geometry = topocentric(MICIUS_1, MICIUS_2, XINGLONG, unix_s)
    up = geometry.elevation_deg > 5.0
    theirs, dut1 = _skyfield_rotation_deg(unix_s[up])
    ours = polarisation_frame_rotation_deg(
        MICIUS_1, MICIUS_2, XINGLONG, unix_s[up], ut1_minus_utc_s=dut1
    )
    # TEME/PEF vs GCRS/ITRS (precession, nutation, polar motion): ~1e-3 deg.
    difference = wrap_polarisation_angle_deg(ours - theirs)
    assert np.max(np.abs(difference)) < 0.005
    assert np.ptp(np.unwrap(ours, period=180.0)) > 60.0  # the frames really turn in this pass


def _overhead_polar_tle(lateral_deg: float) -> tuple[tuple[str, str], Station]:
    """A polar orbit at its ascending node at EPOCH, over the equator at lon0 + lateral."""
    tle = circular_orbit_tle(500.0, 90.0, 30.0, EPOCH)
    jd, fr = unix_to_julian_date(np.array([EPOCH]))
    sub_longitude = (30.0 - math.degrees(gmst_1982_rad(jd, fr)[0]) + 180.0) % 360.0 - 180.0
    return tle, Station(0.0, sub_longitude + lateral_deg, 0.0)


def test_an_overhead_polar_pass_keeps_the_frames_aligned() -> None:
    # The orbit normal lies in the equatorial plane, east-west, like the elevation axis of a
    # telescope looking north or south: they stay parallel along the whole overhead pass
    # (Earth rotation tilts the ground track by ~3.5 deg at the equator). Near the zenith the
    # mount's azimuth swings through 180 deg, so that keyhole is left out.
    tle, station = _overhead_polar_tle(0.0)
    unix_s = EPOCH + np.arange(-250.0, 251.0, 5.0)
    geometry = topocentric(*tle, station, unix_s)
    assert geometry.elevation_deg.max() > 85.0
    up = (geometry.elevation_deg > 20.0) & (geometry.elevation_deg < 80.0)
    rotation = polarisation_frame_rotation_deg(*tle, station, unix_s[up])
    assert np.max(np.abs(rotation)) < 5.0


def test_an_offset_pass_turns_the_frames_and_uncompensated_they_add_qber() -> None:
    tle, station = _overhead_polar_tle(8.0)
    unix_s = EPOCH + np.arange(-250.0, 251.0, 5.0)
    geometry = topocentric(*tle, station, unix_s)
    up = geometry.elevation_deg > 20.0
    assert 20.0 < geometry.elevation_deg.max() < 60.0
    rotation = polarisation_frame_rotation_deg(*tle, station, unix_s[up])
    assert np.all((rotation > -90.0) & (rotation <= 90.0))
    turned = np.ptp(np.unwrap(rotation, period=180.0))
    assert turned > 40.0
    residual = residual_misalignment_deg(rotation, PolarisationCompensation("none"), 1)
    qber = combined_polarisation_error(0.005, residual)
    assert qber.max() > 0.1  # left alone, the frames ruin the key
    compensated = residual_misalignment_deg(rotation, PolarisationCompensation("predicted", 1.0), 1)
    assert combined_polarisation_error(0.005, compensated).max() < 0.01


def test_rotation_of_no_instants_is_empty_and_bad_station_is_rejected() -> None:
    assert polarisation_frame_rotation_deg(MICIUS_1, MICIUS_2, XINGLONG, np.zeros(0)).size == 0
    with pytest.raises(InputError, match="station"):
        polarisation_frame_rotation_deg(MICIUS_1, MICIUS_2, (40.0, 117.0), np.zeros(1))
