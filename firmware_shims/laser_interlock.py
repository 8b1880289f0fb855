"""The payload's laser interlock, in the payload controller firmware (not in the daemon above it).

The quantum source and the downlink beacon may emit only while every condition holds (the
InterlockReason that names it when it fails):

- TRACKING_LOST: the fine-tracking loop is locked on the station's uplink beacon;
- BELOW_ELEVATION_MASK: the station sees the satellite at or above the elevation mask (the
  beam lands on the station, not on the country around it);
- KEEP_OUT_CONE: the satellite's direction from the station lies outside every configured
  keep-out cone (aircraft corridors, neighbours' sites);
- NO_GEOMETRY: the controller knows where the beam points;
- LINK_LOST: a valid telecommand arrived within `link_timeout_s`;
- UNAUTHENTICATED_REQUEST: no request to emit without a valid tag has arrived since the last
  authenticated one.

The controller evaluates the interlock on every tick (`tick_s`, 0.1 s by default) and disables
both lasers on the tick a condition fails: emission stops within one tick plus the hardware's
own disable time of the instant the condition arises (tracking lost: `lost_after_s` of missing
beacon; link lost: `link_timeout_s` of silence). An unauthenticated request to emit disables
them at once, in the handler of that telecommand. Requests to emit are authenticated with
AES-256-CMAC (NIST SP 800-38B) under the controller's emission key over the function, the first
pulse instant and a counter that must grow (no replay): `emission_request_tag`, from
`satqkd_runtime.emission_auth`, which the payload computer's driver signs with too. With an
`EmissionWatermark` (the controller's key store) the highest accepted counter is written durably
before the request is accepted, so a restarted controller still refuses a replayed request.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass

from satqkd_core.emission_zone import KeepOutCone, zone_violation
from satqkd_core.errors import InputError
from satqkd_core.payload_icd import FunctionId, InterlockReason
from satqkd_runtime.emission_auth import EmissionWatermark, emission_request_tag
from satqkd_runtime.keystore import KeyStoreError

__all__ = [
    "BeamGeometry",
    "InterlockSettings",
    "KeepOutCone",
    "LaserInterlock",
    "emission_request_tag",
]

EMISSION_KEY_BYTES = 32


def _finite(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(f"{name} must be in {low:g}..{high:g}, got {value}")
    return value


@dataclass(frozen=True)
class BeamGeometry:
    """Where the beam goes: the satellite's direction seen from the station (deg)."""

    station_azimuth_deg: float
    station_elevation_deg: float


@dataclass(frozen=True)
class InterlockSettings:
    """The allowed zone and the timeouts of the payload's laser interlock."""

    elevation_mask_deg: float = 10.0
    keep_out_cones: tuple[KeepOutCone, ...] = ()
    link_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _finite(self.elevation_mask_deg, "InterlockSettings.elevation_mask_deg", 0.0, 90.0)
        _finite(self.link_timeout_s, "InterlockSettings.link_timeout_s", 1e-3, 3600.0)
        if not all(isinstance(c, KeepOutCone) for c in self.keep_out_cones):
            raise InputError("InterlockSettings.keep_out_cones must hold KeepOutCone entries")


class LaserInterlock:
    """The interlock's state: what it last decided and the latched unauthenticated request."""

    def __init__(
        self,
        settings: InterlockSettings,
        emission_key: bytes | None = None,
        watermark: EmissionWatermark | None = None,
    ) -> None:
        if watermark is not None:
            if emission_key is not None:
                raise InputError("give the emission key or its watermark's key store, not both")
            emission_key = watermark.key
        if not isinstance(settings, InterlockSettings):
            raise InputError(f"settings must be InterlockSettings, got {type(settings).__name__}")
        if emission_key is not None and (
            not isinstance(emission_key, bytes) or len(emission_key) != EMISSION_KEY_BYTES
        ):
            raise InputError(f"emission_key must be {EMISSION_KEY_BYTES} bytes")
        self.settings = settings
        self.emission_key = emission_key
        self.reasons = InterlockReason.NONE
        self.unauthenticated_latched = False
        self.unauthenticated_requests = 0
        self.trips = 0
        self.watermark = watermark
        self._last_counter = watermark.highest if watermark is not None else -1

    def evaluate(
        self,
        now_unix_s: float,
        *,
        last_valid_tc_unix_s: float,
        tracking_locked: bool | None,
        geometry: BeamGeometry | None,
        geometry_known: bool = True,
    ) -> InterlockReason:
        """Control: decide the reasons emission is forbidden now (NONE: permitted).

        `tracking_locked` None: no tracking loop attached (not checked); `geometry_known`
        False: no geometry source attached (not checked); `geometry` None with a source
        attached: the beam's direction is unknown (forbidden)."""
        reasons = InterlockReason.NONE
        if tracking_locked is False:
            reasons |= InterlockReason.TRACKING_LOST
        if geometry_known:
            if geometry is None:
                reasons |= InterlockReason.NO_GEOMETRY
            else:
                zone = zone_violation(
                    geometry.station_azimuth_deg,
                    geometry.station_elevation_deg,
                    self.settings.elevation_mask_deg,
                    self.settings.keep_out_cones,
                )
                if zone.below_elevation_mask:
                    reasons |= InterlockReason.BELOW_ELEVATION_MASK
                if zone.in_keep_out_cone:
                    reasons |= InterlockReason.KEEP_OUT_CONE
        if now_unix_s - last_valid_tc_unix_s >= self.settings.link_timeout_s:
            reasons |= InterlockReason.LINK_LOST
        if self.unauthenticated_latched:
            reasons |= InterlockReason.UNAUTHENTICATED_REQUEST
        if reasons and not self.reasons:
            self.trips += 1
        self.reasons = reasons
        return reasons

    def check_request(self, function: FunctionId, arguments: Sequence[object]) -> bool:
        """Control: judge a request to emit; an unsigned one (with a key held) or a bad or
        replayed tag latches UNAUTHENTICATED_REQUEST and returns False."""
        if self.emission_key is None:
            return True  # no key provisioned: requests are not authenticated (see decision 0020)
        if function is FunctionId.SOURCE_ENABLE_SIGNED:
            first_pulse, counter, tag = arguments
            assert isinstance(first_pulse, float) and isinstance(counter, int)
            expected = emission_request_tag(self.emission_key, first_pulse, counter)
            authentic = isinstance(tag, bytes) and hmac.compare_digest(tag, expected)
            # a fresh counter is stored durably before the request is accepted
            if authentic and counter > self._last_counter and self._store_counter(counter):
                self._last_counter = counter
                self.unauthenticated_latched = False
                return True
        self.unauthenticated_requests += 1
        self.unauthenticated_latched = True
        self.reasons |= InterlockReason.UNAUTHENTICATED_REQUEST
        return False

    def _store_counter(self, counter: int) -> bool:
        """Record an accepted counter durably first; a counter that cannot be stored is not
        accepted (a restart could otherwise accept its replay)."""
        if self.watermark is None:
            return True
        try:
            self.watermark.advance(counter)
        except (OSError, KeyStoreError):
            return False
        return True
