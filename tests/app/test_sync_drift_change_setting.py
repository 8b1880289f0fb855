"""The mission's bound on the payload clock's drift change reaches the station's tracker."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from satqkd.config import ConfigError, load_scenario, station_path
from satqkd.wiring import ogs_settings
from satqkd_core.sync import DEFAULT_DRIFT_CHANGE_PPB_PER_S

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _scenario_with(tmp_path: Path, time_sync: dict) -> Path:
    root = tmp_path / "configs"
    for sub in ("missions", "stations", "scenarios"):
        (root / sub).mkdir(parents=True)
        for f in (CONFIGS / sub).glob("*.yaml"):
            (root / sub / f.name).write_text(f.read_text())
    mission = root / "missions" / "jinan1.yaml"
    data = yaml.safe_load(mission.read_text())
    data["time_sync"].update(time_sync)
    mission.write_text(yaml.safe_dump(data))
    return root / "scenarios" / "jinan1-xinglong-clear.yaml"


def test_the_mission_drift_change_bound_reaches_the_station_settings(tmp_path: Path) -> None:
    shipped = load_scenario(CONFIGS / "scenarios" / "jinan1-xinglong-clear.yaml")
    settings = ogs_settings(shipped.mission, shipped.station, station_path(shipped))
    assert settings.sync_drift_change_ppb_per_s == DEFAULT_DRIFT_CHANGE_PPB_PER_S
    scenario = load_scenario(_scenario_with(tmp_path, {"drift_change_ppb_per_s": 0.001}))
    settings = ogs_settings(scenario.mission, scenario.station, station_path(scenario))
    assert settings.sync_drift_change_ppb_per_s == 0.001


def test_a_negative_drift_change_bound_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="drift_change_ppb_per_s"):
        load_scenario(_scenario_with(tmp_path, {"drift_change_ppb_per_s": -1.0}))
