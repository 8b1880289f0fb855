"""Synchronisation: ground time tags -> satellite pulse indices, one frame at a time.

Pulse j leaves the satellite at qkd_start_ps + j * pulse_period_ps (on the ground tagger's
clock, as agreed in the pass plan) and arrives after the one-way delay predicted from the
ephemeris for that tag, plus an unknown clock offset that may drift slowly across a frame:

    arrival_ps(j) = qkd_start_ps + j * pulse_period_ps + predicted_delay_ps + offset_ps(t)

The offset is found from the phase of (t - delay - start) modulo the period; it is only
defined modulo one period, so |offset| < period / 2 is assumed (a larger offset would shift
every pulse index by a whole number of periods, which timing alone cannot see).

`assign_pulse_indices` treats each frame on its own, so it needs that bound in every frame.
`track_pulse_indices` (in `sync_tracking`, importable from here too) carries the offset line,
whole periods included, and the payload clock drift from frame to frame in a `TimingState`.

Cost. Each pass over the tags recomputes the tag phase from the timestamps and delays rather
than storing it: a frame costs a phase histogram, one pass collecting the tags near the peak,
and per line-fit gate one pass that compacts the gated tags for the (order-preserving, hence
serial) least-squares sums, then the assignment itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core.errors import InputError

# Phase histogram resolution for the coarse offset search; 256 bins of a 10 ns period are
# 39 ps, comparable to detector jitter, so the signal peak spans a few bins.
_PHASE_BINS = 256
# Bins summed (circularly) when looking for the peak, so a peak split across bins still wins.
_PEAK_SMOOTHING_BINS = 5
# Half-width of the refinement window as a fraction of the period: wide enough to contain the
# whole timing peak for jitter up to ~period/20, narrow enough to keep most dark tags out.
_REFINE_HALF_WIDTH_FRACTION = 1.0 / 8.0
_REFINE_ITERATIONS = 8
# Minimum in-window tags before a clock drift (slope) is fitted; fewer leave it at zero.
_MIN_TAGS_FOR_DRIFT = 16
_DRIFT_SIGNIFICANCE = 3.0
_PS_PER_S = 1e12
# Kernels work through the tags in chunks: a vectorisable loop computes a chunk's phases or
# residuals into small cache-resident buffers, then a plain loop does what must stay in tag
# order (histogram counts, compaction, the serial sums that keep results bit-for-bit fixed).
_CHUNK = 512
# Names defined in sync_tracking and re-exported here (loaded on first use: no import cycle).
_TRACKING_NAMES = frozenset(
    {
        "DEFAULT_DRIFT_CHANGE_PPB_PER_S",
        "DEFAULT_MAX_DRIFT_PPB",
        "FRAME_OUTCOMES",
        "TRACKING_MODES",
        "TimingState",
        "track_pulse_indices",
    }
)


def __getattr__(name: str) -> object:
    """Re-export the frame-to-frame tracker (`from satqkd_core.sync import TimingState`)."""
    if name in _TRACKING_NAMES:
        from satqkd_core import sync_tracking

        return getattr(sync_tracking, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class SyncResult:
    """Pulse index assignment of one frame of time tags."""

    pulse_index: np.ndarray  # int64, one per input tag (garbage where not in_window)
    in_window: np.ndarray  # bool: |residual| <= window_ps / 2 (and pulse index >= 0)
    residual_ps: np.ndarray  # float64, tag time minus the assigned pulse's predicted arrival
    clock_offset_ps: float  # the offset that was estimated and applied (at the frame centre)
    assigned_fraction: float  # in_window.mean() (0.0 for no tags)
    residual_rms_ps: float  # RMS of residual over in-window tags (0.0 if none)
    clock_drift_ps_per_s: float = 0.0  # fitted offset drift across the frame (0 when given)


def _validate_tags(
    timestamp_ps: object, predicted_delay_ps: object
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(timestamp_ps, np.ndarray) or timestamp_ps.ndim != 1:
        raise InputError("timestamp_ps: must be a 1-D numpy array of int64")
    if timestamp_ps.dtype != np.int64:
        raise InputError(f"timestamp_ps: must have dtype int64, got {timestamp_ps.dtype}")
    if not isinstance(predicted_delay_ps, np.ndarray) or predicted_delay_ps.ndim != 1:
        raise InputError("predicted_delay_ps: must be a 1-D numpy array of float64")
    if predicted_delay_ps.dtype != np.float64:
        raise InputError(
            f"predicted_delay_ps: must have dtype float64, got {predicted_delay_ps.dtype}"
        )
    if predicted_delay_ps.shape != timestamp_ps.shape:
        raise InputError(
            f"predicted_delay_ps: length {predicted_delay_ps.size} does not match "
            f"timestamp_ps length {timestamp_ps.size}"
        )
    # A finite sum proves every term finite (NaN and inf propagate); only an infinite or NaN
    # sum, or an overflowing one, needs the element-wise check.
    if not np.isfinite(np.sum(predicted_delay_ps)) and not np.all(np.isfinite(predicted_delay_ps)):
        raise InputError("predicted_delay_ps: contains NaN or infinite values")
    return np.ascontiguousarray(timestamp_ps), np.ascontiguousarray(predicted_delay_ps)


def _validate_timing(qkd_start_ps: object, pulse_period_ps: object) -> tuple[int, float]:
    if not isinstance(qkd_start_ps, (int, np.integer)) or isinstance(qkd_start_ps, bool):
        raise InputError(f"qkd_start_ps: must be an integer, got {qkd_start_ps!r}")
    if not isinstance(pulse_period_ps, (int, float, np.integer, np.floating)) or not (
        np.isfinite(pulse_period_ps) and pulse_period_ps > 0
    ):
        raise InputError(f"pulse_period_ps: must be a finite number > 0, got {pulse_period_ps!r}")
    return int(qkd_start_ps), float(pulse_period_ps)


def _validate_window(window_ps: object, period_ps: float) -> float:
    """Return half the window after checking it lies in (0, period]."""
    if not isinstance(window_ps, (int, float, np.integer, np.floating)) or not (
        0 < window_ps <= period_ps
    ):
        raise InputError(f"window_ps: must be a number in (0, pulse_period_ps], got {window_ps!r}")
    return float(window_ps) / 2


def _frame_reference_ps(timestamp_ps: np.ndarray) -> int:
    """Tagger time half way between the first and last tag (offsets are referred to it)."""
    t_min, t_max = _time_span_kernel(timestamp_ps)
    return int(t_min) + (int(t_max) - int(t_min)) // 2


@numba.njit(cache=True, nogil=True)
def _time_span_kernel(timestamp_ps: np.ndarray) -> tuple[np.int64, np.int64]:
    """(min, max) of a non-empty int64 array in one pass."""
    low = timestamp_ps[0]
    high = timestamp_ps[0]
    for i in range(1, timestamp_ps.size):
        t = timestamp_ps[i]
        low = min(low, t)
        high = max(high, t)
    return low, high


def _time_span_kernel_reference(timestamp_ps: np.ndarray) -> tuple[int, int]:
    """Plain-Python reference for _time_span_kernel."""
    values = [int(t) for t in timestamp_ps]
    return min(values), max(values)


# ---- timing peak: coarse histogram, then a background-corrected mean --------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _tag_phase(
    timestamp_ps: np.int64,
    delay_ps: float,
    qkd_start_ps: np.int64,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: np.int64,
) -> float:
    """Get a tag's phase t - start - delay - line(t), wrapped to the nearest period."""
    # Integer subtraction first keeps full precision for absolute tagger times ~1e15 ps.
    x = np.float64(timestamp_ps - qkd_start_ps) - delay_ps
    x -= offset_ps + drift_per_ps * np.float64(timestamp_ps - reference_ps)
    return x - period_ps * np.floor(x / period_ps + 0.5)


