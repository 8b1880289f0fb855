"""Both ends judge a pass plan by the same rules: one reason per broken rule, None if valid."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.pass_plan import MAX_QKD_WINDOW_S, pass_plan_problem

NOW = 1_700_000_000.25


def plan(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "plan_id": 7,
        "mission": "m",
        "station": "s",
        "tle_line1": "",
        "tle_line2": "",
        "aos_unix_s": NOW + 60.0,
        "qkd_start_unix_s": math.floor(NOW) + 120.0,
        "qkd_stop_unix_s": math.floor(NOW) + 420.0,
        "los_unix_s": NOW + 600.0,
        "repetition_rate_hz": 100e6,
    }
    fields.update(changes)
    return fields


def test_a_valid_plan_has_no_problem() -> None:
    assert pass_plan_problem(plan(), NOW) is None
    # the edges of the window may touch aos and los
    start, stop = plan()["qkd_start_unix_s"], plan()["qkd_stop_unix_s"]
    assert pass_plan_problem(plan(aos_unix_s=start, los_unix_s=stop), NOW) is None


@pytest.mark.parametrize("plan_id", [-1, 2**32, 1.5, "3", None, True])
def test_plan_id_is_a_whole_number_from_zero(plan_id: object) -> None:
    assert "plan_id" in (pass_plan_problem(plan(plan_id=plan_id), NOW) or "")


def test_plan_id_zero_is_valid() -> None:
    assert pass_plan_problem(plan(plan_id=0), NOW) is None


@pytest.mark.parametrize(
    "name", ["aos_unix_s", "qkd_start_unix_s", "qkd_stop_unix_s", "los_unix_s"]
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None, "1"])
def test_times_are_finite(name: str, value: object) -> None:
    problem = pass_plan_problem(plan(**{name: value}), NOW)
    assert problem is not None and name in problem and "finite" in problem


@pytest.mark.parametrize("rate", [0.0, -1e6, math.nan, math.inf, None, 1e-320])
def test_rate_finite_and_positive(rate: object) -> None:
    problem = pass_plan_problem(plan(repetition_rate_hz=rate), NOW)
    assert problem is not None and "repetition_rate_hz" in problem


@pytest.mark.parametrize(
    "changes",
    [
        {"aos_unix_s": NOW + 121.0},  # aos after qkd_start
        {"los_unix_s": NOW + 300.0},  # los before qkd_stop
        {"qkd_stop_unix_s": math.floor(NOW) + 120.0},  # empty window
        {"qkd_stop_unix_s": math.floor(NOW) + 100.0},  # stop before start
    ],
)
def test_order_aos_start_stop_los(changes: dict[str, float]) -> None:
    assert pass_plan_problem(plan(**changes), NOW) == "need aos <= qkd_start < qkd_stop <= los"


@given(st.floats(min_value=0.001, max_value=0.999))
def test_qkd_start_on_a_whole_second(fraction: float) -> None:
    start = math.floor(NOW) + 120.0 + fraction
    if start == math.floor(start):  # rounding of the sum
        return
    problem = pass_plan_problem(plan(qkd_start_unix_s=start), NOW)
    assert problem is not None and "whole second" in problem


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=10**9))
def test_whole_ps_periods_pass(period_ps: int) -> None:
    assert pass_plan_problem(plan(repetition_rate_hz=1e12 / period_ps), NOW) is None


@pytest.mark.parametrize("rate", [3e8, 7e7, 1.5e9, 99.9e6])
def test_period_not_whole_ps_refused(rate: float) -> None:
    problem = pass_plan_problem(plan(repetition_rate_hz=rate), NOW)
    assert problem is not None and "not whole ps" in problem


def test_window_length_bounded() -> None:
    start = math.floor(NOW) + 120.0
    ok = plan(qkd_stop_unix_s=start + MAX_QKD_WINDOW_S, los_unix_s=start + 2 * MAX_QKD_WINDOW_S)
    assert pass_plan_problem(ok, NOW) is None
    long = plan(qkd_stop_unix_s=start + MAX_QKD_WINDOW_S + 1, los_unix_s=start + 2e4)
    problem = pass_plan_problem(long, NOW)
    assert problem is not None and "longer than" in problem


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0, max_value=1e5, allow_nan=False))
def test_window_already_started_refused(after_start_s: float) -> None:
    """A plan loaded at or after its QKD start (e.g. by a restarted payload) is refused."""
    start = math.floor(NOW) + 120.0
    problem = pass_plan_problem(plan(), start + after_start_s)
    assert problem is not None and "already started" in problem


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False))
def test_before_start_accepted(before_start_s: float) -> None:
    start = math.floor(NOW) + 120.0
    now = start - before_start_s
    if not now < start:
        return
    assert pass_plan_problem(plan(), now) is None


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "plan_id": st.one_of(st.integers(-10, 2**33), st.floats(), st.none()),
            "aos_unix_s": st.floats(),
            "qkd_start_unix_s": st.one_of(st.floats(), st.integers(-(2**40), 2**40)),
            "qkd_stop_unix_s": st.floats(),
            "los_unix_s": st.floats(),
            "repetition_rate_hz": st.one_of(st.floats(), st.integers(-10, 10**10)),
        }
    ),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_never_raises_and_valid_means_every_rule_holds(
    fields: dict[str, object], now: float
) -> None:
    problem = pass_plan_problem(fields, now)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        aos, start = float(fields["aos_unix_s"]), float(fields["qkd_start_unix_s"])
        stop, los = float(fields["qkd_stop_unix_s"]), float(fields["los_unix_s"])
        period = 1e12 / float(fields["repetition_rate_hz"])
        assert isinstance(fields["plan_id"], int) and fields["plan_id"] >= 0
        assert aos <= start < stop <= los and start == int(start) and start > now
        assert abs(period - round(period)) <= 1e-6 and stop - start <= MAX_QKD_WINDOW_S


def test_pure_same_answer_twice() -> None:
    fields = plan(qkd_start_unix_s=NOW)
    assert pass_plan_problem(fields, NOW) == pass_plan_problem(fields, NOW)
    assert fields == plan(qkd_start_unix_s=NOW)  # not changed
