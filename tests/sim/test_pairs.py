"""Tests for sim_backends.pairs: the per-pair kernel against its reference, rates and
correlations a user would check on a bench, reproducibility from the seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from sim_backends.channel import DetectorModel
from sim_backends.pairs import (
    PairSourceModel,
    PassSegment,
    generate_pair_tags,
    pair_detections,
    pair_detections_reference,
    pair_emission_times,
    thermal_pair_distribution,
)

PAYLOAD = DetectorModel((0.6, 0.6, 0.6, 0.6), 100.0, 40.0, 50_000.0, 0.0, 0.5)
STATION = DetectorModel((0.5, 0.5, 0.5, 0.5), 200.0, 50.0, 50_000.0, 0.0, 0.5)
SEGMENT = PassSegment(2.0, 800e3, -5000.0, 10.0, 0.05, 5e3)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**63 - 1),
    first=st.integers(0, 2**40),
    n=st.integers(0, 40),
    eve=st.sampled_from([0.0, 0.5, 1.0]),
    px=st.floats(0.1, 0.9),
)
def test_pair_kernel_matches_reference(seed, first, n, eve, px):
    eff = np.array([0.9, 0.7, 0.8, 0.6])
    outs = [(np.empty(n, np.int8), np.empty(n, np.int8)) for _ in range(2)]
    args = (0.8, eff, px, 0.6, eff[::-1].copy(), 1 - px, 0.03, eve)
    pair_detections(np.uint64(seed), np.int64(first), *args, *outs[0])
    pair_detections_reference(seed, first, *args, *outs[1])
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


@pytest.fixture(scope="module")
def tags():
    source = PairSourceModel(pair_rate_hz=5e5, payload_collection=0.5, polarisation_error=0.02)
    return generate_pair_tags(source, PAYLOAD, STATION, SEGMENT, 37.3e9, 0.7e-6, seed=21)


def test_singles_and_pair_rates_follow_the_efficiencies(tags):
    pairs = tags.pairs_emitted
    assert pairs == pytest.approx(5e5 * 2.0, rel=0.01)
    # payload: pairs x collection x efficiency (dead time 50 us costs ~0.4 % at 38 kcps/detector)
    signal_a = np.count_nonzero(tags.payload.pair_id >= 0)
    assert signal_a == pytest.approx(pairs * 0.5 * 0.6 * (1 - 0.004), rel=0.02)
    both = np.intersect1d(tags.payload.pair_id[tags.payload.pair_id >= 0], tags.ogs.pair_id)
    assert both.size == pytest.approx(pairs * 0.3 * 0.05 * 0.5, rel=0.05)
    # station noise: dark 200/s + background 5e3/s x 0.5 per detector, 4 detectors
    noise_b = np.count_nonzero(tags.ogs.pair_id < 0)
    assert noise_b == pytest.approx(4 * (200 + 2500) * 2.0, rel=0.05)


def test_pair_bits_agree_in_the_same_basis_up_to_the_polarisation_error(tags):
    common, ia, ib = np.intersect1d(tags.payload.pair_id, tags.ogs.pair_id, return_indices=True)
    keep = common >= 0
    ia, ib = ia[keep], ib[keep]
    same = tags.payload.basis[ia] == tags.ogs.basis[ib]
    errors = tags.payload.bit[ia][same] != tags.ogs.bit[ib][same]
    assert errors.mean() == pytest.approx(0.02, abs=0.006)
    other = tags.payload.bit[ia][~same] != tags.ogs.bit[ib][~same]
    assert other.mean() == pytest.approx(0.5, abs=0.03)


def test_station_tags_carry_the_light_time_and_payload_tags_its_clock(tags):
    common, ia, ib = np.intersect1d(tags.payload.pair_id, tags.ogs.pair_id, return_indices=True)
    ia, ib = ia[common >= 0], ib[common >= 0]
    emission_ps = (tags.payload.timestamp_ps[ia] - 37.3e9) / (1 + 0.7e-6)
    delay = tags.ogs.timestamp_ps[ib] - emission_ps
    expected = SEGMENT.delay_ps(emission_ps * 1e-12)
    assert np.median(delay - expected) == pytest.approx(0.0, abs=5.0)
    assert np.std(delay - expected) == pytest.approx(np.hypot(40.0, 50.0), rel=0.1)


def test_intercept_resend_raises_the_error_rate_to_a_quarter():
    source = PairSourceModel(pair_rate_hz=3e5, payload_collection=0.5, polarisation_error=0.0)
    tags = generate_pair_tags(source, PAYLOAD, STATION, SEGMENT, 0.0, 0.0, 4, 1.0)
    common, ia, ib = np.intersect1d(tags.payload.pair_id, tags.ogs.pair_id, return_indices=True)
    ia, ib = ia[common >= 0], ib[common >= 0]
    same = tags.payload.basis[ia] == tags.ogs.basis[ib]
    errors = tags.payload.bit[ia][same] != tags.ogs.bit[ib][same]
    assert errors.mean() == pytest.approx(0.25, abs=0.03)


def test_the_seed_reproduces_every_tag():
    source = PairSourceModel(pair_rate_hz=1e5, payload_collection=0.5, polarisation_error=0.02)
    first = generate_pair_tags(source, PAYLOAD, STATION, SEGMENT, 1e9, 1e-7, 9)
    again = generate_pair_tags(source, PAYLOAD, STATION, SEGMENT, 1e9, 1e-7, 9)
    other = generate_pair_tags(source, PAYLOAD, STATION, SEGMENT, 1e9, 1e-7, 10)
    np.testing.assert_array_equal(first.ogs.timestamp_ps, again.ogs.timestamp_ps)
    np.testing.assert_array_equal(first.payload.channel, again.payload.channel)
    assert not np.array_equal(first.ogs.timestamp_ps[:100], other.ogs.timestamp_ps[:100])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PairSourceModel(0.0, 0.5, 0.01), "pair_rate_hz"),
        (lambda: PairSourceModel(1e6, 1.5, 0.01), "payload_collection"),
        (lambda: PassSegment(10.0, 800e3, 0.0, 0.0, 2.0, 0.0), "transmittance"),
    ],
)
def test_bad_models_are_named(make, message):
    with pytest.raises(InputError, match=message):
        make()


def _per_pulse_counts(source: PairSourceModel, duration_s: float, seed: int) -> np.ndarray:
    emission = pair_emission_times(source, duration_s, seed)
    pulses = round(duration_s * source.repetition_rate_hz)
    counts = np.bincount(np.rint(emission * source.repetition_rate_hz * 1e-12).astype(np.int64))
    return np.pad(counts, (0, pulses - counts.size))


@pytest.mark.parametrize("modes", [1.0, 4.0])
def test_a_pulsed_source_has_thermal_pair_statistics(modes):
    """g2 = <n(n-1)> / <n>^2 over pulses is 1 + 1/modes, and the fraction of emitting pulses
    with two pairs or more is the thermal one, well above a Poisson source's at the same mean."""
    mu = 0.1
    source = PairSourceModel(1e7, 0.5, 0.02, "thermal", repetition_rate_hz=1e8, thermal_modes=modes)
    counts = _per_pulse_counts(source, 0.02, 3).astype(np.float64)  # 2e6 pulses
    assert counts.mean() == pytest.approx(mu, rel=0.01)
    g2 = (counts * (counts - 1)).mean() / counts.mean() ** 2
    assert g2 == pytest.approx(1 + 1 / modes, rel=0.04)
    pmf = thermal_pair_distribution(mu, modes)
    multi = (counts >= 2).sum() / (counts >= 1).sum()
    assert multi == pytest.approx(1 - pmf[1] / (1 - pmf[0]), rel=0.04)
    poisson_multi = 1 - mu * np.exp(-mu) / (1 - np.exp(-mu))  # 0.049 at mu = 0.1
    # 0.091 for one mode, 0.061 for four: the excess shrinks towards Poisson as modes grow
    assert multi > (1.5 if modes == 1 else 1.15) * poisson_multi


