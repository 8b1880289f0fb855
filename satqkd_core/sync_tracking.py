"""Synchronisation across frames: the clock offset line tracked from frame to frame.

`track_pulse_indices` carries the offset line (whole periods included) and the payload clock
drift from frame to frame in a `TimingState`, so |offset| < period / 2 is needed only at QKD
start: a payload oscillator 100 ppb off the station clock moves the offset by ten periods per
second. Each frame's own line fit and assignment are those of `sync.assign_pulse_indices`
(`sync_line`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numba
import numpy as np

from satqkd_core.errors import InputError
from satqkd_core.sync_line import (
    _PS_PER_S,
    SyncResult,
    _estimate_line,
    _frame_reference_ps,
    _line_result,
    _LineEstimate,
    _validate_tags,
    _validate_timing,
    _validate_window,
)

# Acquisition searches the payload clock drift over +-300 ppb unless told otherwise: a
# free-running crystal oscillator is within ~0.1 ppm of nominal, and an ephemeris range-rate
# error adds 3.3 ppb per m/s.
DEFAULT_MAX_DRIFT_PPB = 300.0
# How fast the drift itself may change, ppb per second, when the offset line is extrapolated
# over frames without a usable timing peak (and back to QKD start at acquisition): the offset
# may then leave the straight line by 0.5 * rate * elapsed^2 (5 ps after 1 s, 4.5 ns after 30 s).
DEFAULT_DRIFT_CHANGE_PPB_PER_S = 0.01
# The payload oscillator's own drift change, ppb/s, that the count back to pulse 0 adds to the
# pass geometry's bound (count_back_drift_change_ppb_per_s): an OCXO holds 1e-9 to 1e-8 over
# its whole -40..+85 C range, ~5e-11 per kelvin (Vig, "Quartz Crystal Resonators and
# Oscillators", U.S. Army tutorial SLCET-TR-88-1, OCXO class), and a payload bay's orbital
# thermal cycle (~10 K per 90 min, assumed) moves it ~0.2 K per 100 s: ~1e-4 ppb/s. The
# simulated oscillator holds its drift constant.
DEFAULT_CLOCK_DRIFT_CHANGE_PPB_PER_S = 1e-4
# A whole-period count is accepted only if the offset's deviation from its prediction plus this
# many standard errors (plus the drift-change bound) stays inside half a period.
_MARGIN_SIGMAS = 5.0
# A frame carries signal when the tags near the timing peak exceed the background expected there
# (from the tags away from it) by this many Poisson standard deviations.
_SIGNAL_SIGNIFICANCE = 5.0
# Drift acquisition by periodogram: time bins short enough that the largest drift turns the pulse
# phase by at most 1/32 cycle within a bin (amplitude loss < 0.2 %), zero-padded 8x so the peak
# is sampled finely (1.25 ppb at 100 MHz and 1 s frames).
_PERIODOGRAM_BIN_CYCLES = 1.0 / 32.0
_PERIODOGRAM_OVERSAMPLING = 8
_PERIODOGRAM_MAX_BINS = 1 << 22
# Dark tags alone give |phasor sum|^2 / n ~ Exp(1) at each frequency; a peak must exceed
# ln(number of independent frequencies) + 20, a false-alarm probability of ~2e-9 per frame.
_PERIODOGRAM_FALSE_ALARM_NATS = 20.0

TRACKING_MODES = ("acquiring", "tracking", "lost")
FRAME_OUTCOMES = ("acquired", "tracked", "coasted", "not assigned")


@dataclass(frozen=True)
class TimingState:
    """Clock offset line carried from frame to frame by track_pulse_indices.

    offset(t) = offset_ps - drift_ppb * 1e-9 * (t - reference_ps), whole pulse periods
    included: drift_ppb > 0 means the payload oscillator runs fast and pulses come ever earlier.
    """

    mode: str = "acquiring"  # one of TRACKING_MODES; "lost": whole periods no longer known
    offset_ps: float = 0.0  # at reference_ps, whole pulse periods included
    drift_ppb: float = 0.0  # payload clock rate relative to the tagger's, parts per billion
    reference_ps: int = 0  # tagger time (frame centre) of the last frame that measured the line
    offset_error_ps: float = math.inf  # standard error of offset_ps
    drift_error_ppb: float = math.inf  # standard error of drift_ppb
    frames_measured: int = 0  # frames whose timing peak updated the line (acquisition included)
    frames_coasted: int = 0  # frames assigned from the extrapolated line alone
    frames_not_assigned: int = 0  # frames given no pulse index at all
    # While acquiring: frames whose timing peak built a provisional line (whole periods counted
    # from its first frame, not yet from QKD start; 0: none), and frames tried before lock.
    provisional_frames: int = 0
    acquisition_attempts: int = 0
    last_frame: str = ""  # outcome of the last frame, one of FRAME_OUTCOMES
    message: str = ""  # why the last frame was coasted or not assigned ("" otherwise)

    @property
    def locked(self) -> bool:
        """Whether frames are assigned pulse indices from the tracked line."""
        return self.mode == "tracking"

    def offset_at_ps(self, timestamp_ps: int) -> float:
        """The tracked offset at a tagger time, whole periods included."""
        return self.offset_ps - self.drift_ppb * 1e-9 * float(timestamp_ps - self.reference_ps)


@numba.njit(cache=True, nogil=True)
def _phasor_bins_kernel(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: np.int64,
    period_ps: float,
    first_ps: np.int64,
    bin_width_ps: float,
    phasor_re: np.ndarray,
    phasor_im: np.ndarray,
) -> None:
    """Add each tag's pulse-phase phasor exp(2 pi i (t - start - delay) / period) to its time
    bin ((t - first) / bin_width, clamped to the arrays)."""
    n_bins = phasor_re.size
    for i in range(timestamp_ps.size):
        x = np.float64(timestamp_ps[i] - qkd_start_ps) - predicted_delay_ps[i]
        angle = 2.0 * np.pi * ((x - period_ps * np.floor(x / period_ps)) / period_ps)
        b = int(np.floor(np.float64(timestamp_ps[i] - first_ps) / bin_width_ps))
        b = min(max(b, 0), n_bins - 1)
        phasor_re[b] += np.cos(angle)
        phasor_im[b] += np.sin(angle)


def _phasor_bins_kernel_reference(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    first_ps: int,
    bin_width_ps: float,
    phasor_re: np.ndarray,
    phasor_im: np.ndarray,
) -> None:
    """Plain-Python reference for _phasor_bins_kernel."""
    n_bins = len(phasor_re)
    for i in range(len(timestamp_ps)):
        x = float(int(timestamp_ps[i]) - qkd_start_ps) - float(predicted_delay_ps[i])
        angle = 2.0 * math.pi * ((x - period_ps * math.floor(x / period_ps)) / period_ps)
        b = math.floor(float(int(timestamp_ps[i]) - first_ps) / bin_width_ps)
        b = min(max(b, 0), n_bins - 1)
        phasor_re[b] += math.cos(angle)
        phasor_im[b] += math.sin(angle)


def _periodogram_drift(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    max_drift_per_ps: float,
) -> tuple[float, float, float, float]:
    """Return (offset drift per ps at the periodogram peak, the periodogram's drift step,
    peak power per tag, detection threshold for it).

    Signal tags satisfy t - start - delay = offset0 + drift (t - start) modulo the period, so
    their phasors add coherently in sum_i exp(2 pi i (t_i - start - delay_i - drift t_i) / P)
    at the true drift; the peak of this periodogram over the drift is the maximum-likelihood
    frequency estimate of a tone in noise (Rife and Boorstyn, IEEE Trans. Inf. Theory 20, 591
    (1974)). Binning the phasors in time makes it one FFT instead of a search over candidates.
    """
    t_min, t_max = int(timestamp_ps.min()), int(timestamp_ps.max())
    bin_width = _PERIODOGRAM_BIN_CYCLES * period_ps / max_drift_per_ps
    n_bins = int((t_max - t_min) / bin_width) + 1
    if n_bins > _PERIODOGRAM_MAX_BINS:
        raise InputError(
            f"timestamp_ps: frame spans {(t_max - t_min) / _PS_PER_S:g} s, too long for a drift "
            f"search over +-{max_drift_per_ps * 1e9:g} ppb"
        )
    phasor_re = np.zeros(n_bins, dtype=np.float64)
    phasor_im = np.zeros(n_bins, dtype=np.float64)
    _phasor_bins_kernel(
        timestamp_ps, predicted_delay_ps, np.int64(qkd_start_ps), period_ps,
        np.int64(t_min), bin_width, phasor_re, phasor_im,
    )  # fmt: skip
    size = 1 << math.ceil(math.log2(n_bins * _PERIODOGRAM_OVERSAMPLING))
    magnitude = np.abs(np.fft.fft(phasor_re + 1j * phasor_im, size))
    # Frequency bin k is a drift of k * step; only |drift| <= max_drift is searched.
    step = period_ps / (size * bin_width)
    k_max = int(size * _PERIODOGRAM_BIN_CYCLES)
    candidates = np.concatenate([np.arange(0, k_max + 1), np.arange(size - k_max, size)])
    k = int(candidates[np.argmax(magnitude[candidates])])
    # Parabolic interpolation between the neighbouring bins of the peak.
    below, peak, above = magnitude[(k - 1) % size], magnitude[k], magnitude[(k + 1) % size]
    curvature = below - 2.0 * peak + above
    fraction = 0.5 * (below - above) / curvature if curvature < 0 else 0.0
    k_signed = k - size if k > size // 2 else k
    drift = (k_signed + min(max(fraction, -0.5), 0.5)) * step
    n_independent = max(1.0, 2.0 * max_drift_per_ps * (t_max - t_min) / period_ps)
    threshold = math.log(n_independent) + _PERIODOGRAM_FALSE_ALARM_NATS
    return float(drift), float(step), float(peak**2 / timestamp_ps.size), threshold


@numba.njit(cache=True, nogil=True)
def _count_within_kernel(values: np.ndarray, half_width: float) -> int:
    """Number of values with |value| <= half_width."""
    count = 0
    for i in range(values.size):
        count += abs(values[i]) <= half_width
    return count


def _count_within_kernel_reference(values: np.ndarray, half_width: float) -> int:
    """Plain-Python reference for _count_within_kernel."""
    return sum(1 for v in values if abs(float(v)) <= half_width)


def _signal_significance(residual_ps: np.ndarray, period_ps: float, half_window_ps: float) -> float:
    """Return how many Poisson standard deviations the tags near the line exceed background."""
    half = min(half_window_ps, period_ps / 4)
    n_near = int(_count_within_kernel(residual_ps, half))
    expected = (residual_ps.size - n_near) * (2 * half) / (period_ps - 2 * half)
    return (n_near - expected) / math.sqrt(max(expected, 1.0))


def _combine_drift(
    prior_per_ps: float, prior_var: float, line: _LineEstimate
) -> tuple[float, float]:
    """Inverse-variance mean of a prior drift and the frame's fitted drift, and its variance."""
    measured_var = line.raw_drift_error**2
    if not math.isfinite(measured_var):
        return prior_per_ps, prior_var
    if not math.isfinite(prior_var):
        return line.raw_drift_per_ps, measured_var
    total = prior_var + measured_var
    if total == 0.0:
        return line.raw_drift_per_ps, 0.0
    weight = prior_var / total
    return (
        prior_per_ps + weight * (line.raw_drift_per_ps - prior_per_ps),
        prior_var * measured_var / total,
    )


