"""Fine pointing of the station during one pass: the beacon spot steers the fast-steering mirror
(PI law), or the mount when there is no working mirror; with no valid spot a spiral scan
searches for it; the mirror's mean offset is offloaded to the mount near its travel limit.
Sign convention (ATP contract): a spot at (x, y) urad is nulled by adding (x, y) to the mirror.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from drivers.interfaces import BeaconSpot, FastSteeringMirror
from satqkd_ogs.atp_record import AtpRecord
from satqkd_ogs.calibration.calibration_file import StationCalibration
from satqkd_ogs.instrument_guard import FAILED, InstrumentGuard
from satqkd_ogs.mount import MountTracker
from satqkd_ogs.pointing import FineSteeringLaw, SpiralScan


@dataclass(frozen=True)
class FineSteeringGains:
    """Gains and timings of fine steering (from AtpSettings)."""

    integral_gain: float
    proportional_gain: float
    travel_fraction: float
    offload_threshold_fraction: float
    offload_time_constant_s: float
    offload_settle_s: float
    gimbal_spot_gain_per_s: float
    track_lost_after_s: float
    loop_period_s: float


class FineSteering:
    """Mirror (or mount) steering on the beacon spot, acquisition scan and offload."""

    def __init__(
        self,
        fsm: FastSteeringMirror | None,
        mount: MountTracker | None,
        spiral: SpiralScan,
        gains: FineSteeringGains,
        guard: InstrumentGuard,
        emit_event: Callable[[str, str], Awaitable[None]],
        record: AtpRecord,
        aos_unix_s: float,
        calibration: StationCalibration | None = None,
    ) -> None:
        self.fsm = fsm
        #: the station's calibration: sensor reading -> sky angle at the boresight offset, sky
        #: command -> mirror axes through the inverse gain matrix
        self.calibration = calibration
        self.mount = mount
        self.spiral = spiral
        self.gains = gains
        self.guard = guard
        self.emit_event = emit_event
        self.record = record
        self.aos_unix_s = aos_unix_s
        self.law: FineSteeringLaw | None = None
        #: the mirror command in urad (held between samples)
        self.command = (0.0, 0.0)
        self.mode = "waiting"
        self.locked = False
        self._previous_spot: tuple[float, float] | None = None
        self._last_valid_unix_s = -math.inf
        self._scan_origin = (0.0, 0.0)
        self._scan_sample = 0
        self._scan_base_offset_deg = (0.0, 0.0)
        self._mean_command = (0.0, 0.0)
        self._next_offload_unix_s = -math.inf

    async def setup(self) -> None:
        """Control: close the mirror's servo, read its travel, centre it (retried by the loop
        while the mirror does not answer)."""
        fsm = self.fsm
        if fsm is None or self.law is not None:
            return

        async def centre():
            await fsm.set_servo(True)
            travel = await fsm.travel_range()
            await fsm.move_to(0.0, 0.0)
            return travel

        travel = await self.guard.call("fsm", centre)
        if travel is FAILED:
            return
        f, g = self.gains.travel_fraction, self.gains
        self.law = FineSteeringLaw(
            g.integral_gain,
            g.proportional_gain,
            (f * travel.tip_min_urad, f * travel.tip_max_urad),
            (f * travel.tilt_min_urad, f * travel.tilt_max_urad),
        )
        self.command = (0.0, 0.0)

    def _mirror_usable(self) -> bool:
        return self.law is not None and self.guard.available("fsm")

    async def step(self, now: float, spot: BeaconSpot | None, el_deg: float) -> None:
        """Control: one sample of fine steering on `spot` (None: no sensor reading)."""
        if spot is not None and spot.valid and self.calibration is not None:
            x, y = self.calibration.spot_on_sky(spot.x_urad, spot.y_urad)
            spot = BeaconSpot(x, y, spot.power_nw, spot.valid, spot.frame)
        if spot is None:
            self.mode = "program-track"
            self._previous_spot = None
            if self.locked:
                await self._lose_track(now, "no beacon reading")
            return
        if spot.valid:
            self._last_valid_unix_s = now
            if not self.locked:
                await self._acquired(now, spot)
            if self._mirror_usable() and await self._steer_mirror(spot):
                self._offload(now, el_deg)
                self.mode = "tracking"
            else:
                self._steer_mount(spot, el_deg)
            self._previous_spot = (spot.x_urad, spot.y_urad)
            return
        self._previous_spot = None
        if self.locked and now - self._last_valid_unix_s < self.gains.track_lost_after_s:
            return  # a dropout shorter than the grace time: hold the command and the mode
        if self.locked:
            await self._lose_track(now, "spot invalid")
        await self._scan(el_deg)

    async def _acquired(self, now: float, spot: BeaconSpot) -> None:
        self.locked = True
        record = self.record
        record.acquisitions += 1
        first = record.acquisition_time_s is None
        if first:
            record.acquisition_time_s = max(0.0, now - self.aos_unix_s)
        what = f"acquired {record.acquisition_time_s:.1f} s after AOS" if first else "reacquired"
        await self.emit_event(
            "ATP_ACQUIRED", f"{what}, spot ({spot.x_urad:.0f}, {spot.y_urad:.0f}) urad"
        )

    async def _lose_track(self, now: float, why: str) -> None:
        self.locked = False
        self._scan_origin = self.command
        self._scan_sample = 0
        self.record.track_losses += 1
        await self.emit_event(
            "ATP_TRACK_LOST",
            f"{why} for {now - self._last_valid_unix_s:.1f} s; scanning from the last pointing",
        )

    async def _steer_mirror(self, spot: BeaconSpot) -> bool:
        """Control: one PI step of the mirror; False if the mirror did not take it."""
        assert self.law is not None and self.fsm is not None
        fsm = self.fsm
        new = self.law.update(self.command, (spot.x_urad, spot.y_urad), self._previous_spot)
        axes = self._mirror_axes(new)
        if await self.guard.call("fsm", lambda: fsm.move_to(*axes)) is FAILED:
            return False
        self.command = new
        return True

    def _mirror_axes(self, sky: tuple[float, float]) -> tuple[float, float]:
        """The mirror command that moves the line of sight by `sky` (urad)."""
        if self.calibration is None:
            return sky
        return self.calibration.mirror_command(*sky)

    def _steer_mount(self, spot: BeaconSpot, el_deg: float) -> None:
        """Control: no working mirror: an integrator on the mount's pointing offset."""
        if self.mount is None:
            self.mode = "tracking"  # nothing can move: the spot is only watched
            return
        gain = self.gains.gimbal_spot_gain_per_s * self.gains.loop_period_s
        self.mount.add_offset_urad(gain * spot.x_urad, gain * spot.y_urad, el_deg)
        self.mode = "gimbal-tracking"

    def _offload(self, now: float, el_deg: float) -> None:
        """Move the mirror's mean offset into the mount's pointing once it nears the travel
        limit; the mirror loop then unwinds as the mount moves (the mirror is not jumped)."""
        assert self.law is not None
        g = self.gains
        alpha = min(1.0, g.loop_period_s / g.offload_time_constant_s)
        mx, my = self._mean_command
        mx += alpha * (self.command[0] - mx)
        my += alpha * (self.command[1] - my)
        self._mean_command = (mx, my)
        if self.mount is None or not self.mount.usable() or now < self._next_offload_unix_s:
            return
        half_travel = 0.5 * min(
            self.law.tip_range_urad[1] - self.law.tip_range_urad[0],
            self.law.tilt_range_urad[1] - self.law.tilt_range_urad[0],
        )
        if math.hypot(mx, my) < g.offload_threshold_fraction * half_travel:
            return
        self.mount.add_offset_urad(mx, my, el_deg)
        self._next_offload_unix_s = now + g.offload_settle_s
        self.record.offloads += 1

    async def _scan(self, el_deg: float) -> None:
        """One spiral step: with the mirror, around its last command; without, by offsets of
        the mount's pointing around where the scan began."""
        self.mode = "acquiring"
        dx, dy = self.spiral.offset(self._scan_sample)
        self._scan_sample += 1
        if self._mirror_usable():
            assert self.law is not None and self.fsm is not None
            fsm = self.fsm
            target = self.law.clamp(self._scan_origin[0] + dx, self._scan_origin[1] + dy)
            axes = self._mirror_axes(target)
            if await self.guard.call("fsm", lambda: fsm.move_to(*axes)) is not FAILED:
                self.command = target
            return
        if self.mount is None:
            return
        if self._scan_sample == 1:
            self._scan_base_offset_deg = self.mount.offset_deg
        base = self._scan_base_offset_deg
        self.mount.offset_deg = base
        self.mount.add_offset_urad(dx, dy, el_deg)

    async def centre(self) -> None:
        """Control: centre the mirror (safe state; always tried)."""
        fsm = self.fsm
        if fsm is None or self.law is None:
            return
        await self.guard.call("fsm", lambda: fsm.move_to(0.0, 0.0), wait=False)
        self.command = (0.0, 0.0)
