"""The station's acquisition, tracking and pointing (ATP) and detector control, through drivers.

For each pass plan a `StationAtp` runs from `aos - prepare_lead_s` to `los`:

- prepare: the detectors' temperatures are checked against the limit (waiting for the coolers
  up to QKD start, after which the pass is refused), bias set and gates opened
  (satqkd_ogs.detectors); the gimbal slews to the AOS direction, the mirror is centred with
  its servo closed;
- from AOS, one sample every 1 / fine_loop_rate_hz of clock time, inside
  `clock.participating("ogs atp")` (in simulation, time waits for the loop's I/O): beacon spot
  read; fine steering on it or a spiral scan for it (satqkd_ogs.fine_steering); gimbal
  program track towards the prediction plus offloaded offsets (satqkd_ogs.mount);
  ATP_STATUS telemetry and a detector temperature check once per telemetry period;
- at LOS (or ABORT_PASS): gates off, bias to zero, mirror centred, gimbal parked.

An instrument failing never ends the pass (satqkd_ogs.instrument_guard): counted, reported,
degraded (no beacon: program track only; no mirror: the spot steers the gimbal), retried with
backoff. Control laws, rates and fault behaviour: docs/atp.md; decision record 0008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.interfaces import BeaconSensor, BeaconSpot, FastSteeringMirror, Gimbal, PhotonDetector
from satqkd_core.ephemeris import Station, StationTrack
from satqkd_ogs.atp_record import INSTRUMENT_NAMES, AtpRecord
from satqkd_ogs.detectors import DetectorControl, DetectorsNotReady
from satqkd_ogs.fine_steering import FineSteering, FineSteeringGains
from satqkd_ogs.instrument_guard import FAILED, InstrumentGuard
from satqkd_ogs.laser_safety import StationLaserSafety
from satqkd_ogs.mount import MountTracker
from satqkd_ogs.pointing import PassPrediction, PointingSample, SpiralScan
from satqkd_ogs.settings import AtpSettings, DetectorSettings
from satqkd_runtime.clock import Clock

if TYPE_CHECKING:
    from satqkd_ogs.session import PassPlan
    from satqkd_runtime.node import NodeRuntime

__all__ = [
    "INSTRUMENT_NAMES",
    "AtpRecord",
    "AtpSettings",
    "DetectorSettings",
    "DetectorsNotReady",
    "StationAtp",
    "StationInstruments",
]

log = logging.getLogger("satqkd.ogs.atp")


@dataclass
class StationInstruments:
    """The station's instruments the daemon drives besides the tagger; each may be absent."""

    gimbal: Gimbal | None = None
    fsm: FastSteeringMirror | None = None
    beacon: BeaconSensor | None = None
    detectors: PhotonDetector | None = None

    @property
    def present(self) -> bool:
        """Get: whether there is any instrument to drive."""
        return any(getattr(self, name) is not None for name in INSTRUMENT_NAMES)


