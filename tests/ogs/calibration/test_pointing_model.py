"""The pointing model: its fit recovers a mount's terms (as the simulation's rigorous mount
applies them), its encoder target inverts it, and bad fits are refused by name."""

from __future__ import annotations

import math

import numpy as np
import pytest

from satqkd_core.errors import InputError
from satqkd_ogs.calibration.pointing_model import PointingModel, fit_pointing_model
from sim_backends.sky import MountModel, _enu, sky_offset_urad

TRUE_MOUNT = MountModel(
    az_zero_urad=-60.0,
    el_zero_urad=45.0,
    axis_tilt_urad=80.0,
    axis_tilt_towards_az_deg=200.0,
    collimation_urad=-25.0,
    non_perpendicularity_urad=18.0,
    tube_flexure_urad=-30.0,
)


def observed_offsets(mount: MountModel, az: np.ndarray, el: np.ndarray) -> np.ndarray:
    """True line of sight minus the encoder direction (sky x, y) at each encoder position."""
    return np.array(
        [
            sky_offset_urad(mount.boresight(a, e), _enu(math.radians(a), math.radians(e)))
            for a, e in zip(az, el, strict=True)
        ]
    )


def test_fit_recovers_every_mount_term_of_the_rigorous_mount() -> None:
    draw = np.random.default_rng(3)
    az, el = draw.uniform(0.0, 360.0, 30), draw.uniform(15.0, 85.0, 30)
    offsets = observed_offsets(TRUE_MOUNT, az, el) + draw.normal(0.0, 0.3, (30, 2))
    fit = fit_pointing_model(az, el, offsets[:, 0], offsets[:, 1])
    for term, value in TRUE_MOUNT.tpoint_terms_urad().items():
        sigma = fit.uncertainty_urad[term]
        assert 0.0 < sigma < 2.0, term
        assert fit.model.terms_urad[term] == pytest.approx(value, abs=4.0 * sigma), term
    assert abs(fit.model.terms_urad["RF"]) < 1.0
    assert fit.residual_rms_urad == pytest.approx(0.3, rel=0.4)


def test_encoder_target_puts_the_true_line_of_sight_on_the_target() -> None:
    model = PointingModel(TRUE_MOUNT.tpoint_terms_urad())
    for az, el in ((10.0, 20.0), (135.0, 55.0), (290.0, 80.0)):
        encoder = model.encoder_target(az, el)
        seen = TRUE_MOUNT.boresight(*encoder)
        miss = sky_offset_urad(seen, _enu(math.radians(az), math.radians(el)))
        assert math.hypot(*miss) < 0.05
        unaided = sky_offset_urad(
            TRUE_MOUNT.boresight(az, el), _enu(math.radians(az), math.radians(el))
        )
        assert math.hypot(*unaided) > 10.0


def test_too_few_or_degenerate_targets_are_refused() -> None:
    with pytest.raises(InputError, match="observe more targets"):
        fit_pointing_model(np.array([10.0, 20.0]), np.array([30.0, 40.0]), np.zeros(2), np.zeros(2))
    same = np.full(10, 45.0)
    with pytest.raises(InputError, match="spread them"):
        fit_pointing_model(same, same, np.zeros(10), np.zeros(10))
    with pytest.raises(InputError, match="unknown pointing term"):
        PointingModel({"XX": 1.0})
