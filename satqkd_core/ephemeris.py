"""TLE propagation (SGP4) and topocentric pass geometry; low-precision solar position.

Frames: SGP4 gives TEME; TEME -> pseudo-Earth-fixed (PEF) is one rotation by Greenwich mean
sidereal time (IAU 1982, Vallado et al., "Revisiting Spacetrack Report #3", AIAA 2006-6753,
Appendix C). Polar motion (< 20 m at the surface) is ignored, so PEF is used as the Earth-fixed
frame. The station is a WGS84 geodetic point. UT1 - UTC (|.| < 0.9 s) is an optional argument:
leaving it at 0 shifts the Earth's rotation by up to 0.9 s (~0.35 km at mid latitudes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sgp4.api import SGP4_ERRORS, WGS72, Satrec

from satqkd_core.errors import InputError

__all__ = [
    "Geometry",
    "Station",
    "gmst_1982_rad",
    "parse_tle",
    "station_ecef_m",
    "sun_elevation_deg",
    "sun_equatorial_deg",
    "topocentric",
    "unix_to_julian_date",
]

SPEED_OF_LIGHT_M_S = 299_792_458.0
_UNIX_EPOCH_JD = 2440587.5
_SECONDS_PER_DAY = 86400.0
# WGS84 ellipsoid (NIMA TR8350.2).
_WGS84_A_M = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_WGS84_E2 = _WGS84_F * (2.0 - _WGS84_F)
# Earth rotation rate of Vallado's teme2ecef (AIAA 2006-6753 reference code), rad/s.
_EARTH_ROTATION_RAD_S = 7.292115146706979e-5


@dataclass(frozen=True)
class Station:
    """A ground station: WGS84 geodetic latitude/longitude (deg) and height (m)."""

    latitude_deg: float
    longitude_deg: float
    altitude_m: float

    def __post_init__(self) -> None:
        for name in ("latitude_deg", "longitude_deg", "altitude_m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise InputError(f"Station.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise InputError(f"Station.{name} must be finite, got {value!r}")
        if not -90.0 <= self.latitude_deg <= 90.0:
            raise InputError(f"Station.latitude_deg must be in [-90, 90], got {self.latitude_deg}")
        if not -360.0 <= self.longitude_deg <= 360.0:
            raise InputError(
                f"Station.longitude_deg must be in [-360, 360], got {self.longitude_deg}"
            )
        if not -500.0 <= self.altitude_m <= 10_000.0:
            raise InputError(f"Station.altitude_m must be in [-500, 10000], got {self.altitude_m}")


@dataclass(frozen=True)
class Geometry:
    """Satellite-station geometry, one entry per requested instant.

    range_rate_m_s > 0 when the satellite recedes; sat_speed_m_s is the inertial (TEME) orbital
    speed; point_ahead_urad = 2 v_perp / c with v_perp the satellite's velocity relative to the
    station, inertial frame, transverse to the line of sight.
    """

    unix_s: np.ndarray
    range_m: np.ndarray
    range_rate_m_s: np.ndarray
    elevation_deg: np.ndarray
    azimuth_deg: np.ndarray
    sat_speed_m_s: np.ndarray
    point_ahead_urad: np.ndarray


def _tle_checksum(line: str) -> int:
    return sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in line[:68]) % 10


def parse_tle(tle_line1: str, tle_line2: str) -> Satrec:
    """Get an SGP4 record from two TLE lines after checking format and checksums."""
    for number, line in ((1, tle_line1), (2, tle_line2)):
        if not isinstance(line, str):
            raise InputError(f"tle_line{number} must be a string, got {type(line).__name__}")
        stripped = line.rstrip()
        if len(stripped) != 69:
            raise InputError(f"tle_line{number} must have 69 characters, got {len(stripped)}")
        if not stripped.startswith(f"{number} "):
            raise InputError(f"tle_line{number} must start with '{number} '")
        if not stripped[68].isdigit() or int(stripped[68]) != _tle_checksum(stripped):
            raise InputError(
                f"tle_line{number} checksum mismatch: last digit {stripped[68]!r}, "
                f"computed {_tle_checksum(stripped)}"
            )
    if tle_line1[2:7] != tle_line2[2:7]:
        raise InputError(
            f"tle_line1 and tle_line2 name different satellites ({tle_line1[2:7]!r} vs "
            f"{tle_line2[2:7]!r})"
        )
    try:
        return Satrec.twoline2rv(tle_line1.rstrip(), tle_line2.rstrip(), WGS72)
    except ValueError as exc:  # sgp4 raises ValueError on malformed fields
        raise InputError(f"tle_line1/tle_line2 could not be parsed: {exc}") from exc


def _check_times(unix_s: object, name: str = "unix_s") -> np.ndarray:
    arr = np.asarray(unix_s, dtype=np.float64)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite")
    return arr


def _check_dut1(ut1_minus_utc_s: float) -> float:
    value = float(ut1_minus_utc_s)
    if not -1.0 <= value <= 1.0:
        raise InputError(f"ut1_minus_utc_s must be in [-1, 1] s, got {value}")
    return value


def unix_to_julian_date(unix_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Get (whole, fraction) Julian dates of Unix instants; splitting keeps microseconds."""
    days = np.floor(np.asarray(unix_s, dtype=np.float64) / _SECONDS_PER_DAY)
    fraction = (np.asarray(unix_s, dtype=np.float64) - days * _SECONDS_PER_DAY) / _SECONDS_PER_DAY
    return days + _UNIX_EPOCH_JD, fraction


