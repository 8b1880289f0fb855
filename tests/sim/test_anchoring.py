"""The Micius link budget stays anchored on the published loss against range.

Liao et al., Nature 549, 43 (2017), Fig. 3 (link loss, detectors excluded), as digitised by the
authors of Baidu's QNET (QCompute, Extensions/QuantumNetwork/examples/data/
micius2017_link_efficiency.csv); docs/validation.md. The link budget alone, no daemons.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from satqkd.config import load_scenario
from satqkd.pass_physics import choose_pass, link_timeline
from sim_backends.atmosphere import slant_transmittance

SCENARIO = Path(__file__).resolve().parents[2] / "configs/scenarios/micius-xinglong-2016.yaml"
FIG3_LOSS_DB = {645: 29.8, 750: 30.9, 850: 31.8, 1020: 33.4, 1100: 36.0, 1150: 37.3, 1190: 38.3}


@pytest.fixture(scope="module")
def descending_link() -> tuple[np.ndarray, np.ndarray, object]:
    scenario = load_scenario(SCENARIO)
    tle, window = choose_pass(scenario)
    times = np.arange(math.ceil(window.aos_unix_s), math.floor(window.los_unix_s), 1.0)
    link = link_timeline(scenario, tle, window, times)
    first = int(np.argmin(link.geometry.range_m))  # culmination to LOS, as Liao's Fig. 3
    budget = link.budget
    loss = (budget.total_loss_db - budget.scintillation_loss_db)[first:]
    return link.geometry.range_m[first:] / 1e3, loss, budget


def test_micius_loss_against_range_within_3_db_of_liao_2017(descending_link) -> None:
    range_km, loss_db, _ = descending_link
    for published_range, published_loss in FIG3_LOSS_DB.items():
        model = loss_db[int(np.argmin(np.abs(range_km - published_range)))]
        assert abs(model - published_loss) <= 3.0, (published_range, model, published_loss)


def test_the_terms_that_close_the_gap_stay_inside_liao_2017_bounds(descending_link) -> None:
    range_km, _, budget = descending_link
    at_1200 = len(budget.total_loss_db) - len(range_km) + int(np.argmin(np.abs(range_km - 1200)))
    # "atmospheric absorption and turbulence 3 dB to 8 dB", "pointing error less than 3 dB"
    atmosphere_and_turbulence = (
        budget.atmospheric_loss_db[at_1200]
        + budget.field_stop_loss_db[at_1200]
        + budget.turbulence_spread_loss_db[at_1200]
    )
    assert 3.0 <= atmosphere_and_turbulence <= 8.0
    assert 0.0 < budget.pointing_loss_db[at_1200] < 3.0
    # diffraction "estimated to be 22 dB" at 1200 km (model within 2 dB)
    assert abs(budget.geometric_loss_db[at_1200] - 22.0) <= 2.0
    # a downlink's beam meets the air ~10 m wide: turbulence spreading and wander are negligible
    assert np.all(budget.turbulence_spread_loss_db < 0.05)


def test_lowtran_table_follows_wavelength_altitude_and_visibility() -> None:
    zenith = np.array([90.0])
    clear = slant_transmittance(848.62, 900.0, 23.0, "midlatitude_winter", zenith)[0]
    hazy = slant_transmittance(848.62, 900.0, 5.0, "midlatitude_winter", zenith)[0]
    sea_level = slant_transmittance(848.62, 0.0, 23.0, "midlatitude_winter", zenith)[0]
    telecom = slant_transmittance(1550.0, 900.0, 23.0, "midlatitude_winter", zenith)[0]
    low = slant_transmittance(848.62, 900.0, 23.0, "midlatitude_winter", np.array([20.0]))[0]
    # clear sky at 850 nm loses 0.5-1 dB at zenith (PHYSICS.md); haze several times more
    assert 0.5 <= -10 * math.log10(clear) <= 1.0
    assert -10 * math.log10(hazy) > 3 * -10 * math.log10(clear)
    assert sea_level < clear < telecom
    assert low < clear**2.5
