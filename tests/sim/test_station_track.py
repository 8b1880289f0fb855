"""Tests of moving stations: track interpolation, moving-station geometry, track files."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from satqkd_core.ephemeris import (
    Station,
    StationTrack,
    polarisation_frame_rotation_deg,
    station_ecef_m,
    sun_elevation_deg,
    topocentric,
)
from satqkd_core.errors import InputError
from sim_backends.station_track import read_station_track_csv, station_track_from_rows

MICIUS_1 = "1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993"
MICIUS_2 = "2 41731  97.3699 267.4500 0013200 178.5836 246.0824 15.23915303 19063"
PASS_START = dt.datetime(2016, 12, 19, 16, 45, tzinfo=dt.UTC).timestamp()
LAT, LON = 40.3958, 117.5775
EARTH_RADIUS_M = 6_371_000.0


def _northbound_track(speed_m_s: float, span_s: float = 1200.0) -> StationTrack:
    """A ship going due north at constant speed (10 s samples, spherical degrees/metre)."""
    t = PASS_START + np.arange(0.0, span_s + 1.0, 10.0)
    lat = LAT + np.degrees(speed_m_s * (t - t[0]) / EARTH_RADIUS_M)
    return StationTrack(t, lat, np.full(t.size, LON), np.full(t.size, 5.0))


def test_a_parked_track_gives_the_fixed_station_geometry() -> None:
    track = _northbound_track(0.0)
    unix_s = PASS_START + np.arange(100.0, 900.0, 7.0)
    fixed = topocentric(MICIUS_1, MICIUS_2, Station(LAT, LON, 5.0), unix_s)
    moving = topocentric(MICIUS_1, MICIUS_2, track, unix_s)
    for name in ("range_m", "range_rate_m_s", "elevation_deg", "azimuth_deg", "point_ahead_urad"):
        np.testing.assert_allclose(getattr(moving, name), getattr(fixed, name), atol=1e-6)
    np.testing.assert_allclose(
        polarisation_frame_rotation_deg(MICIUS_1, MICIUS_2, track, unix_s),
        polarisation_frame_rotation_deg(MICIUS_1, MICIUS_2, Station(LAT, LON, 5.0), unix_s),
        atol=1e-9,
    )


def test_a_moving_station_sees_its_own_velocity_in_the_range_rate() -> None:
    speed = 10.0  # m/s due north
    track = _northbound_track(speed)
    unix_s = PASS_START + np.arange(100.0, 900.0, 13.0)
    moving = topocentric(MICIUS_1, MICIUS_2, track, unix_s)
    # At each instant: the geometry of a fixed station where the ship is, minus the ship's
    # velocity along the line of sight (north component of the unit vector to the satellite).
    for k, t in enumerate(unix_s):
        here = track.station_at(t)
        fixed = topocentric(MICIUS_1, MICIUS_2, here, np.array([t]))
        assert moving.range_m[k] == pytest.approx(fixed.range_m[0], abs=1e-6)
        assert moving.elevation_deg[k] == pytest.approx(fixed.elevation_deg[0], abs=1e-9)
        el, az = math.radians(fixed.elevation_deg[0]), math.radians(fixed.azimuth_deg[0])
        north_component = math.cos(el) * math.cos(az)
        # on the WGS84 ellipsoid the ship's metres per degree differ from the sphere's
        ground_speed = np.linalg.norm(
            station_ecef_m(track.station_at(t + 0.5)) - station_ecef_m(track.station_at(t - 0.5))
        )
        assert ground_speed == pytest.approx(speed, rel=0.01)
        expected = fixed.range_rate_m_s[0] - ground_speed * north_component
        assert moving.range_rate_m_s[k] == pytest.approx(expected, abs=2e-3)


def test_moving_range_rate_is_the_derivative_of_range() -> None:
    # 10 ms steps keep the central difference's own error (third derivative * h^2 / 6) tiny.
    # SGP4's velocity is itself ~4 mm/s off the derivative of its position, for any station,
    # so the moving station must show the same mismatch as a parked one, and no more.
    unix_s = PASS_START + np.arange(300.0, 330.0, 0.01)
    mismatch = []
    for speed in (0.0, 12.0):
        geometry = topocentric(MICIUS_1, MICIUS_2, _northbound_track(speed), unix_s)
        derivative = np.gradient(geometry.range_m, unix_s)
        mismatch.append(geometry.range_rate_m_s[2:-2] - derivative[2:-2])
    assert np.max(np.abs(mismatch[0])) < 0.01
    np.testing.assert_allclose(mismatch[1], mismatch[0], atol=1e-4)


def test_track_crosses_the_antimeridian_the_short_way() -> None:
    track = StationTrack([0.0, 100.0], [10.0, 10.0], [179.9, -179.9], [0.0, 0.0])
    middle = track.station_at(50.0)
    assert abs(abs(middle.longitude_deg) - 180.0) < 1e-9
    quarter = track.station_at(25.0)
    assert quarter.longitude_deg == pytest.approx(179.95)
    distance = np.linalg.norm(station_ecef_m(middle) - station_ecef_m(track.station_at(0.0)))
    assert distance < 12_000.0  # 0.1 deg of longitude at 10 N, not half the globe


def test_sun_elevation_follows_the_track() -> None:
    track = StationTrack([0.0, 3600.0], [0.0, 0.0], [0.0, 90.0], [0.0, 0.0])
    t = 1_800_000_000.0
    track = StationTrack(t + track.unix_s, track.latitude_deg, track.longitude_deg, [0.0, 0.0])
    unix_s = np.array([t, t + 1800.0, t + 3600.0])
    got = sun_elevation_deg(track, unix_s)
    for k, when in enumerate(unix_s):
        assert got[k] == pytest.approx(sun_elevation_deg(track.station_at(when), [when])[0])


def test_track_is_validated() -> None:
    with pytest.raises(InputError, match="at least 2"):
        StationTrack([0.0], [0.0], [0.0], [0.0])
    with pytest.raises(InputError, match="increase strictly"):
        StationTrack([0.0, 10.0, 10.0], [0.0] * 3, [0.0] * 3, [0.0] * 3)
    with pytest.raises(InputError, match="latitude_deg"):
        StationTrack([0.0, 1.0], [0.0, 91.0], [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(InputError, match="samples"):
        StationTrack([0.0, 1.0], [0.0, 1.0, 2.0], [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(InputError, match="finite"):
        StationTrack([0.0, math.nan], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    track = _northbound_track(5.0)
    with pytest.raises(InputError, match="leaves the station track"):
        topocentric(MICIUS_1, MICIUS_2, track, np.array([PASS_START - 10.0]))


def test_track_csv_is_read_with_header_aliases(tmp_path: Path) -> None:
    path = tmp_path / "ship.csv"
    path.write_text(
        "# a ship\nunix_s,lat,lon\n0,10.0,20.0\n\n60,10.01,20.02\n# end\n", encoding="utf-8"
    )
    track = read_station_track_csv(path)
    np.testing.assert_array_equal(track.unix_s, [0.0, 60.0])
    np.testing.assert_array_equal(track.altitude_m, [0.0, 0.0])
    assert track.station_at(30.0).latitude_deg == pytest.approx(10.005)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("unix_s,latitude_deg,speed\n0,1,2\n", "unknown column 'speed'"),
        ("unix_s,latitude_deg\n0,1\n", "missing column"),
        ("unix_s,lat,lon\n0,1,2\n10,1\n", r":3: 2 fields"),
        ("unix_s,lat,lon\n0,1,2\n10,north,2\n", ":3: fields must be numbers"),
        ("unix_s,lat,lon\n10,1,2\n0,1,2\n", "increase strictly"),
        ("# only a comment\n", "no header"),
    ],
)
def test_bad_track_csv_names_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=match) as caught:
        read_station_track_csv(path)
    assert str(path) in str(caught.value)


def test_missing_track_file_and_bad_rows() -> None:
    with pytest.raises(InputError, match="file not found"):
        read_station_track_csv("/nonexistent/track.csv")
    with pytest.raises(InputError, match="4 numbers"):
        station_track_from_rows([(0.0, 1.0, 2.0)])
