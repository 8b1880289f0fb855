"""Tests for satqkd_core.sync_tracking: the offset line tracked across the frames of a pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.sync import SyncResult
from satqkd_core.sync_tracking import (
    TimingState,
    _count_within_kernel,
    _count_within_kernel_reference,
    _periodogram_drift,
    _phasor_bins_kernel,
    _phasor_bins_kernel_reference,
    track_pulse_indices,
)

PERIOD_PS = 10_000.0  # 100 MHz
WINDOW_PS = 1_000.0
kernel_lengths = st.sampled_from([0, 1, 7, 8, 63, 64, 65, 200]) | st.integers(0, 300)

PASS_START_PS = 1_650_000_000_000_000  # QKD start on the tagger's clock
SPEED_OF_LIGHT_M_S = 299_792_458.0
TRACK_JITTER_PS = 150.0
PULSES_PER_FRAME = 100_000_000  # 1 s frames at 100 MHz


def pass_delay_ps(timestamp_ps: np.ndarray) -> np.ndarray:
    """One-way delay of a 500 km LEO pass culminating 200 s after QKD start (7.6 km/s)."""
    t_s = (np.asarray(timestamp_ps, dtype=np.float64) - PASS_START_PS) / 1e12
    range_m = np.sqrt(500e3**2 + (7.6e3 * (t_s - 200.0)) ** 2)
    return range_m / SPEED_OF_LIGHT_M_S * 1e12


def pass_frame(
    rng: np.random.Generator,
    k: int,
    drift_ppb: float,
    offset_ps: float,
    n_signal: int = 1_500,
    drift_change_ppb_per_s: float = 0.0,
    dark_fraction: float = 0.1,
    jump_ps: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Tags of frame k and their true pulse indices (-1: dark): pulse j leaves at
    start + j * period + clock(j * period), clock(tau) = offset - drift tau - change tau^2 / 2
    (the payload runs fast for drift > 0), and arrives a pass delay later, with jitter."""
    pulse = np.unique(rng.integers(k * PULSES_PER_FRAME, (k + 1) * PULSES_PER_FRAME, n_signal))
    tau = pulse.astype(np.float64) * PERIOD_PS
    clock = offset_ps + jump_ps - drift_ppb * 1e-9 * tau
    clock -= 0.5 * drift_change_ppb_per_s * 1e-21 * tau**2
    emit = PASS_START_PS + pulse * np.int64(PERIOD_PS)
    arrival = np.zeros(pulse.size)
    for _ in range(4):  # t = emit + clock + delay(t), by fixed-point iteration
        arrival = clock + pass_delay_ps(emit + np.round(arrival).astype(np.int64))
    signal = emit + np.round(arrival + rng.normal(0.0, TRACK_JITTER_PS, pulse.size)).astype(
        np.int64
    )
    n_dark = round(pulse.size * dark_fraction / (1 - dark_fraction))
    frame_start = PASS_START_PS + k * 10**12 + int(pass_delay_ps(PASS_START_PS + k * 10**12))
    dark = rng.integers(frame_start, frame_start + 10**12, n_dark)
    tags = np.concatenate([signal, dark])
    truth = np.concatenate([pulse, np.full(n_dark, -1, dtype=np.int64)])
    order = np.argsort(tags, kind="stable")
    return tags[order], truth[order]


def dark_frame(rng: np.random.Generator, k: int, n_dark: int = 200) -> np.ndarray:
    """Only dark tags (a cloud, or the signal not yet there)."""
    frame_start = PASS_START_PS + k * 10**12 + int(pass_delay_ps(PASS_START_PS + k * 10**12))
    return np.sort(rng.integers(frame_start, frame_start + 10**12, n_dark))


def track(state: TimingState, tags: np.ndarray, **kwargs) -> tuple[SyncResult, TimingState]:
    return track_pulse_indices(
        state, tags, pass_delay_ps(tags), PASS_START_PS, PERIOD_PS, WINDOW_PS, **kwargs
    )


def _check_frame(result: SyncResult, truth: np.ndarray) -> None:
    signal = truth >= 0
    assert np.mean(result.pulse_index[signal] == truth[signal]) >= 0.999
    # Every assigned signal tag has its own index; jitter (150 ps) puts ~0.1 % outside +-500 ps.
    assert np.all(result.pulse_index[signal & result.in_window] == truth[signal & result.in_window])
    assert result.in_window[signal].mean() >= 0.995
    assert result.in_window[~signal].mean() <= 0.2


