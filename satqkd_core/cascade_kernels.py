"""numba kernels of Cascade (`satqkd_core.cascade`), each with a plain-Python reference below it.

Callers validate every input; the kernels trust shapes, dtypes and ranges. The corrector's
state is indexed by pass and permuted position: `perms[p, x]` is the key bit at position x of
pass p, `inverse[p, bit]` its position, `leaf_start[p, x]` the start of the known range
("leaf") holding position x (written only for blocks that were split, see below), and
`leaf_stop`, `odd` (own parity XOR reference parity) and `unknown` (bits not yet known
correct) sit at each leaf's start (the corrector keeps the three side by side, one cache line
for a leaf). Every kernel touches only the leaves and positions a
round works on, never whole arrays.

Two-block passes (`satqkd_core.cascade_permutations`) start "lazy" (`lazy[p]` = 1): only the
bit mask `members[p]` of their first block exists, and their `perms[p]` / `inverse[p]` rows are
built (`materialize_pass`) when a search of theirs is first chosen or a range scan needs them.
While lazy, a bit's position stands for its block (0 or blocks[p]), which is all the unsplit
leaves of such a pass need.
"""

from __future__ import annotations

import numba
import numpy as np

from satqkd_core.cascade_permutations import (
    is_member,
    lazy_position,
    lazy_position_reference,
)

# ---- parities, sums and searches over permuted ranges ----------------------------------------


