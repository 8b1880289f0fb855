"""Acquisition, tracking and pointing (ATP): spiral acquisition time and tracking residuals.

Acquisition: the beacon's initial direction error is a 2-D Gaussian with per-axis sigma equal
to one third of the uncertainty cone's half-angle, truncated to the cone (a 3-sigma cone, the
usual sizing of an open-loop ephemeris pointing budget). The terminal scans an Archimedean
spiral from the cone centre at a constant angular speed, with a pitch of 90 % of its field of
view so that neighbouring turns overlap, until the beacon falls inside the field of view
(Hindman & Robertson, "Beaconless satellite laser acquisition", Proc. SPIE 1866 (1993);
Scheinfeild et al., Proc. SPIE 3932 (2000) for spiral scans).

Tracking: each axis of the closed-loop residual is a first-order (Ornstein-Uhlenbeck) process
whose corner frequency is the tracking bandwidth; the two axes are independent with equal
variance, so the error magnitude is Rayleigh with the given rms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core.errors import InputError

__all__ = [
    "AtpModel",
    "acquisition_time_s",
    "ou_residual",
    "ou_residual_reference",
    "tracking_residual_urad",
]

_SPIRAL_PITCH_FRACTION = 0.9
_UNCERTAINTY_SIGMAS = 3.0


@dataclass(frozen=True)
class AtpModel:
    """ATP parameters; angles are half-angle uncertainty, full-angle field of view, rms error."""

    initial_pointing_uncertainty_urad: float
    acquisition_field_of_view_urad: float
    spiral_scan_rate_urad_per_s: float
    tracking_residual_rms_urad: float
    tracking_bandwidth_hz: float

    def __post_init__(self) -> None:
        for name in (
            "initial_pointing_uncertainty_urad",
            "acquisition_field_of_view_urad",
            "spiral_scan_rate_urad_per_s",
            "tracking_bandwidth_hz",
        ):
            _check_positive(getattr(self, name), f"AtpModel.{name}")
        _check_positive(
            self.tracking_residual_rms_urad, "AtpModel.tracking_residual_rms_urad", allow_zero=True
        )


def _check_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (value == 0.0 and not allow_zero):
        raise InputError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}"
        )
    return value


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    return int(seed)


def _spiral_arc_length(theta: np.ndarray, b: float) -> np.ndarray:
    """Arc length of r = b theta from the centre (exact closed form)."""
    return 0.5 * b * (theta * np.sqrt(1.0 + theta**2) + np.arcsinh(theta))


def acquisition_time_s(model: AtpModel, seed: int) -> float:
    """Get the spiral-scan time until the beacon falls in the acquisition field of view."""
    if not isinstance(model, AtpModel):
        raise InputError(f"model must be an AtpModel, got {type(model).__name__}")
    generator = np.random.default_rng(_check_seed(seed))
    cone = model.initial_pointing_uncertainty_urad
    sigma = cone / _UNCERTAINTY_SIGMAS
    while True:  # truncate the Gaussian to the cone by rejection (accepts 98.9 % of draws)
        target = generator.normal(0.0, sigma, size=2)
        if math.hypot(target[0], target[1]) <= cone:
            break
    capture_radius = model.acquisition_field_of_view_urad / 2.0
    if math.hypot(target[0], target[1]) <= capture_radius:
        return 0.0
    b = _SPIRAL_PITCH_FRACTION * model.acquisition_field_of_view_urad / (2.0 * math.pi)
    theta_max = (cone + capture_radius) / b + 2.0 * math.pi
    # Uniform steps in theta; the path speed b sqrt(1 + theta^2) peaks at theta_max, where a
    # step still moves < 1/20 of the capture radius.
    step = capture_radius / 20.0 / (b * math.sqrt(1.0 + theta_max**2))
    theta = np.arange(0.0, theta_max + step, step)
    x = b * theta * np.cos(theta)
    y = b * theta * np.sin(theta)
    inside = np.flatnonzero(np.hypot(x - target[0], y - target[1]) <= capture_radius)
    if inside.size == 0:  # the cone is covered by construction; this guards rounding only
        raise RuntimeError("spiral scan missed the beacon; check AtpModel parameters")
    first = inside[0]
    arc_urad = _spiral_arc_length(theta[first : first + 1], b)[0]
    return float(arc_urad / model.spiral_scan_rate_urad_per_s)


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


def tracking_residual_urad(model: AtpModel, unix_s: np.ndarray, seed: int) -> np.ndarray:
    """Get the pointing-error magnitude (urad) at each time: band-limited, Rayleigh, given rms."""
    if not isinstance(model, AtpModel):
        raise InputError(f"model must be an AtpModel, got {type(model).__name__}")
    times = np.asarray(unix_s, dtype=np.float64)
    if times.ndim != 1:
        raise InputError(f"unix_s must be a 1-D array, got shape {times.shape}")
    if times.size and (not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0.0)):
        raise InputError("unix_s must be finite and non-decreasing")
    generator = np.random.default_rng(_check_seed(seed))
    normals = generator.standard_normal((2, times.shape[0]))
    # Per-axis sigma = rms / sqrt(2) so that E|e|^2 = rms^2.
    sigma = model.tracking_residual_rms_urad / math.sqrt(2.0)
    return ou_residual(
        np.ascontiguousarray(times),
        np.ascontiguousarray(normals[0]),
        np.ascontiguousarray(normals[1]),
        sigma,
        model.tracking_bandwidth_hz,
    )
