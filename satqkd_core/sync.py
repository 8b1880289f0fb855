"""Synchronisation: ground time tags -> satellite pulse indices.

Pulse j leaves the satellite at qkd_start_ps + j * pulse_period_ps (on the ground tagger's
clock, as agreed in the pass plan) and arrives after the one-way delay predicted from the
ephemeris for that tag, plus an unknown clock offset that may drift slowly across a frame:

    arrival_ps(j) = qkd_start_ps + j * pulse_period_ps + predicted_delay_ps + offset_ps(t)

The offset is found from the phase of (t - delay - start) modulo the period; it is only
defined modulo one period, so |offset| < period / 2 is assumed (a larger offset would shift
every pulse index by a whole number of periods, which timing alone cannot see).
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
    if predicted_delay_ps.size and not np.all(np.isfinite(predicted_delay_ps)):
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


@numba.njit(cache=True)
def _phase_histogram_kernel(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: np.int64,
    period_ps: float,
    phase_ps: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Fill phase_ps with (t - start - delay) wrapped into [-period/2, period/2), and counts
    (zeroed, one entry per bin) with their histogram."""
    n_bins = counts.size
    bin_width = period_ps / n_bins
    for i in range(timestamp_ps.size):
        # Integer subtraction first keeps full precision for absolute tagger times ~1e15 ps.
        x = np.float64(timestamp_ps[i] - qkd_start_ps) - predicted_delay_ps[i]
        p = x - period_ps * np.floor(x / period_ps + 0.5)
        phase_ps[i] = p
        b = np.int64(np.floor((p + period_ps / 2) / bin_width))
        counts[min(max(b, 0), n_bins - 1)] += 1