@numba.njit(cache=True)
def permuted_prefix_parities(key: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Kernel: prefix[p, j] = XOR of key[perms[p, :j]], shape (passes, n + 1), uint8."""
    passes, n = perms.shape
    prefix = np.zeros((passes, n + 1), dtype=np.uint8)
    for p in range(passes):
        acc = np.uint8(0)
        for j in range(n):
            acc ^= key[perms[p, j]]
            prefix[p, j + 1] = acc
    return prefix


def permuted_prefix_parities_reference(key: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Reference of `permuted_prefix_parities`."""
    passes, n = perms.shape
    prefix = np.zeros((passes, n + 1), dtype=np.uint8)
    for p in range(passes):
        for j in range(n):
            prefix[p, j + 1] = prefix[p, j] ^ key[perms[p, j]]
    return prefix


@numba.njit(cache=True)
def prefix_range_parities(prefix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Kernel: parity of rows (pass, start, stop) as prefix[pass, stop] ^ prefix[pass, start]."""
    out = np.empty(query.shape[0], dtype=np.uint8)
    for row in range(query.shape[0]):
        p = query[row, 0]
        out[row] = prefix[p, query[row, 2]] ^ prefix[p, query[row, 1]]
    return out


def prefix_range_parities_reference(prefix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Reference of `prefix_range_parities`."""
    return np.array(
        [int(prefix[p, stop]) ^ int(prefix[p, start]) for p, start, stop in query.tolist()],
        dtype=np.uint8,
    )


@numba.njit(cache=True)
def answer_rows(
    prefix: np.ndarray,
    rows: np.ndarray,
    lazy: np.ndarray,
    half: int,
    first_block_parity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel: the responder's answers to rows (pass, start, stop): from the prefix rows of
    built passes; for a lazy two-block pass, the first block [0, half) from
    `first_block_parity`, any other row of it left 0 and its pass listed (ascending) in the
    second output, to be built and answered again."""
    out = np.zeros(rows.shape[0], dtype=np.uint8)
    need = np.zeros(lazy.shape[0], dtype=np.uint8)
    for row in range(rows.shape[0]):
        p = rows[row, 0]
        if lazy[p]:
            if rows[row, 1] == 0 and rows[row, 2] == half:
                out[row] = first_block_parity[p]
            else:
                need[p] = 1
        else:
            out[row] = prefix[p, rows[row, 2]] ^ prefix[p, rows[row, 1]]
    return out, np.flatnonzero(need)


def answer_rows_reference(
    prefix: np.ndarray,
    rows: np.ndarray,
    lazy: np.ndarray,
    half: int,
    first_block_parity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of `answer_rows`."""
    p, start, stop = rows[:, 0], rows[:, 1], rows[:, 2]
    built = lazy[p] == 0
    first = ~built & (start == 0) & (stop == half)
    out = np.zeros(rows.shape[0], dtype=np.uint8)
    out[built] = prefix[p[built], stop[built]] ^ prefix[p[built], start[built]]
    out[first] = first_block_parity[p[first]]
    return out, np.unique(p[~built & ~first]).astype(np.int64)


@numba.njit(cache=True)
def permuted_range_sums(values: np.ndarray, perms: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Kernel: sum of values[perms[pass, start:stop]] for each row (pass, start, stop), int64."""
    out = np.zeros(rows.shape[0], dtype=np.int64)
    for row in range(rows.shape[0]):
        p = rows[row, 0]
        total = 0
        for j in range(rows[row, 1], rows[row, 2]):
            total += values[perms[p, j]]
        out[row] = total
    return out


def permuted_range_sums_reference(
    values: np.ndarray, perms: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Reference of `permuted_range_sums`."""
    return np.array(
        [
            sum(int(values[perms[p, j]]) for j in range(start, stop))
            for p, start, stop in rows.tolist()
        ],
        dtype=np.int64,
    )


@numba.njit(cache=True)
def nth_marked_positions(
    marks: np.ndarray, perms: np.ndarray, rows: np.ndarray, nth: np.ndarray
) -> np.ndarray:
    """Kernel: permuted position of the nth (1-based) marked bit of each row, -1 if none."""
    out = np.full(rows.shape[0], -1, dtype=np.int64)
    for row in range(rows.shape[0]):
        p = rows[row, 0]
        seen = 0
        for j in range(rows[row, 1], rows[row, 2]):
            seen += marks[perms[p, j]]
            if seen == nth[row] and marks[perms[p, j]]:
                out[row] = j
                break
    return out


def nth_marked_positions_reference(
    marks: np.ndarray, perms: np.ndarray, rows: np.ndarray, nth: np.ndarray
) -> np.ndarray:
    """Reference of `nth_marked_positions`."""
    out = []
    for (p, start, stop), wanted in zip(rows.tolist(), nth.tolist(), strict=True):
        marked = [j for j in range(start, stop) if marks[perms[p, j]]]
        out.append(marked[wanted - 1] if 1 <= wanted <= len(marked) else -1)
    return np.array(out, dtype=np.int64)


# ---- the corrector's state updates -----------------------------------------------------------
#
# Leaves start as the top-level blocks of each pass (`blocks[p]` positions each); a block's
# positions get a `leaf_start` entry only once the block is first split (`block_split`, one
# flag per block, pass p's at `block_offsets[p] + x // blocks[p]`), so the rows of passes whose
# blocks are never bisected are never written.


@numba.njit(cache=True, inline="always")
def _leaf_of(p, x, leaf_start, blocks, block_offsets, block_split):  # type: ignore[no-untyped-def]
    block = x // blocks[p]
    if block_split[block_offsets[p] + block]:
        return leaf_start[p, x]
    return block * blocks[p]


def _leaf_of_reference(
    p: int,
    x: int,
    leaf_start: np.ndarray,
    blocks: np.ndarray,
    block_offsets: np.ndarray,
    block_split: np.ndarray,
) -> int:
    block = x // int(blocks[p])
    if block_split[int(block_offsets[p]) + block]:
        return int(leaf_start[p, x])
    return block * int(blocks[p])


@numba.njit(cache=True)
def init_pass_state(
    key: np.ndarray,
    perm: np.ndarray,
    inverse: np.ndarray,
    leaf_stop: np.ndarray,
    unknown: np.ndarray,
    odd: np.ndarray,
    block: int,
) -> None:
    """Kernel: one pass's rows: inverse of `perm`, top-level leaves of `block` positions
    (leaf_stop, unknown = size) and each block's own parity into `odd`."""
    n = perm.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        parity = np.uint8(0)
        for x in range(start, stop):
            bit = perm[x]
            inverse[bit] = x
            parity ^= key[bit]
        leaf_stop[start] = stop
        unknown[start] = stop - start
        odd[start] = parity


def init_pass_state_reference(
    key: np.ndarray,
    perm: np.ndarray,
    inverse: np.ndarray,
    leaf_stop: np.ndarray,
    unknown: np.ndarray,
    odd: np.ndarray,
    block: int,
) -> None:
    """Reference of `init_pass_state`."""
    n = perm.shape[0]
    for x in range(n):
        inverse[perm[x]] = x
    for start in range(0, n, block):
        stop = min(start + block, n)
        leaf_stop[start] = stop
        unknown[start] = stop - start
        odd[start] = int(np.bitwise_xor.reduce(key[perm[start:stop]]))


@numba.njit(cache=True)
def split_leaves(
    leaf_start: np.ndarray,
    blocks: np.ndarray,
    block_offsets: np.ndarray,
    block_split: np.ndarray,
    leaf_stop: np.ndarray,
    odd: np.ndarray,
    unknown: np.ndarray,
    rows: np.ndarray,
    answers: np.ndarray,
    own_left: np.ndarray,
) -> None:
    """Kernel: split each queried leaf (pass, start) at `cut` into two known halves, the left
    one's reference parity being the answer and the right one's following from the parent
    (kept only in `odd`, own parity XOR reference parity: nothing else needs it).
    Each row is cut as `plan_round` cuts, right after the leaf's (unknown // 2)-th unknown
    bit, and own_left[row] is the parity of the station's key over start..cut-1
    (`plan_round` reads it while choosing the row), so the left half is not read again. A
    block split for the first time (then the leaf is the whole block) gets its positions'
    `leaf_start` entries as the two halves are written."""
    for row in range(rows.shape[0]):
        p = rows[row, 0]
        start = rows[row, 1]
        cut = rows[row, 2]
        block = start // blocks[p]
        if not block_split[block_offsets[p] + block]:
            # the leaf is the whole block: its left half here, its right half below
            block_split[block_offsets[p] + block] = 1
            for x in range(start, cut):
                leaf_start[p, x] = start
        stop = leaf_stop[p, start]
        unknown_left = unknown[p, start] // 2
        answer = answers[row]
        odd_left = own_left[row] ^ answer
        leaf_stop[p, cut] = stop
        odd[p, cut] = odd[p, start] ^ odd_left
        unknown[p, cut] = unknown[p, start] - unknown_left
        leaf_stop[p, start] = cut
        odd[p, start] = odd_left
        unknown[p, start] = unknown_left
        for x in range(cut, stop):
            leaf_start[p, x] = cut


def split_leaves_reference(
    leaf_start: np.ndarray,
    blocks: np.ndarray,
    block_offsets: np.ndarray,
    block_split: np.ndarray,
    leaf_stop: np.ndarray,
    odd: np.ndarray,
    unknown: np.ndarray,
    rows: np.ndarray,
    answers: np.ndarray,
    own_left: np.ndarray,
) -> None:
    """Reference of `split_leaves`."""
    for (p, start, cut), answer, own in zip(
        rows.tolist(), answers.tolist(), own_left.tolist(), strict=True
    ):
        size = int(blocks[p])
        flag = int(block_offsets[p]) + start // size
        if not block_split[flag]:
            block_split[flag] = 1
            first = (start // size) * size
            leaf_start[p, first : first + size] = first
        stop = int(leaf_stop[p, start])
        odd_left = own ^ answer
        unknown_left = int(unknown[p, start]) // 2
        leaf_stop[p, cut], leaf_stop[p, start] = stop, cut
        odd[p, cut] = int(odd[p, start]) ^ odd_left
        odd[p, start] = odd_left
        unknown[p, cut] = int(unknown[p, start]) - unknown_left
        unknown[p, start] = unknown_left
        leaf_start[p, cut:stop] = cut


@numba.njit(cache=True)
def settle_leaves(
    key: np.ndarray,
    bit_unknown: np.ndarray,
    perms: np.ndarray,
    inverse: np.ndarray,
    leaf_start: np.ndarray,
    blocks: np.ndarray,
    block_offsets: np.ndarray,
    block_split: np.ndarray,
    leaf_stop: np.ndarray,
    odd: np.ndarray,
    unknown: np.ndarray,
    touched: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
) -> np.ndarray:
    """Kernel: resolve every leaf with one unknown bit, following the cascade.

    Called once every leaf's reference parity is known (after the top-level answers). Starting
    from the `touched` leaves (rows (pass, start)): a leaf that holds one unknown bit tells
    that bit (flipped when the leaf is odd); the bit becomes known in every pass, and the
    leaves holding it are examined in turn. Returns the leaves whose odd flag toggled,
    (pass, start) int64 rows (repeats possible).
    """
    passes = perms.shape[0]
    stack = np.empty((max(16, 2 * touched.shape[0]), 2), dtype=np.int64)
    depth = touched.shape[0]
    stack[:depth] = touched
    toggled = np.empty((16, 2), dtype=np.int64)
    count = 0
    while depth > 0:
        depth -= 1
        p = stack[depth, 0]
        start = stack[depth, 1]
        if unknown[p, start] != 1:
            continue
        bit = -1
        if lazy[p]:  # a whole block of a lazy pass: its bits by the mask
            first = start == 0
            for candidate in range(perms.shape[1]):
                if bit_unknown[candidate] and is_member(members, p, candidate) == first:
                    bit = candidate
                    break
        else:
            for x in range(start, leaf_stop[p, start]):
                if bit_unknown[perms[p, x]]:
                    bit = perms[p, x]
                    break
        flip = odd[p, start] == 1
        if flip:
            key[bit] ^= 1
        bit_unknown[bit] = 0
        if depth + passes > stack.shape[0]:
            grown = np.empty((2 * stack.shape[0] + passes, 2), dtype=np.int64)
            grown[:depth] = stack[:depth]
            stack = grown
        if flip and count + passes > toggled.shape[0]:
            grown = np.empty((2 * toggled.shape[0] + passes, 2), dtype=np.int64)
            grown[:count] = toggled[:count]
            toggled = grown
        for q in range(passes):
            x = lazy_position(q, bit, inverse, lazy, members, blocks)
            leaf = _leaf_of(q, x, leaf_start, blocks, block_offsets, block_split)
            unknown[q, leaf] -= 1
            if flip:
                odd[q, leaf] ^= 1
                toggled[count, 0] = q
                toggled[count, 1] = leaf
                count += 1
            stack[depth, 0] = q
            stack[depth, 1] = leaf
            depth += 1
    return toggled[:count].copy()


def settle_leaves_reference(
    key: np.ndarray,
    bit_unknown: np.ndarray,
    perms: np.ndarray,
    inverse: np.ndarray,
    leaf_start: np.ndarray,
    blocks: np.ndarray,
    block_offsets: np.ndarray,
    block_split: np.ndarray,
    leaf_stop: np.ndarray,
    odd: np.ndarray,
    unknown: np.ndarray,
    touched: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
) -> np.ndarray:
    """Reference of `settle_leaves`."""
    stack = [tuple(row) for row in touched.tolist()]
    toggled = []
    while stack:
        p, start = stack.pop()
        if unknown[p, start] != 1:
            continue
        if lazy[p]:
            first = start == 0
            bit = next(
                b
                for b in range(key.size)
                if bit_unknown[b] and ((int(members[p, b // 64]) >> (b % 64)) & 1) == first
            )
        else:
            span = perms[p, start : leaf_stop[p, start]]
            bit = int(span[bit_unknown[span] == 1][0])
        flip = bool(odd[p, start] == 1)
        key[bit] ^= flip
        bit_unknown[bit] = 0
        for q in range(perms.shape[0]):
            position = lazy_position_reference(q, bit, inverse, lazy, members, blocks)
            leaf = _leaf_of_reference(q, position, leaf_start, blocks, block_offsets, block_split)
            unknown[q, leaf] -= 1
            if flip:
                odd[q, leaf] ^= 1
                toggled.append((q, leaf))
            stack.append((q, leaf))
    return np.array(toggled, dtype=np.int64).reshape(-1, 2)