def _tag_phase_reference(
    timestamp_ps: int,
    delay_ps: float,
    qkd_start_ps: int,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: int,
) -> float:
    """Plain-Python reference for _tag_phase."""
    x = float(int(timestamp_ps) - qkd_start_ps) - float(delay_ps)
    x -= offset_ps + drift_per_ps * float(int(timestamp_ps) - reference_ps)
    return x - period_ps * math.floor(x / period_ps + 0.5)


@numba.njit(cache=True, nogil=True)
def _phase_histogram_kernel(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: np.int64,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: np.int64,
    counts: np.ndarray,
) -> None:
    """Add to counts (one entry per bin) the histogram of the phases
    (t - start - delay - line(t)) wrapped into [-period/2, period/2), where
    line(t) = offset + drift (t - reference) is a prior offset line."""
    n_bins = counts.size
    bin_width = period_ps / n_bins
    bins = np.empty(_CHUNK, dtype=np.int64)
    # Eight interleaved histograms: signal tags hit the same few bins, one after another.
    lanes = np.zeros((8, n_bins), dtype=np.int64)
    n = timestamp_ps.size
    for first in range(0, n, _CHUNK):
        # Chunk views indexed from 0: contiguous loads (an offset index defeats vectorising).
        t = timestamp_ps[first : first + _CHUNK]
        delay = predicted_delay_ps[first : first + _CHUNK]
        size = t.size
        for c in range(size):
            p = _tag_phase(
                t[c], delay[c], qkd_start_ps, period_ps, offset_ps, drift_per_ps, reference_ps
            )
            b = np.int64(np.floor((p + period_ps / 2) / bin_width))
            bins[c] = min(max(b, 0), n_bins - 1)
        for c in range(size):
            lanes[c & 7, bins[c]] += 1
    for lane in range(8):
        for b in range(n_bins):
            counts[b] += lanes[lane, b]


