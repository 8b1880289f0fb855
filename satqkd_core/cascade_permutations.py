"""numba kernels of Cascade's public permutations, each with a plain-Python reference below it.

Two constructions, both exactly uniform and both driven by SplitMix64 streams keyed by the
caller (`satqkd_core.cascade` derives the keys from the session seed alike at both ends):

- `shuffle_positions`: Durstenfeld's Fisher-Yates, for passes with many top-level blocks.
- two-block passes (top-level blocks [0, half) and [half, n), half = ceil(n / 2)): which
  bits fall into the first block is drawn on its own (`two_block_members`, a bit mask) and
  the order inside each block only when a block is first bisected
  (`materialize_two_block_pass`). The membership costs one 64-bit draw per 64 bits instead
  of a random swap per bit, and most such passes are never bisected, so their orders are
  never built. A uniform half-subset with a uniform order inside each half is a uniform
  permutation.

Callers validate every input; the kernels trust shapes, dtypes and ranges. The session's
passes (`cascade_permutation`, `LazyPasses`, `fill_permutation`: keys derived from the seed,
validated here) close the module.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np

from satqkd_core.bits import as_count
from satqkd_core.errors import InputError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK32 = np.uint64(0xFFFFFFFF)
_TWO32 = np.uint64(1 << 32)
_ONE = np.uint64(1)
_M64 = (1 << 64) - 1
TWO_BLOCK_PASSES_FROM = 3  # passes after k1, k2, k3 have blocks of ceil(n / 2)
# Many cheap late passes, as in the optimized variants of Martinez-Mateo et al. (opt. (8) runs
# 14): passes 4.. cost one parity each (the other half is inferred) and each halves the chance
# that a hidden even error pattern survives. Measured on 1e4-bit frames at Q = 2 %: 4 passes
# leave errors in 7 of 100 frames, 8 passes in 4 of 1000, 12 passes in 0 of 1000.
DEFAULT_PASSES = 16


@numba.njit(cache=True, inline="always")
def _mix64(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _bounded(state: np.uint64, bound: np.uint64) -> tuple[np.uint64, np.int64]:
    """(new state, uniform draw in 0..bound-1): high 32 bits of one SplitMix64 output by
    Lemire's multiply-and-reject (exactly uniform; bound <= 2^32)."""
    while True:
        state += _GOLDEN
        product = (_mix64(state) >> np.uint64(32)) * bound
        low = product & _MASK32
        if low >= bound or low >= (_TWO32 - bound) % bound:
            return state, np.int64(product >> np.uint64(32))


@numba.njit(cache=True)
def _shuffle_segment(out: np.ndarray, lo: int, size: int, state: np.uint64) -> np.uint64:
    """Fisher-Yates (from the top) of out[lo:lo + size] in place; returns the stream state."""
    for i in range(size - 1, 0, -1):
        state, j = _bounded(state, np.uint64(i + 1))
        held = out[lo + i]
        out[lo + i] = out[lo + j]
        out[lo + j] = held
    return state


@numba.njit(cache=True)
def shuffle_positions(out: np.ndarray, key: np.uint64) -> None:
    """Kernel: out[:] = a uniform permutation of 0..n-1 (n < 2^32) chosen by the 64-bit key.

    Durstenfeld's Fisher-Yates from the top; each index j in 0..i comes from the high 32 bits
    of one SplitMix64 output by Lemire's multiply-and-reject (exactly uniform, no division
    unless the low product falls under the bound).
    """
    n = out.shape[0]
    for i in range(n):
        out[i] = i
    _shuffle_segment(out, 0, n, np.uint64(key))


