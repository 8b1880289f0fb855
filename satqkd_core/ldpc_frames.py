"""Rate adaptation for blind LDPC reconciliation: which mother code, how a key is cut into frames.

Of the n symbols of a frame of a mother code (`satqkd_core.ldpc`), p are punctured (filled by
the sender with private random bits that the receiver treats as erased), s are shortened
(value 0, known to both) and k = n - p - s carry key bits (Elkouss, Martinez-Mateo, Martin,
"Information reconciliation for QKD", QIC 11, 226 (2011), eqs. 3-6). `plan_frames` chooses the
code and (k, s, p) for a QBER and the blind schedule (how far below the typical need a frame
starts, how many punctured values a reveal round discloses); `frame_layout` places the
punctured, shortened and key symbols of every frame and cuts the key, both from public seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from satqkd_core.bits import as_count, binary_entropy
from satqkd_core.errors import InputError
from satqkd_core.ldpc import LdpcCode
from satqkd_core.rng import derive_key, random_u64, sort_order

__all__ = [
    "OPERATING_EFFICIENCY",
    "START_SPREADS",
    "STEP_EFFICIENCY",
    "FrameLayout",
    "FramePlan",
    "frame_layout",
    "plan_frames",
    "start_efficiency_for",
    "window_end_efficiency",
]

# Blind reconciliation (Martinez-Mateo, Elkouss, Martin, "Blind reconciliation", QIC 12, 791
# (2012)): the first syndrome is sent at an optimistic rate, and every failed frame gets
# `reveal_step` of its punctured symbols disclosed per round until it decodes or none is left.
# Frames start START_SPREADS spreads below the code's typical need and can go up to the window
# end, where a frame needing more is a z-sigma event for the code's measured spread of per-frame
# needs (`window_end_efficiency`). A failed round costs ~15-25 decoder iterations per frame;
# starting 0.75 spreads below rather than 1.5 spares ~2 of them (a third of the iterations,
# 2-2.5 fewer round trips) while the few frames that could have decoded lower pay a step: on
# 3000 / 3000 / 4000 frames f rose 0.003 / 0.0016 / 0.0002 at Q 1 / 2 / 5 % (decision 0047).
START_SPREADS = 0.75
STEP_EFFICIENCY = 0.015
OPERATING_EFFICIENCY = 1.10


@dataclass(frozen=True)
class FramePlan:
    """How a key is cut into frames of one mother code, and the blind schedule.

    Every frame carries `frame_key_bits` key bits, `shortened` symbols whose values are public
    and `punctured` symbols the receiver starts without; n = key + shortened + punctured.
    """

    code: LdpcCode
    frame_key_bits: int
    shortened: int
    punctured: int
    reveal_step: int

    def efficiency(self, punctured: int, qber: float) -> float:
        """Efficiency (m - p) / (k h(Q)) of a frame decoded with p symbols still punctured."""
        entropy = binary_entropy(qber)
        if entropy == 0.0:
            raise InputError("qber must lie strictly between 0 and 1 for an efficiency")
        return (self.code.m - punctured) / (self.frame_key_bits * entropy)


def window_end_efficiency(code: LdpcCode, eps_frame: float) -> float:
    """Efficiency at which a frame of this code is given up, for a frame failure target."""
    eps = float(eps_frame)
    if not 0.0 < eps < 0.5:
        raise InputError(f"eps_frame must lie in (0, 0.5), got {eps_frame}")
    return code.typical_efficiency + code.efficiency_spread * NormalDist().inv_cdf(1.0 - eps)


def start_efficiency_for(code: LdpcCode) -> float:
    """Efficiency of the first syndrome of a frame of this code (before any reveal)."""
    return code.typical_efficiency - START_SPREADS * code.efficiency_spread


def plan_frames(
    qber: float,
    codes: tuple[LdpcCode, ...],
    *,
    eps_frame: float = 1e-3,
    start_efficiency: float | None = None,
    step_efficiency: float | None = None,
) -> FramePlan:
    """Choose the code and the frame shape for a key with this QBER estimate.

    A frame of k key bits with p0 punctured and s = n - k - p0 shortened symbols (shortened
    at random positions; Elkouss et al. 2011, eq. 6) starts at efficiency (m - p0) / (k h)
    and, once every punctured value is revealed, ends at m / (k h). For each code, k is the
    largest frame whose window reaches from the start efficiency (`start_efficiency_for`
    unless given, with p0 <= d) to the end efficiency given by eps_frame. Among the codes
    that reach the start, the one whose native rate is closest to the rate 1 - f h(Q) at the
    typical operating efficiency wins: it needs the least puncturing or shortening (measured
    at n = 2^15: puncturing 6 % of a code or shortening 40 % of one costs ~0.02 in
    efficiency; a few % of either costs nothing).
    """
    q = float(qber)
    if not 0.0 < q < 0.5 or math.isnan(q):
        raise InputError(f"qber_estimate must lie in (0, 0.5), got {qber}")
    if not codes:
        raise InputError("codes must hold at least one LdpcCode")
    entropy = binary_entropy(q)
    step_efficiency = STEP_EFFICIENCY if step_efficiency is None else float(step_efficiency)
    if not step_efficiency > 0.0:
        raise InputError(f"step_efficiency must be > 0, got {step_efficiency}")
    target_rate = 1.0 - OPERATING_EFFICIENCY * entropy
    options: list[tuple[float, float, int, FramePlan]] = []
    for code in codes:
        end = window_end_efficiency(code, eps_frame)
        start = start_efficiency_for(code) if start_efficiency is None else float(start_efficiency)
        if not start >= 0.5:
            raise InputError(f"start_efficiency must be >= 0.5, got {start}")
        if end <= start:
            continue
        d = code.rate_adaptive_symbols
        spare = 1.0 - start * entropy  # > 0 unless the QBER is close to 1/2
        # largest k with m / (k h) >= end and k + p0(k) <= n, where p0(k) = m - start k h
        key_bits = min(
            math.floor(code.m / (end * entropy)),
            math.floor((code.n - code.m) / spare) if spare > 0.0 else code.n,
            code.n - 1,
        )
        if key_bits < 1:
            continue
        punctured = min(d, max(0, math.ceil(code.m - start * key_bits * entropy)))
        key_bits = min(key_bits, code.n - punctured)
        shortened = code.n - key_bits - punctured
        start_excess = max(0.0, (code.m - punctured) / (key_bits * entropy) - start)
        mismatch = abs(code.rate - target_rate)
        plan = FramePlan(
            code, key_bits, shortened, punctured, _reveal_step(step_efficiency, key_bits, entropy)
        )
        options.append((round(start_excess, 6), round(mismatch, 9), -code.n, plan))
    if not options:
        raise InputError(f"no code can serve qber {q}")
    return min(options, key=lambda entry: entry[:3])[3]


def _reveal_step(step_efficiency: float, key_bits: int, entropy: float) -> int:
    return max(1, math.ceil(float(step_efficiency) * key_bits * entropy))


@dataclass(frozen=True)
class FrameLayout:
    """Which symbols of every frame are punctured, shortened and key, and how the key is cut.

    `punctured_positions` are listed in the order their values are revealed in blind rounds;
    shortened symbols are 0 (known to both: any fixed value serves); frame f carries the key
    bits key[key_order[f * k : (f + 1) * k]] at `key_positions` (ascending).
    """

    punctured_positions: np.ndarray
    shortened_positions: np.ndarray
    key_positions: np.ndarray
    key_order: np.ndarray


def frame_layout(plan: FramePlan, positions_seed: int, key_bits: int) -> FrameLayout:
    """Derive the public layout of every frame of a key from the plan and a shared seed."""
    seed = as_count(positions_seed, "positions_seed")
    total = as_count(key_bits, "key_bits")
    code = plan.code
    punctured = np.ascontiguousarray(code.puncture_order[: plan.punctured][::-1])
    # shortened symbols at random positions among the others (random shortening keeps the
    # modulated code's performance; shortening the unused untainted symbols costs ~0.04 in f)
    rest = np.ones(code.n, dtype=bool)
    rest[punctured] = False
    candidates = np.flatnonzero(rest)
    words = random_u64(derive_key(seed, "ldpc.shortened"), candidates.astype(np.int64))
    shortened = np.sort(candidates[sort_order(words)[: plan.shortened]])
    rest[shortened] = False
    key_positions = np.flatnonzero(rest).astype(np.int32)
    # a shared permutation of the whole key spreads error bursts (e.g. low elevation) over
    # every frame, so each frame sees the average QBER (Elkouss et al. 2011, sec. 2.1)
    order_words = random_u64(derive_key(seed, "ldpc.key-order"), np.arange(total, dtype=np.int64))
    key_order = sort_order(order_words)  # np.argsort(order_words, kind="stable"), faster
    return FrameLayout(punctured, shortened.astype(np.int32), key_positions, key_order)