class StationAtp:
    """ATP and detector control of one pass plan (see the module docstring)."""

    def __init__(
        self,
        plan: PassPlan,
        location: Station | StationTrack,
        settings: AtpSettings,
        instruments: StationInstruments,
        clock: Clock,
        runtime: NodeRuntime,
        tagger_lead_s: float,
        fault_counters: dict[str, int] | None = None,
        detectors: DetectorSettings | None = None,
        laser_safety: StationLaserSafety | None = None,
    ) -> None:
        s = settings
        detector_settings = detectors if detectors is not None else DetectorSettings()
        self.plan = plan
        self.settings = settings
        self.instruments = instruments
        self.laser_safety = laser_safety  # the station's uplink laser, if it fires one
        self.clock = clock
        self.runtime = runtime
        self.start_unix_s = plan.aos_unix_s - s.prepare_lead_s
        self.detectors_deadline_unix_s = plan.qkd_start_unix_s - tagger_lead_s
        self.prediction = PassPrediction(
            plan.tle_line1, plan.tle_line2, location, self.start_unix_s, plan.los_unix_s
        )
        self.record = AtpRecord(plan.plan_id, plan.aos_unix_s)
        #: daemon-wide fault counts (housekeeping); the record keeps this pass's own
        self.fault_counters = (
            fault_counters if fault_counters is not None else dict.fromkeys(INSTRUMENT_NAMES, 0)
        )
        self.guard = InstrumentGuard(
            clock,
            self._event,
            s.instrument_retry_s,
            s.instrument_retry_max_s,
            self.record.faults,
            self.fault_counters,
        )
        self.mount = (
            MountTracker(
                instruments.gimbal,
                self.prediction,
                self.guard,
                self._event,
                self.record,
                position_gain_per_s=s.gimbal_position_gain_per_s,
                max_rate_deg_s=s.gimbal_max_rate_deg_s,
                loop_period_s=s.loop_period_s,
                slew_tolerance_deg=s.slew_tolerance_deg,
                calibration=s.calibration_data,
            )
            if instruments.gimbal is not None
            else None
        )
        self.fine = FineSteering(
            instruments.fsm,
            self.mount,
            SpiralScan(
                s.acquisition_field_of_view_urad,
                s.spiral_scan_rate_urad_per_s,
                s.loop_period_s,
                s.initial_pointing_uncertainty_urad,
            ),
            FineSteeringGains(
                s.fsm_integral_gain,
                s.fsm_proportional_gain,
                s.fsm_travel_fraction,
                s.offload_threshold_fraction,
                s.offload_time_constant_s,
                s.offload_settle_s,
                s.gimbal_spot_gain_per_s,
                s.track_lost_after_s,
                s.loop_period_s,
            ),
            self.guard,
            self._event,
            self.record,
            plan.aos_unix_s,
            s.calibration_data,
        )
        self.detectors = (
            DetectorControl(
                instruments.detectors,
                detector_settings.bias_v,
                detector_settings.max_temperature_c,
                detector_settings.poll_s,
                clock,
                self.guard,
                self._event,
                self.record,
            )
            if instruments.detectors is not None
            else None
        )
        #: None once the detectors are ready (or there are none); else why the pass is refused
        self.detectors_verdict: asyncio.Future[str | None]
        if self.detectors is not None:
            self.detectors_verdict = self.detectors.verdict
        else:
            self.detectors_verdict = asyncio.get_running_loop().create_future()
            self.detectors_verdict.set_result(None)
        self._stop = asyncio.Event()
        self._mode = "waiting"
        self._spot: BeaconSpot | None = None
        self._gimbal_deg: tuple[float, float] = (math.nan, math.nan)
        self._predicted: PointingSample | None = None
        self._next_status_unix_s = -math.inf

    def request_stop(self) -> None:
        """Control: end the pass early (ABORT_PASS): the loop stops at its next sample."""
        self._stop.set()

    async def run(self) -> None:
        """Control: wait for the prepare instant, prepare, track until LOS, make safe."""
        detectors_task: asyncio.Task[None] | None = None
        try:
            await self.clock.sleep_until(self.start_unix_s)
            if self.detectors is not None and not self._stop.is_set():
                detectors_task = asyncio.create_task(
                    self.detectors.prepare(self.detectors_deadline_unix_s, self._stop)
                )
            with self.clock.participating("ogs atp"):
                try:
                    await self._loop()
                finally:
                    if detectors_task is not None:
                        await _finish(detectors_task)
                    await self._make_safe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the daemon must outlive a bug here; it is reported
            log.exception("plan %d: ATP controller failed", self.plan.plan_id)
            await self._event("INSTRUMENT_ERROR", f"ATP controller stopped: {exc}")
        finally:
            if not self.detectors_verdict.done():
                self.detectors_verdict.set_result("ATP stopped before QKD start")
            self.record.finished = True

    async def _loop(self) -> None:
        period = self.settings.loop_period_s
        sample = 0
        next_overrun_event = -math.inf
        while not self._stop.is_set():
            deadline = self.start_unix_s + sample * period
            if deadline > self.plan.los_unix_s:
                # the last sample's commands hold until LOS: made safe at the last sample, up
                # to a period early, the mount would park and the mirror centre while the
                # beacon is still in view (and every truth sample there counts a slew)
                await self.clock.sleep_until(self.plan.los_unix_s)
                break
            await self.clock.sleep_until(deadline)
            now = self.clock.now_unix_s()
            if self._stop.is_set():
                break
            # only real time judges lateness (a simulation moves time without waiting)
            if self.clock.judges_overruns and sample > 0 and now - deadline > period:
                self.record.overruns += 1
                if now >= next_overrun_event:
                    next_overrun_event = now + self.settings.telemetry_period_s
                    await self._event("LOOP_OVERRUN", f"ATP loop {now - deadline:.3f} s late")
            if now < self.plan.aos_unix_s:
                await self._prepare_sample()
            else:
                await self._track_sample(now)
            await self._every_period(now)
            if self.laser_safety is not None:  # emission decided every sample (laser_safety.py)
                if now < self.plan.aos_unix_s:
                    await self.laser_safety.off(now, "before AOS")
                else:
                    await self.laser_safety.update(now, self._gimbal_deg, self.fine.locked)
            self._append_sample(now)
            # samples missed (late start, slow instrument) are skipped, not replayed
            sample = max(sample + 1, int((self.clock.now_unix_s() - self.start_unix_s) / period))

    async def _setup(self) -> None:
        """Control: travel, branch and slew of the mount; the mirror centred (until done)."""
        plan = self.plan
        if self.mount is not None and not self.mount.ready:
            windows = [
                (plan.qkd_start_unix_s, plan.qkd_stop_unix_s),
                (plan.aos_unix_s, plan.los_unix_s),
            ]
            first = max(plan.aos_unix_s, self.clock.now_unix_s())
            await self.mount.setup(windows, first)
        await self.fine.setup()

    async def _prepare_sample(self) -> None:
        """Before AOS: set up, then watch the slew to the AOS direction."""
        self._spot = None
        await self._setup()
        self._predicted = self.prediction.at(self.plan.aos_unix_s)
        if self.mount is None or self.mount.slew_target is None:
            self._mode = "waiting"
            return
        position = await self.mount.watch_slew()
        if position is not None:
            self._gimbal_deg = position
        self._mode = "waiting" if self.mount.arrived else "slewing"

    async def _track_sample(self, now: float) -> None:
        """From AOS: spot, fine steering (or scan), then program track of the mount."""
        await self._setup()
        mount = self.mount
        if mount is not None and mount.slew_target is not None and not mount.arrived:
            mount.arrived = True  # program track takes over from wherever the slew got to
            await self._event("GIMBAL_LIMIT", "gimbal not at the AOS direction by AOS")
        prediction = self.prediction.at(now)
        self._predicted = prediction
        self._spot = await self._read_spot()
        await self.fine.step(now, self._spot, prediction.el_deg)
        self._mode = self.fine.mode
        if mount is not None:
            position = await mount.track(prediction)
            if position is not None:
                self._gimbal_deg = position

    async def _read_spot(self) -> BeaconSpot | None:
        beacon = self.instruments.beacon
        if beacon is None:
            return None
        spot = await self.guard.call("beacon", beacon.read_spot)
        return None if spot is FAILED else spot

    async def _every_period(self, now: float) -> None:
        """Once per telemetry period: detector temperatures (while biased), ATP_STATUS."""
        if now < self._next_status_unix_s:
            return
        self._next_status_unix_s = now + self.settings.telemetry_period_s
        if self.detectors is not None:
            await self.detectors.watch()
        await self._publish_status()

    async def _publish_status(self) -> None:
        spot, predicted = self._spot, self._predicted
        counts = self.fault_counters
        try:
            await self.runtime.publish_telemetry(
                "ATP_STATUS",
                plan_id=self.plan.plan_id,
                mode=self._mode,
                gimbal_az_deg=self._gimbal_deg[0],
                gimbal_el_deg=self._gimbal_deg[1],
                predicted_az_deg=predicted.az_deg if predicted else math.nan,
                predicted_el_deg=predicted.el_deg if predicted else math.nan,
                fsm_tip_urad=self.fine.command[0],
                fsm_tilt_urad=self.fine.command[1],
                spot_x_urad=spot.x_urad if spot else math.nan,
                spot_y_urad=spot.y_urad if spot else math.nan,
                spot_valid=bool(spot.valid) if spot else False,
                power_nw=spot.power_nw if spot else math.nan,
                max_detector_temperature_c=(
                    self.detectors.warmest_c if self.detectors is not None else math.nan
                ),
                gimbal_faults=counts.get("gimbal", 0),
                fsm_faults=counts.get("fsm", 0),
                beacon_faults=counts.get("beacon", 0),
                detector_faults=counts.get("detectors", 0),
            )
        except Exception as exc:  # telemetry is best effort; the loop goes on
            log.warning("plan %d: ATP_STATUS not published: %s", self.plan.plan_id, exc)

    def _append_sample(self, now: float) -> None:
        values = {"gimbal_az_deg": self._gimbal_deg[0], "gimbal_el_deg": self._gimbal_deg[1]}
        if self.fine.law is not None:
            values["fsm_tip_urad"], values["fsm_tilt_urad"] = self.fine.command
        if self._predicted is not None:
            offset = self.mount.offset_deg if self.mount is not None else (0.0, 0.0)
            values["predicted_az_deg"] = self._predicted.az_deg + offset[0]
            values["predicted_el_deg"] = self._predicted.el_deg + offset[1]
        self.record.append(now, self._mode, self._spot, **values)
        self._gimbal_deg = (math.nan, math.nan)

    async def _make_safe(self) -> None:
        """Laser off, gates off and bias to zero, mirror centred, gimbal halted and parked."""
        self._mode = "parked"
        if self.laser_safety is not None:
            await self.laser_safety.off(self.clock.now_unix_s(), "ATP ended")
        if self.detectors is not None:
            await self.detectors.switch_off()
        await self.fine.centre()
        if self.mount is not None:
            await self.mount.park(self.settings.park_az_deg, self.settings.park_el_deg)
        await self._publish_status()

    async def _event(self, name: str, text: str) -> None:
        try:
            await self.runtime.emit_event(name, f"plan {self.plan.plan_id}: {text}")
        except Exception:  # the bus reconnects on its own; a lost event must not stop ATP
            log.warning("plan %d: event %s not published: %s", self.plan.plan_id, name, text)


async def _finish(task: asyncio.Task[None]) -> None:
    """Control: end the detectors' preparation if still running (the pass is over)."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
