"""Where a laser may point: the elevation mask and keep-out cones of a station's sky.

The one geometry both laser interlocks use: the payload controller's (the satellite's
direction seen from the station, `firmware_shims.laser_interlock`) and the station's (its
mount's direction, `satqkd_ogs.laser_safety`). Directions are (azimuth, elevation) in degrees;
a cone is a centre direction and a half-angle, and a direction is inside it when its
great-circle separation from the centre is at most the half-angle (the edge counts as inside).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from satqkd_core.errors import InputError

__all__ = ["KeepOutCone", "ZoneViolation", "angular_separation_deg", "zone_violation"]


def _check(value: object, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(f"{name} must be in {low:g}..{high:g}, got {value}")


def angular_separation_deg(
    azimuth1_deg: float, elevation1_deg: float, azimuth2_deg: float, elevation2_deg: float
) -> float:
    """Get the great-circle angle (deg) between two (azimuth, elevation) directions."""
    a1, e1 = math.radians(azimuth1_deg), math.radians(elevation1_deg)
    a2, e2 = math.radians(azimuth2_deg), math.radians(elevation2_deg)
    cos_sep = math.sin(e1) * math.sin(e2) + math.cos(e1) * math.cos(e2) * math.cos(a1 - a2)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos_sep))))


@dataclass(frozen=True)
class KeepOutCone:
    """A cone of the station's sky a beam must not enter: centre and half-angle (deg)."""

    azimuth_deg: float
    elevation_deg: float
    half_angle_deg: float

    def __post_init__(self) -> None:
        _check(self.azimuth_deg, "KeepOutCone.azimuth_deg", -360.0, 360.0)
        _check(self.elevation_deg, "KeepOutCone.elevation_deg", -90.0, 90.0)
        _check(self.half_angle_deg, "KeepOutCone.half_angle_deg", 0.0, 180.0)

    def contains(self, azimuth_deg: float, elevation_deg: float) -> bool:
        """Get whether a direction (deg) lies inside the cone (great-circle separation)."""
        separation = angular_separation_deg(
            self.azimuth_deg, self.elevation_deg, azimuth_deg, elevation_deg
        )
        return separation <= self.half_angle_deg


@dataclass(frozen=True)
class ZoneViolation:
    """Why a direction is outside the allowed zone (both False: it is inside)."""

    below_elevation_mask: bool
    in_keep_out_cone: bool

    def __bool__(self) -> bool:
        return self.below_elevation_mask or self.in_keep_out_cone


def zone_violation(
    azimuth_deg: float,
    elevation_deg: float,
    elevation_mask_deg: float,
    keep_out_cones: Iterable[KeepOutCone] = (),
) -> ZoneViolation:
    """Get how a direction (deg) breaks the allowed zone: below the elevation mask, inside a
    keep-out cone (falsy: neither)."""
    return ZoneViolation(
        below_elevation_mask=elevation_deg < elevation_mask_deg,
        in_keep_out_cone=any(c.contains(azimuth_deg, elevation_deg) for c in keep_out_cones),
    )
