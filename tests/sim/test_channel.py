"""Tests of event-level detection generation (sim_backends.channel)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_shims.source_sequencer import PulsePattern, SourceSequencer
from satqkd_core.ephemeris import SPEED_OF_LIGHT_M_S, Station, topocentric
from satqkd_core.errors import InputError
from satqkd_core.rng import derive_key
from sim_backends.channel import (
    AttackModel,
    DetectorModel,
    SourceModel,
    apply_dead_time,
    apply_dead_time_reference,
    candidate_offsets,
    candidate_offsets_reference,
    generate_frame_detections,
    signal_clicks,
    signal_clicks_reference,
    squash_clicks,
    squash_clicks_reference,
)
from sim_backends.link import Atmosphere, Background, ReceiverOptics, TransmitterOptics, link_budget
from sim_backends.orbit import find_passes, load_sample_tle
from sim_backends.transmitter_pointing import TransmitterPointing, pointing_residual_urad

SOURCE = SourceModel(
    repetition_rate_hz=1e8,
    intensities=(0.8, 0.1, 0.0),
    probabilities=(0.5, 0.25, 0.25),
    basis_x_probability=0.5,
    polarisation_error=0.0,
    intensity_fluctuation=0.0,
)
IDEAL = DetectorModel(
    efficiency=(0.5, 0.5, 0.5, 0.5),
    dark_count_rate_hz=0.0,
    timing_jitter_ps=0.0,
    dead_time_ps=0.0,
    afterpulse_probability=0.0,
    basis_x_probability=0.5,
)
SEQUENCER = SourceSequencer(derive_key(11, "test.pattern"), SOURCE.probabilities, 0.5)


def _frame(
    n_pulses: int,
    transmittance: float,
    *,
    source: SourceModel = SOURCE,
    detectors: DetectorModel = IDEAL,
    background: float = 0.0,
    first_pulse: int = 0,
    emission_start_ps: int = 0,
    delay_ps: float = 0.0,
    delay_rate: float = 0.0,
    clock_offset_ps: float = 0.0,
    seed: int = 1,
    attack: AttackModel = AttackModel(),  # noqa: B008
):
    return generate_frame_detections(
        SEQUENCER.pattern, first_pulse, n_pulses, source, detectors, transmittance, background,
        emission_start_ps, delay_ps, delay_rate, clock_offset_ps, seed, attack,
    )  # fmt: skip


def _signal_statistics(events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matching-basis mask, error mask, sent pattern) of the signal events."""
    signal = events.truth_pulse_index >= 0
    pattern = SEQUENCER.pattern(events.truth_pulse_index[signal])
    channel = events.channel[signal].astype(int) - 1
    matching = (channel // 2) == pattern.basis
    errors = matching & ((channel % 2) != pattern.bit)
    return matching, errors, pattern.intensity


# ---------------------------------------------------------------- kernels vs references


@settings(max_examples=150, deadline=None)
@given(
    key=st.integers(min_value=0, max_value=2**64 - 1),
    n_pulses=st.integers(min_value=0, max_value=3000),
    p_max=st.one_of(st.sampled_from([0.0, 1.0, 1e-9, 0.5]), st.floats(0.0, 1.0)),
)
def test_candidate_offsets_match_reference(key: int, n_pulses: int, p_max: float) -> None:
    got = candidate_offsets(np.uint64(key), np.int64(n_pulses), p_max)
    np.testing.assert_array_equal(got, candidate_offsets_reference(key, n_pulses, p_max))
    assert np.all(np.diff(got) > 0) and (got.size == 0 or (got[0] >= 0 and got[-1] < n_pulses))


@settings(max_examples=120, deadline=None)
@given(
    key=st.integers(min_value=0, max_value=2**64 - 1),
    n=st.integers(min_value=0, max_value=70),
    pattern_seed=st.integers(min_value=0, max_value=2**32),
    transmittance=st.floats(0.0, 1.0),
    efficiency=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    receiver_x=st.floats(0.0, 1.0),
    polarisation_error=st.floats(0.0, 0.5),
    fluctuation=st.sampled_from([0.0, 0.05, 0.3]),
    attack=st.sampled_from([0.0, 0.5, 1.0]),
    jitter=st.sampled_from([0.0, 80.0]),
    delay_rate=st.floats(-3e-5, 3e-5),
)
def test_signal_clicks_match_reference(
    key: int,
    n: int,
    pattern_seed: int,
    transmittance: float,
    efficiency: list[float],
    receiver_x: float,
    polarisation_error: float,
    fluctuation: float,
    attack: float,
    jitter: float,
    delay_rate: float,
) -> None:
    generator = np.random.default_rng(pattern_seed)
    offsets = np.sort(generator.choice(10_000, size=n, replace=False)).astype(np.int64)
    basis = generator.integers(0, 2, n).astype(np.uint8)
    bit = generator.integers(0, 2, n).astype(np.uint8)
    intensity = generator.integers(0, 3, n).astype(np.uint8)
    mu = np.array([2.5, 0.3, 0.0])
    eff = np.array(efficiency)
    p_max = -math.expm1(-2.5 * (1 + 5 * fluctuation) * transmittance * eff.max())
    args = (offsets, basis, bit, intensity, mu, p_max, transmittance, eff, receiver_x,
            polarisation_error, fluctuation, attack, 1000.0, 3.3e9, delay_rate, -17.5,
            jitter)  # fmt: skip
    got = signal_clicks(np.uint64(key), *args)
    want = signal_clicks_reference(key, *args)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=150, deadline=None)
