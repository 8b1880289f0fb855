"""Pointing laws of the station's ATP controller, free of I/O: the program-track prediction, the
fine-steering law, the acquisition spiral and the sky <-> mount angle conversions.

Conventions (docs/atp.md, the ATP contract): azimuth in degrees clockwise from true north,
elevation in degrees above the horizon; a beacon spot or a mirror offset (x, y) in urad on the
sky, +x further in azimuth (times cos el), +y higher in elevation. The mirror moves the line of
sight by its command (1 urad on the sky per urad), so a spot at (x, y) is nulled by adding
(x, y) to the mirror command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.ephemeris import SPEED_OF_LIGHT_M_S, Station, StationTrack, topocentric
from satqkd_core.errors import InputError

URAD_PER_DEG = math.pi / 180.0 * 1e6
# below this cos(el) an azimuth offset needs more than 20x its sky angle: near the zenith
# keyhole of an az/el mount, sky offsets are clipped rather than turned into huge slews
_MIN_COS_EL = 0.05


def sky_offset_to_mount_deg(x_urad: float, y_urad: float, el_deg: float) -> tuple[float, float]:
    """Get: the (azimuth, elevation) change in degrees that moves the boresight by (x, y) urad."""
    cos_el = max(math.cos(math.radians(el_deg)), _MIN_COS_EL)
    return x_urad / URAD_PER_DEG / cos_el, y_urad / URAD_PER_DEG


@dataclass(frozen=True)
class PointingSample:
    """The predicted direction of the satellite's beacon at one instant, with its rates."""

    az_deg: float
    el_deg: float
    az_rate_deg_s: float
    el_rate_deg_s: float


class PassPrediction:
    """Program track of one pass: where the beacon appears from the station, from the pass
    plan's TLE (SGP4 through satqkd_core.ephemeris.topocentric).

    The direction is the apparent one: the light arriving at t left the satellite one light
    time earlier (range / c, 2-4 ms, 15-30 m of orbit, i.e. tens of urad at LEO ranges).
    Azimuth is unwrapped along the pass so it is continuous through north; `set_branch` shifts
    it by whole turns to fit a mount's travel. Between grid points a cubic Hermite interpolant
    (Catmull-Rom tangents) gives position and rate; with a 0.2 s grid its error is far below
    the urad.
    """

    GRID_STEP_S = 0.2

    def __init__(
        self,
        tle_line1: str,
        tle_line2: str,
        location: Station | StationTrack,
        start_unix_s: float,
        stop_unix_s: float,
    ) -> None:
        if not (math.isfinite(start_unix_s) and math.isfinite(stop_unix_s)):
            raise InputError("start_unix_s and stop_unix_s must be finite")
        if not stop_unix_s > start_unix_s:
            raise InputError(
                f"stop_unix_s ({stop_unix_s}) must be after start_unix_s ({start_unix_s})"
            )
        step = self.GRID_STEP_S
        n = math.ceil((stop_unix_s - start_unix_s) / step) + 3
        grid = start_unix_s - step + step * np.arange(n)
        geometric = topocentric(tle_line1, tle_line2, location, grid)
        apparent = topocentric(
            tle_line1, tle_line2, location, grid - geometric.range_m / SPEED_OF_LIGHT_M_S
        )
        self.grid_unix_s = grid
        self.az_deg = np.unwrap(apparent.azimuth_deg, period=360.0)
        self.el_deg = apparent.elevation_deg
        self._az_slope = np.gradient(self.az_deg, step)
        self._el_slope = np.gradient(self.el_deg, step)
        self.branch_deg = 0.0

    def set_branch(self, shift_deg: float) -> None:
        """Set: a whole number of turns added to every azimuth (to fit a mount's travel)."""
        if shift_deg % 360.0:
            raise InputError(f"shift_deg must be a whole number of turns, got {shift_deg!r}")
        self.branch_deg = float(shift_deg)

    def at(self, unix_s: float) -> PointingSample:
        """Get: predicted direction and rates at `unix_s` (held at the ends of the grid)."""
        grid = self.grid_unix_s
        t = min(max(float(unix_s), float(grid[0])), float(grid[-1]))
        k = min(int((t - grid[0]) / self.GRID_STEP_S), grid.size - 2)
        h = self.GRID_STEP_S
        s = (t - grid[k]) / h
        az, az_rate = _hermite(self.az_deg, self._az_slope, k, s, h)
        el, el_rate = _hermite(self.el_deg, self._el_slope, k, s, h)
        return PointingSample(az + self.branch_deg, el, az_rate, el_rate)

    def best_branch(
        self,
        az_min_deg: float,
        az_max_deg: float,
        el_min_deg: float,
        el_max_deg: float,
        windows: list[tuple[float, float]],
    ) -> float:
        """Get: the whole-turn azimuth shift keeping most of the pass inside a mount's travel,
        counting the first window's samples before the second's (QKD window, then AOS-LOS)."""
        el_ok = (self.el_deg >= el_min_deg) & (self.el_deg <= el_max_deg)
        centre = 0.5 * (az_min_deg + az_max_deg)
        mean_az = float(np.mean(self.az_deg))
        first = round((centre - mean_az) / 360.0)
        best, best_score = 0.0, None
        for turns in range(first - 2, first + 3):
            shift = 360.0 * turns
            az = self.az_deg + shift
            inside = el_ok & (az >= az_min_deg) & (az <= az_max_deg)
            score = tuple(
                int(np.count_nonzero(inside & (self.grid_unix_s >= a) & (self.grid_unix_s <= b)))
                for a, b in windows
            )
            score += (-abs(turns - first),)  # ties: the turn nearest the travel's centre
            if best_score is None or score > best_score:
                best, best_score = shift, score
        return best


