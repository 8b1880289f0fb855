"""The report's `atp.payload_tracking` takes the payload controller's own fine-tracking figures
from PAYLOAD_PASS_SUMMARY where it sent them, and keeps the simulator's where it did not."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from satqkd.pass_recorder import load_recorded
from satqkd.report_builder import AtpTruth, SimulationTruth, build_report

# the simulator's view of the payload end (PayloadPointingTruth.report()'s keys)
SIMULATED = {
    "fine_loop": True,
    "point_ahead_applied": True,
    "acquisition_time_s": 2.5,
    "tracking_residual_rms_urad": 0.5,
    "beam_error_rms_urad": 0.7,
    "disturbance_rms_urad": 40.0,
    "micro_vibration_rms_urad": 9.0,
    "rejection_ratio": 18.0,
    "locked_fraction": 0.99,
    "lock_losses": 0,
    "point_ahead_mean_urad": 50.0,
    "point_ahead_max_urad": 52.0,
    "point_ahead_error_rms_urad": 0.1,
}
TRUTH = SimulationTruth(
    "payload-atp", 1, 0.0, 0.0, 30.0, AtpTruth("statistical", 1.0, 1.0, 0.5, payload=SIMULATED),
    60.0, 60.0, 1.0,
)  # fmt: skip


def _payload_tracking(records: list[dict], **fields: float | None) -> dict:
    records = copy.deepcopy(records)
    summary = next(r for r in records if r["name"] == "PAYLOAD_PASS_SUMMARY")
    summary["fields"].update(fields)
    return build_report(records, truth=TRUTH)["atp"]["payload_tracking"]


def test_the_controllers_figures_replace_the_simulators(short_clear_pass: tuple[Path, dict]):
    records = load_recorded(short_clear_pass[0] / "telemetry.jsonl")
    # the clear pass's controller runs no fine loop: no figure, the simulator's stay
    summary = next(r for r in records if r["name"] == "PAYLOAD_PASS_SUMMARY")["fields"]
    assert summary["fine_residual_rms_urad"] is None and summary["fine_locked_fraction"] is None
    assert _payload_tracking(records) == SIMULATED
    measured = _payload_tracking(records, fine_residual_rms_urad=0.45, fine_locked_fraction=0.9)
    assert measured["tracking_residual_rms_urad"] == 0.45 and measured["locked_fraction"] == 0.9
    assert measured["rejection_ratio"] == pytest.approx(9.0 / 0.45)
    replaced = ("tracking_residual_rms_urad", "locked_fraction", "rejection_ratio")
    kept = {k: v for k, v in SIMULATED.items() if k not in replaced}
    assert {k: v for k, v in measured.items() if k not in replaced} == kept
