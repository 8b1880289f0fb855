"""Trial of a check-node update with phi computed in SIMD rather than read from tables (issue 16).

Not a benchmark module and not used by the project: a script that measures whether computing
phi(x) = -ln tanh(x / 2) with vectorisable float32 arithmetic (exp and log by exponent-bit
manipulation and short polynomials, a bit cast through a compiler intrinsic) would make the
layered sum-product decoder faster than `satqkd_core.ldpc.bp_decode`, whose phi comes from two
tables (one scalar load per lookup: LLVM does not emit gathers for AMD Zen 4, its cost model
finds them slower). It prints one JSON line:

- `phi_max_abs_error`: the arithmetic phi against float64 -ln tanh(x / 2) on [2^-16, 30];
- `phi_ns`: ns per phi over a 2^16-value array (the loop vectorised 16 wide);
- for each decoder (`tables`: bp_decode; `arithmetic`: this module's kernel, float32 state,
  each check's edges padded to a multiple of 16 with neutral values): ns per edge update over
  one-shot decodings of random words of the mother code at the QBER, the iterations each took
  and how many decoded to the sent word.
- `qc_min_sum`, `qc_min_sum_int16`: ns per edge update of layered min-sum on a random
  quasi-cyclic code of the same size, a circulant's checks in SIMD lanes, float32 and int16.

    python -m benchmarks.ldpc_kernel_trials --code r85d_n64k --qber 0.0175 --frames 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from satqkd_core.ldpc import (
    _decisions_satisfy,
    bp_decode,
    channel_llr_magnitude,
    check_syndrome,
    load_code,
    phi_tables,
)

LANES = 16  # float32 lanes of an AVX-512 register: each check's edges padded to a multiple
X_MIN = np.float32(2.0**-16)  # phi(2^-16) = 11.8, about where the fine table ends
X_MAX = np.float32(30.0)  # phi(30) ~ 1.9e-13: nothing
LOG2E = np.float32(1.4426950408889634)
LN2 = np.float32(0.6931471805599453)
SQRT2 = np.float32(1.4142135623730951)
FIXED = np.float32(2.0**20)  # phi sums in int32 fixed point: exact, so any order gives the same
UNFIXED = np.float32(2.0**-20)
INT16_SCALE = 64.0  # int16 LLR units per natural-log unit
# qc_min_sum_decode's (factor, offset, limit) per state dtype: normalised min-sum (factor 0.8)
# in float32; offset min-sum (offset 8, 0.125 in LLR units) in int16 with every value within
# +-8000, so that no int16 sum of two overflows
MIN_SUM_RULES = {
    "qc_min_sum": (np.float32(0.8), np.float32(0.0), np.float32(1e30)),
    "qc_min_sum_int16": (np.int16(1), np.int16(8), np.int16(8000)),
}


@intrinsic
def _bits_of(typingctx: Any, value: Any) -> Any:
    """The int32 with the bits of a float32."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _float_of(typingctx: Any, value: Any) -> Any:
    """The float32 with the bits of an int32."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def phi_arithmetic(x: float) -> float:
    """phi(x) = ln((1 + t) / (1 - t)), t = e^-x, in float32 without tables or libm calls."""
    x = min(max(x, X_MIN), X_MAX)
    a = x * LOG2E
    k = np.int32(a)  # floor: a >= 0
    r = (a - np.float32(k)) * LN2  # in [0, ln 2)
    # 1 - e^-r (Taylor, degree 7), so that 1 - t keeps its precision when k = 0 (small x)
    c = np.float32
    em = r * (c(1.0) + r * (c(-0.5) + r * (c(1 / 6) + r * (c(-1 / 24) + r * (
        c(1 / 120) + r * (c(-1 / 720) + r * c(1 / 5040)))))))  # fmt: skip
    t = (c(1.0) - em) * _float_of(np.int32((127 - k) << 23))
    one_minus_t = em if k == 0 else c(1.0) - t
    y = (c(1.0) + t) / one_minus_t
    bits = _bits_of(y)
    exponent = (bits >> 23) - 127
    mantissa = _float_of((bits & 0x007FFFFF) | 0x3F800000)
    high = mantissa > SQRT2
    mantissa = c(0.5) * mantissa if high else mantissa
    exponent = exponent + 1 if high else exponent
    s = (mantissa - c(1.0)) / (mantissa + c(1.0))
    s2 = s * s
    ln_y = c(exponent) * LN2 + c(2.0) * s * (
        c(1.0) + s2 * (c(1 / 3) + s2 * (c(1 / 5) + s2 * c(1 / 7)))
    )
    t2 = t * t  # where t is small, 2 atanh(t) by its series: ln y would lose it to rounding
    series = c(2.0) * t * (c(1.0) + t2 * (c(1 / 3) + t2 * (c(1 / 5) + t2 * c(1 / 7))))
    return series if t < c(0.125) else ln_y


@numba.njit(fastmath=True, error_model="numpy", nogil=True)
def _phi_array(values: np.ndarray, out: np.ndarray) -> None:
    for i in range(values.shape[0]):
        out[i] = phi_arithmetic(values[i])


@numba.njit(fastmath=True, error_model="numpy", nogil=True)
def _phi_sum(extrinsic: np.ndarray, phis: np.ndarray, padded: int) -> tuple[int, int]:
    total = np.int32(0)
    negative = np.int32(0)
    for k in range(padded):
        q = extrinsic[k]
        f = np.int32(phi_arithmetic(abs(q)) * FIXED)
        phis[k] = f
        total += f
        negative += np.int32(q < np.float32(0.0))
    return total, negative


@numba.njit(fastmath=True, error_model="numpy", nogil=True)
def _check_out(
    extrinsic: np.ndarray,
    phis: np.ndarray,
    out_messages: np.ndarray,
    out_posterior: np.ndarray,
    padded: int,
    total: int,
    negative: int,
) -> int:
    negatives = np.int32(0)
    for k in range(padded):
        q = extrinsic[k]
        magnitude = phi_arithmetic(np.float32(total - phis[k]) * UNFIXED)
        flip = negative ^ np.int32(q < np.float32(0.0))
        r = magnitude - np.float32(2.0) * magnitude * np.float32(flip)
        out_messages[k] = r
        value = q + r
        out_posterior[k] = value
        negatives += np.int32(value < np.float32(0.0))
    return negatives


@numba.njit(nogil=True, fastmath=True, error_model="numpy")
def bp_decode_arithmetic(
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    syndrome: np.ndarray,
    channel_llr: np.ndarray,
    messages: np.ndarray,
    posterior: np.ndarray,
    max_iterations: int,
) -> tuple[int, bool]:
    """Layered sum-product as bp_decode (no stall stop), float32, phi by `phi_arithmetic`."""
    m = check_ptr.shape[0] - 1
    for v in range(channel_llr.shape[0]):
        posterior[v] = channel_llr[v]
    for e in range(check_vars.shape[0]):
        posterior[check_vars[e]] += messages[e]
    widest = 0
    for c in range(m):
        widest = max(widest, check_ptr[c + 1] - check_ptr[c])
    widest = (widest + LANES - 1) // LANES * LANES
    extrinsic = np.empty(widest, np.float32)
    phis = np.empty(widest, np.int32)
    out_messages = np.empty(widest, np.float32)
    out_posterior = np.empty(widest, np.float32)
    for iteration in range(1, max_iterations + 1):
        unsatisfied = 0
        for c in range(m):
            start = check_ptr[c]
            degree = check_ptr[c + 1] - start
            padded = (degree + LANES - 1) // LANES * LANES
            for k in range(degree):
                extrinsic[k] = posterior[check_vars[start + k]] - messages[start + k]
            for k in range(degree, padded):
                extrinsic[k] = X_MAX  # a sure 0: adds ~nothing to the sum, no sign
            total, negative = _phi_sum(extrinsic, phis, padded)
            negative = (negative + np.int32(syndrome[c])) & 1
            parity = _check_out(
                extrinsic, phis, out_messages, out_posterior, padded, total, negative
            )
            for k in range(degree):
                messages[start + k] = out_messages[k]
                posterior[check_vars[start + k]] = out_posterior[k]
            unsatisfied += (parity + np.int32(syndrome[c])) & 1
        if unsatisfied == 0 and _decisions_satisfy(check_ptr, check_vars, syndrome, posterior):
            return iteration, True
    return max_iterations, False


def random_qc_code(
    circulant: int, block_columns: int, block_rows: int, column_weights: tuple[int, ...], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random quasi-cyclic code (not designed, for timing only): block column j has
    column_weights[j % len] circulant permutations of size `circulant` at random block rows
    and shifts. Returns (block_ptr, block_column, block_shift) by block rows and H expanded
    (check_ptr, check_vars as uint32), check r * circulant + z holding, for each block of
    row r in order, the variable j * circulant + (z + shift) % circulant."""
    rng = np.random.default_rng(seed)
    rows: list[list[tuple[int, int]]] = [[] for _ in range(block_rows)]
    for j in range(block_columns):
        weight = column_weights[j % len(column_weights)]
        for r in rng.choice(block_rows, weight, replace=False):
            rows[int(r)].append((j, int(rng.integers(0, circulant))))
    block_ptr = np.cumsum([0] + [len(row) for row in rows]).astype(np.int64)
    block_column = np.array([j for row in rows for j, _ in row], dtype=np.int64)
    block_shift = np.array([s for row in rows for _, s in row], dtype=np.int64)
    lanes = np.arange(circulant)
    check_vars = np.concatenate([
        np.stack([j * circulant + (lanes + s) % circulant for j, s in row], axis=1).ravel()
        for row in rows
    ]).astype(np.uint32)  # fmt: skip
    degrees = np.repeat([len(row) for row in rows], circulant)
    check_ptr = np.concatenate([[0], np.cumsum(degrees)]).astype(np.int64)
    return block_ptr, block_column, block_shift, check_ptr, check_vars


