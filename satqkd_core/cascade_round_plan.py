"""numba kernels choosing each Cascade round's searches at the corrector, with references.

`select_concurrent_ranges_into` picks the searches a round runs concurrently. `plan_round`
fuses what the corrector did in numpy steps between two kernels each round (dedupe of the
odd-leaf candidates, ordering, the selection, the cut of each chosen leaf), so a round costs
one dispatch instead of a dozen numpy calls; `plan_round_reference` is those numpy steps.
State layout as in `satqkd_core.cascade_kernels`; callers validate every input.
"""

from __future__ import annotations

import numba
import numpy as np

from satqkd_core.cascade_disjoint import select_disjoint
from satqkd_core.cascade_kernels import nth_marked_positions
from satqkd_core.cascade_permutations import materialize_pass

_ONE = np.uint64(1)


# ---- the selection of concurrent searches ----------------------------------------------------


@numba.njit(cache=True)
def select_concurrent_ranges_into(
    marks: np.ndarray,
    perms: np.ndarray,
    inverse: np.ndarray,
    rows: np.ndarray,
    threshold: float,
    load: np.ndarray,
    taken: np.ndarray,
    loaded: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    blocks: np.ndarray,
    order_keys: np.ndarray,
) -> np.ndarray:
    """Kernel: greedily keep rows (in order) little disturbed by the rows already kept.

    A kept row with u marked (unknown) bits holds one error somewhere among them, each bit
    with probability 1/u; the disturbance of a candidate is the expected number of those
    errors among its own marked bits. A candidate is kept when it is <= threshold
    (threshold 0: share no marked bit with any kept row). `inverse[p]` is the inverse of
    `perms[p]`. Scratch, left as found: `load` (float64, one per bit, zeros), `taken` (uint64,
    a bit map of ceil(n / 64) words, zeros) and `loaded` (int64, one per bit). Threshold 0
    is `cascade_disjoint.select_disjoint`. A lazy two-block pass is built
    (`materialize_pass`) only when its row is kept or must be read.
    """
    if threshold == 0.0:
        no_cuts = np.zeros(rows.shape[0], dtype=np.int64)  # halves 0: no cut is wanted
        return select_disjoint(
            marks,
            marks,  # no parity is wanted either
            perms,
            inverse,
            rows,
            taken,
            loaded,
            lazy,
            members,
            blocks,
            order_keys,
            no_cuts,
            no_cuts,
            np.zeros(rows.shape[0], dtype=np.uint8),
            np.zeros((perms.shape[0], taken.shape[0]), dtype=np.uint64),
        )
    keep = np.zeros(rows.shape[0], dtype=np.bool_)
    count = 0
    for row in range(rows.shape[0]):
        p = rows[row, 0]
        start = rows[row, 1]
        stop = rows[row, 2]
        materialize_pass(p, perms, inverse, lazy, members, blocks, order_keys)
        disturbance = 0.0
        unknown = 0
        for j in range(start, stop):
            bit = perms[p, j]
            if marks[bit]:
                disturbance += load[bit]
                unknown += 1
                if disturbance > threshold:
                    break  # rejected: the rest of a large range need not be read
        if unknown > 0 and disturbance <= threshold:
            keep[row] = True
            share = 1.0 / unknown
            for j in range(start, stop):
                bit = perms[p, j]
                if marks[bit]:
                    if load[bit] == 0.0:
                        loaded[count] = bit
                        count += 1
                    load[bit] += share
    for i in range(count):
        load[loaded[i]] = 0.0
    return keep


