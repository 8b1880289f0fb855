"""The timing peak of one frame of tags: where, within one pulse period, the tags' phases
relative to a prior offset line pile up (a coarse phase histogram, then a background-corrected
mean around its peak).

Shared by per-frame synchronisation (`sync`) and frame-to-frame tracking (`sync_tracking`)
through `sync_line`. Each pass over the tags recomputes the tag phase from the timestamps and
delays rather than storing it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Phase histogram resolution for the coarse offset search; 256 bins of a 10 ns period are
# 39 ps, comparable to detector jitter, so the signal peak spans a few bins.
_PHASE_BINS = 256
# Bins summed (circularly) when looking for the peak, so a peak split across bins still wins.
_PEAK_SMOOTHING_BINS = 5
# Half-width of the refinement window as a fraction of the period: wide enough to contain the
# whole timing peak for jitter up to ~period/20, narrow enough to keep most dark tags out.
_REFINE_HALF_WIDTH_FRACTION = 1.0 / 8.0
_REFINE_ITERATIONS = 8
# Kernels work through the tags in chunks: a vectorisable loop computes a chunk's phases or
# residuals into small cache-resident buffers, then a plain loop does what must stay in tag
# order (histogram counts, compaction, the serial sums that keep results bit-for-bit fixed).
_CHUNK = 512


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
    return x - period_ps * np.floor(x / period_ps + 0.5)  # type: ignore[no-any-return]


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
            bins[c] = min(max(b, 0), n_bins - 1)  # type: ignore[assignment]
        for c in range(size):
            lanes[c & 7, bins[c]] += 1
    for lane in range(8):
        for k in range(n_bins):
            counts[k] += lanes[lane, k]


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
