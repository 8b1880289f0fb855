"""Orbits as TLEs and pass search over a ground station.

Circular and sun-synchronous orbits are written as TLEs (Satrec.sgp4init + sgp4.exporter), so
the rest of the stack only ever propagates TLEs, real or synthetic, with one SGP4 code path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np
from sgp4.api import WGS72, Satrec
from sgp4.exporter import export_tle

from satqkd_core.ephemeris import Station, parse_tle, sun_elevation_deg, topocentric
from satqkd_core.errors import InputError

__all__ = [
    "PassWindow",
    "circular_orbit_tle",
    "find_passes",
    "load_sample_tle",
    "sun_synchronous_inclination_deg",
    "sun_synchronous_tle",
]

# Earth constants for the J2 nodal precession (EGM96 / WGS84 values).
_MU_KM3_S2 = 398600.4418
_EARTH_RADIUS_KM = 6378.137
_J2 = 1.08262668e-3
_TROPICAL_YEAR_S = 365.242190 * 86400.0
_SGP4_EPOCH_JD = 2433281.5  # sgp4init epochs count days from 1949-12-31 00:00 UT
_UNIX_EPOCH_JD = 2440587.5
_WGS72_MU_KM3_S2 = 398600.8
_WGS72_RADIUS_KM = 6378.135
_NIGHT_SUN_ELEVATION_DEG = -12.0  # nautical twilight: sky background near its night level
_TIME_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class PassWindow:
    """One pass above the minimum elevation; night means Sun below -12 deg at culmination."""

    aos_unix_s: float
    culmination_unix_s: float
    los_unix_s: float
    max_elevation_deg: float
    night: bool


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value!r}")
    return value


def sun_synchronous_inclination_deg(altitude_km: float) -> float:
    """Get the inclination whose J2 nodal precession is 360 deg per tropical year (circular)."""
    altitude_km = _finite(altitude_km, "altitude_km")
    if not 100.0 <= altitude_km <= 6000.0:
        raise InputError(f"altitude_km must be in [100, 6000], got {altitude_km}")
    a = _EARTH_RADIUS_KM + altitude_km
    n = math.sqrt(_MU_KM3_S2 / a**3)
    # dOmega/dt = -3/2 n J2 (R/a)^2 cos i / (1 - e^2)^2 (Vallado, Fundamentals of Astrodynamics,
    # eq. 9-41), set equal to +2 pi per tropical year.
    cos_i = -(2.0 * math.pi / _TROPICAL_YEAR_S) / (1.5 * n * _J2 * (_EARTH_RADIUS_KM / a) ** 2)
    if not -1.0 <= cos_i <= 1.0:
        raise InputError(f"no sun-synchronous inclination exists at altitude_km={altitude_km}")
    return math.degrees(math.acos(cos_i))


def _make_satrec(
    epoch_unix_s: float,
    mean_motion_rad_min: float,
    inclination_rad: float,
    raan_rad: float,
    arg_latitude_rad: float,
    norad_id: int,
) -> Satrec:
    satrec = Satrec()
    satrec.sgp4init(
        WGS72,
        "i",
        norad_id,
        _UNIX_EPOCH_JD - _SGP4_EPOCH_JD + epoch_unix_s / 86400.0,
        0.0,  # bstar: no drag, the synthetic orbit keeps its altitude over a campaign
        0.0,
        0.0,
        0.0,  # circular
        0.0,  # argument of perigee: undefined for e = 0, the mean anomaly carries the phase
        inclination_rad,
        arg_latitude_rad,
        mean_motion_rad_min,
        raan_rad,
    )
    return satrec


def _mean_orbit_radius_km(satrec: Satrec, mean_motion_rad_min: float) -> float:
    period_min = 2.0 * math.pi / mean_motion_rad_min
    minutes = np.linspace(0.0, period_min, 181)[:-1]
    jd = np.full(minutes.shape, satrec.jdsatepoch)
    fr = satrec.jdsatepochF + minutes / 1440.0
    errors, r_km, _ = satrec.sgp4_array(jd, fr)
    if np.any(errors):
        raise InputError("SGP4 failed while sizing the orbit; check altitude_km")
    return float(np.mean(np.linalg.norm(r_km, axis=1)))


def circular_orbit_tle(
    altitude_km: float,
    inclination_deg: float,
    raan_deg: float,
    epoch_unix_s: float,
    arg_latitude_deg: float = 0.0,
    norad_id: int = 99999,
) -> tuple[str, str]:
    """Get the TLE of a circular orbit whose orbit-mean radius is R_equator + altitude_km."""
    altitude_km = _finite(altitude_km, "altitude_km")
    inclination_deg = _finite(inclination_deg, "inclination_deg")
    raan_deg = _finite(raan_deg, "raan_deg")
    epoch_unix_s = _finite(epoch_unix_s, "epoch_unix_s")
    arg_latitude_deg = _finite(arg_latitude_deg, "arg_latitude_deg")
    if not 150.0 <= altitude_km <= 6000.0:
        raise InputError(f"altitude_km must be in [150, 6000], got {altitude_km}")
    if not 0.0 <= inclination_deg <= 180.0:
        raise InputError(f"inclination_deg must be in [0, 180], got {inclination_deg}")
    if not 0.0 <= epoch_unix_s <= 4102444800.0:  # 1970 .. 2100: TLE years have two digits
        raise InputError(f"epoch_unix_s must be within 1970-2100, got {epoch_unix_s}")
    if isinstance(norad_id, bool) or not isinstance(norad_id, int) or not 1 <= norad_id <= 99999:
        raise InputError(f"norad_id must be an integer in [1, 99999], got {norad_id!r}")

    target_radius_km = _WGS72_RADIUS_KM + altitude_km
    inclination = math.radians(inclination_deg)
    raan = math.radians(raan_deg % 360.0)
    arg_latitude = math.radians(arg_latitude_deg % 360.0)
    # Start from the Keplerian mean motion, then correct the SGP4 mean elements until the
    # propagated orbit-mean radius hits the target (J2 makes them differ by a few km).
    semi_major_km = target_radius_km
    for _ in range(4):
        n_rad_min = math.sqrt(_WGS72_MU_KM3_S2 / semi_major_km**3) * 60.0
        satrec = _make_satrec(epoch_unix_s, n_rad_min, inclination, raan, arg_latitude, norad_id)
        error_km = _mean_orbit_radius_km(satrec, n_rad_min) - target_radius_km
        if abs(error_km) < 1e-3:
            break
        semi_major_km -= error_km
    line1, line2 = export_tle(satrec)
    parse_tle(line1, line2)  # the exporter's output must be a valid TLE
    return line1, line2


def _mean_sun_right_ascension_deg(unix_s: float) -> float:
    # The fictitious mean sun moves along the equator at the Sun's mean longitude
    # (Astronomical Almanac low-precision solar formulae: L = 280.460 + 0.9856474 n).
    n = unix_s / 86400.0 + _UNIX_EPOCH_JD - 2451545.0
    return (280.460 + 0.9856474 * n) % 360.0


def sun_synchronous_tle(
    altitude_km: float,
    ltan_hours: float,
    epoch_unix_s: float,
    arg_latitude_deg: float = 0.0,
    norad_id: int = 99999,
) -> tuple[str, str]:
    """Get the TLE of a circular sun-synchronous orbit from its local time of ascending node."""
    ltan_hours = _finite(ltan_hours, "ltan_hours")
    if not 0.0 <= ltan_hours < 24.0:
        raise InputError(f"ltan_hours must be in [0, 24), got {ltan_hours}")
    epoch_unix_s = _finite(epoch_unix_s, "epoch_unix_s")
    # RAAN = RA(mean sun) + 15 deg/h * (LTAN - 12 h) (Vallado, Fundamentals of Astrodynamics,
    # sun-synchronous orbits; mean local solar time).
    raan_deg = (_mean_sun_right_ascension_deg(epoch_unix_s) + 15.0 * (ltan_hours - 12.0)) % 360.0
    return circular_orbit_tle(
        altitude_km,
        sun_synchronous_inclination_deg(altitude_km),
        raan_deg,
        epoch_unix_s,
        arg_latitude_deg=arg_latitude_deg,
        norad_id=norad_id,
    )


def _elevation(
    tle: tuple[str, str], station: Station, unix_s: np.ndarray, dut1: float
) -> np.ndarray:
    return topocentric(tle[0], tle[1], station, unix_s, ut1_minus_utc_s=dut1).elevation_deg


def _refine_crossing(
    tle: tuple[str, str],
    station: Station,
    dut1: float,
    level_deg: float,
    below_s: float,
    above_s: float,
) -> float:
    """Bisect for the instant elevation crosses level_deg between a below and an above time."""
    while abs(above_s - below_s) > _TIME_TOLERANCE_S:
        middle = 0.5 * (below_s + above_s)
        if _elevation(tle, station, np.array([middle]), dut1)[0] >= level_deg:
            above_s = middle
        else:
            below_s = middle
    return above_s


def _refine_maximum(
    tle: tuple[str, str], station: Station, dut1: float, start_s: float, stop_s: float
) -> tuple[float, float]:
    """Golden-section search for the elevation maximum in [start_s, stop_s]."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = start_s, stop_s
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _elevation(tle, station, np.array([c, d]), dut1)
    while b - a > _TIME_TOLERANCE_S:
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _elevation(tle, station, np.array([c]), dut1)[0]
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _elevation(tle, station, np.array([d]), dut1)[0]
    t = 0.5 * (a + b)
    return t, float(_elevation(tle, station, np.array([t]), dut1)[0])