def _mix64_reference(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _bounded_reference(state: int, bound: int) -> tuple[int, int]:
    while True:
        state = (state + 0x9E3779B97F4A7C15) & _M64
        product = (_mix64_reference(state) >> 32) * bound
        low = product & 0xFFFFFFFF
        if low >= bound or low >= ((1 << 32) - bound) % bound:
            return state, product >> 32


def _shuffle_segment_reference(out: list[int], lo: int, size: int, state: int) -> int:
    for i in range(size - 1, 0, -1):
        state, j = _bounded_reference(state, i + 1)
        out[lo + i], out[lo + j] = out[lo + j], out[lo + i]
    return state


def shuffle_positions_reference(n: int, key: int) -> np.ndarray:
    """Reference of `shuffle_positions` (returns the permutation as int64)."""
    out = list(range(n))
    _shuffle_segment_reference(out, 0, n, key)
    return np.array(out, dtype=np.int64)


# ---- two-block passes ------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def is_member(members: np.ndarray, p: int, bit: int) -> bool:
    """Whether `bit` lies in the first block of two-block pass p (bit mask row p)."""
    return bool((members[p, bit >> 6] >> np.uint64(bit & 63)) & _ONE == _ONE)


@numba.njit(cache=True, inline="always")
def _popcount(word: np.uint64) -> int:
    word = word - ((word >> np.uint64(1)) & np.uint64(0x5555555555555555))
    word = (word & np.uint64(0x3333333333333333)) + (
        (word >> np.uint64(2)) & np.uint64(0x3333333333333333)
    )
    word = (word + (word >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((word * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(cache=True)
def two_block_members(out: np.ndarray, n: int, half: int, key: np.uint64) -> None:
    """Kernel: out (uint64, ceil(n / 64) words) = a uniform subset of `half` of the bits
    0..n-1 (n < 2^32), chosen by the 64-bit key.

    Each bit is kept with probability 1/2 (one SplitMix64 output per 64 bits), then uniformly
    drawn bits (Lemire's bounded draws) are removed while the subset holds more than `half`
    or added while it holds fewer. Every step treats all bits alike, so the result is
    exchangeable, hence uniform over the subsets of size `half`.
    """
    words = out.shape[0]
    state = np.uint64(key)
    count = 0
    for w in range(words):
        state += _GOLDEN
        word = _mix64(state)
        if w == words - 1 and n & 63:
            word &= (_ONE << np.uint64(n & 63)) - _ONE
        out[w] = word
        count += _popcount(word)
    while count != half:
        state, bit = _bounded(state, np.uint64(n))
        flag = _ONE << np.uint64(bit & 63)
        inside = out[bit >> 6] & flag != 0
        if count > half and inside:
            out[bit >> 6] ^= flag
            count -= 1
        elif count < half and not inside:
            out[bit >> 6] |= flag
            count += 1


def two_block_members_reference(n: int, half: int, key: int) -> np.ndarray:
    """Reference of `two_block_members` (returns the words as uint64)."""
    words = -(-n // 64)
    bits: list[int] = []
    state = key
    for _ in range(words):
        state = (state + 0x9E3779B97F4A7C15) & _M64
        word = _mix64_reference(state)
        bits.extend((word >> i) & 1 for i in range(64))
    bits = bits[:n]
    while sum(bits) != half:
        state, bit = _bounded_reference(state, n)
        if sum(bits) > half and bits[bit]:
            bits[bit] = 0
        elif sum(bits) < half and not bits[bit]:
            bits[bit] = 1
    packed = [
        sum(bit << i for i, bit in enumerate(bits[w * 64 : w * 64 + 64])) for w in range(words)
    ]
    return np.array(packed, dtype=np.uint64)


def pack_bits(key: np.ndarray) -> np.ndarray:
    """key (0/1 uint8) packed into uint64 words, bit b at bit b % 64 of word b // 64."""
    words = -(-key.shape[0] // 64)
    out = np.zeros(words * 8, dtype=np.uint8)
    out[: -(-key.shape[0] // 8)] = np.packbits(key, bitorder="little")
    return out.view("<u8").astype(np.uint64, copy=False)


@numba.njit(cache=True)
def masked_parity(packed_key: np.ndarray, members: np.ndarray, p: int) -> int:
    """Kernel: XOR of the key's bits (packed) over the bits of mask row p (the first block)."""
    acc = np.uint64(0)
    for w in range(packed_key.shape[0]):
        acc ^= packed_key[w] & members[p, w]
    return _popcount(acc) & 1


def masked_parity_reference(key: np.ndarray, members: np.ndarray, p: int) -> int:
    """Reference of `masked_parity`, from the unpacked key."""
    bits = [bit for bit in range(key.shape[0]) if (int(members[p, bit // 64]) >> (bit % 64)) & 1]
    return int(key[bits].sum()) & 1 if bits else 0


@numba.njit(cache=True)
def materialize_two_block_pass(
    perm: np.ndarray, members: np.ndarray, p: int, half: int, key: np.uint64
) -> None:
    """Kernel: perm[:] = pass p's order: the first block's bits (mask row p) ascending, then
    the others ascending, each block then shuffled by Fisher-Yates from the key's stream
    (the first block, then the second)."""
    n = perm.shape[0]
    first = 0
    second = half
    for bit in range(n):
        if is_member(members, p, bit):
            perm[first] = bit
            first += 1
        else:
            perm[second] = bit
            second += 1
    state = _shuffle_segment(perm, 0, half, np.uint64(key))
    _shuffle_segment(perm, half, n - half, state)


def materialize_two_block_pass_reference(
    n: int, members: np.ndarray, half: int, key: int
) -> np.ndarray:
    """Reference of `materialize_two_block_pass` for mask row `members` (returns int64)."""
    inside = [(int(members[bit // 64]) >> (bit % 64)) & 1 for bit in range(n)]
    out = [bit for bit in range(n) if inside[bit]] + [bit for bit in range(n) if not inside[bit]]
    state = _shuffle_segment_reference(out, 0, half, key)
    _shuffle_segment_reference(out, half, n - half, state)
    return np.array(out, dtype=np.int64)


# ---- lazy two-block passes -------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def lazy_position(q, bit, inverse, lazy, members, blocks):  # type: ignore[no-untyped-def]
    """Position of `bit` in pass q; for a lazy pass, the start of the bit's block."""
    if lazy[q]:
        return np.int64(0) if is_member(members, q, bit) else np.int64(blocks[q])
    return np.int64(inverse[q, bit])


def lazy_position_reference(
    q: int,
    bit: int,
    inverse: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    blocks: np.ndarray,
) -> int:
    """Reference of `lazy_position`."""
    if lazy[q]:
        return 0 if (int(members[q, bit // 64]) >> (bit % 64)) & 1 else int(blocks[q])
    return int(inverse[q, bit])


@numba.njit(cache=True)
def materialize_pass(
    p: int,
    perms: np.ndarray,
    inverse: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    blocks: np.ndarray,
    order_keys: np.ndarray,
) -> None:
    """Kernel: build lazy two-block pass p's rows perms[p] and inverse[p] (no-op if built)."""
    if not lazy[p]:
        return
    materialize_two_block_pass(perms[p], members, p, blocks[p], order_keys[p])
    for x in range(perms.shape[1]):
        inverse[p, perms[p, x]] = x
    lazy[p] = 0


def materialize_pass_reference(
    p: int,
    perms: np.ndarray,
    inverse: np.ndarray,
    lazy: np.ndarray,
    members: np.ndarray,
    blocks: np.ndarray,
    order_keys: np.ndarray,
) -> None:
    """Reference of `materialize_pass`."""
    if not lazy[p]:
        return
    n = perms.shape[1]
    row = materialize_two_block_pass_reference(n, members[p], int(blocks[p]), int(order_keys[p]))
    perms[p] = row
    inverse[p, row] = np.arange(n)
    lazy[p] = 0


# ---- the passes of one session, alike at both ends -------------------------------------------


def cascade_permutation(n: int, seed: int, pass_index: int) -> np.ndarray:
    """Permutation of pass `pass_index` (int64, perm[j] = key index at permuted position j)."""
    size = as_count(n, "n", minimum=1)
    index = as_count(pass_index, "pass_index")
    out = np.empty(size, dtype=np.int64)
    if is_two_block(size, index):
        members = np.empty((1, -(-size // 64)), dtype=np.uint64)
        half = -(-size // 2)
        two_block_members(members[0], size, half, permutation_key(seed, index))
        materialize_two_block_pass(out, members, 0, half, permutation_key(seed, index, "order"))
    else:
        fill_permutation(out, seed, index)
    return out


def is_two_block(n: int, pass_index: int) -> bool:
    """Whether a pass's top-level blocks are [0, ceil(n/2)) and the rest whatever the QBER
    (the passes after Cascade opt. (8)'s three; `satqkd_core.cascade.cascade_block_sizes`):
    built lazily."""
    return pass_index >= TWO_BLOCK_PASSES_FROM and n >= 2


def permutation_key(seed: int, pass_index: int, part: str = "") -> np.uint64:
    """64-bit key of pass `pass_index`'s shuffle: both ends derive the same, independent ones."""
    as_count(seed, "seed")
    suffix = f"/{part}" if part else ""
    material = f"satqkd/cascade-permutation/{seed}/{pass_index}{suffix}".encode()
    return np.uint64(int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "little"))


class LazyPasses:
    """The two-block passes of one end: their first blocks' bit masks and order keys, and
    which of them are still unbuilt (`lazy`, 1 each). Other passes have lazy 0."""

    def __init__(self, n: int, seed: int, passes: int) -> None:
        self.lazy = np.zeros(passes, dtype=np.uint8)
        self.members = np.zeros((passes, -(-n // 64)), dtype=np.uint64)
        self.order_keys = np.zeros(passes, dtype=np.uint64)
        self.half = -(-n // 2)
        for p in range(passes):
            if is_two_block(n, p):
                self.lazy[p] = 1
                two_block_members(self.members[p], n, self.half, permutation_key(seed, p))
                self.order_keys[p] = permutation_key(seed, p, "order")


def fill_permutation(out: np.ndarray, seed: int, pass_index: int) -> None:
    """out[:] = pass `pass_index`'s permutation (pass 0: the identity); validated arguments."""
    seed_value = as_count(seed, "seed")
    index = as_count(pass_index, "pass_index")
    if out.size >= 2**31:  # positions are held as int32
        raise InputError(f"a Cascade frame holds at most 2^31 - 1 bits, got {out.size}")
    if index == 0:
        out[:] = np.arange(out.size, dtype=out.dtype)
    else:
        shuffle_positions(out, permutation_key(seed_value, index))