def _phase_histogram_kernel_reference(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: int,
    counts: np.ndarray,
) -> None:
    """Plain-Python reference for _phase_histogram_kernel."""
    n_bins = len(counts)
    bin_width = period_ps / n_bins
    for i in range(len(timestamp_ps)):
        p = _tag_phase_reference(
            timestamp_ps[i], predicted_delay_ps[i], qkd_start_ps, period_ps, offset_ps,
            drift_per_ps, reference_ps,
        )  # fmt: skip
        b = math.floor((p + period_ps / 2) / bin_width)
        counts[min(max(b, 0), n_bins - 1)] += 1


@numba.njit(cache=True, nogil=True)
def _peak_candidates_kernel(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: np.int64,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: np.int64,
    coarse_ps: float,
    reach_ps: float,
    candidates: np.ndarray,
) -> tuple[int, int]:
    """Write, in tag order, each tag's phase (as in _phase_histogram_kernel) minus coarse_ps,
    wrapped to the nearest period, when it lies within reach_ps; return (how many were written,
    how many were not)."""
    wrapped = np.empty(_CHUNK, dtype=np.float64)
    n_candidates = 0
    n = timestamp_ps.size
    for first in range(0, n, _CHUNK):
        t = timestamp_ps[first : first + _CHUNK]
        delay = predicted_delay_ps[first : first + _CHUNK]
        size = t.size
        for c in range(size):
            p = _tag_phase(
                t[c], delay[c], qkd_start_ps, period_ps, offset_ps, drift_per_ps, reference_ps
            )
            d = p - coarse_ps
            wrapped[c] = d - period_ps * np.floor(d / period_ps + 0.5)
        for c in range(size):
            # Written unconditionally, kept only when near: no branch on the tag's phase.
            candidates[n_candidates] = wrapped[c]
            n_candidates += abs(wrapped[c]) <= reach_ps
    return n_candidates, n - n_candidates


