"""One station's night: plans that overlap or leave too short a slew/reconfiguration gap are
refused, each reason naming both plans."""

from __future__ import annotations

import math

import pytest

from satqkd_core.station_schedule import PlannedPass, schedule_conflicts, schedule_refusal


def _plan(plan_id: int, mission: str, aos: float, los: float) -> PlannedPass:
    return PlannedPass(plan_id=plan_id, mission=mission, aos_unix_s=aos, los_unix_s=los)


def test_night_of_three_missions_fits_with_gaps() -> None:
    night = [
        _plan(1, "jinan1", 0.0, 600.0),
        _plan(2, "eagle1", 780.0, 1300.0),  # 180 s = 60 s slew + 120 s reconfiguration
        _plan(3, "bbm92", 1480.0, 2000.0),
    ]
    assert schedule_conflicts(night, 60.0, 120.0) == []


def test_refused_plan_is_not_held_and_every_conflict_is_named() -> None:
    night = [
        _plan(1, "jinan1", 0.0, 600.0),
        _plan(2, "eagle1", 500.0, 900.0),  # overlaps 1
        _plan(3, "eagle1", 700.0, 1000.0),  # 100 s after 1: short of 180 s; 2 was refused
        _plan(4, "jinan1", 1060.0, 1500.0),  # same mission as 1, 460 s after it: fits
    ]
    conflicts = schedule_conflicts(night, 60.0, 120.0)
    assert len(conflicts) == 2
    assert conflicts[0].startswith("plan 2 overlaps plan 1 (jinan1") and "by 100 s" in conflicts[0]
    assert "plan 3 leaves 100 s" in conflicts[1] and "(jinan1 -> eagle1)" in conflicts[1]


def test_candidate_before_a_held_plan_and_several_reasons() -> None:
    held = [_plan(1, "a", 1000.0, 1500.0), _plan(2, "b", 1700.0, 2000.0)]
    # ends 50 s before plan 1's AOS (needs 180 s) and overlaps nothing else
    early = schedule_refusal(held, _plan(3, "b", 500.0, 950.0), 60.0, 120.0)
    assert early is not None and "leaves 50 s" in early
    # a long plan overlapping both held plans: two reasons, one line
    both = schedule_refusal(held, _plan(4, "c", 1400.0, 1800.0), 60.0, 120.0)
    assert both is not None and both.count("overlaps") == 2 and "\n" not in both
    again = schedule_refusal(held, _plan(1, "a", 5000.0, 5500.0), 60.0, 120.0)
    assert again is not None and "plan id 1 is already held" in again


@pytest.mark.parametrize(
    ("aos", "los", "expected"),
    [(10.0, 10.0, "is not before LOS"), (math.nan, 10.0, "finite"), (0.0, math.inf, "finite")],
)
def test_invalid_times_refused(aos: float, los: float, expected: str) -> None:
    refusal = schedule_refusal([], _plan(9, "a", aos, los), 60.0, 120.0)
    assert refusal is not None and expected in refusal