def gmst_1982_rad(jd_ut1_whole: np.ndarray, jd_ut1_fraction: np.ndarray) -> np.ndarray:
    """Get Greenwich mean sidereal time (IAU 1982, as in AIAA 2006-6753 App. C) in radians."""
    t = (jd_ut1_whole - 2451545.0 + jd_ut1_fraction) / 36525.0
    # Aoki et al. 1982 polynomial, seconds of time; the 8640184.812866 T term is the daily part.
    g = 67310.54841 + (8640184.812866 + (0.093104 - 6.2e-6 * t) * t) * t
    turns = (np.mod(jd_ut1_whole, 1.0) + jd_ut1_fraction + np.mod(g / _SECONDS_PER_DAY, 1.0)) % 1.0
    return turns * 2.0 * math.pi


def station_ecef_m(station: Station) -> np.ndarray:
    """Get the station's Earth-fixed position (m) from its WGS84 geodetic coordinates."""
    lat = math.radians(station.latitude_deg)
    lon = math.radians(station.longitude_deg)
    n = _WGS84_A_M / math.sqrt(1.0 - _WGS84_E2 * math.sin(lat) ** 2)
    return np.array(
        [
            (n + station.altitude_m) * math.cos(lat) * math.cos(lon),
            (n + station.altitude_m) * math.cos(lat) * math.sin(lon),
            (n * (1.0 - _WGS84_E2) + station.altitude_m) * math.sin(lat),
        ]
    )


def _enu_rotation(station: Station) -> np.ndarray:
    lat = math.radians(station.latitude_deg)
    lon = math.radians(station.longitude_deg)
    sl, cl = math.sin(lat), math.cos(lat)
    so, co = math.sin(lon), math.cos(lon)
    return np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])


