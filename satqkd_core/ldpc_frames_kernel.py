"""LDPC decoding of several frames in lockstep, vectorised across frames (decision 0044).

Within one frame the layered sum-product update is a dependent gather/scatter through the
frame's posteriors and does not vectorise (decision 0040). Across frames it does: `LANES`
frames of the same code run the same schedule, so the decoder keeps their state frame-minor
(posterior[v, lane], messages[e, lane]) and every update becomes one unit-stride operation over
the lanes (AVX-512 / AVX2 vectors; the phi table lookups become vector gathers).

Each frame's arithmetic is exactly `satqkd_core.ldpc.bp_decode`'s (same layered schedule, same
float64 operations in the same order, same convergence test, stall rule and iteration count),
so every frame's outcome is bit-identical to decoding it alone. A lane whose frame has finished
is refilled at once with the next frame of the batch; once none is left it keeps computing on
its last frame's state, whose results are no longer read (no masking in the vector loop), and
once fewer than `ALONE_BELOW` lanes are busy their frames finish one at a time (`bp_decode`'s
loop): an idle lane costs as much as a busy one.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import cgutils
from numba.extending import intrinsic

from satqkd_core.bits import as_bit_array, as_count
from satqkd_core.errors import InputError
from satqkd_core.ldpc import (
    _COARSE_SCALE,
    _FINE_LIMIT,
    _FINE_SCALE,
    _TABLE_SIZE,
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_STALL_ITERATIONS,
    LdpcCode,
    _decisions_satisfy,
    bp_decode_reference,
    phi_tables,
)

__all__ = [
    "ALONE_BELOW",
    "LANES",
    "MAX_CHECK_DEGREE",
    "FramesResult",
    "bp_decode_frames",
    "bp_decode_frames_reference",
    "decode_syndromes",
    "lane_table",
]

# Frames decoded in lockstep: one 64-byte cache line of float64 per variable and edge, one
# AVX-512 vector (measured against 4 and 16 in decision 0044).
LANES = 8
# once no frame is left to start, frames finish alone when fewer lanes than this are busy
ALONE_BELOW = 6


def lane_table() -> np.ndarray:
    """Get the phi table of the lockstep kernel: the fine table followed by the coarse one."""
    coarse, fine = phi_tables()
    return np.concatenate((fine, coarse))


# numba freezes this global into the compiled kernel as a constant array: LLVM then knows
# that its gathers never alias the stores of the sweep (a table passed as an argument
# blocks the vectoriser: "cannot identify array bounds")
_TABLE = lane_table()


@numba.njit(cache=True, nogil=True)
def _load_lane(
    lane: int,
    frame: int,
    check_vars: np.ndarray,
    syndromes: np.ndarray,
    channel_llr: np.ndarray,
    messages: np.ndarray,
    syn: np.ndarray,
    post: np.ndarray,
    msg: np.ndarray,
) -> None:
    """Kernel helper: put a frame into a lane (posterior summed in bp_decode's edge order)."""
    for c in range(syndromes.shape[1]):
        syn[c, lane] = syndromes[frame, c]
    for v in range(channel_llr.shape[1]):
        post[v, lane] = channel_llr[frame, v]
    for e in range(check_vars.shape[0]):
        value = np.float64(messages[frame, e])
        msg[e, lane] = value
        post[check_vars[e], lane] += value


@numba.njit(cache=True, nogil=True)
def _lane_satisfies(
    check_ptr: np.ndarray, check_vars: np.ndarray, syn: np.ndarray, post: np.ndarray, lane: int
) -> bool:
    """Kernel helper: do the lane's hard decisions (bit 1 where the LLR is negative) match?"""
    for c in range(check_ptr.shape[0] - 1):
        parity = syn[c, lane]
        for e in range(check_ptr[c], check_ptr[c + 1]):
            if post[check_vars[e], lane] < 0.0:
                parity ^= 1
        if parity:
            return False
    return True


# scratch rows of the sweep (each `LANES` float64 wide, on the stack): extrinsic LLRs and phi
# values of a check's edges (up to MAX_CHECK_DEGREE each), then the phi sum, the sign parity and
# the syndrome parity of each lane
MAX_CHECK_DEGREE = 256
_PHI_ROWS = MAX_CHECK_DEGREE
_TOTAL_ROW = 2 * MAX_CHECK_DEGREE
_SCRATCH_SIZE = (2 * MAX_CHECK_DEGREE + 3) * LANES


@intrinsic
def _stack_scratch(typingctx):
    """Kernel helper: a pointer to `_SCRATCH_SIZE` float64 on the stack of the caller.

    Memory LLVM sees allocated on the stack cannot alias the state arrays, so the vectoriser
    needs no run-time overlap checks for it (with numpy scratch arrays it needs a dozen, and
    then vectorises only from ~24 lanes on).
    """

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(
            builder, context.get_value_type(numba.types.float64), size=_SCRATCH_SIZE
        )

    return numba.types.CPointer(numba.types.float64)(), codegen


@numba.njit(cache=True, nogil=True)
def _sweep(
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    syn: np.ndarray,
    post: np.ndarray,
    msg: np.ndarray,
    unsatisfied: np.ndarray,
) -> None:
    """Kernel helper: one layered iteration of every lane; unsatisfied checks per lane.

    The loops over lanes run over `post.shape[1]` (not a constant: LLVM would unroll a loop
    of 8 and numba does not run the straight-line vectoriser) and vectorise.
    """
    scratch = numba.carray(_stack_scratch(), (_SCRATCH_SIZE,))
    zero = 0.0
    fine_limit = _FINE_LIMIT
    fine_scale = _FINE_SCALE
    coarse_scale = _COARSE_SCALE
    last = np.uint64(_TABLE_SIZE - 1)
    coarse_base = np.uint64(_TABLE_SIZE)
    width = np.uint64(LANES)
    phi_base = np.uint64(_PHI_ROWS * LANES)
    total_base = np.uint64(_TOTAL_ROW * LANES)
    negative_base = total_base + width
    parity_base = negative_base + width
    lanes = np.uint64(post.shape[1])
    one = np.uint64(1)
    for c in range(check_ptr.shape[0] - 1):
        start = np.uint64(check_ptr[c])
        stop = np.uint64(check_ptr[c + 1])
        cu = np.uint64(c)
        lane = np.uint64(0)
        while lane < lanes:
            scratch[total_base + lane] = zero
            scratch[negative_base + lane] = 1.0 if syn[cu, lane] else zero
            scratch[parity_base + lane] = 1.0 if syn[cu, lane] else zero
            lane += one
        e = start
        while e < stop:
            row = (e - start) * width
            v = check_vars[e]
            lane = np.uint64(0)
            while lane < lanes:
                q = post[v, lane] - msg[e, lane]
                scratch[row + lane] = q
                # negatives counted with an unconditional add (a conditional update becomes a
                # masked store, which stalls the next iteration's load)
                scratch[negative_base + lane] += 1.0 if q < zero else zero
                # bp_decode's two tables as one (fine, then coarse): one gather per lookup
                x = abs(q)
                coarse_index = coarse_base + min(np.uint64(x * coarse_scale), last)
                f = _TABLE[np.uint64(x * fine_scale) if x < fine_limit else coarse_index]
                scratch[phi_base + row + lane] = f
                scratch[total_base + lane] += f
                lane += one
            e += one
        lane = np.uint64(0)
        while lane < lanes:  # sign of the product: odd or even count of negatives
            scratch[negative_base + lane] = float(np.uint64(scratch[negative_base + lane]) & one)
            lane += one
        e = start
        while e < stop:
            row = (e - start) * width
            v = check_vars[e]
            lane = np.uint64(0)
            while lane < lanes:
                rest = scratch[total_base + lane] - scratch[phi_base + row + lane]
                coarse_index = coarse_base + min(np.uint64(rest * coarse_scale), last)
                fine_index = np.uint64((rest if rest > zero else zero) * fine_scale)
                magnitude = _TABLE[fine_index if rest < fine_limit else coarse_index]
                q = scratch[row + lane]
                flip = (scratch[negative_base + lane] != zero) != (q < zero)
                r = -magnitude if flip else magnitude
                msg[e, lane] = r
                value = q + r
                post[v, lane] = value
                scratch[parity_base + lane] += 1.0 if value < zero else zero
                lane += one
            e += one
        for lane in range(post.shape[1]):
            unsatisfied[lane] += np.uint64(scratch[parity_base + np.uint64(lane)]) & one


@numba.njit(cache=True, nogil=True)
def _store_lane(
    lane: int, frame: int, post: np.ndarray, msg: np.ndarray, messages: np.ndarray, posterior
) -> None:
    for e in range(msg.shape[0]):
        messages[frame, e] = msg[e, lane]
    for v in range(post.shape[0]):
        posterior[frame, v] = post[v, lane]


@numba.njit(cache=True, nogil=True)
def _sweep_alone(
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    syn: np.ndarray,
    post: np.ndarray,
    msg: np.ndarray,
    extrinsic: np.ndarray,
    phis: np.ndarray,
) -> int:
    """Kernel helper: one layered iteration of one frame, `bp_decode`'s loop; unsatisfied checks."""
    zero = 0.0
    fine_limit = _FINE_LIMIT
    fine_scale = _FINE_SCALE
    coarse_scale = _COARSE_SCALE
    last = np.uint64(_TABLE_SIZE - 1)
    coarse_base = np.uint64(_TABLE_SIZE)
    unsatisfied = 0
    for c in range(check_ptr.shape[0] - 1):
        start = check_ptr[c]
        degree = check_ptr[c + 1] - start
        negative = syn[c]
        total = zero
        for k in range(degree):
            q = post[check_vars[start + k]] - msg[start + k]
            extrinsic[k] = q
            if q < zero:
                negative ^= 1
            x = abs(q)
            if x < fine_limit:
                f = _TABLE[np.uint64(x * fine_scale)]
            else:
                f = _TABLE[coarse_base + min(np.uint64(x * coarse_scale), last)]
            phis[k] = f
            total += f
        parity = syn[c]
        for k in range(degree):
            e = start + k
            rest = total - phis[k]
            if rest < fine_limit:
                magnitude = _TABLE[np.uint64((rest if rest > zero else zero) * fine_scale)]
            else:
                magnitude = _TABLE[coarse_base + min(np.uint64(rest * coarse_scale), last)]
            q = extrinsic[k]
            r = -magnitude if negative ^ (1 if q < zero else 0) else magnitude
            msg[e] = r
            value = q + r
            post[check_vars[e]] = value
            if value < zero:
                parity ^= 1
        unsatisfied += parity
    return unsatisfied


@numba.njit(cache=True, nogil=True)
def _verdict(
    unsatisfied: int,
    satisfied: bool,
    iteration: int,
    state: np.ndarray,
    stall: int,
    stall_ratio: float,
    max_iterations: int,
) -> int:
    """Kernel helper: `bp_decode`'s end-of-iteration test on one frame's (best, since) `state`.

    Returns 1 when the frame decoded, -1 when it stops undecoded, 0 when it goes on.
    """
    if unsatisfied == 0 and satisfied:
        return 1
    if unsatisfied < state[0] * stall_ratio:
        state[0] = float(unsatisfied)
        state[1] = 0.0
    else:
        state[1] += 1.0
        if stall > 0 and state[1] >= stall:
            return -1
    return -1 if iteration >= max_iterations else 0


@numba.njit(cache=True, nogil=True)
def _finish_alone(
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    syn: np.ndarray,
    post: np.ndarray,
    msg: np.ndarray,
    iteration: int,
    state: np.ndarray,
    stall: int,
    stall_ratio: float,
    max_iterations: int,
) -> tuple[int, bool]:
    """Kernel helper: decode one frame on from its state, alone; (iterations, converged)."""
    degree = 0
    for c in range(check_ptr.shape[0] - 1):
        degree = max(degree, check_ptr[c + 1] - check_ptr[c])
    extrinsic = np.empty(degree, dtype=np.float64)
    phis = np.empty(degree, dtype=np.float64)
    while True:
        iteration += 1
        unsatisfied = _sweep_alone(check_ptr, check_vars, syn, post, msg, extrinsic, phis)
        satisfied = unsatisfied == 0 and _decisions_satisfy(check_ptr, check_vars, syn, post)
        verdict = _verdict(
            unsatisfied, satisfied, iteration, state, stall, stall_ratio, max_iterations
        )
        if verdict != 0:
            return iteration, verdict > 0


@numba.njit(cache=True, nogil=True)
def _decode_alone(
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    syndromes: np.ndarray,
    channel_llr: np.ndarray,
    messages: np.ndarray,
    posterior: np.ndarray,
    max_iterations: int,
    stall_iterations: np.ndarray,
    stall_ratio: float,
    iterations: np.ndarray,
    converged: np.ndarray,
) -> int:
    """Kernel helper: decode every frame alone, as `bp_decode`; returns the iterations."""
    total = 0
    for frame in range(syndromes.shape[0]):
        post = channel_llr[frame].copy()
        msg = messages[frame].astype(np.float64)
        for e in range(check_vars.shape[0]):
            post[check_vars[e]] += msg[e]
        state = np.array([np.inf, 0.0])
        iteration, ok = _finish_alone(
            check_ptr,
            check_vars,
            np.ascontiguousarray(syndromes[frame]),
            post,
            msg,
            0,
            state,
            stall_iterations[frame],
            stall_ratio,
            max_iterations,
        )
        total += iteration
        iterations[frame] = iteration
        converged[frame] = ok
        for e in range(check_vars.shape[0]):
            messages[frame, e] = msg[e]
        posterior[frame] = post
    return total


@numba.njit(cache=True, nogil=True)
def bp_decode_frames(
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    syndromes: np.ndarray,
    channel_llr: np.ndarray,
    messages: np.ndarray,
    posterior: np.ndarray,
    max_iterations: int,
    stall_iterations: np.ndarray,
    stall_ratio: float,
    alone_below: int,
    iterations: np.ndarray,
    converged: np.ndarray,
) -> tuple[int, int]:
    """Kernel: `bp_decode` of every frame (row g of the 2-D arrays), `LANES` in lockstep.

    `syndromes` (uint8) [frames, m], `channel_llr` [frames, n], `messages` [frames, edges]
    (float64 or float32: read as float64 starting state, left holding each frame's final state
    rounded to its dtype), `posterior` [frames, n] float64 out, `stall_iterations` [frames]
    int64; `iterations` (int64) and `converged` (bool) [frames] receive each frame's outcome.
    A finished lane takes the next frame; once no frame is left to start and fewer than
    `alone_below` lanes are busy, those frames finish one by one alone (an idle lane costs
    as much as a busy one); fewer frames than `alone_below` all decode alone. Returns
    (lockstep iterations, frame iterations run alone); each lockstep iteration computes
    `LANES` frame iterations, idle lanes included. Releases the GIL.
    """
    frames = syndromes.shape[0]
    m = check_ptr.shape[0] - 1
    n = channel_llr.shape[1]
    edges = check_vars.shape[0]
    if frames < alone_below:  # too few to fill the lanes: no lockstep state at all
        return 0, _decode_alone(
            check_ptr,
            check_vars,
            syndromes,
            channel_llr,
            messages,
            posterior,
            max_iterations,
            stall_iterations,
            stall_ratio,
            iterations,
            converged,
        )
    syn = np.zeros((m, LANES), dtype=np.uint8)
    post = np.zeros((n, LANES), dtype=np.float64)
    msg = np.zeros((edges, LANES), dtype=np.float64)
    unsatisfied = np.zeros(LANES, dtype=np.int64)
    lane_frame = np.full(LANES, -1, dtype=np.int64)
    lane_iteration = np.zeros(LANES, dtype=np.int64)
    state = np.zeros((LANES, 2), dtype=np.float64)  # per lane: best unsatisfied, since best
    next_frame = 0
    busy = 0
    sweeps = 0
    alone_iterations = 0
    for lane in range(LANES):
        if next_frame < frames:
            _load_lane(
                lane, next_frame, check_vars, syndromes, channel_llr, messages, syn, post, msg
            )
            lane_frame[lane] = next_frame
            state[lane, 0] = np.inf
            next_frame += 1
            busy += 1
    while busy > 0:
        if next_frame >= frames and busy < alone_below:
            for lane in range(LANES):
                frame = lane_frame[lane]
                if frame < 0:
                    continue
                alone_post = np.ascontiguousarray(post[:, lane])
                alone_msg = np.ascontiguousarray(msg[:, lane])
                iteration, ok = _finish_alone(
                    check_ptr,
                    check_vars,
                    np.ascontiguousarray(syn[:, lane]),
                    alone_post,
                    alone_msg,
                    lane_iteration[lane],
                    state[lane],
                    stall_iterations[frame],
                    stall_ratio,
                    max_iterations,
                )
                alone_iterations += iteration - lane_iteration[lane]
                iterations[frame] = iteration
                converged[frame] = ok
                for e in range(edges):
                    messages[frame, e] = alone_msg[e]
                posterior[frame] = alone_post
            break
        unsatisfied[:] = 0
        _sweep(check_ptr, check_vars, syn, post, msg, unsatisfied)
        sweeps += 1
        for lane in range(LANES):
            frame = lane_frame[lane]
            if frame < 0:
                continue
            lane_iteration[lane] += 1
            satisfied = unsatisfied[lane] == 0 and _lane_satisfies(
                check_ptr, check_vars, syn, post, lane
            )
            verdict = _verdict(
                unsatisfied[lane],
                satisfied,
                lane_iteration[lane],
                state[lane],
                stall_iterations[frame],
                stall_ratio,
                max_iterations,
            )
            if verdict == 0:
                continue
            iterations[frame] = lane_iteration[lane]
            converged[frame] = verdict > 0
            _store_lane(lane, frame, post, msg, messages, posterior)
            if next_frame < frames:
                _load_lane(
                    lane, next_frame, check_vars, syndromes, channel_llr, messages, syn, post, msg
                )
                lane_frame[lane] = next_frame
                lane_iteration[lane] = 0
                state[lane, 0] = np.inf
                state[lane, 1] = 0.0
                next_frame += 1
            else:
                lane_frame[lane] = -1
                busy -= 1
    return sweeps, alone_iterations


def bp_decode_frames_reference(
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    syndromes: np.ndarray,
    channel_llr: np.ndarray,
    messages: np.ndarray,
    posterior: np.ndarray,
    max_iterations: int,
    stall_iterations: np.ndarray,
    stall_ratio: float,
    iterations: np.ndarray,
    converged: np.ndarray,
) -> None:
    """Reference of `bp_decode_frames`: `bp_decode_reference` frame by frame."""
    coarse, fine = phi_tables()
    for g in range(syndromes.shape[0]):
        state = messages[g].astype(np.float64)
        out = np.empty(channel_llr.shape[1], dtype=np.float64)
        iterations[g], converged[g] = bp_decode_reference(
            check_ptr,
            check_vars,
            syndromes[g],
            channel_llr[g],
            state,
            out,
            max_iterations,
            int(stall_iterations[g]),
            stall_ratio,
            coarse,
            fine,
        )
        messages[g] = state
        posterior[g] = out


class FramesResult:
    """Outcome of decoding several frames: per frame the decided word and how it got there."""

    __slots__ = (
        "alone_iterations",
        "converged",
        "iterations",
        "lane_iterations",
        "posterior_llr",
        "words",
    )

    def __init__(
        self,
        posterior: np.ndarray,
        iterations: np.ndarray,
        converged: np.ndarray,
        sweeps: int,
        alone_iterations: int,
    ) -> None:
        self.posterior_llr = posterior
        self.words = (posterior < 0.0).astype(np.uint8)
        self.iterations = iterations
        self.converged = converged
        # frame iterations computed, idle lanes included (>= iterations.sum()), and how many
        # of them ran alone (the tail of a batch, see ALONE_BELOW)
        self.lane_iterations = LANES * sweeps + alone_iterations
        self.alone_iterations = alone_iterations


def decode_syndromes(
    code: LdpcCode,
    syndromes: np.ndarray,
    channel_llr: np.ndarray,
    messages: np.ndarray | None = None,
    *,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    stall_iterations: np.ndarray | int = DEFAULT_STALL_ITERATIONS,
    stall_ratio: float = 1.0,
    alone_below: int = ALONE_BELOW,
) -> FramesResult:
    """Decode several frames of one code, `LANES` in lockstep; each as `decode_syndrome` would.

    `syndromes` [frames, m] bits, `channel_llr` [frames, n] floats, `messages` [frames, edges]
    float64 or float32 (continues previous decodings, updated in place; None: zero start),
    `stall_iterations` one count for all frames or one per frame; frames finish alone once
    no frame is left to start and fewer than `alone_below` lanes are busy (0: never).
    """
    target = np.ascontiguousarray(syndromes)
    if target.ndim != 2 or target.shape[1] != code.m:
        raise InputError(f"syndromes must have shape (frames, {code.m}), got {target.shape}")
    frames = target.shape[0]
    target = as_bit_array(target.reshape(-1), "syndromes", allow_empty=True)
    target = target.reshape(frames, code.m)
    if not isinstance(channel_llr, np.ndarray) or channel_llr.shape != (frames, code.n):
        shape = getattr(channel_llr, "shape", type(channel_llr).__name__)
        raise InputError(f"channel_llr must be an array of shape ({frames}, {code.n}), got {shape}")
    if not np.issubdtype(channel_llr.dtype, np.floating):
        raise InputError(f"channel_llr must hold floats, got dtype {channel_llr.dtype}")
    llr = np.ascontiguousarray(channel_llr, dtype=np.float64)
    if not np.all(np.isfinite(llr)):
        raise InputError("channel_llr must be finite")
    if messages is None:
        state = np.zeros((frames, code.edges), dtype=np.float64)
    else:
        if not isinstance(messages, np.ndarray) or messages.dtype not in (np.float64, np.float32):
            raise InputError("messages must be a float64 or float32 numpy array")
        if messages.shape != (frames, code.edges) or not messages.flags.c_contiguous:
            raise InputError(f"messages must be contiguous with shape ({frames}, {code.edges})")
        if not np.all(np.isfinite(messages)):
            raise InputError("messages must be finite")
        state = messages
    cap = as_count(max_iterations, "max_iterations", minimum=1)
    stalls = np.asarray(stall_iterations)
    if stalls.ndim == 0:
        stalls = np.full(frames, stalls)
    if stalls.shape != (frames,) or not np.issubdtype(stalls.dtype, np.integer):
        raise InputError(f"stall_iterations must be an integer or {frames} integers")
    if frames and int(stalls.min()) < 0:
        raise InputError("stall_iterations must be >= 0")
    ratio = float(stall_ratio) if isinstance(stall_ratio, int | float | np.number) else math.nan
    if not 0.0 < ratio <= 1.0:
        raise InputError(f"stall_ratio must lie in (0, 1], got {stall_ratio}")
    alone = as_count(alone_below, "alone_below")
    if int(code.check_degrees().max()) > MAX_CHECK_DEGREE:
        raise InputError(f"the lockstep decoder takes check degrees up to {MAX_CHECK_DEGREE}")
    posterior = np.empty((frames, code.n), dtype=np.float64)
    iterations = np.zeros(frames, dtype=np.int64)
    converged = np.zeros(frames, dtype=np.bool_)
    sweeps, alone_iterations = 0, 0
    if frames:
        sweeps, alone_iterations = bp_decode_frames(
            code.check_ptr,
            code.check_vars.view(np.uint32),  # indices are >= 0 (checked when built)
            target,
            llr,
            state,
            posterior,
            cap,
            stalls.astype(np.int64),
            ratio,
            alone,
            iterations,
            converged,
        )
    return FramesResult(posterior, iterations, converged, int(sweeps), int(alone_iterations))