def _phase_histogram_kernel_reference(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    phase_ps: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Plain-Python reference for _phase_histogram_kernel."""
    n_bins = len(counts)
    bin_width = period_ps / n_bins
    for i in range(len(timestamp_ps)):
        x = float(int(timestamp_ps[i]) - qkd_start_ps) - float(predicted_delay_ps[i])
        p = x - period_ps * math.floor(x / period_ps + 0.5)
        phase_ps[i] = p
        b = math.floor((p + period_ps / 2) / bin_width)
        counts[min(max(b, 0), n_bins - 1)] += 1


@numba.njit(cache=True)
def _refine_peak_kernel(
    phase_ps: np.ndarray, coarse_ps: float, period_ps: float, half_width_ps: float
) -> float:
    """Return the shift from coarse_ps to the background-corrected mean of the timing peak."""
    candidates = np.empty(phase_ps.size, dtype=np.float64)
    n_candidates = 0
    n_far = 0
    for i in range(phase_ps.size):
        d = phase_ps[i] - coarse_ps
        d -= period_ps * np.floor(d / period_ps + 0.5)
        if abs(d) <= 2 * half_width_ps:
            candidates[n_candidates] = d
            n_candidates += 1
        else:
            n_far += 1
    # Tags further than twice the half-width from the peak are pure dark counts: their density
    # gives the expected number of background tags inside the window.
    n_background = n_far / (period_ps - 4 * half_width_ps) * (2 * half_width_ps)
    shift = 0.0
    for _ in range(_REFINE_ITERATIONS):
        n_near = 0
        total = 0.0
        for j in range(n_candidates):
            e = candidates[j] - shift
            if abs(e) <= half_width_ps:
                n_near += 1
                total += e
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
    phase_ps: np.ndarray, coarse_ps: float, period_ps: float, half_width_ps: float
) -> float:
    """Plain-Python reference for _refine_peak_kernel."""
    wrapped = [
        (float(p) - coarse_ps) - period_ps * math.floor((float(p) - coarse_ps) / period_ps + 0.5)
        for p in phase_ps
    ]
    candidates = [d for d in wrapped if abs(d) <= 2 * half_width_ps]
    n_far = len(wrapped) - len(candidates)
    n_background = n_far / (period_ps - 4 * half_width_ps) * (2 * half_width_ps)
    shift = 0.0
    for _ in range(_REFINE_ITERATIONS):
        near = [d - shift for d in candidates if abs(d - shift) <= half_width_ps]
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
    phase = np.empty(timestamp_ps.size, dtype=np.float64)
    counts = np.zeros(_PHASE_BINS, dtype=np.int64)
    _phase_histogram_kernel(
        timestamp_ps, predicted_delay_ps, np.int64(qkd_start_ps), period_ps, phase, counts
    )
    # Coarse: the histogram peak, circularly smoothed so a peak split across bins still wins.
    half = _PEAK_SMOOTHING_BINS // 2
    smoothed = sum(np.roll(counts, s) for s in range(-half, half + 1))
    bin_width = period_ps / _PHASE_BINS
    coarse = (int(np.argmax(smoothed)) + 0.5) * bin_width - period_ps / 2
    shift = _refine_peak_kernel(phase, coarse, period_ps, period_ps * _REFINE_HALF_WIDTH_FRACTION)
    centre = coarse + shift
    return float(centre - period_ps * math.floor(centre / period_ps + 0.5))


@numba.njit(cache=True)
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
) -> None:
    """Per tag: nearest pulse index, residual to its predicted arrival, and window flag."""
    for i in range(timestamp_ps.size):
        relative = np.float64(timestamp_ps[i] - qkd_start_ps) - predicted_delay_ps[i]
        offset = offset_ps + drift_per_ps * np.float64(timestamp_ps[i] - reference_ps)
        x = relative - offset
        j = np.int64(np.floor(x / period_ps + 0.5))
        r = x - np.float64(j) * period_ps
        pulse_index[i] = j
        residual_ps[i] = r
        in_window[i] = abs(r) <= half_window_ps and j >= 0


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
) -> None:
    """Plain-Python reference for _assign_kernel."""
    for i in range(len(timestamp_ps)):
        relative = float(int(timestamp_ps[i]) - qkd_start_ps) - float(predicted_delay_ps[i])
        offset = offset_ps + drift_per_ps * float(int(timestamp_ps[i]) - reference_ps)
        x = relative - offset
        j = int(np.floor(x / period_ps + 0.5))
        r = x - float(j) * period_ps
        pulse_index[i] = j
        residual_ps[i] = r
        in_window[i] = abs(r) <= half_window_ps and j >= 0


def _run_assignment(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    offset_ps: float,
    drift_per_ps: float,
    reference_ps: int,
    half_window_ps: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = timestamp_ps.size
    pulse_index = np.empty(n, dtype=np.int64)
    residual_ps = np.empty(n, dtype=np.float64)
    in_window = np.empty(n, dtype=np.bool_)
    _assign_kernel(
        timestamp_ps,
        predicted_delay_ps,
        np.int64(qkd_start_ps),
        period_ps,
        offset_ps,
        drift_per_ps,
        np.int64(reference_ps),
        half_window_ps,
        pulse_index,
        residual_ps,
        in_window,
    )
    return pulse_index, residual_ps, in_window


@numba.njit(cache=True)
def _gated_line_fit_kernel(
    timestamp_ps: np.ndarray, residual_ps: np.ndarray, gate_ps: float, reference_ps: np.int64
) -> tuple[int, float, float, float, float]:
    """Least-squares line residual = r_mean + b (t - reference - t_mean) over tags with
    |residual| <= gate: return (n, t_mean, r_mean, b, standard error of b).

    b = 0 with an infinite error when n < 3 or all the selected tags share one time.
    """
    n = 0
    t_sum = 0.0
    r_sum = 0.0
    for i in range(timestamp_ps.size):
        if abs(residual_ps[i]) <= gate_ps:
            n += 1
            t_sum += np.float64(timestamp_ps[i] - reference_ps)
            r_sum += residual_ps[i]
    if n == 0:
        return 0, 0.0, 0.0, 0.0, np.inf
    t_mean = t_sum / n
    r_mean = r_sum / n
    sxx = 0.0
    sxr = 0.0
    for i in range(timestamp_ps.size):
        if abs(residual_ps[i]) <= gate_ps:
            dt = np.float64(timestamp_ps[i] - reference_ps) - t_mean
            sxx += dt * dt
            sxr += dt * (residual_ps[i] - r_mean)
    if n < 3 or sxx == 0.0:
        return n, t_mean, r_mean, 0.0, np.inf
    slope = sxr / sxx
    ss = 0.0
    for i in range(timestamp_ps.size):
        if abs(residual_ps[i]) <= gate_ps:
            dt = np.float64(timestamp_ps[i] - reference_ps) - t_mean
            e = residual_ps[i] - r_mean - slope * dt
            ss += e * e
    return n, t_mean, r_mean, slope, np.sqrt(ss / (n - 2) / sxx)


def _gated_line_fit_kernel_reference(
    timestamp_ps: np.ndarray, residual_ps: np.ndarray, gate_ps: float, reference_ps: int
) -> tuple[int, float, float, float, float]:
    """Plain-Python reference for _gated_line_fit_kernel."""
    points = [
        (float(int(t) - reference_ps), float(r))
        for t, r in zip(timestamp_ps, residual_ps, strict=True)
        if abs(r) <= gate_ps
    ]
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


def _fit_offset_and_drift(
    timestamp_ps: np.ndarray, residual_ps: np.ndarray, gate_ps: float, reference_ps: int
) -> tuple[float, float]:
    """Return (offset correction at reference_ps, drift correction per ps) from gated tags."""
    n, t_mean, r_mean, slope, slope_error = _gated_line_fit_kernel(
        timestamp_ps, residual_ps, gate_ps, np.int64(reference_ps)
    )
    # Keep the slope only when the data resolve it (|slope| > 3 standard errors) from enough
    # tags; otherwise a few tags, or dark tags in a wide gate, would tilt the offset by chance.
    if n < _MIN_TAGS_FOR_DRIFT or not abs(slope) > _DRIFT_SIGNIFICANCE * slope_error:
        return float(r_mean), 0.0
    return float(r_mean - slope * t_mean), float(slope)


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
    if not isinstance(window_ps, (int, float, np.integer, np.floating)) or not (
        0 < window_ps <= period_ps
    ):
        raise InputError(f"window_ps: must be a number in (0, pulse_period_ps], got {window_ps!r}")
    if clock_offset_ps is not None and not (
        isinstance(clock_offset_ps, (int, float, np.integer, np.floating))
        and abs(clock_offset_ps) < period_ps / 2
    ):
        raise InputError(
            f"clock_offset_ps: must be a number with |offset| < pulse_period_ps / 2, "
            f"got {clock_offset_ps!r}"
        )
    half_window = float(window_ps) / 2
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
    t_min, t_max = int(timestamp_ps.min()), int(timestamp_ps.max())
    reference_ps = t_min + (t_max - t_min) // 2
    drift_per_ps = 0.0
    if clock_offset_ps is None:
        offset = estimate_clock_offset_ps(timestamp_ps, predicted_delay_ps, qkd_start_ps, period_ps)
        # Refinement passes with narrowing gates: the first, wide gate catches a drift of up to
        # +-period/4 (dark tags in it are uniform, so they add noise but no bias to the line
        # fit); narrower gates then shed most dark tags before the fit in the caller's window.
        gates = [g for g in (period_ps / 4, period_ps / 16) if g > half_window] + [half_window]
        for gate in gates:
            _, residual, _ = _run_assignment(
                timestamp_ps, predicted_delay_ps, qkd_start_ps, period_ps,
                offset, drift_per_ps, reference_ps, gate,
            )  # fmt: skip
            d_offset, d_drift = _fit_offset_and_drift(timestamp_ps, residual, gate, reference_ps)
            offset += d_offset
            drift_per_ps += d_drift
    else:
        offset = float(clock_offset_ps)

    pulse_index, residual, in_window = _run_assignment(
        timestamp_ps, predicted_delay_ps, qkd_start_ps, period_ps,
        offset, drift_per_ps, reference_ps, half_window,
    )  # fmt: skip
    n_in = int(in_window.sum())
    rms = float(np.sqrt(np.mean(residual[in_window] ** 2))) if n_in else 0.0
    return SyncResult(
        pulse_index=pulse_index,
        in_window=in_window,
        residual_ps=residual,
        clock_offset_ps=float(offset),
        assigned_fraction=n_in / n,
        residual_rms_ps=rms,
        clock_drift_ps_per_s=drift_per_ps * _PS_PER_S,
    )