@given(
    key=st.integers(min_value=0, max_value=2**64 - 1),
    gaps=st.lists(st.floats(0.0, 5000.0), max_size=70),
    detector_seed=st.integers(0, 2**32),
    dead_time=st.sampled_from([0.0, 100.0, 2000.0]),
    afterpulse=st.sampled_from([0.0, 0.3, 0.9]),
    frame_end=st.floats(0.0, 400_000.0),
)
def test_apply_dead_time_matches_reference(
    key: int,
    gaps: list[float],
    detector_seed: int,
    dead_time: float,
    afterpulse: float,
    frame_end: float,
) -> None:
    times = np.cumsum(np.array(gaps, dtype=np.float64))
    detectors = np.random.default_rng(detector_seed).integers(0, 4, times.shape[0]).astype(np.uint8)
    got = apply_dead_time(np.uint64(key), times, detectors, dead_time, afterpulse, 700.0, frame_end)
    want = apply_dead_time_reference(key, times, detectors, dead_time, afterpulse, 700.0, frame_end)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=150, deadline=None)
@given(
    key=st.integers(min_value=0, max_value=2**64 - 1),
    sizes=st.lists(st.integers(1, 4), max_size=40),
    seed=st.integers(0, 2**32),
)
def test_squash_clicks_match_reference(key: int, sizes: list[int], seed: int) -> None:
    generator = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(sizes), dtype=np.int64) * 3, sizes)
    detectors = np.concatenate(
        [generator.choice(4, size=s, replace=False) for s in sizes] or [np.zeros(0, int)]
    ).astype(np.uint8)
    live = generator.random(groups.shape[0]) < 0.8
    got = squash_clicks(np.uint64(key), detectors, groups, live)
    np.testing.assert_array_equal(got, squash_clicks_reference(key, detectors, groups, live))
    assert np.all(live[got])
    assert np.unique(groups[got]).shape[0] == got.shape[0]


# ---------------------------------------------------------------- physics


def test_counts_per_intensity_match_poisson_expectation() -> None:
    n_pulses, transmittance = 4_000_000, 0.02
    events = _frame(n_pulses, transmittance)
    sent = np.bincount(SEQUENCER.pattern(np.arange(n_pulses)).intensity, minlength=3)
    _, _, intensity = _signal_statistics(events)
    detected = np.bincount(intensity, minlength=3)
    for k, mu in enumerate(SOURCE.intensities):
        expected = sent[k] * -math.expm1(-mu * transmittance * 0.5)
        assert abs(detected[k] - expected) <= 5.0 * math.sqrt(expected) + 1e-9, (k, detected)
    assert detected[2] == 0  # vacuum pulses never click without noise
    assert np.all(events.truth_pulse_index >= 0)