def _rotate_z(angle: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Rotate row vectors (n, 3) by -angle about z: inertial -> Earth-fixed coordinates."""
    c, s = np.cos(angle), np.sin(angle)
    x, y, z = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    return np.stack([c * x + s * y, -s * x + c * y, z], axis=1)


def topocentric(
    tle_line1: str,
    tle_line2: str,
    station: Station,
    unix_s: np.ndarray,
    *,
    ut1_minus_utc_s: float = 0.0,
) -> Geometry:
    """Get range, range rate, elevation, azimuth and point-ahead angle of a TLE satellite."""
    satrec = parse_tle(tle_line1, tle_line2)
    if not isinstance(station, Station):
        raise InputError(f"station must be a Station, got {type(station).__name__}")
    times = _check_times(unix_s)
    dut1 = _check_dut1(ut1_minus_utc_s)
    n = times.shape[0]
    if n == 0:
        empty = np.zeros(0)
        return Geometry(empty, empty, empty, empty, empty, empty, empty)
    jd, fr = unix_to_julian_date(times)
    # SGP4 takes UTC (the TLE epoch is UTC, AIAA 2006-6753); Earth rotation takes UT1.
    errors, r_teme_km, v_teme_km_s = satrec.sgp4_array(jd, fr)
    if np.any(errors):
        first = int(np.flatnonzero(errors)[0])
        raise InputError(
            f"SGP4 failed for this TLE at unix_s={times[first]:.3f}: "
            f"{SGP4_ERRORS.get(int(errors[first]), 'unknown error')}"
        )
    r_teme = r_teme_km * 1000.0
    v_teme = v_teme_km_s * 1000.0
    theta = gmst_1982_rad(jd, fr + dut1 / _SECONDS_PER_DAY)
    r_ecef = _rotate_z(theta, r_teme)
    omega = np.array([0.0, 0.0, _EARTH_ROTATION_RAD_S])
    v_ecef = _rotate_z(theta, v_teme) - np.cross(omega, r_ecef)

    rho = r_ecef - station_ecef_m(station)
    range_m = np.linalg.norm(rho, axis=1)
    line_of_sight = rho / range_m[:, None]
    range_rate = np.einsum("ij,ij->i", line_of_sight, v_ecef)
    enu = line_of_sight @ _enu_rotation(station).T
    elevation = np.degrees(np.arcsin(np.clip(enu[:, 2], -1.0, 1.0)))
    azimuth = np.degrees(np.arctan2(enu[:, 0], enu[:, 1])) % 360.0

    # Relative velocity in the inertial frame: the Earth-fixed one plus omega x rho.
    v_rel_inertial = v_ecef + np.cross(omega, rho)
    v_along = np.einsum("ij,ij->i", line_of_sight, v_rel_inertial)
    v_perp = np.linalg.norm(v_rel_inertial - v_along[:, None] * line_of_sight, axis=1)
    return Geometry(
        unix_s=times.copy(),
        range_m=range_m,
        range_rate_m_s=range_rate,
        elevation_deg=elevation,
        azimuth_deg=azimuth,
        sat_speed_m_s=np.linalg.norm(v_teme, axis=1),
        point_ahead_urad=2.0 * v_perp / SPEED_OF_LIGHT_M_S * 1e6,
    )


def sun_equatorial_deg(unix_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Get the Sun's apparent right ascension and declination (deg), accurate to ~0.01 deg.

    Low-precision formulae of the Astronomical Almanac (section C, "Sun: low precision
    formulas", valid 1950-2050), also Meeus, Astronomical Algorithms, ch. 25.
    """
    times = _check_times(unix_s)
    jd, fr = unix_to_julian_date(times)
    n = (jd - 2451545.0) + fr  # days from J2000.0; TT - UT (~70 s) is far below 0.01 deg
    mean_longitude = np.radians((280.460 + 0.9856474 * n) % 360.0)
    mean_anomaly = np.radians((357.528 + 0.9856003 * n) % 360.0)
    ecliptic_longitude = (
        mean_longitude
        + np.radians(1.915) * np.sin(mean_anomaly)
        + np.radians(0.020) * np.sin(2.0 * mean_anomaly)
    )
    obliquity = np.radians(23.439 - 4.0e-7 * n)
    right_ascension = np.arctan2(
        np.cos(obliquity) * np.sin(ecliptic_longitude), np.cos(ecliptic_longitude)
    )
    declination = np.arcsin(np.sin(obliquity) * np.sin(ecliptic_longitude))
    return np.degrees(right_ascension) % 360.0, np.degrees(declination)


def sun_elevation_deg(
    station: Station, unix_s: np.ndarray, *, ut1_minus_utc_s: float = 0.0
) -> np.ndarray:
    """Get the Sun's geometric elevation (deg, no refraction) seen from the station."""
    if not isinstance(station, Station):
        raise InputError(f"station must be a Station, got {type(station).__name__}")
    times = _check_times(unix_s)
    dut1 = _check_dut1(ut1_minus_utc_s)
    right_ascension, declination = sun_equatorial_deg(times)
    jd, fr = unix_to_julian_date(times)
    hour_angle = gmst_1982_rad(jd, fr + dut1 / _SECONDS_PER_DAY) + math.radians(
        station.longitude_deg
    )
    hour_angle = hour_angle - np.radians(right_ascension)
    # Geodetic latitude as for the satellite; the Sun's parallax (8.8 arcsec) is ignored.
    lat = math.radians(station.latitude_deg)
    dec = np.radians(declination)
    sin_elevation = math.sin(lat) * np.sin(dec) + math.cos(lat) * np.cos(dec) * np.cos(hour_angle)
    return np.degrees(np.arcsin(np.clip(sin_elevation, -1.0, 1.0)))
