"""Cascade's corrector kernels against their plain-Python references, and the permutations."""

from __future__ import annotations

import gc
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import satqkd_core.cascade as cascade
import satqkd_core.cascade_disjoint as cascade_disjoint
from satqkd_core.cascade import (
    CascadeCorrector,
    CascadeResponder,
    cascade_permutation,
)
from satqkd_core.cascade_kernels import (
    answer_rows,
    answer_rows_reference,
    init_pass_state,
    init_pass_state_reference,
    nth_marked_positions_reference,
    settle_leaves_reference,
)
from satqkd_core.cascade_permutations import shuffle_positions, shuffle_positions_reference
from satqkd_core.cascade_round import apply_round_reference
from satqkd_core.cascade_round_plan import (
    plan_round_reference,
    select_concurrent_ranges_into,
    select_concurrent_ranges_reference,
)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), key=st.integers(0, 2**64 - 1))
def test_shuffle_matches_reference_and_is_a_permutation(n: int, key: int) -> None:
    out = np.empty(n, dtype=np.int32)
    shuffle_positions(out, np.uint64(key))
    assert np.array_equal(out, shuffle_positions_reference(n, key))
    assert np.array_equal(np.sort(out), np.arange(n))


def test_shuffle_is_uniform_over_small_permutations() -> None:
    """All 24 orders of 4 elements, each ~1/24 of 24,000 draws (chi-square, 23 dof)."""
    counts: dict[tuple[int, ...], int] = {}
    out = np.empty(4, dtype=np.int64)
    for key in range(24_000):
        shuffle_positions(out, np.uint64(key * 0x9E3779B97F4A7C15 % 2**64))
        counts[tuple(out)] = counts.get(tuple(out), 0) + 1
    assert len(counts) == 24
    chi2 = sum((c - 1000) ** 2 / 1000 for c in counts.values())
    assert chi2 < 50  # p ~ 1e-3 at 23 degrees of freedom


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), block=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_init_pass_state_matches_reference(n: int, block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 2, n).astype(np.uint8)
    perm = cascade_permutation(n, seed, 1).astype(np.int32)
    states = []
    for fill in (init_pass_state, init_pass_state_reference):
        arrays = [np.zeros(n, np.int32) for _ in range(3)] + [np.zeros(n, np.uint8)]
        inverse, leaf_stop, unknown, odd = arrays
        fill(key, perm, inverse, leaf_stop, unknown, odd, block)
        states.append(arrays)
    for got, expected in zip(*states, strict=True):
        assert np.array_equal(got, expected)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 160),
    qber=st.sampled_from([0.01, 0.05, 0.15, 0.3]),
    passes=st.integers(1, 7),
    threshold=st.sampled_from([0.0, 0.0, 0.7]),
    seed=st.integers(0, 2**32),
)
def test_corrector_kernels_match_references(
    n: int, qber: float, passes: int, threshold: float, seed: int
) -> None:
    """The same transcript, corrected key and leak whether the corrector runs the numba
    kernels or their references (initial state, the first round's settling and plan, and
    every later round: split, settle and plan)."""
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 2, n).astype(np.uint8)
    noisy = reference ^ (rng.random(n) < qber).astype(np.uint8)

    def run() -> tuple[list[bytes], bytes, int]:
        corrector = CascadeCorrector(noisy, qber, seed, passes, max_disturbance=threshold)
        responder = CascadeResponder(reference, seed, passes)
        queries = []
        while (query := corrector.next_query()) is not None:
            queries.append(query.tobytes())
            corrector.apply_reply(responder.reply(query))
        return queries, corrector.corrected_key.tobytes(), corrector.total_leak_bits

    fast = run()
    with mock.patch.multiple(
        cascade,
        apply_round=apply_round_reference,
        settle_leaves=settle_leaves_reference,
        init_pass_state=init_pass_state_reference,
        plan_round=plan_round_reference,
    ):
        slow = run()
    assert fast == slow


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), seed=st.integers(0, 2**32), threshold=st.sampled_from([0.0, 0.4]))
def test_selection_scratch_is_left_clean(n: int, seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    perms = np.stack([cascade_permutation(n, seed, p) for p in range(3)])
    inverse = np.argsort(perms, axis=1)
    marks = (rng.random(n) < 0.8).astype(np.uint8)
    starts = rng.integers(0, n, 30)
    stops = np.minimum(starts + 1 + rng.integers(0, n, 30), n)
    rows = np.stack([rng.integers(0, 3, 30), starts, stops], axis=1).astype(np.int64)
    load = np.zeros(n, dtype=np.float64)
    taken = np.zeros(-(-n // 64), dtype=np.uint64)
    loaded = np.empty(n, dtype=np.int64)
    all_built = (  # lazy, members, blocks, order_keys: no lazy pass
        np.zeros(3, dtype=np.uint8),
        np.zeros((3, 1), dtype=np.uint64),
        np.ones(3, dtype=np.int64),
        np.zeros(3, dtype=np.uint64),
    )
    for _ in range(2):  # the second call sees the scratch the first one left
        keep = select_concurrent_ranges_into(
            marks, perms, inverse, rows, threshold, load, taken, loaded, *all_built
        )
        assert np.array_equal(
            keep, select_concurrent_ranges_reference(marks, perms, rows, threshold)
        )
        assert not load.any() and not taken.any()


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32), small=st.integers(9, 16), big=st.sampled_from([256, 512]))
def test_selection_through_maps_of_taken_positions(seed: int, small: int, big: int) -> None:
    """Many large waiting rows of a pass are tested against a map of the taken bits'
    positions in that pass: the same rows kept as the reference, each kept row's cut and own
    parity as `nth_marked_positions` and the key give them, the scratch left clean. Pass 1
    is the identity, so its rows away from the taken bits are kept through the map."""
    n = 1 << 16
    rng = np.random.default_rng(seed)
    perms = np.stack([np.arange(n), np.arange(n), cascade_permutation(n, seed, 2)]).astype(np.int32)
    inverse = np.argsort(perms, axis=1).astype(np.int32)
    marks = (rng.random(n) < 0.95).astype(np.uint8)
    key = rng.integers(0, 2, n).astype(np.uint8)
    blocks64 = rng.choice(np.arange(0, n // 4, 64), small, replace=False)  # a quarter of n
    first = [(0, int(start), int(start) + 64) for start in blocks64]
    large = [(p, start, start + big) for p in (1, 2) for start in range(0, n, big)]
    order = rng.permutation(len(large))
    rows = np.array(first + [large[i] for i in order], dtype=np.int64)
    halves = np.array([max(1, int(marks[perms[p, a:b]].sum()) // 2) for p, a, b in rows])
    cuts = np.full(rows.shape[0], -1, dtype=np.int64)
    own = np.zeros(rows.shape[0], dtype=np.uint8)
    taken = np.zeros(n // 64, dtype=np.uint64)
    mapped = np.zeros((3, n // 64), dtype=np.uint64)
    no_lazy = (np.zeros(3, np.uint8), np.zeros((3, 1), np.uint64), np.ones(3, np.int64))
    keep = cascade_disjoint.select_disjoint(
        marks, key, perms, inverse, rows, taken, np.empty(n, np.int64), *no_lazy,
        np.zeros(3, np.uint64), halves, cuts, own, mapped,
    )  # fmt: skip
    assert np.array_equal(keep, select_concurrent_ranges_reference(marks, perms, rows, 0.0))
    assert 0 < keep[len(first) :].sum() < len(large)  # some large rows kept, not all
    assert not taken.any() and not mapped.any()
    kept = rows[keep]
    expected_cuts = nth_marked_positions_reference(marks, perms, kept, halves[keep])
    assert np.array_equal(cuts[keep], expected_cuts)
    parities = [
        int(key[perms[p, a : c + 1]].sum()) & 1
        for (p, a, _), c in zip(kept, cuts[keep], strict=True)
    ]
    assert own[keep].tolist() == parities


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 300),
    passes=st.integers(1, 6),
    lazy_passes=st.integers(0, 2**6 - 1),
    seed=st.integers(0, 2**32),
)
def test_answer_rows_matches_reference(n: int, passes: int, lazy_passes: int, seed: int) -> None:
    """The responder's answers: built passes from their prefix parities, a lazy pass's first
    block from its stored parity, and any other row of a lazy pass reported for building."""
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, 2, (passes, n + 1)).astype(np.uint8)
    lazy = np.array([(lazy_passes >> p) & 1 for p in range(passes)], dtype=np.uint8)
    half = -(-n // 2)
    first_block_parity = rng.integers(0, 2, passes).astype(np.uint8)
    k = int(rng.integers(1, 20))
    starts = rng.integers(0, n, k)
    rows = np.stack(
        [rng.integers(0, passes, k), starts, starts + 1 + rng.integers(0, n - starts)], axis=1
    )
    rows[rng.random(k) < 0.4, 1:] = (0, half)  # first blocks, as the first round asks them
    rows = rows.astype(np.int64)
    got, unbuilt = answer_rows(prefix, rows, lazy, half, first_block_parity)
    expected, expected_unbuilt = answer_rows_reference(prefix, rows, lazy, half, first_block_parity)
    assert np.array_equal(got, expected) and np.array_equal(unbuilt, expected_unbuilt)


def test_state_zeros_are_zeros_that_kernels_write_and_outlive_their_mapping() -> None:
    """The corrector's sparse state (small pages for the two-block passes' rows) is an
    ordinary writable zero array, also for shapes too small to be mapped apart."""
    for shape, dtype in (((16, 300_000), np.int32), ((16, 300_000), np.uint8), ((4, 50), np.int8)):
        state = cascade._state_zeros(shape, dtype)
        assert state.shape == shape and state.dtype == dtype and state.flags.writeable
        gc.collect()  # the array alone keeps its memory alive
        assert not state.any()
        rows = np.array([[p, 0, shape[1] - 1] for p in range(shape[0])], dtype=np.int64)
        state[:, shape[1] // 2] = 1
        parities = answer_rows(
            state.astype(np.uint8), rows, np.zeros(shape[0], np.uint8), 1, np.zeros(0, np.uint8)
        )[0]
        assert parities.tolist() == [0] * shape[0]  # read by a kernel
        state[-1, -1] = 7
        assert int(state.sum()) == shape[0] + 7