def test_intensity_fluctuation_keeps_the_mean_yield() -> None:
    n_pulses, transmittance = 4_000_000, 0.02
    noisy = dataclasses.replace(SOURCE, intensity_fluctuation=0.2)
    events = _frame(n_pulses, transmittance, source=noisy, seed=2)
    sent = np.bincount(SEQUENCER.pattern(np.arange(n_pulses)).intensity, minlength=3)
    detected = np.bincount(_signal_statistics(events)[2], minlength=3)
    # E[1 - exp(-x (1 + s z))] differs from 1 - exp(-x) by ~x^2 s^2 / 2: 1e-6 relative here.
    for k in (0, 1):
        expected = sent[k] * -math.expm1(-SOURCE.intensities[k] * transmittance * 0.5)
        assert abs(detected[k] - expected) <= 5.0 * math.sqrt(expected)


@pytest.mark.parametrize(
    ("polarisation_error", "attack", "expected_qber"),
    [(0.0, 0.0, 0.0), (0.03, 0.0, 0.03), (0.0, 1.0, 0.25), (0.0, 0.5, 0.125), (0.03, 1.0, 0.265)],
)
def test_qber_from_polarisation_error_and_intercept_resend(
    polarisation_error: float, attack: float, expected_qber: float
) -> None:
    source = dataclasses.replace(SOURCE, polarisation_error=polarisation_error)
    events = _frame(
        3_000_000, 0.05, source=source, attack=AttackModel(intercept_resend_fraction=attack)
    )
    matching, errors, _ = _signal_statistics(events)
    n = int(matching.sum())
    qber = errors.sum() / n
    # Under full attack Eve's basis matches half the time (Bob then errs with e) and Bob's bit
    # is random otherwise: QBER = e / 2 + 1 / 4, 0.265 for e = 0.03.
    sigma = math.sqrt(max(expected_qber * (1 - expected_qber), 1e-4) / n)
    assert abs(qber - expected_qber) < 5 * sigma + 1e-3
    # Mismatched bases give random bits whatever the attack.
    assert n == pytest.approx(0.5 * matching.size, rel=0.03)


def test_dark_and_background_counts_are_poisson_and_uniform() -> None:
    detectors = dataclasses.replace(
        IDEAL, efficiency=(0.2, 0.4, 0.6, 0.8), dark_count_rate_hz=5000.0
    )
    events = _frame(
        100_000_000, 0.0, detectors=detectors, background=10_000.0, emission_start_ps=10**12,
        delay_ps=2e9,
    )  # fmt: skip
    assert np.all(events.truth_pulse_index == -1)
    counts = np.bincount(events.channel, minlength=5)[1:]
    expected = 5000.0 + 10_000.0 * np.array([0.2, 0.4, 0.6, 0.8])  # one 1 s frame
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    start, span = 10**12 + 2e9, 1e12
    assert events.timestamp_ps.min() >= start and events.timestamp_ps.max() <= start + span
    histogram = np.histogram(events.timestamp_ps, bins=20, range=(start, start + span))[0]
    mean = histogram.mean()
    assert np.sum((histogram - mean) ** 2 / mean) < 45.3  # chi-square, 19 dof, p ~ 1e-3


def test_arrival_times_carry_delay_doppler_offset_and_jitter() -> None:
    detectors = dataclasses.replace(IDEAL, timing_jitter_ps=50.0)
    first, start = 5_000_000_000, 123_456_789_000_000
    events = _frame(
        10_000_000, 0.05, detectors=detectors, first_pulse=first, emission_start_ps=start,
        delay_ps=2.1e9, delay_rate=-2.3e-5, clock_offset_ps=12_345.0,
    )  # fmt: skip
    offset = events.truth_pulse_index - first
    elapsed = offset * 10_000.0
    predicted = start + elapsed * (1.0 - 2.3e-5) + 2.1e9 + 12_345.0
    residual = events.timestamp_ps - predicted
    assert residual.size > 20_000
    assert abs(residual.mean()) < 5 * 50.0 / math.sqrt(residual.size) + 0.5  # rounding to 1 ps
    assert residual.std() == pytest.approx(50.0, rel=0.03)
    assert np.all(np.diff(events.timestamp_ps) >= 0)
    # Over the 0.1 s frame the Doppler term shifts arrivals by 23 ns: far beyond the jitter.
    assert elapsed.max() * 2.3e-5 > 20_000


