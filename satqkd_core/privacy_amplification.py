"""Privacy amplification by Toeplitz hashing, exact for every input.

Convention. For an input key x of n bits, an output of m bits (1 <= m <= n) and a seed s of
n + m - 1 bits, the m x n Toeplitz matrix is T[i, j] = s[i - j + n - 1] (so its first row is
s[n-1], s[n-2], ..., s[0] and its first column s[n-1], ..., s[n+m-2]); the output is
y = T x over GF(2): y[i] = sum_j s[i - j + n - 1] x[j] mod 2. Toeplitz matrices with a uniform
seed form a 2-universal family (Krawczyk, CRYPTO 1994; Mansour, Nisan, Tiwari, STOC 1990), as
the leftover hash lemma needs.

Method. y[i] is coefficient i + n - 1 of the product s(z) x(z) in GF(2)[z] (s(z) = sum s[t] z^t,
x(z) = sum x[j] z^j): the hash is a middle product of two binary polynomials, computed with
carry-less multiplication (64 x 64 -> 128-bit products in GF(2)[z]; Gueron and Kounavis, Intel
white paper 323640, 2014) and no rounding anywhere. Bits are packed 64 to a word, coefficient
64 w + t in bit t of word w. The matrix is cut along its columns into square Toeplitz blocks of
K = 64 k >= m rows (rows past m see zero seed and are dropped): y = sum_c T_c x_c. A square
block is split in four half-size Toeplitz blocks, T = [[A, B], [C, A]], and
    y0 = A (x0 + x1) + (A + B) x1,    y1 = A (x0 + x1) + (A + C) x0,
three half-size products instead of four: the Toeplitz matrix-vector form of Karatsuba's method
(Fan and Hasan, IEEE Trans. Computers 56, 224 (2007), section 3). The split recurses down to
blocks of b words (8 <= b <= 64, a multiple of 8), multiplied word by word: 3^L b (b + 1) word
products for k = b 2^L, O(k^1.585), and 8 k words of workspace whatever n.

Hardware. The word products use VPCLMULQDQ on 512-bit vectors (eight products per two
instructions) when numba's target has AVX-512F and VPCLMULQDQ, else PCLMULQDQ. A target with
neither (not x86-64, or NUMBA_CPU_NAME=generic without those features) takes the float64 FFT path
of `privacy_amplification_fft`, which returns the same bits (decision 0006).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from typing import Any, cast

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

from satqkd_core.bits import as_bit_array, as_count
from satqkd_core.errors import InputError
from satqkd_core.privacy_amplification_fft import toeplitz_product_parity_fft

__all__ = [
    "CLMUL_INSTRUCTION",
    "toeplitz_hash",
    "toeplitz_hash_reference",
    "toeplitz_seed_bits",
]

_WORD_MASK = (1 << 64) - 1
# Leaf size b in words: a leaf costs b (b + 1) word products plus a fixed cost of about this many
# (measured: stack handling and the half-size sums of its parent), which sets where to stop.
_LEAF_OVERHEAD_PRODUCTS = 1000
_MAX_LEAF_WORDS = 64


def _target_clmul_instruction() -> str:
    """The carry-less multiply numba's target machine has: "vpclmulqdq512", "pclmulqdq" or ""."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ""
    # numba compiles for these features (its own rule: NUMBA_CPU_FEATURES, else the host's);
    # numba.core.config sets its attributes at run time, so mypy cannot see CPU_FEATURES.
    features_setting = config.CPU_FEATURES  # type: ignore[attr-defined]
    flat = features_setting if features_setting is not None else get_host_cpu_features()
    features = {f[1:] for f in flat.split(",") if f.startswith("+")}
    if {"avx512f", "vpclmulqdq"} <= features:
        return "vpclmulqdq512"
    if "pclmul" in features:
        return "pclmulqdq"
    return ""


CLMUL_INSTRUCTION = _target_clmul_instruction()