@numba.njit(nogil=True, fastmath=True, error_model="numpy")
def qc_min_sum_decode(
    block_ptr: np.ndarray,
    block_column: np.ndarray,
    block_shift: np.ndarray,
    circulant: int,
    syndrome: np.ndarray,
    channel_llr: np.ndarray,
    messages: np.ndarray,
    posterior: np.ndarray,
    max_iterations: int,
    rule: tuple,
) -> tuple[int, bool]:
    """Layered min-sum on a quasi-cyclic code, the `circulant` checks of a block row updated
    together, every loop over them contiguous (so vectorised across them). `rule` = (factor,
    offset, limit), in the state's dtype: a check's message magnitude is max(factor * the
    least other |extrinsic| - offset, 0), and every extrinsic and posterior value is kept
    within +-limit (`MIN_SUM_RULES`: normalised min-sum in float32, offset min-sum in int16).
    `messages` are per block edge and lane (block edge b, lane z at b * circulant + z); no
    stall stop; converged when a sweep leaves every check satisfied.

    With int16 state a register would hold 32 lanes instead of float32's 16, but numba types
    arithmetic on int16 values as int64, so those loops compile 8 lanes wide (vpminsq /
    vpmaxsq): 32 lanes would need an intrinsic for every operation, i.e. code outside
    numba's typed Python."""
    factor, offset, limit = rule
    size = circulant
    zero = offset - offset
    lo, hi = -limit, limit
    for v in range(channel_llr.shape[0]):
        posterior[v] = channel_llr[v]
    for b in range(block_column.shape[0]):
        for z in range(size):
            v = block_column[b] * size + (z + block_shift[b]) % size
            posterior[v] = min(max(posterior[v] + messages[b * size + z], lo), hi)
    widest = 0
    for r in range(block_ptr.shape[0] - 1):
        widest = max(widest, block_ptr[r + 1] - block_ptr[r])
    extrinsic = np.empty((widest, size), posterior.dtype)
    least = np.empty(size, posterior.dtype)
    second = np.empty(size, posterior.dtype)
    negative = np.empty(size, np.int32)
    parity = np.empty(size, np.int32)
    for iteration in range(1, max_iterations + 1):
        unsatisfied = 0
        for r in range(block_ptr.shape[0] - 1):
            for z in range(size):
                least[z] = second[z] = limit + limit
                negative[z] = parity[z] = syndrome[r * size + z]
            for k in range(block_ptr[r + 1] - block_ptr[r]):
                b = block_ptr[r] + k
                base, shift = block_column[b] * size, block_shift[b]
                e, m = extrinsic[k], messages[b * size : (b + 1) * size]
                # the circulant's lanes z read variables z + shift: two contiguous runs
                tail, head = posterior[base + shift : base + size], posterior[base : base + shift]
                for z in range(size - shift):
                    e[z] = min(max(tail[z] - m[z], lo), hi)
                for z in range(shift):
                    e[size - shift + z] = min(max(head[z] - m[size - shift + z], lo), hi)
                for z in range(size):
                    q = e[z]
                    x = abs(q)
                    second[z] = min(second[z], max(least[z], x))
                    least[z] = min(least[z], x)
                    negative[z] ^= np.int32(q < zero)
            for k in range(block_ptr[r + 1] - block_ptr[r]):
                b = block_ptr[r] + k
                base, shift = block_column[b] * size, block_shift[b]
                e, m = extrinsic[k], messages[b * size : (b + 1) * size]
                for z in range(size):
                    q = e[z]
                    magnitude = max(factor * (second[z] if abs(q) == least[z] else least[z])
                                    - offset, zero)  # fmt: skip
                    out = -magnitude if negative[z] ^ np.int32(q < zero) else magnitude
                    m[z] = out
                    value = min(max(q + out, lo), hi)
                    e[z] = value
                    parity[z] ^= np.int32(value < zero)
                tail, head = posterior[base + shift : base + size], posterior[base : base + shift]
                for z in range(size - shift):
                    tail[z] = e[z]
                for z in range(shift):
                    head[z] = e[size - shift + z]
            for z in range(size):
                unsatisfied += parity[z]
        if unsatisfied == 0:
            return iteration, True
    return max_iterations, False