def _unassigned_result(n: int) -> SyncResult:
    return SyncResult(
        pulse_index=np.full(n, -1, dtype=np.int64),
        in_window=np.zeros(n, dtype=np.bool_),
        residual_ps=np.full(n, np.nan, dtype=np.float64),
        clock_offset_ps=math.nan,
        assigned_fraction=0.0,
        residual_rms_ps=0.0,
    )


def _validate_tracking(
    state: object, max_drift_ppb: object, drift_change_ppb_per_s: object
) -> tuple[float, float]:
    """Return (max drift, drift change per ps) as fractions after checking the arguments."""
    if not isinstance(state, TimingState):
        raise InputError(f"state: must be a TimingState, got {type(state).__name__}")
    if state.mode not in TRACKING_MODES:
        raise InputError(f"state: mode must be one of {TRACKING_MODES}, got {state.mode!r}")
    if not isinstance(max_drift_ppb, (int, float, np.integer, np.floating)) or not (
        0 < max_drift_ppb <= 100_000
    ):
        raise InputError(f"max_drift_ppb: must be a number in (0, 100000], got {max_drift_ppb!r}")
    if not isinstance(drift_change_ppb_per_s, (int, float, np.integer, np.floating)) or not (
        0 <= drift_change_ppb_per_s < math.inf
    ):
        raise InputError(
            f"drift_change_ppb_per_s: must be a finite number >= 0, got {drift_change_ppb_per_s!r}"
        )
    return float(max_drift_ppb) * 1e-9, float(drift_change_ppb_per_s) * 1e-9 / _PS_PER_S


