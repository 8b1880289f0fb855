"""Tests for satqkd_core.cascade: batched Cascade, corrector (OGS) against responder (payload)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.bits import binary_entropy
from satqkd_core.cascade import (
    CascadeCorrector,
    CascadeResponder,
    cascade_block_sizes,
    cascade_permutation,
    nth_marked_positions,
    nth_marked_positions_reference,
    permuted_prefix_parities,
    permuted_prefix_parities_reference,
    permuted_range_sums,
    permuted_range_sums_reference,
    prefix_range_parities,
    prefix_range_parities_reference,
    reconciliation_efficiency,
    select_concurrent_ranges,
    select_concurrent_ranges_reference,
)
from satqkd_core.errors import InputError, ProtocolError


def _bsc_pair(n: int, qber: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference key and its copy through a binary symmetric channel."""
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 2, n).astype(np.uint8)
    noisy = reference ^ (rng.random(n) < qber).astype(np.uint8)
    return reference, noisy


def _reconcile(
    reference: np.ndarray, noisy: np.ndarray, qber: float, seed: int, passes: int = 16
) -> tuple[CascadeCorrector, CascadeResponder]:
    corrector = CascadeCorrector(noisy, qber, seed, passes)
    responder = CascadeResponder(reference, seed, passes)
    while (query := corrector.next_query()) is not None:
        corrector.apply_reply(responder.reply(query))
    return corrector, responder


# ---- kernels against their references ---------------------------------------------------------

problem = st.tuples(st.integers(0, 150), st.integers(1, 4), st.integers(0, 2**32 - 1))


def _perms(n: int, passes: int, seed: int) -> np.ndarray:
    if n == 0:
        return np.zeros((passes, 0), dtype=np.int64)
    return np.stack([cascade_permutation(n, seed, p) for p in range(passes)])


def _rows(rng: np.random.Generator, n: int, passes: int, count: int) -> np.ndarray:
    p = rng.integers(0, passes, count)
    start = rng.integers(0, n, count)
    stop = start + 1 + (rng.random(count) * (n - start)).astype(np.int64)
    return np.stack([p, start, np.minimum(stop, n)], axis=1).astype(np.int64)


@settings(max_examples=150, deadline=None)
@given(case=problem)
def test_prefix_kernels_match_reference(case: tuple[int, int, int]) -> None:
    n, passes, seed = case
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 2, n).astype(np.uint8)
    perms = _perms(n, passes, seed)
    prefix = permuted_prefix_parities(key, perms)
    assert np.array_equal(prefix, permuted_prefix_parities_reference(key, perms))
    if n:
        rows = _rows(rng, n, passes, int(rng.integers(1, 40)))
        got = prefix_range_parities(prefix, rows)
        assert np.array_equal(got, prefix_range_parities_reference(prefix, rows))
        direct = permuted_range_sums_reference(key, perms, rows) & 1
        assert np.array_equal(got, direct)


@settings(max_examples=150, deadline=None)
@given(case=problem)
def test_range_kernels_match_reference(case: tuple[int, int, int]) -> None:
    n, passes, seed = case
    if n == 0:
        return
    rng = np.random.default_rng(seed)
    marks = (rng.random(n) < rng.random()).astype(np.uint8)
    perms = _perms(n, passes, seed)
    rows = _rows(rng, n, passes, int(rng.integers(1, 40)))
    sums = permuted_range_sums(marks, perms, rows)
    assert np.array_equal(sums, permuted_range_sums_reference(marks, perms, rows))
    nth = rng.integers(0, 6, rows.shape[0]).astype(np.int64)
    got = nth_marked_positions(marks, perms, rows, nth)
    assert np.array_equal(got, nth_marked_positions_reference(marks, perms, rows, nth))
    for threshold in (0.0, 0.3, 2.0):
        got = select_concurrent_ranges(marks, perms, rows, threshold)
        expected = select_concurrent_ranges_reference(marks, perms, rows, threshold)
        assert np.array_equal(got, expected)