def _peak_candidates_kernel_reference(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: int,
    coarse_ps: float,
    reach_ps: float,
    candidates: np.ndarray,
) -> tuple[int, int]:
    """Plain-Python reference for _peak_candidates_kernel."""
    near = []
    for i in range(len(timestamp_ps)):
        p = _tag_phase_reference(
            timestamp_ps[i], predicted_delay_ps[i], qkd_start_ps, period_ps, offset_ps,
            drift_per_ps, reference_ps,
        )  # fmt: skip
        d = (p - coarse_ps) - period_ps * math.floor((p - coarse_ps) / period_ps + 0.5)
        if abs(d) <= reach_ps:
            near.append(d)
    candidates[: len(near)] = near
    return len(near), len(timestamp_ps) - len(near)


@numba.njit(cache=True, nogil=True)
def _refine_peak_kernel(
    candidates: np.ndarray, n_far: int, period_ps: float, half_width_ps: float
) -> float:
    """Return the shift from the coarse peak to the background-corrected mean of the timing
    peak, from the phases near it (within 2 half-widths) and the count n_far of the others."""
    # Tags further than twice the half-width from the peak are pure dark counts: their density
    # gives the expected number of background tags inside the window.
    n_background = n_far / (period_ps - 4 * half_width_ps) * (2 * half_width_ps)
    shift = 0.0
    terms = np.empty(_CHUNK, dtype=np.float64)
    n = candidates.size
    for _ in range(_REFINE_ITERATIONS):
        n_near = 0
        total = 0.0
        for first in range(0, n, _CHUNK):
            chunk = candidates[first : first + _CHUNK]
            size = chunk.size
            for c in range(size):
                e = chunk[c] - shift
                near = abs(e) <= half_width_ps
                n_near += near
                # Adding +0.0 leaves the (never -0.0) total unchanged: same sum, no branch.
                terms[c] = e if near else 0.0
            for c in range(size):
                total += terms[c]
        n_signal = n_near - n_background
        if n_signal < 1.0:
            break
        # The background is uniform around the current centre, so its mean offset is zero.
        step = total / n_signal
        shift += step
        if abs(step) < 1e-3:
            break
    return shift


def _refine_peak_kernel_reference(
    candidates: np.ndarray, n_far: int, period_ps: float, half_width_ps: float
) -> float:
    """Plain-Python reference for _refine_peak_kernel."""
    n_background = n_far / (period_ps - 4 * half_width_ps) * (2 * half_width_ps)
    shift = 0.0
    for _ in range(_REFINE_ITERATIONS):
        near = [float(d) - shift for d in candidates if abs(float(d) - shift) <= half_width_ps]
        n_signal = len(near) - n_background
        if n_signal < 1.0:
            break
        total = 0.0
        for e in near:
            total += e
        step = total / n_signal
        shift += step
        if abs(step) < 1e-3:
            break
    return shift


def _timing_peak_ps(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: int,
    scratch: np.ndarray,
) -> float:
    """Return the timing peak's position in [-period/2, period/2) relative to a prior line
    (scratch: a float64 array at least as long as the tags)."""
    line = (
        np.int64(qkd_start_ps), period_ps, float(offset_ps), float(drift_per_ps),
        np.int64(reference_ps),
    )  # fmt: skip
    counts = np.zeros(_PHASE_BINS, dtype=np.int64)
    _phase_histogram_kernel(timestamp_ps, predicted_delay_ps, *line, counts)
    # Coarse: the histogram peak, circularly smoothed so a peak split across bins still wins.
    half = _PEAK_SMOOTHING_BINS // 2
    smoothed = sum(np.roll(counts, s) for s in range(-half, half + 1))
    bin_width = period_ps / _PHASE_BINS
    coarse = (int(np.argmax(smoothed)) + 0.5) * bin_width - period_ps / 2
    half_width = period_ps * _REFINE_HALF_WIDTH_FRACTION
    n_near, n_far = _peak_candidates_kernel(
        timestamp_ps, predicted_delay_ps, *line, coarse, 2 * half_width, scratch
    )
    shift = _refine_peak_kernel(scratch[:n_near], n_far, period_ps, half_width)
    centre = coarse + shift
    return float(centre - period_ps * math.floor(centre / period_ps + 0.5))