@dataclass(frozen=True)
class _Prior:
    """What is known of a frame's offset line before its own tags are fitted."""

    offset_ps: float  # at the frame reference
    drift_per_ps: float
    drift_var: float  # variance of drift_per_ps
    elapsed_ps: float  # from the instant whole periods are counted from, to the frame reference
    margin_ps: float  # bound on |offset error| at the reference (nan: found after the fit)


def _acquisition_prior(
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    period_ps: float,
    reference_ps: int,
    max_drift: float,
) -> _Prior | str:
    """The drift from the periodogram, and the line through offset 0 at pulse 0's arrival
    (about one frame delay after QKD start), from which whole periods are counted."""
    drift, step, power, threshold = _periodogram_drift(
        timestamp_ps, predicted_delay_ps, qkd_start_ps, period_ps, max_drift
    )
    if power < threshold:
        return (
            f"acquisition: no timing peak in a drift search over +-{max_drift * 1e9:g} ppb "
            f"(periodogram power {power:.1f} per tag, threshold {threshold:.1f})"
        )
    elapsed = float(reference_ps - qkd_start_ps) - float(np.mean(predicted_delay_ps))
    return _Prior(drift * elapsed, drift, step**2, elapsed, math.nan)


def _tracking_prior(
    state: TimingState, reference_ps: int, period_ps: float, drift_change: float
) -> _Prior | str:
    """The tracked line extrapolated to the frame, with a bound on its offset error."""
    elapsed = float(reference_ps - state.reference_ps)
    drift_error = state.drift_error_ppb * 1e-9
    # Statistical error, and how far a drift changing at the allowed rate leaves the line.
    margin = (
        _MARGIN_SIGMAS * math.hypot(state.offset_error_ps, drift_error * elapsed)
        + 0.5 * drift_change * elapsed**2
    )
    if not margin < period_ps / 2:
        return (
            f"lost: the offset extrapolated {elapsed / _PS_PER_S:.1f} s past the last timing "
            f"peak is uncertain by {margin:.0f} ps, half a period or more"
        )
    return _Prior(
        state.offset_at_ps(reference_ps),
        -state.drift_ppb * 1e-9,
        drift_error**2 + (drift_change * elapsed) ** 2,
        elapsed,
        margin,
    )


