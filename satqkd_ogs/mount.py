"""Coarse pointing of the station's telescope mount (gimbal) during one pass: slew to the AOS
direction, then program track (rate feed-forward plus position feedback) towards the predicted
direction plus the offsets fine steering hands it, through the station's pointing model when it
has one (satqkd_ogs.calibration); pass points outside the travel are skipped with a
GIMBAL_LIMIT event; park after LOS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from drivers.interfaces import Gimbal, GimbalLimits
from satqkd_ogs.atp_record import AtpRecord
from satqkd_ogs.calibration.calibration_file import StationCalibration
from satqkd_ogs.instrument_guard import FAILED, InstrumentGuard
from satqkd_ogs.pointing import PassPrediction, PointingSample, sky_offset_to_mount_deg


class MountTracker:
    """Drives one gimbal for one pass (angles in degrees, offsets in urad on the sky)."""

    def __init__(
        self,
        gimbal: Gimbal,
        prediction: PassPrediction,
        guard: InstrumentGuard,
        emit_event: Callable[[str, str], Awaitable[None]],
        record: AtpRecord,
        *,
        position_gain_per_s: float,
        max_rate_deg_s: float,
        loop_period_s: float,
        slew_tolerance_deg: float,
        calibration: StationCalibration | None = None,
    ) -> None:
        self.gimbal = gimbal
        #: the station's calibration: its pointing model turns a sky target into encoder angles
        self.calibration = calibration
        self.prediction = prediction
        self.guard = guard
        self.emit_event = emit_event
        self.record = record
        # one sample corrects at most half the position error (discrete-time stability)
        self.position_gain_per_s = min(position_gain_per_s, 0.5 / loop_period_s)
        self.max_rate_deg_s = max_rate_deg_s
        self.loop_period_s = loop_period_s
        self.slew_tolerance_deg = slew_tolerance_deg
        #: (az, el) degrees added to the prediction: offloaded mirror offsets, gimbal scans
        self.offset_deg = (0.0, 0.0)
        self.limits: GimbalLimits | None = None
        self.slew_target: tuple[float, float] | None = None
        self.arrived = False
        self._outside = False
        self._limit_hits_seen = 0

    @property
    def ready(self) -> bool:
        """Get: whether the travel is known (the mount can be driven)."""
        return self.limits is not None

    def usable(self) -> bool:
        """Get: whether the mount can take commands now (known travel, not backing off)."""
        return self.ready and self.guard.available("gimbal")

    def add_offset_urad(self, x_urad: float, y_urad: float, el_deg: float) -> None:
        """Control: move the pointing target by (x, y) urad on the sky."""
        daz, del_ = sky_offset_to_mount_deg(x_urad, y_urad, el_deg)
        self.offset_deg = (self.offset_deg[0] + daz, self.offset_deg[1] + del_)

    async def setup(self, windows: list[tuple[float, float]], first_unix_s: float) -> None:
        """Control: read the travel, pick the azimuth branch keeping most of `windows` inside
        it, and slew to the first reachable pass point from `first_unix_s` (retried by the
        loop while the gimbal does not answer)."""
        limits = await self.guard.call("gimbal", self.gimbal.limits)
        if limits is FAILED:
            return
        self.limits = limits
        branch = self.prediction.best_branch(
            limits.az_min_deg, limits.az_max_deg, limits.el_min_deg, limits.el_max_deg, windows
        )
        self.prediction.set_branch(branch)
        target = self._first_reachable(first_unix_s, windows[-1][1])
        if target is None:
            await self.emit_event("GIMBAL_LIMIT", "no point of the pass is inside the travel")
            return
        if await self.guard.call("gimbal", lambda: self.gimbal.move_to(*target)) is not FAILED:
            self.slew_target = target

    def _first_reachable(
        self, start_unix_s: float, stop_unix_s: float
    ) -> tuple[float, float] | None:
        assert self.limits is not None
        t = start_unix_s
        while t <= stop_unix_s:
            p = self.prediction.at(t)
            az, el = self.encoder_target(p.az_deg, p.el_deg)
            if self.limits.contains(az, el):
                return az, el
            t += self.loop_period_s
        return None

    def encoder_target(self, az_deg: float, el_deg: float) -> tuple[float, float]:
        """Get: the encoder angles that put the true line of sight on (az, el): the station's
        pointing model applied (unchanged without one)."""
        if self.calibration is None:
            return az_deg, el_deg
        return self.calibration.mount_target(az_deg, el_deg)

    async def watch_slew(self) -> tuple[float, float] | None:
        """Measure: the position during the slew (None if unread); marks arrival."""
        position = await self.guard.call("gimbal", self.gimbal.position)
        if position is FAILED:
            return None
        if self.slew_target is not None:
            az, el = self.slew_target
            error = max(abs(position[0] - az), abs(position[1] - el))
            self.arrived = self.arrived or error <= self.slew_tolerance_deg
        return position

    async def track(self, prediction: PointingSample) -> tuple[float, float] | None:
        """Control: one program-track step; returns the position read (None if unread)."""
        if not self.ready:
            return None
        assert self.limits is not None
        await self._report_limit_hits()
        az, el = self.encoder_target(
            prediction.az_deg + self.offset_deg[0], prediction.el_deg + self.offset_deg[1]
        )
        if not self.limits.contains(az, el):
            self.record.gimbal_limit_skips += 1
            if not self._outside:
                self._outside = True
                await self.emit_event(
                    "GIMBAL_LIMIT", f"pass point az={az:.2f} el={el:.2f} deg outside travel"
                )
                await self.guard.call("gimbal", lambda: self.gimbal.set_rate(0.0, 0.0))
            position = await self.guard.call("gimbal", self.gimbal.position)
            return None if position is FAILED else position
        self._outside = False
        position = await self.guard.call("gimbal", self.gimbal.position)
        if position is FAILED:
            return None
        limit, gain = self.max_rate_deg_s, self.position_gain_per_s
        az_rate = min(max(prediction.az_rate_deg_s + gain * (az - position[0]), -limit), limit)
        el_rate = min(max(prediction.el_rate_deg_s + gain * (el - position[1]), -limit), limit)
        await self.guard.call("gimbal", lambda: self.gimbal.set_rate(az_rate, el_rate))
        return position

    async def _report_limit_hits(self) -> None:
        hits = self.gimbal.limit_hits
        if len(hits) > self._limit_hits_seen:
            new = hits[self._limit_hits_seen :]
            self._limit_hits_seen = len(hits)
            await self.emit_event("GIMBAL_LIMIT", f"gimbal ran into its {'/'.join(new)} limit")

    async def park(self, az_deg: float, el_deg: float) -> None:
        """Control: halt, then move to the park position clamped inside the travel (always
        tried, whatever the backoff: the safe state matters more than the retry schedule)."""

        async def park() -> None:
            await self.gimbal.halt()
            limits = self.limits or await self.gimbal.limits()
            az = min(max(az_deg, limits.az_min_deg), limits.az_max_deg)
            # a hair inside: a travel given in counts may round just below 90 deg
            el = min(max(el_deg, limits.el_min_deg), limits.el_max_deg - 1e-3)
            await self.gimbal.move_to(az, el)

        await self.guard.call("gimbal", park, wait=False)
