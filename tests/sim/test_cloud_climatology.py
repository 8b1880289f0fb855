"""Cloud per site and month: the shipped statistics, the seeded draw of a scenario's night and
the OCC's forecast falling back to them (sim_backends.cloud_climatology)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from satqkd.config import ConfigError, Scenario, load_scenario
from satqkd.pass_physics import choose_pass, link_timeline, weather_class
from satqkd_core.errors import InputError
from satqkd_occ import CloudForecast
from sim_backends.cloud_climatology import (
    OVERCAST_ZENITH_OPTICAL_DEPTH,
    climate_sites,
    draw_weather,
    site_climate,
)

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "configs/scenarios/micius-xinglong-2016.yaml"


def test_xinglong_keeps_the_published_annual_fractions_and_the_winter_is_clearest() -> None:
    climate = site_climate("xinglong")
    # Zhang et al., PASP 127, 1292 (2015): 32 % photometric, 63 % spectroscopic nights a year
    assert np.mean(climate.p_clear) == pytest.approx(0.32, abs=0.005)
    usable = np.add(climate.p_clear, climate.p_thin_cloud)
    assert np.mean(usable) == pytest.approx(0.63, abs=0.005)
    # Yao et al., RAA 12, 772 (2012): December best, July and August worst
    assert climate.p_clear[11] > 3 * climate.p_clear[6]
    assert {"xinglong", "stellenbosch", "jinan", "graz"} <= set(climate_sites())
    assert climate.cloud_probability(12) == pytest.approx(1 - climate.p_clear[11])


def test_a_draw_splits_the_unit_interval_clear_thin_overcast() -> None:
    climate = site_climate("xinglong")
    clear, thin = climate.p_clear[11], climate.p_thin_cloud[11]
    assert draw_weather(climate, 12, clear - 1e-9) == "clear"
    assert draw_weather(climate, 12, clear + 1e-9) == "thin_cloud"
    assert draw_weather(climate, 12, clear + thin + 1e-9) == "overcast"
    with pytest.raises(InputError, match="month"):
        draw_weather(climate, 13, 0.5)
    with pytest.raises(InputError, match="no cloud climatology for site 'mars'"):
        site_climate("mars")


def _with(scenario: Scenario, **weather: object) -> Scenario:
    sc = scenario.scenario
    return scenario.model_copy(
        update={
            "scenario": sc.model_copy(update={"weather": sc.weather.model_copy(update=weather)})
        }
    )


def _seeded(scenario: Scenario, seed: int) -> Scenario:
    return scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"seed": seed})}
    )


@pytest.fixture(scope="module")
def base() -> tuple[Scenario, object, object]:
    scenario = load_scenario(SCENARIO)
    tle, window = choose_pass(scenario)
    return scenario, tle, window


def test_the_seed_draws_the_night_at_the_months_rate(base) -> None:
    scenario, _, window = base
    climatology = _with(scenario, profile="climatology", month=7)
    draws = [weather_class(_seeded(climatology, seed), window) for seed in range(600)]
    climate = site_climate("xinglong")
    p = climate.p_clear[6]
    clear = draws.count("clear") / len(draws)
    assert abs(clear - p) < 4 * math.sqrt(p * (1 - p) / len(draws))
    assert set(draws) == {"clear", "thin_cloud", "overcast"}
    # the same seed draws the same night
    assert weather_class(climatology, window) == weather_class(climatology, window)


def test_the_drawn_night_attenuates_as_its_class(base) -> None:
    scenario, tle, window = base
    times = np.array([math.ceil(window.aos_unix_s) + 150.0])

    def atmospheric_db(s: Scenario) -> float:
        return float(link_timeline(s, tle, window, times).budget.atmospheric_loss_db[0])

    by_class = {}
    climatology = _with(scenario, profile="climatology")
    for seed in range(40):
        drawn = _seeded(climatology, seed)
        by_class.setdefault(weather_class(drawn, window), drawn)
    assert set(by_class) == {"clear", "thin_cloud", "overcast"}
    clear = atmospheric_db(_with(by_class["clear"], profile="clear"))
    assert atmospheric_db(by_class["clear"]) == clear
    assert atmospheric_db(by_class["thin_cloud"]) == atmospheric_db(
        _with(by_class["thin_cloud"], profile="thin_cloud")
    )
    elevation = float(link_timeline(scenario, tle, window, times).geometry.elevation_deg[0])
    overcast_zenith_db = 10 * OVERCAST_ZENITH_OPTICAL_DEPTH / math.log(10)
    extra = atmospheric_db(by_class["overcast"]) - clear
    assert extra > overcast_zenith_db  # at least the zenith cloud, more along the slant
    assert extra < overcast_zenith_db / math.sin(math.radians(elevation)) + 1.0


def test_a_station_without_a_climate_site_is_refused_in_one_line(base) -> None:
    scenario, _, window = base
    station = scenario.station.model_copy(
        update={"atmosphere": scenario.station.atmosphere.model_copy(update={"climate_site": None})}
    )
    bare = _with(scenario, profile="climatology").model_copy(update={"station": station})
    with pytest.raises(ConfigError, match=r"needs the station's atmosphere\.climate_site"):
        weather_class(bare, window)


def test_the_occ_forecast_falls_back_to_the_month_and_a_night_forecast_wins() -> None:
    monthly = [site_climate("xinglong").cloud_probability(m) for m in range(1, 13)]
    forecast = CloudForecast({"xinglong": {"2026-12-08": 0.8}}, 0.3, {"xinglong": monthly})
    assert forecast.probability("xinglong", "2026-12-08") == 0.8
    assert forecast.probability("xinglong", "2026-07-02") == pytest.approx(monthly[6])
    assert forecast.probability("xinglong", "2026-12-09") == pytest.approx(monthly[11])
    assert forecast.probability("graz", "2026-12-09") == 0.3
    with pytest.raises(InputError, match="12 numbers"):
        CloudForecast(monthly={"xinglong": monthly[:11]})
    with pytest.raises(InputError, match="month 3 must be in"):
        CloudForecast(monthly={"xinglong": [0.1, 0.2, 1.5, *monthly[3:]]})


def test_the_occ_configuration_takes_each_stations_monthly_statistics() -> None:
    from satqkd.occ_cli import _climatology, _profiles, load_occ_config

    path = REPO / "configs/occ/jinan1-three-stations-week.yaml"
    config = load_occ_config(path)
    _, profiles = _profiles(config, path)
    monthly = _climatology(config, profiles, path)
    assert set(monthly) == {"xinglong", "graz", "stellenbosch"}
    assert monthly["xinglong"][11] == pytest.approx(1 - site_climate("xinglong").p_clear[11])
    bare = {
        **profiles,
        "graz": profiles["graz"].model_copy(
            update={
                "atmosphere": profiles["graz"].atmosphere.model_copy(update={"climate_site": None})
            }
        ),
    }
    with pytest.raises(ConfigError, match="climate_site in the station profile of graz"):
        _climatology(config, bare, path)