def test_dead_time_is_non_paralysable_per_detector() -> None:
    dead_ps = 1_000_000.0
    detectors = dataclasses.replace(IDEAL, dark_count_rate_hz=200_000.0, dead_time_ps=dead_ps)
    events = _frame(50_000_000, 0.0, detectors=detectors)
    for channel in range(1, 5):
        times = events.timestamp_ps[events.channel == channel]
        assert np.diff(times).min() >= dead_ps - 1  # rounding to whole picoseconds
        # Non-paralysable counter: observed = true / (1 + true * tau) = 166,667 /s over 0.5 s.
        assert times.size == pytest.approx(0.5 * 200_000 / 1.2, rel=0.015)


def test_afterpulses_follow_live_clicks() -> None:
    detectors = dataclasses.replace(
        IDEAL, dark_count_rate_hz=2000.0, dead_time_ps=50_000.0, afterpulse_probability=0.2
    )
    events = _frame(100_000_000, 0.0, detectors=detectors, seed=5)
    without = _frame(
        100_000_000, 0.0, detectors=dataclasses.replace(detectors, afterpulse_probability=0.0),
        seed=5,
    )  # fmt: skip
    # Each click (dark or afterpulse) makes another with p = 0.2: N = N_dark / (1 - p).
    expected = without.channel.size / 0.8
    assert events.channel.size == pytest.approx(expected, abs=5 * math.sqrt(expected * 0.25))
    for channel in range(1, 5):
        gaps = np.diff(events.timestamp_ps[events.channel == channel])
        assert gaps.min() >= 50_000 - 1
        # Afterpulses cluster within a few time constants (100 ns) after the dead time.
        assert np.mean(gaps < 50_000 + 500_000) > 0.15


def test_multi_photon_clicks_are_squashed_to_one_event_per_pulse() -> None:
    bright = dataclasses.replace(SOURCE, intensities=(5.0, 1.0, 0.0))
    events = _frame(200_000, 1.0, source=bright)
    signal = events.truth_pulse_index[events.truth_pulse_index >= 0]
    assert np.unique(signal).size == signal.size
    sent = np.bincount(SEQUENCER.pattern(np.arange(200_000)).intensity, minlength=3)
    matching, errors, intensity = _signal_statistics(events)
    detected = np.bincount(intensity, minlength=3)
    for k, mu in enumerate((5.0, 1.0)):
        expected = sent[k] * -math.expm1(-mu * 0.5)
        assert abs(detected[k] - expected) < 5 * math.sqrt(expected)
    # Without polarisation error the matching-basis detector is the only one of its arm that
    # can click, so squashing never produces an error in the matching basis.
    assert errors.sum() == 0 and matching.sum() > 0


def test_frames_are_deterministic_and_seed_dependent() -> None:
    detectors = dataclasses.replace(
        IDEAL, dark_count_rate_hz=1000.0, timing_jitter_ps=100.0, dead_time_ps=20_000.0,
        afterpulse_probability=0.01,
    )  # fmt: skip
    first = _frame(10_000_000, 0.01, detectors=detectors, background=500.0, seed=9)
    again = _frame(10_000_000, 0.01, detectors=detectors, background=500.0, seed=9)
    other = _frame(10_000_000, 0.01, detectors=detectors, background=500.0, seed=10)
    for name in ("channel", "timestamp_ps", "truth_pulse_index"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.truth_pulse_index, other.truth_pulse_index)
    assert first.channel.dtype == np.uint8 and first.timestamp_ps.dtype == np.int64
    assert first.truth_pulse_index.dtype == np.int64
    assert set(np.unique(first.channel).tolist()) == {1, 2, 3, 4}
    empty = _frame(0, 0.5)
    assert empty.channel.size == 0 and empty.timestamp_ps.size == 0


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(InputError, match="transmittance"):
        _frame(10, 1.5)
    with pytest.raises(InputError, match="n_pulses"):
        _frame(-1, 0.5)
    with pytest.raises(InputError, match="delay_rate"):
        _frame(10, 0.5, delay_rate=0.1)
    with pytest.raises(InputError, match="efficiency"):
        dataclasses.replace(IDEAL, efficiency=(0.5, 0.5, 0.5))
    with pytest.raises(InputError, match="probabilities"):
        dataclasses.replace(SOURCE, probabilities=(0.5, 0.5, 0.5))
    with pytest.raises(InputError, match="intercept_resend_fraction"):
        AttackModel(intercept_resend_fraction=1.5)

    def short_pattern(index: np.ndarray) -> PulsePattern:
        zeros = np.zeros(max(index.size - 1, 0), np.uint8)
        return PulsePattern(zeros, zeros, zeros)

    with pytest.raises(InputError, match="pattern returned"):
        generate_frame_detections(
            short_pattern, 0, 1000, SOURCE, IDEAL, 0.5, 0.0, 0, 0.0, 0.0, 0.0, 1
        )
    with pytest.raises(InputError, match="pattern must be callable"):
        generate_frame_detections(None, 0, 10, SOURCE, IDEAL, 0.5, 0.0, 0, 0.0, 0.0, 0.0, 1)  # type: ignore[arg-type]


