"""Tests of TLE propagation, topocentric geometry and solar elevation against skyfield."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import skyfield
from skyfield.api import EarthSatellite, load, load_file, wgs84

from satqkd_core.ephemeris import (
    SPEED_OF_LIGHT_M_S,
    Station,
    parse_tle,
    sun_elevation_deg,
    sun_equatorial_deg,
    topocentric,
)
from satqkd_core.errors import InputError

# Public NORAD element set of Micius (41731), epoch 2016-12-18 (see sim_backends/data/micius.tle).
MICIUS_1 = "1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993"
MICIUS_2 = "2 41731  97.3699 267.4500 0013200 178.5836 246.0824 15.23915303 19063"
XINGLONG = Station(latitude_deg=40.3958, longitude_deg=117.5775, altitude_m=890.0)
PASS_START = dt.datetime(2016, 12, 19, 16, 45, tzinfo=dt.UTC).timestamp()


def _skyfield_times(unix_s: np.ndarray):
    ts = load.timescale(builtin=True)
    return ts.from_datetimes([dt.datetime.fromtimestamp(u, dt.UTC) for u in unix_s])


def test_topocentric_matches_skyfield_over_a_micius_pass() -> None:
    unix_s = PASS_START + np.arange(0.0, 900.0, 5.0)
    t = _skyfield_times(unix_s)
    satellite = EarthSatellite(MICIUS_1, MICIUS_2, ts=load.timescale(builtin=True))
    site = wgs84.latlon(XINGLONG.latitude_deg, XINGLONG.longitude_deg, XINGLONG.altitude_m)
    relative = (satellite - site).at(t)
    altitude, azimuth, distance = relative.altaz()
    *_, range_rate = relative.frame_latlon_and_rates(site)
    # skyfield rotates the Earth with UT1; give ours the same UT1 - UTC (constant over a pass).
    geometry = topocentric(
        MICIUS_1, MICIUS_2, XINGLONG, unix_s, ut1_minus_utc_s=float(np.mean(t.dut1))
    )
    # Reached: ~1 mm in range, ~1e-8 deg in angles, ~1e-5 m/s in range rate.
    np.testing.assert_allclose(geometry.range_m, distance.m, rtol=0, atol=0.01)
    np.testing.assert_allclose(geometry.elevation_deg, altitude.degrees, rtol=0, atol=1e-6)
    azimuth_error = (geometry.azimuth_deg - azimuth.degrees + 180.0) % 360.0 - 180.0
    assert np.max(np.abs(azimuth_error)) < 1e-5
    np.testing.assert_allclose(geometry.range_rate_m_s, range_rate.m_per_s, rtol=0, atol=1e-3)
    # The pass of Liao et al. 2017: ~645 km closest approach, ~48 deg maximum elevation.
    assert 640e3 < geometry.range_m.min() < 650e3
    assert 47.0 < geometry.elevation_deg.max() < 48.5


def test_ut1_offset_moves_the_station_by_earth_rotation() -> None:
    unix_s = PASS_START + np.arange(200.0, 400.0, 20.0)
    with_dut1 = topocentric(MICIUS_1, MICIUS_2, XINGLONG, unix_s, ut1_minus_utc_s=-0.4)
    without = topocentric(MICIUS_1, MICIUS_2, XINGLONG, unix_s)
    shift = np.abs(with_dut1.range_m - without.range_m)
    # 0.4 s of rotation moves Xinglong by 0.4 * 465.1 * cos(40.4 deg) = 142 m.
    assert 1.0 < shift.max() < 142.0


def test_velocity_terms_are_consistent() -> None:
    unix_s = PASS_START + np.arange(0.0, 900.0, 1.0)
    geometry = topocentric(MICIUS_1, MICIUS_2, XINGLONG, unix_s)
    # Range rate is the time derivative of the range (central differences, 1 s steps).
    numeric_rate = np.gradient(geometry.range_m, unix_s)
    np.testing.assert_allclose(geometry.range_rate_m_s[1:-1], numeric_rate[1:-1], atol=0.5)
    assert np.all((geometry.sat_speed_m_s > 7500.0) & (geometry.sat_speed_m_s < 7700.0))
    # Point-ahead 2 v_perp / c is largest near culmination, where the range rate crosses zero.
    assert np.all(geometry.point_ahead_urad <= 2 * 8000.0 / SPEED_OF_LIGHT_M_S * 1e6)
    culmination = np.argmin(geometry.range_m)
    # Within 0.5 s of closest approach; the range acceleration there is ~v^2/range ~ 90 m/s^2.
    assert abs(geometry.range_rate_m_s[culmination]) < 50.0
    assert geometry.point_ahead_urad[culmination] == pytest.approx(
        geometry.point_ahead_urad.max(), rel=0.01
    )
    assert 45.0 < geometry.point_ahead_urad.max() < 55.0
    assert np.all((geometry.azimuth_deg >= 0.0) & (geometry.azimuth_deg < 360.0))


def test_empty_time_array_gives_empty_geometry() -> None:
    geometry = topocentric(MICIUS_1, MICIUS_2, XINGLONG, np.zeros(0))
    assert geometry.range_m.shape == (0,) and geometry.elevation_deg.shape == (0,)


def test_sun_position_matches_meeus_example_25a() -> None:
    # Meeus, Astronomical Algorithms, example 25.a: 1992 Oct 13.0 TD, apparent RA 13h13m31.4s,
    # Dec -7 deg 47' 06".
    unix_s = np.array([dt.datetime(1992, 10, 13, tzinfo=dt.UTC).timestamp()])
    right_ascension, declination = sun_equatorial_deg(unix_s)
    assert right_ascension[0] == pytest.approx(198.38083, abs=0.01)
    assert declination[0] == pytest.approx(-7.78507, abs=0.01)


SKYFIELD_TEST_EPHEMERIS = Path(skyfield.__file__).parent / "tests" / "data" / "de430-2015-03-02.bsp"


@pytest.mark.skipif(not SKYFIELD_TEST_EPHEMERIS.exists(), reason="skyfield test ephemeris absent")
def test_sun_elevation_matches_skyfield_within_a_hundredth_of_a_degree() -> None:
    planets = load_file(str(SKYFIELD_TEST_EPHEMERIS))
    unix_s = dt.datetime(2015, 3, 2, tzinfo=dt.UTC).timestamp() + np.arange(0.0, 86400.0, 600.0)
    t = _skyfield_times(unix_s)
    site = planets["earth"] + wgs84.latlon(
        XINGLONG.latitude_deg, XINGLONG.longitude_deg, XINGLONG.altitude_m
    )
    altitude, _, _ = site.at(t).observe(planets["sun"]).apparent().altaz()
    ours = sun_elevation_deg(XINGLONG, unix_s, ut1_minus_utc_s=float(np.mean(t.dut1)))
    np.testing.assert_allclose(ours, altitude.degrees, rtol=0, atol=0.01)
    assert ours.min() < -40.0 and ours.max() > 35.0  # both night and day were compared


def test_parse_tle_rejects_corrupted_lines() -> None:
    parse_tle(MICIUS_1, MICIUS_2)
    with pytest.raises(InputError, match="tle_line1 checksum"):
        parse_tle(MICIUS_1[:-1] + "0", MICIUS_2)
    with pytest.raises(InputError, match="69 characters"):
        parse_tle(MICIUS_1[:60], MICIUS_2)
    with pytest.raises(InputError, match="start with '2 '"):
        parse_tle(MICIUS_1, MICIUS_1)
    other = "2 41732" + MICIUS_2[7:68]
    other += str(sum(int(c) if c.isdigit() else c == "-" for c in other) % 10)
    with pytest.raises(InputError, match="different satellites"):
        parse_tle(MICIUS_1, other)


def test_inputs_are_validated() -> None:
    with pytest.raises(InputError, match="latitude_deg"):
        Station(latitude_deg=91.0, longitude_deg=0.0, altitude_m=0.0)
    with pytest.raises(InputError, match="altitude_m"):
        Station(latitude_deg=0.0, longitude_deg=0.0, altitude_m=float("nan"))
    with pytest.raises(InputError, match="unix_s"):
        topocentric(MICIUS_1, MICIUS_2, XINGLONG, np.array([[PASS_START]]))
    with pytest.raises(InputError, match="unix_s"):
        sun_elevation_deg(XINGLONG, np.array([np.inf]))
    with pytest.raises(InputError, match="ut1_minus_utc_s"):
        topocentric(MICIUS_1, MICIUS_2, XINGLONG, np.array([PASS_START]), ut1_minus_utc_s=2.0)
    with pytest.raises(InputError, match="station"):
        topocentric(MICIUS_1, MICIUS_2, (40.0, 117.0, 0.0), np.array([PASS_START]))  # type: ignore[arg-type]
    # 17.5 revolutions a day puts the orbit inside the Earth: SGP4 reports decay.
    sunk = MICIUS_2[:52] + "17.50000000 1906"
    sunk += str(sum(int(c) if c.isdigit() else c == "-" for c in sunk) % 10)
    with pytest.raises(InputError, match="SGP4 failed"):
        topocentric(MICIUS_1, sunk, XINGLONG, np.array([PASS_START]))
