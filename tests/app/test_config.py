"""Config files are validated on load: a mistake names the file, the key path and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from satqkd.cli import main
from satqkd.config import ConfigError, load_scenario

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def _copy_configs(tmp_path: Path) -> Path:
    root = tmp_path / "configs"
    for sub in ("missions", "stations", "scenarios"):
        (root / sub).mkdir(parents=True)
        for f in (CONFIGS / sub).glob("*.yaml"):
            (root / sub / f.name).write_text(f.read_text())
    return root


def _edit(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


# night scenarios (satqkd sim night) load in tests/app/test_sim_night.py, network scenarios
# (`kind: network`, satqkd sim network) in tests/app/test_sim_network_scenario.py
PASS_SCENARIOS = sorted(
    p.name
    for p in (CONFIGS / "scenarios").glob("*.yaml")
    if not p.name.startswith("night-") and "\nkind: network\n" not in p.read_text()
)


@pytest.mark.parametrize("scenario", PASS_SCENARIOS)
def test_every_shipped_scenario_loads(scenario: str) -> None:
    loaded = load_scenario(CONFIGS / "scenarios" / scenario)
    if loaded.mission.protocol.family == "bbm92":  # a pair source, no pulses
        assert loaded.mission.pair_source is not None and loaded.mission.source is None
        assert loaded.mission.pair_source.pair_rate_hz > 0
    else:
        assert loaded.mission.source.repetition_rate_hz > 0
    assert loaded.station.receiver.aperture_diameter_m > 0


def test_seed_override() -> None:
    loaded = load_scenario(CONFIGS / "scenarios" / "jinan1-xinglong-clear.yaml", seed=99)
    assert loaded.scenario.seed == 99


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        (
            "missions/jinan1.yaml",
            lambda d: d["source"].__setitem__("intensities", [0.1, 0.2, 0.0]),
            "source: intensities need mu_1 > mu_2 + mu_3",
        ),
        (
            "missions/jinan1.yaml",
            lambda d: d["source"].__setitem__("probabilities", [0.5, 0.3, 0.3]),
            "probabilities must sum to 1",
        ),
        (
            "missions/jinan1.yaml",
            lambda d: d["transmitter"].__setitem__("divergence_urad", -3),
            "transmitter.divergence_urad: Input should be greater than 0",
        ),
        (
            "stations/xinglong.yaml",
            lambda d: d["location"].__setitem__("latitude_deg", 123.0),
            "location.latitude_deg: Input should be less than or equal to 90",
        ),
        (
            "stations/xinglong.yaml",
            lambda d: d["receiver"].__setitem__("aperture_diamter_m", 1.0),
            "receiver.aperture_diamter_m: unknown key (allowed here: aperture_diameter_m",
        ),
        (
            "scenarios/jinan1-xinglong-clear.yaml",
            lambda d: d["weather"].__setitem__("profile", "foggy"),
            "weather.profile: Input should be 'clear', 'haze', 'thin_cloud' or 'climatology'"
            " (got 'foggy')",
        ),
        (
            "scenarios/jinan1-xinglong-clear.yaml",
            lambda d: d.__setitem__("station", "atlantis"),
            "station: no station profile 'atlantis' (available:",
        ),
        (
            "scenarios/jinan1-xinglong-clear.yaml",
            lambda d: d.pop("search"),
            "search: required key is missing",
        ),
        (
            "scenarios/jinan1-xinglong-clear.yaml",
            lambda d: (
                d["attacks"].__setitem__("intercept_resend_fraction", "lots")
                if "attacks" in d
                else d.__setitem__("attacks", {"intercept_resend_fraction": "lots"})
            ),
            "attacks.intercept_resend_fraction: Input should be a valid number",
        ),
    ],
)
def test_config_error_names_file_key_and_rule(
    tmp_path: Path, file: str, edit, expected: str
) -> None:
    root = _copy_configs(tmp_path)
    _edit(root / file, edit)
    with pytest.raises(ConfigError) as info:
        load_scenario(root / "scenarios" / "jinan1-xinglong-clear.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert Path(file).name in message
    assert expected in message


def test_cli_reports_config_error_in_one_line(tmp_path: Path, capsys) -> None:
    root = _copy_configs(tmp_path)
    _edit(root / "missions/jinan1.yaml", lambda d: d["source"].__setitem__("wavelength_nm", 5))
    status = main(["sim", "pass", str(root / "scenarios/jinan1-xinglong-clear.yaml"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1
    assert (
        "jinan1.yaml: source.wavelength_nm: Input should be greater than or equal to 400" in err[0]
    )
    assert "Traceback" not in err[0]


def test_cli_missing_and_malformed_files(tmp_path: Path, capsys) -> None:
    assert main(["sim", "pass", str(tmp_path / "nope.yaml"), "--quiet"]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["sim", "pass", str(bad), "--quiet"]) == 2
    assert "bad.yaml: invalid YAML at line" in capsys.readouterr().err


def test_a_daemon_setting_left_out_of_the_profile_takes_the_daemons_own_default(
    tmp_path: Path,
) -> None:
    from satqkd.config import station_path
    from satqkd.wiring import ogs_settings
    from satqkd_ogs.settings import AtpSettings, DetectorSettings

    root = _copy_configs(tmp_path)
    station_file = root / "stations/xinglong.yaml"

    def leave_out(d: dict) -> None:
        d["atp"].pop("acquisition_field_of_view_urad")
        d["detectors"].pop("bias_v", None)

    _edit(station_file, leave_out)
    scenario = load_scenario(root / "scenarios" / "jinan1-xinglong-clear.yaml")
    settings = ogs_settings(scenario.mission, scenario.station, station_path(scenario))
    # one set of defaults: the profile's and the daemon's are the same declaration
    assert settings.atp == AtpSettings(
        initial_pointing_uncertainty_urad=1000.0,
        spiral_scan_rate_urad_per_s=2000.0,
    )
    assert settings.atp.acquisition_field_of_view_urad == 500.0
    assert settings.detectors == DetectorSettings()
    # the simulation-only key of the section stays out of the daemon's settings
    assert not hasattr(settings.atp, "tracking_bandwidth_hz")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["atp"].__setitem__("fine_loop_rate", 5.0),
            "atp.fine_loop_rate: unknown key (allowed here: initial_pointing_uncertainty_urad, ",
        ),
        (
            lambda d: d["atp"].__setitem__("telemetry_period_s", 0.0),
            "atp.telemetry_period_s: Input should be greater than or equal to 0.1 (got 0.0)",
        ),
        (
            lambda d: d["detectors"].pop("efficiency"),
            "detectors.efficiency: required key is missing",
        ),
        (
            lambda d: d["detectors"].__setitem__("max_temperature_c", 80),
            "detectors.max_temperature_c: Input should be less than or equal to 50",
        ),
    ],
)
def test_a_daemon_settings_section_reports_errors_like_the_rest(
    tmp_path: Path, edit, expected: str
) -> None:
    root = _copy_configs(tmp_path)
    _edit(root / "stations/xinglong.yaml", edit)
    with pytest.raises(ConfigError) as info:
        load_scenario(root / "scenarios" / "jinan1-xinglong-clear.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(root / "stations/xinglong.yaml") + ": ")
    assert expected in message
