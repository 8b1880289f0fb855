"""Polarisation reference frames: the station's compensation and the errors it leaves.

The payload and receiver polarisation frames turn against each other along the pass
(satqkd_core.ephemeris.polarisation_frame_rotation_deg, after Bonato et al., Opt. Express 14,
10050 (2006)). The station predicts that angle from the ephemeris and counter-rotates a
motorised half-wave plate (as on Micius: Liao et al., Nature 549, 43 (2017), Methods; Han et
al., Opt. Express 28, 369 (2020)); what the prediction and the plate miss is the residual.
A state rotated by delta is found orthogonal with probability sin^2(delta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.ephemeris import wrap_polarisation_angle_deg
from satqkd_core.errors import InputError

__all__ = [
    "COMPENSATION_MODES",
    "PolarisationCompensation",
    "combined_polarisation_error",
    "misalignment_error_probability",
    "residual_misalignment_deg",
]

# predicted: a half-wave plate follows the ephemeris prediction; none: the frames are aligned
# once, at the first instant (e.g. on a reference beam), and then left alone.
COMPENSATION_MODES = ("predicted", "none")


@dataclass(frozen=True)
class PolarisationCompensation:
    """How the station compensates the frame rotation; error_rms_deg is per frame."""

    mode: str = "predicted"
    error_rms_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in COMPENSATION_MODES:
            raise InputError(
                f"PolarisationCompensation.mode must be one of {COMPENSATION_MODES}, "
                f"got {self.mode!r}"
            )
        value = self.error_rms_deg
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputError(
                f"PolarisationCompensation.error_rms_deg must be a number, got {value!r}"
            )
        if not (math.isfinite(value) and 0.0 <= value <= 90.0):
            raise InputError(
                f"PolarisationCompensation.error_rms_deg must be in [0, 90], got {value}"
            )


def residual_misalignment_deg(
    frame_rotation_deg: np.ndarray, compensation: PolarisationCompensation, seed: int
) -> np.ndarray:
    """Get the misalignment (deg, in (-90, 90]) left after compensation at each instant."""
    if not isinstance(compensation, PolarisationCompensation):
        raise InputError(
            f"compensation must be a PolarisationCompensation, got {type(compensation).__name__}"
        )
    angle = np.asarray(frame_rotation_deg, dtype=np.float64)
    if angle.ndim != 1:
        raise InputError(f"frame_rotation_deg must be 1-D, got shape {angle.shape}")
    if angle.size and not np.all(np.isfinite(angle)):
        raise InputError("frame_rotation_deg must be finite")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if compensation.mode == "none":
        if angle.size == 0:
            return angle.copy()
        return wrap_polarisation_angle_deg(angle - angle[0])
    # The plate is set to the prediction; what remains is the prediction and setting error.
    error = np.random.default_rng(int(seed)).normal(0.0, 1.0, angle.shape[0])
    return wrap_polarisation_angle_deg(compensation.error_rms_deg * error)


def misalignment_error_probability(residual_deg: np.ndarray) -> np.ndarray:
    """Get sin^2(residual): the probability that a rotated state is found orthogonal."""
    return np.sin(np.radians(np.asarray(residual_deg, dtype=np.float64))) ** 2


def combined_polarisation_error(intrinsic_error: float, residual_deg: np.ndarray) -> np.ndarray:
    """Get the flip probability of the source error and an independent frame misalignment.

    P(flip) = e0 (1 - s) + (1 - e0) s = e0 + (1 - 2 e0) s, with s = sin^2(residual): exactly
    one of the two independent flips happens.
    """
    e0 = float(intrinsic_error)
    if not (math.isfinite(e0) and 0.0 <= e0 <= 0.5):
        raise InputError(f"intrinsic_error must be in [0, 0.5], got {intrinsic_error!r}")
    s = misalignment_error_probability(residual_deg)
    return e0 + (1.0 - 2.0 * e0) * s