# ---------------------------------------------------------------- a whole pass


def test_jinan1_like_night_pass_over_xinglong_gives_a_usable_sifted_key() -> None:
    """Event-level 100 MHz pass (> 40 deg): sifted key ~1e5-1e6 bits, QBER a few percent."""
    station = Station(40.3958, 117.5775, 890.0)
    tle = load_sample_tle("jinan1_like")
    start = 1734220800.0  # TLE epoch, 2024-12-15T00:00:00Z
    window = next(
        p
        for p in find_passes(*tle, station, start, start + 3 * 86400, 15.0)
        if p.night and p.max_elevation_deg > 40.0
    )
    unix_s = np.arange(window.aos_unix_s, window.los_unix_s, 1.0)
    geometry = topocentric(*tle, station, unix_s)
    pointing = TransmitterPointing(1.5, 50.0)
    budget = link_budget(
        geometry,
        TransmitterOptics(850.0, 0.1, 30.0, 0.5),
        ReceiverOptics(
            1.0, 0.25, 100.0, central_obscuration_diameter_m=0.2, filter_bandwidth_nm=2.0
        ),
        Atmosphere(0.8, "clear"),
        Background("dark_night"),
        pointing_residual_urad(pointing, unix_s, seed=2),
        scintillation_seed=3,
    )
    source = dataclasses.replace(SOURCE, polarisation_error=0.01, intensity_fluctuation=0.01)
    detectors = DetectorModel((0.5,) * 4, 25.0, 150.0, 22_000.0, 0.005, 0.5)
    sifted = errors = detections = 0
    for frame in range(unix_s.shape[0]):
        first = frame * 100_000_000
        events = generate_frame_detections(
            SEQUENCER.pattern, first, 100_000_000, source, detectors,
            float(budget.transmittance[frame]), float(budget.background_counts_per_s[frame]),
            first * 10_000, float(geometry.range_m[frame] / SPEED_OF_LIGHT_M_S * 1e12),
            float(geometry.range_rate_m_s[frame] / SPEED_OF_LIGHT_M_S), 0.0,
            derive_key(5, f"pass.frame.{frame}"),
        )  # fmt: skip
        # Noise events are assigned to the nearest pulse slot, as the sync stage does.
        delay = geometry.range_m[frame] / SPEED_OF_LIGHT_M_S * 1e12
        rate = geometry.range_rate_m_s[frame] / SPEED_OF_LIGHT_M_S
        slot = np.rint((events.timestamp_ps - first * 10_000 - delay) / (10_000 * (1 + rate)))
        index = np.where(events.truth_pulse_index >= 0, events.truth_pulse_index, first + slot)
        index = np.clip(index, first, first + 99_999_999).astype(np.int64)
        pattern = SEQUENCER.pattern(index)
        channel = events.channel.astype(int) - 1
        matching = channel // 2 == pattern.basis
        sifted += int(matching.sum())
        errors += int((matching & (channel % 2 != pattern.bit)).sum())
        detections += events.channel.size
    qber = errors / sifted
    print(
        f"pass: max elevation {window.max_elevation_deg:.1f} deg, sifted {sifted}, qber {qber:.4f}"
    )
    assert 1e5 < sifted < 2e6, sifted
    assert 0.005 < qber < 0.05, qber
    assert detections == pytest.approx(2 * sifted, rel=0.02)


@pytest.mark.parametrize("p_max", [5e-324, 1e-310, 1e-300])
def test_candidate_offsets_with_a_vanishing_probability_choose_nothing(p_max: float) -> None:
    # log1p(-u) / log1p(-p_max) overflows to inf for subnormal p_max: no candidate, no error.
    for key in (0, 1, 2**64 - 1):
        assert candidate_offsets(np.uint64(key), np.int64(1000), p_max).size == 0
        assert candidate_offsets_reference(key, 1000, p_max).size == 0
