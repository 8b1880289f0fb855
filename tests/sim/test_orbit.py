"""Tests of synthetic TLEs and pass search."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from sgp4.api import WGS72, Satrec
from skyfield.api import EarthSatellite, load, wgs84

from satqkd_core.ephemeris import Station, sun_elevation_deg, topocentric
from satqkd_core.errors import InputError
from sim_backends.orbit import (
    circular_orbit_tle,
    find_passes,
    load_sample_tle,
    sun_synchronous_inclination_deg,
    sun_synchronous_tle,
)

XINGLONG = Station(latitude_deg=40.3958, longitude_deg=117.5775, altitude_m=890.0)
EPOCH = dt.datetime(2024, 12, 15, tzinfo=dt.UTC).timestamp()


def _state_teme_km(tle: tuple[str, str], unix_s: float) -> tuple[np.ndarray, np.ndarray]:
    satrec = Satrec.twoline2rv(*tle, WGS72)
    jd = 2440587.5 + math.floor(unix_s / 86400.0)
    error, r, v = satrec.sgp4(jd, (unix_s % 86400.0) / 86400.0)
    assert error == 0
    return np.array(r), np.array(v)


def _node_and_argument_of_latitude_deg(r: np.ndarray, v: np.ndarray) -> tuple[float, float, float]:
    h = np.cross(r, v)
    inclination = math.degrees(math.acos(h[2] / np.linalg.norm(h)))
    node = np.array([-h[1], h[0], 0.0])
    raan = math.degrees(math.atan2(node[1], node[0])) % 360.0
    cos_u = np.dot(node, r) / (np.linalg.norm(node) * np.linalg.norm(r))
    u = math.degrees(math.acos(np.clip(cos_u, -1.0, 1.0)))
    return raan, (u if r[2] >= 0 else 360.0 - u), inclination


def test_sun_synchronous_inclination_matches_textbook_values() -> None:
    # Vallado, Fundamentals of Astrodynamics: 97.4 deg at 500 km, 98.6 deg at 800 km.
    assert sun_synchronous_inclination_deg(500.0) == pytest.approx(97.40, abs=0.02)
    assert sun_synchronous_inclination_deg(800.0) == pytest.approx(98.60, abs=0.02)
    values = [sun_synchronous_inclination_deg(h) for h in (300.0, 600.0, 1000.0, 2000.0)]
    assert values == sorted(values)


def test_circular_orbit_tle_has_the_requested_elements() -> None:
    tle = circular_orbit_tle(500.0, 51.6, 30.0, EPOCH, arg_latitude_deg=123.4, norad_id=12345)
    assert tle[0].startswith("1 12345U") and tle[1].startswith("2 12345")
    r, v = _state_teme_km(tle, EPOCH)
    raan, u, inclination = _node_and_argument_of_latitude_deg(r, v)
    # Osculating vs mean elements differ by the J2 short-period terms (~0.1 deg).
    assert raan == pytest.approx(30.0, abs=0.15)
    assert u == pytest.approx(123.4, abs=0.2)
    assert inclination == pytest.approx(51.6, abs=0.1)
    radii = [np.linalg.norm(_state_teme_km(tle, EPOCH + s)[0]) for s in np.linspace(0, 5676, 120)]
    assert np.mean(radii) == pytest.approx(6378.135 + 500.0, abs=0.05)
    assert np.max(radii) - np.min(radii) < 30.0  # circular up to J2 short-period terms


def test_sun_synchronous_orbit_keeps_its_local_time() -> None:
    tle = sun_synchronous_tle(500.0, 22.75, EPOCH, norad_id=99001)
    assert float(tle[1][8:16]) == pytest.approx(sun_synchronous_inclination_deg(500.0), abs=1e-4)
    # LTAN from the TLE's RAAN and the mean sun (L = 280.460 + 0.9856474 n).
    n_days = EPOCH / 86400.0 + 2440587.5 - 2451545.0
    mean_sun_ra = (280.460 + 0.9856474 * n_days) % 360.0
    ltan = ((float(tle[1][17:25]) - mean_sun_ra) / 15.0 + 12.0) % 24.0
    assert ltan == pytest.approx(22.75, abs=0.001)
    # The node follows the mean sun: +0.9856 deg/day (SGP4 secular J2, J4 terms).
    raan_0 = _node_and_argument_of_latitude_deg(*_state_teme_km(tle, EPOCH))[0]
    raan_10 = _node_and_argument_of_latitude_deg(*_state_teme_km(tle, EPOCH + 10 * 86400))[0]
    assert (raan_10 - raan_0) % 360.0 == pytest.approx(9.856, abs=0.1)


def test_shipped_jinan1_like_tle_regenerates_exactly() -> None:
    assert load_sample_tle("jinan1_like") == sun_synchronous_tle(
        500.0, 22.75, EPOCH, norad_id=99001
    )


def test_micius_pass_matches_skyfield_events() -> None:
    tle = load_sample_tle("micius")
    start = dt.datetime(2016, 12, 19, 16, 40, tzinfo=dt.UTC).timestamp()
    ts = load.timescale(builtin=True)
    t0 = ts.from_datetime(dt.datetime.fromtimestamp(start, dt.UTC))
    t1 = ts.from_datetime(dt.datetime.fromtimestamp(start + 1500, dt.UTC))
    satellite = EarthSatellite(*tle, ts=ts)
    site = wgs84.latlon(XINGLONG.latitude_deg, XINGLONG.longitude_deg, XINGLONG.altitude_m)
    times, events = satellite.find_events(site, t0, t1, altitude_degrees=10.0)
    assert list(events) == [0, 1, 2]
    reference = [t.utc_datetime().timestamp() for t in times]
    passes = find_passes(*tle, XINGLONG, start, start + 1500, 10.0, ut1_minus_utc_s=float(t0.dut1))
    assert len(passes) == 1
    found = passes[0]
    got = [found.aos_unix_s, found.culmination_unix_s, found.los_unix_s]
    # skyfield's own event search stops at ~0.1 s (its LOS sits at 9.989 deg); ours is finer:
    # skyfield's elevation at our AOS and LOS is 10 deg within the ~0.1 deg/s * 0.01 s step.
    np.testing.assert_allclose(got, reference, rtol=0, atol=0.15)
    ours = ts.from_datetimes([dt.datetime.fromtimestamp(u, dt.UTC) for u in got])
    elevation = (satellite - site).at(ours).altaz()[0].degrees
    np.testing.assert_allclose(elevation[[0, 2]], [10.0, 10.0], rtol=0, atol=0.002)
    culmination = (satellite - site).at(times[1]).altaz()[0].degrees
    assert found.max_elevation_deg == pytest.approx(culmination, abs=1e-4)
    assert 47.5 < found.max_elevation_deg < 48.0
    assert found.night  # 00:52 Beijing time, as the passes of Liao et al. 2017


def test_pass_times_are_refined_to_a_tenth_of_a_second() -> None:
    tle = load_sample_tle("jinan1_like")
    passes = find_passes(*tle, XINGLONG, EPOCH, EPOCH + 2 * 86400, 15.0)
    assert len(passes) >= 4
    for window in passes:
        before_after = np.array([window.aos_unix_s - 0.1, window.aos_unix_s + 0.1])
        elevation = topocentric(*tle, XINGLONG, before_after).elevation_deg
        assert elevation[0] < 15.0 <= elevation[1]
        before_after = np.array([window.los_unix_s - 0.1, window.los_unix_s + 0.1])
        elevation = topocentric(*tle, XINGLONG, before_after).elevation_deg
        assert elevation[0] >= 15.0 > elevation[1]
        around = window.culmination_unix_s + np.array([-0.1, 0.0, 0.1])
        elevation = topocentric(*tle, XINGLONG, around).elevation_deg
        assert elevation[1] >= elevation[0] and elevation[1] >= elevation[2]
        assert elevation[1] == pytest.approx(window.max_elevation_deg, abs=1e-6)
        assert 100.0 < window.los_unix_s - window.aos_unix_s < 500.0
        sun = sun_elevation_deg(XINGLONG, np.array([window.culmination_unix_s]))[0]
        assert window.night == (sun < -12.0)
    assert any(w.night for w in passes) and not all(w.night for w in passes)


def test_grazing_pass_between_grid_points_is_found() -> None:
    tle = load_sample_tle("jinan1_like")
    fine = find_passes(*tle, XINGLONG, EPOCH, EPOCH + 2 * 86400, 10.0, step_s=1.0)
    low = min(fine, key=lambda w: w.max_elevation_deg)
    threshold = low.max_elevation_deg - 0.01  # above the threshold for only ~10 s
    start = low.culmination_unix_s - 1000.0
    coarse = find_passes(*tle, XINGLONG, start, start + 2000.0, threshold, step_s=60.0)
    assert len(coarse) == 1
    assert coarse[0].culmination_unix_s == pytest.approx(low.culmination_unix_s, abs=0.05)
    assert coarse[0].los_unix_s - coarse[0].aos_unix_s < 60.0


def test_pass_in_progress_is_clipped_to_the_window() -> None:
    tle = load_sample_tle("jinan1_like")
    full = find_passes(*tle, XINGLONG, EPOCH, EPOCH + 86400, 10.0)[0]
    start = full.aos_unix_s + 60.0
    clipped = find_passes(*tle, XINGLONG, start, full.los_unix_s + 600.0, 10.0)[0]
    assert clipped.aos_unix_s == start
    assert clipped.los_unix_s == pytest.approx(full.los_unix_s, abs=0.02)
    assert clipped.max_elevation_deg == pytest.approx(full.max_elevation_deg, abs=1e-4)


def test_bad_arguments_are_rejected() -> None:
    tle = load_sample_tle("micius")
    with pytest.raises(InputError, match="stop_unix_s"):
        find_passes(*tle, XINGLONG, EPOCH, EPOCH, 10.0)
    with pytest.raises(InputError, match="step_s"):
        find_passes(*tle, XINGLONG, EPOCH, EPOCH + 100, 10.0, step_s=0.0)
    with pytest.raises(InputError, match="min_elevation_deg"):
        find_passes(*tle, XINGLONG, EPOCH, EPOCH + 100, 95.0)
    with pytest.raises(InputError, match="altitude_km"):
        circular_orbit_tle(50.0, 97.0, 0.0, EPOCH)
    with pytest.raises(InputError, match="inclination_deg"):
        circular_orbit_tle(500.0, 181.0, 0.0, EPOCH)
    with pytest.raises(InputError, match="norad_id"):
        circular_orbit_tle(500.0, 97.0, 0.0, EPOCH, norad_id=100000)
    with pytest.raises(InputError, match="ltan_hours"):
        sun_synchronous_tle(500.0, 24.0, EPOCH)
    with pytest.raises(InputError, match="name"):
        load_sample_tle("../micius")
    with pytest.raises(InputError, match="available"):
        load_sample_tle("no_such_satellite")
