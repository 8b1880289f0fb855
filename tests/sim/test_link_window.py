"""`satqkd sim link` predicts the pass `sim pass` would run: its QKD window and options, the
scenario's attacks, and the key the station's post-processing gives on the expected counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from satqkd.config import load_scenario
from satqkd.link_cli import link_report, run_sim_link

SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"


def test_sim_link_honours_the_window_options_and_predicts_a_key(tmp_path: Path) -> None:
    config = str(SCENARIOS / "jinan1-xinglong-clear.yaml")
    assert run_sim_link(config, str(tmp_path), start_after_aos_s=190.0, max_duration_s=20.0) == 0
    report = json.loads((tmp_path / "link.json").read_text())
    summary = report["summary"]
    assert summary["qkd_window_s"] == 20.0
    assert summary["qkd_start_after_aos_s"] >= 190.0
    assert sum(step["in_qkd_window"] for step in report["steps"]) == 20
    assert summary["expected_secret_key_bits"] > 0 and summary["expected_leak_ec_bits"] > 0
    assert run_sim_link(config, str(tmp_path / "bad"), max_duration_s=-1.0) == 2


def test_sim_link_applies_the_scenarios_attack() -> None:
    scenario = load_scenario(SCENARIOS / "jinan1-xinglong-intercept-resend.yaml")
    report, _ = link_report(scenario, max_duration_s=10.0)
    assert report["attacks"]["intercept_resend_fraction"] == 1.0
    assert 0.24 < report["summary"]["expected_qber"] < 0.27
    assert report["summary"]["expected_secret_key_bits"] == 0
    assert "qber" in report["summary"]["expected_no_key_reason"]


def test_a_micius_era_day_pass_is_predicted_to_give_no_key() -> None:
    report, _ = link_report(load_scenario(SCENARIOS / "micius-xinglong-2016-day.yaml"), 30.0)
    steps = [s for s in report["steps"] if s["in_qkd_window"]]
    # the field stop sees daylight worth 1e4 times the detectors' 25 Hz dark counts
    assert min(s["background_counts_per_s"] for s in steps) > 1e5
    assert report["summary"]["expected_secret_key_bits"] == 0


def test_a_station_outside_the_lowtran_table_is_one_line_naming_the_key(
    tmp_path: Path, capsys
) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(SCENARIOS.parent, configs)
    station = configs / "stations" / "xinglong-2016.yaml"
    station.write_text(station.read_text().replace("altitude_m: 900.0", "altitude_m: 4000.0"))
    scenario = configs / "scenarios" / "micius-xinglong-2016.yaml"
    assert run_sim_link(str(scenario), str(tmp_path / "out")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "location.altitude_m" in error and "lowtran7" in error
