"""`satqkd sim night`: one station, several missions, one night. The default run checks the
scenario, the search and the station's schedule of the shipped night (no pass flown); the
whole night, every pass with the real daemons, is `-m slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from satqkd.cli import main
from satqkd.night_plot import timeline_table
from satqkd.night_run import load_night, pass_scenario, plan_night
from satqkd_runtime.keystore import KeyStore

REPO = Path(__file__).resolve().parents[2]
NIGHT = REPO / "configs" / "scenarios" / "night-graz-three-missions.yaml"


@pytest.fixture(scope="module")
def planned():
    night = load_night(NIGHT)
    return night, plan_night(night)


def test_the_station_holds_one_pass_per_mission_and_refuses_the_overlap(planned) -> None:
    _, plan = planned
    assert [p.mission for p in plan.passes] == ["eagle1", "jinan1", "micius2020-bbm92"]
    aos = [p.window.aos_unix_s for p in plan.passes]
    los = [p.window.los_unix_s for p in plan.passes]
    # another mission's pass starts no earlier than slew + reconfiguration after a LOS
    assert all(aos[k + 1] - los[k] >= 180.0 for k in range(len(aos) - 1))
    # eagle1's best pass comes minutes after jinan1's (the same assumed orbit plane): refused
    (refused,) = plan.refused
    assert refused["mission"] == "eagle1" and refused["max_elevation_deg"] == 32.0
    assert "overlaps plan" in refused["reason"] and "(jinan1, AOS" in refused["reason"]
    # jinan1 is listed before eagle1: it took its best pass, eagle1 its next
    best = {name: windows[0] for name, windows in plan.candidates.items()}
    jinan = next(p for p in plan.passes if p.mission == "jinan1")
    assert jinan.window == best["jinan1"]


def test_each_pass_flies_its_own_profile_centred_on_culmination(planned) -> None:
    night, plan = planned
    for index, night_pass in enumerate(plan.passes, start=1):
        scenario = pass_scenario(night, night_pass, index)
        assert scenario.mission.name == night_pass.mission
        assert scenario.station.name == "graz-interoperable"
        assert scenario.mission.orbit.epoch_utc == night.config.night.start_utc
        start = night_pass.window.aos_unix_s + night_pass.start_after_aos_s
        middle = start + night_pass.max_duration_s / 2.0
        assert middle == pytest.approx(night_pass.window.culmination_unix_s, abs=1e-6)
    bbm92 = pass_scenario(night, plan.passes[2], 3)
    assert bbm92.mission.protocol.family == "bbm92"
    assert bbm92.scenario.simulation.benches.station == "sim-station-bbm92"
    seeds = {p.seed for p in plan.passes}
    assert len(seeds) == 3  # every pass's randomness from its own stream of the night's seed


def test_a_mistake_in_the_night_scenario_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "night.yaml"
    text = NIGHT.read_text().replace("mission: jinan1", "mission: jinan9")
    bad.write_text(text)
    assert main(["sim", "night", str(bad), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missions.0.mission: no mission profile 'jinan9'" in err[0]
    twice = tmp_path / "twice.yaml"
    twice.write_text(NIGHT.read_text().replace("mission: eagle1", "mission: jinan1"))
    assert main(["sim", "night", str(twice), "--quiet"]) == 2
    assert "jinan1 repeated" in capsys.readouterr().err


def test_a_used_output_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "night.json").write_text("{}")
    assert main(["sim", "night", str(NIGHT), "--out", str(tmp_path), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_the_timeline_table_says_what_became_of_each_candidate_pass() -> None:
    report = {
        "candidates": {
            "a": [{"aos_utc": "T1", "los_utc": "T2", "max_elevation_deg": 40.0}],
            "b": [
                {"aos_utc": "T1", "los_utc": "T2", "max_elevation_deg": 30.0},
                {"aos_utc": "T5", "los_utc": "T6", "max_elevation_deg": 20.0},
                {"aos_utc": "T7", "los_utc": "T8", "max_elevation_deg": 10.0},
            ],
        },
        "passes": [
            {
                "mission": "a",
                "aos_utc": "T1",
                "qkd_start_utc": "Q1",
                "qkd_stop_utc": "Q2",
                "secret_key_bits": 10,
            },
            {
                "mission": "b",
                "aos_utc": "T5",
                "qkd_start_utc": "Q5",
                "qkd_stop_utc": "Q6",
                "secret_key_bits": 0,
            },
        ],
        "refused": [{"mission": "b", "aos_utc": "T1", "reason": "overlaps"}],
    }
    table = timeline_table(report)
    assert list(table["outcome"]) == ["flown", "refused", "flown", "not needed"]
    assert table.loc[1, "reason"] == "overlaps"


@pytest.mark.slow
def test_a_whole_night_three_missions_each_with_its_profile_and_keys(tmp_path: Path) -> None:
    out = tmp_path / "night"
    assert main(["sim", "night", str(NIGHT), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "night.json").read_text())
    assert [p["mission"] for p in report["passes"]] == ["eagle1", "jinan1", "micius2020-bbm92"]
    protocols = [p["protocol"] for p in report["passes"]]
    assert protocols == ["decoy-bb84", "decoy-bb84", "bbm92"]
    for row in report["passes"]:
        assert row["secret_key_bits"] > 0 and row["digests_equal"], row
        assert row["profile_switched"] and row["station_profile"].startswith(row["mission"])
        assert (out / row["report"]).is_file()
    assert report["station_missions"]["profile_switches"] == 3
    assert report["station_missions"]["plans_refused"] == 0  # the schedule was kept
    for name, total in report["missions"].items():
        store = KeyStore(out / total["station_key_store"])
        assert store.total_bits() == total["secret_key_bits"] > 0, name
    assert (out / "night-timeline.png").stat().st_size > 10_000
