"""Shared click pieces: kernel and reference agree, and masks become one click per set bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core import rng
from sim_backends.clicks import (
    clicks_from_mask_reference,
    clicks_from_masks,
    clicks_reference_arrays,
    fill_route,
    route_reference,
)


@settings(max_examples=100, deadline=None)
@given(
    masks=st.lists(st.integers(0, 15), min_size=0, max_size=70),
    key=st.integers(0, 2**63 - 1),
    jitter_ps=st.sampled_from([0.0, 35.0]),
    delay_rate=st.floats(-3e-5, 3e-5),
)
def test_clicks_from_masks_matches_reference(
    masks: list[int], key: int, jitter_ps: float, delay_rate: float
) -> None:
    mask_array = np.array(masks, dtype=np.uint8)
    offsets = np.arange(len(masks), dtype=np.int64) * 7 + 3
    args = (100.0, 2.5e6, delay_rate, -1234.0, jitter_ps)
    times, detectors, groups = clicks_from_masks(
        np.uint64(key), np.uint64(rng.second_round_key(np.uint64(key))), mask_array, offsets, *args
    )
    clicks: tuple[list, list, list] = ([], [], [])
    for j, mask in enumerate(masks):
        clicks_from_mask_reference(clicks, key, j, mask, int(offsets[j]), *args)
    ref_times, ref_detectors, ref_groups = clicks_reference_arrays(clicks)
    np.testing.assert_array_equal(times, ref_times)
    np.testing.assert_array_equal(detectors, ref_detectors)
    np.testing.assert_array_equal(groups, ref_groups)
    assert len(times) == sum(bin(m).count("1") for m in masks)
    if jitter_ps == 0.0 and len(times):
        # without jitter every click of a pulse arrives at the same instant
        for j in set(groups.tolist()):
            assert np.unique(times[groups == j]).size == 1


@settings(max_examples=100, deadline=None)
@given(
    basis=st.integers(0, 1),
    bit=st.integers(0, 1),
    px=st.floats(0.0, 1.0),
    error=st.floats(0.0, 0.5),
)
def test_route_matches_reference_and_sums_to_one(
    basis: int, bit: int, px: float, error: float
) -> None:
    route = np.empty(4)
    fill_route(route, np.int64(basis), np.int64(bit), px, error)
    np.testing.assert_array_equal(route, route_reference(basis, bit, px, error))
    assert route.sum() == np.float64(1.0) or abs(route.sum() - 1.0) < 1e-12
    # the analyser in the state's own basis sends the right bit with probability 1 - error
    own = px if basis == 0 else 1.0 - px
    assert abs(route[2 * basis + bit] - own * (1.0 - error)) < 1e-15
