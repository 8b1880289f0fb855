"""How long a spiral scan takes to find the beacon, for the acquisition allowance of a pass plan.

A simulated pass plan starts QKD no earlier than AOS plus this time (satqkd.pass_physics). It is
an allowance drawn for the pass, not the station's acquisition: with the station's instruments
in the loop, the station acquires when its own scan finds the beacon in the truth of
sim_backends.sky, before or after QKD start (decision 0013). The parameters are the station's
acquisition settings, the same ones its daemon scans with.

The beacon's initial direction error is a 2-D Gaussian with per-axis sigma equal to one third of
the uncertainty cone's half-angle, truncated to the cone (a 3-sigma cone, the usual sizing of an
open-loop ephemeris pointing budget). The scan is an Archimedean spiral from the cone centre at
a constant angular speed, with a pitch of 90 % of the field of view so that neighbouring turns
overlap, until the beacon falls inside the field of view (Hindman & Robertson, "Beaconless
satellite laser acquisition", Proc. SPIE 1866 (1993); Scheinfeild et al., Proc. SPIE 3932 (2000)
for spiral scans).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError

__all__ = ["SpiralAcquisition", "acquisition_time_s"]

_SPIRAL_PITCH_FRACTION = 0.9
_UNCERTAINTY_SIGMAS = 3.0


@dataclass(frozen=True)
class SpiralAcquisition:
    """A spiral search: cone half-angle, full-angle field of view, scan speed (urad, urad/s)."""

    initial_pointing_uncertainty_urad: float
    acquisition_field_of_view_urad: float
    spiral_scan_rate_urad_per_s: float

    def __post_init__(self) -> None:
        for name in (
            "initial_pointing_uncertainty_urad",
            "acquisition_field_of_view_urad",
            "spiral_scan_rate_urad_per_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise InputError(f"SpiralAcquisition.{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0.0):
                raise InputError(f"SpiralAcquisition.{name} must be > 0 and finite, got {value}")


def _spiral_arc_length(theta: np.ndarray, b: float) -> np.ndarray:
    """Arc length of r = b theta from the centre (exact closed form)."""
    return 0.5 * b * (theta * np.sqrt(1.0 + theta**2) + np.arcsinh(theta))


def acquisition_time_s(model: SpiralAcquisition, seed: int) -> float:
    """Get the spiral-scan time until the beacon falls in the acquisition field of view."""
    if not isinstance(model, SpiralAcquisition):
        raise InputError(f"model must be a SpiralAcquisition, got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    generator = np.random.default_rng(int(seed))
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
        raise RuntimeError("spiral scan missed the beacon; check SpiralAcquisition parameters")
    first = inside[0]
    arc_urad = _spiral_arc_length(theta[first : first + 1], b)[0]
    return float(arc_urad / model.spiral_scan_rate_urad_per_s)
