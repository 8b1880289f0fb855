"""A bench file with several mistakes names every one of them in one line (as scenario files
do), whether pydantic finds them in the bench or the drivers' options find them in its entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from satqkd.cli import main
from satqkd.config import ConfigError
from satqkd.instruments_config import validate_instruments

PROBLEMS = {
    "extra: unknown key (allowed here: name, description, instruments)",
    "instruments.tagger.driver: unknown driver",
    "instruments.gimbal.options.pan_resolution: unknown key",
    "instruments.gimbal.options.tilt_resolution: unknown key",
    "instruments.mirror.timeout_s: Input should be less than or equal to 60",
}


def _bench() -> dict:
    return {
        "name": "lab",
        "extra": 1,
        "instruments": {
            "tagger": {"driver": "no_such_driver", "resource": "tcp://h:1"},
            # valid on its own: its options are checked in the same round
            "gimbal": {
                "driver": "ptu_gimbal",
                "resource": "emulator://gimbal",
                "options": {"pan_resolution": 1, "tilt_resolution": 2},
            },
            "mirror": {"driver": "pi_gcs_mirror", "resource": "emulator://fsm", "timeout_s": 99},
        },
    }


def test_every_bench_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        validate_instruments(_bench(), "lab.yaml")
    message = str(raised.value)
    assert message.startswith(f"lab.yaml: {len(PROBLEMS)} problems: ")
    for problem in PROBLEMS:
        assert problem in message, problem
    assert "more" not in message


def test_options_problems_of_a_valid_bench_are_all_named(tmp_path: Path, capsys) -> None:
    bench = _bench()
    del bench["extra"], bench["instruments"]["tagger"], bench["instruments"]["mirror"]
    bench["instruments"]["second"] = {
        "driver": "ptu_gimbal",
        "resource": "emulator://gimbal",
        "options": {"pan_resolution_arcsec": "fast"},
    }
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(bench))
    assert main(["instruments", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"satqkd: {path}: 3 problems: ") and "\n" not in err
    assert "instruments.gimbal.options.pan_resolution: unknown key" in err
    assert "instruments.gimbal.options.tilt_resolution: unknown key" in err
    assert "instruments.second.options.pan_resolution_arcsec: Input should be a valid number" in err
