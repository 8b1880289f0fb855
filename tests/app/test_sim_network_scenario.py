"""`satqkd sim network`: the network scenario, the weather draw, crediting and the fibre leg
of the orchestration, with small inputs (the full runs are in test_sim_network_run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from satqkd.cli import main
from satqkd.config import ConfigError
from satqkd.network_run import draw_weather
from satqkd.network_scenario import load_network_scenario
from satqkd_occ import CloudForecast

REPO = Path(__file__).resolve().parents[2]
RELAY = REPO / "configs" / "scenarios" / "relay-xinglong-graz.yaml"
WEEK = REPO / "configs" / "scenarios" / "network-week-3-stations.yaml"


@pytest.fixture
def variant(tmp_path: Path):
    """A copy of a shipped network scenario with some top-level keys changed."""

    def make(source: Path, **changes: object) -> Path:
        data = yaml.safe_load(source.read_text())
        data.update(changes)
        path = tmp_path / source.name
        path.write_text(yaml.safe_dump(data))
        return path

    return make


def test_the_shipped_scenarios_load_and_map_fibre_users_to_their_stations() -> None:
    week = load_network_scenario(WEEK)
    assert week.gateway("beijing-bank") == "xinglong"
    assert week.gateway("vienna-bank") == "graz"
    assert week.gateway("micius") == "micius"
    occ = {d.id: d.endpoints for d in week.occ_config().demand}
    assert occ["beijing-vienna"] == ("xinglong", "graz")
    assert occ["urumqi-vienna"] == ("nanshan", "graz")
    relay = load_network_scenario(RELAY, seed=9)
    assert relay.seed == 9 and relay.station_names == ["xinglong", "graz"]


def test_a_single_pass_scenario_is_refused_naming_the_kind(capsys, tmp_path: Path) -> None:
    pass_scenario = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
    status = main(["sim", "network", str(pass_scenario), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("satqkd: ") and "kind: expected 'network'" in err
    assert "Traceback" not in err


def test_a_link_to_an_unknown_node_is_refused(variant) -> None:
    path = variant(
        WEEK,
        fibre={"users": ["u"], "links": [{"a": "graz", "b": "nowhere", "rate_bps": 1.0}]},
    )
    with pytest.raises(ConfigError, match=r"fibre.links.0: 'nowhere' is neither a station"):
        load_network_scenario(path)


def test_a_demand_two_users_of_one_station_make_is_refused(variant) -> None:
    path = variant(
        WEEK,
        demand=[
            {
                "id": "local",
                "endpoints": ["beijing-bank", "beijing-node"],
                "bits": 256,
                "deadline_utc": "2026-12-13T00:00:00Z",
            }
        ],
    )
    with pytest.raises(ConfigError, match="both end points are served by xinglong"):
        load_network_scenario(path)


def test_a_demand_between_a_fibre_user_and_a_satellite_or_its_own_station_is_refused(
    variant, capsys, tmp_path: Path
) -> None:
    def demand(*endpoints: str) -> list[dict[str, object]]:
        return [{"id": "d", "endpoints": list(endpoints), "bits": 256,
                 "deadline_utc": "2026-12-13T00:00:00Z"}]  # fmt: skip

    path = variant(WEEK, demand=demand("beijing-bank", "micius"))
    with pytest.raises(ConfigError, match="'beijing-bank' is a fibre user and 'micius' a sat"):
        load_network_scenario(path)
    status = main(["sim", "network", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "the station 'xinglong'" in err
    assert not (tmp_path / "o").exists()
    path = variant(WEEK, demand=demand("xinglong", "beijing-bank"))
    with pytest.raises(ConfigError, match="both end points are served by xinglong"):
        load_network_scenario(path)
    # a user and a station behind another fibre network is a relay: accepted
    path = variant(WEEK, demand=demand("beijing-bank", "graz"))
    assert load_network_scenario(path).occ_config().demand[0].endpoints == ("xinglong", "graz")


def test_a_user_without_a_route_to_a_station_is_refused(variant) -> None:
    path = variant(
        WEEK,
        fibre={"users": ["island", "rock"], "links": [{"a": "island", "b": "rock", "rate_bps": 1}]},
        demand=[
            {
                "id": "d",
                "endpoints": ["island", "graz"],
                "bits": 256,
                "deadline_utc": "2026-12-13T00:00:00Z",
            }
        ],
    )
    with pytest.raises(ConfigError, match="'island' reaches no station over the fibre"):
        load_network_scenario(path)


def test_weather_is_drawn_from_the_seed_with_the_forecast_probability() -> None:
    week = load_network_scenario(WEEK)
    forecast = CloudForecast(
        {k: dict(v) for k, v in week.weather.nights.items()}, week.weather.default_cloud_probability
    )
    nights = {(s, f"2026-12-{day:02d}") for s in week.station_names for day in range(7, 14)}
    first = draw_weather(3, forecast, nights)
    assert first == draw_weather(3, forecast, nights)
    assert first != draw_weather(4, forecast, nights)
    assert first["graz", "2026-12-08"][0] == 0.4
    assert first["xinglong", "2026-12-12"][0] == 0.3  # the default
    # one night is drawn the same whatever other nights are drawn with it
    assert draw_weather(3, forecast, {("graz", "2026-12-09")}) == {
        ("graz", "2026-12-09"): first["graz", "2026-12-09"]
    }
    assert all(cloudy for _, cloudy in draw_weather(3, CloudForecast({}, 1.0), nights).values())
    assert not any(cloudy for _, cloudy in draw_weather(3, CloudForecast({}, 0.0), nights).values())
