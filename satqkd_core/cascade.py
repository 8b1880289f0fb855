"""Interactive error correction: Cascade with batched round trips (direct reconciliation).

The ground (OGS) holds the noisy key and runs `CascadeCorrector`; the payload holds the
reference key and runs `CascadeResponder` (`satqkd_core.cascade_responder`, imported here),
which answers parity queries. A query row
(pass_index, start, stop) asks for the parity of the reference bits perm[pass_index][start:stop]
(half-open, in that pass's permuted order); every answered row discloses one bit, and both
sides count them. Pass 0's permutation is the identity; pass p >= 1's is a Fisher-Yates shuffle
driven by SplitMix64 from the 64-bit BLAKE2b digest of "satqkd/cascade-permutation/{seed}/{p}"
(`cascade_permutation`, `cascade_permutations.shuffle_positions`), derived alike at both ends,
except for passes of two top-level blocks (the late ones): their first block's bits are drawn
from that key's stream (`two_block_members`) and the order inside each block from the key of
".../{seed}/{p}/order", built only when a block is first bisected (both ends alike).

Variant (Martinez-Mateo, Pacher, Peev, Ciurana, Martin, "Demystifying the information
reconciliation protocol Cascade", QIC 15, 453 (2015), arXiv:1407.3257):
- block sizes of their "Cascade opt. (8)" (as implemented in B. Rijsman's cascade-python,
  cascade/algorithm.py): with a = log2(1/Q) - 1/2, k1 = 2^ceil(a), k2 = 2^ceil((a + 12) / 2),
  k3 = 2^12, then n/2 for every later pass; powers of two so that bisections halve exactly;
- sub-block reuse (ibid.): every range whose reference parity is known (top-level
  blocks and all halves learnt during bisections, in every pass) is kept; after a bit is
  flipped, the smallest known range containing it in each pass is re-examined;
- block-parity inference (ibid.): the parity of the right half of a bisection is the
  parent's minus the left's, and the last top-level block of passes >= 1 follows from the
  parity of the whole key (the XOR of pass 0's blocks), so neither is ever asked;
- no parity is asked twice, and bits already known to be correct (a known range of one bit,
  or the one bit of a known range whose other bits are all known) are skipped: bisection
  splits the still-unknown bits of a range in half, and a range with one unknown bit is
  resolved without a question.

Batching (for a link where each round trip costs milliseconds): all top-level parities of all
passes are asked in the first round trip (the reference parities do not depend on the
corrections, and every one of them is disclosed by Cascade anyway). After that, each round
trip carries one bisection step for every range known to hold an odd number of errors,
chosen smallest first (fewest unknown bits) and pairwise disjoint in their unknown bits, so
that two concurrent searches never chase the same error; searches of all passes, including
the back-tracking of cascaded errors, advance in lockstep. `max_disturbance` > 0 relaxes the
disjointness: a search may start when the expected number of errors of the searches already
chosen that sit among its unknown bits is at most that value. This trades leak for round trips
(1e4-bit frames, Q = 2 %, 16 passes, mean of 60: 0 -> f 1.058 and 225 round trips;
0.5 -> 1.092 and 143; 1.0 -> 1.117 and 116; 2.0 -> 1.156 and 90).

On the wire (decision 0034) the daemons send each query in its compact form
(`next_query_message`: the first round as its block sizes, later rounds as varint start gaps
and lengths, `satqkd_core.cascade_messages`), the responder decodes it strictly
(`reply_message`) and answers in wire order (`apply_reply_message` puts the answers back), so
the transcript, key and leak are those of the arrays.

Leakage in both directions (Tupkary & Lütkenhaus, "Using Cascade in quantum key
distribution", arXiv:2307.00576): the payload's answers disclose `leak_bits` reference
parities, and the station's queries disclose its own parities too: a range is bisected exactly
when the station's parity of it differs from the reference, so the transcript tells the
station's parity of every top-level block (the inferred last blocks included) and of every
left half it asked about (the right half follows from the parent). `station_parity_bits`
counts those, `total_leak_bits` is the sum charged in the finite-key bound; both ends compute
the same figures from the queries alone.

Residual errors: like every Cascade, a frame can end with an even number of errors hidden in
every known range; error verification (`satqkd_core.verification`) catches those frames.
"""

