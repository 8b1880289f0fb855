"""The payload's fine-tracking loop: tracking sensor -> controller -> fast-steering mirror.

On the satellite this loop runs in the payload controller, not in Python: every
1 / sample_rate_hz it reads the centroid of the station's uplink beacon on the tracking
sensor and steers the fast-steering mirror (FSM) that the quantum and beacon beams share. This
shim runs it in the controller's time (`FineTracking.advance_to`, called from the controller's
tick), in blocks, through one numba kernel with a plain-Python twin.

Per axis, at sample k (one-sample sensor latency, integral control, mirror clamped to travel):

    e[k]   = d[k] - u[k]            line-of-sight error: platform disturbance - mirror
    valid  = beacon visible and |e[k]| <= field of view / 2
    u[k+1] = clip(u[k] + K_i (e[k] + n[k]), +-travel)   if valid, else u[k]

K_i = 2 pi f_c / f_s puts the open-loop crossover at f_c; below it the loop divides the
disturbance by about f / f_c (a type-1 loop's sensitivity), while the centroid noise n passes
with the complementary sensitivity. Kept below f_s / 16 for phase margin with the latency.
Without the fine loop (`fine_loop=False`) the same law runs at the platform's coarse body
pointing bandwidth on the coarse sensor: the line of sight follows the beacon slowly and keeps
the micro-vibration. The loop is locked once a valid sample was seen and while the beacon has
not been missing for `lost_after_s`; that flag is the tracking input of the laser interlock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core.errors import InputError

__all__ = [
    "FineTracking",
    "FineTrackingSettings",
    "fine_tracking_steps",
    "fine_tracking_steps_reference",
]

_MAX_GAIN = 2.0 * math.pi / 16.0  # crossover at most f_s / 16


def _number(value: object, name: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (positive and value == 0.0):
        raise InputError(f"{name} must be {'> 0' if positive else '>= 0'} and finite, got {value}")
    return value


@dataclass(frozen=True)
class FineTrackingSettings:
    """Loop rate and crossovers (Hz), sensor field of view and mirror travel (urad), and how
    long the beacon may be missing before tracking counts as lost (s)."""

    sample_rate_hz: float = 5000.0
    bandwidth_hz: float = 300.0
    coarse_bandwidth_hz: float = 2.0
    sensor_noise_urad: float = 0.2
    field_of_view_urad: float = 4000.0
    fsm_travel_urad: float = 2000.0
    lost_after_s: float = 0.2
    fine_loop: bool = True

    def __post_init__(self) -> None:
        for name in (
            "sample_rate_hz",
            "bandwidth_hz",
            "coarse_bandwidth_hz",
            "field_of_view_urad",
            "fsm_travel_urad",
            "lost_after_s",
        ):
            _number(getattr(self, name), f"FineTrackingSettings.{name}")
        _number(self.sensor_noise_urad, "FineTrackingSettings.sensor_noise_urad", positive=False)
        if not isinstance(self.fine_loop, bool):
            raise InputError(
                f"FineTrackingSettings.fine_loop must be a bool, got {self.fine_loop!r}"
            )
        for name in ("bandwidth_hz", "coarse_bandwidth_hz"):
            if 2.0 * math.pi * getattr(self, name) / self.sample_rate_hz > _MAX_GAIN:
                raise InputError(
                    f"FineTrackingSettings.{name} must be <= sample_rate_hz / 16 "
                    f"({self.sample_rate_hz / 16:g} Hz), got {getattr(self, name):g}"
                )

    @property
    def integral_gain(self) -> float:
        """Get K_i per sample: the fine crossover, or the coarse one without the fine loop."""
        corner = self.bandwidth_hz if self.fine_loop else self.coarse_bandwidth_hz
        return 2.0 * math.pi * corner / self.sample_rate_hz

    @property
    def lost_after_samples(self) -> int:
        """Get the number of missing samples after which tracking is lost."""
        return max(1, round(self.lost_after_s * self.sample_rate_hz))


@numba.njit(cache=True)
def fine_tracking_steps(
    disturbance: np.ndarray,
    noise: np.ndarray,
    visible: np.ndarray,
    state: np.ndarray,
    gain: float,
    half_fov: float,
    travel: float,
    lost_after: int,
    residual: np.ndarray,
    locked: np.ndarray,
) -> None:
    """Control: run the loop over (2, n) disturbance and noise and (n,) visibility, writing the
    (2, n) line-of-sight error and (n,) lock flags; `state` = [u_x, u_y, missing, acquired] is
    read and updated in place so blocks chain exactly."""
    ux, uy, missing, acquired = state[0], state[1], state[2], state[3]
    for k in range(visible.shape[0]):
        ex = disturbance[0, k] - ux
        ey = disturbance[1, k] - uy
        residual[0, k] = ex
        residual[1, k] = ey
        if visible[k] and ex * ex + ey * ey <= half_fov * half_fov:
            ux = min(max(ux + gain * (ex + noise[0, k]), -travel), travel)
            uy = min(max(uy + gain * (ey + noise[1, k]), -travel), travel)
            missing = 0.0
            acquired = 1.0
        else:
            missing += 1.0
        locked[k] = acquired > 0.0 and missing < lost_after
    state[0], state[1], state[2], state[3] = ux, uy, missing, acquired


def fine_tracking_steps_reference(
    disturbance: np.ndarray,
    noise: np.ndarray,
    visible: np.ndarray,
    state: np.ndarray,
    gain: float,
    half_fov: float,
    travel: float,
    lost_after: int,
    residual: np.ndarray,
    locked: np.ndarray,
) -> None:
    """Control: the same loop as fine_tracking_steps in plain Python."""
    u = [float(state[0]), float(state[1])]
    missing, acquired = float(state[2]), float(state[3])
    for k in range(len(visible)):
        e = [float(disturbance[a, k]) - u[a] for a in range(2)]
        residual[0, k], residual[1, k] = e
        if bool(visible[k]) and math.hypot(*e) ** 2 <= half_fov**2:
            for a in range(2):
                u[a] = min(max(u[a] + gain * (e[a] + float(noise[a, k])), -travel), travel)
            missing, acquired = 0.0, 1.0
        else:
            missing += 1.0
        locked[k] = acquired > 0.0 and missing < lost_after
    state[:] = [u[0], u[1], missing, acquired]


class FineTracking:
    """The loop as the payload controller runs it: advanced to the controller's clock, block by
    block over a scene (any object with start_unix_s, sample_rate_hz, disturbance_urad,
    noise_urad, beacon_visible and sample_index, e.g. sim_backends.platform_disturbance's)."""

    def __init__(self, settings: FineTrackingSettings, scene: object) -> None:
        if not isinstance(settings, FineTrackingSettings):
            raise InputError(
                f"settings must be FineTrackingSettings, got {type(settings).__name__}"
            )
        rate = float(getattr(scene, "sample_rate_hz", float("nan")))
        if not math.isclose(rate, settings.sample_rate_hz):
            raise InputError(
                f"scene sample rate {rate:g} Hz differs from the loop's {settings.sample_rate_hz:g}"
            )
        self.settings = settings
        self.scene = scene
        self.state = np.zeros(4)
        self.next_sample = 0
        self.locked = False
        self.acquired_unix_s: float | None = None
        self.lock_losses = 0
        self._sum_sq = 0.0  # of the radial error over locked samples since the last take
        self._count = 0

    def advance_to(self, unix_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Control: run the samples up to `unix_s`; returns this block's (2, m) line-of-sight
        error and (m,) lock flags."""
        stop = self.scene.sample_index(unix_s)  # type: ignore[attr-defined]
        start = self.next_sample
        if stop <= start:
            return np.zeros((2, 0)), np.zeros(0, dtype=np.bool_)
        s = self.settings
        was_locked = self.locked
        residual, locked = self._steps(start, stop, self.state)
        self.next_sample = stop
        if locked.any() and self.acquired_unix_s is None:
            first = int(np.argmax(locked))
            self.acquired_unix_s = self.scene.start_unix_s + (start + first) / s.sample_rate_hz  # type: ignore[attr-defined]
        edges = np.diff(np.concatenate(([was_locked], locked)).astype(np.int8))
        self.lock_losses += int(np.count_nonzero(edges < 0))
        self.locked = bool(locked[-1])
        radial_sq = residual[0, locked] ** 2 + residual[1, locked] ** 2
        self._sum_sq += float(np.sum(radial_sq))
        self._count += int(radial_sq.size)
        return residual, locked

    def load_code(self) -> None:
        """Control: load the loop's compiled code now, on an empty block (nothing advances).
        Loading it takes a second or more (several on a busy machine); the payload controller
        does this before it serves its line, so that the load does not fall in its first tick
        and hold the line, the telecommand replies and the laser interlock that long."""
        self._steps(0, 0, self.state.copy())

    def _steps(self, start: int, stop: int, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the kernel over the scene's samples start..stop from `state` (updated in place);
        returns their (2, m) line-of-sight error and (m,) lock flags."""
        s = self.settings
        d = np.ascontiguousarray(self.scene.disturbance_urad[:, start:stop])  # type: ignore[attr-defined]
        n = np.ascontiguousarray(self.scene.noise_urad[:, start:stop])  # type: ignore[attr-defined]
        v = np.ascontiguousarray(self.scene.beacon_visible[start:stop])  # type: ignore[attr-defined]
        residual = np.empty((2, stop - start))
        locked = np.empty(stop - start, dtype=np.bool_)
        fine_tracking_steps(
            d, n, v, state, s.integral_gain, s.field_of_view_urad / 2.0,
            s.fsm_travel_urad, s.lost_after_samples, residual, locked,
        )  # fmt: skip
        return residual, locked

    def take_residual_rms_urad(self) -> float:
        """Get the rms line-of-sight error over locked samples since the last call (NaN if
        none), and start a new interval: the housekeeping figure."""
        rms = math.sqrt(self._sum_sq / self._count) if self._count else float("nan")
        self._sum_sq, self._count = 0.0, 0
        return rms
