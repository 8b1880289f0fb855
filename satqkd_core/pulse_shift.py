"""Pulse-index shift: the whole pulse periods the timing sync cannot see, found from vacuum pulses.

The pulsed-clock sync (`satqkd_core.sync`) finds the clock offset only modulo one pulse period:
an offset O is taken as O - k P, so every detection is given the index of the pulse k periods
away from the one that caused it. At 1 GHz (P = 1 ns) a ground clock that knows the payload's
offset to tens of ns leaves k anywhere in a few dozen periods, and sifting at the wrong k pairs
each detection with an unrelated pulse (QBER 50 %).

The payload knows which pulses it sent as vacuum (intensity label 2). For each candidate shift
k in [-K, K] it counts the reported detections whose pulse index + k falls on a vacuum pulse.
At the true shift only background (dark counts, stray light: the vacuum yield Y0) falls there;
at any other shift the pattern at index + k is independent of the detection, so the count is
binomial(n, p_vacuum). A shift is chosen only when it is the one and only candidate whose count
lies more than `MARGIN_SIGMA` standard deviations below n p_vacuum; none or several such
candidates: the frame's pulse index is ambiguous and nothing of it is sifted.

Nothing new is disclosed: the shift is a public function of public data (the reported indices
and the intensity classes the decoy analysis announces for every sifted detection anyway), the
same for every detection of the frame, and independent of the basis and bit values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError

VACUUM_LABEL = 2  # intensity label of vacuum pulses (docs/internals.md)
# A wrong shift's count falls this many standard deviations below n p_vacuum with probability
# Phi(-5) ~ 3e-7 (normal approximation of the binomial); a wrong shift can only be *chosen*
# when, besides, the true one is not below the threshold (else two candidates: ambiguous).
MARGIN_SIGMA = 5.0
# Evidence from at most this many detections per frame (an even stride over the frame): the
# test's power at this size is far beyond need, and the pattern look-ups stay bounded at
# (2K + 1) x this many per frame however bright the link.
MAX_EVIDENCE_DETECTIONS = 65_536
# No more candidates than this (|k| <= 10,000): beyond it the offset uncertainty is not a
# clock's but a configuration error.
MAX_SHIFT_LIMIT = 10_000


def max_pulse_shift(offset_uncertainty_ps: float, pulse_period_ps: float) -> int:
    """Get: the largest |k| an offset within +-offset_uncertainty_ps can put the sync off by.

    The sync takes the offset into [-P/2, P/2), so an offset O becomes shift k = round(O / P):
    |k| <= floor(U / P + 1/2).
    """
    u, p = float(offset_uncertainty_ps), float(pulse_period_ps)
    if not (math.isfinite(u) and u >= 0.0):
        raise InputError(f"offset_uncertainty_ps: must be a finite number >= 0, got {u!r}")
    if not (math.isfinite(p) and p > 0.0):
        raise InputError(f"pulse_period_ps: must be a finite number > 0, got {p!r}")
    k = math.floor(u / p + 0.5)
    if k > MAX_SHIFT_LIMIT:
        raise InputError(
            f"offset_uncertainty_ps: {u:g} ps is {k} pulse periods of {p:g} ps, more than "
            f"{MAX_SHIFT_LIMIT} candidate shifts"
        )
    return k


@dataclass(frozen=True)
class PulseShiftDecision:
    """The shift chosen for one frame (None: ambiguous), and the evidence it rests on."""

    shift: int | None
    candidates: np.ndarray  # int64 candidate shifts, -K..K
    vacuum_hits: np.ndarray  # int64 detections on vacuum pulses at each candidate shift
    n_evidence: int  # detections counted (in range at every candidate)
    expected_wrong: float  # n_evidence * p_vacuum: a wrong shift's mean count
    threshold: float  # a candidate's count must be <= this to be taken for the true shift
    reason: str | None  # why the frame is ambiguous (None when a shift was chosen)


def choose_pulse_shift(
    candidates: np.ndarray, vacuum_hits: np.ndarray, n_evidence: int, p_vacuum: float
) -> PulseShiftDecision:
    """Choose the shift whose vacuum count alone lies MARGIN_SIGMA below n p_vacuum."""
    candidates = np.asarray(candidates, dtype=np.int64)
    hits = np.asarray(vacuum_hits, dtype=np.int64)
    if candidates.ndim != 1 or candidates.size == 0 or hits.shape != candidates.shape:
        raise InputError("vacuum_hits: need one count per candidate shift (at least one)")
    if not 0.0 <= p_vacuum < 1.0:
        raise InputError(f"p_vacuum: must lie in [0, 1), got {p_vacuum!r}")
    if n_evidence < 0 or (hits.size and (hits.min() < 0 or hits.max() > n_evidence)):
        raise InputError("vacuum_hits: counts must lie in [0, n_evidence]")
    expected = n_evidence * p_vacuum
    threshold = expected - MARGIN_SIGMA * math.sqrt(expected * (1.0 - p_vacuum))

    def decision(shift: int | None, reason: str | None) -> PulseShiftDecision:
        return PulseShiftDecision(
            shift, candidates, hits, int(n_evidence), expected, threshold, reason
        )

    if candidates.size == 1:  # no whole period can be off: nothing to resolve
        return decision(int(candidates[0]), None)
    if p_vacuum == 0.0:
        return decision(None, "pulse index ambiguous: the mission sends no vacuum pulses")
    below = np.flatnonzero(hits <= threshold)
    span = f"{int(candidates[0])}..{int(candidates[-1])}"
    if below.size == 1:
        return decision(int(candidates[below[0]]), None)
    if below.size == 0:
        return decision(
            None,
            f"pulse index ambiguous: no shift in {span} puts clearly fewer than "
            f"{expected:.0f} of {n_evidence} detections on vacuum pulses "
            f"(fewest {int(hits.min())}, threshold {threshold:.1f})",
        )
    shown = ", ".join(f"{int(candidates[i])}: {int(hits[i])}" for i in below[:5])
    return decision(
        None,
        f"pulse index ambiguous: {below.size} shifts of {span} put few detections on vacuum pulses "
        f"({shown}; threshold {threshold:.1f} of {n_evidence})",
    )


def resolve_pulse_shift(
    pulse_index: np.ndarray,
    max_shift: int,
    n_pulses: int,
    p_vacuum: float,
    intensity_of: Callable[[np.ndarray], np.ndarray],
) -> PulseShiftDecision:
    """Count the detections on vacuum pulses at each shift -max_shift..max_shift and choose.

    pulse_index: the frame's reported indices (int64, >= 0); n_pulses: pulses in the pass
    (shifted indices must stay in [0, n_pulses)); intensity_of: pulse indices -> their uint8
    intensity labels (the payload's pattern).
    """
    index = np.asarray(pulse_index)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise InputError("pulse_index: must be a 1-D array of integers")
    if not isinstance(max_shift, (int, np.integer)) or not 0 <= max_shift <= MAX_SHIFT_LIMIT:
        raise InputError(f"max_shift: must be an integer in [0, {MAX_SHIFT_LIMIT}]")
    if not isinstance(n_pulses, (int, np.integer)) or n_pulses < 0:
        raise InputError(f"n_pulses: must be an integer >= 0, got {n_pulses!r}")
    k = int(max_shift)
    candidates = np.arange(-k, k + 1, dtype=np.int64)
    index = index.astype(np.int64, copy=False)
    # only detections whose index stays in the pass at every candidate shift count
    usable = index[(index >= k) & (index < int(n_pulses) - k)]
    if usable.size > MAX_EVIDENCE_DETECTIONS:
        stride = -(-usable.size // MAX_EVIDENCE_DETECTIONS)
        usable = usable[::stride]
    hits = np.zeros(candidates.size, dtype=np.int64)
    if k > 0 and usable.size:
        for j, shift in enumerate(candidates):
            labels = np.asarray(intensity_of(usable + shift))
            hits[j] = int(np.count_nonzero(labels == VACUUM_LABEL))
    return choose_pulse_shift(candidates, hits, int(usable.size), float(p_vacuum))


@dataclass
class PooledPulseShift:
    """Vacuum-pulse evidence pooled over a pass's frames, for frames too weak to decide alone.

    The whole-period shift is set by the clock offset, the same for every frame of a pass, so a
    frame whose own count decides nothing (a weak link, the first frames of a late lock: a few
    hundred detections or fewer) is decided by the counts of every frame so far at the same
    candidate shifts, with the same margin. A frame that decides alone keeps its own decision.
    """

    p_vacuum: float
    vacuum_hits: np.ndarray | None = None
    n_evidence: int = 0
    last_shift: int = 0  # the shift of the latest decided frame (0 before any)

    def decide(self, frame: PulseShiftDecision) -> PulseShiftDecision:
        """Add the frame's counts to the pool; get the frame's decision, else the pool's."""
        if frame.candidates.size == 1:
            return frame
        if self.vacuum_hits is None:
            self.vacuum_hits = np.zeros(frame.candidates.size, dtype=np.int64)
        elif self.vacuum_hits.shape != frame.vacuum_hits.shape:
            raise InputError("vacuum_hits: a frame's candidate shifts differ from the pass's")
        self.vacuum_hits += frame.vacuum_hits
        self.n_evidence += frame.n_evidence
        decision = frame
        if decision.shift is None:
            decision = choose_pulse_shift(
                frame.candidates, self.vacuum_hits, self.n_evidence, self.p_vacuum
            )
        if decision.shift is None:
            return frame  # the frame's own reason: the pool cannot decide either
        self.last_shift = decision.shift
        return decision


def shifted_in_range(pulse_index: np.ndarray, shift: int, n_pulses: int) -> np.ndarray:
    """Get: bool mask of the detections whose index + shift is a pulse of the pass."""
    shifted = np.asarray(pulse_index, dtype=np.int64) + int(shift)
    mask: np.ndarray = (shifted >= 0) & (shifted < int(n_pulses))
    return mask