@settings(max_examples=100, deadline=None)
@given(case=problem)
def test_zero_threshold_selects_disjoint_ranges(case: tuple[int, int, int]) -> None:
    n, passes, seed = case
    if n == 0:
        return
    rng = np.random.default_rng(seed)
    marks = (rng.random(n) < 0.7).astype(np.uint8)
    perms = _perms(n, passes, seed)
    rows = _rows(rng, n, passes, int(rng.integers(1, 30)))
    keep = select_concurrent_ranges(marks, perms, rows, 0.0)
    used = np.zeros(n, dtype=np.int64)
    for p, start, stop in rows[keep]:
        bits = perms[p, start:stop]
        used[bits[marks[bits] == 1]] += 1
    assert used.max(initial=0) <= 1


# ---- permutations and block sizes -------------------------------------------------------------


def test_permutations_are_shared_and_distinct() -> None:
    assert np.array_equal(cascade_permutation(10, 5, 0), np.arange(10))
    first = cascade_permutation(1000, 5, 1)
    assert first.dtype == np.int64
    assert np.array_equal(np.sort(first), np.arange(1000))
    assert np.array_equal(first, cascade_permutation(1000, 5, 1))
    assert not np.array_equal(first, cascade_permutation(1000, 5, 2))
    assert not np.array_equal(first, cascade_permutation(1000, 6, 1))


def test_block_sizes_follow_schedule() -> None:
    # Q = 2 %: a = log2(50) - 0.5 = 5.14 -> k1 = 64, k2 = 2^ceil(8.57) = 512, k3 = 4096, n/2
    assert cascade_block_sizes(10_000, 0.02, 5) == [64, 512, 4096, 5000, 5000]
    assert cascade_block_sizes(10_000, 0.10, 2) == [8, 256]
    # small frames: no block beyond the frame, later passes at most half of it
    assert cascade_block_sizes(100, 0.001, 4) == [100, 50, 50, 50]
    assert cascade_block_sizes(1, 0.05, 3) == [1, 1, 1]
    assert cascade_block_sizes(5, 0.0, 2) == [5, 3]


# ---- end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("qber", [0.005, 0.01, 0.02, 0.05, 0.10])
@pytest.mark.parametrize("n", [1000, 10_000])
def test_corrects_binary_symmetric_channel(n: int, qber: float) -> None:
    seeds = range(8) if n == 1000 else range(3)
    for seed in seeds:
        reference, noisy = _bsc_pair(n, qber, seed)
        corrector, responder = _reconcile(reference, noisy, qber, seed)
        assert corrector.done
        assert np.array_equal(corrector.corrected_key, reference), f"seed {seed}"
        assert corrector.leak_bits == responder.leak_bits
        errors = int(np.count_nonzero(reference != noisy))
        # each error costs at least one disclosed parity (the top-level ones are a floor too)
        assert corrector.leak_bits >= errors
        assert corrector.round_trips >= 1


def test_efficiency_on_ten_kilobit_frames() -> None:
    """Mean f = leak / (n h(Q)) over frames, with the real error count of each frame."""
    for qber, bound in [(0.01, 1.12), (0.02, 1.10), (0.05, 1.08)]:
        efficiencies = []
        for seed in range(6):
            reference, noisy = _bsc_pair(10_000, qber, 100 + seed)
            corrector, _ = _reconcile(reference, noisy, qber, 100 + seed)
            assert np.array_equal(corrector.corrected_key, reference)
            efficiencies.append(corrector.leak_bits / (10_000 * binary_entropy(qber)))
        assert 0.9 < np.mean(efficiencies) < bound, (qber, efficiencies)


