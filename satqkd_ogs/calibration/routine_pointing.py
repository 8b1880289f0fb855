"""`gimbal-pointing-model`: the mount pointed at catalogue stars, each star's offset measured on
the beacon (acquisition) sensor, TPOINT-style terms fitted (satqkd_ogs.calibration.pointing_model).

For each star, spread over the sky between `min_el_deg` and `max_el_deg`: slew to where the
refraction-corrected prediction puts it, then follow it at 10 Hz in position steps towards the
prediction plus a correction that nulls the star on the sensor (a spiral search first if the
sensor does not see it). Once nulled (|spot| < 5 urad), each sample gives the pointing error
true line of sight minus encoder = (predicted star - encoder) - spot; ten samples are averaged
per star. Nulling keeps the sensor's own gain and non-linearity out of the measurement; its
offset stays in (the model then points the sensor's null, absorbed in CA and IE) unless the
output directory already holds a beacon-sensor-gain calibration, which refers the readings to
the cell's centre.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drivers.interfaces import BeaconSpot
from satqkd_core.ephemeris import Station
from satqkd_ogs.calibration.bench import (
    CalibrationBench,
    CalibrationError,
    Fitted,
    RoutineResult,
    RoutineSettings,
    mount_sky_offset_urad,
)
from satqkd_ogs.calibration.pointing_model import TERMS, fit_pointing_model
from satqkd_ogs.calibration.stars import CatalogueStar, apparent_star_directions, bright_stars
from satqkd_ogs.pointing import SpiralScan, sky_offset_to_mount_deg

__all__ = ["gimbal_pointing_model", "standard_pressure_mbar"]

_TRACK_PERIOD_S = 0.1
_NULLED_URAD = 5.0
_SAMPLES_PER_STAR = 10
_MAX_SAMPLES_PER_STAR = 900
_NULL_GAIN = 0.7


def standard_pressure_mbar(altitude_m: float) -> float:
    """Get: the pressure of the standard atmosphere at a height (scale height 8.4 km)."""
    return 1013.25 * math.exp(-altitude_m / 8434.0)


def _az_el(direction: np.ndarray) -> tuple[float, float]:
    east, north, up = (float(c) for c in direction)
    return math.degrees(math.atan2(east, north)) % 360.0, math.degrees(
        math.asin(max(-1.0, min(1.0, up)))
    )


def _spread(directions: np.ndarray, wanted: int) -> list[int]:
    """Indices of up to `wanted` directions spread over the sky (farthest-point selection from
    the highest one)."""
    if directions.shape[0] == 0:
        return []
    chosen = [int(np.argmax(directions[:, 2]))]
    closest = directions @ directions[chosen[0]]
    while len(chosen) < min(wanted, directions.shape[0]):
        k = int(np.argmin(closest))
        chosen.append(k)
        closest = np.maximum(closest, directions @ directions[k])
    return chosen


class _StarTrack:
    """One star's predicted (az, el), the azimuth kept on the mount's branch. Directions are
    computed on a 1 s grid and interpolated (a star moves 73 urad/s at most: the chord of one
    second of its arc is 1e-9 rad off it)."""

    def __init__(
        self, star: CatalogueStar, station: Station, settings: RoutineSettings, pressure: float
    ) -> None:
        self.star, self.station, self.settings, self.pressure = star, station, settings, pressure
        self.branch_deg = 0.0
        self._grid: dict[int, np.ndarray] = {}

    def _direction(self, second: int) -> np.ndarray:
        if second not in self._grid:
            self._grid[second] = apparent_star_directions(
                (self.star,),
                self.station,
                float(second),
                temperature_c=self.settings.temperature_c,
                pressure_mbar=self.pressure,
            )[0]
        return self._grid[second]

    def at(self, unix_s: float) -> tuple[float, float]:
        second = math.floor(unix_s)
        f = unix_s - second
        direction = self._direction(second) * (1.0 - f) + self._direction(second + 1) * f
        az, el = _az_el(direction / np.linalg.norm(direction))
        return az + self.branch_deg, el


async def _measure_star(
    bench: CalibrationBench,
    track: _StarTrack,
    start_correction: tuple[float, float],
) -> tuple[tuple[float, float, float, float, int] | None, tuple[float, float]]:
    """Encoder (az, el) and mean pointing error (x, y) urad of one star (None if it was not
    found), and the mount correction (deg) that nulled it, starting from `start_correction`."""
    assert bench.gimbal is not None and bench.beacon is not None
    clock = bench.clock
    limits = await bench.gimbal.limits()
    position = await bench.gimbal.position()
    az, el = track.at(clock.now_unix_s())
    turns = [k * 360.0 for k in (-1, 0, 1) if limits.contains(az + k * 360.0, el)]
    if not turns:
        return None, start_correction
    track.branch_deg = min(turns, key=lambda shift: abs(az + shift - position[0]))
    await bench.move_mount(*track.at(clock.now_unix_s() + 1.0), settle_s=0.0)
    spiral = SpiralScan(
        bench.atp.acquisition_field_of_view_urad,
        bench.atp.spiral_scan_rate_urad_per_s,
        _TRACK_PERIOD_S,
        bench.atp.initial_pointing_uncertainty_urad,
    )
    correction, scan_sample, nulled = start_correction, 0, 0
    applied = correction  # the offset (deg) the mount was last commanded to
    errors: list[tuple[float, float]] = []
    encoders: list[tuple[float, float]] = []
    start = clock.now_unix_s()
    for k in range(_MAX_SAMPLES_PER_STAR):
        now = start + k * _TRACK_PERIOD_S
        await clock.sleep_until(now)
        encoder = await bench.gimbal.position()
        spot = await bench.beacon.read_spot()
        predicted = track.at(clock.now_unix_s())
        if spot.valid:
            if bench.prior is not None:  # the cell's centre, not its electrical null
                x, y = bench.prior.sensor_to_sky(spot.x_urad, spot.y_urad)
                spot = BeaconSpot(x, y, spot.power_nw, spot.valid, spot.frame)
            scan_sample = 0
            nulled = nulled + 1 if math.hypot(spot.x_urad, spot.y_urad) < _NULLED_URAD else 0
            if nulled >= 3:
                dx, dy = mount_sky_offset_urad(predicted[0], predicted[1], *encoder)
                errors.append((dx - spot.x_urad, dy - spot.y_urad))
                encoders.append(encoder)
                if len(errors) >= _SAMPLES_PER_STAR:
                    break
            step = sky_offset_to_mount_deg(
                _NULL_GAIN * spot.x_urad, _NULL_GAIN * spot.y_urad, predicted[1]
            )
            # the spot is seen from where the mount was sent (a scan point, perhaps)
            correction = (applied[0] + step[0], applied[1] + step[1])
            applied = correction
        else:
            nulled = 0
            scan_sample += 1
            if scan_sample >= spiral.samples_per_cycle:
                return None, start_correction
            sx, sy = spiral.offset(scan_sample)
            scan = sky_offset_to_mount_deg(sx, sy, predicted[1])
            applied = (correction[0] + scan[0], correction[1] + scan[1])
        ahead = track.at(now + _TRACK_PERIOD_S)
        await bench.gimbal.move_to(ahead[0] + applied[0], ahead[1] + applied[1])
    if len(errors) < _SAMPLES_PER_STAR:
        return None, start_correction
    mean_error = np.mean(np.array(errors), axis=0)
    mean_encoder = np.mean(np.array(encoders), axis=0)
    return (
        float(mean_encoder[0]),
        float(mean_encoder[1]),
        float(mean_error[0]),
        float(mean_error[1]),
        len(errors),
    ), correction


async def gimbal_pointing_model(
    bench: CalibrationBench, settings: RoutineSettings, station: Station
) -> RoutineResult:
    """Control: run the routine (see the module docstring) and fit the model."""
    bench.require("gimbal-pointing-model", "gimbal", "beacon")
    await bench.centre_mirror()
    pressure = settings.pressure_mbar or standard_pressure_mbar(station.altitude_m)
    stars = bright_stars()
    directions = apparent_star_directions(stars, station, bench.clock.now_unix_s())
    low, high = (math.sin(math.radians(v)) for v in (settings.min_el_deg, settings.max_el_deg))
    visible = [k for k in range(len(stars)) if low <= directions[k, 2] <= high]
    picked = [visible[k] for k in _spread(directions[visible], settings.stars)]
    picked.sort(key=lambda k: _az_el(directions[k])[0])
    rows: list[dict[str, Any]] = []
    missed: list[str] = []
    correction = (0.0, 0.0)  # the last star's: the next one's pointing error is alike
    for k in picked:
        track = _StarTrack(stars[k], station, settings, pressure)
        measured, correction = await _measure_star(bench, track, correction)
        if measured is None:
            missed.append(stars[k].name)
            continue
        az, el, dx, dy, n = measured
        rows.append(
            {
                "star": stars[k].name,
                "az_deg": az,
                "el_deg": el,
                "dx_urad": dx,
                "dy_urad": dy,
                "samples": n,
                "unix_s": bench.clock.now_unix_s(),
            }
        )
    if len(rows) < 6:
        raise CalibrationError(
            f"only {len(rows)} of {len(picked)} stars measured (need 6): is it night, and the "
            "mount near its pointing (initial_pointing_uncertainty_urad)?"
        )
    az = np.array([r["az_deg"] for r in rows])
    el = np.array([r["el_deg"] for r in rows])
    fit = fit_pointing_model(
        az, el, np.array([r["dx_urad"] for r in rows]), np.array([r["dy_urad"] for r in rows])
    )
    for row, rx, ry in zip(rows, fit.residual_x_urad, fit.residual_y_urad, strict=True):
        row["residual_x_urad"], row["residual_y_urad"] = float(rx), float(ry)
    fitted = {
        term: Fitted(fit.model.terms_urad[term], fit.uncertainty_urad[term], "urad")
        for term in TERMS
    }
    section = {
        "terms_urad": {t: round(v.value, 3) for t, v in fitted.items()},
        "uncertainty_urad": {t: round(v.uncertainty, 3) for t, v in fitted.items()},
        "residual_rms_urad": round(fit.residual_rms_urad, 3),
        "stars": len(rows),
        "refraction_model": {
            "temperature_c": settings.temperature_c,
            "pressure_mbar": round(pressure, 2),
        },
    }
    return RoutineResult(
        routine="gimbal-pointing-model",
        section_name="pointing_model",
        section=section,
        fitted=fitted,
        residual_rms={"pointing_urad": fit.residual_rms_urad},
        measurements={"stars": rows, "missed": missed},
    )
