"""Tests for the count back to pulse 0 bounded by the pass's own geometry (decision 0030).

A late, weak signal must count whole pulse periods back to QKD start; how far the drift may have
changed over that span is bounded by what an ephemeris good enough for the pulse-0 premise can
get wrong about the light-time drift (count_back_drift_change_ppb_per_s), not by a flat prior.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from satqkd_core.errors import InputError
from satqkd_core.sync import TimingState, count_back_drift_change_ppb_per_s
from tests.core.test_sync_tracker import PERIOD_PS, dark_frame, pass_frame, track

# The geometry of tests.core.test_sync_tracker.pass_delay_ps: 500 km, 7.6 km/s, culmination
# 200 s after QKD start.
HEIGHT_M, SPEED_M_S, CULMINATION_S = 500e3, 7.6e3, 200.0


def range_rate_and_jerk(t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Range rate and d3r/dt3 of r = sqrt(h^2 + (v (t - tc))^2), in closed form."""
    x = SPEED_M_S * (t_s - CULMINATION_S)
    r = np.hypot(HEIGHT_M, x)
    return SPEED_M_S * x / r, -3.0 * SPEED_M_S**3 * HEIGHT_M**2 * x / r**5


def grid_jerk(t_s: np.ndarray) -> np.ndarray:
    """d3r/dt3 from the range rate sampled on a 1 s grid, as the station's session takes it."""
    rate, _ = range_rate_and_jerk(t_s)
    return np.gradient(np.gradient(rate, 1.0), 1.0)


def test_the_bound_is_the_ephemeris_error_the_premise_allows_times_the_range_jerk() -> None:
    t = np.arange(0.0, 41.0)
    rate, jerk = range_rate_and_jerk(t)
    # The premise: the range at QKD start within c P / 2 (1.5 m), so an along-track timing error
    # of at most 1.5 m / |range rate| (0.21 ms at 7.2 km/s); it changes the drift's rate by
    # |d3r/dt3| x that / c.
    dt_s = 299_792_458.0 * 0.5 * PERIOD_PS * 1e-12 / abs(rate[0])
    expected_ppb_per_s = np.max(np.abs(jerk)) * dt_s / 299_792_458.0 * 1e9
    sampled = grid_jerk(np.arange(-2.0, 43.0))[2:-2]  # on [0, 40] s, central differences
    bound = count_back_drift_change_ppb_per_s(sampled, rate[0], PERIOD_PS, 0.0)
    assert bound == pytest.approx(expected_ppb_per_s, rel=0.02)
    # Over the first 40 s, far from culmination, it is ~100 times tighter than the flat prior.
    assert 1e-5 < bound < 1e-4
    # Nearer culmination the range's jerk, so the bound, grows; the oscillator's term adds on.
    longer = count_back_drift_change_ppb_per_s(grid_jerk(np.arange(0.0, 181.0)), rate[0], PERIOD_PS)
    assert longer > 10 * bound
    with_clock = count_back_drift_change_ppb_per_s(sampled, rate[0], PERIOD_PS, 1e-4)
    assert with_clock == pytest.approx(bound + 1e-4)


def test_a_qkd_start_at_culmination_gives_no_geometric_bound() -> None:
    # With the range barely changing at QKD start, its error does not bound the timing error.
    assert count_back_drift_change_ppb_per_s(np.array([0.1, 0.2]), 0.5, PERIOD_PS) == math.inf


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.array([]), 7000.0, PERIOD_PS), "range_jerk_m_s3"),
        ((np.array([np.nan]), 7000.0, PERIOD_PS), "range_jerk_m_s3"),
        ((np.array([0.1]), math.inf, PERIOD_PS), "range_rate_at_start_m_s"),
        ((np.array([0.1]), 7000.0, "10000"), "pulse_period_ps"),
        ((np.array([0.1]), 7000.0, PERIOD_PS, -1e-4), "clock_drift_change_ppb_per_s"),
    ],
)
def test_bad_input_names_the_argument(args, message) -> None:
    with pytest.raises(InputError, match=message):
        count_back_drift_change_ppb_per_s(*args)


def test_the_tracker_refuses_a_negative_count_back_bound() -> None:
    tags = dark_frame(np.random.default_rng(1), 0)
    with pytest.raises(InputError, match="count_back_drift_change_ppb_per_s"):
        track(TimingState(), tags, count_back_drift_change_ppb_per_s=-1.0)


def _late_weak_signal(**kwargs) -> tuple[TimingState, list[bool]]:
    """30 s dark (the beacon not yet acquired), then 100 tags a frame for 12 s; return the
    last state and, per signal frame after lock, whether its pulse indices were right."""
    rng = np.random.default_rng(5)
    state = TimingState()
    for k in range(30):
        _, state = track(state, dark_frame(rng, k), **kwargs)
    right = []
    for k in range(30, 42):
        tags, truth = pass_frame(rng, k, 0.0, 1_234.0, n_signal=100)
        result, state = track(state, tags, **kwargs)
        if state.locked:
            signal = truth >= 0
            right.append(bool(np.mean(result.pulse_index[signal] == truth[signal]) >= 0.99))
    return state, right


def test_a_weak_signal_30_s_late_locks_with_the_geometric_bound_and_not_with_the_flat_one():
    # The flat 0.01 ppb/s alone leaves 0.5 r E^2 = 4.5 ns of the 5 ns at 30 s: no lock.
    flat, _ = _late_weak_signal()
    assert not flat.locked and flat.mode == "acquiring"
    assert "does not fix the whole-period count" in flat.message
    # The geometry's bound over the first 42 s (plus the oscillator's 1e-4 ppb/s) locks it, and
    # every frame from then on is counted from the right pulse.
    t = np.arange(0.0, 43.0)
    rate, _ = range_rate_and_jerk(t)
    bound = count_back_drift_change_ppb_per_s(grid_jerk(t), rate[0], PERIOD_PS)
    state, right = _late_weak_signal(count_back_drift_change_ppb_per_s=bound)
    assert state.locked and right and all(right)
    assert state.offset_ps == pytest.approx(1_234.0, abs=200.0)


def test_the_count_back_bound_never_loosens_the_flat_one():
    # A count-back bound larger than the flat prior is capped by it: the same outcome as none.
    loose, _ = _late_weak_signal(count_back_drift_change_ppb_per_s=1.0)
    flat, _ = _late_weak_signal()
    assert loose == flat