def toeplitz_seed_bits(input_bits: int, output_bits: int) -> int:
    """Seed length n + m - 1 for hashing n input bits down to m output bits."""
    n = as_count(input_bits, "input_bits", minimum=1)
    m = as_count(output_bits, "output_bits", minimum=1)
    if m > n:
        raise InputError(f"output_bits ({m}) must not exceed input_bits ({n})")
    return n + m - 1


def toeplitz_hash(key: np.ndarray, seed: np.ndarray, output_bits: int) -> np.ndarray:
    """Toeplitz hash T x of `key` with T[i, j] = seed[i - j + n - 1]; m = output_bits (uint8)."""
    bits, seed_bits, m = _validated(key, seed, output_bits)
    if not CLMUL_INSTRUCTION:
        return toeplitz_product_parity_fft(bits, seed_bits, m)
    return _toeplitz_product_parity_clmul(bits, seed_bits, m)


def toeplitz_hash_reference(key: np.ndarray, seed: np.ndarray, output_bits: int) -> np.ndarray:
    """Plain O(n m) evaluation of the definition y[i] = sum_j seed[i - j + n - 1] key[j] mod 2."""
    bits, seed_bits, m = _validated(key, seed, output_bits)
    n = bits.size
    out = np.zeros(m, dtype=np.uint8)
    for i in range(m):
        total = 0
        for j in range(n):
            total += int(seed_bits[i - j + n - 1]) * int(bits[j])
        out[i] = total % 2
    return out


def _validated(
    key: object, seed: object, output_bits: object
) -> tuple[np.ndarray, np.ndarray, int]:
    bits = as_bit_array(key, "key")
    seed_bits = as_bit_array(seed, "seed")
    m = as_count(output_bits, "output_bits", minimum=1)
    if m > bits.size:
        raise InputError(f"output_bits ({m}) must not exceed the key length ({bits.size})")
    expected = bits.size + m - 1
    if seed_bits.size != expected:
        raise InputError(
            f"seed must hold n + m - 1 = {expected} bits for n = {bits.size}, m = {m}, "
            f"got {seed_bits.size}"
        )
    return bits, seed_bits, m


