"""The station's calibration file: what loads, what is refused (file and key named), how the
sections merge, and that its sensor section undoes the sensor's response."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from satqkd_core.errors import InputError
from satqkd_ogs.calibration import load_calibration, merge_section, with_station_calibration
from satqkd_ogs.settings import AtpSettings
from sim_backends.emulators.beacon import SensorResponse


def write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def test_sections_merge_and_every_refusal_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "calibration.yaml"
    merge_section(path, "boresight", {"offset_urad": [3.0, -4.0]})
    merge_section(path, "fsm", {"gain_matrix": [[1.0, 0.1], [0.0, 2.0]], "bandwidth_hz": 80.0})
    calibration = load_calibration(path)
    assert calibration.boresight is not None and calibration.boresight.offset_urad == (3.0, -4.0)
    assert calibration.mirror_command(1.0, 2.0) == pytest.approx((0.9, 1.0))
    bad = {
        "pointing_model": {"terms_urad": {"IA": 1.0, "ZZ": 2.0}},
        "fsm": {"gain_matrix": [[1.0, 2.0], [2.0, 4.0]]},
        "beacon_sensor": {"gain": [0.0, 1.0], "cubic": [0, 0], "field_urad": 50},
        "extra_section": {},
    }
    for key, section in bad.items():
        with pytest.raises(InputError, match=rf"bad\.yaml: {key}"):
            load_calibration(write(tmp_path / "bad.yaml", {key: section}))
    with pytest.raises(InputError, match="calibration file not found"):
        load_calibration(tmp_path / "missing.yaml")


def test_sensor_section_turns_readings_back_into_sky_angles() -> None:
    from satqkd_ogs.calibration import StationCalibration

    truth = SensorResponse(gain=(0.9, 1.1), offset_urad=(2.0, -3.0), cubic=(-0.15, 0.1))
    calibration = StationCalibration.model_validate(
        {
            "beacon_sensor": {
                "gain": [0.9, 1.1],
                "offset_urad": [2.0, -3.0],
                "cubic": [-0.15, 0.1],
                "field_urad": 50.0,
            },
            "boresight": {"offset_urad": [5.0, 1.0]},
        }
    )
    for x, y in ((0.0, 0.0), (30.0, -45.0), (-48.0, 12.0)):
        reading = truth.reading(x, y, 50.0)
        assert calibration.sensor_to_sky(*reading) == pytest.approx((x, y), abs=1e-6)
        assert calibration.spot_on_sky(*reading) == pytest.approx((x - 5.0, y - 1.0), abs=1e-6)


def test_station_settings_load_the_file_relative_to_the_station_file(tmp_path: Path) -> None:
    merge_section(tmp_path / "cal.yaml", "boresight", {"offset_urad": [1.0, 2.0]})
    station_file = tmp_path / "station.yaml"
    loaded = with_station_calibration(AtpSettings(calibration="cal.yaml"), station_file)
    assert loaded.calibration_data.boresight.offset_urad == (1.0, 2.0)
    assert with_station_calibration(AtpSettings(), station_file).calibration_data is None
    with pytest.raises(InputError, match=r"station\.yaml: atp\.calibration: .*not found"):
        with_station_calibration(AtpSettings(calibration="nope.yaml"), station_file)