def estimate_clock_offset_ps(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    pulse_period_ps: float,
) -> float:
    """Estimate the tagger clock offset in [-period/2, period/2) from the tags' timing phase.

    The phase of (t - delay - start) modulo the period is histogrammed; the peak (signal
    tags pile up there, dark tags are uniform) is refined by a local circular mean with the
    uniform background subtracted, so dark counts do not bias it.
    """
    timestamp_ps, predicted_delay_ps = _validate_tags(timestamp_ps, predicted_delay_ps)
    qkd_start_ps, period_ps = _validate_timing(qkd_start_ps, pulse_period_ps)
    if timestamp_ps.size == 0:
        raise InputError("timestamp_ps: need at least one tag to estimate the clock offset")
    scratch = np.empty(timestamp_ps.size, dtype=np.float64)
    return _timing_peak_ps(
        timestamp_ps, predicted_delay_ps, qkd_start_ps, period_ps, 0.0, 0.0, qkd_start_ps, scratch
    )


# ---- assignment and line fit -------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _assign_kernel(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: np.int64,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: np.int64,
    half_window_ps: float,
    pulse_index: np.ndarray,
    residual_ps: np.ndarray,
    in_window: np.ndarray,
    squares: np.ndarray,
) -> int:
    """Per tag: nearest pulse index, residual to its predicted arrival, and window flag; the
    squared residuals of the in-window tags go to squares, in order. Return their number."""
    n_in = 0
    n = timestamp_ps.size
    for first in range(0, n, _CHUNK):
        t = timestamp_ps[first : first + _CHUNK]
        delay = predicted_delay_ps[first : first + _CHUNK]
        index = pulse_index[first : first + _CHUNK]
        residual = residual_ps[first : first + _CHUNK]
        inside = in_window[first : first + _CHUNK]
        for c in range(t.size):
            relative = np.float64(t[c] - qkd_start_ps) - delay[c]
            offset = offset_ps + drift_per_ps * np.float64(t[c] - reference_ps)
            x = relative - offset
            j = np.int64(np.floor(x / period_ps + 0.5))
            r = x - np.float64(j) * period_ps
            index[c] = j
            residual[c] = r
            inside[c] = abs(r) <= half_window_ps and j >= 0
        for c in range(t.size):
            r = residual[c]
            squares[n_in] = r * r
            n_in += inside[c]
    return n_in


def _assign_kernel_reference(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: int,
    half_window_ps: float,
    pulse_index: np.ndarray,
    residual_ps: np.ndarray,
    in_window: np.ndarray,
    squares: np.ndarray,
) -> int:
    """Plain-Python reference for _assign_kernel."""
    n_in = 0
    for i in range(len(timestamp_ps)):
        relative = float(int(timestamp_ps[i]) - qkd_start_ps) - float(predicted_delay_ps[i])
        offset = offset_ps + drift_per_ps * float(int(timestamp_ps[i]) - reference_ps)
        x = relative - offset
        j = int(np.floor(x / period_ps + 0.5))
        r = x - float(j) * period_ps
        pulse_index[i] = j
        residual_ps[i] = r
        in_window[i] = abs(r) <= half_window_ps and j >= 0
        if in_window[i]:
            squares[n_in] = r * r
            n_in += 1
    return n_in


