"""The bright-star catalogue shipped with the station (data/bright_stars.csv: Hipparcos J2000.0
positions and proper motions, ESA SP-1200, CDS I/239) and where each star appears from a
station: its apparent direction, precessed and nutated to the date, with annual aberration,
in the station's east-north-up frame, optionally refracted.

Frames and time come from Skyfield (IAU 2000 precession-nutation and Earth rotation through
`GeographicPosition.rotation_at`, its built-in UT1 and Delta T tables, so no download). The
Earth's barycentric velocity for annual aberration (up to 100 urad) is the derivative of the
low-precision Sun direction (satqkd_core.ephemeris.sun_equatorial_deg) at 1 au: good to the
Earth orbit's eccentricity, 2 %, i.e. 0.4 urad. Diurnal aberration (0.3 urad), parallax of
these stars (< 4 urad for all but Rigil Kentaurus) and polar motion are left out.
Refraction: Bennett's formula as Skyfield gives it (`skyfield.earthlib.refraction`).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from skyfield.api import load, wgs84
from skyfield.earthlib import refraction

from satqkd_core.ephemeris import Station, sun_equatorial_deg
from satqkd_core.errors import InputError

__all__ = ["CatalogueStar", "apparent_star_directions", "bright_stars", "refraction_urad"]

_SPEED_OF_LIGHT_KM_S = 299_792.458
_AU_KM = 149_597_870.7
_MAS_TO_RAD = math.pi / 180.0 / 3.6e6
_JULIAN_YEAR_S = 365.25 * 86400.0
_J2000_UNIX_S = 946_728_000.0  # 2000-01-01T12:00:00 UTC (TT - UTC there is 64 s: < 0.01 mas)


@dataclass(frozen=True)
class CatalogueStar:
    """One catalogue star: J2000.0 ICRS position, proper motion (mu_alpha cos delta, mu_delta),
    visual magnitude."""

    name: str
    ra_deg: float
    dec_deg: float
    pm_ra_mas_yr: float
    pm_dec_mas_yr: float
    vmag: float


@cache
def bright_stars() -> tuple[CatalogueStar, ...]:
    """Get: the shipped catalogue (94 stars brighter than about V = 3.7)."""
    text = resources.files("satqkd_ogs.calibration").joinpath("data/bright_stars.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return tuple(
        CatalogueStar(
            row["name"],
            float(row["ra_deg"]),
            float(row["dec_deg"]),
            float(row["pm_ra_mas_yr"]),
            float(row["pm_dec_mas_yr"]),
            float(row["vmag"]),
        )
        for row in rows
    )


@cache
def _timescale():  # type: ignore[no-untyped-def]
    return load.timescale(builtin=True)


def _icrs_unit_vectors(stars: tuple[CatalogueStar, ...], unix_s: float) -> np.ndarray:
    """(n, 3) ICRS unit vectors at an instant, proper motion applied linearly from J2000.0."""
    years = (unix_s - _J2000_UNIX_S) / _JULIAN_YEAR_S
    ra = np.radians([s.ra_deg for s in stars])
    dec = np.radians([s.dec_deg for s in stars])
    dec = dec + np.array([s.pm_dec_mas_yr for s in stars]) * _MAS_TO_RAD * years
    ra = ra + np.array([s.pm_ra_mas_yr for s in stars]) * _MAS_TO_RAD * years / np.cos(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


def _earth_velocity_over_c(unix_s: float) -> np.ndarray:
    """The Earth's velocity around the Sun over c (equatorial), from the Sun's direction."""
    step = 3600.0
    ra, dec = sun_equatorial_deg(np.array([unix_s - step, unix_s + step]))
    ra, dec = np.radians(ra), np.radians(dec)
    sun = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
    # the Earth sits at -sun (1 au) from the Sun: its velocity is -d(sun)/dt
    velocity_km_s = -(sun[1] - sun[0]) * _AU_KM / (2.0 * step)
    return velocity_km_s / _SPEED_OF_LIGHT_KM_S


def apparent_star_directions(
    stars: tuple[CatalogueStar, ...],
    station: Station,
    unix_s: float,
    *,
    temperature_c: float | None = None,
    pressure_mbar: float | None = None,
) -> np.ndarray:
    """Get: (n, 3) east-north-up unit vectors of the stars seen from `station` at `unix_s`,
    refracted by Bennett's formula when temperature and pressure are given."""
    if not math.isfinite(unix_s):
        raise InputError(f"unix_s must be finite, got {unix_s!r}")
    if not stars:
        return np.zeros((0, 3))
    directions = _icrs_unit_vectors(stars, unix_s) + _earth_velocity_over_c(unix_s)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    t = _timescale().from_datetime(_utc(unix_s))
    site = wgs84.latlon(station.latitude_deg, station.longitude_deg, station.altitude_m)
    rotation = site.rotation_at(t)  # GCRS -> (north, east, up)... as Skyfield's altaz frame
    local = directions @ np.asarray(rotation).T
    north, east, up = local[:, 0], local[:, 1], local[:, 2]
    enu = np.stack([east, north, up], axis=1)
    if temperature_c is None or pressure_mbar is None:
        return enu
    el = np.degrees(np.arcsin(np.clip(up, -1.0, 1.0)))
    az = np.arctan2(east, north)
    el = np.radians(el + refraction(el, temperature_c, pressure_mbar))
    return np.stack([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)], axis=1)


def refraction_urad(el_deg: float, temperature_c: float, pressure_mbar: float) -> float:
    """Get: the refraction (urad) Bennett's formula gives at an apparent elevation."""
    return float(refraction(el_deg, temperature_c, pressure_mbar)) * math.pi / 180.0 * 1e6


def _utc(unix_s: float):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(unix_s, UTC)
