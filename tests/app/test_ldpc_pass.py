"""A short simulated pass with LDPC reconciliation end to end (embedded broker), against the
same minute of the same pass reconciled by Cascade (the session's short_clear_pass)."""

from __future__ import annotations

import json
from pathlib import Path

from satqkd.cli import main

REPO = Path(__file__).resolve().parents[2]
LDPC = REPO / "configs" / "scenarios" / "jinan1-xinglong-ldpc.yaml"
# one minute of QKD near culmination: tests/conftest.py's SHORT_CLEAR_PASS_ARGS
SHORT = ("--seed", "7", "--start-after-aos-s", "190", "--max-duration-s", "60", "--quiet")


def _run(config: Path, out: Path) -> dict:
    assert main(["sim", "pass", str(config), "--out", str(out), "--no-plots", *SHORT]) == 0
    return json.loads((out / "report.json").read_text())


def test_ldpc_pass_gives_equal_keys_in_few_round_trips(
    tmp_path: Path, short_clear_pass: tuple[Path, dict]
) -> None:
    ldpc = _run(LDPC, tmp_path / "ldpc")
    key, pp = ldpc["key"], ldpc["postprocessing"]
    assert key["secret_key_bits"] > 0, key["abort_reason"]
    assert key["sha256_payload"] == key["sha256_ogs"] and key["abort_reason"] is None
    assert pp["ec_method"] == "ldpc"
    assert pp["ec_frames"] >= 5 and pp["ec_frames_failed"] == 0
    assert 1.0 < pp["ec_efficiency"] < 1.3  # decision 0004: f ~1.16 at Q ~1 %
    assert pp["leak_ec_bits"] > 0 and pp["pa_output_bits"] == key["secret_key_bits"]
    x_bits = sum(row["x_detections"] for row in ldpc["quantum"]["by_intensity"])
    assert 0 <= x_bits - pp["pa_input_bits"] < pp["ec_frames"]  # whole frames, tiny tail
    assert ldpc["classical_channel"]["rejected_messages"] == 0
    keys = sorted((tmp_path / "ldpc" / "keys").rglob("*.key"))
    assert len(keys) == 2 and keys[0].read_bytes() == keys[1].read_bytes()

    cascade = short_clear_pass[1]  # the clear scenario (Cascade), same seed and SHORT window
    assert cascade["postprocessing"]["ec_method"] == "cascade"
    assert cascade["quantum"]["detections"] == ldpc["quantum"]["detections"]  # same minute
    # one-way syndromes and a few blind rounds instead of hundreds of parity round trips
    assert 2 <= pp["ec_rounds"] < cascade["postprocessing"]["ec_rounds"] / 10
    assert ldpc["classical_channel"]["messages"] < cascade["classical_channel"]["messages"]
    # one-way LDPC (f ~1.16) is charged far less than Cascade, whose parities are charged in
    # both directions (the station's queries disclose its own): a much longer key
    ratio = key["secret_key_bits"] / cascade["key"]["secret_key_bits"]
    assert ratio > 1.3
    assert cascade["postprocessing"]["ec_efficiency"] > 1.8
