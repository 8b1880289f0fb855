"""`python -m benchmarks.ldpc_code_trials --step-efficiency X --round-stall Y`: the trial runs
with that blind schedule at both ends, and the project's schedule is left as it was."""

from __future__ import annotations

import math

import pytest

import satqkd_core.ldpc_frames as ldpc_frames
import satqkd_core.ldpc_protocol as ldpc_protocol
import satqkd_core.ldpc_reconciliation as ldpc_reconciliation
from benchmarks.ldpc_code_trials import blind_schedule, main
from satqkd_core.bits import binary_entropy
from satqkd_core.ldpc import load_code


def _shipped() -> tuple[float, float, int]:
    return (
        ldpc_frames.STEP_EFFICIENCY,
        ldpc_protocol.STEP_EFFICIENCY,
        ldpc_reconciliation.ROUND_STALL_ITERATIONS,
    )


def test_the_schedule_applies_to_the_plan_both_ends_use_and_is_restored_after() -> None:
    shipped = _shipped()
    code = (load_code("r85d_n64k"),)
    default_step = ldpc_frames.plan_frames(0.02, code).reveal_step
    with blind_schedule(0.005, 32):
        plan = ldpc_frames.plan_frames(0.02, code)
        assert plan.reveal_step == math.ceil(0.005 * plan.frame_key_bits * binary_entropy(0.02))
        assert plan.reveal_step < default_step / 2
        # the sender's refit of the plan to its key reads the same step
        fitted = ldpc_protocol.fit_plan_to_key(plan, plan.frame_key_bits * 15 // 2, 0.02)
        assert fitted.frame_key_bits < plan.frame_key_bits  # refitted: 8 shorter frames
        assert fitted.reveal_step == math.ceil(0.005 * fitted.frame_key_bits * binary_entropy(0.02))
        assert ldpc_reconciliation.ROUND_STALL_ITERATIONS == 32
    assert _shipped() == shipped
    assert ldpc_frames.plan_frames(0.02, code).reveal_step == default_step


def test_no_option_leaves_the_shipped_schedule() -> None:
    shipped = _shipped()
    with blind_schedule(None, None):
        assert _shipped() == shipped


def test_the_schedule_is_restored_when_the_trial_fails() -> None:
    shipped = _shipped()
    with pytest.raises(RuntimeError), blind_schedule(0.01, 16):
        raise RuntimeError("trial failed")
    assert _shipped() == shipped


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--step-efficiency", "0"], "--step-efficiency must be > 0"),
        (["--round-stall", "0"], "--round-stall must be >= 1"),
        # a valid step beside a refused stall: nothing is left changed
        (["--step-efficiency", "0.005", "--round-stall", "-3"], "--round-stall must be >= 1"),
    ],
)
def test_a_schedule_that_cannot_run_is_refused_in_one_line(
    options: list[str], message: str
) -> None:
    shipped = _shipped()
    with pytest.raises(SystemExit) as refused:
        main(["--spec", "r85d_n64k", "--qber", "0.02", "--frames", "1", *options])
    assert str(refused.value) == f"ldpc_code_trials: {message}"
    assert _shipped() == shipped
