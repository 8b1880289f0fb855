"""The satellite transmitter's pointing residual: how far the payload's beam points off the
station, the term the link budget turns into pointing loss against the beam's divergence
(sim_backends.link).

This is the satellite's side of the link only, as a statistical model; a mission with a
`transmitter.pointing` section simulates the payload's own pointing instead (platform
disturbance, the controller's fine-tracking loop, point-ahead: satqkd.payload_pointing_physics,
decision 0020). The station's own pointing (mount, steering
mirror, beacon sensor, and what they put through the receiver's field stop) is the truth the
station's instruments close on, sim_backends.sky; decision 0013.

Each axis of the residual is a first-order (Ornstein-Uhlenbeck) process whose corner frequency
is the bandwidth of the payload's fine-pointing loop; the two axes are independent with equal
variance, so the error magnitude is Rayleigh with the given rms. Exact discrete steps at the
sample times, so unevenly spaced samples are fine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core.errors import InputError

__all__ = [
    "TransmitterPointing",
    "ou_residual",
    "ou_residual_reference",
    "pointing_residual_urad",
]


@dataclass(frozen=True)
class TransmitterPointing:
    """The payload's pointing residual: rms magnitude (urad) and loop bandwidth (Hz)."""

    residual_rms_urad: float
    bandwidth_hz: float

    def __post_init__(self) -> None:
        _check_number(self.residual_rms_urad, "TransmitterPointing.residual_rms_urad", zero=True)
        _check_number(self.bandwidth_hz, "TransmitterPointing.bandwidth_hz", zero=False)


def _check_number(value: object, name: str, *, zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (value == 0.0 and not zero):
        raise InputError(f"{name} must be {'>= 0' if zero else '> 0'} and finite, got {value}")


@numba.njit(cache=True)
def ou_residual(
    unix_s: np.ndarray, normal_x: np.ndarray, normal_y: np.ndarray, sigma: float, corner_hz: float
) -> np.ndarray:
    """Get |e| of a 2-D Ornstein-Uhlenbeck residual sampled at sorted times (exact steps)."""
    n = unix_s.shape[0]
    out = np.empty(n)
    if n == 0:
        return out
    ex = sigma * normal_x[0]
    ey = sigma * normal_y[0]
    out[0] = math.sqrt(ex * ex + ey * ey)
    for i in range(1, n):
        rho = math.exp(-2.0 * math.pi * corner_hz * (unix_s[i] - unix_s[i - 1]))
        innovation = sigma * math.sqrt(1.0 - rho * rho)
        ex = rho * ex + innovation * normal_x[i]
        ey = rho * ey + innovation * normal_y[i]
        out[i] = math.sqrt(ex * ex + ey * ey)
    return out


def ou_residual_reference(
    unix_s: np.ndarray, normal_x: np.ndarray, normal_y: np.ndarray, sigma: float, corner_hz: float
) -> np.ndarray:
    """Get the same residual magnitudes as ou_residual in plain Python."""
    out = []
    ex = ey = 0.0
    for i in range(len(unix_s)):
        if i == 0:
            ex, ey = sigma * float(normal_x[0]), sigma * float(normal_y[0])
        else:
            rho = math.exp(-2.0 * math.pi * corner_hz * (float(unix_s[i]) - float(unix_s[i - 1])))
            innovation = sigma * math.sqrt(1.0 - rho * rho)
            ex = rho * ex + innovation * float(normal_x[i])
            ey = rho * ey + innovation * float(normal_y[i])
        out.append(math.sqrt(ex * ex + ey * ey))
    return np.array(out, dtype=np.float64)


def pointing_residual_urad(model: TransmitterPointing, unix_s: np.ndarray, seed: int) -> np.ndarray:
    """Get the pointing-error magnitude (urad) at each time: band-limited, Rayleigh, given rms."""
    if not isinstance(model, TransmitterPointing):
        raise InputError(f"model must be a TransmitterPointing, got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    times = np.asarray(unix_s, dtype=np.float64)
    if times.ndim != 1:
        raise InputError(f"unix_s must be a 1-D array, got shape {times.shape}")
    if times.size and (not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0.0)):
        raise InputError("unix_s must be finite and non-decreasing")
    generator = np.random.default_rng(int(seed))
    normals = generator.standard_normal((2, times.shape[0]))
    # Per-axis sigma = rms / sqrt(2) so that E|e|^2 = rms^2.
    sigma = model.residual_rms_urad / math.sqrt(2.0)
    return ou_residual(
        np.ascontiguousarray(times),
        np.ascontiguousarray(normals[0]),
        np.ascontiguousarray(normals[1]),
        sigma,
        model.bandwidth_hz,
    )
