"""ATP calibration: what each routine recovers of what the emulated bench hides
(configs/calibration/sim-truth.yaml), and what the fitted pointing model does for a pass.

The five routines run end to end through the drivers against the emulators, in the order a lab
runs them into one directory (beacon-sensor-gain, gimbal-pointing-model, fsm-response,
boresight), tracking-bandwidth apart (it measures the loop as the uncalibrated station runs it).
Figures are the largest error against the injected truth per quantity, and the program track's
true pointing error over 25 s of a pass with and without the fitted model.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "configs/instruments/sim-station.yaml"
STATION = ROOT / "configs/stations/xinglong.yaml"
TRUTH = ROOT / "configs/calibration/sim-truth.yaml"
# A 70-degree pass over Xinglong (tests/ogs/test_atp_controller.py): 30 -> 55 deg elevation
TLE1 = "1 99999U          26335.00000000  .00000000  00000-0  00000+0 0    06"
TLE2 = "2 99999  97.4018  47.3668 0000000   0.0000   0.0000 15.22444802    02"
RISING = 1796134727.421875 + 120.0


async def program_track_error_urad(mount: Any, calibration: Any) -> np.ndarray:
    """The true pointing error (urad, every 0.5 s from AOS + 125 s for 25 s) of the station's
    program track, mount only (the fine loop out of it), on a mount with `mount`'s errors,
    with the station's calibration or without (None)."""
    from drivers.gimbal import PtuGimbal
    from satqkd.atp_calibration_truth import telescope_mount
    from satqkd_core.ephemeris import Station
    from satqkd_ogs.atp import StationAtp, StationInstruments
    from satqkd_ogs.session import PassPlan
    from satqkd_ogs.settings import AtpSettings
    from satqkd_runtime.clock import SimClock
    from satqkd_runtime.node import NodeRuntime
    from sim_backends.sky import ApparentTarget, sky_offset_urad

    class SilentBus:
        async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
            return None

    station = Station(40.3958, 117.5775, 900.0)
    clock = SimClock(RISING - 25.0)
    emulator = telescope_mount(clock, 0.36, 5)
    await emulator.start_memory()
    gimbal = PtuGimbal(
        "gimbal",
        emulator.memory_transport(),
        timeout_s=0.5,
        pan_resolution_arcsec=0.36,
        tilt_resolution_arcsec=0.36,
    )
    await gimbal.connect()
    target = ApparentTarget.from_tle((TLE1, TLE2), station, RISING - 25.0, RISING + 35.0)
    plan = PassPlan(
        1,
        "jinan1",
        "xinglong",
        TLE1,
        TLE2,
        RISING,
        RISING + 30.0,
        RISING + 10.0,
        RISING + 20.0,
        1e8,
    )
    settings = AtpSettings(prepare_lead_s=20.0, calibration_data=calibration)
    runtime = NodeRuntime(SilentBus(), "jinan1", "ogs-xinglong", clock)  # type: ignore[arg-type]
    atp = StationAtp(
        plan,
        station,
        settings,
        StationInstruments(gimbal=gimbal),
        clock,
        runtime,
        tagger_lead_s=1.0,
    )
    task = asyncio.create_task(atp.run())
    await asyncio.sleep(0)
    errors = []
    for t in np.arange(RISING + 5.0, RISING + 30.0, 0.5):
        await clock.advance_to(float(t))
        seen = mount.boresight(*emulator.pointing_deg())
        errors.append(math.hypot(*sky_offset_urad(target.direction(float(t)), seen)))
    await clock.advance_to(RISING + 31.0)
    await asyncio.wait_for(task, 30.0)
    await gimbal.close()
    await emulator.stop()
    return np.array(errors)


def _calibrate(routine: str, out: Path, stars: int) -> float:
    from satqkd.cli import main

    started = time.perf_counter()
    extra = ["--stars", str(stars)] if routine == "gimbal-pointing-model" else []
    with contextlib.redirect_stdout(io.StringIO()):  # the routine's own lines
        status = main(
            [
                "atp",
                "calibrate",
                routine,
                "--bench",
                str(BENCH),
                "--station",
                str(STATION),
                "--truth",
                str(TRUTH),
                "--out",
                str(out),
                *extra,
            ]
        )
    if status != 0:
        raise RuntimeError(f"{routine} failed with status {status}")
    return time.perf_counter() - started


