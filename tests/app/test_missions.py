"""Mission profiles say everything that differs between satellites; a station says what it
provides; `satqkd missions check` tells which missions a station can serve and, if not, why."""

from __future__ import annotations

from pathlib import Path

import pytest

from satqkd.cli import main
from satqkd.config import (
    ConfigError,
    MissionConfig,
    MissionProfileConfig,
    StationConfig,
    load_model,
)
from satqkd.mission_compat import compatibility_problems, plan_refusal
from satqkd_core.station_schedule import PlannedPass

REPO = Path(__file__).resolve().parents[2]
MISSIONS = REPO / "configs" / "missions"
STATIONS = REPO / "configs" / "stations"


@pytest.mark.parametrize("name", sorted(p.name for p in MISSIONS.glob("*.yaml")))
def test_every_shipped_mission_profile_loads(name: str) -> None:
    profile = load_model(MissionProfileConfig, MISSIONS / name)
    assert profile.quantum_wavelength_nm > 0
    if profile.protocol.family == "decoy-bb84":  # the simulation's model loads it unchanged
        assert load_model(MissionConfig, MISSIONS / name).source.repetition_rate_hz > 0


@pytest.mark.parametrize("name", sorted(p.name for p in STATIONS.glob("*.yaml")))
def test_every_shipped_station_declares_capabilities(name: str) -> None:
    station = load_model(StationConfig, STATIONS / name)
    assert station.capabilities is not None
    assert station.capabilities.detector_channels >= len(station.detectors.efficiency)


def test_defaults_reproduce_todays_bb84_profile() -> None:
    profile = load_model(MissionConfig, MISSIONS / "jinan1.yaml")
    assert profile.protocol.family == "decoy-bb84"
    assert profile.time_sync.method == "pulsed-clock"
    assert profile.encoding.kind == "polarisation" and profile.encoding.bases == ("HV", "DA")
    assert profile.station_optics.detector_channels_per_basis == 2


def test_eagle1_kind_profile() -> None:
    eagle = load_model(MissionProfileConfig, MISSIONS / "eagle1.yaml")
    assert eagle.protocol.family == "decoy-bb84"
    assert eagle.encoding.kind == "time-bin"
    assert 1530.0 <= eagle.quantum_wavelength_nm <= 1565.0  # the telecom C-band
    assert eagle.classical_link is not None and eagle.classical_link.medium == "optical"


def test_bbm92_profile() -> None:
    bbm92 = load_model(MissionProfileConfig, MISSIONS / "micius2020-bbm92.yaml")
    assert bbm92.protocol.family == "bbm92"
    assert bbm92.protocol.finite_key_bound == "tomamichel2012"
    assert bbm92.time_sync.method == "cross-correlation"
    assert bbm92.source is None and bbm92.pair_source is not None
    assert bbm92.quantum_wavelength_nm == 810.0
    # the decoy-BB84 pass simulation does not take it for one of its own missions
    with pytest.raises(ConfigError, match="source: required key is missing"):
        load_model(MissionConfig, MISSIONS / "micius2020-bbm92.yaml")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            {"protocol": {"family": "bbm92", "finite_key_bound": "tomamichel2012"}},
            "needs a pair_source block and no source",
        ),
        ({"protocol": {"finite_key_bound": "tomamichel2012"}}, "not a bound for family"),
        ({"protocol": {"variant": "dual-downlink"}}, "dual-downlink needs family bbm92"),
        ({"encoding": {"kind": "time-bin", "bases": ["HV", "DA"]}}, "are not time-bin bases"),
        ({"encoding": {"bases": ["HV"]}}, "at least 2 different bases"),
    ],
)
def test_inconsistent_profile_named(edit: dict, expected: str) -> None:
    import yaml

    data = yaml.safe_load((MISSIONS / "jinan1.yaml").read_text())
    for key, value in edit.items():
        data[key] = {**data.get(key, {}), **value}
    with pytest.raises(ValueError, match=expected):
        MissionProfileConfig.model_validate(data)


