"""`fsm-response` and `tracking-bandwidth`: the fast-steering mirror on the bench source.

fsm-response: the source nulled on the beacon sensor with the mount; the sensor's local scale
measured with mount steps of known size (the mount's encoders are the angle reference: the
sensor is only compared with itself at the same spot positions), then mirror steps of the same
size on each axis: the gain matrix G (sky urad per urad of command, cross-coupling and the
mirror's rotation against the sky included) is -S^-1 M, S the sensor's matrix and M the
readings per command. Then a step on each axis sampled at `mirror_sample_s` (first-order time
constant, 2 % settling time) and a sine sweep (lock-in over whole cycles), the complex responses
fitted with the first-order system as the samples see it (commands held between samples): the
time constant tau and the bandwidth f_c = 1 / (2 pi tau).

tracking-bandwidth: the station's own fine-steering law (satqkd_ogs.pointing.FineSteeringLaw at
`fine_loop_rate_hz` with its gains) closed on the source, a disturbance sine added to the
mirror command: the plant input v = u + d over d is the sensitivity S = 1 / (1 + L). Fitted
to the loop's form S(z) = (z - 1) / (z - 1 + k) (an integrator and one sample of delay, k the
loop gain): the closed-loop (rejection) bandwidth is where |S| = 1 / sqrt 2.
"""

from __future__ import annotations

import cmath
import dataclasses
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
from satqkd_ogs.calibration.fits import first_order_time_constant, fit_linear, lock_in
from satqkd_ogs.pointing import FineSteeringLaw

__all__ = ["fsm_response", "sampled_first_order", "sensitivity_magnitude", "tracking_bandwidth"]

_MIRROR_SETTLE_S = 0.02
_LEVELS = (-1.0, -0.5, 0.0, 0.5, 1.0)
_AXES = ("x", "y")


async def _slopes(
    bench: CalibrationBench, settings: RoutineSettings, move
) -> tuple[np.ndarray, np.ndarray, list]:  # type: ignore[no-untyped-def]
    """(2x2 slope matrix d(reading)/d(input), its uncertainties, rows): readings at inputs of
    -A..A on each input axis; `move(axis, value)` applies an input and returns what it was."""
    slopes, sigmas, rows = np.zeros((2, 2)), np.zeros((2, 2)), []
    amplitude = settings.mirror_step_urad
    for axis in range(2):
        inputs, readings = [], []
        for level in _LEVELS:
            applied = await move(axis, level * amplitude)
            # four times the usual reads: the gain matrix wants the slopes to 0.5 %
            x, y, n = await bench.spot(4 * settings.spot_reads, settings.spot_period_s)
            if n == 0:
                raise CalibrationError("the source left the beacon sensor's field: smaller steps")
            inputs.append(applied)
            readings.append((x, y))
            rows.append(
                {"input_axis": _AXES[axis], "input_urad": applied, "x_urad": x, "y_urad": y}
            )
        await move(axis, 0.0)
        design = np.stack([np.asarray(inputs), np.ones(len(inputs))], axis=1)
        for out in range(2):
            fit = fit_linear(design, np.array([r[out] for r in readings]))
            slopes[out, axis], sigmas[out, axis] = fit.parameters[0], fit.uncertainties[0]
    return slopes, sigmas, rows


