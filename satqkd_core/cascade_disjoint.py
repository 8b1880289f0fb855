"""numba kernel of Cascade's selection at disturbance 0 (`select_disjoint`): which of a
round's searches run concurrently, sharing no unknown bit, with the cut and own parity of
each kept one. Used by `satqkd_core.cascade_round_plan` (`plan_round`, and
`select_concurrent_ranges_into` at threshold 0, whose plain-Python reference
`select_concurrent_ranges_reference` it is held equal to). Callers validate every input.
"""

from __future__ import annotations

import numba
import numpy as np

from satqkd_core.cascade_permutations import is_member, lazy_position, materialize_pass

# a random read of the (passes, n) inverse costs about this many sequential range positions
_LIST_COST = 8
# placing a taken bit in a pass's map of positions (a random read of `inverse`) costs about
# this many positions of a range read in order; below _MAP_MIN positions ahead, never placed
_MAP_COST = 4
_MAP_MIN = 4096
_MAP_CLASHES = 4  # only rows expected to hold more taken bits than this are placed
_ONE = np.uint64(1)


@numba.njit(cache=True, inline="always")
def _is_taken(taken: np.ndarray, bit: int) -> bool:
    return bool((taken[bit >> 6] >> np.uint64(bit & 63)) & _ONE)


@numba.njit(cache=True)
def select_disjoint(
    marks: np.ndarray,
    key: np.ndarray,
    perms: np.ndarray,
    inverse: np.ndarray,
    rows: np.ndarray,
    taken: np.ndarray,
    loaded: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    blocks: np.ndarray,
    order_keys: np.ndarray,
    halves: np.ndarray,
    cuts: np.ndarray,
    own: np.ndarray,
    mapped: np.ndarray,
) -> np.ndarray:
    """Threshold 0 of `select_concurrent_ranges_into`: keep a row when it shares no marked bit
    with the rows kept before it (only marked bits are ever taken).

    Only whether a bit is taken matters (a bit map that stays in cache), and a candidate
    much larger than the list of taken bits is tested against that list instead of being
    read, so a round costs what its kept rows hold, not what the large rejected ones do.
    Where many rows of one built pass wait (the large searches of the later passes, each
    clashing somewhere in its range), the taken bits are placed once at their positions in
    that pass (`mapped[p]`, a bit map of positions) and each such row is tested by the words
    of its range, instead of reading its range up to the first taken bit every time.
    While a kept row's bits are taken, cuts[row] gets the position of its halves[row]-th
    marked bit (`nth_marked_positions`; left as is when halves[row] is 0 or too large) and
    own[row] the parity of `key` over its positions start..cut (the whole row when no cut).
    Scratch `mapped` (uint64, passes x ceil(n / 64)) is zeros before and after.
    """
    n = marks.shape[0]
    passes = perms.shape[0]
    keep = np.zeros(rows.shape[0], dtype=np.bool_)
    ahead = np.zeros(passes, dtype=np.int64)  # rows of each pass still to be tested
    for row in range(rows.shape[0]):
        ahead[rows[row, 0]] += 1
    synced = np.zeros(passes, dtype=np.int64)  # loaded[:synced[p]] are placed in mapped[p]
    in_map = np.zeros(passes, dtype=np.bool_)
    count = 0
    for row in range(rows.shape[0]):
        p = rows[row, 0]
        start = rows[row, 1]
        stop = rows[row, 2]
        clash = False
        if not lazy[p] and not in_map[p] and (stop - start) * count > _MAP_CLASHES * n:
            # a row this large almost surely clashes, found after about n / count positions
            # read; placing the taken bits costs a random read each, once for all the rows of
            # this pass ahead
            scan = min(stop - start, n // (count + 1))
            in_map[p] = ahead[p] * scan > _MAP_COST * count + _MAP_MIN
        ahead[p] -= 1
        if in_map[p]:
            for i in range(synced[p], count):
                x = inverse[p, loaded[i]]
                mapped[p, x >> 6] |= _ONE << np.uint64(x & 63)
            synced[p] = count
            clash = _any_in_range(mapped[p], start, stop)
        elif _LIST_COST * count < stop - start:  # random reads of `inverse` cost more
            for i in range(count):
                if start <= lazy_position(p, loaded[i], inverse, lazy, members, blocks) < stop:
                    clash = True
                    break
        elif lazy[p]:  # a whole block of a lazy pass: its bits by the mask
            first = start == 0
            for bit in range(n):
                if _is_taken(taken, bit) and is_member(members, p, bit) == first:
                    clash = True
                    break
        else:
            clash = _any_taken(taken, perms, p, start, stop)
        if clash:
            continue
        if lazy[p]:  # tested here: a call passing arrays costs their reference counts
            materialize_pass(p, perms, inverse, lazy, members, blocks, order_keys)
        marked = 0
        half = halves[row]
        parity = np.uint8(0)
        for j in range(start, stop):
            bit = perms[p, j]
            if marked < half or half == 0:
                parity ^= key[bit]
            if marks[bit]:
                loaded[count] = bit
                count += 1
                taken[bit >> 6] |= _ONE << np.uint64(bit & 63)
                marked += 1
                if marked == half:
                    cuts[row] = j
        own[row] = parity
        keep[row] = marked > 0
    for i in range(count):
        taken[loaded[i] >> 6] = 0
    for p in range(passes):
        for i in range(synced[p]):
            mapped[p, inverse[p, loaded[i]] >> 6] = 0
    return keep


@numba.njit(cache=True, inline="always")
def _any_in_range(words: np.ndarray, start: int, stop: int) -> bool:
    """Whether any bit start..stop-1 of the bit map `words` is set."""
    first = start >> 6
    last = (stop - 1) >> 6
    head = ~np.uint64(0) << np.uint64(start & 63)
    tail = ~np.uint64(0) >> np.uint64(63 - ((stop - 1) & 63))
    if first == last:
        return bool(words[first] & head & tail != 0)
    if words[first] & head or words[last] & tail:
        return True
    for w in range(first + 1, last):  # noqa: SIM110 (a generator in any() is not numba's)
        if words[w]:
            return True
    return False


@numba.njit(cache=True, inline="always")
def _any_taken(taken: np.ndarray, perms: np.ndarray, p: int, start: int, stop: int) -> bool:
    """Whether any bit at positions start..stop-1 of pass p is taken, read 16 positions at
    a time (one test of their OR-ed bits: fewer branches, overlapping loads)."""
    j = start
    while j + 16 <= stop:
        acc = np.uint64(0)
        for k in range(16):
            bit = perms[p, j + k]
            acc |= taken[bit >> 6] >> np.uint64(bit & 63)
        if acc & _ONE:
            return True
        j += 16
    hit = False
    for k in range(j, stop):
        if _is_taken(taken, perms[p, k]):
            hit = True
            break
    return hit