def find_passes(
    tle_line1: str,
    tle_line2: str,
    station: Station,
    start_unix_s: float,
    stop_unix_s: float,
    min_elevation_deg: float,
    step_s: float = 10.0,
    *,
    ut1_minus_utc_s: float = 0.0,
) -> list[PassWindow]:
    """Get the passes above min_elevation_deg in [start, stop], times refined to < 0.1 s.

    A pass already under way at start (or still under way at stop) is clipped to the window.
    Grazing passes that peak above the threshold between grid points are found by refining
    every grid-local maximum that comes within 5 deg of the threshold. Times are refined to
    0.01 s; their absolute accuracy also needs ut1_minus_utc_s (0.4 s of it moves LOS ~0.1 s).
    """
    parse_tle(tle_line1, tle_line2)
    tle = (tle_line1, tle_line2)
    start_unix_s = _finite(start_unix_s, "start_unix_s")
    stop_unix_s = _finite(stop_unix_s, "stop_unix_s")
    min_elevation_deg = _finite(min_elevation_deg, "min_elevation_deg")
    step_s = _finite(step_s, "step_s")
    dut1 = _finite(ut1_minus_utc_s, "ut1_minus_utc_s")
    if not -1.0 <= dut1 <= 1.0:
        raise InputError(f"ut1_minus_utc_s must be in [-1, 1] s, got {dut1}")
    if stop_unix_s <= start_unix_s:
        raise InputError(
            f"stop_unix_s must be after start_unix_s, got {start_unix_s} .. {stop_unix_s}"
        )
    if not -5.0 <= min_elevation_deg < 90.0:
        raise InputError(f"min_elevation_deg must be in [-5, 90), got {min_elevation_deg}")
    if not 0.1 <= step_s <= 60.0:
        raise InputError(f"step_s must be in [0.1, 60] s, got {step_s}")
    if (stop_unix_s - start_unix_s) / step_s > 5e6:
        raise InputError("the search window holds more than 5e6 steps; use a larger step_s")

    grid = np.arange(start_unix_s, stop_unix_s, step_s)
    grid = np.append(grid, stop_unix_s) if grid[-1] < stop_unix_s else grid
    elevation = _elevation(tle, station, grid, dut1)

    # Grazing passes: a grid-local maximum just under the threshold may hide a peak above it.
    above = elevation >= min_elevation_deg
    interior = np.flatnonzero(
        (elevation[1:-1] >= elevation[:-2]) & (elevation[1:-1] >= elevation[2:]) & ~above[1:-1]
    )
    hidden_peaks = []
    for k in interior + 1:
        if elevation[k] >= min_elevation_deg - 5.0:
            t_peak, e_peak = _refine_maximum(tle, station, dut1, grid[k - 1], grid[k + 1])
            if e_peak >= min_elevation_deg:
                hidden_peaks.append(t_peak)
    if hidden_peaks:
        grid = np.unique(np.concatenate([grid, hidden_peaks]))
        elevation = _elevation(tle, station, grid, dut1)
        above = elevation >= min_elevation_deg

    passes: list[PassWindow] = []
    edges = np.diff(above.astype(np.int8))
    rises = list(np.flatnonzero(edges == 1) + 1)
    sets = list(np.flatnonzero(edges == -1) + 1)
    if above[0]:
        rises.insert(0, 0)
    if above[-1]:
        sets.append(len(grid))
    for rise, fall in zip(rises, sets, strict=True):
        aos = (
            start_unix_s
            if rise == 0
            else _refine_crossing(tle, station, dut1, min_elevation_deg, grid[rise - 1], grid[rise])
        )
        los = (
            stop_unix_s
            if fall == len(grid)
            else _refine_crossing(tle, station, dut1, min_elevation_deg, grid[fall], grid[fall - 1])
        )
        k = rise + int(np.argmax(elevation[rise:fall]))
        t_peak, e_peak = _refine_maximum(
            tle,
            station,
            dut1,
            max(aos, grid[max(k - 1, 0)]),
            min(los, grid[min(k + 1, len(grid) - 1)]),
        )
        if e_peak < elevation[k]:  # peak on the window edge of a clipped pass
            t_peak, e_peak = float(grid[k]), float(elevation[k])
        sun_deg = sun_elevation_deg(station, np.array([t_peak]), ut1_minus_utc_s=dut1)[0]
        night = bool(sun_deg < _NIGHT_SUN_ELEVATION_DEG)
        passes.append(PassWindow(float(aos), float(t_peak), float(los), float(e_peak), night))
    return passes


_SAMPLE_NAME = re.compile(r"^[a-z0-9_]+$")


def load_sample_tle(name: str) -> tuple[str, str]:
    """Get the two TLE lines shipped as sim_backends/data/<name>.tle (checksums verified)."""
    if not isinstance(name, str) or not _SAMPLE_NAME.match(name):
        raise InputError(f"name must match [a-z0-9_]+, got {name!r}")
    resource = resources.files("sim_backends").joinpath("data", f"{name}.tle")
    if not resource.is_file():
        available = sorted(
            p.name[:-4]
            for p in resources.files("sim_backends").joinpath("data").iterdir()
            if p.name.endswith(".tle")
        )
        raise InputError(f"no sample TLE named {name!r}; available: {available}")
    lines = [
        line.rstrip()
        for line in resource.read_text(encoding="ascii").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tle_lines = [line for line in lines if line[:2] in ("1 ", "2 ")]
    if len(tle_lines) != 2:
        raise InputError(f"sample TLE {name!r} must hold exactly one line 1 and one line 2")
    parse_tle(tle_lines[0], tle_lines[1])
    return tle_lines[0], tle_lines[1]
