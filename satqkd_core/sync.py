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

Both build on `sync_peak` (the timing peak of a frame) and `sync_line` (a frame's offset line
fit and assignment, and what each kernel costs); those never import this module.
"""

from __future__ import annotations

import numpy as np

from satqkd_core.errors import InputError
from satqkd_core.sync_line import (
    SyncResult,
    _estimate_line,
    _frame_reference_ps,
    _line_result,
    _validate_tags,
    _validate_timing,
    _validate_window,
)

# The kernels, re-exported: their property tests check them against their plain-Python
# references through this module.
from satqkd_core.sync_line import _assign_kernel as _assign_kernel
from satqkd_core.sync_line import _assign_kernel_reference as _assign_kernel_reference
from satqkd_core.sync_line import _gated_line_fit_kernel as _gated_line_fit_kernel
from satqkd_core.sync_line import (
    _gated_line_fit_kernel_reference as _gated_line_fit_kernel_reference,
)
from satqkd_core.sync_line import _pairwise_sum_kernel as _pairwise_sum_kernel
from satqkd_core.sync_line import _pairwise_sum_kernel_reference as _pairwise_sum_kernel_reference
from satqkd_core.sync_line import _time_span_kernel as _time_span_kernel
from satqkd_core.sync_line import _time_span_kernel_reference as _time_span_kernel_reference
from satqkd_core.sync_peak import _peak_candidates_kernel as _peak_candidates_kernel
from satqkd_core.sync_peak import (
    _peak_candidates_kernel_reference as _peak_candidates_kernel_reference,
)
from satqkd_core.sync_peak import _phase_histogram_kernel as _phase_histogram_kernel
from satqkd_core.sync_peak import (
    _phase_histogram_kernel_reference as _phase_histogram_kernel_reference,
)
from satqkd_core.sync_peak import _refine_peak_kernel as _refine_peak_kernel
from satqkd_core.sync_peak import _refine_peak_kernel_reference as _refine_peak_kernel_reference
from satqkd_core.sync_peak import _timing_peak_ps
from satqkd_core.sync_tracking import (
    DEFAULT_CLOCK_DRIFT_CHANGE_PPB_PER_S,
    DEFAULT_DRIFT_CHANGE_PPB_PER_S,
    DEFAULT_MAX_DRIFT_PPB,
    FRAME_OUTCOMES,
    TRACKING_MODES,
    TimingState,
    count_back_drift_change_ppb_per_s,
    track_pulse_indices,
)

__all__ = [
    "DEFAULT_CLOCK_DRIFT_CHANGE_PPB_PER_S",
    "DEFAULT_DRIFT_CHANGE_PPB_PER_S",
    "DEFAULT_MAX_DRIFT_PPB",
    "FRAME_OUTCOMES",
    "TRACKING_MODES",
    "SyncResult",
    "TimingState",
    "assign_pulse_indices",
    "count_back_drift_change_ppb_per_s",
    "estimate_clock_offset_ps",
    "track_pulse_indices",
]


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
