"""Tests of `satqkd sim link`: the link of a pass from the physics alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from satqkd.link_cli import LOSS_TERMS, run_sim_link

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "configs" / "scenarios"
CLEAR = SCENARIOS / "jinan1-xinglong-clear.yaml"
SHIP = SCENARIOS / "jinan1-ship-east-china-sea.yaml"


def _no_nan(name: str) -> None:
    raise AssertionError(f"link.json holds {name}")


@pytest.fixture(scope="module")
def clear_link(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("link")
    assert run_sim_link(str(CLEAR), str(out)) == 0
    return out, json.loads((out / "link.json").read_text(), parse_constant=_no_nan)


def test_link_json_has_every_term_per_second(clear_link: tuple[Path, dict]) -> None:
    out, report = clear_link
    assert report["schema"] == "satqkd.link/1"
    assert (report["mission"], report["station"]) == ("jinan1", "xinglong")
    steps = report["steps"]
    assert len(steps) > 400  # AOS to LOS of a ~7 min pass, 1 s apart
    times = np.array([s["unix_s"] for s in steps])
    np.testing.assert_array_equal(np.diff(times), 1.0)
    for step in steps:
        terms = sum(step[t] for t in LOSS_TERMS)
        assert step["total_loss_db"] == pytest.approx(terms, abs=5e-4)
        assert step["transmittance"] == pytest.approx(10 ** (-step["total_loss_db"] / 10), rel=2e-4)
        counts = step["expected_counts_per_s"]
        assert set(counts) == {"signal", "decoy", "vacuum"}
        assert step["expected_detections_per_s"] == pytest.approx(sum(counts.values()), rel=1e-6)
        assert counts["signal"] > counts["decoy"] > counts["vacuum"] > 0.0
        assert step["expected_qber"]["vacuum"] == pytest.approx(0.5, abs=0.01)
        assert -90.0 < step["polarisation_rotation_deg"] <= 90.0
        assert abs(step["polarisation_residual_deg"]) < 6.0  # 1 deg rms at Xinglong
    png = (out / "link.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_link_peaks_at_culmination_and_predicts_the_pass(clear_link: tuple[Path, dict]) -> None:
    _, report = clear_link
    steps = report["steps"]
    elevation = np.array([s["elevation_deg"] for s in steps])
    loss = np.array([s["total_loss_db"] - s["scintillation_loss_db"] for s in steps])
    rate = np.array([s["expected_detections_per_s"] for s in steps])
    top = int(np.argmax(elevation))
    assert abs(int(np.argmin(loss)) - top) <= 3 and abs(int(np.argmax(rate)) - top) <= 10
    summary = report["summary"]
    # The event-level pass of this scenario (seed 7) counts ~9.5 million detections at a
    # QBER of ~1.05 %; the expectation must agree within a few percent.
    assert 9.0e6 < summary["expected_detections"] < 10.2e6
    assert 0.009 < summary["expected_qber"] < 0.012
    assert summary["expected_sifted_bits"] == pytest.approx(
        0.5 * summary["expected_detections"], rel=1e-6
    )
    assert summary["max_abs_polarisation_rotation_change_deg_per_s"] > 1.0


def test_same_config_gives_the_same_link(tmp_path: Path, clear_link: tuple[Path, dict]) -> None:
    _, first = clear_link
    assert run_sim_link(str(CLEAR), str(tmp_path)) == 0
    assert json.loads((tmp_path / "link.json").read_text()) == first


def test_mobile_station_link(tmp_path: Path) -> None:
    assert run_sim_link(str(SHIP), str(tmp_path)) == 0
    report = json.loads((tmp_path / "link.json").read_text(), parse_constant=_no_nan)
    assert report["pass"]["mobile_station"] is True
    assert report["summary"]["expected_detections"] > 0


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("name: x\n", "mission: required key is missing"),
        ("name: [unclosed\n", "invalid YAML"),
        (
            "name: x\nmission: jinan1\nstation: xinglong\nsearch:\n  start_utc: 2026-12-01\n"
            "  days: 0.01\nsimulation:\n  clock_drift_ppb: 1.0e9\n",
            "clock_drift_ppb",
        ),
        (
            "name: x\nmission: jinan1\nstation: xinglong\nsearch:\n  start_utc: 2026-12-01\n"
            "  days: 0.01\n",
            "pass(es)",
        ),
        (
            "name: x\nmission: jinan1\nstation: xinglong\nsearch:\n  start_utc: 2026-12-01\n"
            "attacks:\n  intercept_resend_fraction: 0.5\n  photon_number_splitting: true\n",
            "photon_number_splitting replaces the whole channel",
        ),
    ],
)
def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, yaml_text: str, fragment: str
) -> None:
    scenarios = tmp_path / "configs" / "scenarios"
    scenarios.mkdir(parents=True)
    for folder in ("missions", "stations"):
        (tmp_path / "configs" / folder).symlink_to(REPO / "configs" / folder)
    config = scenarios / "bad.yaml"
    config.write_text(yaml_text)
    assert run_sim_link(str(config), str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("satqkd: ") and fragment in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_config_and_bad_track_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_sim_link(str(tmp_path / "nope.yaml"), None) == 2
    assert "file not found" in capsys.readouterr().err
    configs = tmp_path / "configs"
    (configs / "scenarios").mkdir(parents=True)
    (configs / "stations").mkdir()
    (configs / "missions").symlink_to(REPO / "configs" / "missions")
    station = (REPO / "configs" / "stations" / "ship-east-china-sea.yaml").read_text()
    (configs / "stations" / "ship-east-china-sea.yaml").write_text(station)
    (configs / "stations" / "ship-east-china-sea-track.csv").write_text("unix_s,lat\n0,1\n")
    (configs / "scenarios" / "ship.yaml").write_text(SHIP.read_text())
    assert run_sim_link(str(configs / "scenarios" / "ship.yaml"), str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "track" in err[0] and "missing column" in err[0]