from __future__ import annotations

import math
import mmap

import numpy as np

from satqkd_core.bits import as_bit_array, as_count, binary_entropy
from satqkd_core.cascade_kernels import (
    init_pass_state,
    nth_marked_positions,
    nth_marked_positions_reference,
    permuted_prefix_parities,
    permuted_prefix_parities_reference,
    permuted_range_sums,
    permuted_range_sums_reference,
    prefix_range_parities,
    prefix_range_parities_reference,
    settle_leaves,
)
from satqkd_core.cascade_messages import (
    encode_planned_rows,
    encode_top_level,
    top_level_rows,
)
from satqkd_core.cascade_permutations import (
    DEFAULT_PASSES,
    TWO_BLOCK_PASSES_FROM,
    LazyPasses,
    cascade_permutation,
    fill_permutation,
    masked_parity,
    pack_bits,
)
from satqkd_core.cascade_responder import CascadeResponder, TwoWayLeak
from satqkd_core.cascade_round import apply_round
from satqkd_core.cascade_round_plan import (
    plan_round,
    select_concurrent_ranges,
    select_concurrent_ranges_reference,
)
from satqkd_core.errors import InputError, ProtocolError

__all__ = [
    "CascadeCorrector",
    "CascadeResponder",
    "cascade_block_sizes",
    "cascade_permutation",
    "nth_marked_positions",
    "nth_marked_positions_reference",
    "permuted_prefix_parities",
    "permuted_prefix_parities_reference",
    "permuted_range_sums",
    "permuted_range_sums_reference",
    "prefix_range_parities",
    "prefix_range_parities_reference",
    "reconciliation_efficiency",
    "select_concurrent_ranges",
    "select_concurrent_ranges_reference",
]

_MIN_QBER_FOR_BLOCKS = 1e-5  # below this the first block would exceed any practical frame
_LATE_BLOCK_SIZE = 1 << 12  # k3 of Cascade opt. (8)
# Concurrent searches may share unknown bits only up to this expected disturbance; 0 (fully
# disjoint) gives the least leak, larger values trade leak for fewer round trips.
CONCURRENCY_THRESHOLD = 0.0


