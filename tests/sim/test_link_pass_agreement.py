"""`satqkd sim link` predicts what `satqkd sim pass` makes of the same window within 5 % in key.

The pass is the session's short clear pass (tests/conftest.py: the Jinan-1 pass over Xinglong,
seed 7, 60 s from 190 s after AOS, run through both daemons); the link side runs the same
scenario, seed and window from the physics alone. A change to either path (the link budget,
the channel's sampling, the station's decisions, error correction or the finite-key bound)
that the other does not share moves them apart. docs/validation.md has the whole-pass table
for every shipped scenario.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from satqkd.api import with_start_after_aos
from satqkd.config import load_scenario
from satqkd.link_cli import link_report

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs/scenarios/jinan1-xinglong-clear.yaml"


def test_link_and_pass_agree_on_the_same_window(short_clear_pass) -> None:
    _, report = short_clear_pass
    # what `satqkd sim link CLEAR --seed 7 --start-after-aos-s 190 --max-duration-s 60` writes
    scenario = with_start_after_aos(load_scenario(CLEAR, seed=7), 190.0)
    summary = link_report(scenario, 60.0)[0]["summary"]
    quantum = report["quantum"]
    assert summary["qkd_window_s"] == 60.0  # the window of the pass's 60 frames
    assert summary["expected_detections"] == pytest.approx(quantum["detections"], rel=0.01)
    assert summary["expected_sifted_bits"] == pytest.approx(quantum["sifted_bits"], rel=0.01)
    assert summary["expected_qber"] == pytest.approx(quantum["qber"], rel=0.05)
    key = report["key"]["secret_key_bits"]
    # away from the finite-key threshold: the key is a good fraction of the sifted bits
    assert key > 0.05 * quantum["sifted_bits"]
    assert summary["expected_secret_key_bits"] == pytest.approx(key, rel=0.05)
    assert summary["expected_leak_ec_bits"] == pytest.approx(
        report["postprocessing"]["leak_ec_bits"], rel=0.05
    )


def test_sim_link_refuses_a_bbm92_scenario_in_one_line(tmp_path: Path, capsys) -> None:
    from satqkd.link_cli import run_sim_link

    bbm92 = REPO / "configs/scenarios/micius2020-bbm92-xinglong.yaml"
    if not bbm92.is_file():
        pytest.skip("no shipped BBM92 scenario")
    assert run_sim_link(str(bbm92), str(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predicts decoy-BB84 passes only" in err[0]