def _measured_line(
    tags: tuple[np.ndarray, np.ndarray, int, float],
    half_window_ps: float,
    prior: _Prior,
    reference_ps: int,
    drift_change: float,
    scratch: np.ndarray,
) -> tuple[SyncResult, float, float, float, float]:
    """Fit the frame's line from the prior, count its whole periods from the prior, assign
    (scratch: float64, twice as long as the tags).

    Return (result, drift variance, offset standard error, deviation, margin): deviation is
    the offset at pulse 0's arrival when acquiring, else the offset minus its prediction; the
    whole-period count is right if |deviation| + margin < period / 2.
    """
    period_ps = tags[3]
    line = _estimate_line(
        *tags, half_window_ps, prior.offset_ps, prior.drift_per_ps, reference_ps, scratch
    )
    drift, drift_var = _combine_drift(prior.drift_per_ps, prior.drift_var, line)
    # The fitted line through its anchor (the fitted tags' mean time), at the combined slope.
    offset = line.offset_ps + (line.drift_per_ps - drift) * line.anchor_ps
    acquiring = math.isnan(prior.margin_ps)
    deviation = offset - (drift * prior.elapsed_ps if acquiring else prior.offset_ps)
    whole = round(deviation / period_ps)
    offset -= whole * period_ps
    deviation -= whole * period_ps
    result = _line_result(*tags, half_window_ps, offset, drift, reference_ps, scratch)
    offset_error = result.residual_rms_ps / math.sqrt(max(int(result.in_window.sum()), 1))
    margin = prior.margin_ps
    if acquiring:
        margin = (
            _MARGIN_SIGMAS * math.hypot(offset_error, math.sqrt(drift_var) * prior.elapsed_ps)
            + 0.5 * drift_change * prior.elapsed_ps**2
        )
    return result, drift_var, offset_error, deviation, margin


