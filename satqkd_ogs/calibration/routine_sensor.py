"""`beacon-sensor-gain` and `boresight`: the beacon sensor's response and where the quantum
channel looks relative to it, on the bench source.

beacon-sensor-gain: known offsets of the line of sight across the sensor's field, made with the
mount (its encoders are the angle reference; the mirror's own scale is what fsm-response
calibrates), along each axis from the source's null. Per axis the readings are fitted with
reading = offset + g u (1 + c (u / R)^2) where u is the spot's distance from the cell's centre
(a cubic in the known offset whose quadratic term places the centre, where the response is
symmetric), R the field edge (half-way between the last valid and the first invalid reading).
The linear range is where the non-linearity stays under 5 %: R min(1, sqrt(0.05 / |c|)).

boresight: the source nulled on the beacon sensor by the mirror, then a grid of mirror offsets
around the null with the detectors' count rate at each: the centroid of the counts above the
background is where the quantum receiver's field stop is centred. The mirror is moved there and
the beacon sensor read: that reading (made a sky angle by the sensor's calibration when the
station has one) is the boresight offset fine steering then nulls the spot at.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from satqkd_ogs.calibration.bench import (
    CalibrationBench,
    CalibrationError,
    Fitted,
    RoutineResult,
    RoutineSettings,
    mount_sky_offset_urad,
    sky_step_deg,
)
from satqkd_ogs.calibration.fits import fit_linear

__all__ = ["beacon_sensor_gain", "boresight"]

_AXES = ("x", "y")
_LINEARITY_TOLERANCE = 0.05
_SCAN_POINTS = 29
_MIRROR_SETTLE_S = 0.02


def _sensor_axis(
    offsets: np.ndarray, readings: np.ndarray, field: float
) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    """Offset, gain, cubic (and the centre found) of one axis, uncertainties, residuals."""
    t = offsets
    fit = fit_linear(np.stack([np.ones_like(t), t, t * t, t**3], axis=1), readings)

    def physical(p: np.ndarray) -> np.ndarray:
        a0, a1, a2, a3 = p
        centre = a2 / (3.0 * a3) if abs(a3) > 1e-15 else 0.0
        gain = a1 - 3.0 * a3 * centre**2
        offset = a0 - gain * centre - a3 * centre**3
        return np.array([offset, gain, a3 * field**2 / gain, centre])

    values = physical(fit.parameters)
    jacobian = np.zeros((4, 4))
    for k in range(4):
        step = np.zeros(4)
        step[k] = 1e-7 * max(1.0, abs(fit.parameters[k]))
        jacobian[:, k] = (physical(fit.parameters + step) - values) / step[k]
    sigma = np.sqrt(np.maximum(np.diag(jacobian @ fit.covariance @ jacobian.T), 0.0))
    names = ("offset_urad", "gain", "cubic", "centre_urad")
    return (
        dict(zip(names, map(float, values), strict=True)),
        dict(zip(names, map(float, sigma), strict=True)),
        fit.residuals,
    )


async def beacon_sensor_gain(bench: CalibrationBench, settings: RoutineSettings) -> RoutineResult:
    """Control: run beacon-sensor-gain (see the module docstring)."""
    bench.require("beacon-sensor-gain", "gimbal", "beacon")
    assert bench.gimbal is not None
    base = await bench.find_source(settings, null=True)
    reach = 0.65 * bench.atp.acquisition_field_of_view_urad  # 1.3 x the nominal half field
    rows: list[dict[str, Any]] = []
    per_axis: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    edges = []
    for axis in range(2):
        offsets, readings, invalid = [], [], []
        for value in np.linspace(-reach, reach, _SCAN_POINTS):
            step = [0.0, 0.0]
            step[axis] = float(value)
            daz, del_ = sky_step_deg(step[0], step[1], base[1])
            encoder = await bench.move_mount(base[0] + daz, base[1] + del_, settings.settle_s)
            moved = mount_sky_offset_urad(*encoder, *base)[axis]
            x, y, n = await bench.spot(settings.spot_reads, settings.spot_period_s)
            rows.append(
                {
                    "axis": _AXES[axis],
                    "spot_offset_urad": -moved,
                    "x_urad": x,
                    "y_urad": y,
                    "valid_reads": n,
                }
            )
            if n == settings.spot_reads:
                offsets.append(-moved)  # the spot moves opposite to the line of sight
                readings.append((x, y)[axis])
            else:
                invalid.append(-moved)
        if len(offsets) < 8:
            raise CalibrationError(
                "fewer than 8 valid readings across the field: is the source bright enough?"
            )
        low, high = min(offsets), max(offsets)
        below = [v for v in invalid if v < low]
        above = [v for v in invalid if v > high]
        edges.append(0.5 * (low + max(below)) if below else low)
        edges.append(0.5 * (high + min(above)) if above else high)
        per_axis[_AXES[axis]] = (np.array(offsets), np.array(readings))
    await bench.gimbal.move_to(*base)
    field = float(np.mean(np.abs(edges)))
    fitted: dict[str, Fitted] = {}
    section: dict[str, Any] = {
        "gain": [],
        "offset_urad": [],
        "cubic": [],
        "field_urad": round(field, 3),
    }
    residual_rms = {}
    linear = []
    for axis in _AXES:
        offsets, readings = per_axis[axis]
        values, sigmas, residuals = _sensor_axis(offsets, readings, field)
        for name in ("gain", "offset_urad", "cubic"):
            unit = "urad" if name == "offset_urad" else "1"
            fitted[f"{name.removesuffix('_urad')}_{axis}" + ("_urad" if unit == "urad" else "")] = (
                Fitted(values[name], sigmas[name], unit)
            )
            section[name].append(round(values[name], 6))
        cubic = abs(values["cubic"])
        linear.append(
            field * min(1.0, math.sqrt(_LINEARITY_TOLERANCE / cubic)) if cubic > 0 else field
        )
        residual_rms[f"reading_{axis}_urad"] = float(np.sqrt(np.mean(residuals**2)))
    section["linear_range_urad"] = round(min(linear), 3)
    fitted["linear_range_urad"] = Fitted(min(linear), 0.0, "urad")
    fitted["field_urad"] = Fitted(field, float(np.std(np.abs(edges))), "urad")
    return RoutineResult(
        routine="beacon-sensor-gain",
        section_name="beacon_sensor",
        section=section,
        fitted=fitted,
        residual_rms=residual_rms,
        measurements={"scan": rows},
    )


async def _null_with_mirror(
    bench: CalibrationBench, settings: RoutineSettings
) -> tuple[float, float]:
    """The mirror command (sky urad) that nulls the source on the beacon sensor."""
    assert bench.fsm is not None
    prior = bench.prior
    command = (0.0, 0.0)
    for _ in range(40):
        x, y, n = await bench.spot(settings.spot_reads, settings.spot_period_s)
        if n == 0:
            raise CalibrationError("no source in the beacon sensor's field: point at it first")
        if math.hypot(x, y) < 0.5:
            return command
        command = (command[0] + 0.8 * x, command[1] + 0.8 * y)
        mirror = prior.mirror_command(*command) if prior is not None else command
        await bench.fsm.move_to(*mirror)
        await bench.wait(_MIRROR_SETTLE_S)
    raise CalibrationError("the mirror did not null the source in 40 steps")


async def boresight(bench: CalibrationBench, settings: RoutineSettings) -> RoutineResult:
    """Control: run boresight (see the module docstring)."""
    bench.require("boresight", "fsm", "beacon", "detectors")
    assert bench.fsm is not None and bench.detectors is not None
    if bench.gimbal is not None:
        await bench.find_source(settings, null=True)
    else:
        await bench.centre_mirror()
    null = await _null_with_mirror(bench, settings)
    half, step = settings.scan_half_width_urad, settings.scan_step_urad
    grid = np.arange(-half, half + 0.5 * step, step)
    rows: list[dict[str, float]] = []
    await bench.detectors_on()
    try:
        rows = await _scan(bench, settings, null, grid)
    finally:
        await bench.detectors_off()
    return await _boresight_from_scan(bench, settings, null, rows, half)


async def _scan(
    bench: CalibrationBench, settings: RoutineSettings, null: tuple[float, float], grid: np.ndarray
) -> list[dict[str, float]]:
    """Count rates over the grid of mirror offsets around the null."""
    assert bench.fsm is not None and bench.detectors is not None
    prior = bench.prior
    rows: list[dict[str, float]] = []
    for dy in grid:
        for dx in grid:
            command = (null[0] + float(dx), null[1] + float(dy))
            await bench.fsm.move_to(
                *(prior.mirror_command(*command) if prior is not None else command)
            )
            await bench.wait(settings.count_dwell_s)
            counts = 0.0
            for channel in range(1, bench.detector_channels + 1):
                counts += await bench.detectors.count_rate(channel)
            rows.append({"dx_urad": float(dx), "dy_urad": float(dy), "counts_per_s": counts})
    return rows


async def _boresight_from_scan(
    bench: CalibrationBench,
    settings: RoutineSettings,
    null: tuple[float, float],
    rows: list[dict[str, float]],
    half: float,
) -> RoutineResult:
    """The count-rate centroid, the beacon reading there, the result."""
    assert bench.fsm is not None
    prior = bench.prior
    counts = np.array([r["counts_per_s"] for r in rows])
    dx = np.array([r["dx_urad"] for r in rows])
    dy = np.array([r["dy_urad"] for r in rows])
    edge = (np.abs(dx) >= half - 1e-9) | (np.abs(dy) >= half - 1e-9)
    background = float(np.median(counts[edge]))
    weight = np.maximum(counts - background, 0.0)
    if weight.sum() <= 0 or counts.max() < background + 10.0 * math.sqrt(max(background, 1.0)):
        raise CalibrationError(
            "no light through the quantum receiver during the scan: is the source on?"
        )
    if float(np.sum(weight[edge])) > 0.05 * float(weight.sum()):
        raise CalibrationError("the coupling profile reaches the scan's edge: widen the scan")
    centre = (float(weight @ dx / weight.sum()), float(weight @ dy / weight.sum()))
    # Poisson counts (1 s) and the background's scatter weigh each point
    variance = counts + float(np.var(counts[edge]))
    # plus the grid's own: the points on the profile's edge place it to step / sqrt(12) each
    share = weight / weight.max()
    edge_points = max(1, int(np.count_nonzero((share > 0.05) & (share < 0.95))))
    grid_variance = settings.scan_step_urad**2 / 12.0 / edge_points
    centre_sigma = tuple(
        float(
            math.sqrt(
                float(np.sum(((v - c) ** 2) * variance)) / float(weight.sum()) ** 2 + grid_variance
            )
        )
        for v, c in ((dx, centre[0]), (dy, centre[1]))
    )
    peak_command = (null[0] + centre[0], null[1] + centre[1])
    await bench.fsm.move_to(
        *(prior.mirror_command(*peak_command) if prior is not None else peak_command)
    )
    await bench.wait(_MIRROR_SETTLE_S)
    x, y, n = await bench.spot(4 * settings.spot_reads, settings.spot_period_s)
    if n == 0:
        raise CalibrationError("the quantum channel's centre is outside the beacon sensor's field")
    if prior is not None:
        x, y = prior.sensor_to_sky(x, y)
    await bench.fsm.move_to(*(prior.mirror_command(*null) if prior is not None else null))
    fitted = {
        "offset_x_urad": Fitted(x, centre_sigma[0], "urad"),
        "offset_y_urad": Fitted(y, centre_sigma[1], "urad"),
        "peak_counts_per_s": Fitted(float(counts.max()), math.sqrt(float(counts.max())), "1/s"),
    }
    inside = weight > 0.5 * weight.max()
    return RoutineResult(
        routine="boresight",
        section_name="boresight",
        section={
            "offset_urad": [round(x, 4), round(y, 4)],
            "uncertainty_urad": [round(s, 4) for s in centre_sigma],
            "mirror_centre_urad": [round(v, 4) for v in centre],
        },
        fitted=fitted,
        residual_rms={"half_power_area_points": float(np.count_nonzero(inside))},
        measurements={
            "scan": rows,
            "background_counts_per_s": background,
            "null_mirror_urad": list(null),
        },
    )
