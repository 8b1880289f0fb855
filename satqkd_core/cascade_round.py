"""One Cascade round at the corrector in one numba call, with its plain-Python reference.

After the first round (the top-level parities), every reply the corrector applies runs the
same three kernels: split the queried leaves (`cascade_kernels.split_leaves`), settle the
leaves left with one unknown bit (`cascade_kernels.settle_leaves`) and plan the next query
(`cascade_round_plan.plan_round`). `apply_round` runs them in one dispatch, with the
candidate leaves of the plan (last round's odd leaves, both halves of every split, the
leaves the settling toggled) gathered inside, so a round costs one call from Python and no
numpy temporaries. State layout as in `satqkd_core.cascade_kernels`; callers validate every
input.
"""

from __future__ import annotations

import numba
import numpy as np

from satqkd_core.cascade_kernels import (
    settle_leaves,
    settle_leaves_reference,
    split_leaves,
    split_leaves_reference,
)
from satqkd_core.cascade_round_plan import plan_round, plan_round_reference


@numba.njit(cache=True)
def apply_round(
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
    rows: np.ndarray,
    answers: np.ndarray,
    own_left: np.ndarray,
    odd_leaves: np.ndarray,
    threshold: float,
    load: np.ndarray,
    taken: np.ndarray,
    loaded: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    order_keys: np.ndarray,
    seen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int64]:
    """Kernel: apply the answers to the query `rows` (cut as `plan_round` cut them, with the
    own parities it gave) and plan the next round: `plan_round`'s (odd leaves, query, own
    parities, bad), from `odd_leaves` (the previous round's) and what this round changed."""
    split_leaves(
        leaf_start,
        blocks,
        block_offsets,
        block_split,
        leaf_stop,
        odd,
        unknown,
        rows,
        answers,
        own_left,
    )
    k = rows.shape[0]
    touched = np.empty((2 * k, 2), dtype=np.int64)  # both halves of each split
    for i in range(k):
        touched[i, 0] = rows[i, 0]
        touched[i, 1] = rows[i, 1]
        touched[k + i, 0] = rows[i, 0]
        touched[k + i, 1] = rows[i, 2]
    toggled = settle_leaves(
        key,
        bit_unknown,
        perms,
        inverse,
        leaf_start,
        blocks,
        block_offsets,
        block_split,
        leaf_stop,
        odd,
        unknown,
        touched,
        lazy,
        members,
    )
    # the odd leaves: last round's, plus any this round split or toggled, still odd
    before = odd_leaves.shape[0]
    candidates = np.empty((before + 2 * k + toggled.shape[0], 2), dtype=np.int64)
    candidates[:before] = odd_leaves
    candidates[before : before + 2 * k] = touched
    candidates[before + 2 * k :] = toggled
    return plan_round(
        candidates,
        odd,
        unknown,
        leaf_stop,
        key,
        bit_unknown,
        perms,
        inverse,
        threshold,
        load,
        taken,
        loaded,
        lazy,
        members,
        blocks,
        order_keys,
        seen,
    )


def apply_round_reference(
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
    rows: np.ndarray,
    answers: np.ndarray,
    own_left: np.ndarray,
    odd_leaves: np.ndarray,
    threshold: float,
    load: np.ndarray,
    taken: np.ndarray,
    loaded: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    order_keys: np.ndarray,
    seen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Reference of `apply_round`: the references of its three kernels, in numpy steps."""
    split_leaves_reference(
        leaf_start,
        blocks,
        block_offsets,
        block_split,
        leaf_stop,
        odd,
        unknown,
        rows,
        answers,
        own_left,
    )
    touched = np.concatenate([rows[:, :2], rows[:, ::2]])
    toggled = settle_leaves_reference(
        key,
        bit_unknown,
        perms,
        inverse,
        leaf_start,
        blocks,
        block_offsets,
        block_split,
        leaf_stop,
        odd,
        unknown,
        touched,
        lazy,
        members,
    )
    return plan_round_reference(
        np.concatenate([odd_leaves, touched, toggled]),
        odd,
        unknown,
        leaf_stop,
        key,
        bit_unknown,
        perms,
        inverse,
        threshold,
        load,
        taken,
        loaded,
        lazy,
        members,
        blocks,
        order_keys,
        seen,
    )