def test_a_cw_source_is_poisson():
    source = PairSourceModel(1e6, 0.5, 0.02)
    gaps = np.diff(pair_emission_times(source, 0.5, 4))
    # exponential gaps: mean = standard deviation = 1 us
    assert gaps.mean() == pytest.approx(1e6, rel=0.01)
    assert gaps.std() == pytest.approx(1e6, rel=0.01)


def test_pulsed_tags_sit_on_the_pulses_and_follow_the_seed():
    source = PairSourceModel(2e6, 0.5, 0.02, "thermal", repetition_rate_hz=1e8)
    segment = PassSegment(0.05, 800e3, 0.0, 0.0, 0.05, 0.0)
    quiet = DetectorModel((0.6,) * 4, 0.0, 0.0, 50_000.0, 0.0, 0.5)
    first = generate_pair_tags(source, quiet, quiet, segment, 0.0, 0.0, 9)
    phase = first.payload.timestamp_ps % 10_000  # 100 MHz: 10 ns apart, no jitter, no offset
    assert first.payload.timestamp_ps.size > 10_000 and np.all(phase == 0)
    again = generate_pair_tags(source, quiet, quiet, segment, 0.0, 0.0, 9)
    np.testing.assert_array_equal(first.ogs.timestamp_ps, again.ogs.timestamp_ps)
    other = pair_emission_times(source, 0.05, 10)
    assert not np.array_equal(other[:100], pair_emission_times(source, 0.05, 9)[:100])


def test_a_thermal_source_needs_its_pulse_rate():
    with pytest.raises(InputError, match="repetition_rate_hz"):
        PairSourceModel(1e6, 0.5, 0.02, "thermal")
    with pytest.raises(InputError, match="statistics"):
        PairSourceModel(1e6, 0.5, 0.02, "coherent")