def cascade_block_sizes(n: int, qber_estimate: float, passes: int) -> list[int]:
    """Top-level block size of each pass (Cascade opt. (8) of Martinez-Mateo et al.)."""
    size = as_count(n, "n", minimum=1)
    count = as_count(passes, "passes", minimum=1)
    qber = _validated_qber(qber_estimate)
    alpha = math.log2(1.0 / max(qber, _MIN_QBER_FOR_BLOCKS)) - 0.5
    schedule = [2 ** math.ceil(alpha), 2 ** math.ceil((alpha + 12.0) / 2.0), _LATE_BLOCK_SIZE]
    half = -(-size // 2)
    sizes = []
    for index in range(count):
        block = schedule[index] if index < len(schedule) else half
        # a pass >= 1 with a single block would only repeat the whole-key parity
        limit = size if index == 0 else half
        sizes.append(max(1, min(block, limit)))
    return sizes


def reconciliation_efficiency(leak_bits: int, key_bits: int, qber: float) -> float:
    """Efficiency f = leak / (n h(Q)) (1 is the Shannon limit)."""
    n = as_count(key_bits, "key_bits", minimum=1)
    leak = as_count(leak_bits, "leak_bits")
    entropy = binary_entropy(qber)
    if entropy == 0.0:
        raise InputError("qber must lie strictly between 0 and 1 for an efficiency")
    return leak / (n * entropy)


class CascadeCorrector(TwoWayLeak):
    """Ground side: corrects the noisy key to the reference through batched parity queries.

    Protocol: `q = next_query()`; send q; `apply_reply(answers)`; repeat until next_query()
    returns None (then `done` is True). `leak_bits` counts the answered (reference) parities,
    `total_leak_bits` adds what the queries disclose, `round_trips` counts replies applied.

    Bookkeeping is proportional to what a round touches: the leaves known to hold an odd
    number of errors are kept as a list (updated from the leaves a round split or toggled),
    never found by scanning the (passes, n) state, and the selection scratch is reused.
    """

    def __init__(
        self,
        noisy_key: np.ndarray,
        qber_estimate: float,
        seed: int,
        passes: int = DEFAULT_PASSES,
        *,
        max_disturbance: float = CONCURRENCY_THRESHOLD,
    ) -> None:
        key = as_bit_array(noisy_key, "noisy_key")
        n = key.size
        self._passes = as_count(passes, "passes", minimum=1)
        as_count(seed, "seed")
        self._threshold = _validated_disturbance(max_disturbance)
        self._n = n
        self.corrected_key = key.copy()
        self.leak_bits = 0
        self.round_trips = 0
        self.done = False
        self.block_sizes = cascade_block_sizes(n, qber_estimate, self._passes)
        shape = (self._passes, n)
        # perms and all per-range state are indexed by permuted position; int32 halves memory
        self._perms = np.empty(shape, dtype=np.int32)
        self._inverse = np.empty(shape, dtype=np.int32)
        # Known ranges ("leaves"): per pass, a partition of 0..n-1 into ranges whose reference
        # parity is known (or about to be asked). State sits at each leaf's start position.
        # leaf containing each position, written for a block's positions once it is split
        # (`_block_split`): never for the passes whose blocks are never bisected
        self._leaf_start = np.empty(shape, dtype=np.int32)
        self._blocks = np.array(self.block_sizes, dtype=np.int64)
        counts = -(-n // self._blocks)
        self._block_offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._block_split = np.zeros(int(counts.sum()), dtype=np.uint8)
        # each leaf's record, side by side (12 bytes: one cache line, rarely two): its stop, its
        # bits not known correct, and own parity XOR reference parity (1: the leaf holds an
        # odd number of errors; the own parity alone until the reference parity arrives)
        leaves = _state_zeros((self._passes, n, 3), np.int32)
        self._leaf_stop = leaves[:, :, 0]
        self._unknown = leaves[:, :, 1]
        self._odd = leaves[:, :, 2]
        self._bit_unknown = np.ones(n, dtype=np.uint8)
        self._load = np.zeros(n, dtype=np.float64)  # selection scratch, zeros between rounds
        # selection scratch, zeros between rounds: a bit map, small enough to stay in cache
        self._taken = np.zeros(-(-n // 64), dtype=np.uint64)
        self._loaded = np.empty(n, dtype=np.int64)  # selection scratch
        # planning scratch, zeros between rounds: per pass, a bit map of leaf starts
        self._seen = np.zeros((self._passes, self._taken.shape[0]), dtype=np.uint64)
        self._odd_leaves = np.empty((0, 2), dtype=np.int64)  # (pass, start) of odd leaves
        # parity of the own key over the left half of each pending row (from the plan)
        self._own_left = np.empty(0, dtype=np.uint8)
        self._top_starts: list[np.ndarray] = []
        # two-block passes: only their first block's mask until a search of theirs is chosen
        self._lazy = LazyPasses(n, seed, self._passes)
        packed = pack_bits(key) if self._lazy.lazy.any() else key
        whole = int(np.bitwise_xor.reduce(key)) if n else 0
        for p, block in enumerate(self.block_sizes):
            if self._lazy.lazy[p]:
                first = masked_parity(packed, self._lazy.members, p)
                for start, stop, parity in ((0, block, first), (block, n, whole ^ first)):
                    self._leaf_stop[p, start] = stop
                    self._unknown[p, start] = stop - start
                    self._odd[p, start] = parity
            else:
                fill_permutation(self._perms[p], seed, p)
                init_pass_state(
                    self.corrected_key,
                    self._perms[p],
                    self._inverse[p],
                    self._leaf_stop[p],
                    self._unknown[p],
                    self._odd[p],
                    block,
                )
            self._top_starts.append(np.arange(0, n, block, dtype=np.int64))
        # every top-level block but the last of passes >= 1 (inferred from pass 0's)
        self._pending: np.ndarray | None = top_level_rows(n, self.block_sizes)
        self._awaiting_top_level = True
        self._wire_order: np.ndarray | None = None  # wire row i is pending row _wire_order[i]

    def next_query(self) -> np.ndarray | None:
        """Rows (pass_index, start, stop) whose reference parities are wanted; None when done."""
        if self._pending is None:
            return None
        return self._pending.copy()

    @property
    def pending_rows(self) -> int:
        """Get: rows of the outstanding query (0 when none is)."""
        return 0 if self._pending is None else int(self._pending.shape[0])

    def next_query_message(self) -> bytes | None:
        """The next query in its compact wire form (`satqkd_core.cascade_messages`: the first
        round by its block sizes, later rounds delta-coded), None when done; its answers come
        back in wire order to `apply_reply_message`."""
        if self._pending is None:
            return None
        if self._awaiting_top_level:  # rebuilt by the responder in this very order
            self._wire_order = np.arange(self._pending.shape[0])
            return encode_top_level(self.block_sizes)
        data, self._wire_order = encode_planned_rows(self._pending)
        return data

    def apply_reply_message(self, parities: np.ndarray) -> None:
        """`apply_reply` for answers in the wire order of the last `next_query_message`."""
        if self._pending is None:
            raise ProtocolError("no query is outstanding")
        if self._wire_order is None:
            raise ProtocolError("the outstanding query was not taken by next_query_message")
        answers = _validated_reply(parities, self._pending.shape[0])
        own = np.empty_like(answers)
        own[self._wire_order] = answers
        self._apply(self._pending, own)

    def apply_reply(self, parities: np.ndarray) -> None:
        """Take the answers to the last query, correct what they reveal, prepare the next one."""
        if self._pending is None:
            raise ProtocolError("no query is outstanding")
        self._apply(self._pending, _validated_reply(parities, self._pending.shape[0]))

    def _apply(self, rows: np.ndarray, answers: np.ndarray) -> None:
        """`apply_reply` of validated answers (in row order) to the outstanding `rows`."""
        self._pending = None
        self._wire_order = None
        self.leak_bits += rows.shape[0]
        self.round_trips += 1
        if self._awaiting_top_level:
            self._awaiting_top_level = False
            self._odd[rows[:, 0], rows[:, 1]] ^= answers
            touched = np.concatenate([rows[:, :2], self._infer_last_blocks(rows, answers)])
            self._settle(touched)
            # the one whole scan: which top-level leaves are odd after the first settling
            planned = self._plan(touched)
        else:  # split, settle and plan the next round in one kernel
            planned = apply_round(
                self.corrected_key,
                self._bit_unknown,
                self._perms,
                self._inverse,
                self._leaf_start,
                self._blocks,
                self._block_offsets,
                self._block_split,
                self._leaf_stop,
                self._odd,
                self._unknown,
                rows,
                answers,
                self._own_left,
                self._odd_leaves,
                self._threshold,
                self._load,
                self._taken,
                self._loaded,
                self._lazy.lazy,
                self._lazy.members,
                self._lazy.order_keys,
                self._seen,
            )
        leaves, query, own_left, bad = planned
        self._pending = self._planned(leaves, query, own_left, int(bad))
        self.done = self._pending is None

    # -- state updates ---------------------------------------------------------------------

    def _infer_last_blocks(self, rows: np.ndarray, answers: np.ndarray) -> np.ndarray:
        """Reference parity of each later pass's last block from the whole-key parity (the
        XOR of pass 0's blocks) and the first reply's answers for that pass's other blocks."""
        asked = np.bincount(rows[:, 0], weights=answers, minlength=self._passes)
        parity = asked.astype(np.int64) & 1
        touched = []
        for p in range(1, self._passes):
            last = int(self._top_starts[p][-1])
            self._odd[p, last] ^= parity[0] ^ parity[p]
            touched.append((p, last))
        return np.array(touched, dtype=np.int64).reshape(-1, 2)

    def _settle(self, touched: np.ndarray) -> np.ndarray:
        """Resolve every known leaf with one unknown bit, following the cascade of changes;
        returns the leaves whose odd flag toggled."""
        return settle_leaves(
            self.corrected_key,
            self._bit_unknown,
            self._perms,
            self._inverse,
            self._leaf_start,
            self._blocks,
            self._block_offsets,
            self._block_split,
            self._leaf_stop,
            self._odd,
            self._unknown,
            np.ascontiguousarray(touched, dtype=np.int64),
            self._lazy.lazy,
            self._lazy.members,
        )

    def _plan(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int64]:
        """`plan_round` of the candidate leaves: the odd ones, and one bisection step for each
        of them the selection keeps (smallest first, disjoint in unknown bits)."""
        return plan_round(
            candidates,
            self._odd,
            self._unknown,
            self._leaf_stop,
            self.corrected_key,
            self._bit_unknown,
            self._perms,
            self._inverse,
            self._threshold,
            self._load,
            self._taken,
            self._loaded,
            self._lazy.lazy,
            self._lazy.members,
            self._blocks,
            self._lazy.order_keys,
            self._seen,
        )

    def _planned(
        self, leaves: np.ndarray, query: np.ndarray, own_left: np.ndarray, bad: int
    ) -> np.ndarray | None:
        """Keep a plan's odd leaves and own parities; its query, None when no leaf is odd."""
        self._odd_leaves = leaves
        self._own_left = own_left
        if bad >= 0:
            p, start = (int(v) for v in leaves[bad])
            raise ProtocolError(
                f"reference parities are inconsistent: range (pass {p}, start {start}) holds "
                f"an odd number of errors among {self._unknown[p, start]} unknown bits"
            )
        return query if leaves.shape[0] else None


_HUGE_PAGE = 1 << 21


def _state_zeros(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Zeros for per-pass state written at leaf starts only.

    The rows of the two-block passes hold two leaves (positions 0 and n/2) until bisected,
    which is rare: they get small pages, so each of their writes costs the 4 kB page it
    lands on, where the transparent huge pages numpy asks for arrays this large would be
    zeroed whole (2 MB a write: ~35 ms per 1e6-bit corrector). The first passes' rows are
    written densely and keep huge pages (aligned to start on one). Elsewhere np.zeros."""
    passes, row = shape[0], math.prod(shape[1:])
    itemsize = np.dtype(dtype).itemsize
    size = passes * row * itemsize
    dense = min(passes, TWO_BLOCK_PASSES_FROM) * row * itemsize
    dense += -dense % mmap.PAGESIZE
    if size - dense < _HUGE_PAGE or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros(shape, dtype=dtype)
    # private anonymous memory: zero pages until written (a shared mapping would be shmem)
    buffer = mmap.mmap(-1, size + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory = np.frombuffer(buffer, dtype=np.uint8)
    pad = -memory.ctypes.data % _HUGE_PAGE
    if dense:
        buffer.madvise(mmap.MADV_HUGEPAGE, 0, pad + dense)
    buffer.madvise(mmap.MADV_NOHUGEPAGE, pad + dense, size + _HUGE_PAGE - pad - dense)
    return memory[pad : pad + size].view(dtype).reshape(shape)


def _validated_reply(parities: object, expected: int) -> np.ndarray:
    if not isinstance(parities, np.ndarray):
        raise ProtocolError(f"reply must be a numpy array, got {type(parities).__name__}")
    if parities.shape != (expected,):
        raise ProtocolError(f"reply must have shape ({expected},), got {parities.shape}")
    kind = parities.dtype.kind  # one or two reductions a round, not a dtype hierarchy walk
    if kind not in "biu":
        raise ProtocolError(f"reply must hold 0/1 integers, got dtype {parities.dtype}")
    if kind != "b" and (parities.max() > 1 or (kind == "i" and parities.min() < 0)):
        raise ProtocolError("reply must hold only 0 and 1")
    return parities.astype(np.int8)


def _validated_qber(qber_estimate: object) -> float:
    try:
        qber = float(qber_estimate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"qber_estimate must be a number, got {qber_estimate!r}") from None
    if not (0.0 <= qber < 0.5):
        raise InputError(f"qber_estimate must lie in [0, 0.5), got {qber_estimate!r}")
    return qber


def _validated_disturbance(max_disturbance: object) -> float:
    try:
        value = float(max_disturbance)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"max_disturbance must be a number, got {max_disturbance!r}") from None
    if not value >= 0.0:
        raise InputError(f"max_disturbance must be >= 0, got {max_disturbance!r}")
    return value