def qc_min_sum_figures(qber: float, iterations: int = 100, repeats: int = 5) -> dict:
    """ns per edge update of `qc_min_sum_decode` with float32 and with int16 state on a
    random QC code shaped like r85d_n64k (circulants of 256, 38 x 256 blocks, column weights 7
    and 8: ~4.9e5 edges), at a QBER where neither converges, so every run makes `iterations`
    sweeps."""
    size = 256
    block_ptr, block_column, block_shift, check_ptr, check_vars = random_qc_code(
        size, 256, 38, (7, 8), seed=0
    )
    n = 256 * size
    rng = np.random.default_rng(1)
    sent = rng.integers(0, 2, n).astype(np.uint8)
    seen = sent ^ (rng.random(n) < qber).astype(np.uint8)
    syndrome = check_syndrome(check_ptr, check_vars, sent)
    magnitude = channel_llr_magnitude(qber)
    units = {"qc_min_sum": magnitude, "qc_min_sum_int16": round(magnitude * INT16_SCALE)}
    figures: dict[str, dict] = {}
    for name, rule in MIN_SUM_RULES.items():
        dtype = type(rule[0])
        llr = np.where(seen == 0, units[name], -units[name]).astype(dtype)
        posterior = np.empty(n, dtype)
        messages = np.zeros(check_vars.size, dtype)
        args = (block_ptr, block_column, block_shift, size, syndrome, llr)
        qc_min_sum_decode(*args, messages, posterior, 1, rule)  # compiles
        seconds, edges = 0.0, 0
        for _ in range(repeats):
            messages[:] = 0
            started = time.perf_counter()
            done, _ = qc_min_sum_decode(*args, messages, posterior, iterations, rule)
            seconds += time.perf_counter() - started
            edges += done * check_vars.size
        figures[name] = {"qber": qber, "edges": int(check_vars.size),
                         "ns_per_edge": round(seconds / edges * 1e9, 2)}  # fmt: skip
    return figures


