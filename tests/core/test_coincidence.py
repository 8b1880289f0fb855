"""Tests for satqkd_core.coincidence: kernels against their references, offset and drift found
over the +-100 ms / 1 ppm uncertainty, tracking through a changing light time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.coincidence import (
    ClockRelation,
    find_clock_relation,
    track_coincidences,
)
from satqkd_core.coincidence_kernels import (
    difference_histogram,
    difference_histogram_reference,
    stacked_correlation_peaks,
    stacked_correlation_peaks_reference,
    track_coincidences_kernel,
    track_coincidences_kernel_reference,
    wrapped_histogram,
    wrapped_histogram_reference,
)
from satqkd_core.errors import InputError


def _sorted_tags(rng: np.random.Generator, n: int, span: int) -> np.ndarray:
    return np.sort(rng.integers(0, span, n)).astype(np.int64)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), bins=st.sampled_from([1, 3, 16, 64]))
def test_wrapped_histogram_matches_reference(seed, n, bins):
    rng = np.random.default_rng(seed)
    tags = _sorted_tags(rng, n, 10_000) - 2_000
    start, stop, width = (
        int(rng.integers(-3000, 3000)),
        int(rng.integers(0, 9000)),
        int(rng.integers(1, 500)),
    )
    got, want = np.zeros(bins), np.zeros(bins)
    wrapped_histogram(tags, np.int64(start), np.int64(stop), np.int64(width), got)
    wrapped_histogram_reference(tags, start, stop, width, want)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_a=st.integers(0, 200), n_b=st.integers(0, 60))
def test_difference_histogram_matches_reference(seed, n_a, n_b):
    rng = np.random.default_rng(seed)
    a, b = _sorted_tags(rng, n_a, 100_000), _sorted_tags(rng, n_b, 100_000)
    offset, drift = float(rng.normal(0, 300)), float(rng.normal(0, 1e-4))
    got, want = np.zeros(32), np.zeros(32)
    difference_histogram(a, b, offset, drift, np.int64(5000), 37.5, got)
    difference_histogram_reference(a, b, offset, drift, 5000, 37.5, want)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_a=st.integers(0, 200), n_b=st.integers(0, 40))
def test_tracking_kernel_matches_reference(seed, n_a, n_b):
    rng = np.random.default_rng(seed)
    a = _sorted_tags(rng, n_a, 1_000_000)
    # b tags far apart compared with the pull-in window, partners near some of them
    b = np.sort(rng.choice(np.arange(0, 1_000_000, 5_000), n_b, replace=False)).astype(np.int64)
    a = np.sort(np.concatenate([a, b[: n_b // 2] - 700 + rng.integers(-300, 300, n_b // 2)]))
    outs = [
        (np.zeros(n_b, np.int64), np.zeros(n_b, np.int64), np.zeros(n_b), np.zeros(3))
        for _ in range(2)
    ]
    args = (a, b, 650.0, 1e-5, np.int64(0), 1000.0, 250.0, 1 / 16, 1 / 256, 1e5)
    got = track_coincidences_kernel(*args, *outs[0])
    want = track_coincidences_kernel_reference(*args, *outs[1])
    assert got == want
    for x, y in zip(outs[0][:3], outs[1][:3], strict=True):
        np.testing.assert_allclose(x[:got], y[:got])
    np.testing.assert_allclose(outs[0][3], outs[1][3])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_acq=st.integers(1, 5),
    n=st.integers(1, 9000),
    n_hyp=st.integers(1, 4),
)
def test_stacked_correlation_peaks_match_reference(seed, n_acq, n, n_hyp):
    rng = np.random.default_rng(seed)
    # small integers make ties common: the first lag of the largest sum must win in both
    correlations = rng.integers(-3, 4, (n_acq, n)).astype(np.float32)
    shifts = rng.integers(-2 * n, 2 * n, (n_hyp, n_acq)).astype(np.int64)
    got = (np.empty(n_hyp), np.empty(n_hyp, np.int64))
    want = (np.empty(n_hyp), np.empty(n_hyp, np.int64))
    stacked_correlation_peaks(correlations, shifts, *got)
    stacked_correlation_peaks_reference(correlations, shifts, *want)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def _pair_streams(
    seed: int, offset_ps: float, drift: float, curvature_ps_s2: float = 0.0, pairs: int = 12_000
):
    """High-count a (1e5/s), low-count b (2e4/s) with 3e3/s true pairs over 4 s, 60 ps jitter."""
    rng = np.random.default_rng(seed)
    duration = 4e12
    pair_t = np.sort(rng.random(pairs)) * duration
    a_noise = rng.random(400_000) * duration
    b_noise = rng.random(68_000) * duration
    t_s = pair_t * 1e-12
    b_pair = (
        pair_t
        + offset_ps
        + drift * pair_t
        + curvature_ps_s2 * t_s**2
        + rng.normal(0, 60, pair_t.size)
    )
    a = np.concatenate([pair_t, a_noise])
    b = np.concatenate([b_pair, b_noise + offset_ps])
    a_id = np.concatenate([np.arange(pair_t.size), np.full(a_noise.size, -1)])
    b_id = np.concatenate([np.arange(pair_t.size), np.full(b_noise.size, -2)])
    ia, ib = np.argsort(a), np.argsort(b)
    return np.rint(a[ia]).astype(np.int64), np.rint(b[ib]).astype(np.int64), a_id[ia], b_id[ib]


@pytest.mark.parametrize(
    ("offset_ps", "drift"), [(-97.3e9, 0.93e-6), (61.1e9, -0.8e-6), (3.2e6, 0.0)]
)
def test_offset_and_drift_found_over_100_ms_and_1_ppm(offset_ps, drift):
    a, b, _, _ = _pair_streams(1, offset_ps, drift)
    relation = find_clock_relation(a, b, max_offset_ps=1e11, max_drift=1e-6)
    assert relation.found
    expected = offset_ps + drift * (relation.reference_ps - offset_ps) / (1 + drift)
    assert abs(relation.offset_ps - expected) < 100.0  # ps
    assert abs(relation.drift - drift) < 1e-9


def test_tracking_keeps_every_true_pair_as_the_light_time_bends():
    a, b, a_id, b_id = _pair_streams(2, 12.5e9, 0.4e-6, curvature_ps_s2=800.0)
    relation = find_clock_relation(a, b, max_offset_ps=1e11, max_drift=1e-6)
    pairs = track_coincidences(a, b, relation, window_ps=1000.0)
    true = a_id[pairs.index_a] == b_id[pairs.index_b]
    assert true.sum() >= 0.999 * 12_000
    # accidentals: singles product x window x time (a 1.03e5/s, b 2e4/s, 1 ns, 4 s) = 8.2
    assert (~true).sum() < 8.2 + 5 * np.sqrt(8.2)


def test_a_curving_residual_is_lost_without_tracking():
    """The same data with the loop gains near zero lose pairs: the tracking is what keeps them."""
    a, b, a_id, b_id = _pair_streams(2, 12.5e9, 0.4e-6, curvature_ps_s2=800.0)
    relation = find_clock_relation(a, b, max_offset_ps=1e11, max_drift=1e-6)
    frozen = track_coincidences(a, b, relation, 1000.0, gain_offset=1e-9, gain_rate=1e-9)
    true = a_id[frozen.index_a] == b_id[frozen.index_b]
    assert true.sum() < 0.95 * 12_000


# A weak link in small: a +-1 ms / 1 ppm search over 2^14 bins (262 ns, 0.26 s acquisitions)
# with 2.5e3 true pairs/s among 1e5 and 2e4 tags/s: one acquisition's peak (~5.5 sigma) is below
# the 8 sigma threshold, five summed stand 8-10 sigma
_WEAK = {"max_offset_ps": 1e9, "max_drift": 1e-6, "fft_bins": 1 << 14}


@pytest.mark.parametrize(("offset_ps", "drift"), [(-0.98e9, 1e-6), (0.61e9, -0.8e-6)])
def test_weak_link_found_by_summing_acquisitions_over_drift_hypotheses(offset_ps, drift):
    a, b, a_id, b_id = _pair_streams(4, offset_ps, drift, pairs=10_000)
    relation = find_clock_relation(a, b, **_WEAK)
    assert relation.found and relation.acquisitions_summed == 5
    expected = offset_ps + drift * (relation.reference_ps - offset_ps) / (1 + drift)
    assert abs(relation.offset_ps - expected) < 100.0  # ps
    assert abs(relation.drift - drift) < 1e-9
    pairs = track_coincidences(a, b, relation, window_ps=1000.0)
    assert (a_id[pairs.index_a] == b_id[pairs.index_b]).sum() >= 0.999 * 10_000


def test_weak_link_is_not_found_from_one_acquisition():
    """The same streams through one acquisition at each end (no room for a stack) fail."""
    a, b, _, _ = _pair_streams(4, -0.98e9, 1e-6, pairs=10_000)
    short = 3 * 262_144_000_000 // 2  # 1.5 acquisitions of b: too short to stack
    relation = find_clock_relation(a, b[b < b[0] + short], **_WEAK)
    assert not relation.found and relation.acquisitions_summed == 1


def test_weak_link_without_pairs_gives_no_relation():
    """The stacked search's lower threshold needs both ends to agree: noise alone fails."""
    a, b, a_id, b_id = _pair_streams(5, 0.3e9, 0.5e-6, pairs=10_000)
    relation = find_clock_relation(a[a_id < 0], b[b_id < 0], **_WEAK)
    assert not relation.found and relation.acquisitions_summed == 5