@pytest.mark.parametrize(
    ("drift_ppb", "offset_ps"),
    [(0.0, 1_234.0), (100.0, 3_000.0), (-100.0, -2_000.0), (300.0, 4_000.0), (-300.0, -4_000.0)],
)
def test_tracker_assigns_every_frame_of_a_400_s_pass_with_drift(drift_ppb, offset_ps):
    rng = np.random.default_rng(int(drift_ppb) + 1_000)
    state = TimingState()
    assert not state.locked
    for k in range(400):
        tags, truth = pass_frame(rng, k, drift_ppb, offset_ps)
        result, state = track(state, tags)
        assert state.last_frame == ("acquired" if k == 0 else "tracked"), state.message
        _check_frame(result, truth)
    assert state.locked and state.mode == "tracking" and state.message == ""
    assert state.frames_measured == 400 and state.frames_coasted == state.frames_not_assigned == 0
    assert state.drift_ppb == pytest.approx(drift_ppb, abs=0.05)
    assert 0 < state.drift_error_ppb < 0.05
    # The offset at the last frame centre, whole periods included (a period is 10_000 ps): the
    # clock of the pulse j arriving then, o = offset - drift (t - start - delay - o) = j period.
    drift = drift_ppb * 1e-9
    elapsed_ps = state.reference_ps - PASS_START_PS - pass_delay_ps(state.reference_ps)
    truth = (offset_ps - drift * elapsed_ps) / (1 - drift)
    assert state.offset_ps == pytest.approx(truth, abs=20.0)
    # The result reports the absolute offset (whole periods included) and the offset drift.
    assert result.clock_offset_ps == pytest.approx(state.offset_ps)
    assert result.clock_drift_ps_per_s == pytest.approx(-drift_ppb * 1e3, abs=50.0)


@pytest.mark.parametrize("allowed_change_ppb_per_s", [0.01, 0.2])
def test_tracker_follows_a_drift_that_changes_during_the_pass(allowed_change_ppb_per_s):
    # 100 ppb changing by 0.2 ppb/s (an ephemeris along-track error of a few hundred metres),
    # every third frame; the default allowance (0.01 ppb/s) lags the change but keeps the count.
    rng = np.random.default_rng(11)
    state = TimingState()
    for k in range(0, 300, 3):
        tags, truth = pass_frame(rng, k, 100.0, 500.0, drift_change_ppb_per_s=0.2)
        result, state = track(state, tags, drift_change_ppb_per_s=allowed_change_ppb_per_s)
        assert state.last_frame in ("acquired", "tracked"), state.message
        _check_frame(result, truth)
    lag = 0.3 if allowed_change_ppb_per_s < 0.2 else 0.05
    assert state.drift_ppb == pytest.approx(100.0 + 0.2 * 297.5, abs=lag)


def test_periodogram_finds_the_drift_within_its_step():
    rng = np.random.default_rng(5)
    for drift_ppb in (-287.0, -40.0, 0.0, 3.3, 120.0, 299.0):
        tags, _ = pass_frame(rng, 3, drift_ppb, 2_000.0)
        drift, step, power, threshold = _periodogram_drift(
            tags, pass_delay_ps(tags), PASS_START_PS, PERIOD_PS, 300e-9
        )
        # The offset drifts against the payload clock rate: -drift_ppb.
        assert drift * 1e9 == pytest.approx(-drift_ppb, abs=step * 1e9)
        assert step * 1e9 < 1.5  # 1 s frames: 1.25 ppb
        assert power > 10 * threshold


def test_acquisition_failure_is_reported_not_guessed():
    rng = np.random.default_rng(6)
    # Dark tags only: no timing peak, no pulse index.
    result, state = track(TimingState(), dark_frame(rng, 0))
    assert state.mode == "acquiring" and not state.locked
    assert state.last_frame == "not assigned" and state.frames_not_assigned == 1
    assert state.message.startswith("acquisition: no timing peak in a drift search over +-300")
    assert not result.in_window.any() and np.all(result.pulse_index == -1)
    assert result.assigned_fraction == 0.0 and np.isnan(result.clock_offset_ps)
    # A drift outside the search range is not mistaken for one inside it.
    tags, _ = pass_frame(rng, 0, 500.0, 0.0)
    result, state = track(state, tags)
    assert state.mode == "acquiring" and state.message.startswith("acquisition: no timing peak")
    assert not result.in_window.any()
    # Pulse 0 half a period off its prediction: the whole-period count cannot be known.
    tags, _ = pass_frame(rng, 0, 100.0, 4_995.0)
    result, state = track(state, tags)
    assert state.mode == "acquiring"
    assert "does not fix the whole-period count" in state.message
    assert not result.in_window.any() and state.frames_not_assigned == 3
    # The signal comes: acquired, frames assigned.
    tags, truth = pass_frame(rng, 1, 100.0, 4_000.0)
    result, state = track(state, tags)
    assert state.last_frame == "acquired" and state.locked and state.message == ""
    _check_frame(result, truth)