def test_concurrent_searches_trade_leak_for_round_trips() -> None:
    reference, noisy = _bsc_pair(10_000, 0.02, 21)
    strict, _ = _reconcile(reference, noisy, 0.02, 21)
    corrector = CascadeCorrector(noisy, 0.02, 21, 16, max_disturbance=1.0)
    responder = CascadeResponder(reference, 21, 16)
    while (query := corrector.next_query()) is not None:
        corrector.apply_reply(responder.reply(query))
    assert np.array_equal(corrector.corrected_key, reference)
    assert corrector.leak_bits == responder.leak_bits
    assert corrector.round_trips < strict.round_trips
    assert corrector.leak_bits > strict.leak_bits


def test_large_frame() -> None:
    reference, noisy = _bsc_pair(100_000, 0.03, 11)
    corrector, responder = _reconcile(reference, noisy, 0.03, 11)
    assert np.array_equal(corrector.corrected_key, reference)
    assert corrector.leak_bits == responder.leak_bits
    assert reconciliation_efficiency(corrector.leak_bits, 100_000, 0.03) < 1.06


def test_no_errors_needs_one_round_trip() -> None:
    reference, _ = _bsc_pair(5000, 0.0, 3)
    corrector, responder = _reconcile(reference, reference.copy(), 0.02, 3, passes=6)
    assert corrector.round_trips == 1
    # pass 0: all blocks; later passes: all but their last (inferred from the whole parity)
    blocks = [-(-5000 // k) for k in corrector.block_sizes]
    assert corrector.leak_bits == responder.leak_bits == blocks[0] + sum(b - 1 for b in blocks[1:])


@pytest.mark.parametrize("reference_bit", [0, 1])
@pytest.mark.parametrize("noisy_bit", [0, 1])
@pytest.mark.parametrize("passes", [1, 4])
def test_single_bit_keys(reference_bit: int, noisy_bit: int, passes: int) -> None:
    reference = np.array([reference_bit], dtype=np.uint8)
    noisy = np.array([noisy_bit], dtype=np.uint8)
    corrector, responder = _reconcile(reference, noisy, 0.05, 1, passes)
    assert corrector.corrected_key.tolist() == [reference_bit]
    assert corrector.leak_bits == responder.leak_bits == 1
    assert corrector.round_trips == 1


@pytest.mark.parametrize("n", [2, 3, 5, 17])
def test_tiny_keys_with_all_error_patterns_of_weight_one(n: int) -> None:
    reference = np.random.default_rng(n).integers(0, 2, n).astype(np.uint8)
    for position in range(n):
        noisy = reference.copy()
        noisy[position] ^= 1
        corrector, responder = _reconcile(reference, noisy, 0.1, position)
        assert np.array_equal(corrector.corrected_key, reference)
        assert corrector.leak_bits == responder.leak_bits


def test_next_query_repeats_until_answered() -> None:
    reference, noisy = _bsc_pair(2000, 0.03, 4)
    corrector = CascadeCorrector(noisy, 0.03, 4)
    first = corrector.next_query()
    assert first is not None and first.dtype == np.int64 and first.shape[1] == 3
    assert np.array_equal(first, corrector.next_query())
    responder = CascadeResponder(reference, 4)
    corrector.apply_reply(responder.reply(first))
    assert corrector.round_trips == 1 and corrector.leak_bits == first.shape[0]


def test_corrector_rejects_bad_replies() -> None:
    reference, noisy = _bsc_pair(500, 0.05, 2)
    corrector = CascadeCorrector(noisy, 0.05, 2)
    query = corrector.next_query()
    assert query is not None
    with pytest.raises(ProtocolError, match="shape"):
        corrector.apply_reply(np.zeros(query.shape[0] + 1, dtype=np.uint8))
    with pytest.raises(ProtocolError, match="only 0 and 1"):
        corrector.apply_reply(np.full(query.shape[0], 2, dtype=np.uint8))
    with pytest.raises(ProtocolError, match="numpy array"):
        corrector.apply_reply([0] * query.shape[0])  # type: ignore[arg-type]
    # the query stays outstanding after a rejected reply
    assert np.array_equal(corrector.next_query(), query)
    corrector, _ = _reconcile(reference, noisy, 0.05, 2)
    with pytest.raises(ProtocolError, match="no query is outstanding"):
        corrector.apply_reply(np.zeros(1, dtype=np.uint8))


def test_lying_responder_ends_or_is_caught() -> None:
    """Random answers must never hang the corrector: it finishes or reports inconsistency."""
    for seed in range(5):
        _, noisy = _bsc_pair(3000, 0.05, seed)
        corrector = CascadeCorrector(noisy, 0.05, seed)
        rng = np.random.default_rng(seed)
        try:
            while (query := corrector.next_query()) is not None:
                corrector.apply_reply(rng.integers(0, 2, query.shape[0]).astype(np.uint8))
                assert corrector.round_trips < 10_000
        except ProtocolError as error:
            assert "inconsistent" in str(error)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        (np.array([[0, 0, 5]]), None),
        (np.array([[4, 0, 5]]), "row 0 \\(4, 0, 5\\): pass index outside 0..3"),
        (np.array([[0, 0, 5], [-1, 0, 5]]), "row 1 \\(-1, 0, 5\\): pass index"),
        (np.array([[0, -1, 5]]), "row 0 .*start outside 0..99"),
        (np.array([[0, 100, 101]]), "row 0 .*start outside"),
        (np.array([[0, 5, 5]]), "row 0 .*stop not in start\\+1..100"),
        (np.array([[0, 5, 4]]), "stop not in"),
        (np.array([[0, 0, 101]]), "stop not in"),
        (np.array([[0, 0]]), "shape \\(k, 3\\)"),
        (np.array([0, 0, 5]), "shape \\(k, 3\\)"),
        (np.zeros((0, 3), dtype=np.int64), "no rows"),
        (np.array([[0.0, 0.0, 5.0]]), "integers"),
        ([[0, 0, 5]], "numpy array"),
    ],
)
def test_responder_rejects_bad_queries(query: object, match: str | None) -> None:
    responder = CascadeResponder(np.ones(100, dtype=np.uint8), 9, passes=4)
    if match is None:
        assert responder.reply(query).tolist() == [1]  # type: ignore[arg-type]
        assert responder.leak_bits == 1
        return
    with pytest.raises(ProtocolError, match=match):
        responder.reply(query)  # type: ignore[arg-type]
    assert responder.leak_bits == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noisy_key": np.array([], dtype=np.uint8)}, "noisy_key must hold at least one bit"),
        ({"noisy_key": np.array([0, 3])}, "noisy_key must hold only 0 and 1"),
        ({"qber_estimate": 0.5}, "qber_estimate"),
        ({"qber_estimate": -0.1}, "qber_estimate"),
        ({"qber_estimate": "high"}, "qber_estimate"),
        ({"seed": -1}, "seed"),
        ({"passes": 0}, "passes"),
        ({"max_disturbance": -0.1}, "max_disturbance"),
        ({"max_disturbance": float("nan")}, "max_disturbance"),
    ],
)
def test_corrector_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    arguments = {"noisy_key": np.zeros(10, dtype=np.uint8), "qber_estimate": 0.02, "seed": 1}
    arguments.update(kwargs)
    with pytest.raises(InputError, match=match):
        CascadeCorrector(**arguments)


def test_responder_rejects_bad_arguments() -> None:
    with pytest.raises(InputError, match="reference_key"):
        CascadeResponder(np.array([1, 2]), 1)
    with pytest.raises(InputError, match="passes"):
        CascadeResponder(np.ones(4, dtype=np.uint8), 1, passes=0)


def test_reconciliation_efficiency() -> None:
    assert reconciliation_efficiency(1000, 10_000, 0.02) == pytest.approx(
        1000 / (10_000 * binary_entropy(0.02))
    )
    with pytest.raises(InputError, match="qber"):
        reconciliation_efficiency(10, 100, 0.0)