def _hermite(
    value: np.ndarray, slope: np.ndarray, k: int, s: float, h: float
) -> tuple[float, float]:
    """Cubic Hermite between grid points k and k+1 at fraction s: value and derivative."""
    p0, p1 = float(value[k]), float(value[k + 1])
    m0, m1 = float(slope[k]) * h, float(slope[k + 1]) * h
    s2, s3 = s * s, s * s * s
    h00, h10, h01, h11 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
    d00, d10, d01, d11 = 6 * s2 - 6 * s, 3 * s2 - 4 * s + 1, -6 * s2 + 6 * s, 3 * s2 - 2 * s
    position = h00 * p0 + h10 * m0 + h01 * p1 + h11 * m1
    derivative = (d00 * p0 + d10 * m0 + d01 * p1 + d11 * m1) / h
    return position, derivative


@dataclass(frozen=True)
class FineSteeringLaw:
    """Velocity-form PI law of the fast-steering mirror, one sample per loop period.

    The spot read at sample k shows the residual left by the command sent at k-1 (the mirror
    settles in milliseconds, far inside a loop period), so the plant is a one-sample delay and
    the integral gain alone gives e[k+1] = (1 - K_i) e[k] for a fixed offset: stable for
    0 < K_i < 2, dead-beat at 1; below 1 it averages centroid noise. Commands are clamped to
    the mirror's travel; in velocity form that clamp is also the anti-windup.
    """

    integral_gain: float
    proportional_gain: float
    tip_range_urad: tuple[float, float]
    tilt_range_urad: tuple[float, float]

    def __post_init__(self) -> None:
        if not 0.0 < self.integral_gain < 2.0:
            raise InputError(f"integral_gain must be in (0, 2), got {self.integral_gain!r}")
        if not 0.0 <= self.proportional_gain <= 1.0:
            raise InputError(f"proportional_gain must be in [0, 1], got {self.proportional_gain!r}")
        for name in ("tip_range_urad", "tilt_range_urad"):
            low, high = getattr(self, name)
            if not low < high:
                raise InputError(f"{name} must be (low, high) with low < high, got {(low, high)}")

    def update(
        self,
        command: tuple[float, float],
        spot: tuple[float, float],
        previous_spot: tuple[float, float] | None,
    ) -> tuple[float, float]:
        """Get: the next mirror command from the present one and the spot (urad on the sky)."""
        previous = previous_spot if previous_spot is not None else spot
        tip = command[0] + self.integral_gain * spot[0]
        tilt = command[1] + self.integral_gain * spot[1]
        tip += self.proportional_gain * (spot[0] - previous[0])
        tilt += self.proportional_gain * (spot[1] - previous[1])
        return self.clamp(tip, tilt)

    def clamp(self, tip_urad: float, tilt_urad: float) -> tuple[float, float]:
        """Get: a command moved inside the mirror's travel."""
        return (
            min(max(tip_urad, self.tip_range_urad[0]), self.tip_range_urad[1]),
            min(max(tilt_urad, self.tilt_range_urad[0]), self.tilt_range_urad[1]),
        )


class SpiralScan:
    """Archimedean acquisition spiral r = b theta, sampled once per loop period.

    The pitch 2 pi b and the path length between samples are both 0.7 of the acquisition
    field of view (full angle, the capture diameter): a sample then sees a disc of radius
    FoV / 2 and neighbouring discs overlap along and across the path ((0.35)^2 + (0.35)^2 <
    0.5^2), so the spiral leaves no hole. The scan speed is the configured one unless that would
    space samples further apart. Spirals from the centre are the usual open-loop search pattern
    (Hindman & Robertson, Proc. SPIE 1866 (1993); Scheinfeild et al., Proc. SPIE 3932 (2000)).
    It covers every point within `max_radius_urad` (it runs one pitch further, so the outer
    edge lies between two turns), then starts again from the centre.
    """

    COVERAGE_FRACTION = 0.7

    def __init__(
        self,
        field_of_view_urad: float,
        scan_rate_urad_per_s: float,
        sample_period_s: float,
        max_radius_urad: float,
    ) -> None:
        for name, value in (
            ("field_of_view_urad", field_of_view_urad),
            ("scan_rate_urad_per_s", scan_rate_urad_per_s),
            ("sample_period_s", sample_period_s),
            ("max_radius_urad", max_radius_urad),
        ):
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a positive number, got {value!r}")
        self.pitch_urad = self.COVERAGE_FRACTION * field_of_view_urad
        self.step_urad = min(scan_rate_urad_per_s * sample_period_s, self.pitch_urad)
        self.max_radius_urad = max_radius_urad
        self._b = self.pitch_urad / (2.0 * math.pi)
        theta_max = (max_radius_urad + self.pitch_urad) / self._b
        self.samples_per_cycle = int(self._arc_length(theta_max) / self.step_urad) + 1

    def _arc_length(self, theta: float) -> float:
        # exact arc length of r = b theta from the centre
        return 0.5 * self._b * (theta * math.sqrt(1.0 + theta * theta) + math.asinh(theta))

    def offset(self, sample: int) -> tuple[float, float]:
        """Get: the scan offset (x, y) in urad of sample number `sample` (0: the centre)."""
        if sample < 0:
            raise InputError(f"sample must be >= 0, got {sample!r}")
        arc = (sample % self.samples_per_cycle) * self.step_urad
        if arc == 0.0:
            return 0.0, 0.0
        theta = math.sqrt(2.0 * arc / self._b)  # large-theta inverse, then Newton on the exact
        for _ in range(8):
            speed = self._b * math.sqrt(1.0 + theta * theta)
            theta -= (self._arc_length(theta) - arc) / speed
        radius = self._b * theta
        return radius * math.cos(theta), radius * math.sin(theta)