def count_back_drift_change_ppb_per_s(
    range_jerk_m_s3: np.ndarray,
    range_rate_at_start_m_s: float,
    pulse_period_ps: float,
    clock_drift_change_ppb_per_s: float = DEFAULT_CLOCK_DRIFT_CHANGE_PPB_PER_S,
) -> float:
    """Bound the drift change (ppb/s) that counting whole periods back to pulse 0 must allow,
    from the pass's own geometry over the elapsed time, plus the oscillator's own.

    The count rests on the predicted delay at QKD start being within half a period, i.e. the
    ephemeris' range there within c P / 2: an along-track timing error of at most
    dt = c P / (2 |range rate at start|). The predicted delay then errs in drift change by
    |d3r/dt3| dt / c = |d3r/dt3| P / (2 |range rate|); range_jerk_m_s3 holds d3r/dt3 (m/s^3)
    sampled from QKD start to the frame. With the range rate near zero at QKD start the premise
    does not bound dt: the result is then infinite (the caller keeps its flat prior).
    """
    jerk = np.asarray(range_jerk_m_s3, dtype=np.float64)
    if jerk.ndim != 1 or jerk.size == 0 or not np.all(np.isfinite(jerk)):
        raise InputError("range_jerk_m_s3: must be a non-empty 1-D array of finite values")
    for name, value in (
        ("range_rate_at_start_m_s", range_rate_at_start_m_s),
        ("pulse_period_ps", pulse_period_ps),
        ("clock_drift_change_ppb_per_s", clock_drift_change_ppb_per_s),
    ):
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            raise InputError(f"{name}: must be a finite number, got {value!r}")
    if not pulse_period_ps > 0 or clock_drift_change_ppb_per_s < 0:
        raise InputError("pulse_period_ps must be > 0 and clock_drift_change_ppb_per_s >= 0")
    speed = abs(float(range_rate_at_start_m_s))
    if speed < 1.0:
        return math.inf
    half_period_s = 0.5 * float(pulse_period_ps) / _PS_PER_S
    geometric = float(np.max(np.abs(jerk))) * half_period_s / speed
    return geometric * 1e9 + float(clock_drift_change_ppb_per_s)


