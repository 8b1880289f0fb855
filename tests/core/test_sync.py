"""Tests for satqkd_core.sync: time tags -> pulse indices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.sync import (
    SyncResult,
    TimingState,
    _assign_kernel,
    _assign_kernel_reference,
    _gated_line_fit_kernel,
    _gated_line_fit_kernel_reference,
    _periodogram_drift,
    _phase_histogram_kernel,
    _phase_histogram_kernel_reference,
    _phasor_bins_kernel,
    _phasor_bins_kernel_reference,
    _refine_peak_kernel,
    _refine_peak_kernel_reference,
    assign_pulse_indices,
    estimate_clock_offset_ps,
    track_pulse_indices,
)

PERIOD_PS = 10_000.0  # 100 MHz
QKD_START_PS = 1_650_000_000_000_000  # an absolute tagger time, ~1.65e3 s
WINDOW_PS = 1_000.0
JITTER_PS = 50.0
DELAY0_PS = 2.4e9  # ~720 km slant range
DELAY_RATE = 6.0e-6  # the delay changes by 6 us per second of pass
DELAY_ACCEL_PER_S = -4.0e-8  # range-rate change, per second


def predicted_delay_ps(timestamp_ps: np.ndarray) -> np.ndarray:
    """Ephemeris-like one-way delay at reception time: varies by microseconds per second."""
    t_s = (timestamp_ps - QKD_START_PS).astype(np.float64) / 1e12
    return DELAY0_PS + 1e12 * (DELAY_RATE * t_s + 0.5 * DELAY_ACCEL_PER_S * t_s**2)


def synthetic_frame(
    seed: int,
    n_signal: int,
    offset_ps: float,
    drift_ps_per_s: float = 0.0,
    dark_fraction: float = 0.1,
    n_pulses: int = 20_000_000,
):
    """Signal tags with known pulse indices plus uniformly random dark tags."""
    rng = np.random.default_rng(seed)
    pulse = np.sort(rng.choice(n_pulses, n_signal, replace=False)).astype(np.int64)
    emit = QKD_START_PS + pulse * np.int64(PERIOD_PS)
    # Solve t = emit + delay(t) + offset(t) by fixed-point iteration (delay' << 1).
    arrival = emit.astype(np.float64) + DELAY0_PS
    for _ in range(5):
        t_int = np.round(arrival).astype(np.int64)
        t_s = (t_int - QKD_START_PS) / 1e12
        arrival = emit + predicted_delay_ps(t_int) + offset_ps + drift_ps_per_s * (t_s - 0.1)
    signal = np.round(arrival + rng.normal(0.0, JITTER_PS, n_signal)).astype(np.int64)
    n_dark = round(n_signal * dark_fraction / (1 - dark_fraction))
    lo, hi = int(signal.min()), int(signal.max())
    dark = rng.integers(lo, hi, n_dark, dtype=np.int64)
    tags = np.concatenate([signal, dark])
    truth = np.concatenate([pulse, np.full(n_dark, -1, dtype=np.int64)])
    order = np.argsort(tags, kind="stable")
    return tags[order], truth[order]


def _check_assignment(result: SyncResult, truth: np.ndarray) -> None:
    signal = truth >= 0
    correct = (result.pulse_index[signal] == truth[signal]) & result.in_window[signal]
    assert correct.mean() >= 0.999
    # The window is 10 % of the period, so about 90 % of dark tags must fall outside it.
    assert 1 - result.in_window[~signal].mean() >= 0.85


def test_signal_tags_get_their_pulse_index_with_doppler_jitter_offset_and_darks():
    tags, truth = synthetic_frame(seed=1, n_signal=50_000, offset_ps=3_700.0)
    result = assign_pulse_indices(
        tags, predicted_delay_ps(tags), QKD_START_PS, PERIOD_PS, WINDOW_PS
    )
    _check_assignment(result, truth)
    assert result.clock_offset_ps == pytest.approx(3_700.0, abs=5.0)
    assert abs(result.clock_drift_ps_per_s) < 100.0
    assert 0.88 < result.assigned_fraction < 0.93
    # Jitter is 50 ps; in-window dark tags (uniform over +-500 ps) widen the RMS a little.
    assert 45.0 < result.residual_rms_ps < 100.0
    assert result.pulse_index.dtype == np.int64
    assert result.residual_ps.dtype == np.float64
    assert result.in_window.dtype == np.bool_


@pytest.mark.parametrize("offset_ps", [-4_200.0, -1_000.0, 0.0, 2_500.0, 4_600.0])
def test_offset_estimate_is_unbiased_by_dark_counts(offset_ps):
    tags, _ = synthetic_frame(seed=2, n_signal=20_000, offset_ps=offset_ps, dark_fraction=0.3)
    estimate = estimate_clock_offset_ps(tags, predicted_delay_ps(tags), QKD_START_PS, PERIOD_PS)
    # Statistical error is ~ 50 ps / sqrt(14000); the background must not pull it further.
    assert estimate == pytest.approx(offset_ps, abs=3.0)


def test_slow_drift_across_the_frame_is_tracked():
    # 15 ns/s over 0.2 s: the offset walks 3 ns, three times the window, during the frame.
    tags, truth = synthetic_frame(seed=3, n_signal=50_000, offset_ps=-1_500.0,
                                  drift_ps_per_s=15_000.0)  # fmt: skip
    result = assign_pulse_indices(
        tags, predicted_delay_ps(tags), QKD_START_PS, PERIOD_PS, WINDOW_PS
    )
    _check_assignment(result, truth)
    assert result.clock_drift_ps_per_s == pytest.approx(15_000.0, rel=0.02)


def test_given_offset_is_applied_without_estimation():
    tags, truth = synthetic_frame(seed=4, n_signal=5_000, offset_ps=1_234.0)
    delay = predicted_delay_ps(tags)
    result = assign_pulse_indices(tags, delay, QKD_START_PS, PERIOD_PS, WINDOW_PS, 1_234.0)
    assert result.clock_offset_ps == 1_234.0
    assert result.clock_drift_ps_per_s == 0.0
    _check_assignment(result, truth)
    # A wrong offset puts the signal outside the window: the assignment visibly fails.
    wrong = assign_pulse_indices(tags, delay, QKD_START_PS, PERIOD_PS, WINDOW_PS, -3_000.0)
    assert wrong.assigned_fraction < 0.2


def test_residual_is_tag_minus_predicted_arrival():
    tags, _ = synthetic_frame(seed=5, n_signal=2_000, offset_ps=800.0)
    delay = predicted_delay_ps(tags)
    r = assign_pulse_indices(tags, delay, QKD_START_PS, PERIOD_PS, WINDOW_PS, 800.0)
    # Relative to the start instant: absolute ps times do not fit a float64 exactly.
    arrival_rel = r.pulse_index * PERIOD_PS + delay + 800.0
    np.testing.assert_allclose(r.residual_ps, (tags - QKD_START_PS) - arrival_rel, atol=0.01)
    assert np.all(np.abs(r.residual_ps) <= PERIOD_PS / 2 + 1e-6)
    in_win = r.in_window
    assert np.sqrt(np.mean(r.residual_ps[in_win] ** 2)) == pytest.approx(r.residual_rms_ps)
    assert r.assigned_fraction == pytest.approx(in_win.mean())


def test_tags_before_pulse_zero_are_not_assigned():
    tags = np.array([QKD_START_PS - 50_000, QKD_START_PS + 20_000], dtype=np.int64)
    delay = np.zeros(2)
    r = assign_pulse_indices(tags, delay, QKD_START_PS, PERIOD_PS, WINDOW_PS, 0.0)
    assert r.pulse_index.tolist() == [-5, 2]
    assert r.in_window.tolist() == [False, True]


def test_empty_input():
    empty_t = np.empty(0, dtype=np.int64)
    empty_d = np.empty(0, dtype=np.float64)
    r = assign_pulse_indices(empty_t, empty_d, QKD_START_PS, PERIOD_PS, WINDOW_PS)
    assert r.pulse_index.size == 0 and r.in_window.size == 0 and r.residual_ps.size == 0
    assert r.assigned_fraction == 0.0 and r.residual_rms_ps == 0.0
    assert r.clock_offset_ps == 0.0
    with pytest.raises(InputError, match=r"^timestamp_ps: need at least one tag"):
        estimate_clock_offset_ps(empty_t, empty_d, QKD_START_PS, PERIOD_PS)


def test_single_tag():
    tags = np.array([QKD_START_PS + 7 * 10_000 + 2_000_000_000 + 40], dtype=np.int64)
    delay = np.array([2e9])
    r = assign_pulse_indices(tags, delay, QKD_START_PS, PERIOD_PS, WINDOW_PS)
    assert r.pulse_index.tolist() == [7]
    assert r.in_window.tolist() == [True]
    assert r.clock_offset_ps == pytest.approx(40.0, abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"predicted_delay_ps": np.zeros(3)}, r"^predicted_delay_ps: length 3 does not match"),
        ({"timestamp_ps": np.zeros(4)}, r"^timestamp_ps: must have dtype int64, got float64"),
        ({"timestamp_ps": [1, 2, 3, 4]}, r"^timestamp_ps: must be a 1-D numpy array"),
        ({"predicted_delay_ps": np.zeros(4, dtype=np.float32)}, r"^predicted_delay_ps: must"),
        ({"predicted_delay_ps": np.array([0.0, np.nan, 0, 0])}, r"^predicted_delay_ps: contains"),
        ({"pulse_period_ps": 0.0}, r"^pulse_period_ps: must be a finite number > 0"),
        ({"qkd_start_ps": 1.5}, r"^qkd_start_ps: must be an integer"),
        ({"window_ps": 20_000.0}, r"^window_ps: must be a number in \(0, pulse_period_ps\]"),
        ({"window_ps": -1.0}, r"^window_ps: must be a number in"),
        ({"clock_offset_ps": 6_000.0}, r"^clock_offset_ps: must be a number with \|offset\|"),
    ],
)
def test_bad_input_raises_input_error_naming_the_argument(kwargs, message):
    args = {
        "timestamp_ps": np.arange(4, dtype=np.int64) * 10_000 + QKD_START_PS,
        "predicted_delay_ps": np.zeros(4),
        "qkd_start_ps": QKD_START_PS,
        "pulse_period_ps": PERIOD_PS,
        "window_ps": WINDOW_PS,
        "clock_offset_ps": None,
    }
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        assign_pulse_indices(**args)


# ---- kernel vs reference ---------------------------------------------------------------------


def _run(kernel, t, d, start, period, offset, drift, ref, half):
    n = t.size
    idx = np.empty(n, dtype=np.int64)
    res = np.empty(n, dtype=np.float64)
    win = np.empty(n, dtype=np.bool_)
    kernel(t, d, start, period, offset, drift, ref, half, idx, res, win)
    return idx, res, win


@settings(max_examples=150, deadline=None)
@given(
    n=st.sampled_from([0, 1, 7, 8, 63, 64, 65, 200]) | st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
    period=st.floats(100.0, 1e5),
    offset_fraction=st.floats(-0.49, 0.49),
    drift=st.floats(-1e-7, 1e-7),
    half=st.floats(1.0, 5e4),
)
def test_assign_kernel_matches_reference(n, seed, period, offset_fraction, drift, half):
    rng = np.random.default_rng(seed)
    start = np.int64(rng.integers(0, 2**50))
    t = start + rng.integers(-(10**9), 10**13, n).astype(np.int64)
    d = rng.uniform(0.0, 5e9, n)
    ref = np.int64(start + 10**12)
    args = (t, d, start, period, offset_fraction * period, drift, ref, half)
    got = _run(_assign_kernel, *args)
    want = _run(_assign_kernel_reference, t, d, int(start), period, offset_fraction * period,
                drift, int(ref), half)  # fmt: skip
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])


def test_small_frames_with_heavy_background_are_assigned():
    # Few tags per frame (20 signal + 20 dark): no spurious drift may be fitted to them.
    correct = total = 0
    for seed in range(300):
        offset = float((seed * 977) % 9_000 - 4_500)
        tags, truth = synthetic_frame(seed, 20, offset, dark_fraction=0.5, n_pulses=2_000_000)
        r = assign_pulse_indices(tags, predicted_delay_ps(tags), QKD_START_PS, PERIOD_PS, WINDOW_PS)
        signal = truth >= 0
        correct += int(((r.pulse_index[signal] == truth[signal]) & r.in_window[signal]).sum())
        total += int(signal.sum())
    # Jitter is 1/10 of the half-window, so every miss would be an estimation failure.
    assert correct == total


kernel_lengths = st.sampled_from([0, 1, 7, 8, 63, 64, 65, 200]) | st.integers(0, 300)


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    period=st.floats(100.0, 1e5),
    n_bins=st.sampled_from([1, 7, 64, 256]),
)
def test_phase_histogram_kernel_matches_reference(n, seed, period, n_bins):
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, 2**50))
    t = start + rng.integers(-(10**9), 10**13, n).astype(np.int64)
    d = rng.uniform(0.0, 5e9, n)
    # A prior offset line of up to +-1 ms at +-300 ppb, as the tracker passes.
    offset = float(rng.uniform(-1e9, 1e9))
    drift = float(rng.uniform(-3e-7, 3e-7))
    ref = start + int(rng.integers(0, 10**13))
    phase_got, phase_want = np.empty(n), np.empty(n)
    counts_got = np.zeros(n_bins, dtype=np.int64)
    counts_want = np.zeros(n_bins, dtype=np.int64)
    line = (offset, drift)
    _phase_histogram_kernel(t, d, np.int64(start), period, *line, np.int64(ref), phase_got,
                            counts_got)  # fmt: skip
    _phase_histogram_kernel_reference(t, d, start, period, *line, ref, phase_want, counts_want)
    np.testing.assert_array_equal(phase_got, phase_want)
    np.testing.assert_array_equal(counts_got, counts_want)
    assert counts_got.sum() == n
    assert np.all(np.abs(phase_got) <= period / 2)


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    centre_fraction=st.floats(-0.5, 0.5),
    dark_fraction=st.floats(0.0, 1.0),
    coarse_error=st.floats(-300.0, 300.0),
)
def test_refine_peak_kernel_matches_reference(n, seed, centre_fraction, dark_fraction,
                                              coarse_error):  # fmt: skip
    rng = np.random.default_rng(seed)
    period = 10_000.0
    centre = centre_fraction * period
    phase = np.where(
        rng.random(n) < dark_fraction,
        rng.uniform(-period / 2, period / 2, n),
        centre + rng.normal(0.0, 80.0, n),
    )
    phase = phase - period * np.floor(phase / period + 0.5)
    coarse = centre + coarse_error
    got = _refine_peak_kernel(phase, coarse, period, period / 8)
    want = _refine_peak_kernel_reference(phase, coarse, period, period / 8)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    gate=st.floats(10.0, 5_000.0),
    slope=st.floats(-1e-8, 1e-8),
)
def test_gated_line_fit_kernel_matches_reference(n, seed, gate, slope):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 10**11, n)).astype(np.int64)
    r = rng.uniform(-5_000.0, 5_000.0, n) + slope * t
    got = _gated_line_fit_kernel(t, r, gate, np.int64(5 * 10**10))
    want = _gated_line_fit_kernel_reference(t, r, gate, 5 * 10**10)
    assert got[0] == want[0]
    for g, w in zip(got[1:], want[1:], strict=True):
        assert g == pytest.approx(w, rel=1e-9, abs=1e-12) or (np.isinf(g) and np.isinf(w))


def test_gated_line_fit_recovers_a_known_line():
    t = np.arange(0, 10**9, 10**6, dtype=np.int64)
    r = 12.5 + 3e-6 * (t - 5 * 10**8).astype(np.float64)
    n, t_mean, r_mean, slope, slope_error = _gated_line_fit_kernel(t, r, 1e6, np.int64(5 * 10**8))
    assert n == t.size
    assert slope == pytest.approx(3e-6, rel=1e-9)
    assert r_mean - slope * t_mean == pytest.approx(12.5, abs=1e-6)
    assert slope_error < 1e-12


# ---- tracking across frames ------------------------------------------------------------------

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