def figures(quick: bool) -> list[dict]:
    """Recovered against injected, per routine; the pass's program track with and without."""
    from satqkd.atp_calibration_truth import load_truth
    from satqkd.config import StationConfig, load_model
    from satqkd_ogs.calibration import load_calibration
    from satqkd_ogs.calibration.routine_mirror import _crossing
    from satqkd_ogs.settings import AtpSettings

    station = load_model(StationConfig, STATION)
    atp = AtpSettings(**{n: getattr(station.atp, n) for n in AtpSettings.__pydantic_fields__})
    truth = load_truth(TRUTH, station, atp, STATION)
    stars = 12 if quick else 24
    params = {"truth": "configs/calibration/sim-truth.yaml", "bench": "sim-station", "stars": stars}
    with tempfile.TemporaryDirectory() as work:
        out, apart = Path(work) / "chain", Path(work) / "tracking"
        wall = {
            r: _calibrate(r, out, stars)
            for r in ("beacon-sensor-gain", "gimbal-pointing-model", "fsm-response", "boresight")
        }
        wall["tracking-bandwidth"] = _calibrate("tracking-bandwidth", apart, stars)
        calibration = load_calibration(out / "calibration.yaml")
        tracking = json.loads((apart / "summary.json").read_text())["fitted"]
    assert calibration.pointing_model and calibration.fsm and calibration.boresight
    assert calibration.beacon_sensor
    mount_error = max(
        abs(calibration.pointing_model.terms_urad[t] - v)
        for t, v in truth.mount_model.tpoint_terms_urad().items()
    )
    injected = np.array(truth.mirror_gain())
    gain_error = float(np.max(np.abs(np.array(calibration.fsm.gain_matrix) - injected)))
    fsm_truth_hz = 1.0 / (2.0 * math.pi * truth.fsm.time_constant_s)
    fsm_error = abs(calibration.fsm.model_extra["bandwidth_hz"] / fsm_truth_hz - 1.0)  # type: ignore[index]
    tracking_error = max(
        abs(
            tracking[f"bandwidth_{name}_hz"]["value"]
            / _crossing(
                atp.fsm_integral_gain * truth.beacon_sensor.gain[k] * injected[k, k],
                atp.fine_loop_rate_hz,
            )
            - 1.0
        )
        for k, name in enumerate("xy")
    )
    boresight_error = math.hypot(
        *np.subtract(calibration.boresight.offset_urad, truth.boresight_urad)
    )
    sensor_error = max(
        abs(calibration.beacon_sensor.gain[k] / truth.beacon_sensor.gain[k] - 1.0) for k in range(2)
    )
    without = asyncio.run(program_track_error_urad(truth.mount_model, None))
    with_model = asyncio.run(program_track_error_urad(truth.mount_model, calibration))
    return [
        {
            "name": "atp_cal_mount_term_max_error_urad",
            "value": float(mount_error),
            "unit": "urad",
            "params": params,
        },
        {
            "name": "atp_cal_mirror_gain_max_error",
            "value": gain_error,
            "unit": "urad/urad",
            "params": params,
        },
        {
            "name": "atp_cal_fsm_bandwidth_error_fraction",
            "value": float(fsm_error),
            "unit": "1",
            "params": {**params, "injected_hz": round(fsm_truth_hz, 3)},
        },
        {
            "name": "atp_cal_tracking_bandwidth_error_fraction",
            "value": float(tracking_error),
            "unit": "1",
            "params": {**params, "loop_rate_hz": atp.fine_loop_rate_hz},
        },
        {
            "name": "atp_cal_boresight_error_urad",
            "value": float(boresight_error),
            "unit": "urad",
            "params": params,
        },
        {
            "name": "atp_cal_sensor_gain_max_error_fraction",
            "value": float(sensor_error),
            "unit": "1",
            "params": params,
        },
        {
            "name": "atp_cal_program_track_rms_without_model_urad",
            "value": float(np.sqrt(np.mean(without**2))),
            "unit": "urad",
            "params": {"window_s": 25},
        },
        {
            "name": "atp_cal_program_track_rms_with_model_urad",
            "value": float(np.sqrt(np.mean(with_model**2))),
            "unit": "urad",
            "params": {"window_s": 25},
        },
        {
            "name": "atp_cal_routines_wall_s",
            "value": float(sum(wall.values())),
            "unit": "s",
            "params": {**params, **{k: round(v, 2) for k, v in wall.items()}},
        },
    ]
