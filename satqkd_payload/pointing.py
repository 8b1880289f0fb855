"""The payload's pointing laws: point-ahead from the pass prediction, and mutual acquisition.

Point-ahead: the payload tracks the station's uplink beacon, which it sees where the station
was one light time ago, and its quantum beam reaches the station one light time later, so the
beam must lead the beacon's apparent direction by 2 v_perp / c, v_perp the relative velocity
across the line of sight (Bradley aberration twice; e.g. Kaushal & Kaddoum, "Optical
communication in space: challenges and mitigation techniques", IEEE Commun. Surv. Tutor. 19(1),
57 (2017)). At LEO, v_perp up to ~7.5 km/s gives up to ~50 urad: five times
the 10 urad half-angle of a 20 urad beam, so the beam misses without it. The payload computes it
from the pass plan's prediction of the station's view of the satellite (azimuth, elevation,
range on a grid) and applies it to the quantum beam's steering, in the station's sky frame
(+x towards increasing azimuth times cos el, +y towards increasing elevation).

Mutual acquisition: the station's wide uplink beacon covers the satellite's position
uncertainty, the payload finds it in its tracking sensor (staring when the sensor's field covers
the attitude error cone, else by a spiral of the body), turns its own beacon on once it tracks
(the laser interlock requires tracking), and only then can the station's spiral scan find the
downlink beacon. The station's scan therefore starts when the payload tracks: the times add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError

__all__ = ["PointAheadPlan", "mutual_acquisition_time_s", "point_ahead_urad"]

_SPEED_OF_LIGHT_M_S = 299_792_458.0


def point_ahead_urad(
    unix_s: np.ndarray, azimuth_deg: np.ndarray, elevation_deg: np.ndarray, range_m: np.ndarray
) -> np.ndarray:
    """Get the point-ahead (n, 2) in urad (x, y in the station's sky frame) from the station's
    view of the satellite at sorted instants: 2 R omega / c per axis, omega the line of
    sight's angular rate (central differences of the unwrapped azimuth and the elevation)."""
    t = np.asarray(unix_s, dtype=np.float64)
    az = np.unwrap(np.radians(np.asarray(azimuth_deg, dtype=np.float64)))
    el = np.radians(np.asarray(elevation_deg, dtype=np.float64))
    r = np.asarray(range_m, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or not (az.shape == el.shape == r.shape == t.shape):
        raise InputError("point_ahead_urad needs >= 2 instants and one az, el, range per instant")
    arrays = (t, az, el, r)
    if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(np.diff(t) <= 0.0):
        raise InputError("point_ahead_urad needs finite values and increasing instants")
    if np.any(r <= 0.0):
        raise InputError("range_m must be > 0")
    az_rate = np.gradient(az, t)
    el_rate = np.gradient(el, t)
    scale = 2.0 * r / _SPEED_OF_LIGHT_M_S * 1e6
    return np.stack([scale * az_rate * np.cos(el), scale * el_rate], axis=1)


@dataclass(frozen=True)
class PointAheadPlan:
    """The point-ahead the payload applies: computed from the pass prediction on a grid when
    the plan is loaded, linear between grid points."""

    unix_s: np.ndarray
    point_ahead_urad: np.ndarray  # (n, 2)

    @classmethod
    def from_prediction(
        cls,
        unix_s: np.ndarray,
        azimuth_deg: np.ndarray,
        elevation_deg: np.ndarray,
        range_m: np.ndarray,
    ) -> PointAheadPlan:
        """Get the plan from the predicted view of the satellite on a grid."""
        t = np.asarray(unix_s, dtype=np.float64)
        return cls(t, point_ahead_urad(t, azimuth_deg, elevation_deg, range_m))

    def at(self, unix_s: np.ndarray) -> np.ndarray:
        """Get the applied point-ahead (n, 2) in urad at instants inside the plan's grid."""
        t = np.asarray(unix_s, dtype=np.float64)
        if t.size and (t.min() < self.unix_s[0] or t.max() > self.unix_s[-1]):
            raise InputError(
                f"instants {t.min():.3f} .. {t.max():.3f} lie outside the point-ahead plan "
                f"{self.unix_s[0]:.3f} .. {self.unix_s[-1]:.3f}"
            )
        x = np.interp(t, self.unix_s, self.point_ahead_urad[:, 0])
        y = np.interp(t, self.unix_s, self.point_ahead_urad[:, 1])
        return np.stack([x, y], axis=1)

    def magnitude_urad(self) -> np.ndarray:
        """Get |point-ahead| at the grid points."""
        return np.hypot(self.point_ahead_urad[:, 0], self.point_ahead_urad[:, 1])


def mutual_acquisition_time_s(
    payload_search_s: float, station_search_s: float, payload_lock_s: float
) -> float:
    """Get the time from the window's start until both ends track: the payload finds the uplink
    beacon and locks, then the station's scan finds the payload's beacon (see the module)."""
    values = (payload_search_s, station_search_s, payload_lock_s)
    if any(not math.isfinite(v) or v < 0.0 for v in values):
        raise InputError(f"acquisition times must be finite and >= 0, got {values}")
    return payload_search_s + payload_lock_s + station_search_s