@numba.njit(cache=True, nogil=True)
def _pairwise_sum_kernel(values: np.ndarray) -> float:
    """Sum by numpy's pairwise algorithm (blocks of 128 in 8 lanes, halves above), so the RMS
    is bit-identical to np.mean of the squared residuals."""
    n = values.size
    if n < 8:
        total = 0.0
        for i in range(n):
            total += values[i]
        return total
    if n <= 128:
        lanes = values[:8].copy()
        i = 8
        while i < n - n % 8:
            for lane in range(8):
                lanes[lane] += values[i + lane]
            i += 8
        total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + (
            (lanes[4] + lanes[5]) + (lanes[6] + lanes[7])
        )
        while i < n:
            total += values[i]
            i += 1
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum_kernel(values[:half]) + _pairwise_sum_kernel(values[half:])


def _pairwise_sum_kernel_reference(values: np.ndarray) -> float:
    """Plain-Python reference for _pairwise_sum_kernel."""
    items = [float(v) for v in values]
    if len(items) < 8:
        total = 0.0
        for v in items:
            total += v
        return total
    if len(items) <= 128:
        stop = len(items) - len(items) % 8
        lanes = items[:8]
        for start in range(8, stop, 8):
            lanes = [lanes[k] + items[start + k] for k in range(8)]
        total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + (
            (lanes[4] + lanes[5]) + (lanes[6] + lanes[7])
        )
        for v in items[stop:]:
            total += v
        return total
    half = len(items) // 2
    half -= half % 8
    return _pairwise_sum_kernel_reference(values[:half]) + _pairwise_sum_kernel_reference(
        values[half:]
    )


def _line_result(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    half_window_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: int,
    scratch: np.ndarray | None = None,
) -> SyncResult:
    """Assign every tag from the offset line offset + drift (t - reference)."""
    n = timestamp_ps.size
    pulse_index = np.empty(n, dtype=np.int64)
    residual = np.empty(n, dtype=np.float64)
    in_window = np.empty(n, dtype=np.bool_)
    squares = np.empty(n, dtype=np.float64) if scratch is None else scratch
    n_in = _assign_kernel(
        timestamp_ps, predicted_delay_ps, np.int64(qkd_start_ps), period_ps,
        float(offset_ps), float(drift_per_ps), np.int64(reference_ps), half_window_ps,
        pulse_index, residual, in_window, squares,
    )  # fmt: skip
    # 0.0 + sum, then / n: exactly np.mean (numpy adds its pairwise sum to a zero identity).
    mean_square = (0.0 + _pairwise_sum_kernel(squares[:n_in])) / n_in if n_in else 0.0
    return SyncResult(
        pulse_index=pulse_index,
        in_window=in_window,
        residual_ps=residual,
        clock_offset_ps=float(offset_ps),
        assigned_fraction=n_in / n if n else 0.0,
        residual_rms_ps=float(np.sqrt(mean_square)) if n_in else 0.0,
        clock_drift_ps_per_s=drift_per_ps * _PS_PER_S,
    )


