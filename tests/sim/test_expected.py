"""Tests of the expected detection statistics against hand values, limits and the event-level
channel they summarise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firmware_shims.source_sequencer import PulsePattern, SourceSequencer
from satqkd_core.ephemeris import Geometry
from satqkd_core.errors import InputError
from satqkd_core.rng import derive_key
from sim_backends.channel import (
    AttackModel,
    DetectorModel,
    SourceModel,
    generate_frame_detections,
)
from sim_backends.expected import dead_time_blocked_slots, expected_rates, live_fraction
from sim_backends.link import Atmosphere, Background, ReceiverOptics, TransmitterOptics, link_budget

SOURCE = SourceModel(1e8, (0.8, 0.1, 0.0), (0.5, 0.25, 0.25), 0.5, 0.01, 0.0)
PERFECT = DetectorModel((1.0, 1.0, 1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.5)
XINGLONG = DetectorModel((0.5, 0.5, 0.5, 0.5), 25.0, 150.0, 22_000.0, 0.0, 0.5)
SEQUENCER = SourceSequencer(derive_key(2, "expected.pattern"), SOURCE.probabilities, 0.5)


def test_blocked_slots_follow_the_dead_time_in_pulse_periods() -> None:
    assert dead_time_blocked_slots(22_000.0, 10_000.0) == 2  # slots at 10, 20 ns < 22 ns
    assert dead_time_blocked_slots(20_000.0, 10_000.0) == 1  # the slot at 20 ns is live again
    assert dead_time_blocked_slots(5_000.0, 10_000.0) == 0
    assert dead_time_blocked_slots(0.0, 10_000.0) == 0
    assert live_fraction(np.array([0.5, 0.0]), 2).tolist() == [0.5, 1.0]  # 1 / (1 + 0.5 * 2)


def test_perfect_detectors_give_the_poisson_gains() -> None:
    eta = np.array([1e-3, 0.2, 0.0])
    rates = expected_rates(SOURCE, PERFECT, eta, np.zeros(3), 1000.0, 0.0)
    mu = np.array(SOURCE.intensities)
    np.testing.assert_allclose(rates.gain, -np.expm1(-eta[:, None] * mu), rtol=1e-12)
    np.testing.assert_array_equal(rates.qber, np.zeros((3, 3)))  # e_d = 0, no noise
    assert rates.gain[2].tolist() == [0.0, 0.0, 0.0]  # no light, no noise: no clicks
    np.testing.assert_array_equal(rates.live_fraction, np.ones(3))
    # Sifting keeps half (bases chosen 50/50 at both ends).
    np.testing.assert_allclose(rates.sifted_bits_per_s, 0.5 * rates.detections_per_s)


def test_gains_and_qber_match_a_hand_computation() -> None:
    rates = expected_rates(SOURCE, XINGLONG, np.array([1e-3]), np.array([0.0]), 1000.0)
    # Y0 = 1 - exp(-4 * 25 Hz * 1 ns) = 1e-7; eta = 1e-3 * 0.5; the +-500 ps window keeps
    # erf(1000 / (2 sqrt(2) 150)) = 0.999142 of the jittered signal clicks.
    y0 = -math.expm1(-100.0 * 1e-9)
    captured = math.erf(1000.0 / (2.0 * math.sqrt(2.0) * 150.0))
    assert captured == pytest.approx(0.999142, abs=1e-6)
    for k, mu in enumerate((0.8, 0.1, 0.0)):
        s = -math.expm1(-5e-4 * mu) * captured
        gain = 1.0 - (1.0 - y0) * (1.0 - s)
        assert rates.gain[0, k] == pytest.approx(gain, rel=1e-9)
        qber = (0.5 * y0 + 0.01 * s - 0.5 * y0 * s) / gain
        assert rates.qber[0, k] == pytest.approx(qber, rel=1e-9)
    assert rates.qber[0, 2] == pytest.approx(0.5)  # vacuum pulses only see noise
    # (1 - e^-0.0004) * 0.999142 + 1e-7 = 3.99920e-4 * 0.999142 + 1e-7 = 3.99677e-4
    assert rates.gain[0, 0] == pytest.approx(3.99677e-4, rel=1e-5)


def test_intensity_fluctuation_lowers_the_gain_as_the_simulation_does() -> None:
    # eta mu = 0.4, sigma = 0.3: 1 - exp(-0.4 + 0.12^2 / 2) = 0.324836 instead of 0.329680.
    noisy = SourceModel(1e8, (0.8, 0.1, 0.0), (0.5, 0.25, 0.25), 0.5, 0.0, 0.3)
    detectors = DetectorModel((0.5,) * 4, 0.0, 0.0, 0.0, 0.0, 0.5)
    rates = expected_rates(noisy, detectors, np.array([1.0]), np.array([0.0]), 1000.0)
    assert rates.gain[0, 0] == pytest.approx(0.324836, abs=1e-6)
    events = generate_frame_detections(
        SEQUENCER.pattern, 0, 1_000_000, noisy, detectors, 1.0, 0.0, 0, 0.0, 0.0, 0.0, 4
    )
    pattern = SEQUENCER.pattern(np.arange(1_000_000, dtype=np.int64))
    clicked = np.zeros(1_000_000, dtype=bool)
    clicked[events.truth_pulse_index] = True
    signal = pattern.intensity == 0
    measured = clicked[signal].mean()
    # ~500 000 signal pulses: 3 sigma = 0.002, while the fluctuation moves the gain by 0.0048.
    assert measured == pytest.approx(0.324836, abs=0.002)


def _one_detector_pattern(indices: np.ndarray) -> PulsePattern:
    zeros = np.zeros(indices.shape[0], dtype=np.uint8)
    return PulsePattern(zeros, zeros, zeros)


def test_dead_time_saturation_follows_the_blocked_slot_curve() -> None:
    # Every photon goes to detector 0 (X basis, bit 0, receiver always in X): p = 0.3 per
    # pulse; 22 ns dead time at 10 ns pulses blocks 2 slots, so 0.3 / (1 + 0.6) per pulse,
    # where a continuous dead time 1 / (1 + R tau) would give 0.3 / 1.66.
    source = SourceModel(1e8, (0.8, 0.1, 0.0), (1.0, 0.0, 0.0), 1.0, 0.0, 0.0)
    detectors = DetectorModel((1.0, 0.0, 0.0, 0.0), 0.0, 0.0, 22_000.0, 0.0, 1.0)
    transmittance = -math.log1p(-0.3) / 0.8
    events = generate_frame_detections(
        _one_detector_pattern, 0, 1_000_000, source, detectors, transmittance, 0.0, 0, 0.0,
        0.0, 0.0, 8,
    )  # fmt: skip
    measured = events.timestamp_ps.size / 1_000_000
    expected = 0.3 * live_fraction(np.array([0.3]), dead_time_blocked_slots(22_000.0, 10_000.0))
    assert expected[0] == pytest.approx(0.1875)
    assert measured == pytest.approx(0.1875, rel=0.01)  # 3 sigma ~ 0.5 %
    assert abs(measured - 0.3 / 1.66) > 0.005  # the continuous curve would be off


def test_expected_counts_match_the_simulated_frame_at_a_saturating_rate() -> None:
    source = SourceModel(1e8, (0.8, 0.1, 0.0), (0.5, 0.25, 0.25), 0.5, 0.0, 0.0)
    detectors = DetectorModel((0.5,) * 4, 0.0, 0.0, 22_000.0, 0.0, 0.5)
    rates = expected_rates(source, detectors, np.array([1.0]), np.array([0.0]), 1000.0)
    assert rates.live_fraction[0] < 0.93  # this regime saturates the detectors
    events = generate_frame_detections(
        SEQUENCER.pattern, 0, 1_000_000, source, detectors, 1.0, 0.0, 0, 0.0, 0.0, 0.0, 6
    )
    pattern = SEQUENCER.pattern(events.truth_pulse_index)
    counts = np.array([(pattern.intensity == k).sum() for k in range(3)])
    expected = rates.counts_per_s[0] * 1_000_000 / 1e8
    assert counts[0] == pytest.approx(expected[0], rel=0.02)
    assert counts[1] == pytest.approx(expected[1], rel=0.05)


def test_rates_fall_and_qber_rises_from_zenith_to_horizon() -> None:
    n = 2
    geometry = Geometry(
        unix_s=np.arange(n, dtype=float),
        range_m=np.array([500e3, 1800e3]),
        range_rate_m_s=np.zeros(n),
        elevation_deg=np.array([90.0, 10.0]),
        azimuth_deg=np.zeros(n),
        sat_speed_m_s=np.full(n, 7600.0),
        point_ahead_urad=np.full(n, 50.0),
    )
    budget = link_budget(
        geometry,
        TransmitterOptics(850.0, 0.1, 20.0, 0.5),
        ReceiverOptics(1.0, 0.4, 100.0, 0.2),
        Atmosphere(zenith_loss_db=0.7),
        Background("city"),
        np.zeros(n),
        None,
    )
    rates = expected_rates(
        SOURCE, XINGLONG, budget.transmittance, budget.background_counts_per_s, 1000.0
    )
    assert rates.detections_per_s[0] > 10 * rates.detections_per_s[1]
    assert rates.overall_qber[1] > rates.overall_qber[0] > 0.01


def test_inputs_are_validated() -> None:
    with pytest.raises(InputError, match="transmittance"):
        expected_rates(SOURCE, XINGLONG, np.array([1.5]), np.array([0.0]), 1000.0)
    with pytest.raises(InputError, match="background_counts_per_s"):
        expected_rates(SOURCE, XINGLONG, np.array([0.1]), np.array([0.0, 1.0]), 1000.0)
    with pytest.raises(InputError, match="sync_window_ps"):
        expected_rates(SOURCE, XINGLONG, np.array([0.1]), np.array([0.0]), 20_000.0)
    with pytest.raises(InputError, match="polarisation_error"):
        expected_rates(SOURCE, XINGLONG, np.array([0.1]), np.array([0.0]), 1000.0, 0.7)
    with pytest.raises(InputError, match="source"):
        expected_rates("source", XINGLONG, np.array([0.1]), np.array([0.0]), 1000.0)
    with pytest.raises(InputError, match="click_probability_per_slot"):
        live_fraction(np.array([1.5]), 2)
    with pytest.raises(InputError, match="dead_time_ps"):
        dead_time_blocked_slots(-1.0, 10_000.0)


def test_photon_number_splitting_counts_match_the_simulated_frame() -> None:
    # Eve's lossless channel keeps the signal count but starves the decoy (sim_backends.pns)
    detectors = DetectorModel((0.5,) * 4, 0.0, 0.0, 0.0, 0.0, 0.5)
    attack = AttackModel(photon_number_splitting=True)
    eta = 0.01
    honest = expected_rates(SOURCE, detectors, np.array([eta]), np.array([0.0]), 1000.0)
    rates = expected_rates(
        SOURCE, detectors, np.array([eta]), np.array([0.0]), 1000.0, None, attack
    )
    events = generate_frame_detections(
        SEQUENCER.pattern, 0, 2_000_000, SOURCE, detectors, eta, 0.0, 0, 0.0, 0.0, 0.0, 5, attack
    )
    pattern = SEQUENCER.pattern(events.truth_pulse_index)
    counts = np.array([(pattern.intensity == k).sum() for k in range(3)])
    expected = rates.counts_per_s[0] * 2_000_000 / 1e8
    assert counts[0] == pytest.approx(expected[0], rel=0.05)
    assert counts[1] == pytest.approx(expected[1], abs=5 * math.sqrt(expected[1]) + 1)
    assert rates.counts_per_s[0, 1] < 0.3 * honest.counts_per_s[0, 1]


def test_intercept_resend_sets_a_quarter_of_the_sifted_bits_wrong() -> None:
    attack = AttackModel(intercept_resend_fraction=1.0)
    rates = expected_rates(SOURCE, PERFECT, np.array([1e-3]), np.array([0.0]), 1000.0, None, attack)
    honest = expected_rates(SOURCE, PERFECT, np.array([1e-3]), np.array([0.0]), 1000.0)
    # Eve's basis is wrong half the time: 1/4 + e/2 with the source's e = 1 %
    assert rates.overall_qber[0] == pytest.approx(0.255, abs=1e-6)
    assert rates.detections_per_s[0] == pytest.approx(honest.detections_per_s[0])
