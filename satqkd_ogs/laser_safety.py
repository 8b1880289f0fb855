"""The station's laser safety: its uplink beacon (or any laser it fires at the sky) emits only
while every condition holds, checked on every ATP loop sample (decision 0020).

- `below elevation mask`: the mount points at or above `elevation_mask_deg`;
- `keep-out cone`: the mount's direction lies outside every configured keep-out cone
  (aircraft corridors, neighbours' windows);
- `pointing unknown`: the mount's read-back is known (a failed read counts as unknown);
- `tracking lost`: the station tracks the satellite's beacon, or has not acquired it yet this
  pass (the uplink beacon is what the payload acquires first), or `reacquire_after_s` has
  passed since a loss (a new search);
- `ground link lost`: the station's message bus has been connected within `link_timeout_s`;
- `unauthenticated request`: no request to emit without authentication has arrived since the
  last authenticated one.

`StationLaserSafety.update` runs in the ATP loop and switches the laser off on the sample a
condition fails: emission stops within one loop period (1 / fine_loop_rate_hz, 0.1 s at the
default 10 Hz) plus the laser's own disable time of the instant the condition arises. An
unauthenticated request switches it off at once. The payload's controller holds its own
interlock (firmware_shims.laser_interlock); this is the station's, in its daemon.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from satqkd_core.emission_zone import KeepOutCone, zone_violation
from satqkd_core.errors import InputError

__all__ = ["StationKeepOutCone", "StationLaserSafety", "StationLaserSettings", "UplinkLaser"]

log = logging.getLogger("satqkd.ogs.laser_safety")


class UplinkLaser(Protocol):
    """A laser the station fires at the satellite (its uplink beacon)."""

    async def enable(self) -> None:
        """Control: start emitting."""
        ...

    async def disable(self) -> None:
        """Control: stop emitting."""
        ...


#: a cone of the station's sky the beam must not enter (the core's, shared with the payload)
StationKeepOutCone = KeepOutCone


@dataclass(frozen=True)
class StationLaserSettings:
    """The station's allowed zone and timeouts."""

    elevation_mask_deg: float = 10.0
    keep_out_cones: tuple[StationKeepOutCone, ...] = ()
    link_timeout_s: float = 5.0
    reacquire_after_s: float = 5.0

    def __post_init__(self) -> None:
        for name, low, high in (
            ("elevation_mask_deg", 0.0, 90.0),
            ("link_timeout_s", 1e-3, 3600.0),
            ("reacquire_after_s", 0.0, 3600.0),
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise InputError(f"StationLaserSettings.{name} must be in {low:g}..{high:g}")


class StationLaserSafety:
    """Decides, on every ATP sample, whether the station's laser may emit, and drives it."""

    def __init__(
        self,
        laser: UplinkLaser,
        settings: StationLaserSettings,
        link_connected: Callable[[], bool],
        emit_event: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.laser = laser
        self.settings = settings
        self.link_connected = link_connected
        self.emit_event = emit_event
        self.emitting = False
        self.reasons: tuple[str, ...] = ("not started",)
        self.history: list[tuple[float, bool, tuple[str, ...]]] = []
        self.unauthenticated_requests = 0
        self.failures = 0
        self._unauthenticated = False
        self._acquired_once = False
        self._lost_at: float | None = None
        self._link_down_since: float | None = None

    def reasons_now(
        self, now: float, pointing_deg: tuple[float, float] | None, tracking: bool
    ) -> tuple[str, ...]:
        """Get why the laser may not emit now (empty: it may)."""
        s = self.settings
        reasons: list[str] = []
        if pointing_deg is None or not all(math.isfinite(v) for v in pointing_deg):
            reasons.append("pointing unknown")
        else:
            zone = zone_violation(*pointing_deg, s.elevation_mask_deg, s.keep_out_cones)
            if zone.below_elevation_mask:
                reasons.append("below elevation mask")
            if zone.in_keep_out_cone:
                reasons.append("keep-out cone")
        if tracking:
            self._acquired_once, self._lost_at = True, None
        elif self._acquired_once:
            if self._lost_at is None:
                self._lost_at = now
            if now - self._lost_at < s.reacquire_after_s:
                reasons.append("tracking lost")
        if self.link_connected():
            self._link_down_since = None
        else:
            if self._link_down_since is None:
                self._link_down_since = now
            if now - self._link_down_since >= s.link_timeout_s:
                reasons.append("ground link lost")
        if self._unauthenticated:
            reasons.append("unauthenticated request")
        return tuple(reasons)

    async def update(
        self, now: float, pointing_deg: tuple[float, float] | None, tracking: bool
    ) -> tuple[str, ...]:
        """Control: one ATP sample: decide and switch the laser; returns the reasons."""
        self.reasons = self.reasons_now(now, pointing_deg, tracking)
        await self._drive(now, not self.reasons)
        return self.reasons

    async def request_emission(self, now: float, authenticated: bool) -> bool:
        """Control: an operator's request to emit; an unauthenticated one latches the laser off
        at once (until an authenticated request)."""
        if not authenticated:
            self.unauthenticated_requests += 1
            self._unauthenticated = True
            self.reasons = (*self.reasons, "unauthenticated request")
            await self._drive(now, False)
            return False
        self._unauthenticated = False
        return True

    async def off(self, now: float, why: str) -> None:
        """Control: the pass is over (or ATP stopped): laser off."""
        self.reasons = (why,)
        await self._drive(now, False)

    async def _drive(self, now: float, emit: bool) -> None:
        if emit == self.emitting:
            return
        try:
            await (self.laser.enable() if emit else self.laser.disable())
        except Exception as exc:  # the next sample tries again; a failed disable is loud
            self.failures += 1
            log.error("station laser %s failed: %s", "enable" if emit else "disable", exc)
            return
        self.emitting = emit
        self.history.append((now, emit, self.reasons))
        if not emit and self.emit_event is not None:
            await self.emit_event("LASER_SAFETY", "uplink laser off: " + ", ".join(self.reasons))