def phi_figures() -> dict:
    """Accuracy of phi_arithmetic against float64, and its cost in a vectorised loop."""
    xs = np.geomspace(float(X_MIN), float(X_MAX), 1 << 16).astype(np.float32)
    out = np.empty_like(xs)
    _phi_array(xs, out)
    exact = np.log1p(2.0 / np.expm1(xs.astype(np.float64)))  # -ln tanh(x / 2), as phi_tables
    started = time.perf_counter()
    repeats = 200
    for _ in range(repeats):
        _phi_array(xs, out)
    ns = (time.perf_counter() - started) / repeats / xs.size * 1e9
    return {"phi_max_abs_error": float(np.max(np.abs(out - exact))), "phi_ns": round(ns, 3)}


def decode_figures(code_name: str, qber: float, frames: int, max_iterations: int = 200) -> dict:
    """ns per edge update of both decoders on the same one-shot decodings."""
    code = load_code(code_name)
    coarse, fine = phi_tables()
    variables = code.check_vars.view(np.uint32)
    rng = np.random.default_rng(1)
    magnitude = channel_llr_magnitude(qber)
    figures: dict[str, dict[str, Any]] = {
        name: {"seconds": 0.0, "edges": 0, "iterations": [], "decoded": 0}
        for name in ("tables", "arithmetic")
    }
    for frame in range(frames + 1):  # frame 0 compiles and warms up: not counted
        sent = rng.integers(0, 2, code.n).astype(np.uint8)
        seen = sent ^ (rng.random(code.n) < qber).astype(np.uint8)
        syndrome = check_syndrome(code.check_ptr, code.check_vars, sent)
        llr = np.where(seen == 0, magnitude, -magnitude)
        for name, figure in figures.items():
            started = time.perf_counter()
            if name == "tables":
                posterior = np.empty(code.n)
                iterations, _ = bp_decode(
                    code.check_ptr, variables, syndrome, llr, np.zeros(variables.size),
                    posterior, max_iterations, 0, 1.0, coarse, fine,
                )  # fmt: skip
            else:
                posterior32 = np.empty(code.n, np.float32)
                iterations, _ = bp_decode_arithmetic(
                    code.check_ptr, variables, syndrome, llr.astype(np.float32),
                    np.zeros(variables.size, np.float32), posterior32, max_iterations,
                )  # fmt: skip
                posterior = posterior32.astype(np.float64)
            elapsed = time.perf_counter() - started
            if frame:
                figure["seconds"] += elapsed
                figure["edges"] += iterations * variables.size
                figure["iterations"].append(int(iterations))
                figure["decoded"] += int(np.array_equal((posterior < 0).astype(np.uint8), sent))
    result: dict[str, Any] = {"code": code_name, "qber": qber, "frames": frames}
    for name, figure in figures.items():
        result[name] = {
            "ns_per_edge": round(figure["seconds"] / figure["edges"] * 1e9, 2),
            "iterations": figure["iterations"],
            "decoded": figure["decoded"],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: one shipped code, one QBER, a number of frames; prints a JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ldpc_kernel_trials")
    parser.add_argument("--code", default="r85d_n64k", help="shipped mother code name")
    parser.add_argument("--qber", type=float, default=0.0175)
    parser.add_argument("--frames", type=int, default=5)
    args = parser.parse_args(argv)
    figures = {**phi_figures(), **decode_figures(args.code, args.qber, args.frames)}
    print(json.dumps({**figures, **qc_min_sum_figures(0.05)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