def test_incompatible_pair_gives_every_reason() -> None:
    station = load_model(StationConfig, STATIONS / "xinglong.yaml")
    eagle = load_model(MissionProfileConfig, MISSIONS / "eagle1.yaml")
    problems = compatibility_problems(station, eagle)
    for expected in (
        "1550 nm is outside the detectors' bands",
        "no filter passes 1550 nm",
        "encoding time-bin",
        "bases time, phase are not measured",
        "jitter 150 ps rms exceeds the mission's 100 ps",
        "classical link over optical",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    bbm92 = load_model(MissionProfileConfig, MISSIONS / "micius2020-bbm92.yaml")
    problems = compatibility_problems(station, bbm92)
    assert len(problems) == 2
    assert "no filter passes 810 nm" in problems[0] and "clockless" in problems[1]


def test_cli_check_prints_per_mission_and_exit_status(capsys: pytest.CaptureFixture) -> None:
    station = str(STATIONS / "xinglong.yaml")
    assert main(["missions", "check", station, str(MISSIONS / "jinan1.yaml")]) == 0
    assert capsys.readouterr().out == "jinan1: compatible with station xinglong\n"
    status = main(
        ["missions", "check", station, str(MISSIONS / "micius.yaml"), str(MISSIONS / "eagle1.yaml")]
    )
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert lines[0] == "micius: compatible with station xinglong"
    assert lines[1].startswith("eagle1: incompatible with station xinglong: ")


def test_cli_bad_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsource: [unclosed\n")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        (MISSIONS / "jinan1.yaml").read_text().replace("kind: polarisation", "kind: x")
    )
    status = main(["missions", "check", str(STATIONS / "xinglong.yaml"), str(bad), str(wrong)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("satqkd: ")
    assert "bad.yaml" in err and "wrong.yaml: encoding.kind" in err
    assert "Traceback" not in err


def _plan(plan_id: int, mission: str, aos: float, los: float) -> PlannedPass:
    return PlannedPass(plan_id=plan_id, mission=mission, aos_unix_s=aos, los_unix_s=los)


def test_station_refuses_overlapping_or_incompatible_plans() -> None:
    station = load_model(StationConfig, STATIONS / "xinglong.yaml")
    missions = {
        name: load_model(MissionProfileConfig, MISSIONS / f"{name}.yaml")
        for name in ("jinan1", "micius", "eagle1")
    }
    held = [_plan(1, "jinan1", 1000.0, 1600.0)]
    # 60 s slew + 120 s reconfiguration after a jinan1 pass: 179 s is too little, 180 s fits
    assert plan_refusal(station, missions, held, _plan(2, "micius", 1780.0, 2300.0)) is None
    refusal = plan_refusal(station, missions, held, _plan(2, "micius", 1779.0, 2300.0))
    assert refusal is not None and "leaves 179 s" in refusal and "120 s reconfiguration" in refusal
    # the same mission needs the slew alone
    assert plan_refusal(station, missions, held, _plan(3, "jinan1", 1660.0, 2000.0)) is None
    overlap = plan_refusal(station, missions, held, _plan(4, "micius", 1500.0, 1900.0))
    assert overlap is not None and "overlaps plan 1 (jinan1" in overlap and "by 100 s" in overlap
    # an incompatible mission that also overlaps: both reasons, one line
    both = plan_refusal(station, missions, held, _plan(5, "eagle1", 1200.0, 1300.0))
    assert both is not None and "\n" not in both
    assert "cannot serve mission eagle1" in both and "overlaps plan 1" in both
    unknown = plan_refusal(station, missions, held, _plan(6, "nope", 5000.0, 5500.0))
    assert unknown is not None and "no mission profile 'nope'" in unknown


def test_station_with_the_kit_serves_the_new_families() -> None:
    """The check passes once a station has what each mission needs (not just fails)."""
    import yaml

    data = yaml.safe_load((STATIONS / "xinglong.yaml").read_text())
    caps = data["capabilities"]
    caps["detector_bands"].append({"low_nm": 900.0, "high_nm": 1700.0})  # SNSPDs
    caps["filters"] += [
        {"centre_nm": 810.0, "width_nm": 3.0},
        {"centre_nm": 1550.0, "width_nm": 0.8},
    ]
    caps["encodings"] = ["polarisation", "time-bin"]
    caps["bases"] = ["HV", "DA", "time", "phase"]
    caps["clockless"] = True
    caps["classical_media"] = ["optical"]
    data["detectors"]["timing_jitter_ps"] = 40.0
    station = StationConfig.model_validate(data)
    for name in ("eagle1", "micius2020-bbm92", "jinan1", "micius"):
        mission = load_model(MissionProfileConfig, MISSIONS / f"{name}.yaml")
        assert compatibility_problems(station, mission) == [], name
    # one channel short: the count is named
    data["capabilities"]["tagger_channels"] = 3
    short = StationConfig.model_validate(data)
    jinan1 = load_model(MissionProfileConfig, MISSIONS / "jinan1.yaml")
    assert compatibility_problems(short, jinan1) == [
        "4 time-tagger channels needed, the station has 3"
    ]
