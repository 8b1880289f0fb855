"""Benchmarks: tag synchronisation, sifting tallies, detection-report compression."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from satqkd_core.detection_report import (
    decode_detection_report,
    encode_detection_report,
    gap_entropy_bits,
)
from satqkd_core.sifting import (
    count_bit_errors,
    count_by_basis_intensity,
    sift_detections,
    sift_mask,
)
from satqkd_core.sync import TimingState, assign_pulse_indices, track_pulse_indices

_SEED = 20250727
_PULSE_PERIOD_PS = 10_000.0  # 100 MHz source (Liao et al., Nature 549, 43 (2017))
_QKD_START_PS = 1_000_000_000_000
_JITTER_PS = 50.0
_WINDOW_PS = 1_000.0
_CLOCK_OFFSET_PS = 2_345.0
_DARK_FRACTION = 0.1
# LEO range rate up to ~7 km/s: the delay changes by ~23 us per second (PHYSICS.md, Doppler).
_DELAY_RATE = 2.3e-5
_DELAY_PS = 2.5e9


def _synthetic_tags(n_tags: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (timestamp_ps, predicted_delay_ps) for n_tags tags, 10 % of them dark counts."""
    timestamp_ps, predicted, _ = _synthetic_tags_with_truth(n_tags, rng)
    return timestamp_ps, predicted


def _synthetic_tags_with_truth(
    n_tags: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamp_ps, predicted_delay_ps, true pulse index or -1 for a dark tag) per tag."""
    n_signal = int(n_tags * (1 - _DARK_FRACTION))
    mean_gap = 50  # detections on 1 pulse in 50: a strong link, so the frame stays short
    pulse = np.cumsum(rng.geometric(1.0 / mean_gap, n_signal)).astype(np.int64)
    emit_rel_ps = pulse.astype(np.float64) * _PULSE_PERIOD_PS
    # Linear delay in the reception time t_rel: t_rel = emit + D0 + rate * t_rel + offset.
    arrival = (emit_rel_ps + _DELAY_PS + _CLOCK_OFFSET_PS) / (1 - _DELAY_RATE)
    arrival += rng.normal(0.0, _JITTER_PS, n_signal)
    span = float(arrival.max())
    dark = rng.uniform(_DELAY_PS, span, n_tags - n_signal)
    unsorted = np.concatenate([arrival, dark])
    order = np.argsort(unsorted)
    t_rel = unsorted[order]
    truth = np.concatenate([pulse, np.full(dark.size, -1, dtype=np.int64)])[order]
    timestamp_ps = _QKD_START_PS + np.round(t_rel).astype(np.int64)
    predicted = _DELAY_PS + _DELAY_RATE * (timestamp_ps - _QKD_START_PS).astype(np.float64)
    return timestamp_ps, predicted, truth


def _best_rate(fn: Any, items: int, repeats: int) -> float:
    """Items per second of the fastest of several timed calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def _sync_figure(quick: bool, rng: np.random.Generator) -> dict[str, Any]:
    n_tags = 1_000_000 if quick else 10_000_000
    timestamp_ps, predicted, truth = _synthetic_tags_with_truth(n_tags, rng)

    def run() -> None:
        assign_pulse_indices(timestamp_ps, predicted, _QKD_START_PS, _PULSE_PERIOD_PS, _WINDOW_PS)

    rate = _best_rate(run, n_tags, repeats=3)
    result = assign_pulse_indices(
        timestamp_ps, predicted, _QKD_START_PS, _PULSE_PERIOD_PS, _WINDOW_PS
    )
    signal = truth >= 0
    correct = (result.pulse_index[signal] == truth[signal]) & result.in_window[signal]
    return {
        "name": "sync_tags_per_s",
        "value": rate,
        "unit": "tags/s",
        "params": {
            "tags": n_tags,
            "dark_fraction": _DARK_FRACTION,
            "jitter_ps": _JITTER_PS,
            "window_ps": _WINDOW_PS,
            "pulse_period_ps": _PULSE_PERIOD_PS,
            "offset_estimated": True,
            "assigned_fraction": result.assigned_fraction,
            "signal_tags_given_their_pulse_fraction": float(np.mean(correct)),
            "clock_offset_error_ps": result.clock_offset_ps - _CLOCK_OFFSET_PS,
            "delay_rate": _DELAY_RATE,
        },
    }