def test_uncorrelated_streams_give_no_relation():
    rng = np.random.default_rng(3)
    a = _sorted_tags(rng, 400_000, 4 * 10**12)
    b = _sorted_tags(rng, 80_000, 4 * 10**12)
    relation = find_clock_relation(a, b, max_offset_ps=1e11, max_drift=1e-6)
    assert not relation.found
    with pytest.raises(InputError, match="no clock relation"):
        track_coincidences(a, b, relation)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        (
            np.array([3, 1], np.int64),
            np.arange(5, dtype=np.int64),
            {},
            "a_ps: timestamps must be sorted",
        ),
        (
            np.arange(5.0),
            np.arange(5, dtype=np.int64),
            {},
            "a_ps: must be a 1-D numpy array of int64",
        ),
        (
            np.arange(5, dtype=np.int64),
            np.arange(5, dtype=np.int64),
            {"max_drift": 0.1},
            "max_drift",
        ),
        (np.arange(5, dtype=np.int64), np.arange(5, dtype=np.int64), {}, "overlap"),
    ],
)
def test_bad_input_is_named(a, b, kwargs, message):
    args = {"max_offset_ps": 1e11, "max_drift": 1e-6, **kwargs}
    with pytest.raises(InputError, match=message):
        find_clock_relation(a, b, **args)


def test_tracking_refuses_a_window_wider_than_the_pull_in():
    relation = ClockRelation(0.0, 0.0, 0, 20.0, True)
    tags = np.arange(10, dtype=np.int64)
    with pytest.raises(InputError, match="pull_in_ps"):
        track_coincidences(tags, tags, relation, window_ps=5000.0, pull_in_ps=1000.0)
