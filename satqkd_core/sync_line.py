"""The clock offset line of one frame of tags: its fit and the pulse assignment it gives.

Shared by per-frame synchronisation (`sync.assign_pulse_indices`) and frame-to-frame tracking
(`sync_tracking.track_pulse_indices`). Both import from here; `sync_tracking` never imports
`sync`, which re-exports the tracker.

Cost. A frame costs a phase histogram and one pass collecting the tags near its peak
(`sync_peak`), per line-fit gate one pass that compacts the gated tags for the
(order-preserving, hence serial) least-squares sums, then the assignment itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core.errors import InputError
from satqkd_core.sync_peak import _CHUNK, _timing_peak_ps

# Minimum in-window tags before a clock drift (slope) is fitted; fewer leave it at zero.
_MIN_TAGS_FOR_DRIFT = 16
_DRIFT_SIGNIFICANCE = 3.0
_PS_PER_S = 1e12


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
        return total  # type: ignore[no-any-return]
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
