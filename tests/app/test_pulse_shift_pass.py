"""Whole pulse periods the timing sync cannot see, resolved in a real pass (the daemons, the
broker and the physics): eagle1 at 1 GHz with the default simulated clock offset of 1234 ps,
more than half its 1 ns period, sifts at its normal QBER (it gave 50 % before); an offset beyond
the mission's stated clock offset uncertainty ends the pass naming the ambiguity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from satqkd.config import Scenario
from satqkd.night_run import load_night, pass_scenario, plan_night
from satqkd.simulation import run_pass

REPO = Path(__file__).resolve().parents[2]
NIGHT = REPO / "configs" / "scenarios" / "night-graz-three-missions.yaml"


@pytest.fixture(scope="module")
def eagle1_pass() -> Scenario:
    """The shipped night's eagle1 pass (1 GHz, Graz), with the default clock offset."""
    night = load_night(NIGHT)
    held = next(p for p in plan_night(night).passes if p.mission == "eagle1")
    scenario = pass_scenario(night, held, 1)
    assert scenario.mission.source is not None
    assert scenario.mission.source.repetition_rate_hz == 1e9
    assert scenario.scenario.simulation.clock_offset_ps == 1234.0
    return scenario


def _fly(scenario: Scenario, out: Path, seconds: float) -> dict:
    return asyncio.run(run_pass(scenario, out, max_duration_s=seconds)).report


@pytest.mark.slow  # ~3.5 CPU-s, 9.5 s wall on the shared VM: tests/payload covers it fast
def test_a_1ghz_pass_with_an_offset_beyond_half_a_period_sifts_at_its_normal_qber(
    eagle1_pass: Scenario, tmp_path: Path
) -> None:
    report = _fly(eagle1_pass, tmp_path, 1.0)
    quantum = report["quantum"]
    assert quantum["sifted_bits"] > 20_000
    assert quantum["qber"] < 0.03  # eagle1's ~1 % intrinsic error, not 50 %
    assert report["key"]["abort_reason"] is None or "ambiguous" not in report["key"]["abort_reason"]


@pytest.mark.slow
def test_an_offset_beyond_the_stated_uncertainty_aborts_as_ambiguous(
    eagle1_pass: Scenario, tmp_path: Path
) -> None:
    """Uncertainty 1 ns (shifts -1..1) but the clocks 3.4 ns apart (3 periods): no candidate
    is right, so nothing is sifted and the pass says why, instead of keying at 50 % QBER."""
    mission = eagle1_pass.mission
    time_sync = mission.time_sync.model_copy(update={"clock_offset_uncertainty_ps": 1000.0})
    simulation = eagle1_pass.scenario.simulation.model_copy(update={"clock_offset_ps": 3400.0})
    scenario = eagle1_pass.model_copy(
        update={
            "mission": mission.model_copy(update={"time_sync": time_sync}),
            "scenario": eagle1_pass.scenario.model_copy(update={"simulation": simulation}),
        }
    )
    report = _fly(scenario, tmp_path, 1.0)
    assert report["quantum"]["sifted_bits"] == 0
    assert report["key"]["abort_reason"].startswith("pulse index ambiguous in 1 of 1 frames")
