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
    "StationTrack",
    "gmst_1982_rad",
    "parse_tle",
    "polarisation_frame_rotation_deg",
    "station_ecef_m",
    "sun_elevation_deg",
    "sun_equatorial_deg",
    "topocentric",
    "unix_to_julian_date",
    "wrap_polarisation_angle_deg",
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
# Half-step of the central difference that gives a moving station's velocity.
_TRACK_DIFFERENCE_S = 1e-3
# A track instant may fall this far outside the samples (float rounding of grid times).
_TRACK_EDGE_TOLERANCE_S = 1e-6


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


@dataclass(frozen=True, eq=False)
class StationTrack:
    """A moving station (ship, vehicle): WGS84 positions at increasing instants.

    Between samples latitude, longitude (unwrapped across +-180 deg) and height are linear in
    time, i.e. constant geodetic rates per segment; outside the samples there is no position.
    """

    unix_s: np.ndarray
    latitude_deg: np.ndarray
    longitude_deg: np.ndarray
    altitude_m: np.ndarray

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("unix_s", "latitude_deg", "longitude_deg", "altitude_m"):
            try:
                value = np.array(getattr(self, name), dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"StationTrack.{name} must be an array of numbers") from None
            if value.ndim != 1:
                raise InputError(f"StationTrack.{name} must be 1-D, got shape {value.shape}")
            if not np.all(np.isfinite(value)):
                raise InputError(f"StationTrack.{name} must be finite")
            arrays[name] = value
        n = arrays["unix_s"].shape[0]
        if n < 2:
            raise InputError(f"StationTrack needs at least 2 samples, got {n}")
        for name, value in arrays.items():
            if value.shape[0] != n:
                raise InputError(
                    f"StationTrack.{name} has {value.shape[0]} samples, unix_s has {n}"
                )
        steps = np.diff(arrays["unix_s"])
        if np.any(steps <= 0.0):
            k = int(np.flatnonzero(steps <= 0.0)[0])
            raise InputError(
                f"StationTrack.unix_s must increase strictly; sample {k + 1} "
                f"({arrays['unix_s'][k + 1]}) is not after sample {k} ({arrays['unix_s'][k]})"
            )
        if np.any(np.abs(arrays["latitude_deg"]) > 90.0):
            raise InputError("StationTrack.latitude_deg must be in [-90, 90]")
        if np.any(np.abs(arrays["longitude_deg"]) > 360.0):
            raise InputError("StationTrack.longitude_deg must be in [-360, 360]")
        if np.any((arrays["altitude_m"] < -500.0) | (arrays["altitude_m"] > 10_000.0)):
            raise InputError("StationTrack.altitude_m must be in [-500, 10000]")
        # A ship crossing the antimeridian must not sweep the long way round the globe.
        arrays["longitude_deg"] = np.degrees(np.unwrap(np.radians(arrays["longitude_deg"])))
        for name, value in arrays.items():
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def start_unix_s(self) -> float:
        """Get the first sample instant."""
        return float(self.unix_s[0])

    @property
    def stop_unix_s(self) -> float:
        """Get the last sample instant."""
        return float(self.unix_s[-1])

    def geodetic_at(self, unix_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Get (latitude_deg, longitude_deg, altitude_m) at instants inside the track."""
        times = _check_times(unix_s)
        if times.size and (
            times.min() < self.start_unix_s - _TRACK_EDGE_TOLERANCE_S
            or times.max() > self.stop_unix_s + _TRACK_EDGE_TOLERANCE_S
        ):
            raise InputError(
                f"unix_s [{times.min():.3f}, {times.max():.3f}] leaves the station track "
                f"[{self.start_unix_s:.3f}, {self.stop_unix_s:.3f}]"
            )
        return (
            np.interp(times, self.unix_s, self.latitude_deg),
            np.interp(times, self.unix_s, self.longitude_deg),
            np.interp(times, self.unix_s, self.altitude_m),
        )

    def station_at(self, unix_s: float) -> Station:
        """Get the fixed Station the track passes through at one instant."""
        latitude, longitude, altitude = self.geodetic_at(np.array([float(unix_s)]))
        wrapped = (float(longitude[0]) + 180.0) % 360.0 - 180.0
        return Station(float(latitude[0]), wrapped, float(altitude[0]))


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
    gmst_rad: np.ndarray = turns * 2.0 * math.pi
    return gmst_rad


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


def _geodetic_to_ecef_m(
    latitude_deg: np.ndarray, longitude_deg: np.ndarray, altitude_m: np.ndarray
) -> np.ndarray:
    """Vectorised station_ecef_m: (n, 3) Earth-fixed positions of WGS84 points."""
    lat = np.radians(latitude_deg)
    lon = np.radians(longitude_deg)
    n = _WGS84_A_M / np.sqrt(1.0 - _WGS84_E2 * np.sin(lat) ** 2)
    return np.stack(
        [
            (n + altitude_m) * np.cos(lat) * np.cos(lon),
            (n + altitude_m) * np.cos(lat) * np.sin(lon),
            (n * (1.0 - _WGS84_E2) + altitude_m) * np.sin(lat),
        ],
        axis=1,
    )


def _enu_rotations(latitude_deg: np.ndarray, longitude_deg: np.ndarray) -> np.ndarray:
    """Vectorised _enu_rotation: (n, 3, 3) Earth-fixed -> (east, north, up) matrices."""
    lat = np.radians(latitude_deg)
    lon = np.radians(longitude_deg)
    sl, cl, so, co = np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon)
    zero = np.zeros_like(lat)
    return np.stack(
        [
            np.stack([-so, co, zero], axis=1),
            np.stack([-sl * co, -sl * so, cl], axis=1),
            np.stack([cl * co, cl * so, sl], axis=1),
        ],
        axis=1,
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


def _station_frames(
    station: Station | StationTrack, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Get the station's Earth-fixed positions, velocities (n, 3) and ENU rotations (n, 3, 3)."""
    n = times.shape[0]
    if isinstance(station, Station):
        position = np.broadcast_to(station_ecef_m(station), (n, 3))
        rotation = np.broadcast_to(_enu_rotation(station), (n, 3, 3))
        return position, np.zeros((n, 3)), rotation
    latitude, longitude, altitude = station.geodetic_at(times)
    position = _geodetic_to_ecef_m(latitude, longitude, altitude)
    # Central difference of the interpolated track: exact on a segment, the mean of the two
    # neighbouring segments within a millisecond of a sample.
    before = np.clip(times - _TRACK_DIFFERENCE_S, station.start_unix_s, station.stop_unix_s)
    after = np.clip(times + _TRACK_DIFFERENCE_S, station.start_unix_s, station.stop_unix_s)
    velocity = (
        _geodetic_to_ecef_m(*station.geodetic_at(after))
        - _geodetic_to_ecef_m(*station.geodetic_at(before))
    ) / (after - before)[:, None]
    return position, velocity, _enu_rotations(latitude, longitude)


def _relative_vectors(
    tle_line1: str,
    tle_line2: str,
    station: Station | StationTrack,
    times: np.ndarray,
    dut1: float,
) -> tuple[np.ndarray, ...]:
    """Earth-fixed satellite-minus-station position, velocity, satellite position and velocity,
    the orbit normal, and the station's ENU rotations, at each instant."""
    satrec = parse_tle(tle_line1, tle_line2)
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
    orbit_normal = _rotate_z(theta, np.cross(r_teme, v_teme))
    station_position, station_velocity, rotation = _station_frames(station, times)
    rho = r_ecef - station_position
    return rho, v_ecef - station_velocity, v_teme, orbit_normal, rotation


def _check_station(station: object) -> None:
    if not isinstance(station, (Station, StationTrack)):
        raise InputError(f"station must be a Station or StationTrack, got {type(station).__name__}")


def topocentric(
    tle_line1: str,
    tle_line2: str,
    station: Station | StationTrack,
    unix_s: np.ndarray,
    *,
    ut1_minus_utc_s: float = 0.0,
) -> Geometry:
    """Get range, range rate, elevation, azimuth and point-ahead angle of a TLE satellite.

    A StationTrack (a ship or vehicle) moves: its own velocity enters the range rate and the
    point-ahead angle, and its local horizon turns with it.
    """
    parse_tle(tle_line1, tle_line2)
    _check_station(station)
    times = _check_times(unix_s)
    dut1 = _check_dut1(ut1_minus_utc_s)
    n = times.shape[0]
    if n == 0:
        empty = np.zeros(0)
        return Geometry(empty, empty, empty, empty, empty, empty, empty)
    rho, v_rel_ecef, v_teme, _, rotation = _relative_vectors(
        tle_line1, tle_line2, station, times, dut1
    )
    range_m = np.linalg.norm(rho, axis=1)
    line_of_sight = rho / range_m[:, None]
    range_rate = np.einsum("ij,ij->i", line_of_sight, v_rel_ecef)
    if isinstance(station, Station):
        enu = line_of_sight @ _enu_rotation(station).T
    else:
        enu = np.einsum("nij,nj->ni", rotation, line_of_sight)
    elevation = np.degrees(np.arcsin(np.clip(enu[:, 2], -1.0, 1.0)))
    azimuth = np.degrees(np.arctan2(enu[:, 0], enu[:, 1])) % 360.0

    # Relative velocity in the inertial frame: the Earth-fixed one plus omega x rho.
    omega = np.array([0.0, 0.0, _EARTH_ROTATION_RAD_S])
    v_rel_inertial = v_rel_ecef + np.cross(omega, rho)
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


def polarisation_frame_rotation_deg(
    tle_line1: str,
    tle_line2: str,
    station: Station | StationTrack,
    unix_s: np.ndarray,
    *,
    ut1_minus_utc_s: float = 0.0,
) -> np.ndarray:
    """Get the angle (deg, in (-90, 90]) that turns the payload's polarisation frame into the
    receiver's, about the direction of propagation.

    Frames follow Bonato et al., Opt. Express 14, 10050 (2006), sec. 2-3: both telescopes carry
    their polarisation reference with them, and in free space a transverse polarisation vector
    keeps its direction along the straight ray, so the misalignment is the angle between the
    two references projected on the plane normal to the line of sight. Payload reference: the
    orbit normal (a body-pointing payload rolls to keep it transverse); receiver reference:
    the elevation axis of an alt-azimuth mount. A linear polarisation axis is defined modulo
    180 deg, so the azimuth flip of an alt-az mount through the zenith changes nothing.
    """
    parse_tle(tle_line1, tle_line2)
    _check_station(station)
    times = _check_times(unix_s)
    dut1 = _check_dut1(ut1_minus_utc_s)
    if times.shape[0] == 0:
        return np.zeros(0)
    rho, _, _, orbit_normal, rotation = _relative_vectors(
        tle_line1, tle_line2, station, times, dut1
    )
    propagation = -rho / np.linalg.norm(rho, axis=1)[:, None]  # satellite -> station
    payload_ref = orbit_normal - np.einsum("ij,ij->i", orbit_normal, propagation)[:, None] * (
        propagation
    )
    payload_ref /= np.linalg.norm(payload_ref, axis=1)[:, None]
    # Elevation axis: horizontal, normal to the azimuth of the line of sight (towards the
    # satellite, which is -propagation); in ENU it is (cos A, -sin A, 0).
    enu = np.einsum("nij,nj->ni", rotation, -propagation)
    azimuth = np.arctan2(enu[:, 0], enu[:, 1])
    axis_enu = np.stack([np.cos(azimuth), -np.sin(azimuth), np.zeros_like(azimuth)], axis=1)
    receiver_ref = np.einsum("nji,nj->ni", rotation, axis_enu)  # ENU -> Earth-fixed: R^T
    sine = np.einsum("ij,ij->i", propagation, np.cross(payload_ref, receiver_ref))
    cosine = np.einsum("ij,ij->i", payload_ref, receiver_ref)
    return wrap_polarisation_angle_deg(np.degrees(np.arctan2(sine, cosine)))


def wrap_polarisation_angle_deg(angle_deg: np.ndarray) -> np.ndarray:
    """Get angles reduced modulo 180 deg into (-90, 90] (a polarisation axis has no sign)."""
    wrapped = np.mod(np.asarray(angle_deg, dtype=np.float64) + 90.0, 180.0) - 90.0
    return np.where(wrapped == -90.0, 90.0, wrapped)


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
    station: Station | StationTrack, unix_s: np.ndarray, *, ut1_minus_utc_s: float = 0.0
) -> np.ndarray:
    """Get the Sun's geometric elevation (deg, no refraction) seen from the station."""
    _check_station(station)
    times = _check_times(unix_s)
    dut1 = _check_dut1(ut1_minus_utc_s)
    if isinstance(station, StationTrack):
        latitude, longitude, _ = station.geodetic_at(times)
    else:
        latitude = np.full(times.shape, station.latitude_deg)
        longitude = np.full(times.shape, station.longitude_deg)
    right_ascension, declination = sun_equatorial_deg(times)
    jd, fr = unix_to_julian_date(times)
    hour_angle = gmst_1982_rad(jd, fr + dut1 / _SECONDS_PER_DAY) + np.radians(longitude)
    hour_angle = hour_angle - np.radians(right_ascension)
    # Geodetic latitude as for the satellite; the Sun's parallax (8.8 arcsec) is ignored.
    lat = np.radians(latitude)
    dec = np.radians(declination)
    sin_elevation = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(hour_angle)
    elevation_deg: np.ndarray = np.degrees(np.arcsin(np.clip(sin_elevation, -1.0, 1.0)))
    return elevation_deg