def _propagate(function, inputs: list[np.ndarray], sigmas: list[np.ndarray]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """First-order uncertainty of function(*inputs), the inputs' elements independent."""
    centre = function(*inputs)
    variance = np.zeros_like(centre)
    for index, (value, sigma) in enumerate(zip(inputs, sigmas, strict=True)):
        for position in np.ndindex(value.shape):
            step = 1e-6 * max(1.0, abs(value[position]))
            moved = [v.copy() for v in inputs]
            moved[index][position] += step
            variance += ((function(*moved) - centre) / step * sigma[position]) ** 2
    return np.sqrt(variance)


async def _step_response(
    bench: CalibrationBench, settings: RoutineSettings, axis: int, direction: np.ndarray
) -> dict[str, Any]:
    """One step of one axis, sampled: time constant, 2 % settling time, the samples."""
    assert bench.fsm is not None and bench.beacon is not None
    amplitude, dt = settings.mirror_step_urad, settings.mirror_sample_s
    await bench.fsm.move_to(0.0, 0.0)
    await bench.wait(_MIRROR_SETTLE_S)
    before = await bench.spot(settings.spot_reads, dt)
    start = float(np.dot(before[:2], direction))
    command = [0.0, 0.0]
    command[axis] = amplitude
    t0 = bench.clock.now_unix_s()
    await bench.fsm.move_to(*command)
    times, values = [], []
    for k in range(1, 81):
        await bench.clock.sleep_until(t0 + k * dt)
        spot = await bench.beacon.read_spot()
        times.append(bench.clock.now_unix_s() - t0)
        values.append(float(np.dot((spot.x_urad, spot.y_urad), direction)))
    final = float(np.mean(values[-10:]))
    tau, tau_sigma = first_order_time_constant(np.array(times), np.array(values), start, final)
    outside = [
        t for t, v in zip(times, values, strict=True) if abs(v - final) > 0.02 * abs(final - start)
    ]
    await bench.fsm.move_to(0.0, 0.0)
    return {
        "tau_s": tau,
        "tau_sigma_s": tau_sigma,
        "settling_s": max(outside, default=0.0),
        "t_s": times,
        "response_urad": values,
        "start_urad": start,
        "final_urad": final,
    }


async def _sweep(
    bench: CalibrationBench,
    settings: RoutineSettings,
    axis: int,
    direction: np.ndarray,
    static_gain: float,
) -> list[dict[str, float]]:
    """Sine sweep of one axis: |H| and phase per frequency (normalised to the static gain)."""
    assert bench.fsm is not None and bench.beacon is not None
    amplitude = settings.mirror_step_urad
    points = []
    for frequency in settings.sweep_hz:
        # 24 samples a cycle, no faster than the bench can sample
        dt = max(settings.mirror_sample_s, 1.0 / (24.0 * frequency))
        if frequency * dt > 0.25:
            continue  # fewer than 4 samples per cycle
        n = math.ceil((settings.sweep_cycles + 1) / frequency / dt)
        settle = math.ceil(1.0 / frequency / dt)
        t0 = bench.clock.now_unix_s()
        times, commands, values = [], [], []
        for k in range(n):
            t = t0 + k * dt
            await bench.clock.sleep_until(t)
            spot = await bench.beacon.read_spot()
            value = amplitude * math.sin(2.0 * math.pi * frequency * (t - t0))
            command = [0.0, 0.0]
            command[axis] = value
            await bench.fsm.move_to(*command)
            if k >= settle:
                times.append(t - t0)
                commands.append(value)
                values.append(float(np.dot((spot.x_urad, spot.y_urad), direction)))
        t = np.array(times)
        command_amplitude, _ = lock_in(t, np.array(commands), frequency)
        response, sigma = lock_in(t, np.array(values), frequency)
        h = response / (command_amplitude * static_gain)
        points.append(
            {
                "frequency_hz": frequency,
                "sample_s": dt,
                "magnitude": abs(h),
                "phase_deg": math.degrees(cmath.phase(h)),
                "magnitude_sigma": sigma / abs(command_amplitude * static_gain),
            }
        )
    await bench.fsm.move_to(0.0, 0.0)
    return points


def sampled_first_order(frequency_hz: np.ndarray, sample_s: np.ndarray, tau_s: float) -> np.ndarray:
    """Get: the response at the sample instants of a first-order system (time constant tau)
    driven by commands held between samples and read just before each new command:
    H(z) = (1 - a) z^-1 / (1 - a z^-1), a = exp(-dt / tau), exact for a held input."""
    a = np.exp(-np.asarray(sample_s) / tau_s)
    z_inverse = np.exp(-2j * np.pi * np.asarray(frequency_hz) * np.asarray(sample_s))
    return (1.0 - a) * z_inverse / (1.0 - a * z_inverse)


def _bandwidth_from_sweep(points: list[dict[str, float]]) -> tuple[float, float]:
    """f_c = 1 / (2 pi tau) and its uncertainty: tau of the sampled first-order response
    fitted to the measured complex responses (the static gain's own error K left free)."""
    f = np.array([p["frequency_hz"] for p in points])
    dt = np.array([p["sample_s"] for p in points])
    measured = np.array(
        [p["magnitude"] * cmath.exp(1j * math.radians(p["phase_deg"])) for p in points]
    )
    if f.size < 3 or float(np.min(np.abs(measured))) > 0.9:
        raise CalibrationError("the sweep does not reach the mirror's bandwidth: sweep higher")

    def cost(tau: float) -> float:
        model = sampled_first_order(f, dt, tau)
        gain = float(np.real(np.vdot(model, measured)) / np.real(np.vdot(model, model)))
        return float(np.sum(np.abs(measured - gain * model) ** 2))

    taus = np.geomspace(1e-5, 1.0, 2001)
    costs = np.array([cost(t) for t in taus])
    k = int(np.clip(np.argmin(costs), 1, taus.size - 2))
    # parabola through the three best points (in log tau) for the minimum and its curvature
    x = np.log(taus[k - 1 : k + 2])
    c2, c1, _ = np.polyfit(x, costs[k - 1 : k + 2], 2)
    log_tau = -c1 / (2.0 * c2) if c2 > 0 else float(np.log(taus[k]))
    tau = float(np.exp(log_tau))
    dof = max(1, 2 * f.size - 2)
    sigma_log = math.sqrt(max(cost(tau), 1e-30) / dof / c2) if c2 > 0 else 1.0
    fc = 1.0 / (2.0 * math.pi * tau)
    return fc, fc * sigma_log


async def fsm_response(bench: CalibrationBench, settings: RoutineSettings) -> RoutineResult:
    """Control: run fsm-response (see the module docstring)."""
    bench.require("fsm-response", "fsm", "beacon")
    assert bench.fsm is not None
    fsm = bench.fsm
    # steps inside the sensor's linear core (0.3 of its half field): both the mount's and the
    # mirror's steps see the same response there, so its non-linearity cancels in S^-1 M
    amplitude = min(settings.mirror_step_urad, 0.15 * bench.atp.acquisition_field_of_view_urad)
    settings = dataclasses.replace(settings, mirror_step_urad=amplitude)
    if bench.gimbal is not None:
        base = await bench.find_source(settings, null=True)
        gimbal = bench.gimbal

        async def move_mount(axis: int, value: float) -> float:
            step = [0.0, 0.0]
            step[axis] = value
            daz, del_ = sky_step_deg(step[0], step[1], base[1])
            encoder = await bench.move_mount(base[0] + daz, base[1] + del_, settings.settle_s)
            # the spot moves opposite to the line of sight
            return -mount_sky_offset_urad(*encoder, *base)[axis]

        sensor, sensor_sigma, sensor_rows = await _slopes(bench, settings, move_mount)
        await gimbal.move_to(*base)
        reference = "mount encoders"
    else:
        await bench.centre_mirror()
        sensor, sensor_sigma, sensor_rows = np.eye(2), np.zeros((2, 2)), []
        reference = "beacon sensor (no mount on the bench: its scale taken as 1)"

    async def move_mirror(axis: int, value: float) -> float:
        command = [0.0, 0.0]
        command[axis] = value
        await fsm.move_to(*command)
        await bench.wait(_MIRROR_SETTLE_S)
        return value

    readings, readings_sigma, mirror_rows = await _slopes(bench, settings, move_mirror)
    gain = -np.linalg.solve(sensor, readings)
    gain_sigma = _propagate(
        lambda s, m: -np.linalg.solve(s, m), [sensor, readings], [sensor_sigma, readings_sigma]
    )
    steps, sweeps, bandwidths = {}, {}, []
    for axis in range(2):
        column = readings[:, axis]
        direction = column / np.linalg.norm(column)
        steps[_AXES[axis]] = await _step_response(bench, settings, axis, direction)
        sweeps[_AXES[axis]] = await _sweep(
            bench, settings, axis, direction, float(np.linalg.norm(column))
        )
        bandwidths.append(_bandwidth_from_sweep(sweeps[_AXES[axis]]))
    fitted = {
        f"gain_{r}{c}": Fitted(float(gain[i, j]), float(gain_sigma[i, j]), "urad/urad")
        for i, r in enumerate(_AXES)
        for j, c in enumerate(_AXES)
    }
    for axis, (fc, sigma) in zip(_AXES, bandwidths, strict=True):
        fitted[f"bandwidth_{axis}_hz"] = Fitted(fc, sigma, "Hz")
        step = steps[axis]
        fitted[f"time_constant_{axis}_s"] = Fitted(step["tau_s"], step["tau_sigma_s"], "s")
        fitted[f"settling_time_{axis}_s"] = Fitted(
            step["settling_s"], settings.mirror_sample_s, "s"
        )
    residual = float(
        np.sqrt(
            np.mean(
                np.concatenate(
                    [np.asarray(s["response_urad"][-10:]) - s["final_urad"] for s in steps.values()]
                )
                ** 2
            )
        )
    )
    section = {
        "gain_matrix": [[round(float(v), 5) for v in row] for row in gain],
        "gain_matrix_uncertainty": [[round(float(v), 5) for v in row] for row in gain_sigma],
        "bandwidth_hz": round(float(np.mean([b[0] for b in bandwidths])), 3),
        "settling_time_s": round(max(s["settling_s"] for s in steps.values()), 6),
        "reference": reference,
    }
    return RoutineResult(
        routine="fsm-response",
        section_name="fsm",
        section=section,
        fitted=fitted,
        residual_rms={"step_tail_urad": residual},
        measurements={
            "sensor_steps": sensor_rows,
            "mirror_steps": mirror_rows,
            "step_response": steps,
            "sweep": sweeps,
            "sensor_matrix": sensor.tolist(),
        },
    )


def sensitivity_magnitude(frequency_hz: np.ndarray, loop_gain: float, rate_hz: float) -> np.ndarray:
    """Get: |S| of an integrator loop with one sample of delay, S(z) = (z-1) / (z-1+k)."""
    z = np.exp(2j * np.pi * np.asarray(frequency_hz, dtype=np.float64) / rate_hz)
    return np.abs((z - 1.0) / (z - 1.0 + loop_gain))


def _crossing(loop_gain: float, rate_hz: float) -> float:
    """The frequency below Nyquist where |S| reaches 1/sqrt 2 (bisection; |S| rises with f)."""
    low, high = 1e-9 * rate_hz, 0.5 * rate_hz
    if sensitivity_magnitude(np.array([high]), loop_gain, rate_hz)[0] < 1.0 / math.sqrt(2.0):
        return high
    for _ in range(60):
        middle = 0.5 * (low + high)
        if sensitivity_magnitude(np.array([middle]), loop_gain, rate_hz)[0] < 1.0 / math.sqrt(2.0):
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


async def _inject(
    bench: CalibrationBench, settings: RoutineSettings, axis: int, frequency: float
) -> dict[str, float]:
    """One disturbance frequency on one axis with the loop closed: S = V / D."""
    assert bench.fsm is not None and bench.beacon is not None
    atp, prior = bench.atp, bench.prior
    travel = await bench.fsm.travel_range()
    f = atp.fsm_travel_fraction
    law = FineSteeringLaw(
        atp.fsm_integral_gain,
        atp.fsm_proportional_gain,
        (f * travel.tip_min_urad, f * travel.tip_max_urad),
        (f * travel.tilt_min_urad, f * travel.tilt_max_urad),
    )
    period = 1.0 / atp.fine_loop_rate_hz
    settle = math.ceil(max(2.0 / frequency, 20 * period) / period)
    n = settle + math.ceil(settings.sweep_cycles / frequency / period)
    command, previous = (0.0, 0.0), None
    t0 = bench.clock.now_unix_s()
    times, disturbance, plant_input = [], [], []
    for k in range(n):
        t = t0 + k * period
        await bench.clock.sleep_until(t)
        spot = await bench.beacon.read_spot()
        if not spot.valid:
            raise CalibrationError(
                "the source left the beacon sensor's field: a smaller disturbance"
            )
        sky = (
            prior.spot_on_sky(spot.x_urad, spot.y_urad)
            if prior is not None
            else (spot.x_urad, spot.y_urad)
        )
        command = law.update(command, sky, previous)
        previous = sky
        d = settings.disturbance_urad * math.sin(2.0 * math.pi * frequency * (t - t0))
        v = list(command)
        v[axis] += d
        mirror = prior.mirror_command(*v) if prior is not None else tuple(v)
        await bench.fsm.move_to(*mirror)
        if k >= settle:
            times.append(t - t0)
            disturbance.append(d)
            plant_input.append(v[axis])
    t_arr = np.array(times)
    d_amplitude, _ = lock_in(t_arr, np.array(disturbance), frequency)
    v_amplitude, sigma = lock_in(t_arr, np.array(plant_input), frequency)
    s = v_amplitude / d_amplitude
    return {
        "frequency_hz": frequency,
        "magnitude": abs(s),
        "phase_deg": math.degrees(cmath.phase(s)),
        "magnitude_sigma": sigma / abs(d_amplitude),
    }


async def tracking_bandwidth(bench: CalibrationBench, settings: RoutineSettings) -> RoutineResult:
    """Control: run tracking-bandwidth (see the module docstring)."""
    bench.require("tracking-bandwidth", "fsm", "beacon")
    if bench.gimbal is not None:
        await bench.find_source(settings, null=True)
    else:
        await bench.centre_mirror()
    rate = bench.atp.fine_loop_rate_hz
    curves: dict[str, list[dict[str, float]]] = {}
    fitted: dict[str, Fitted] = {}
    residuals = []
    for axis in range(2):
        points = [
            await _inject(bench, settings, axis, fraction * rate)
            for fraction in settings.disturbance_fractions
        ]
        curves[_AXES[axis]] = points
        f = np.array([p["frequency_hz"] for p in points])
        measured = np.array([p["magnitude"] for p in points])
        grid = np.linspace(0.005, 1.995, 3981)
        costs = [float(np.sum((sensitivity_magnitude(f, k, rate) - measured) ** 2)) for k in grid]
        best = float(grid[int(np.argmin(costs))])
        residual = measured - sensitivity_magnitude(f, best, rate)
        slope = (
            sensitivity_magnitude(f, best + 1e-5, rate)
            - sensitivity_magnitude(f, best - 1e-5, rate)
        ) / 2e-5
        dof = max(1, f.size - 1)
        k_sigma = math.sqrt(float(residual @ residual) / dof / max(float(slope @ slope), 1e-30))
        bandwidth = _crossing(best, rate)
        bandwidth_sigma = (
            abs(_crossing(best + k_sigma, rate) - _crossing(best - k_sigma, rate)) / 2.0
        )
        fitted[f"loop_gain_{_AXES[axis]}"] = Fitted(best, k_sigma, "1")
        fitted[f"bandwidth_{_AXES[axis]}_hz"] = Fitted(bandwidth, bandwidth_sigma, "Hz")
        residuals.append(residual)
    section = {
        "bandwidth_hz": round(
            float(np.mean([fitted[f"bandwidth_{a}_hz"].value for a in _AXES])), 4
        ),
        "loop_rate_hz": rate,
        "integral_gain": bench.atp.fsm_integral_gain,
        "loop_gain": [round(fitted[f"loop_gain_{a}"].value, 4) for a in _AXES],
    }
    return RoutineResult(
        routine="tracking-bandwidth",
        section_name="tracking",
        section=section,
        fitted=fitted,
        residual_rms={
            "sensitivity_magnitude": float(np.sqrt(np.mean(np.concatenate(residuals) ** 2)))
        },
        measurements={"sensitivity": curves, "loop_rate_hz": rate},
    )
