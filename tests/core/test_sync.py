"""Tests for satqkd_core.sync: time tags -> pulse indices, one frame at a time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import satqkd_core.sync as sync
import satqkd_core.sync_tracking as sync_tracking
from satqkd_core.errors import InputError
from satqkd_core.sync import (
    SyncResult,
    _assign_kernel,
    _assign_kernel_reference,
    _gated_line_fit_kernel,
    _gated_line_fit_kernel_reference,
    _pairwise_sum_kernel,
    _pairwise_sum_kernel_reference,
    _peak_candidates_kernel,
    _peak_candidates_kernel_reference,
    _phase_histogram_kernel,
    _phase_histogram_kernel_reference,
    _refine_peak_kernel,
    _refine_peak_kernel_reference,
    _time_span_kernel,
    _time_span_kernel_reference,
    assign_pulse_indices,
    estimate_clock_offset_ps,
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

# Empty, one, lengths around the 8-lane and 64-word widths and the 512-tag kernel chunk.
kernel_lengths = st.sampled_from([0, 1, 7, 8, 9, 63, 64, 65, 511, 512, 513, 1025]) | st.integers(
    0, 300
)


def _random_tags(rng: np.random.Generator, n: int) -> tuple[int, np.ndarray, np.ndarray]:
    start = int(rng.integers(0, 2**50))
    t = start + rng.integers(-(10**9), 10**13, n).astype(np.int64)
    d = rng.uniform(0.0, 5e9, n)
    return start, t, d


def _run(kernel, t, d, start, period, offset, drift, ref, half):
    n = t.size
    idx = np.empty(n, dtype=np.int64)
    res = np.empty(n, dtype=np.float64)
    win = np.empty(n, dtype=np.bool_)
    squares = np.empty(n, dtype=np.float64)
    n_in = kernel(t, d, start, period, offset, drift, ref, half, idx, res, win, squares)
    return idx, res, win, squares[:n_in]


@settings(max_examples=150, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    period=st.floats(100.0, 1e5),
    offset_fraction=st.floats(-0.49, 0.49),
    drift=st.floats(-1e-7, 1e-7),
    half=st.floats(1.0, 5e4),
)
def test_assign_kernel_matches_reference(n, seed, period, offset_fraction, drift, half):
    rng = np.random.default_rng(seed)
    start, t, d = _random_tags(rng, n)
    ref = start + 10**12
    args = (t, d, np.int64(start), period, offset_fraction * period, drift, np.int64(ref), half)
    got = _run(_assign_kernel, *args)
    want = _run(_assign_kernel_reference, t, d, start, period, offset_fraction * period,
                drift, ref, half)  # fmt: skip
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got[3], got[1][got[2]] ** 2)


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths | st.sampled_from([127, 128, 129, 135, 136, 257, 4099]),
    seed=st.integers(0, 2**32 - 1),
)
def test_pairwise_sum_kernel_matches_reference_and_numpy(n, seed):
    values = np.random.default_rng(seed).exponential(2_500.0, n) ** 2
    got = _pairwise_sum_kernel(values)
    assert got == _pairwise_sum_kernel_reference(values)
    # numpy sums float64 arrays the same way, so the RMS is the one np.mean gives, to the bit.
    if n:
        assert (0.0 + got) / n == np.mean(values)


@settings(max_examples=100, deadline=None)
@given(n=kernel_lengths.filter(lambda n: n > 0), seed=st.integers(0, 2**32 - 1))
def test_time_span_kernel_matches_reference(n, seed):
    t = np.random.default_rng(seed).integers(-(2**62), 2**62, n)
    low, high = _time_span_kernel(t)
    assert (int(low), int(high)) == _time_span_kernel_reference(t) == (t.min(), t.max())


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


def _prior_line(rng: np.random.Generator, start: int) -> tuple[float, float, int]:
    """A prior offset line of up to +-1 ms at +-300 ppb, as the tracker passes."""
    offset = float(rng.uniform(-1e9, 1e9))
    drift = float(rng.uniform(-3e-7, 3e-7))
    return offset, drift, start + int(rng.integers(0, 10**13))


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    period=st.floats(100.0, 1e5),
    n_bins=st.sampled_from([1, 7, 64, 256]),
)
def test_phase_histogram_kernel_matches_reference(n, seed, period, n_bins):
    rng = np.random.default_rng(seed)
    start, t, d = _random_tags(rng, n)
    offset, drift, ref = _prior_line(rng, start)
    # Counts are added to what the array holds.
    counts_got = rng.integers(0, 5, n_bins).astype(np.int64)
    counts_want = counts_got.copy()
    _phase_histogram_kernel(t, d, np.int64(start), period, offset, drift, np.int64(ref),
                            counts_got)  # fmt: skip
    _phase_histogram_kernel_reference(t, d, start, period, offset, drift, ref, counts_want)
    np.testing.assert_array_equal(counts_got, counts_want)


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    period=st.floats(100.0, 1e5),
    coarse_fraction=st.floats(-0.5, 0.5),
    reach_fraction=st.floats(0.0, 0.5),
)
def test_peak_candidates_kernel_matches_reference(n, seed, period, coarse_fraction,
                                                  reach_fraction):  # fmt: skip
    rng = np.random.default_rng(seed)
    start, t, d = _random_tags(rng, n)
    offset, drift, ref = _prior_line(rng, start)
    args = (period, offset, drift)
    tail = (coarse_fraction * period, reach_fraction * period)
    got = np.zeros(n)
    want = np.zeros(n)
    n_got = _peak_candidates_kernel(t, d, np.int64(start), *args, np.int64(ref), *tail, got)
    n_want = _peak_candidates_kernel_reference(t, d, start, *args, ref, *tail, want)
    assert n_got == n_want and sum(n_got) == n
    np.testing.assert_array_equal(got[: n_got[0]], want[: n_want[0]])
    assert np.all(np.abs(got[: n_got[0]]) <= reach_fraction * period)


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
    d = phase - (centre + coarse_error)
    d -= period * np.floor(d / period + 0.5)
    near = np.abs(d) <= period / 4
    candidates, n_far = d[near], int(np.count_nonzero(~near))
    got = _refine_peak_kernel(candidates, n_far, period, period / 8)
    want = _refine_peak_kernel_reference(candidates, n_far, period, period / 8)
    assert got == want


@settings(max_examples=100, deadline=None)
@given(
    n=kernel_lengths,
    seed=st.integers(0, 2**32 - 1),
    gate=st.floats(10.0, 5_000.0),
    slope=st.floats(-1e-8, 1e-8),
)
def test_gated_line_fit_kernel_matches_reference(n, seed, gate, slope):
    rng = np.random.default_rng(seed)
    period = 10_000.0
    start = 10**15
    t = start + np.sort(rng.integers(0, 10**11, n)).astype(np.int64)
    # Delays putting the tags at a random phase plus a slope; the prior line is slightly off.
    d = rng.uniform(-5_000.0, 5_000.0, n) + slope * (t - start) + 2.5e9
    line = (float(rng.uniform(-200.0, 200.0)), float(rng.uniform(-1e-8, 1e-8)))
    ref = start + 5 * 10**10
    buffers = (np.empty(n), np.empty(n))
    got = _gated_line_fit_kernel(t, d, np.int64(start), period, *line, np.int64(ref), gate,
                                 *buffers)  # fmt: skip
    want = _gated_line_fit_kernel_reference(t, d, start, period, *line, ref, gate, *buffers)
    assert got[0] == want[0]
    for g, w in zip(got[1:], want[1:], strict=True):
        assert g == w or (np.isinf(g) and np.isinf(w))


def test_gated_line_fit_recovers_a_known_line():
    period = 1e9  # one pulse: every residual is the distance to the line
    t = np.arange(0, 10**9, 10**6, dtype=np.int64)
    # residual = (t - delay) - (offset + drift (t - ref)) with delay chosen to give a line
    residual = 12.5 + 3e-6 * (t - 5 * 10**8).astype(np.float64)
    d = t.astype(np.float64) - residual
    buffers = (np.empty(t.size), np.empty(t.size))
    n, t_mean, r_mean, slope, slope_error = _gated_line_fit_kernel(
        t, d, np.int64(0), period, 0.0, 0.0, np.int64(5 * 10**8), 1e6, *buffers
    )
    assert n == t.size
    assert slope == pytest.approx(3e-6, rel=1e-9)
    assert r_mean - slope * t_mean == pytest.approx(12.5, abs=1e-6)
    assert slope_error < 1e-12


def test_tracker_names_are_importable_from_sync():
    from satqkd_core.sync import TimingState, track_pulse_indices

    assert TimingState is sync_tracking.TimingState
    assert track_pulse_indices is sync_tracking.track_pulse_indices
    assert sync.DEFAULT_MAX_DRIFT_PPB == 300.0
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        sync.no_such_name  # noqa: B018
