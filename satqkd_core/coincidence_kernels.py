"""numba kernels of coincidence finding between two time-tag streams, each beside its
plain-Python reference (`satqkd_core.coincidence` validates inputs and calls them).

Stream a is the high-count side (the payload's own detections, its clock), stream b the
low-count side (the station's detections, predicted light time removed). A relation says
b - a = offset_ps + drift * (b - reference_ps) for the two tags of one pair.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "difference_histogram",
    "difference_histogram_reference",
    "stacked_correlation_peaks",
    "stacked_correlation_peaks_reference",
    "track_coincidences_kernel",
    "track_coincidences_kernel_reference",
    "wrapped_histogram",
    "wrapped_histogram_reference",
]


@numba.njit(cache=True, nogil=True)
def wrapped_histogram(
    timestamp_ps: np.ndarray,
    start_ps: np.int64,
    stop_ps: np.int64,
    bin_ps: np.int64,
    out: np.ndarray,
) -> None:
    """Add 1 to out[((t - start) // bin) mod out.size] for every tag start <= t < stop."""
    n_bins = np.int64(out.shape[0])
    for i in range(timestamp_ps.shape[0]):
        t = timestamp_ps[i]
        if t < start_ps or t >= stop_ps:
            continue
        out[((t - start_ps) // bin_ps) % n_bins] += 1.0


def wrapped_histogram_reference(
    timestamp_ps: np.ndarray, start_ps: int, stop_ps: int, bin_ps: int, out: np.ndarray
) -> None:
    """Plain-Python reference of `wrapped_histogram`."""
    for t in timestamp_ps.tolist():
        if start_ps <= t < stop_ps:
            out[((t - start_ps) // bin_ps) % len(out)] += 1.0


_STACK_BLOCK = 4096  # lags summed at a time (the acquisitions' slices stay in cache)


@numba.njit(cache=True, nogil=True)
def stacked_correlation_peaks(
    correlations: np.ndarray,
    shifts: np.ndarray,
    out_value: np.ndarray,
    out_lag: np.ndarray,
) -> None:
    """For every hypothesis h (a row of shifts, one shift in bins per acquisition), sum the
    acquisitions' circular correlations moved by their shifts,
    S_h[j] = sum_k correlations[k, (j + shifts[h, k]) mod n], and set out_value[h] to the
    largest S_h[j] and out_lag[h] to its first j. Sums run over k in order, in float64."""
    n_acq = correlations.shape[0]
    n = correlations.shape[1]
    n_hyp = shifts.shape[0]
    acc = np.zeros(_STACK_BLOCK, dtype=np.float64)
    for h in range(n_hyp):
        out_value[h] = -np.inf
        out_lag[h] = -1
    for first in range(0, n, _STACK_BLOCK):
        width = min(_STACK_BLOCK, n - first)
        for h in range(n_hyp):
            acc[:width] = 0.0
            for k in range(n_acq):
                s = shifts[h, k] % n
                for j in range(width):
                    index = first + j + s
                    if index >= n:
                        index -= n
                    acc[j] += np.float64(correlations[k, index])
            for j in range(width):
                if acc[j] > out_value[h]:
                    out_value[h] = acc[j]
                    out_lag[h] = first + j


def stacked_correlation_peaks_reference(
    correlations: np.ndarray,
    shifts: np.ndarray,
    out_value: np.ndarray,
    out_lag: np.ndarray,
) -> None:
    """Plain-Python reference of `stacked_correlation_peaks` (each sum over the whole lag axis)."""
    n = correlations.shape[1]
    for h, row in enumerate(shifts.tolist()):
        total = [0.0] * n
        for k, s in enumerate(row):
            values = correlations[k].tolist()
            for j in range(n):
                total[j] += float(values[(j + s) % n])
        best = max(range(n), key=lambda j: (total[j], -j))
        out_value[h] = total[best]
        out_lag[h] = best


@numba.njit(cache=True, nogil=True)
def difference_histogram(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    offset_ps: float,
    drift: float,
    reference_ps: np.int64,
    bin_ps: float,
    out: np.ndarray,
) -> None:
    """Histogram of a - predicted a over all pairs (a, b) within out.size / 2 bins of it.

    predicted a = b - offset - drift (b - reference); bin j covers [(j - size/2) bin, ...).
    Both streams sorted; the predictions rise with b (|drift| << 1), so one pointer walks a.
    """
    half_ps = 0.5 * out.shape[0] * bin_ps
    j = 0
    n_a = a_ps.shape[0]
    for i in range(b_ps.shape[0]):
        shift = offset_ps + drift * np.float64(b_ps[i] - reference_ps)
        while j < n_a and np.float64(a_ps[j] - b_ps[i]) + shift < -half_ps:
            j += 1
        k = j
        while k < n_a:
            residual = np.float64(a_ps[k] - b_ps[i]) + shift
            if residual >= half_ps:
                break
            out[math.floor((residual + half_ps) / bin_ps)] += 1.0
            k += 1


def difference_histogram_reference(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    offset_ps: float,
    drift: float,
    reference_ps: int,
    bin_ps: float,
    out: np.ndarray,
) -> None:
    """Plain-Python reference of `difference_histogram` (every pair, no pointer)."""
    half_ps = 0.5 * len(out) * bin_ps
    a_list = a_ps.tolist()
    for b in b_ps.tolist():
        shift = offset_ps + drift * float(b - reference_ps)
        for a in a_list:
            residual = float(a - b) + shift
            if -half_ps <= residual < half_ps:
                out[math.floor((residual + half_ps) / bin_ps)] += 1.0


@numba.njit(cache=True, nogil=True)
def track_coincidences_kernel(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    offset_ps: float,
    drift: float,
    reference_ps: np.int64,
    pull_half_ps: float,
    match_half_ps: float,
    gain_offset: float,
    gain_rate: float,
    rate_horizon_ps: float,
    out_a: np.ndarray,
    out_b: np.ndarray,
    out_residual_ps: np.ndarray,
    out_state: np.ndarray,
) -> int:
    """Walk b in time order; pair each b tag with the nearest a tag within pull_half_ps of its
    prediction, update the tracked offset and rate from that residual clipped to the match
    window (an alpha-beta loop),
    and record pairs within match_half_ps. Returns the number recorded; out_state gets the
    final (offset_ps, drift, time of the last update in ps relative to reference_ps)."""
    offset = offset_ps
    rate = drift
    last = 0.0  # time of the last update, ps relative to reference_ps
    j = 0
    n_a = a_ps.shape[0]
    found = 0
    for i in range(b_ps.shape[0]):
        t = np.float64(b_ps[i] - reference_ps)
        predicted = offset + rate * (t - last)
        while j < n_a and np.float64(a_ps[j] - b_ps[i]) + predicted < -pull_half_ps:
            j += 1
        best = -1
        best_residual = 0.0
        k = j
        while k < n_a:
            residual = np.float64(a_ps[k] - b_ps[i]) + predicted
            if residual > pull_half_ps:
                break
            if best < 0 or abs(residual) < abs(best_residual):
                best = k
                best_residual = residual
            k += 1
        if best < 0:
            continue
        # measured offset b - a = predicted - residual; clipped to the window so that one
        # accidental far out pulls no harder than a pair at the window's edge
        step = min(max(best_residual, -match_half_ps), match_half_ps)
        offset = predicted - gain_offset * step
        rate -= gain_rate * step / rate_horizon_ps
        last = t
        if abs(best_residual) <= match_half_ps:
            out_a[found] = best
            out_b[found] = i
            out_residual_ps[found] = best_residual
            found += 1
    out_state[0] = offset
    out_state[1] = rate
    out_state[2] = last
    return found


def track_coincidences_kernel_reference(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    offset_ps: float,
    drift: float,
    reference_ps: int,
    pull_half_ps: float,
    match_half_ps: float,
    gain_offset: float,
    gain_rate: float,
    rate_horizon_ps: float,
    out_a: np.ndarray,
    out_b: np.ndarray,
    out_residual_ps: np.ndarray,
    out_state: np.ndarray,
) -> int:
    """Plain-Python reference of `track_coincidences_kernel` (scans every a tag)."""
    offset, rate, last, found = offset_ps, drift, 0.0, 0
    a_list = a_ps.tolist()
    for i, b in enumerate(b_ps.tolist()):
        t = float(b - reference_ps)
        predicted = offset + rate * (t - last)
        candidates = [
            (abs(float(a - b) + predicted), k, float(a - b) + predicted)
            for k, a in enumerate(a_list)
            if abs(float(a - b) + predicted) <= pull_half_ps
        ]
        if not candidates:
            continue
        _, best, residual = min(candidates)
        step = min(max(residual, -match_half_ps), match_half_ps)
        offset = predicted - gain_offset * step
        rate -= gain_rate * step / rate_horizon_ps
        last = t
        if abs(residual) <= match_half_ps:
            out_a[found], out_b[found], out_residual_ps[found] = best, i, residual
            found += 1
    out_state[:] = (offset, rate, last)
    return found
