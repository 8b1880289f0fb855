"""Whole simulated passes, end to end, through the embedded broker and through Mosquitto."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from satqkd.cli import main

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
ATTACK = REPO / "configs" / "scenarios" / "jinan1-xinglong-intercept-resend.yaml"
CONTRACT_KEYS = {
    "schema": None,
    "mission": None,
    "station": None,
    "seed": None,
    "pass": {"aos_utc", "los_utc", "max_elevation_deg", "duration_s"},
    "quantum": {
        "pulses_sent",
        "detections",
        "sifted_bits",
        "qber",
        "qber_by_basis",
        "by_intensity",
    },
    "sync": {"assigned_fraction", "timing_residual_rms_ps"},
    "postprocessing": {
        "blocks",
        "aborted_blocks",
        "ec_efficiency",
        "ec_rounds",
        "leak_ec_bits",
        "verification_tag_bits",
        "pa_input_bits",
        "pa_output_bits",
    },
    "key": {"secret_key_bits", "sha256_payload", "sha256_ogs", "abort_reason"},
    "atp": {"acquisition_time_s", "tracking_rms_urad", "mean_pointing_loss_db"},
    "classical_channel": {"uplink_bytes", "downlink_bytes", "messages", "rejected_messages"},
    "timing": {"wall_s", "simulated_s", "key_ready_after_los_s"},
}


def run_pass(out: Path, config: Path = CLEAR, *extra: str) -> dict:
    status = main(["sim", "pass", str(config), "--out", str(out), "--quiet", *extra])
    assert status == 0
    return json.loads((out / "report.json").read_text())


# one minute of QKD near culmination: enough for a key, a fraction of a full pass's time
SHORT = ("--start-after-aos-s", "190", "--max-duration-s", "60")


def _without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "timing"}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("one-minute", id="one-minute"),
        # the long variant: the whole pass of README's first command (seed 7, plots); the
        # default run checks the same on the session's minute of it, and runs a whole pass
        # (AOS to LOS, both daemons) in the intercept-resend test below
        pytest.param("whole-pass", id="whole-pass", marks=pytest.mark.slow),
    ],
)
def seed7(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    """(output directory, report) of the clear pass, seed 7, with plots: the session's minute
    near culmination (tests/conftest.py short_clear_pass), or the whole pass (slow)."""
    if request.param == "one-minute":
        return request.getfixturevalue("short_clear_pass")
    out = tmp_path_factory.mktemp("seed7")
    return out, run_pass(out, CLEAR, "--seed", "7")


def test_report_has_the_contract_shape(seed7: tuple[Path, dict]) -> None:
    _, report = seed7
    assert report["schema"] == "satqkd.pass-report/1"
    for section, keys in CONTRACT_KEYS.items():
        assert section in report
        if keys:
            assert keys <= set(report[section]), (section, keys - set(report[section]))
    labels = [row["label"] for row in report["quantum"]["by_intensity"]]
    assert labels == ["signal", "decoy", "vacuum"]
    assert set(report["quantum"]["qber_by_basis"]) == {"x", "z"}


def test_clear_pass_gives_the_same_secret_key_at_both_ends(seed7: tuple[Path, dict]) -> None:
    out, report = seed7
    key = report["key"]
    assert key["secret_key_bits"] > 0, key["abort_reason"]
    assert key["sha256_payload"] == key["sha256_ogs"]
    assert key["abort_reason"] is None
    q = report["quantum"]
    assert 0.0 < q["qber"] < 0.05
    assert q["detections"] > q["sifted_bits"] > key["secret_key_bits"]
    pp = report["postprocessing"]
    assert pp["pa_output_bits"] == key["secret_key_bits"]
    assert pp["leak_ec_bits"] > 0 and pp["ec_rounds"] > 0
    # Cascade's parities are charged in both directions: about twice its one-way ~1.03
    assert 1.8 < pp["ec_efficiency"] < 2.4
    assert report["sync"]["assigned_fraction"] > 0.9
    assert report["classical_channel"]["rejected_messages"] == 0
    assert report["classical_channel"]["uplink_bytes"] > 0
    for name in ("elevation.png", "count_rate.png", "qber.png", "key.png"):
        assert (out / name).stat().st_size > 1000
    key_files = list((out / "keys").rglob("*.key"))
    assert len(key_files) == 2
    for path in key_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ogs_key, payload_key = sorted(key_files, key=lambda p: "payload" in str(p))
    assert ogs_key.read_bytes() == payload_key.read_bytes()


def test_same_seed_same_report_and_other_seed_other_key(
    tmp_path: Path, short_clear_pass: tuple[Path, dict]
) -> None:
    first = short_clear_pass[1]  # --seed 7 with SHORT, run once for the session
    assert first["key"]["secret_key_bits"] > 0, first["key"]["abort_reason"]
    again = run_pass(tmp_path / "again", CLEAR, "--seed", "7", *SHORT, "--no-plots")
    assert _without_timing(again) == _without_timing(first)
    other = run_pass(tmp_path / "other", CLEAR, "--seed", "8", *SHORT, "--no-plots")
    assert other["key"]["secret_key_bits"] > 0
    assert other["key"]["sha256_ogs"] != first["key"]["sha256_ogs"]
    assert other["quantum"]["detections"] != first["quantum"]["detections"]


def test_intercept_resend_on_the_whole_pass_leaves_no_key(tmp_path: Path) -> None:
    report = run_pass(tmp_path, ATTACK, "--no-plots")
    key = report["key"]
    assert key["secret_key_bits"] == 0
    assert report["quantum"]["qber"] > 0.2
    assert key["abort_reason"].startswith("qber 0.2")
    assert "above 0.11 threshold" in key["abort_reason"]
    assert report["postprocessing"]["aborted_blocks"] == 1
    assert not list((tmp_path / "keys").rglob("*.key"))


@pytest.mark.mosquitto
def test_pass_through_mosquitto(mosquitto_url: str, tmp_path: Path) -> None:
    report = run_pass(
        tmp_path, CLEAR, "--seed", "3", "--broker", mosquitto_url, *SHORT, "--no-plots"
    )
    assert report["key"]["secret_key_bits"] > 0
    assert report["key"]["sha256_payload"] == report["key"]["sha256_ogs"]


def test_unreachable_broker_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(
        [
            "sim",
            "pass",
            str(CLEAR),
            "--out",
            str(tmp_path),
            "--quiet",
            "--broker",
            "mqtt://127.0.0.1:9",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and "127.0.0.1:9" in err[0]
