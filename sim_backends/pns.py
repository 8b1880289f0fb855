"""Photon-number-splitting (PNS) attack on the weak-coherent-pulse downlink.

Eve measures each pulse's photon number without disturbing its polarisation, blocks vacuum
and single-photon pulses, keeps one photon of every multi-photon pulse (to measure it after
the bases are announced) and forwards the other n - 1 photons through a lossless channel that
replaces the real one (Brassard, Lutkenhaus, Mor & Sanders, PRL 85, 1330 (2000)). She forwards
a fraction F of the multi-photon pulses, chosen so that the station's count rate equals the
real channel's. She knows every forwarded bit and adds no errors; only the decoy states show
that the yields of the three intensities no longer come from one linear channel (Hwang, PRL
91, 057901 (2003); Lo, Ma & Chen, PRL 94, 230504 (2005)).

Cost scales with detections as in sim_backends.channel: candidate pulses at the largest click
probability of the frame, thinned to each pulse's own. Forwarded photons are a fixed number,
not a Poisson stream, so the four detectors are not independent: the click pattern comes from
the photon number, the number of photons detected and their split over the detectors.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from satqkd_core import rng
from satqkd_core.errors import InputError
from sim_backends.clicks import (
    DRAWS_PER_CANDIDATE,
    clicks_from_mask_reference,
    clicks_from_masks,
    clicks_reference_arrays,
    fill_route,
    gaussian,
    gaussian_reference,
    route_reference,
)

__all__ = [
    "forwarding_probability",
    "multi_photon_click_probability",
    "pns_clicks",
    "pns_clicks_reference",
]

_FLUCTUATION_CLIP_SIGMA = 5.0
_MAX_PHOTONS = 2000  # far beyond Poisson(100), the largest intensity a SourceModel allows


@numba.njit(cache=True)
def _multi_photon_click(mu: float, miss: float) -> float:
    """P(n >= 2 and at least one of the n - 1 forwarded photons detected), n ~ Poisson(mu).

    With miss = 1 - (detection probability per photon): sum_{n>=2} P(n) (1 - miss^(n-1))
    = (1 - e^-mu) - e^-mu (e^(mu miss) - 1) / miss, and (1 - e^-mu) - mu e^-mu at miss = 0.
    """
    if mu <= 0.0:
        return 0.0
    at_least_one = -math.expm1(-mu)
    if miss <= 0.0:
        return max(at_least_one - mu * math.exp(-mu), 0.0)
    return max(at_least_one - math.exp(-mu) * math.expm1(mu * miss) / miss, 0.0)


def multi_photon_click_probability(mu: float, detection_probability: float) -> float:
    """Get the click probability of a pulse of mean photon number mu under the PNS attack
    (every multi-photon pulse forwarded, one photon kept by Eve)."""
    for value, name, high in (
        (mu, "mu", 100.0),
        (detection_probability, "detection_probability", 1.0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputError(f"{name} must be a number, got {value!r}")
        if not (math.isfinite(float(value)) and 0.0 <= float(value) <= high):
            raise InputError(f"{name} must be in [0, {high}], got {value}")
    return float(_multi_photon_click(float(mu), 1.0 - float(detection_probability)))


def forwarding_probability(
    intensities: tuple[float, ...],
    probabilities: tuple[float, ...],
    detection_probability: float,
    transmittance: float,
) -> float:
    """Get the fraction F of multi-photon pulses Eve forwards so that the station's expected
    signal count rate equals the real channel's (capped at 1: a channel that is too good
    cannot be faked)."""
    if len(intensities) != len(probabilities) or not intensities:
        raise InputError("intensities and probabilities must be non-empty and of equal length")
    for name, value in (
        ("detection_probability", detection_probability),
        ("transmittance", transmittance),
    ):
        if not (isinstance(value, (int, float, np.floating)) and 0.0 <= float(value) <= 1.0):
            raise InputError(f"{name} must be in [0, 1], got {value!r}")
    eta = float(transmittance) * float(detection_probability)
    # Real channel: independent losses thin Poisson light to Poisson(mu eta).
    real = sum(p * -math.expm1(-mu * eta) for mu, p in zip(intensities, probabilities, strict=True))
    faked = sum(
        p * multi_photon_click_probability(mu, float(detection_probability))
        for mu, p in zip(intensities, probabilities, strict=True)
    )
    if faked <= 0.0:
        return 0.0
    return min(1.0, real / faked)


@numba.njit(cache=True, inline="always")
def _unit(key: np.uint64, key2: np.uint64, counter: np.uint64) -> float:
    return rng.word_to_unit(rng.counter_word(key, key2, counter))


@numba.njit(cache=True)
def _binomial_inverse(trials: int, p: float, u: float) -> int:
    """Binomial(trials, p) by inversion of the cumulative sum from 0 upwards."""
    if trials <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return trials
    q = 1.0 - p
    pmf = 1.0
    for _ in range(trials):
        pmf *= q
    cumulative = pmf
    k = 0
    while cumulative <= u and k < trials:
        pmf *= (trials - k) / (k + 1.0) * p / q
        k += 1
        cumulative += pmf
    return k


@numba.njit(cache=True)
def pns_clicks(
    key: np.uint64,
    offsets: np.ndarray,
    basis: np.ndarray,
    bit: np.ndarray,
    intensity: np.ndarray,
    mu: np.ndarray,
    p_max: float,
    forward_probability: float,
    efficiency: np.ndarray,
    receiver_x_probability: float,
    polarisation_error: float,
    intensity_fluctuation: float,
    period_ps: float,
    delay_ps: float,
    delay_rate: float,
    clock_offset_ps: float,
    jitter_ps: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Get the physical clicks (time rel. to emission_start_ps, detector, candidate) that the
    PNS attack lets through from the candidate pulses."""
    key2 = rng.second_round_key(key)
    n = offsets.shape[0]
    masks = np.zeros(n, dtype=np.uint8)
    route = np.empty(4)
    for j in range(n):
        base = np.uint64(j) * np.uint64(DRAWS_PER_CANDIDATE)
        state_basis = np.int64(basis[j])
        state_bit = np.int64(bit[j])
        fill_route(route, state_basis, state_bit, receiver_x_probability, polarisation_error)
        detect = 0.0
        for d in range(4):
            detect += route[d] * efficiency[d]
        miss = 1.0 - detect
        threshold = _unit(key, key2, base) * p_max
        mean_photons = mu[intensity[j]]
        if intensity_fluctuation > 0.0:
            mean_high = mean_photons * (1.0 + _FLUCTUATION_CLIP_SIGMA * intensity_fluctuation)
            if threshold >= forward_probability * _multi_photon_click(mean_high, miss):
                continue
            z = gaussian(key, key2, base + np.uint64(1))
            z = min(max(z, -_FLUCTUATION_CLIP_SIGMA), _FLUCTUATION_CLIP_SIGMA)
            mean_photons = max(mean_photons * (1.0 + intensity_fluctuation * z), 0.0)
        click = _multi_photon_click(mean_photons, miss)
        if threshold >= forward_probability * click:
            continue
        # Photon number n >= 2 given a click: weight P(n) (1 - miss^(n-1)), by inversion.
        target = _unit(key, key2, base + np.uint64(3)) * click
        pmf = math.exp(-mean_photons) * mean_photons  # P(1)
        miss_power = 1.0  # miss^(n-1)
        cumulative = 0.0
        photons = 1
        while photons < _MAX_PHOTONS:
            photons += 1
            pmf *= mean_photons / photons
            miss_power *= miss
            cumulative += pmf * (1.0 - miss_power)
            if cumulative >= target:
                break
        forwarded = photons - 1
        # Photons detected k >= 1 of the forwarded ones: Binomial(forwarded, detect) | k >= 1.
        detected = forwarded
        if miss > 0.0:
            target_k = _unit(key, key2, base + np.uint64(4)) * (1.0 - miss_power)
            pmf_k = forwarded * detect
            for _ in range(forwarded - 1):
                pmf_k *= miss
            cumulative_k = pmf_k
            detected = 1
            while cumulative_k < target_k and detected < forwarded:
                pmf_k *= (forwarded - detected) / (detected + 1.0) * detect / miss
                detected += 1
                cumulative_k += pmf_k
        # Split the detected photons over the four detectors (multinomial, chained binomials).
        mask = 0
        remaining = detected
        rest = detect
        last = 3
        while last > 0 and route[last] * efficiency[last] <= 0.0:
            last -= 1
        for d in range(last):
            share = route[d] * efficiency[d]
            p = share / rest if rest > 0.0 else 0.0
            c = _binomial_inverse(remaining, min(p, 1.0), _unit(key, key2, base + np.uint64(5 + d)))
            if c > 0:
                mask |= 1 << d
            remaining -= c
            rest -= share
            if remaining == 0:
                break
        if remaining > 0:
            mask |= 1 << last
        masks[j] = mask
    return clicks_from_masks(
        key, key2, masks, offsets, period_ps, delay_ps, delay_rate, clock_offset_ps, jitter_ps
    )