def track_pulse_indices(
    state: TimingState,
    timestamp_ps: np.ndarray,
    predicted_delay_ps: np.ndarray,
    qkd_start_ps: int,
    pulse_period_ps: float,
    window_ps: float,
    max_drift_ppb: float = DEFAULT_MAX_DRIFT_PPB,
    drift_change_ppb_per_s: float = DEFAULT_DRIFT_CHANGE_PPB_PER_S,
    count_back_drift_change_ppb_per_s: float | None = None,
) -> tuple[SyncResult, TimingState]:
    """Assign one frame's tags their pulse indices from the offset line tracked across frames;
    return the frame's result and the state to pass with the next frame.

    Acquiring (first frames): the drift comes from a periodogram over +-max_drift_ppb and the
    frame's line fit, the whole-period count from assuming |offset| < period / 2 for pulse 0
    (emitted at QKD start). Tracking: the line predicted from the state is refined by the
    frame's own fit, whole periods following the prediction; a frame without a significant
    timing peak is assigned from the prediction alone. A frame whose whole-period count would
    be ambiguous gets no pulse index at all (in_window all False; state.message says why);
    once the prediction itself is that uncertain the state is "lost" for the rest of the pass.

    drift_change_ppb_per_s bounds how fast the drift may change between frames;
    count_back_drift_change_ppb_per_s (None: the same) bounds it over the count back to pulse 0
    at acquisition, e.g. count_back_drift_change_ppb_per_s() from the pass's ephemeris.
    """
    max_drift, drift_change = _validate_tracking(state, max_drift_ppb, drift_change_ppb_per_s)
    count_back_change = drift_change
    if count_back_drift_change_ppb_per_s is not None:
        value = count_back_drift_change_ppb_per_s
        if not isinstance(value, (int, float, np.integer, np.floating)) or not value >= 0:
            raise InputError(
                f"count_back_drift_change_ppb_per_s: must be a number >= 0 or None, got {value!r}"
            )
        count_back_change = min(float(value) * 1e-9 / _PS_PER_S, drift_change)
    timestamp_ps, predicted_delay_ps = _validate_tags(timestamp_ps, predicted_delay_ps)
    qkd_start_ps, period_ps = _validate_timing(qkd_start_ps, pulse_period_ps)
    half_window = _validate_window(window_ps, period_ps)
    n = timestamp_ps.size
    acquiring = state.mode == "acquiring"

    def not_assigned(message: str, mode: str = state.mode) -> tuple[SyncResult, TimingState]:
        return _unassigned_result(n), replace(
            state,
            mode=mode,
            frames_not_assigned=state.frames_not_assigned + 1,
            last_frame="not assigned",
            message=message,
        )

    def coasted(result: SyncResult, message: str) -> tuple[SyncResult, TimingState]:
        return result, replace(
            state, frames_coasted=state.frames_coasted + 1, last_frame="coasted", message=message
        )

    if state.mode == "lost":
        return not_assigned(state.message)
    if acquiring:
        state = replace(state, acquisition_attempts=state.acquisition_attempts + 1)
    if n == 0:
        return (
            not_assigned("acquisition: no tags")
            if acquiring
            else coasted(_unassigned_result(0), "no tags")
        )
    reference_ps = _frame_reference_ps(timestamp_ps)
    tags = (timestamp_ps, predicted_delay_ps, qkd_start_ps, period_ps)
    prior: _Prior | str = ""
    if acquiring and state.provisional_frames:
        # Continue the provisional line; one extrapolated too far is dropped and acquisition
        # starts afresh from this frame. The line is what the count back extrapolates, so it
        # carries the count-back bound on the drift change.
        prior = _tracking_prior(state, reference_ps, period_ps, count_back_change)
        if isinstance(prior, str):
            state = replace(state, provisional_frames=0)
    if acquiring and not state.provisional_frames:
        prior = _acquisition_prior(*tags, reference_ps, max_drift)
    elif not acquiring:
        prior = _tracking_prior(state, reference_ps, period_ps, drift_change)
    if isinstance(prior, str):
        return not_assigned(prior, "acquiring" if acquiring else "lost")

    scratch = np.empty(2 * n, dtype=np.float64)
    result, drift_var, offset_error, deviation, margin = _measured_line(
        tags, half_window, prior, reference_ps, count_back_change, scratch
    )
    z = _signal_significance(result.residual_ps, period_ps, half_window)
    if z < _SIGNAL_SIGNIFICANCE:
        if acquiring:
            return not_assigned(f"acquisition: timing peak not significant ({z:.1f} sigma)")
        return coasted(
            _line_result(
                *tags, half_window, prior.offset_ps, prior.drift_per_ps, reference_ps, scratch
            ),
            f"timing peak not significant ({z:.1f} sigma): assigned from the prediction",
        )
    whole = 0
    if acquiring and state.provisional_frames:
        if not abs(deviation) + margin < period_ps / 2:
            return _unassigned_result(n), replace(
                state,
                provisional_frames=0,
                frames_not_assigned=state.frames_not_assigned + 1,
                last_frame="not assigned",
                message=(
                    f"acquisition: timing peak {deviation:.0f} ps from the provisional line "
                    f"(+- {margin:.0f} ps): starting it afresh"
                ),
            )
        elapsed = float(reference_ps - qkd_start_ps) - float(np.mean(predicted_delay_ps))
        whole, deviation, margin = _count_from_pulse_zero(
            result, offset_error, drift_var, elapsed, count_back_change, period_ps
        )
    if not abs(deviation) + margin < period_ps / 2:
        if acquiring:
            # Keep the frame's line as the provisional one: later frames refine its drift, so
            # its extrapolation back to QKD start narrows until the count is fixed.
            line = _tracked_state(
                state, result, reference_ps, offset_error, drift_var, "not assigned"
            )
            return _unassigned_result(n), replace(
                line,
                mode="acquiring",
                frames_not_assigned=state.frames_not_assigned + 1,
                provisional_frames=state.provisional_frames + 1,
                message=(
                    f"acquisition: offset at QKD start {deviation:.0f} ps +- {margin:.0f} ps "
                    f"does not fix the whole-period count (|offset| < {period_ps / 2:g} ps "
                    f"assumed there; provisional line over {state.provisional_frames + 1} "
                    "frames)"
                ),
            )
        return not_assigned(
            f"timing peak {deviation:.0f} ps from the prediction (+- {margin:.0f} ps): "
            "whole-period count ambiguous"
        )
    if whole:
        # Whole periods now counted from QKD start: move the provisional line onto that count.
        result = _line_result(
            *tags,
            half_window,
            result.clock_offset_ps - whole * period_ps,
            result.clock_drift_ps_per_s / _PS_PER_S,
            reference_ps,
            scratch,
        )
    locked = _tracked_state(
        state, result, reference_ps, offset_error, drift_var, "acquired" if acquiring else "tracked"
    )
    return result, replace(locked, mode="tracking", provisional_frames=0)


