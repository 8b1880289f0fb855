"""The beam and receiver conventions a profile selects (sim_backends.link.TRUNCATIONS).

A Gaussian beam of 1/e^2 radius w through a clear annulus of radii b < a passes
exp(-2 b^2 / w^2) - exp(-2 a^2 / w^2) of its power (without obscuration 1 - exp(-2 a^2 / w^2),
e.g. Klein & Degnan, Appl. Opt. 13, 2134 (1974)); the tests check the model against that
closed form and against a direct numerical integration of the Gaussian over the aperture.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from satqkd.config import load_scenario
from satqkd.pass_physics import choose_pass, link_timeline
from satqkd_core.ephemeris import Geometry
from satqkd_core.errors import InputError
from sim_backends.link import (
    Atmosphere,
    Background,
    ReceiverOptics,
    TransmitterOptics,
    link_budget,
    transmitted_fraction,
)

REPO = Path(__file__).resolve().parents[2]


def _tx(**kw: object) -> TransmitterOptics:
    args = {
        "wavelength_nm": 850.0,
        "aperture_diameter_m": 0.3,
        "divergence_urad": 10.0,
        "optics_efficiency": 1.0,
    }
    return TransmitterOptics(**{**args, **kw})


def _numerical_fraction(a: float, b: float, w: float) -> float:
    """Power of a unit Gaussian beam 2/(pi w^2) exp(-2 r^2/w^2) on the annulus b < r < a."""
    r = np.linspace(b, a, 200_001)
    integrand = 4.0 / w**2 * np.exp(-2.0 * r**2 / w**2) * r  # 2 pi r x intensity
    return float(np.sum((integrand[1:] + integrand[:-1]) * np.diff(r)) / 2.0)


@pytest.mark.parametrize("a_over_w", [0.5, 1.0, 1.5, 2.0])
def test_a_clipped_beam_passes_the_truncated_gaussian_fraction(a_over_w: float) -> None:
    a = 0.15
    tx = _tx(truncation="clipped", waist_radius_m=a / a_over_w)
    expected = 1.0 - math.exp(-2.0 * a_over_w**2)
    assert transmitted_fraction(tx) == pytest.approx(expected, rel=1e-12)
    assert transmitted_fraction(tx) == pytest.approx(_numerical_fraction(a, 0.0, a / a_over_w))


def test_an_obscured_clipped_aperture_passes_the_annulus_and_unclipped_passes_all() -> None:
    tx = _tx(truncation="clipped", obscuration_diameter_m=0.1)  # b = 0.05, a = w = 0.15
    expected = math.exp(-2.0 * (0.05 / 0.15) ** 2) - math.exp(-2.0)
    assert transmitted_fraction(tx) == pytest.approx(expected, rel=1e-12)
    assert transmitted_fraction(tx) == pytest.approx(_numerical_fraction(0.15, 0.05, 0.15))
    assert transmitted_fraction(_tx()) == 1.0


def _geometry(range_km: float) -> Geometry:
    return Geometry(
        unix_s=np.array([0.0]),
        range_m=np.array([range_km * 1e3]),
        range_rate_m_s=np.zeros(1),
        elevation_deg=np.array([60.0]),
        azimuth_deg=np.zeros(1),
        sat_speed_m_s=np.full(1, 7600.0),
        point_ahead_urad=np.full(1, 50.0),
    )


def test_clipping_adds_its_loss_to_the_geometric_term_and_the_default_is_unclipped() -> None:
    rx = ReceiverOptics(1.0, 0.5, 100.0, central_obscuration_diameter_m=0.2)

    def geometric(tx: TransmitterOptics) -> float:
        budget = link_budget(_geometry(800.0), tx, rx, Atmosphere(), Background(), 0.0, None)
        return float(budget.geometric_loss_db[0])

    default, clipped = geometric(_tx()), geometric(_tx(truncation="clipped"))
    # a waist equal to the aperture radius (a = w): 1 - exp(-2) passes, 0.63 dB
    assert clipped - default == pytest.approx(-10.0 * math.log10(1.0 - math.exp(-2.0)))
    # the receiver's central obscuration: the Gaussian spot on the annulus 0.1 < r < 0.5 m
    w = math.hypot(0.15, 5e-6 * 800e3)
    annulus = math.exp(-2.0 * 0.1**2 / w**2) - math.exp(-2.0 * 0.5**2 / w**2)
    assert default == pytest.approx(-10.0 * math.log10(annulus))


def test_a_profile_without_the_new_keys_keeps_todays_convention() -> None:
    scenario = load_scenario(REPO / "configs/scenarios/micius-xinglong-2016.yaml")
    assert scenario.mission.transmitter.truncation == "none"
    tle, window = choose_pass(scenario)
    times = np.array([math.ceil(window.aos_unix_s) + 200.0])
    link = link_timeline(scenario, tle, window, times)
    tx = scenario.mission.transmitter
    clipped = scenario.model_copy(
        update={
            "mission": scenario.mission.model_copy(
                update={"transmitter": tx.model_copy(update={"truncation": "clipped"})}
            )
        }
    )
    link_clipped = link_timeline(clipped, tle, window, times)
    step = link_clipped.budget.geometric_loss_db - link.budget.geometric_loss_db
    assert step[0] == pytest.approx(-10.0 * math.log10(1.0 - math.exp(-2.0)))


def test_bad_conventions_are_refused_by_name() -> None:
    with pytest.raises(InputError, match="truncation"):
        _tx(truncation="top_hat")
    with pytest.raises(InputError, match="needs truncation 'clipped'"):
        _tx(obscuration_diameter_m=0.05)
    with pytest.raises(InputError, match="smaller than aperture"):
        _tx(truncation="clipped", obscuration_diameter_m=0.3)