def _toeplitz_product_parity_clmul(key: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    """y = T x by carry-less multiplication (inputs already validated)."""
    block_words, leaf_words = _block_shape(m)
    out = np.empty(block_words, dtype=np.uint64)
    _toeplitz_kernel(
        _packed_words(key), _packed_words(seed), key.size, block_words, leaf_words, out
    )
    raw = out.astype("<u8", copy=False).view(np.uint8)
    return np.unpackbits(raw, count=m, bitorder="little")


def _packed_words(bits: np.ndarray) -> np.ndarray:
    """0/1 bytes -> uint64 words, bit t of word w holding bits[64 w + t], zero beyond the end."""
    n_words = -(-bits.size // 64)
    raw = np.zeros(8 * n_words, dtype=np.uint8)
    raw[: -(-bits.size // 8)] = np.packbits(bits, bitorder="little")
    return raw.view("<u8").astype(np.uint64, copy=False)


def _block_shape(output_bits: int) -> tuple[int, int]:
    """Square block size k = b 2^L words (64 k >= output_bits) and leaf size b of least cost."""
    words = -(-output_bits // 64)
    best = (0.0, 0, 0)
    levels = 0
    while True:
        per_leaf = -(-words // (1 << levels))
        leaf = 8 * -(-per_leaf // 8)
        if leaf <= _MAX_LEAF_WORDS:
            cost = 3.0**levels * (leaf * (leaf + 1) + _LEAF_OVERHEAD_PRODUCTS)
            if not best[1] or cost < best[0]:
                best = (cost, leaf << levels, leaf)
        if per_leaf <= 8:
            return best[1], best[2]
        levels += 1


# ---- carry-less multiplication --------------------------------------------------------------

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)

# clmul_dot(words, a_end, x_start, groups) -> (lo, hi), callable from jitted code only.
_ClmulDot = Callable[[np.ndarray, int, int, int], tuple[np.uint64, np.uint64]]


def _make_clmul_dot(instruction: str) -> _ClmulDot:
    """Intrinsic clmul_dot(words, a_end, x_start, groups) -> (lo, hi): the XOR over
    t < 8 groups of the 128-bit carry-less products words[a_end - t] * words[x_start + t]."""

    def lane_constant(values: list[int]) -> ir.Constant:
        return ir.Constant(ir.VectorType(_I32, len(values)), values)

    def products_512(
        builder: ir.IRBuilder, data: ir.Value, args: list[ir.Value], acc: ir.Value
    ) -> None:
        v8 = ir.VectorType(_I64, 8)
        fn = builder.module.declare_intrinsic(
            "llvm.x86.pclmulqdq.512", fnty=ir.FunctionType(v8, [v8, v8, _I8])
        )
        a_end, x_start, groups = args
        with cgutils.for_range(builder, groups) as loop:
            offset = builder.mul(loop.index, ir.Constant(loop.index.type, 8))
            a_first = builder.sub(builder.sub(a_end, offset), ir.Constant(a_end.type, 7))
            a_ptr = builder.bitcast(builder.gep(data, [a_first]), v8.as_pointer())
            x_ptr = builder.bitcast(
                builder.gep(data, [builder.add(x_start, offset)]), v8.as_pointer()
            )
            # Lane t of the reversed seed words meets lane t of the key words: index sum a_end.
            a = builder.shuffle_vector(
                builder.load(a_ptr, align=8),
                ir.Constant(v8, ir.Undefined),
                lane_constant([7, 6, 5, 4, 3, 2, 1, 0]),
            )
            x = builder.load(x_ptr, align=8)
            even = builder.call(fn, [a, x, ir.Constant(_I8, 0x00)])  # low words of 128-bit lanes
            odd = builder.call(fn, [a, x, ir.Constant(_I8, 0x11)])  # high words
            builder.store(builder.xor(builder.load(acc), builder.xor(even, odd)), acc)

    def products_128(
        builder: ir.IRBuilder, data: ir.Value, args: list[ir.Value], acc: ir.Value
    ) -> None:
        v2 = ir.VectorType(_I64, 2)
        fn = builder.module.declare_intrinsic(
            "llvm.x86.pclmulqdq", fnty=ir.FunctionType(v2, [v2, v2, _I8])
        )
        a_end, x_start, groups = args
        count = builder.mul(groups, ir.Constant(groups.type, 8))
        undefined = ir.Constant(v2, ir.Undefined)
        zero = ir.Constant(_I32, 0)
        with cgutils.for_range(builder, count) as loop:
            a = builder.load(builder.gep(data, [builder.sub(a_end, loop.index)]))
            x = builder.load(builder.gep(data, [builder.add(x_start, loop.index)]))
            product = builder.call(
                fn,
                [
                    builder.insert_element(undefined, a, zero),
                    builder.insert_element(undefined, x, zero),
                    ir.Constant(_I8, 0x00),
                ],
            )
            builder.store(builder.xor(builder.load(acc), product), acc)

    # numba's typing and lowering objects (contexts, signatures) are untyped: Any below.
    @intrinsic
    def clmul_dot(
        typingctx: Any,
        words: types.Type,
        a_end: types.Type,
        x_start: types.Type,
        groups: types.Type,
    ) -> tuple[Any, Callable[..., Any]] | None:
        if not instruction or not (
            isinstance(words, types.Array) and words.dtype == types.uint64 and words.ndim == 1
        ):
            return None
        signature = types.UniTuple(types.uint64, 2)(words, types.intp, types.intp, types.intp)

        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Sequence[ir.Value]) -> Any:
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            if instruction == "vpclmulqdq512":
                v8 = ir.VectorType(_I64, 8)
                acc = cgutils.alloca_once_value(builder, ir.Constant(v8, None))
                products_512(builder, data, list(args[1:]), acc)
                total = builder.load(acc)
                # XOR the four 128-bit lanes into one.
                half = builder.xor(
                    builder.shuffle_vector(total, total, lane_constant([0, 1, 2, 3])),
                    builder.shuffle_vector(total, total, lane_constant([4, 5, 6, 7])),
                )
                lanes = builder.xor(
                    builder.shuffle_vector(half, half, lane_constant([0, 1])),
                    builder.shuffle_vector(half, half, lane_constant([2, 3])),
                )
            else:
                v2 = ir.VectorType(_I64, 2)
                acc = cgutils.alloca_once_value(builder, ir.Constant(v2, None))
                products_128(builder, data, list(args[1:]), acc)
                lanes = builder.load(acc)
            low = builder.extract_element(lanes, ir.Constant(_I32, 0))
            high = builder.extract_element(lanes, ir.Constant(_I32, 1))
            return context.make_tuple(builder, sig.return_type, [low, high])

        return signature, codegen

    return cast("_ClmulDot", clmul_dot)


_clmul_dot = _make_clmul_dot(CLMUL_INSTRUCTION)


@numba.njit(cache=True, nogil=True)
def _clmul_dot_kernel(
    words: np.ndarray, a_end: int, x_start: int, groups: int
) -> tuple[np.uint64, np.uint64]:
    """XOR of the 8 groups carry-less products words[a_end - t] words[x_start + t]: (lo, hi)."""
    return _clmul_dot(words, a_end, x_start, groups)


def _clmul_dot_kernel_reference(
    words: np.ndarray, a_end: int, x_start: int, groups: int
) -> tuple[int, int]:
    """Plain-Python reference for _clmul_dot_kernel (shift-and-XOR products of Python ints)."""
    total = 0
    for t in range(8 * groups):
        a, x = int(words[a_end - t]), int(words[x_start + t])
        for bit in range(64):
            if (x >> bit) & 1:
                total ^= a << bit
    return total & _WORD_MASK, total >> 64


# ---- Toeplitz products on packed words -----------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _tmvp_kernel(
    work: np.ndarray, seed_at: int, key_at: int, out_at: int, k: int, leaf: int, scratch_at: int
) -> None:
    """Square Toeplitz product in GF(2) on words of `work`: out[i] = sum_j u[64 k + i - j] x[j]
    for bits i, j < 64 k, with u the 2 k seed words at seed_at, x the k key words at key_at and
    the k output words at out_at; k = leaf 2^L, leaf a multiple of 8; uses 4 k words from
    scratch_at. The recursion (three half-size products) runs on an explicit stack."""
    # Frame: seed, key, out, size, scratch, stage (which of the three products comes next).
    stack = np.empty((64, 6), dtype=np.int64)
    stack[0, 0], stack[0, 1], stack[0, 2] = seed_at, key_at, out_at
    stack[0, 3], stack[0, 4], stack[0, 5] = k, scratch_at, 0
    depth = 0
    while depth >= 0:
        u, x, y = stack[depth, 0], stack[depth, 1], stack[depth, 2]
        size, scratch, stage = stack[depth, 3], stack[depth, 4], stack[depth, 5]
        if size <= leaf:
            # Output word q - size is word q of the product: low halves of index sum q, high
            # halves of index sum q - 1.
            carry = np.uint64(0)
            for q in range(size - 1, 2 * size):
                low, high = _clmul_dot(work, u + q, x, size // 8)
                if q >= size:
                    work[y + q - size] = low ^ carry
                carry = high
            depth -= 1
            continue
        h = size // 2
        seed_sum, key_sum, product = scratch, scratch + 2 * h, scratch + 3 * h
        stack[depth, 5] = stage + 1
        child = depth + 1
        if stage == 0:  # (A + B) x1 -> y0, with A = u[h, 3h), B = u[0, 2h)
            for i in range(2 * h):
                work[seed_sum + i] = work[u + h + i] ^ work[u + i]
            stack[child, 0], stack[child, 1], stack[child, 2] = seed_sum, x + h, y
        elif stage == 1:  # (A + C) x0 -> y1, with C = u[2h, 4h)
            for i in range(2 * h):
                work[seed_sum + i] = work[u + h + i] ^ work[u + 2 * h + i]
            stack[child, 0], stack[child, 1], stack[child, 2] = seed_sum, x, y + h
        elif stage == 2:  # A (x0 + x1) -> product
            for i in range(h):
                work[key_sum + i] = work[x + i] ^ work[x + h + i]
            stack[child, 0], stack[child, 1], stack[child, 2] = u + h, key_sum, product
        else:
            for i in range(h):
                common = work[product + i]
                work[y + i] ^= common
                work[y + h + i] ^= common
            depth -= 1
            continue
        stack[child, 3], stack[child, 4], stack[child, 5] = h, scratch + 4 * h, 0
        depth = child


def _tmvp_kernel_reference(
    work: np.ndarray, seed_at: int, key_at: int, out_at: int, k: int, leaf: int, scratch_at: int
) -> None:
    """Plain-Python reference for _tmvp_kernel: the definition, bit by bit."""
    del leaf, scratch_at  # the definition needs neither

    def bit(word_at: int, index: int) -> int:
        return (int(work[word_at + index // 64]) >> (index % 64)) & 1

    size = 64 * k
    for word in range(k):
        value = 0
        for t in range(64):
            i = 64 * word + t
            total = sum(bit(seed_at, size + i - j) & bit(key_at, j) for j in range(size))
            value |= (total & 1) << t
        work[out_at + word] = value


@numba.njit(cache=True, nogil=True)
def _bit_window_kernel(words: np.ndarray, first_bit: int, out: np.ndarray, out_at: int) -> None:
    """Fill out[out_at:] with the words of bits first_bit, first_bit + 1, ... of `words`
    (bits outside the array are zero; first_bit may be negative)."""
    n_words = words.size
    for i in range(out.size - out_at):
        position = first_bit + 64 * i
        index = position >> 6  # floor division, also for negative positions
        shift = np.uint64(position & 63)
        low = words[index] if 0 <= index < n_words else np.uint64(0)
        value = low >> shift
        if shift:
            high = words[index + 1] if 0 <= index + 1 < n_words else np.uint64(0)
            value |= high << (np.uint64(64) - shift)
        out[out_at + i] = value


def _bit_window_kernel_reference(
    words: np.ndarray, first_bit: int, out: np.ndarray, out_at: int
) -> None:
    """Plain-Python reference for _bit_window_kernel."""
    total = 64 * len(words)
    for i in range(len(out) - out_at):
        value = 0
        for t in range(64):
            p = first_bit + 64 * i + t
            if 0 <= p < total and (int(words[p // 64]) >> (p % 64)) & 1:
                value |= 1 << t
        out[out_at + i] = value


@numba.njit(cache=True, nogil=True)
def _toeplitz_kernel(
    key_words: np.ndarray, seed_words: np.ndarray, n: int, k: int, leaf: int, out: np.ndarray
) -> None:
    """out (k words) = sum over column blocks c of T_c x_c, the packed Toeplitz product of the
    n-bit key by the (n + m - 1)-bit seed for the first 64 k >= m output bits."""
    # Workspace: block seed u (2k), key block (k), block product (k), recursion scratch (4k).
    work = np.empty(8 * k, dtype=np.uint64)
    out[:] = 0
    block_bits = 64 * k
    for c in range((n + block_bits - 1) // block_bits):
        # T_c[i, j] = s[i - (c K + j) + n - 1] = u[K + i - j] with u[v] = s[v + n - 1 - (c + 1) K]
        _bit_window_kernel(seed_words, n - 1 - (c + 1) * block_bits, work[: 2 * k], 0)
        for i in range(k):
            source = c * k + i
            work[2 * k + i] = key_words[source] if source < key_words.size else np.uint64(0)
        _tmvp_kernel(work, 0, 2 * k, 3 * k, k, leaf, 4 * k)
        for i in range(k):
            out[i] ^= work[3 * k + i]
