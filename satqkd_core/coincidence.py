"""Coincidence finding between two time-tag streams without a shared pulse clock (BBM92).

Stream a is the high-count side (the payload's own detections, on its clock), stream b the
low-count side (the station's detections with the predicted light time removed, so only the
clock offset, the clock drift and the ephemeris error remain). For the two tags of one pair
b - a = offset_ps + drift * (b - reference_ps) + a slowly varying residual.

1. Coarse (`find_clock_relation`): both streams are binned into a circular buffer of `fft_bins`
   bins whose span exceeds twice the offset uncertainty, over an acquisition time short enough
   that the largest drift smears the peak by at most one bin; the peak of the FFT
   cross-correlation gives the offset. The same at the end of the data gives the drift from the
   change of the offset. On a weak link (no peak of MIN_SIGNIFICANCE) up to MAX_STACKED
   consecutive acquisitions are summed at each end over a grid of drift hypotheses (each
   hypothesis moves acquisition k's correlation by its lag change): the pairs add up in the
   peak, the noise only as the square root. The end's stack is searched only where the start's
   drift puts it, and must confirm there. Then the bin narrows by `REFINE_RATIO` per step: a
   direct histogram of tag differences around the current line, in an early and a late segment,
   re-measures both until the bin is below a nanosecond. Least-squares lines through the pairs
   within 2 ns of a stretch at the start, doubling in length, give the local line where
   tracking starts (the ephemeris error may bend the residual over the window).
2. Fine (`track_coincidences`): walking the low-count stream in time order, each tag is
   paired with the nearest high-count tag within a pull-in window around its prediction; an
   alpha-beta loop follows the offset and its rate from the residuals (the light time changes
   through a pass), and pairs within the coincidence window (1 ns by default) are reported.

The approach is S-Fifteen Instruments' fpfind (github.com/S-Fifteen-Instruments/fpfind: FFT
cross-correlation of binned timestamps over an acquisition interval, a second one a separation
later for the frequency offset, then iterations with a finer time bin; for weak signals it
overlays several cross-correlations, `num_wraps`, and scans a list of frequency
precompensations, `generate_precompensations`; our stack sums separate acquisitions' correlations
over a drift grid instead) and the tracking of their qcrypto `costream`
(github.com/S-Fifteen-Instruments/qcrypto); the code here is our own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.coincidence_kernels import (
    difference_histogram,
    stacked_correlation_peaks,
    track_coincidences_kernel,
    wrapped_histogram,
)
from satqkd_core.errors import InputError

__all__ = [
    "ClockRelation",
    "Coincidences",
    "find_clock_relation",
    "track_coincidences",
]

FFT_BINS = 1 << 20
REFINE_RATIO = 8
# A correlation peak counts as found when it stands this many standard deviations above the
# mean of the correlation (the largest of 2^20 Gaussian values is ~5.3 sigma).
MIN_SIGNIFICANCE = 8.0
# Acquisitions summed (over drift hypotheses) at most at each end when one is not significant
MAX_STACKED = 12
# A stacked peak needs less alone: the stack at the end must confirm it where its drift puts it
# (a search over ~30 lags per drift hypothesis, not all of them)
STACKED_MIN_SIGNIFICANCE = 6.0
LATE_CONFIRM_SIGNIFICANCE = 5.0
_REFINE_HALF_BINS = 64  # difference histograms span +-64 bins of the current step
_FINAL_BIN_PS = 1000.0  # refinement stops once the bin is at most this (then least squares)
_LOCAL_FIT_DIVISIONS = 16


@dataclass(frozen=True)
class ClockRelation:
    """b - a = offset_ps + drift * (b - reference_ps) for the two tags of a pair."""

    offset_ps: float
    drift: float
    reference_ps: int
    significance: float  # coarse correlation peak height above the mean, in standard deviations
    found: bool  # False: no significant peak (no key can come from this window)
    acquisitions_summed: int = 1  # coarse acquisitions stacked at each end (1: a strong link)


@dataclass(frozen=True)
class Coincidences:
    """Pairs found: indices into a and b (both ascending in b), residual a - predicted a."""

    index_a: np.ndarray
    index_b: np.ndarray
    residual_ps: np.ndarray
    final_offset_ps: float
    final_drift: float
    # b's time (ps) where final_offset_ps holds: the tracking loop's last update
    final_reference_ps: int = 0

    def continued(self, relation: ClockRelation) -> ClockRelation:
        """Get: the relation where tracking left off, to track the next block of the same pass
        from (the coarse search is not repeated)."""
        return ClockRelation(
            self.final_offset_ps, self.final_drift, self.final_reference_ps,
            relation.significance, relation.found, relation.acquisitions_summed,
        )  # fmt: skip


def _sorted_tags(values: object, name: str) -> np.ndarray:
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype != np.int64:
        raise InputError(f"{name}: must be a 1-D numpy array of int64 timestamps (ps)")
    if values.size < 2:
        raise InputError(f"{name}: needs at least 2 tags, got {values.size}")
    if np.any(values[1:] < values[:-1]):
        bad = int(np.flatnonzero(values[1:] < values[:-1])[0]) + 1
        raise InputError(
            f"{name}: timestamps must be sorted; tag {bad} is earlier than tag {bad - 1}"
        )
    return np.ascontiguousarray(values)


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name}: must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{name}: must be a positive finite number, got {value!r}")
    return number


def _centred_histogram(
    tags_ps: np.ndarray, start_ps: int, stop_ps: int, bin_ps: int, n_bins: int
) -> np.ndarray:
    """Get the tags in [start, stop) binned into the circle from start, minus their expected
    counts: where the acquisition does not fill the circle the empty bins of both streams would
    otherwise correlate best at lag 0 (a false peak on weak links)."""
    hist = np.zeros(n_bins, dtype=np.float64)
    wrapped_histogram(tags_ps, np.int64(start_ps), np.int64(stop_ps), np.int64(bin_ps), hist)
    full, partial = divmod(stop_ps - start_ps, bin_ps)
    coverage = np.full(n_bins, float(full // n_bins))
    coverage[: full % n_bins] += 1.0
    coverage[full % n_bins] += partial / bin_ps
    hist -= hist.sum() * coverage / coverage.sum()
    return hist


def _correlation(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    start_ps: int,
    stop_ps: int,
    bin_ps: int,
    n_bins: int,
    a_margin_bins: int = 0,
) -> np.ndarray:
    """Get the circular cross-correlation c[k] = sum_i a_i b_(i+k) of b's tags in [start, stop)
    and a's tags in the same interval widened by a_margin_bins on both sides (b's tags sit k
    bins after their partners in a). Without a margin a pair whose partner falls outside is
    lost: at most max_offset / acquisition of them, 38 % for 100 ms against 262 ms."""
    margin = a_margin_bins * bin_ps
    hist_a = _centred_histogram(a_ps, start_ps - margin, stop_ps + margin, bin_ps, n_bins)
    hist_b = _centred_histogram(b_ps, start_ps, stop_ps, bin_ps, n_bins)
    corr: np.ndarray = np.fft.irfft(np.conj(np.fft.rfft(hist_a)) * np.fft.rfft(hist_b), n=n_bins)
    # a's circle starts a_margin_bins earlier: its tags sit that many bins later
    return np.roll(corr, a_margin_bins) if a_margin_bins else corr


def _peak_lag_bins(corr: np.ndarray, peak: int) -> float:
    """Get the lag (bins, in [-n/2, n/2)) of the peak at index `peak`, from the centroid of it and
    its two neighbours (a pair's lag may straddle a bin edge)."""
    n_bins = corr.size
    window = corr[[(peak - 1) % n_bins, peak, (peak + 1) % n_bins]] - float(np.median(corr))
    window = np.clip(window, 0.0, None)
    shift = float(window[2] - window[0]) / float(window.sum()) if window.sum() > 0 else 0.0
    return (peak if peak < n_bins // 2 else peak - n_bins) + shift


def _coarse_lag_ps(
    a_ps: np.ndarray, b_ps: np.ndarray, start_ps: int, stop_ps: int, bin_ps: int, n_bins: int
) -> tuple[float, float]:
    """Get (lag b - a in ps, significance) of the cross-correlation peak of one acquisition."""
    corr = _correlation(a_ps, b_ps, start_ps, stop_ps, bin_ps, n_bins)
    peak = int(np.argmax(corr))
    spread = float(corr.std())
    significance = (float(corr[peak]) - float(corr.mean())) / spread if spread > 0 else 0.0
    return _peak_lag_bins(corr, peak) * bin_ps, significance


def _stacked_lag_ps(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    start_ps: int,
    acquisition_ps: int,
    count: int,
    bin_ps: int,
    n_bins: int,
    drift_bound: float,
    a_margin_bins: int = 0,
    near: tuple[float, int] | None = None,
) -> tuple[float, float, float]:
    """Get (lag b - a in ps at the middle of `count` consecutive acquisitions from start_ps,
    the drift hypothesis, significance) of the peak of their correlations summed over a grid
    of drift hypotheses.

    Under drift d the lag moves by d * acquisition_ps / bin_ps bins per acquisition; the grid
    steps d by one bin over the whole stack, so the summed peak is smeared by at most one bin.
    The pairs add up in the peak (count x), the noise as sqrt(count): weak links stand out.
    near = (lag ps at the middle, reach in bins): look for the peak only that close to it.
    """
    correlations = np.empty((count, n_bins), dtype=np.float32)
    mean, variance = 0.0, 0.0
    for k in range(count):
        first = start_ps + k * acquisition_ps
        corr = _correlation(
            a_ps, b_ps, first, first + acquisition_ps, bin_ps, n_bins, a_margin_bins
        )
        # pairs of bins: up to a full bin of drift within one acquisition splits its pairs over
        # two bins, evenly at worst
        corr += np.roll(corr, -1)
        correlations[k] = corr
        mean += float(corr.mean())
        variance += float(corr.var())
    steps = math.ceil(drift_bound * count * acquisition_ps / bin_ps)
    hypotheses = np.arange(-steps, steps + 1, dtype=np.int64)
    shifts = np.rint(np.outer(hypotheses, np.arange(count)) / count).astype(np.int64)
    values = np.empty(hypotheses.size, dtype=np.float64)
    lags = np.empty(hypotheses.size, dtype=np.int64)
    if near is None:
        stacked_correlation_peaks(correlations, shifts, values, lags)
    else:
        centre = np.rint(near[0] / bin_ps - (count - 1) / 2 * hypotheses / count).astype(np.int64)
        for h in range(hypotheses.size):
            window = np.arange(centre[h] - near[1], centre[h] + near[1] + 1) % n_bins
            sums = np.zeros(window.size, dtype=np.float64)
            for k in range(count):
                sums += correlations[k, (window + shifts[h, k]) % n_bins]
            values[h], lags[h] = float(sums.max()), int(window[int(np.argmax(sums))])
    best = int(np.argmax(values))
    significance = (float(values[best]) - mean) / math.sqrt(variance) if variance > 0 else 0.0
    summed = np.zeros(n_bins, dtype=np.float64)
    for k in range(count):
        summed += np.roll(correlations[k], -int(shifts[best, k]))
    drift_bins = float(hypotheses[best]) / count  # bins per acquisition
    lag_bins = _peak_lag_bins(summed, int(lags[best])) + 0.5 + drift_bins * (count - 1) / 2
    drift = drift_bins * bin_ps / acquisition_ps
    return lag_bins * bin_ps, drift, significance


def _stacked_relation(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    start: int,
    stop: int,
    acquisition: int,
    count: int,
    bin_ps: int,
    stack: tuple[int, float, int],
) -> tuple[float, float, float, bool]:
    """Get (early lag, late lag, significance, found) from stacks of `count` acquisitions at the
    start and at the end (a weak link). The early stack's peak must stand STACKED_MIN_SIGNIFICANCE
    among all lags; the late stack is then searched only where the early one's drift (within
    two hypothesis steps) puts it, ~30 lags per hypothesis instead of 2^20, so a peak of
    LATE_CONFIRM_SIGNIFICANCE there confirms it (noise reaches that with probability ~1e-4).
    The significance returned is the early one's alone when it is below its threshold, else the
    smaller of the two."""
    n_bins, drift_bound, margin = stack
    early, drift_early, significance = _stacked_lag_ps(
        a_ps, b_ps, start, acquisition, count, bin_ps, n_bins, drift_bound, margin
    )
    if significance < STACKED_MIN_SIGNIFICANCE:
        return early, early, significance, False
    separation = float(stop - start - count * acquisition)
    tolerance = 2.0 * bin_ps / (count * acquisition)  # two hypothesis steps
    reach = math.ceil(tolerance * separation / bin_ps) + 2
    late, drift_late, sig_late = _stacked_lag_ps(
        a_ps, b_ps, stop - count * acquisition, acquisition, count, bin_ps, *stack,
        near=(early + drift_early * separation, reach),
    )  # fmt: skip
    drift = (late - early) / separation
    consistent = (
        sig_late >= LATE_CONFIRM_SIGNIFICANCE
        and abs(drift) <= drift_bound + tolerance
        and all(abs(drift - d) <= tolerance for d in (drift_early, drift_late))
    )
    return early, late, min(significance, sig_late), consistent


def _segment_offset_ps(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    offset_ps: float,
    drift: float,
    reference_ps: int,
    bin_ps: float,
) -> float:
    """Get the line's offset at reference_ps shifted so that it passes through the segment's
    difference-histogram peak (the drift term is the caller's)."""
    hist = np.zeros(2 * _REFINE_HALF_BINS, dtype=np.float64)
    difference_histogram(a_ps, b_ps, offset_ps, drift, np.int64(reference_ps), bin_ps, hist)
    peak = int(np.argmax(hist))
    lo, hi = max(peak - 1, 0), min(peak + 2, hist.size)
    weights = np.clip(hist[lo:hi] - float(np.median(hist)), 0.0, None)
    centres = (np.arange(lo, hi) - _REFINE_HALF_BINS + 0.5) * bin_ps
    residual = float(np.dot(weights, centres) / weights.sum()) if weights.sum() > 0 else 0.0
    # residual = a - predicted a = a - b + offset, so the pairs' offset b - a is offset - residual
    return offset_ps - residual


def _segment(tags: np.ndarray, start_ps: int, stop_ps: int) -> np.ndarray:
    lo, hi = np.searchsorted(tags, [start_ps, stop_ps])
    return tags[lo:hi]


def find_clock_relation(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    max_offset_ps: float,
    max_drift: float,
    fft_bins: int = FFT_BINS,
) -> ClockRelation:
    """Find offset and drift between the streams: |offset| <= max_offset_ps, |drift| <= max_drift.

    The relation returned is the line through the pairs of the first eighth of the common span,
    referred to its middle (b's time): where `track_coincidences` starts. `found` is False when
    the coarse correlation peak is not significant (streams without common pairs).
    """
    a_ps = _sorted_tags(a_ps, "a_ps")
    b_ps = _sorted_tags(b_ps, "b_ps")
    max_offset = _positive(max_offset_ps, "max_offset_ps")
    drift_bound = _positive(max_drift, "max_drift")
    if drift_bound >= 1e-3:
        raise InputError(f"max_drift: must be below 1e-3, got {max_drift!r}")
    if isinstance(fft_bins, bool) or not isinstance(fft_bins, int) or fft_bins < 1024:
        raise InputError(f"fft_bins: must be an integer >= 1024, got {fft_bins!r}")
    if fft_bins & (fft_bins - 1):
        raise InputError(f"fft_bins: must be a power of two, got {fft_bins}")

    start = int(max(a_ps[0], b_ps[0]))
    stop = int(min(a_ps[-1], b_ps[-1]))
    if stop - start < 4 * max_offset:
        raise InputError(
            f"the streams overlap for {(stop - start) * 1e-12:g} s, less than 4 x max_offset_ps"
        )
    # circular span > 2.5 x max offset; bins a power of two of ps
    bin_ps = 1 << max(0, math.ceil(math.log2(2.5 * max_offset / fft_bins)))
    acquisition = int(min(bin_ps / drift_bound, (stop - start) / 4))
    count = 1
    # stacked acquisitions take a's tags max_offset either side: no pair lost at the edges
    stack = (fft_bins, drift_bound, math.ceil(max_offset / bin_ps))
    late = 0.0
    early, significance = _coarse_lag_ps(a_ps, b_ps, start, start + acquisition, bin_ps, fft_bins)
    if significance >= MIN_SIGNIFICANCE:
        late, sig_late = _coarse_lag_ps(a_ps, b_ps, stop - acquisition, stop, bin_ps, fft_bins)
        significance = min(significance, sig_late)
    if significance < MIN_SIGNIFICANCE and (stop - start) // (3 * acquisition) > 1:
        count = int(min(MAX_STACKED, (stop - start) // (3 * acquisition)))
        stacked = _stacked_relation(a_ps, b_ps, start, stop, acquisition, count, bin_ps, stack)
        early, late, significance, found = stacked
    else:
        found = significance >= MIN_SIGNIFICANCE
    separation = float(stop - start - count * acquisition)
    reference = start + count * acquisition // 2
    if not found:
        return ClockRelation(early, 0.0, reference, significance, False, count)
    offset, drift = early, (late - early) / separation

    step = float(bin_ps)
    # segments short enough that the drift error left by the previous step (one previous bin
    # over the separation) smears the peak by at most one new bin
    length = int(min((stop - start) / 4, separation / REFINE_RATIO))
    first, last = (start, start + length), (stop - length, stop)
    t_early = 0.5 * (first[0] + first[1]) - reference
    t_late = 0.5 * (last[0] + last[1]) - reference
    while step > _FINAL_BIN_PS:
        step /= REFINE_RATIO
        early_offset = _segment_offset_ps(
            a_ps, _segment(b_ps, *first), offset, drift, reference, step
        )
        late_offset = _segment_offset_ps(
            a_ps, _segment(b_ps, *last), offset, drift, reference, step
        )
        # b - a measured at the two segment centres: the line through them
        early_measured = early_offset + drift * t_early
        late_measured = late_offset + drift * t_late
        slope = (late_measured - early_measured) / (t_late - t_early)
        offset, drift = early_measured - slope * t_early, slope
    # The chord through the two segments is the clock line plus the mean slope of whatever
    # bends (the ephemeris error's curvature): where tracking starts, fit the local line instead,
    # over a stretch growing from 1/16 of the first segment (short enough for the chord to be
    # within the histogram's reach), each fit predicting the next.
    stretch = max(length // _LOCAL_FIT_DIVISIONS, 1)
    local_reference = start + stretch // 2
    chord_offset = offset + drift * (local_reference - reference)
    local_offset = _segment_offset_ps(
        a_ps, _segment(b_ps, start, start + stretch), chord_offset, drift, local_reference,
        _FINAL_BIN_PS,
    )  # fmt: skip
    local_drift = drift
    while True:
        segment_b = _segment(b_ps, start, start + stretch)
        local_offset, local_drift = _least_squares_line(
            a_ps, segment_b, local_offset, local_drift, local_reference, 2.0 * _FINAL_BIN_PS
        )
        if stretch >= length:
            break
        stretch = min(2 * stretch, length)
        next_reference = start + stretch // 2
        local_offset += local_drift * (next_reference - local_reference)
        local_reference = next_reference
    return ClockRelation(local_offset, local_drift, local_reference, significance, True, count)


def _least_squares_line(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    offset_ps: float,
    drift: float,
    reference_ps: int,
    half_width_ps: float,
) -> tuple[float, float]:
    """Fit b - a = offset + drift (b - reference) through the pairs within half_width_ps."""
    pairs = _track(
        a_ps, b_ps, offset_ps, drift, reference_ps, half_width_ps, half_width_ps, 0.0, 0.0
    )
    if pairs.index_b.size < 8:
        return offset_ps, drift
    t = (b_ps[pairs.index_b] - reference_ps).astype(np.float64)
    measured = offset_ps + drift * t - pairs.residual_ps
    slope, intercept = np.polyfit(t, measured, 1)
    return float(intercept), float(slope)


def _track(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    offset_ps: float,
    drift: float,
    reference_ps: int,
    pull_half_ps: float,
    match_half_ps: float,
    gain_offset: float,
    gain_rate: float,
    rate_horizon_ps: float = 1e11,
) -> Coincidences:
    n = b_ps.size
    out_a = np.empty(n, dtype=np.int64)
    out_b = np.empty(n, dtype=np.int64)
    out_residual = np.empty(n, dtype=np.float64)
    state = np.zeros(3, dtype=np.float64)
    found = track_coincidences_kernel(
        a_ps, b_ps, float(offset_ps), float(drift), np.int64(reference_ps),
        float(pull_half_ps), float(match_half_ps), float(gain_offset), float(gain_rate),
        float(rate_horizon_ps), out_a, out_b, out_residual, state,
    )  # fmt: skip
    return Coincidences(
        out_a[:found].copy(), out_b[:found].copy(), out_residual[:found].copy(),
        float(state[0]), float(state[1]), int(reference_ps) + int(state[2]),
    )  # fmt: skip


def track_coincidences(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    relation: ClockRelation,
    window_ps: float = 1000.0,
    pull_in_ps: float = 10000.0,
    gain_offset: float = 1.0 / 16.0,
    gain_rate: float = 1.0 / 256.0,
) -> Coincidences:
    """Pair the streams through the window, following the offset from the relation onwards.

    window_ps is the full coincidence window (pairs within +-window/2 are reported), pull_in_ps
    the full window whose nearest tag steers the tracking loop.
    """
    a_ps = _sorted_tags(a_ps, "a_ps")
    b_ps = _sorted_tags(b_ps, "b_ps")
    if not isinstance(relation, ClockRelation):
        raise InputError(f"relation: must be a ClockRelation, got {type(relation).__name__}")
    if not relation.found:
        raise InputError("relation: no clock relation was found; nothing to track")
    window = _positive(window_ps, "window_ps")
    pull = _positive(pull_in_ps, "pull_in_ps")
    if pull < window:
        raise InputError(f"pull_in_ps ({pull:g}) must be at least window_ps ({window:g})")
    g_offset = _positive(gain_offset, "gain_offset")
    g_rate = _positive(gain_rate, "gain_rate")
    if g_offset >= 1.0 or g_rate >= 1.0:
        raise InputError("gain_offset and gain_rate must be below 1")
    return _track(
        a_ps, b_ps, relation.offset_ps, relation.drift, relation.reference_ps,
        pull / 2.0, window / 2.0, g_offset, g_rate,
    )  # fmt: skip