def test_acquisition_on_a_later_frame_counts_whole_periods_from_qkd_start():
    rng = np.random.default_rng(7)
    state = TimingState()
    for k in range(3):  # no signal for the first three frames
        _, state = track(state, dark_frame(rng, k))
    assert state.frames_not_assigned == 3
    for k in range(3, 10):
        tags, truth = pass_frame(rng, k, -250.0, -3_500.0)
        result, state = track(state, tags)
        _check_frame(result, truth)
    assert state.frames_measured == 7 and state.drift_ppb == pytest.approx(-250.0, abs=0.1)


def test_weak_signal_arriving_late_locks_on_a_provisional_line_over_several_frames():
    # No signal for the first 10 s (the beacon not yet acquired), then a weak one (100 tags a
    # frame): one frame's drift, extrapolated back 10 s to QKD start, cannot fix the whole-period
    # count; the provisional line carried over the next frames narrows it until it does.
    rng = np.random.default_rng(3)
    state = TimingState()
    for k in range(10):
        _, state = track(state, dark_frame(rng, k))
    tags, _ = pass_frame(rng, 10, 0.0, 1_234.0, n_signal=100)
    result, state = track(state, tags)
    assert state.mode == "acquiring" and state.provisional_frames == 1
    assert "does not fix the whole-period count" in state.message
    assert "provisional line over 1 frames" in state.message
    assert not result.in_window.any()
    for k in range(11, 20):
        tags, truth = pass_frame(rng, k, 0.0, 1_234.0, n_signal=100)
        result, state = track(state, tags)
        if state.locked:
            signal = truth >= 0
            assert np.mean(result.pulse_index[signal] == truth[signal]) >= 0.99
    assert state.locked and state.provisional_frames == 0
    assert state.acquisition_attempts == 12  # 10 dark frames, then two with signal
    assert state.frames_measured == 10
    assert state.offset_ps == pytest.approx(1_234.0, abs=100.0)


def test_a_tighter_drift_change_bound_lets_a_weak_signal_20_s_late_lock():
    # 20 s dark, then 100 tags a frame from a payload 100 ppb fast, the drift bounded to change
    # by 0.001 ppb/s: the first frame's own drift leaves +-8.6 ns back at QKD start (one frame
    # alone never fixed the count); the provisional line fixes it within three frames.
    rng = np.random.default_rng(3)
    state = TimingState()
    for k in range(20):
        _, state = track(state, dark_frame(rng, k), drift_change_ppb_per_s=0.001)
    for k in range(20, 26):
        tags, truth = pass_frame(rng, k, 100.0, 1_234.0, n_signal=100)
        result, state = track(state, tags, drift_change_ppb_per_s=0.001)
        if state.locked:
            signal = truth >= 0
            assert np.mean(result.pulse_index[signal] == truth[signal]) >= 0.99
    assert state.locked and state.acquisition_attempts <= 24
    assert state.drift_ppb == pytest.approx(100.0, abs=0.1)


def test_tracker_coasts_over_a_short_gap_and_is_lost_after_a_long_one():
    rng = np.random.default_rng(8)
    state = TimingState()
    for k in range(10):
        tags, _ = pass_frame(rng, k, 100.0, 1_000.0)
        _, state = track(state, tags)
    # A cloud for 20 s: frames of dark tags are assigned from the prediction.
    for k in range(10, 30):
        result, state = track(state, dark_frame(rng, k))
        assert state.last_frame == "coasted" and state.locked
        assert "not significant" in state.message
        assert result.in_window.mean() <= 0.2
    # An empty buffer is coasted over too.
    empty = np.empty(0, dtype=np.int64)
    result, state = track(state, empty)
    assert state.last_frame == "coasted" and result.pulse_index.size == 0
    tags, truth = pass_frame(rng, 30, 100.0, 1_000.0)
    result, state = track(state, tags)
    assert state.last_frame == "tracked"
    _check_frame(result, truth)
    # A cloud for 40 s: after ~25 s a drift changing at 0.01 ppb/s, with the drift's own error,
    # could have moved the offset by half a period, so the tracker declares itself lost.
    coasted_before = state.frames_coasted
    for k in range(31, 71):
        result, state = track(state, dark_frame(rng, k))
        assert not result.in_window.any() or state.last_frame == "coasted"
    assert state.mode == "lost" and not state.locked
    assert state.message.startswith("lost: the offset extrapolated 2")
    assert "half a period or more" in state.message
    assert 20 < state.frames_coasted - coasted_before < 30
    tags, _ = pass_frame(rng, 71, 100.0, 1_000.0)
    result, state = track(state, tags)
    assert state.mode == "lost" and state.last_frame == "not assigned"
    assert not result.in_window.any()