def _track_figure(quick: bool, rng: np.random.Generator) -> dict[str, Any]:
    """What the station runs per frame: the tracker, locked, and its acquisition frame."""
    n_tags = 1_000_000 if quick else 10_000_000
    timestamp_ps, predicted = _synthetic_tags(n_tags, rng)
    frame = (timestamp_ps, predicted, _QKD_START_PS, _PULSE_PERIOD_PS, _WINDOW_PS)
    _, locked = track_pulse_indices(TimingState(), *frame)
    acquisition_rate = _best_rate(lambda: track_pulse_indices(TimingState(), *frame), n_tags, 3)
    rate = _best_rate(lambda: track_pulse_indices(locked, *frame), n_tags, repeats=3)
    result, state = track_pulse_indices(locked, *frame)
    return {
        "name": "sync_track_tags_per_s",
        "value": rate,
        "unit": "tags/s",
        "params": {
            "tags": n_tags,
            "dark_fraction": _DARK_FRACTION,
            "jitter_ps": _JITTER_PS,
            "window_ps": _WINDOW_PS,
            "pulse_period_ps": _PULSE_PERIOD_PS,
            "state": "tracking (line predicted from the previous frame, then refined)",
            "acquisition_tags_per_s": acquisition_rate,
            "assigned_fraction": result.assigned_fraction,
            "clock_offset_error_ps": result.clock_offset_ps - _CLOCK_OFFSET_PS,
            "drift_ppb": state.drift_ppb,
        },
    }


def _sift_figure(quick: bool, rng: np.random.Generator) -> dict[str, Any]:
    n = 10_000_000 if quick else 100_000_000
    payload_basis = rng.integers(0, 2, n, dtype=np.uint8)
    ogs_basis = rng.integers(0, 2, n, dtype=np.uint8)
    intensity = rng.choice(np.array([0, 1, 2], dtype=np.uint8), n, p=[0.5, 0.25, 0.25])
    payload_bits = rng.integers(0, 2, n, dtype=np.uint8)
    ogs_bits = payload_bits ^ (rng.random(n) < 0.02).astype(np.uint8)

    def run() -> None:
        # What one end does per block: compare bases, keep the matches (compacted basis,
        # intensity and bits of each end), tally them by basis and intensity with errors.
        sift_detections(payload_basis, ogs_basis, intensity, payload_bits, ogs_bits)

    def run_chain() -> None:
        # The same results through numpy boolean compress and the separate tallies.
        keep = sift_mask(payload_basis, ogs_basis)
        kept_payload_bits, kept_ogs_bits = payload_bits[keep], ogs_bits[keep]
        errors = kept_payload_bits ^ kept_ogs_bits
        count_by_basis_intensity(payload_basis[keep], intensity[keep], errors)
        count_bit_errors(kept_payload_bits, kept_ogs_bits)

    rate = _best_rate(run, n, repeats=3)
    chain_rate = _best_rate(run_chain, n, repeats=2)
    return {
        "name": "sift_detections_per_s",
        "value": rate,
        "unit": "detections/s",
        "params": {
            "detections": n,
            "steps": "sift_detections: one pass comparing bases, compacting the kept basis, "
            "intensity and both ends' bits, tallying by basis and intensity with errors",
            "mask_compress_chain_detections_per_s": chain_rate,
        },
    }


def _report_figure(quick: bool, rng: np.random.Generator) -> list[dict[str, Any]]:
    n = 1_000_000 if quick else 10_000_000
    mean_gap = 10_000  # ~1e4 pulses per detection: a typical LEO downlink at 100 MHz
    pulse_index = np.cumsum(rng.geometric(1.0 / mean_gap, n)).astype(np.int64)
    basis = rng.integers(0, 2, n, dtype=np.uint8)
    data = encode_detection_report(pulse_index, basis)
    decoded, decoded_basis = decode_detection_report(data)
    if not (np.array_equal(decoded, pulse_index) and np.array_equal(decoded_basis, basis)):
        raise RuntimeError("detection report round trip failed in the benchmark")
    entropy = gap_entropy_bits(pulse_index)
    encode_rate = _best_rate(lambda: encode_detection_report(pulse_index, basis), n, repeats=2)
    decode_rate = _best_rate(lambda: decode_detection_report(data), n, repeats=2)
    return [
        {
            "name": "detection_report_bits_per_detection",
            "value": 8 * len(data) / n,
            "unit": "bits/detection",
            "params": {
                "detections": n,
                "mean_gap_pulses": mean_gap,
                "index_entropy_bits_per_detection": entropy,
                "basis_bits_per_detection": 1.0,
                "ideal_bits_per_detection": entropy + 1.0,
                "encode_detections_per_s": encode_rate,
                "decode_detections_per_s": decode_rate,
            },
        }
    ]


def figures(quick: bool) -> list[dict[str, Any]]:
    """Return benchmark figures for sync (per frame and tracked), sifting and report coding."""
    rng = np.random.default_rng(_SEED)
    # The tracker's figure last, so the other figures keep their random inputs.
    return [
        _sync_figure(quick, rng),
        _sift_figure(quick, rng),
        *_report_figure(quick, rng),
        _track_figure(quick, rng),
    ]


if __name__ == "__main__":
    import json

    for figure in figures(quick=True):
        print(json.dumps(figure))