def select_concurrent_ranges(
    marks: np.ndarray, perms: np.ndarray, rows: np.ndarray, threshold: float
) -> np.ndarray:
    """`select_concurrent_ranges_into` with fresh scratch and the inverses of `perms`."""
    inverse = np.empty_like(perms)
    for p in range(perms.shape[0]):
        inverse[p, perms[p]] = np.arange(perms.shape[1], dtype=perms.dtype)
    load = np.zeros(marks.shape[0], dtype=np.float64)
    taken = np.zeros(-(-marks.shape[0] // 64), dtype=np.uint64)
    loaded = np.empty(marks.shape[0], dtype=np.int64)
    passes = perms.shape[0]
    lazy = np.zeros(passes, dtype=np.uint8)  # every pass built
    members = np.zeros((passes, 1), dtype=np.uint64)
    blocks = np.ones(passes, dtype=np.int64)
    order_keys = np.zeros(passes, dtype=np.uint64)
    return select_concurrent_ranges_into(
        marks,
        perms,
        inverse,
        rows,
        threshold,
        load,
        taken,
        loaded,
        lazy,
        members,
        blocks,
        order_keys,
    )


def select_concurrent_ranges_reference(
    marks: np.ndarray, perms: np.ndarray, rows: np.ndarray, threshold: float
) -> np.ndarray:
    """Reference of `select_concurrent_ranges`."""
    load: dict[int, float] = {}
    keep = []
    for p, start, stop in rows.tolist():
        bits = [int(perms[p, j]) for j in range(start, stop) if marks[perms[p, j]]]
        disturbance = 0.0
        for bit in bits:
            disturbance += load.get(bit, 0.0)
        chosen = bool(bits) and disturbance <= threshold
        keep.append(chosen)
        if chosen:
            for bit in bits:
                load[bit] = load.get(bit, 0.0) + 1.0 / len(bits)
    return np.array(keep, dtype=np.bool_)


# ---- one round's plan --------------------------------------------------------------------------


@numba.njit(cache=True)
def plan_round(
    candidates: np.ndarray,
    odd: np.ndarray,
    unknown: np.ndarray,
    leaf_stop: np.ndarray,
    key: np.ndarray,
    bit_unknown: np.ndarray,
    perms: np.ndarray,
    inverse: np.ndarray,
    threshold: float,
    load: np.ndarray,
    taken: np.ndarray,
    loaded: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    blocks: np.ndarray,
    order_keys: np.ndarray,
    seen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int64]:
    """Kernel: (odd leaves, query rows, own parities, bad) from candidate leaves (pass,
    start) (repeats allowed): the odd leaves are the candidates still odd, sorted by (pass,
    start); the query holds one bisection step (pass, start, cut) for each odd leaf the
    selection keeps, taken in the order (unknown bits, pass, start), cut right after the
    (unknown // 2)-th unknown bit, and own parities (uint8) the parity of `key` over each
    query row (what `split_leaves` needs of the left half); `bad` is the index among the odd
    leaves of one
    holding fewer than 2 unknown bits (inconsistent reference parities), else -1 (and then
    no query is planned). Repeats and even leaves are dropped before anything is sorted (a
    round sorts only its odd leaves), repeats through `seen`: scratch, a bit map per pass
    (uint64, passes x ceil(n / 64), zeros between calls) of the leaf starts already taken,
    then the selection's maps of positions (`select_disjoint`)."""
    n = perms.shape[1]
    keys = np.empty(candidates.shape[0], dtype=np.int64)
    count = 0
    for i in range(candidates.shape[0]):
        p = candidates[i, 0]
        start = candidates[i, 1]
        word = seen[p, start >> 6]
        flag = _ONE << np.uint64(start & 63)
        if odd[p, start] == 1 and not word & flag:
            seen[p, start >> 6] = word | flag
            keys[count] = p * n + start
            count += 1
    keys = np.sort(keys[:count])
    leaves = np.empty((count, 2), dtype=np.int64)
    sizes = np.empty(count, dtype=np.int64)
    bad = -1
    for i in range(count):
        p = keys[i] // n
        start = keys[i] - p * n
        seen[p, start >> 6] = 0
        leaves[i, 0] = p
        leaves[i, 1] = start
        sizes[i] = unknown[p, start]
        if sizes[i] < 2 and bad < 0:
            bad = i
    if bad >= 0:
        no_rows = np.empty((0, 3), dtype=np.int64)
        return leaves, no_rows, np.empty(0, dtype=np.uint8), np.int64(bad)
    order = np.argsort(sizes, kind="mergesort")  # stable: ties stay by (pass, start)
    rows = np.empty((count, 3), dtype=np.int64)
    for i in range(count):
        p = leaves[order[i], 0]
        start = leaves[order[i], 1]
        rows[i, 0] = p
        rows[i, 1] = start
        rows[i, 2] = leaf_stop[p, start]
    halves = np.empty(count, dtype=np.int64)
    for i in range(count):
        halves[i] = sizes[order[i]] // 2
    cuts = np.full(count, -1, dtype=np.int64)
    parities = np.zeros(count, dtype=np.uint8)
    if threshold == 0.0:  # the cuts are found while the kept rows' bits are taken
        keep = select_disjoint(
            bit_unknown,
            key,
            perms,
            inverse,
            rows,
            taken,
            loaded,
            lazy,
            members,
            blocks,
            order_keys,
            halves,
            cuts,
            parities,
            seen,
        )
    else:
        keep = select_concurrent_ranges_into(
            bit_unknown,
            perms,
            inverse,
            rows,
            threshold,
            load,
            taken,
            loaded,
            lazy,
            members,
            blocks,
            order_keys,
        )
    chosen = np.flatnonzero(keep)
    query = np.empty((chosen.shape[0], 3), dtype=np.int64)
    for i in range(chosen.shape[0]):
        query[i, 0] = rows[chosen[i], 0]
        query[i, 1] = rows[chosen[i], 1]
        query[i, 2] = rows[chosen[i], 2]
    if threshold != 0.0:
        cut = nth_marked_positions(bit_unknown, perms, query, halves[chosen])
        for i in range(chosen.shape[0]):
            cuts[chosen[i]] = cut[i]
            parity = np.uint8(0)
            for j in range(query[i, 1], cut[i] + 1):
                parity ^= key[perms[query[i, 0], j]]
            parities[chosen[i]] = parity
    own = np.empty(chosen.shape[0], dtype=np.uint8)
    for i in range(chosen.shape[0]):
        # cut right after the half-th unknown bit: each half keeps >= 1 unknown bit
        query[i, 2] = cuts[chosen[i]] + 1
        own[i] = parities[chosen[i]]
    return leaves, query, own, np.int64(-1)


def plan_round_reference(
    candidates: np.ndarray,
    odd: np.ndarray,
    unknown: np.ndarray,
    leaf_stop: np.ndarray,
    key: np.ndarray,
    bit_unknown: np.ndarray,
    perms: np.ndarray,
    inverse: np.ndarray,
    threshold: float,
    load: np.ndarray,
    taken: np.ndarray,
    loaded: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    blocks: np.ndarray,
    order_keys: np.ndarray,
    seen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Reference of `plan_round` (the numpy steps it replaced; `seen` is not used)."""
    n = perms.shape[1]
    keys = np.unique(candidates[:, 0] * n + candidates[:, 1])
    p, start = keys // n, keys % n
    odd_now = odd[p, start] == 1
    leaves = np.stack([p[odd_now], start[odd_now]], axis=1).astype(np.int64)
    sizes = unknown[leaves[:, 0], leaves[:, 1]].astype(np.int64)
    if (sizes < 2).any():
        bad = int(np.flatnonzero(sizes < 2)[0])
        return leaves, np.empty((0, 3), dtype=np.int64), np.empty(0, dtype=np.uint8), bad
    order = np.lexsort((leaves[:, 1], leaves[:, 0], sizes))
    stops = leaf_stop[leaves[:, 0], leaves[:, 1]].astype(np.int64)
    rows = np.stack([leaves[:, 0], leaves[:, 1], stops], axis=1)[order]
    keep = select_concurrent_ranges_into(
        bit_unknown,
        perms,
        inverse,
        rows,
        threshold,
        load,
        taken,
        loaded,
        lazy,
        members,
        blocks,
        order_keys,
    )
    rows = rows[keep]
    half = sizes[order][keep] // 2
    cut = nth_marked_positions(bit_unknown, perms, rows, half) + 1
    own = [
        int(key[perms[p, a:b]].sum()) & 1
        for p, a, b in zip(rows[:, 0], rows[:, 1], cut, strict=True)
    ]
    query = np.stack([rows[:, 0], rows[:, 1], cut], axis=1).astype(np.int64)
    return leaves, query, np.array(own, dtype=np.uint8), -1
