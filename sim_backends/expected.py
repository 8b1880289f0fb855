"""Expected detection statistics of the downlink: gains, counts, QBER and sifted rate.

The decoy-state channel model of Ma, Qi, Zhao & Lo, PRA 72, 012326 (2005), sec. II, with
the noise-and-signal overlap kept: an intensity mu gives the gain Q = 1 - (1 - Y0) exp(-eta
mu) and the error-weighted gain E Q = e0 Y0 + e_d S - e0 Y0 S, S = 1 - exp(-eta mu), with Y0
the probability of a noise click in the pulse's sync window, e0 = 1/2 its error rate and e_d
the optical error rate (when both click, the signal sets the bit). A signal click counts only
inside the window: a fraction erf(w / (2 sqrt(2) sigma_jitter)) of a Gaussian jitter.
On top of it: a Gaussian intensity fluctuation of relative rms sigma averages exp(-eta mu) to
exp(-eta mu + (eta mu sigma)^2 / 2) (the Gaussian moment generating function); afterpulses of
live clicks add noise in later windows; and a detector that is dead for tau after a click
passes a fraction 1 / (1 + R tau_eff) of its clicks (non-paralysable dead time, Knoll,
Radiation Detection and Measurement, 4th ed., sec. 4.VII), with tau_eff the pulse slots a
click blocks, since clicks only come in pulse slots.

These are the expectations sim_backends.channel samples from, so they predict a pass before
it is simulated and check the event-level simulation in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError
from sim_backends.channel import DetectorModel, SourceModel

__all__ = [
    "ExpectedRates",
    "dead_time_blocked_slots",
    "expected_rates",
    "live_fraction",
]

_NOISE_ERROR_RATE = 0.5  # a noise click is a random bit


@dataclass(frozen=True)
class ExpectedRates:
    """Per time step (rows) and intensity (columns: signal, decoy, vacuum) expectations.

    gain: detection probability per pulse of that intensity; counts_per_s: detections per
    second of pulses of that intensity; qber: error rate of sifted detections of that
    intensity; the rest sum over intensities.
    """

    gain: np.ndarray
    counts_per_s: np.ndarray
    qber: np.ndarray
    detections_per_s: np.ndarray
    sifted_bits_per_s: np.ndarray
    overall_qber: np.ndarray
    noise_click_probability: np.ndarray
    live_fraction: np.ndarray


def dead_time_blocked_slots(dead_time_ps: float, period_ps: float) -> int:
    """Get how many following pulse slots a click makes its detector miss.

    A slot at k periods after the click is live when k * period >= dead_time, so the
    ceil(dead_time / period) - 1 slots before it are blocked.
    """
    if not (math.isfinite(dead_time_ps) and dead_time_ps >= 0.0):
        raise InputError(f"dead_time_ps must be finite and >= 0, got {dead_time_ps!r}")
    if not (math.isfinite(period_ps) and period_ps > 0.0):
        raise InputError(f"period_ps must be finite and > 0, got {period_ps!r}")
    return max(math.ceil(dead_time_ps / period_ps - 1e-12) - 1, 0)


def live_fraction(click_probability_per_slot: np.ndarray, blocked_slots: int) -> np.ndarray:
    """Get the fraction of a detector's clicks that find it live: 1 / (1 + p n_blocked).

    After each live click n_blocked slots are lost, then clicks come at a rate p per slot, so
    one live click per n_blocked + 1/p slots on average.
    """
    p = np.asarray(click_probability_per_slot, dtype=np.float64)
    if p.size and (not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0)):
        raise InputError("click_probability_per_slot must be in [0, 1]")
    if isinstance(blocked_slots, bool) or not isinstance(blocked_slots, (int, np.integer)):
        raise InputError(f"blocked_slots must be an integer, got {blocked_slots!r}")
    if blocked_slots < 0:
        raise InputError(f"blocked_slots must be >= 0, got {blocked_slots}")
    return 1.0 / (1.0 + p * blocked_slots)


def _as_steps(value: object, n: int, name: str, low: float, high: float) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n, float(array))
    if array.shape != (n,):
        raise InputError(f"{name} must be a scalar or have {n} entries, got shape {array.shape}")
    if n and (not np.all(np.isfinite(array)) or array.min() < low or array.max() > high):
        raise InputError(f"{name} must be finite and in [{low}, {high}]")
    return array


def expected_rates(
    source: SourceModel,
    detectors: DetectorModel,
    transmittance: np.ndarray,
    background_counts_per_s: np.ndarray,
    sync_window_ps: float,
    polarisation_error: np.ndarray | float | None = None,
) -> ExpectedRates:
    """Get the expected gains, counts, QBER and sifted rate at each step of a link budget.

    transmittance excludes detector efficiency; background_counts_per_s is per detector
    before efficiency (as sim_backends.link gives them); polarisation_error (the optical
    error e_d per step) defaults to the source's.
    """
    if not isinstance(source, SourceModel):
        raise InputError(f"source must be a SourceModel, got {type(source).__name__}")
    if not isinstance(detectors, DetectorModel):
        raise InputError(f"detectors must be a DetectorModel, got {type(detectors).__name__}")
    eta_channel = np.asarray(transmittance, dtype=np.float64)
    if eta_channel.ndim != 1:
        raise InputError(f"transmittance must be 1-D, got shape {eta_channel.shape}")
    n = eta_channel.shape[0]
    eta_channel = _as_steps(eta_channel, n, "transmittance", 0.0, 1.0)
    background = _as_steps(background_counts_per_s, n, "background_counts_per_s", 0.0, 1e9)
    error_optical = _as_steps(
        source.polarisation_error if polarisation_error is None else polarisation_error,
        n,
        "polarisation_error",
        0.0,
        0.5,
    )
    period_ps = 1e12 / source.repetition_rate_hz
    if not (isinstance(sync_window_ps, (int, float)) and 0.0 < sync_window_ps <= period_ps):
        raise InputError(f"sync_window_ps must be in (0, {period_ps:g}], got {sync_window_ps!r}")

    efficiency = np.asarray(detectors.efficiency, dtype=np.float64)
    # A balanced passive receiver sends each photon to one of the four detectors.
    eta = eta_channel * float(efficiency.mean())
    noise_rate_per_s = float(detectors.dark_count_rate_hz) * 4 + background * float(
        efficiency.sum()
    )
    window_s = sync_window_ps * 1e-12
    mu = np.asarray(source.intensities, dtype=np.float64)[None, :]
    probability = np.asarray(source.probabilities, dtype=np.float64)[None, :]
    sigma = float(source.intensity_fluctuation)
    exponent = -eta[:, None] * mu + 0.5 * (eta[:, None] * mu * sigma) ** 2
    raw_signal = -np.expm1(np.minimum(exponent, 0.0))  # P(click), fluctuation-averaged
    jitter_ps = float(detectors.timing_jitter_ps)
    captured = (
        math.erf(sync_window_ps / (2.0 * math.sqrt(2.0) * jitter_ps)) if jitter_ps > 0 else 1.0
    )
    signal = raw_signal * captured

    # Afterpulses: each live click arms one with probability p_ap; it lands in some pulse's
    # sync window with probability window / period (it is spread over many periods).
    raw_clicks_per_pulse = (probability * raw_signal).sum(axis=1)
    afterpulse_per_pulse = (
        detectors.afterpulse_probability * raw_clicks_per_pulse * (sync_window_ps / period_ps)
    )
    noise = -np.expm1(-noise_rate_per_s * window_s) + afterpulse_per_pulse
    noise = np.minimum(noise, 1.0)
    gain = 1.0 - (1.0 - noise[:, None]) * (1.0 - signal)
    errors = (
        _NOISE_ERROR_RATE * noise[:, None]
        + error_optical[:, None] * signal
        - _NOISE_ERROR_RATE * noise[:, None] * signal
    )

    # Dead time: the per-detector click probability per slot, signal and noise together.
    clicks_per_slot_per_detector = (
        raw_clicks_per_pulse + noise_rate_per_s * period_ps * 1e-12
    ) / 4.0
    blocked = dead_time_blocked_slots(detectors.dead_time_ps, period_ps)
    live = live_fraction(np.minimum(clicks_per_slot_per_detector, 1.0), blocked)

    counts_per_s = source.repetition_rate_hz * probability * gain * live[:, None]
    qber = np.divide(errors, gain, out=np.zeros_like(gain), where=gain > 0.0)
    match = source.basis_x_probability * detectors.basis_x_probability + (
        1.0 - source.basis_x_probability
    ) * (1.0 - detectors.basis_x_probability)
    detections = counts_per_s.sum(axis=1)
    sifted_errors = (counts_per_s * qber).sum(axis=1)
    overall = np.divide(
        sifted_errors, detections, out=np.zeros_like(detections), where=detections > 0.0
    )
    return ExpectedRates(
        gain=gain,
        counts_per_s=counts_per_s,
        qber=qber,
        detections_per_s=detections,
        sifted_bits_per_s=match * detections,
        overall_qber=overall,
        noise_click_probability=noise,
        live_fraction=live,
    )