def _count_from_pulse_zero(
    result: SyncResult,
    offset_error: float,
    drift_var: float,
    elapsed_ps: float,
    drift_change: float,
    period_ps: float,
) -> tuple[int, float, float]:
    """Extrapolate a provisional line back to pulse 0's arrival (elapsed_ps before the frame
    reference): return (whole periods to remove from it, the offset left there, its margin)."""
    offset_at_start = result.clock_offset_ps - result.clock_drift_ps_per_s / _PS_PER_S * elapsed_ps
    whole = round(offset_at_start / period_ps)
    margin = (
        _MARGIN_SIGMAS * math.hypot(offset_error, math.sqrt(drift_var) * elapsed_ps)
        + 0.5 * drift_change * elapsed_ps**2
    )
    return whole, offset_at_start - whole * period_ps, margin


def _tracked_state(
    state: TimingState,
    result: SyncResult,
    reference_ps: int,
    offset_error: float,
    drift_var: float,
    outcome: str,
) -> TimingState:
    """The state carrying the line the frame measured."""
    return replace(
        state,
        offset_ps=result.clock_offset_ps,
        drift_ppb=-result.clock_drift_ps_per_s / 1e3,
        reference_ps=reference_ps,
        offset_error_ps=offset_error,
        drift_error_ppb=math.sqrt(drift_var) * 1e9,
        frames_measured=state.frames_measured + 1,
        last_frame=outcome,
        message="",
    )
