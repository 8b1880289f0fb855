"""Tests of the photon-number-splitting attack: kernel, probabilities, what the station sees."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_shims.source_sequencer import SourceSequencer
from satqkd_core.errors import InputError
from satqkd_core.rng import derive_key
from sim_backends.channel import (
    AttackModel,
    DetectorModel,
    SourceModel,
    generate_frame_detections,
)
from sim_backends.pns import (
    _binomial_inverse,
    _binomial_inverse_reference,
    _multi_photon_click,
    _multi_photon_click_reference,
    forwarding_probability,
    multi_photon_click_probability,
    pns_clicks,
    pns_clicks_reference,
)

SOURCE = SourceModel(1e8, (0.8, 0.1, 0.0), (0.5, 0.25, 0.25), 0.5, 0.01, 0.0)
DETECTORS = DetectorModel((0.5, 0.5, 0.5, 0.5), 0.0, 0.0, 0.0, 0.0, 0.5)
SEQUENCER = SourceSequencer(derive_key(5, "pns.pattern"), SOURCE.probabilities, 0.5)


def _multi_photon_click_by_sum(mu: float, detect: float) -> float:
    """sum over n >= 2 of Poisson(n; mu) (1 - (1 - detect)^(n - 1)), term by term."""
    total, pmf = 0.0, math.exp(-mu) * mu
    for n in range(2, 200):
        pmf *= mu / n
        total += pmf * (1.0 - (1.0 - detect) ** (n - 1))
    return total


def test_multi_photon_click_probability_matches_hand_values_and_the_series() -> None:
    # detect = 1: P(n >= 2) = 1 - e^-0.8 (1 + 0.8) = 1 - 1.8 * 0.449329 = 0.191208.
    assert multi_photon_click_probability(0.8, 1.0) == pytest.approx(0.191208, abs=1e-6)
    # detect = 0.5: 0.550671 - 0.449329 * (e^0.4 - 1) / 0.5 = 0.108689.
    assert multi_photon_click_probability(0.8, 0.5) == pytest.approx(0.108689, abs=1e-6)
    for mu in (1e-4, 0.1, 0.8, 3.0, 20.0):
        for detect in (0.0, 1e-3, 0.3, 0.5, 0.999, 1.0):
            assert multi_photon_click_probability(mu, detect) == pytest.approx(
                _multi_photon_click_by_sum(mu, detect), rel=1e-9, abs=1e-15
            )
    assert multi_photon_click_probability(0.0, 0.5) == 0.0  # vacuum: nothing to forward


def test_forwarding_probability_matches_the_real_count_rate() -> None:
    # real: 0.5 (1 - e^-0.0004) + 0.25 (1 - e^-0.00005) = 2.12460e-4;
    # faked: 0.5 * 0.108689 + 0.25 * 0.0023786 = 0.0549391; F = 0.0038672.
    f = forwarding_probability((0.8, 0.1, 0.0), (0.5, 0.25, 0.25), 0.5, 1e-3)
    assert f == pytest.approx(0.0038672, rel=1e-4)
    # A channel better than every multi-photon pulse forwarded cannot be faked: F caps at 1.
    assert forwarding_probability((0.8, 0.1, 0.0), (0.5, 0.25, 0.25), 0.5, 1.0) == 1.0
    assert forwarding_probability((0.8, 0.1, 0.0), (0.5, 0.25, 0.25), 0.5, 0.0) == 0.0


@settings(max_examples=120, deadline=None)
@given(
    key=st.integers(min_value=0, max_value=2**64 - 1),
    n=st.integers(min_value=0, max_value=70),
    pattern_seed=st.integers(min_value=0, max_value=2**32),
    forward=st.sampled_from([0.0, 1e-3, 0.3, 1.0]),
    efficiency=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    receiver_x=st.floats(0.0, 1.0),
    polarisation_error=st.floats(0.0, 0.5),
    fluctuation=st.sampled_from([0.0, 0.05, 0.3]),
    jitter=st.sampled_from([0.0, 80.0]),
    delay_rate=st.floats(-3e-5, 3e-5),
)
def test_pns_clicks_match_reference(
    key: int,
    n: int,
    pattern_seed: int,
    forward: float,
    efficiency: list[float],
    receiver_x: float,
    polarisation_error: float,
    fluctuation: float,
    jitter: float,
    delay_rate: float,
) -> None:
    generator = np.random.default_rng(pattern_seed)
    offsets = np.sort(generator.choice(10_000, size=n, replace=False)).astype(np.int64)
    basis = generator.integers(0, 2, n).astype(np.uint8)
    bit = generator.integers(0, 2, n).astype(np.uint8)
    intensity = generator.integers(0, 3, n).astype(np.uint8)
    mu = np.array([4.0, 0.3, 0.0])  # bright enough to reach many photons and detectors
    eff = np.array(efficiency)
    p_max = forward * multi_photon_click_probability(4.0 * (1 + 5 * fluctuation), eff.max())
    args = (offsets, basis, bit, intensity, mu, p_max, forward, eff, receiver_x,
            polarisation_error, fluctuation, 1000.0, 3.3e9, delay_rate, -17.5,
            jitter)  # fmt: skip
    got = pns_clicks(np.uint64(key), *args)
    want = pns_clicks_reference(key, *args)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    _, detectors, groups = got
    assert np.all(np.diff(groups) >= 0) and np.all(detectors < 4)
    assert groups.size == 0 or groups.max() < n


def _per_intensity(events) -> tuple[np.ndarray, np.ndarray]:
    """(detections, sifted-error rate) per intensity of the signal events of a frame."""
    signal = events.truth_pulse_index >= 0
    pattern = SEQUENCER.pattern(events.truth_pulse_index[signal])
    channel = events.channel[signal].astype(int) - 1
    matching = (channel // 2) == pattern.basis
    error = matching & ((channel & 1) != pattern.bit)
    counts = np.array([(pattern.intensity == k).sum() for k in range(3)])
    qber = np.array(
        [error[pattern.intensity == k].sum() / max(matching[pattern.intensity == k].sum(), 1)
         for k in range(3)]
    )  # fmt: skip
    return counts, qber


def _frame(attack: AttackModel, transmittance: float, n_pulses: int, seed: int):
    return generate_frame_detections(
        SEQUENCER.pattern, 0, n_pulses, SOURCE, DETECTORS, transmittance, 0.0, 0, 0.0, 0.0,
        0.0, seed, attack,
    )  # fmt: skip


def test_eve_matches_the_count_rate_and_the_decoys_betray_her() -> None:
    honest, _ = _per_intensity(_frame(AttackModel(), 1e-3, 100_000_000, 3))
    attacked_events = _frame(AttackModel(photon_number_splitting=True), 1e-3, 100_000_000, 3)
    attacked, qber = _per_intensity(attacked_events)
    # Total counts agree (Poisson, ~21 000 each: 3 sigma is 2 %).
    assert attacked.sum() == pytest.approx(honest.sum(), rel=0.03)
    # Expected per intensity: pulses * F * S(mu, 0.5) = 1e8 * p * 0.0038672 * S.
    expected = 1e8 * np.array([0.5 * 0.108689, 0.25 * 0.0023786, 0.0]) * 0.0038672
    assert attacked[0] == pytest.approx(expected[0], rel=0.03)
    assert attacked[1] == pytest.approx(expected[1], rel=0.25)  # ~230 counts
    assert attacked[2] == 0  # vacuum carries no photon to split
    # The decoy yield per pulse falls from ~1/8 of the signal's to ~1/46 of it.
    honest_ratio = honest[1] / honest[0]
    attacked_ratio = attacked[1] / attacked[0]
    assert honest_ratio == pytest.approx(0.0625, rel=0.15)
    assert attacked_ratio < honest_ratio / 3
    # Eve adds no errors: the signal QBER stays at the source's 1 % (multi-photon squashing
    # adds a little: two forwarded photons in the same basis split to both bits).
    assert qber[0] < 0.02


def test_with_a_perfect_channel_every_multi_photon_pulse_is_forwarded() -> None:
    events = _frame(AttackModel(photon_number_splitting=True), 1.0, 2_000_000, 9)
    counts, _ = _per_intensity(events)
    pulses = 2_000_000 * np.array(SOURCE.probabilities)
    rate = counts / pulses
    assert rate[0] == pytest.approx(multi_photon_click_probability(0.8, 0.5), rel=0.02)
    assert rate[1] == pytest.approx(multi_photon_click_probability(0.1, 0.5), rel=0.1)


def test_attack_model_is_validated() -> None:
    with pytest.raises(InputError, match="intercept_resend_fraction must then be 0"):
        AttackModel(intercept_resend_fraction=0.5, photon_number_splitting=True)
    with pytest.raises(InputError, match="photon_number_splitting must be a bool"):
        AttackModel(photon_number_splitting=1)
    with pytest.raises(InputError, match="detection_probability"):
        multi_photon_click_probability(0.8, 1.5)
    with pytest.raises(InputError, match="transmittance"):
        forwarding_probability((0.8,), (1.0,), 0.5, 2.0)


@settings(max_examples=200, deadline=None)
@given(mu=st.floats(0.0, 100.0), miss=st.floats(0.0, 1.0))
def test_multi_photon_click_kernel_matches_reference(mu: float, miss: float) -> None:
    assert _multi_photon_click(mu, miss) == _multi_photon_click_reference(mu, miss)


@settings(max_examples=200, deadline=None)
@given(trials=st.integers(-1, 300), p=st.floats(0.0, 1.0), u=st.floats(0.0, 1.0, exclude_max=True))
def test_binomial_inverse_kernel_matches_reference(trials: int, p: float, u: float) -> None:
    got = _binomial_inverse(trials, p, u)
    assert got == _binomial_inverse_reference(trials, p, u)
    assert 0 <= got <= max(trials, 0)


def test_binomial_inverse_has_the_binomial_distribution() -> None:
    u = np.random.default_rng(1).random(100_000)
    draws = np.array([_binomial_inverse(10, 0.3, float(x)) for x in u])
    assert draws.mean() == pytest.approx(3.0, abs=0.02)  # n p; 3 sigma = 0.0043 * 3
    assert draws.var() == pytest.approx(2.1, rel=0.03)  # n p (1 - p)
