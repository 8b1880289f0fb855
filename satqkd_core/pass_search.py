"""Pass search: the passes of a TLE satellite above a ground station's elevation mask.

Pure geometry on satqkd_core.ephemeris (SGP4, topocentric elevation, the Sun's elevation): the
simulation picks a scenario's pass with it and the operation control centre predicts every
pass of the coming days with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.ephemeris import Station, StationTrack, parse_tle, sun_elevation_deg, topocentric
from satqkd_core.errors import InputError

__all__ = ["NIGHT_SUN_ELEVATION_DEG", "PassWindow", "find_passes", "finite_number"]

NIGHT_SUN_ELEVATION_DEG = -12.0  # nautical twilight: sky background near its night level
_TIME_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class PassWindow:
    """One pass above the minimum elevation; night means Sun below -12 deg at culmination."""

    aos_unix_s: float
    culmination_unix_s: float
    los_unix_s: float
    max_elevation_deg: float
    night: bool


def finite_number(value: object, name: str) -> float:
    """Get: `value` as a float, or an InputError naming `name` if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value!r}")
    return value


def _elevation(
    tle: tuple[str, str], station: Station | StationTrack, unix_s: np.ndarray, dut1: float
) -> np.ndarray:
    return topocentric(tle[0], tle[1], station, unix_s, ut1_minus_utc_s=dut1).elevation_deg


def _refine_crossing(
    tle: tuple[str, str],
    station: Station | StationTrack,
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
    tle: tuple[str, str],
    station: Station | StationTrack,
    dut1: float,
    start_s: float,
    stop_s: float,
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
    station: Station | StationTrack,
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
    start_unix_s = finite_number(start_unix_s, "start_unix_s")
    stop_unix_s = finite_number(stop_unix_s, "stop_unix_s")
    min_elevation_deg = finite_number(min_elevation_deg, "min_elevation_deg")
    step_s = finite_number(step_s, "step_s")
    dut1 = finite_number(ut1_minus_utc_s, "ut1_minus_utc_s")
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
    hidden_peaks: list[float] = []
    for candidate in interior + 1:
        j = int(candidate)
        if elevation[j] >= min_elevation_deg - 5.0:
            t_peak, e_peak = _refine_maximum(
                tle, station, dut1, float(grid[j - 1]), float(grid[j + 1])
            )
            if e_peak >= min_elevation_deg:
                hidden_peaks.append(t_peak)
    if hidden_peaks:
        grid = np.unique(np.concatenate([grid, hidden_peaks]))
        elevation = _elevation(tle, station, grid, dut1)
        above = elevation >= min_elevation_deg

    passes: list[PassWindow] = []
    edges = np.diff(above.astype(np.int8))
    rises = [int(k) for k in np.flatnonzero(edges == 1) + 1]
    sets = [int(k) for k in np.flatnonzero(edges == -1) + 1]
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
            max(aos, float(grid[max(k - 1, 0)])),
            min(los, float(grid[min(k + 1, len(grid) - 1)])),
        )
        if e_peak < elevation[k]:  # peak on the window edge of a clipped pass
            t_peak, e_peak = float(grid[k]), float(elevation[k])
        sun_deg = sun_elevation_deg(station, np.array([t_peak]), ut1_minus_utc_s=dut1)[0]
        night = bool(sun_deg < NIGHT_SUN_ELEVATION_DEG)
        passes.append(PassWindow(float(aos), float(t_peak), float(los), float(e_peak), night))
    return passes
