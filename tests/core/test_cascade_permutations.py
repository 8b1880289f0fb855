"""Cascade's two-block passes: kernels against references, uniformity, and the lazy build at
both ends (same answers and transcript as with every permutation built up front)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.cascade import CascadeCorrector, CascadeResponder, cascade_permutation
from satqkd_core.cascade_permutations import (
    masked_parity,
    masked_parity_reference,
    materialize_pass,
    materialize_pass_reference,
    materialize_two_block_pass,
    materialize_two_block_pass_reference,
    pack_bits,
    two_block_members,
    two_block_members_reference,
)
from satqkd_core.cascade_round_plan import (
    select_concurrent_ranges_into,
    select_concurrent_ranges_reference,
)


def _members(n: int, key: int) -> np.ndarray:
    out = np.zeros((1, -(-n // 64)), dtype=np.uint64)
    two_block_members(out[0], n, -(-n // 2), np.uint64(key))
    return out


def _unpacked(members: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(members.view(np.uint8), bitorder="little")[:n]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), key=st.integers(0, 2**64 - 1), order=st.integers(0, 2**64 - 1))
def test_two_block_kernels_match_references(n: int, key: int, order: int) -> None:
    half = -(-n // 2)
    members = _members(n, key)
    assert np.array_equal(members[0], two_block_members_reference(n, half, key))
    inside = _unpacked(members[0], n)
    assert inside.sum() == half  # exactly the first block's size, nothing past bit n - 1
    assert int(np.unpackbits(members.view(np.uint8)).sum()) == half
    perm = np.empty(n, dtype=np.int64)
    materialize_two_block_pass(perm, members, 0, half, np.uint64(order))
    assert np.array_equal(perm, materialize_two_block_pass_reference(n, members[0], half, order))
    assert np.array_equal(np.sort(perm), np.arange(n))
    assert inside[perm[:half]].all() and not inside[perm[half:]].any()
    key_bits = np.random.default_rng(key % 2**32).integers(0, 2, n).astype(np.uint8)
    packed = pack_bits(key_bits)
    assert np.array_equal(_unpacked(packed, n), key_bits)
    parity = masked_parity(packed, members, 0)
    assert parity == masked_parity_reference(key_bits, members, 0)
    assert parity == int(key_bits[perm[:half]].sum()) & 1


def test_two_block_permutation_is_uniform_over_small_permutations() -> None:
    """All 24 orders of 4 elements, each ~1/24 of 24,000 draws (chi-square, 23 dof)."""
    counts: dict[tuple[int, ...], int] = {}
    perm = np.empty(4, dtype=np.int64)
    for draw in range(24_000):
        key = draw * 0x9E3779B97F4A7C15 % 2**64
        members = _members(4, key)
        materialize_two_block_pass(perm, members, 0, 2, np.uint64(key ^ 0x5DEECE66D))
        counts[tuple(perm)] = counts.get(tuple(perm), 0) + 1
    assert len(counts) == 24
    chi2 = sum((c - 1000) ** 2 / 1000 for c in counts.values())
    assert chi2 < 50  # p ~ 1e-3 at 23 degrees of freedom


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 200), seed=st.integers(0, 2**32), density=st.floats(0.0, 1.0))
def test_selection_on_lazy_passes_matches_reference_on_built_ones(
    n: int, seed: int, density: float
) -> None:
    """Pass 1 is a lazy two-block pass: the selection decides as the reference does on its
    built permutation, builds it only if its row is kept, and leaves the scratch clean."""
    rng = np.random.default_rng(seed)
    half = -(-n // 2)
    members = np.zeros((2, -(-n // 64)), dtype=np.uint64)
    members[1] = _members(n, seed)[0]
    order_keys = np.array([0, seed + 1], dtype=np.uint64)
    blocks = np.array([max(1, n // 8), half], dtype=np.int64)
    built = np.stack([np.arange(n), np.zeros(n, dtype=np.int64)])
    materialize_two_block_pass(built[1], members, 1, half, order_keys[1])
    perms = np.stack([np.arange(n), np.zeros(n, dtype=np.int64)])
    inverse = np.stack([np.arange(n), np.zeros(n, dtype=np.int64)])
    lazy = np.array([0, 1], dtype=np.uint8)
    marks = (rng.random(n) < 0.8).astype(np.uint8)
    count = int(rng.integers(1, 12))
    starts = rng.integers(0, n, count)
    rows = [(0, s, min(n, s + int(rng.integers(1, n + 1)))) for s in starts.tolist()]
    rows += [(1, 0, half), (1, half, n)][: 1 if rng.random() < density else 2]
    rows_array = np.array(sorted(rows, key=lambda r: r[2] - r[1]), dtype=np.int64)
    load = np.zeros(n, dtype=np.float64)
    taken = np.zeros(-(-n // 64), dtype=np.uint64)
    loaded = np.empty(n, dtype=np.int64)
    for threshold in (0.0, 0.6):
        keep = select_concurrent_ranges_into(
            marks,
            perms,
            inverse,
            rows_array,
            threshold,
            load,
            taken,
            loaded,
            lazy,
            members,
            blocks,
            order_keys,
        )
        expected = select_concurrent_ranges_reference(marks, built, rows_array, threshold)
        assert np.array_equal(keep, expected)
        assert not load.any() and not taken.any()
        if not lazy[1]:  # built: exactly the permutation the ends agree on
            assert np.array_equal(perms[1], built[1])
            assert np.array_equal(inverse[1, built[1]], np.arange(n))
    assert lazy[1] == 0  # threshold > 0 reads the rows, so it builds them


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 300), seed=st.integers(0, 2**32))
def test_materialize_pass_matches_reference(n: int, seed: int) -> None:
    half = -(-n // 2)
    members = np.stack([_members(n, seed)[0]])
    results = []
    for build in (materialize_pass, materialize_pass_reference):
        perms = np.zeros((1, n), dtype=np.int32)
        inverse = np.zeros((1, n), dtype=np.int32)
        lazy = np.ones(1, dtype=np.uint8)
        args = (perms, inverse, lazy, members, np.array([half]), np.array([seed], np.uint64))
        build(0, *args)
        build(0, *args)  # a second call changes nothing
        results.append((perms.copy(), inverse.copy(), int(lazy[0])))
    assert all(np.array_equal(a, b) for a, b in zip(results[0][:2], results[1][:2], strict=True))
    assert results[0][2] == results[1][2] == 0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 400), seed=st.integers(0, 2**32), passes=st.integers(4, 8))
def test_responder_answers_lazy_passes_from_the_full_permutations(
    n: int, seed: int, passes: int
) -> None:
    """Whatever range of a two-block pass is asked, first or later, the answer is the parity
    over `cascade_permutation` (the one both ends agree on)."""
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 2, n).astype(np.uint8)
    responder = CascadeResponder(key, seed, passes)
    perms = np.stack([cascade_permutation(n, seed, p) for p in range(passes)])
    half = -(-n // 2)
    p = rng.integers(3, passes, 6)
    start = rng.integers(0, n, 6)
    stop = start + 1 + (rng.random(6) * (n - start)).astype(np.int64)
    rows = np.stack([p, start, stop], axis=1)
    rows[0] = (p[0], 0, half)  # the top-level question of a still unbuilt pass
    for row in rows:
        answer = responder.reply(row[None, :])
        assert answer[0] == int(key[perms[row[0], row[1] : row[2]]].sum()) & 1


def test_late_passes_stay_unbuilt_on_a_typical_block() -> None:
    """On a 1e5-bit block at 1 % the late passes are never bisected: their orders are never
    built (the saving this scheme exists for), and the key is still corrected."""
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 2, 100_000).astype(np.uint8)
    noisy = reference ^ (rng.random(100_000) < 0.01).astype(np.uint8)
    corrector = CascadeCorrector(noisy, 0.01, 3)
    responder = CascadeResponder(reference, 3)
    while (query := corrector.next_query()) is not None:
        corrector.apply_reply(responder.reply(query))
    assert np.array_equal(corrector.corrected_key, reference)
    assert corrector._lazy.lazy[3:].sum() >= 10  # of 13 late passes