@numba.njit(cache=True, nogil=True)
def _gated_line_fit_kernel(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: np.int64,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: np.int64,
    gate_ps: float,
    time_buffer: np.ndarray,
    residual_buffer: np.ndarray,
) -> tuple[int, float, float, float, float]:
    """Least-squares line residual = r_mean + b (t - reference - t_mean) over the tags whose
    residual (as _assign_kernel computes it from the line offset + drift (t - reference)) is
    within the gate: return (n, t_mean, r_mean, b, standard error of b). The gated tags'
    times and residuals are compacted into the buffers, in tag order, for the later sums.

    b = 0 with an infinite error when n < 3 or all the selected tags share one time.
    """
    times = np.empty(_CHUNK, dtype=np.float64)
    residuals = np.empty(_CHUNK, dtype=np.float64)
    n = 0
    t_sum = 0.0
    r_sum = 0.0
    for first in range(0, timestamp_ps.size, _CHUNK):
        t = timestamp_ps[first : first + _CHUNK]
        delay = predicted_delay_ps[first : first + _CHUNK]
        size = t.size
        for c in range(size):
            dt = np.float64(t[c] - reference_ps)
            relative = np.float64(t[c] - qkd_start_ps) - delay[c]
            x = relative - (offset_ps + drift_per_ps * dt)
            times[c] = dt
            residuals[c] = x - np.float64(np.int64(np.floor(x / period_ps + 0.5))) * period_ps
        for c in range(size):
            dt = times[c]
            r = residuals[c]
            gated = abs(r) <= gate_ps
            time_buffer[n] = dt
            residual_buffer[n] = r
            # Adding +0.0 leaves the (never -0.0) sums unchanged: same sums, no branch.
            t_sum += dt if gated else 0.0
            r_sum += r if gated else 0.0
            n += gated
    if n == 0:
        return 0, 0.0, 0.0, 0.0, np.inf
    t_mean = t_sum / n
    r_mean = r_sum / n
    sxx = 0.0
    sxr = 0.0
    for i in range(n):
        dt = time_buffer[i] - t_mean
        sxx += dt * dt
        sxr += dt * (residual_buffer[i] - r_mean)
    if n < 3 or sxx == 0.0:
        return n, t_mean, r_mean, 0.0, np.inf
    slope = sxr / sxx
    ss = 0.0
    for i in range(n):
        e = residual_buffer[i] - r_mean - slope * (time_buffer[i] - t_mean)
        ss += e * e
    return n, t_mean, r_mean, slope, np.sqrt(ss / (n - 2) / sxx)


def _gated_line_fit_kernel_reference(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: int,
    gate_ps: float,
    time_buffer: np.ndarray,
    residual_buffer: np.ndarray,
) -> tuple[int, float, float, float, float]:
    """Plain-Python reference for _gated_line_fit_kernel (the buffers are not used)."""
    del time_buffer, residual_buffer
    points = []
    for t, d in zip(timestamp_ps, predicted_delay_ps, strict=True):
        dt = float(int(t) - reference_ps)
        x = float(int(t) - qkd_start_ps) - float(d) - (offset_ps + drift_per_ps * dt)
        r = x - float(math.floor(x / period_ps + 0.5)) * period_ps
        if abs(r) <= gate_ps:
            points.append((dt, r))
    n = len(points)
    if n == 0:
        return 0, 0.0, 0.0, 0.0, math.inf
    t_sum = r_sum = 0.0
    for t, r in points:
        t_sum += t
        r_sum += r
    t_mean, r_mean = t_sum / n, r_sum / n
    sxx = sxr = 0.0
    for t, r in points:
        sxx += (t - t_mean) * (t - t_mean)
        sxr += (t - t_mean) * (r - r_mean)
    if n < 3 or sxx == 0.0:
        return n, t_mean, r_mean, 0.0, math.inf
    slope = sxr / sxx
    ss = 0.0
    for t, r in points:
        e = r - r_mean - slope * (t - t_mean)
        ss += e * e
    return n, t_mean, r_mean, slope, math.sqrt(ss / (n - 2) / sxx)


@dataclass(frozen=True)
class _LineEstimate:
    """Offset line of one frame: the gated line that assign_pulse_indices applies, plus the
    last fit's anchor point and raw slope with its standard error (for the tracker)."""

    offset_ps: float  # at the frame reference time
    drift_per_ps: float  # gated: zero unless the data resolve a slope
    anchor_ps: float  # mean time of the last fit's tags, relative to the reference
    raw_drift_per_ps: float  # ungated slope of the last fit (total, prior included)
    raw_drift_error: float  # its standard error (inf when not fitted)