def _multi_photon_click_reference(mu: float, miss: float) -> float:
    if mu <= 0.0:
        return 0.0
    at_least_one = -math.expm1(-mu)
    if miss <= 0.0:
        return max(at_least_one - mu * math.exp(-mu), 0.0)
    return max(at_least_one - math.exp(-mu) * math.expm1(mu * miss) / miss, 0.0)


def _binomial_inverse_reference(trials: int, p: float, u: float) -> int:
    if trials <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return trials
    q = 1.0 - p
    pmf = 1.0
    for _ in range(trials):
        pmf *= q
    cumulative, k = pmf, 0
    while cumulative <= u and k < trials:
        pmf *= (trials - k) / (k + 1.0) * p / q
        k += 1
        cumulative += pmf
    return k


def pns_clicks_reference(
    key: int,
    offsets: np.ndarray,
    basis: np.ndarray,
    bit: np.ndarray,
    intensity: np.ndarray,
    mu: np.ndarray,
    p_max: float,
    forward_probability: float,
    efficiency: np.ndarray,
    receiver_x_probability: float,
    polarisation_error: float,
    intensity_fluctuation: float,
    period_ps: float,
    delay_ps: float,
    delay_rate: float,
    clock_offset_ps: float,
    jitter_ps: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Get the same clicks as pns_clicks in plain Python."""

    def unit(counter: int) -> float:
        return rng.word_to_unit_reference(rng.counter_word_reference(key, counter))

    clicks: tuple[list, list, list] = ([], [], [])
    for j in range(len(offsets)):
        base = j * DRAWS_PER_CANDIDATE
        state_basis, state_bit = int(basis[j]), int(bit[j])
        route = route_reference(state_basis, state_bit, receiver_x_probability, polarisation_error)
        detect = 0.0
        for d in range(4):
            detect += route[d] * float(efficiency[d])
        miss = 1.0 - detect
        threshold = unit(base) * p_max
        mean_photons = float(mu[int(intensity[j])])
        if intensity_fluctuation > 0.0:
            mean_high = mean_photons * (1.0 + 5.0 * intensity_fluctuation)
            if threshold >= forward_probability * _multi_photon_click_reference(mean_high, miss):
                continue
            z = min(max(gaussian_reference(key, base + 1), -5.0), 5.0)
            mean_photons = max(mean_photons * (1.0 + intensity_fluctuation * z), 0.0)
        click = _multi_photon_click_reference(mean_photons, miss)
        if threshold >= forward_probability * click:
            continue
        target = unit(base + 3) * click
        pmf = math.exp(-mean_photons) * mean_photons
        miss_power, cumulative, photons = 1.0, 0.0, 1
        while photons < _MAX_PHOTONS:
            photons += 1
            pmf *= mean_photons / photons
            miss_power *= miss
            cumulative += pmf * (1.0 - miss_power)
            if cumulative >= target:
                break
        forwarded = photons - 1
        detected = forwarded
        if miss > 0.0:
            target_k = unit(base + 4) * (1.0 - miss_power)
            pmf_k = forwarded * detect
            for _ in range(forwarded - 1):
                pmf_k *= miss
            cumulative_k, detected = pmf_k, 1
            while cumulative_k < target_k and detected < forwarded:
                pmf_k *= (forwarded - detected) / (detected + 1.0) * detect / miss
                detected += 1
                cumulative_k += pmf_k
        mask, remaining, rest = 0, detected, detect
        last = 3
        while last > 0 and route[last] * float(efficiency[last]) <= 0.0:
            last -= 1
        for d in range(last):
            share = route[d] * float(efficiency[d])
            p = share / rest if rest > 0.0 else 0.0
            c = _binomial_inverse_reference(remaining, min(p, 1.0), unit(base + 5 + d))
            if c > 0:
                mask |= 1 << d
            remaining -= c
            rest -= share
            if remaining == 0:
                break
        if remaining > 0:
            mask |= 1 << last
        clicks_from_mask_reference(
            clicks, key, j, mask, offsets[j], period_ps, delay_ps, delay_rate, clock_offset_ps,
            jitter_ps,
        )  # fmt: skip
    return clicks_reference_arrays(clicks)