def test_a_clock_jump_of_half_a_period_leaves_the_frame_unassigned():
    rng = np.random.default_rng(9)
    state = TimingState()
    for k in range(5):
        tags, _ = pass_frame(rng, k, 100.0, 0.0)
        _, state = track(state, tags)
    before = state
    tags, _ = pass_frame(rng, 5, 100.0, 0.0, jump_ps=PERIOD_PS / 2)
    result, state = track(state, tags)
    assert state.last_frame == "not assigned" and state.locked
    assert "whole-period count ambiguous" in state.message
    assert not result.in_window.any()
    assert (state.offset_ps, state.drift_ppb, state.reference_ps) == (
        before.offset_ps,
        before.drift_ppb,
        before.reference_ps,
    )
    # A smaller jump (a third of a period) is followed: the nearest count is unambiguous.
    for k in range(6, 9):
        tags, truth = pass_frame(rng, k, 100.0, 0.0, jump_ps=PERIOD_PS / 3)
        result, state = track(state, tags)
        assert state.last_frame == "tracked"
        _check_frame(result, truth)


def test_timing_state_offset_line():
    state = TimingState(mode="tracking", offset_ps=-5_000.0, drift_ppb=100.0, reference_ps=10**12)
    assert state.locked
    assert state.offset_at_ps(10**12) == -5_000.0
    assert state.offset_at_ps(2 * 10**12) == pytest.approx(-5_000.0 - 100_000.0)
    assert not TimingState().locked and TimingState().mode == "acquiring"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state": None}, r"^state: must be a TimingState, got NoneType"),
        ({"state": TimingState(mode="sleeping")}, r"^state: mode must be one of"),
        ({"max_drift_ppb": 0.0}, r"^max_drift_ppb: must be a number in \(0, 100000\]"),
        ({"max_drift_ppb": "300"}, r"^max_drift_ppb: must be a number"),
        ({"drift_change_ppb_per_s": -1.0}, r"^drift_change_ppb_per_s: must be a finite number"),
        ({"drift_change_ppb_per_s": math.inf}, r"^drift_change_ppb_per_s: must be a finite"),
        ({"timestamp_ps": np.zeros(4)}, r"^timestamp_ps: must have dtype int64"),
        ({"predicted_delay_ps": np.zeros(3)}, r"^predicted_delay_ps: length 3 does not match"),
        ({"pulse_period_ps": -1.0}, r"^pulse_period_ps: must be a finite number > 0"),
        ({"window_ps": 0.0}, r"^window_ps: must be a number in \(0, pulse_period_ps\]"),
    ],
)
def test_tracker_bad_input_raises_input_error_naming_the_argument(kwargs, message):
    args = {
        "state": TimingState(),
        "timestamp_ps": np.arange(4, dtype=np.int64) * 10_000 + PASS_START_PS,
        "predicted_delay_ps": np.zeros(4),
        "qkd_start_ps": PASS_START_PS,
        "pulse_period_ps": PERIOD_PS,
        "window_ps": WINDOW_PS,
    }
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        track_pulse_indices(**args)


def test_a_frame_too_long_for_the_drift_search_is_refused():
    tags = np.array([PASS_START_PS, PASS_START_PS + 10**15], dtype=np.int64)
    with pytest.raises(InputError, match=r"^timestamp_ps: frame spans 1000 s, too long"):
        track_pulse_indices(
            TimingState(), tags, np.zeros(2), PASS_START_PS, PERIOD_PS, WINDOW_PS, 10_000.0
        )


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    period=st.floats(100.0, 1e5),
    n_bins=st.sampled_from([1, 7, 64, 1000]),
    bin_width=st.floats(1e6, 1e10),
)
def test_phasor_bins_kernel_matches_reference(n, seed, period, n_bins, bin_width):
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, 2**50))
    t = np.sort(start + rng.integers(-(10**9), 10**13, n)).astype(np.int64)
    d = rng.uniform(0.0, 5e9, n)
    first = int(t[0]) if n else start
    got = (np.zeros(n_bins), np.zeros(n_bins))
    want = (np.zeros(n_bins), np.zeros(n_bins))
    _phasor_bins_kernel(t, d, np.int64(start), period, np.int64(first), bin_width, *got)
    _phasor_bins_kernel_reference(t, d, start, period, first, bin_width, *want)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-9)
    # Each tag adds one unit phasor to one bin.
    assert np.sum(np.hypot(*got)) <= n + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    half_width=st.floats(0.0, 6_000.0),
)
def test_count_within_kernel_matches_reference(n, seed, half_width):
    values = np.random.default_rng(seed).uniform(-5_000.0, 5_000.0, n)
    values[: n // 3] = np.round(values[: n // 3])  # some exactly on integer widths
    got = _count_within_kernel(values, half_width)
    assert got == _count_within_kernel_reference(values, half_width)
    assert got == np.count_nonzero(np.abs(values) <= half_width)
