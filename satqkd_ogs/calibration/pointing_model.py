"""An alt-azimuth mount's pointing model as TPOINT-style terms, its least-squares fit and its
use by the program track.

The terms are those of P. T. Wallace's TPOINT for an alt-az mount (TPOINT Software, "TPOINT
Telescope Pointing Analysis System", sec. 4, the basic alt-az model; also Wallace, "A rigorous
algorithm for telescope pointing", SPIE 4848 (2002)) plus a refraction coefficient. Here every
term gives the TRUE line of sight MINUS the encoder reading (A, E), in urad, first order:

    dA = IA + CA / cos E + NPAE tan E + AN sin A tan E - AW cos A tan E
    dE = IE + AN cos A + AW sin A + TF cos E + RF cot E

IA, IE: encoder zero points; CA: collimation (left-right) error; NPAE: non-perpendicularity of
the elevation axis to the azimuth axis; AN, AW: tilt of the azimuth axis towards north and
towards east; TF: tube flexure (Hooke's law, cos E); RF: refraction left over by the model used
to predict the stars (Bennett's formula at the given temperature and pressure). The sky offsets
fitted are (dA cos E, dE), so every term enters linearly and the fit is one numpy least-squares
solve; uncertainties are the square roots of the diagonal of s^2 (J^T J)^-1 with s^2 the
residual variance per coordinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from satqkd_core.errors import InputError

__all__ = ["MOUNT_TERMS", "TERMS", "PointingFit", "PointingModel", "fit_pointing_model"]

URAD_PER_DEG = math.pi / 180.0 * 1e6
#: every fitted term; MOUNT_TERMS are the ones the mount itself owns (applied in a pass)
TERMS = ("IA", "IE", "CA", "NPAE", "AN", "AW", "TF", "RF")
MOUNT_TERMS = ("IA", "IE", "CA", "NPAE", "AN", "AW", "TF")
# tan E grows without bound at the zenith: terms are evaluated no closer than this to it
_MAX_EL_DEG = 89.0


def _columns(az_deg: np.ndarray, el_deg: np.ndarray) -> np.ndarray:
    """(n, 2, len(TERMS)): d(sky x, sky y) / d(term) at encoder positions."""
    a = np.radians(az_deg)
    e = np.radians(np.minimum(el_deg, _MAX_EL_DEG))
    sa, ca, se, ce = np.sin(a), np.cos(a), np.sin(e), np.cos(e)
    zero, one = np.zeros_like(a), np.ones_like(a)
    x = [ce, zero, one, se, sa * se, -ca * se, zero, zero]
    y = [zero, one, zero, zero, ca, sa, ce, ce / np.maximum(se, 1e-3)]
    return np.stack([np.stack(x, axis=-1), np.stack(y, axis=-1)], axis=1)


@dataclass(frozen=True)
class PointingModel:
    """Fitted terms (urad); absent terms are zero."""

    terms_urad: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.terms_urad.items():
            if name not in TERMS:
                raise InputError(f"unknown pointing term {name!r} (terms: {', '.join(TERMS)})")
            if not math.isfinite(value):
                raise InputError(f"pointing term {name} must be finite, got {value!r}")

    def vector(self, names: tuple[str, ...] = TERMS) -> np.ndarray:
        """Get: the terms in TERMS order, those not in `names` as zero."""
        return np.array([self.terms_urad.get(t, 0.0) if t in names else 0.0 for t in TERMS])

    def sky_offset_urad(
        self, az_deg: float, el_deg: float, names: tuple[str, ...] = TERMS
    ) -> tuple[float, float]:
        """Get: (x, y) of the true line of sight minus the encoder direction, in urad."""
        offset = _columns(np.array([az_deg]), np.array([el_deg]))[0] @ self.vector(names)
        return float(offset[0]), float(offset[1])

    def encoder_target(
        self, az_deg: float, el_deg: float, names: tuple[str, ...] = MOUNT_TERMS
    ) -> tuple[float, float]:
        """Get: the encoder (az, el) in degrees that puts the true line of sight on (az, el)
        (two fixed-point steps: the terms change by < 1e-6 of themselves between them)."""
        az, el = az_deg, el_deg
        for _ in range(2):
            dx, dy = self.sky_offset_urad(az, el, names)
            cos_el = max(math.cos(math.radians(min(el, _MAX_EL_DEG))), 1e-3)
            az = az_deg - dx / cos_el / URAD_PER_DEG
            el = el_deg - dy / URAD_PER_DEG
        return az, el


@dataclass(frozen=True)
class PointingFit:
    """A fitted model, its uncertainties and the residuals of each observation (urad)."""

    model: PointingModel
    uncertainty_urad: dict[str, float]
    residual_x_urad: np.ndarray
    residual_y_urad: np.ndarray

    @property
    def residual_rms_urad(self) -> float:
        """Get: rms of the residual sky offsets (both axes together)."""
        total = np.concatenate([self.residual_x_urad, self.residual_y_urad])
        return float(np.sqrt(np.mean(total**2))) if total.size else 0.0


def fit_pointing_model(
    az_deg: np.ndarray,
    el_deg: np.ndarray,
    offset_x_urad: np.ndarray,
    offset_y_urad: np.ndarray,
    terms: tuple[str, ...] = TERMS,
) -> PointingFit:
    """Get: the terms fitted to observed offsets (true line of sight minus encoder, sky x/y)."""
    arrays = [
        np.asarray(v, dtype=np.float64) for v in (az_deg, el_deg, offset_x_urad, offset_y_urad)
    ]
    n = arrays[0].size
    if any(a.shape != (n,) for a in arrays) or not all(np.all(np.isfinite(a)) for a in arrays):
        raise InputError("az, el and offsets must be finite 1-D arrays of one length")
    unknown = [t for t in terms if t not in TERMS]
    if unknown:
        raise InputError(f"unknown pointing terms {unknown} (terms: {', '.join(TERMS)})")
    if 2 * n <= len(terms):
        raise InputError(f"{n} observations cannot fit {len(terms)} terms: observe more targets")
    index = [TERMS.index(t) for t in terms]
    design = _columns(arrays[0], arrays[1])[:, :, index].reshape(2 * n, len(terms))
    observed = np.stack([arrays[2], arrays[3]], axis=1).reshape(2 * n)
    solution, _, rank, _ = np.linalg.lstsq(design, observed, rcond=None)
    if rank < len(terms):
        raise InputError(
            "the targets do not separate the terms (spread them in azimuth and elevation)"
        )
    residual = observed - design @ solution
    variance = float(residual @ residual) / (2 * n - len(terms))
    covariance = variance * np.linalg.inv(design.T @ design)
    model = PointingModel({t: float(v) for t, v in zip(terms, solution, strict=True)})
    sigma = {t: float(math.sqrt(max(covariance[k, k], 0.0))) for k, t in enumerate(terms)}
    return PointingFit(model, sigma, residual[0::2].copy(), residual[1::2].copy())
