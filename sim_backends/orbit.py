"""Orbits as TLEs; the pass search (satqkd_core.pass_search) re-exported for the simulation.

Circular and sun-synchronous orbits are written as TLEs (Satrec.sgp4init + sgp4.exporter), so
the rest of the stack only ever propagates TLEs, real or synthetic, with one SGP4 code path.
"""

from __future__ import annotations

import math
import re
from importlib import resources

import numpy as np
from sgp4.api import WGS72, Satrec
from sgp4.exporter import export_tle

from satqkd_core.ephemeris import parse_tle
from satqkd_core.errors import InputError
from satqkd_core.pass_search import PassWindow, find_passes, finite_number

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


def sun_synchronous_inclination_deg(altitude_km: float) -> float:
    """Get the inclination whose J2 nodal precession is 360 deg per tropical year (circular)."""
    altitude_km = finite_number(altitude_km, "altitude_km")
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
    altitude_km = finite_number(altitude_km, "altitude_km")
    inclination_deg = finite_number(inclination_deg, "inclination_deg")
    raan_deg = finite_number(raan_deg, "raan_deg")
    epoch_unix_s = finite_number(epoch_unix_s, "epoch_unix_s")
    arg_latitude_deg = finite_number(arg_latitude_deg, "arg_latitude_deg")
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
    ltan_hours = finite_number(ltan_hours, "ltan_hours")
    if not 0.0 <= ltan_hours < 24.0:
        raise InputError(f"ltan_hours must be in [0, 24), got {ltan_hours}")
    epoch_unix_s = finite_number(epoch_unix_s, "epoch_unix_s")
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