def _estimate_line(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    half_window_ps: float,
    prior_offset_ps: float,
    prior_drift_per_ps: float,
    reference_ps: int,
    scratch: np.ndarray,
) -> _LineEstimate:
    """Fit the offset line of one frame of tags, starting from a prior line (scratch: float64,
    at least twice as long as the tags).

    The timing peak relative to the prior fixes the offset within +-period/2 of it; refinement
    passes with narrowing gates then fit offset and drift. The first, wide gate catches a drift
    of up to +-period/4 over the frame (dark tags in it are uniform, so they add noise but no
    bias to the line fit); narrower gates then shed most dark tags before the last fit.
    """
    n = timestamp_ps.size
    offset = prior_offset_ps + _timing_peak_ps(
        timestamp_ps, predicted_delay_ps, qkd_start_ps, period_ps,
        prior_offset_ps, prior_drift_per_ps, reference_ps, scratch,
    )  # fmt: skip
    drift = prior_drift_per_ps
    gates = [g for g in (period_ps / 4, period_ps / 16) if g > half_window_ps] + [half_window_ps]
    anchor, raw_drift, raw_error = 0.0, drift, math.inf
    for gate in gates:
        n_fit, t_mean, r_mean, slope, slope_error = _gated_line_fit_kernel(
            timestamp_ps, predicted_delay_ps, np.int64(qkd_start_ps), period_ps,
            float(offset), float(drift), np.int64(reference_ps), gate, scratch[:n], scratch[n:],
        )  # fmt: skip
        anchor, raw_drift, raw_error = float(t_mean), drift + float(slope), float(slope_error)
        # Keep the slope only when the data resolve it (|slope| > 3 standard errors) from
        # enough tags; otherwise a few tags, or dark tags in a wide gate, would tilt the offset.
        if n_fit >= _MIN_TAGS_FOR_DRIFT and abs(slope) > _DRIFT_SIGNIFICANCE * slope_error:
            offset += float(r_mean - slope * t_mean)
            drift += float(slope)
        else:
            offset += float(r_mean)
    return _LineEstimate(offset, drift, anchor, raw_drift, raw_error)


def assign_pulse_indices(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    pulse_period_ps: float,
    window_ps: float,
    clock_offset_ps: float | None = None,
) -> SyncResult:
    """Assign each tag the pulse index whose predicted arrival is nearest, within a window.

    With clock_offset_ps None the offset is estimated from the data (assumes
    |offset| < period / 2) and a linear drift across the frame is fitted and applied; with a
    given offset it is applied as is, without drift.
    """
    timestamp_ps, predicted_delay_ps = _validate_tags(timestamp_ps, predicted_delay_ps)
    qkd_start_ps, period_ps = _validate_timing(qkd_start_ps, pulse_period_ps)
    half_window = _validate_window(window_ps, period_ps)
    if clock_offset_ps is not None and not (
        isinstance(clock_offset_ps, (int, float, np.integer, np.floating))
        and abs(clock_offset_ps) < period_ps / 2
    ):
        raise InputError(
            f"clock_offset_ps: must be a number with |offset| < pulse_period_ps / 2, "
            f"got {clock_offset_ps!r}"
        )
    n = timestamp_ps.size
    if n == 0:
        return SyncResult(
            pulse_index=np.empty(0, dtype=np.int64),
            in_window=np.empty(0, dtype=np.bool_),
            residual_ps=np.empty(0, dtype=np.float64),
            clock_offset_ps=0.0 if clock_offset_ps is None else float(clock_offset_ps),
            assigned_fraction=0.0,
            residual_rms_ps=0.0,
        )

    # Offsets are referred to the frame centre so the fitted offset is the frame average.
    reference_ps = _frame_reference_ps(timestamp_ps)
    tags = (timestamp_ps, predicted_delay_ps, qkd_start_ps, period_ps)
    if clock_offset_ps is None:
        scratch = np.empty(2 * n, dtype=np.float64)
        line = _estimate_line(*tags, half_window, 0.0, 0.0, reference_ps, scratch)
        return _line_result(
            *tags, half_window, line.offset_ps, line.drift_per_ps, reference_ps, scratch
        )
    return _line_result(*tags, half_window, float(clock_offset_ps), 0.0, reference_ps)
