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
it is simulated and check the event-level simulation in tests. An eavesdropper changes them as
the channel's AttackModel does: intercept-resend on a fraction f of the pulses turns their
optical error e into 1/4 + e/2 (Eve's basis is wrong half the time); photon-number splitting
replaces the gain of intensity mu by F P_multi(mu) (sim_backends.pns).

expected_key takes the expected counts of a QKD window through the station's own decisions
(satqkd_core.pass_decisions) and finite-key bound, with the leak of the mission's error
correction run on a seeded synthetic key of the expected length and error rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core import finite_key as fk
from satqkd_core.cascade import CascadeCorrector, CascadeResponder
from satqkd_core.errors import InputError
from satqkd_core.ldpc_reconciliation import LdpcReceiver, LdpcSender
from satqkd_core.pass_decisions import (
    ProtocolParameters,
    feasibility_abort_reason,
    kept_statistics,
    no_key_reason,
    z_basis_qber,
)
from satqkd_core.verification import verification_tag_bits
from sim_backends import pns
from sim_backends.channel import AttackModel, DetectorModel, SourceModel

__all__ = [
    "EC_SAMPLE_BITS",
    "ExpectedKey",
    "ExpectedRates",
    "dead_time_blocked_slots",
    "expected_key",
    "expected_rates",
    "expected_statistics",
    "live_fraction",
]

_NOISE_ERROR_RATE = 0.5  # a noise click is a random bit
# error correction runs on at most this many bits and its leak is scaled to the block: the
# leak per bit of Cascade and of the LDPC frames does not depend on the block size beyond
# ~1e5 bits (0.3 % apart between 2^18 and 2.4e6 bits at 1.1 % QBER), and 2.4e6 bits of
# Cascade take ~10 s
EC_SAMPLE_BITS = 1 << 18


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
    attack: AttackModel | None = None,
) -> ExpectedRates:
    """Get the expected gains, counts, QBER and sifted rate at each step of a link budget.

    transmittance excludes detector efficiency; background_counts_per_s is per detector
    before efficiency (as sim_backends.link gives them); polarisation_error (the optical
    error e_d per step) defaults to the source's; attack as the channel applies it.
    """
    if attack is not None and not isinstance(attack, AttackModel):
        raise InputError(f"attack must be an AttackModel, got {type(attack).__name__}")
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
    if attack is not None and attack.intercept_resend_fraction > 0.0:
        f = attack.intercept_resend_fraction
        error_optical = (1.0 - f) * error_optical + f * (0.25 + 0.5 * error_optical)
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
    if attack is not None and attack.photon_number_splitting:
        mean_efficiency = float(efficiency.mean())
        multi = np.array(
            [pns.multi_photon_click_probability(float(m), mean_efficiency) for m in mu[0]]
        )
        forward = np.array(
            [
                pns.forwarding_probability(
                    source.intensities, source.probabilities, mean_efficiency, float(t)
                )
                for t in eta_channel
            ]
        )
        raw_signal = forward[:, None] * multi[None, :]
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


@dataclass(frozen=True)
class ExpectedKey:
    """What the station's post-processing should make of a window's expected counts."""

    statistics: fk.DecoyStatistics
    leak_ec_bits: int
    verification_tag_bits: int
    key_bits: int
    abort_reason: str | None


def expected_statistics(
    rates: ExpectedRates,
    source: SourceModel,
    detectors: DetectorModel,
    params: ProtocolParameters,
    step_s: float,
    in_window: np.ndarray,
) -> fk.DecoyStatistics:
    """Get the expected sifted detections and errors per basis and intensity in a window."""
    window = np.asarray(in_window, dtype=bool)
    if window.shape != rates.detections_per_s.shape:
        raise InputError(f"in_window must have {rates.detections_per_s.size} entries")
    counts = (rates.counts_per_s[window] * step_s).sum(axis=0)
    errors = (rates.counts_per_s[window] * rates.qber[window] * step_s).sum(axis=0)
    px, dx = source.basis_x_probability, detectors.basis_x_probability
    shares = (px * dx, (1.0 - px) * (1.0 - dx))  # sifted: both ends chose that basis
    x_det, z_det = (tuple(round(float(c) * share) for c in counts) for share in shares)
    x_err, z_err = (
        tuple(min(round(float(e) * share), d) for e, d in zip(errors, det, strict=True))
        for share, det in zip(shares, (x_det, z_det), strict=True)
    )
    return fk.DecoyStatistics(
        intensities=params.intensities,
        probabilities=params.probabilities,
        x_detections=x_det,  # type: ignore[arg-type]
        x_errors=x_err,  # type: ignore[arg-type]
        z_detections=z_det,  # type: ignore[arg-type]
        z_errors=z_err,  # type: ignore[arg-type]
    )


def _synthetic_keys(n: int, qber: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    reference = generator.integers(0, 2, n, dtype=np.uint8)
    noisy = reference ^ (generator.random(n) < qber).astype(np.uint8)
    return reference, noisy


def expected_key(
    stats: fk.DecoyStatistics,
    params: ProtocolParameters,
    cascade_passes: int,
    seed: int,
) -> ExpectedKey:
    """Get the key length the station's post-processing gives on these counts.

    The error correction runs on a synthetic key (seeded) with the X basis's expected error
    rate, up to EC_SAMPLE_BITS long, and its leak (and LDPC's kept fraction) is scaled to the
    block: what the mission's method discloses on such a block.
    """
    reason = feasibility_abort_reason(params, stats)
    if reason is not None:
        return ExpectedKey(stats, 0, 0, 0, reason)
    n_x = sum(stats.x_detections)
    qber_x = sum(stats.x_errors) / n_x
    qber_z = z_basis_qber(stats)
    sample = min(n_x, EC_SAMPLE_BITS)
    scale = n_x / sample
    reference, noisy = _synthetic_keys(sample, qber_x, seed)
    if params.reconciliation == "ldpc":
        estimate = max(qber_z, 1e-3)
        fill = np.random.default_rng(seed + 1).bytes(sample // 8 + 1)
        receiver = LdpcReceiver(noisy, estimate, seed)
        sender = LdpcSender(reference, estimate, seed, fill=fill)
        receiver.apply_first(sender.first_message())
        while (request := receiver.next_request()) is not None:
            receiver.apply_reply(sender.reply(request))
        leak = round(receiver.charged_leak_bits * scale)
        kept_fraction = float(receiver.kept_mask().mean())
        kept_x = [round(d * kept_fraction) for d in stats.x_detections]
        stats = kept_statistics(stats, np.repeat(np.arange(3), kept_x))
        kept = sum(kept_x)
    else:
        corrector = CascadeCorrector(noisy, max(qber_z, 1e-3), seed, cascade_passes)
        responder = CascadeResponder(reference, seed, cascade_passes)
        while (query := corrector.next_query()) is not None:
            corrector.apply_reply(responder.reply(query))
        leak, kept = round(corrector.total_leak_bits * scale), n_x
    tag = verification_tag_bits(params.eps_cor, kept)
    result = fk.finite_key_length(stats, params.eps_sec, params.eps_cor, leak + tag)
    reason = None if result.key_length_bits > 0 else no_key_reason(result, leak + tag)
    return ExpectedKey(stats, leak, tag, result.key_length_bits, reason)
