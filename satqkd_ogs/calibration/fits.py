"""Least-squares fits the routines share, all with numpy (`numpy.linalg.lstsq`; scipy is not a
dependency): a linear model with its parameter covariance, the amplitude and phase of a sine in
sampled data (lock-in over whole cycles), a first-order step response, a quadratic peak.

Uncertainties: the parameter covariance s^2 (A^T A)^-1, s^2 the residual variance with the
degrees of freedom left (the data's own scatter, no assumed noise level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError

__all__ = ["LinearFit", "first_order_time_constant", "fit_linear", "lock_in", "quadratic_peak"]


@dataclass(frozen=True)
class LinearFit:
    """Parameters, their standard uncertainties, residuals."""

    parameters: np.ndarray
    uncertainties: np.ndarray
    residuals: np.ndarray
    covariance: np.ndarray

    @property
    def residual_rms(self) -> float:
        """Get: rms of the residuals."""
        return float(np.sqrt(np.mean(self.residuals**2))) if self.residuals.size else 0.0


def fit_linear(design: np.ndarray, observed: np.ndarray) -> LinearFit:
    """Get: the least-squares solution of design @ p = observed, with covariance."""
    design = np.asarray(design, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    n, p = design.shape
    if n <= p:
        raise InputError(f"{n} measurements cannot fit {p} parameters")
    if not (np.all(np.isfinite(design)) and np.all(np.isfinite(observed))):
        raise InputError("measurements must be finite")
    solution, _, rank, _ = np.linalg.lstsq(design, observed, rcond=None)
    if rank < p:
        raise InputError("the measurements do not determine every parameter")
    residuals = observed - design @ solution
    variance = float(residuals @ residuals) / (n - p)
    covariance = variance * np.linalg.inv(design.T @ design)
    return LinearFit(solution, np.sqrt(np.maximum(np.diag(covariance), 0.0)), residuals, covariance)


def lock_in(t_s: np.ndarray, values: np.ndarray, frequency_hz: float) -> tuple[complex, float]:
    """Get: the complex amplitude a (values ~ Re(a e^{i w t}) + c) and its standard
    uncertainty, fitted over the samples."""
    w = 2.0 * math.pi * frequency_hz
    t = np.asarray(t_s, dtype=np.float64)
    design = np.stack([np.cos(w * t), -np.sin(w * t), np.ones_like(t)], axis=1)
    fit = fit_linear(design, np.asarray(values, dtype=np.float64))
    return complex(fit.parameters[0], fit.parameters[1]), float(
        math.hypot(fit.uncertainties[0], fit.uncertainties[1])
    )


def first_order_time_constant(
    t_s: np.ndarray, values: np.ndarray, start: float, final: float
) -> tuple[float, float]:
    """Get: tau and its uncertainty from a step response from `start` to `final`: the slope
    of log((final - y) / (final - start)) over the samples between 5 % and 90 % of the step."""
    t = np.asarray(t_s, dtype=np.float64)
    remaining = (final - np.asarray(values, dtype=np.float64)) / (final - start)
    use = (remaining > 0.1) & (remaining < 0.95)
    if np.count_nonzero(use) < 3:
        raise InputError("too few samples on the step's edge: sample faster")
    fit = fit_linear(np.stack([t[use], np.ones(np.count_nonzero(use))], 1), np.log(remaining[use]))
    slope, sigma = fit.parameters[0], fit.uncertainties[0]
    if slope >= 0.0:
        raise InputError("the step response does not decay")
    tau = -1.0 / slope
    return tau, tau * sigma / abs(slope)


def quadratic_peak(
    x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[tuple[float, float], tuple[float, float], LinearFit]:
    """Get: the centre (x0, y0) of z ~ c0 + c1 x + c2 y + c3 x^2 + c4 y^2 + c5 x y, its
    uncertainty (propagated to first order) and the fit."""
    x, y, z = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    design = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)
    fit = fit_linear(design, z)
    _, c1, c2, c3, c4, c5 = fit.parameters
    hessian = np.array([[2 * c3, c5], [c5, 2 * c4]])
    if np.any(np.linalg.eigvalsh(hessian) >= 0.0):
        raise InputError("the scan shows no peak: widen it or centre it on the source")
    centre = np.linalg.solve(hessian, -np.array([c1, c2]))
    # d(centre)/d(parameters) by finite differences, then J C J^T
    jacobian = np.zeros((2, 6))
    for k in range(1, 6):
        step = np.zeros(6)
        step[k] = 1e-6 * max(1.0, abs(fit.parameters[k]))
        p = fit.parameters + step
        h = np.array([[2 * p[3], p[5]], [p[5], 2 * p[4]]])
        jacobian[:, k] = (np.linalg.solve(h, -p[1:3]) - centre) / step[k]
    covariance = jacobian @ fit.covariance @ jacobian.T
    sigma = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    return (float(centre[0]), float(centre[1])), (float(sigma[0]), float(sigma[1])), fit
