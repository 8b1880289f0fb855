"""The payload's pulse-shift check per frame (`satqkd_core.pulse_shift`, decision 0038).

One frame of reported detections at eagle1's 1 GHz, reported one pulse early (the default
1234 ps clock offset), resolved over the 41 candidate shifts a 20 ns clock offset uncertainty
gives, with the pass pattern from the payload's sequencer (AES-256, decision 0018).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from firmware_shims.source_sequencer import SourceSequencer
from satqkd_core.pulse_shift import MAX_EVIDENCE_DETECTIONS, max_pulse_shift, resolve_pulse_shift

__all__ = ["figures"]

PROBABILITIES = (0.7, 0.2, 0.1)  # configs/missions/eagle1.yaml
BASIS_X_PROBABILITY = 0.875  # a whole eighth near eagle1's 0.9 (the rate does not depend on it)
PASS_PULSES = 30 * 10**9  # 30 s of QKD at 1 GHz
PULSE_PERIOD_PS = 1000.0
UNCERTAINTY_PS = 20_000.0
TRUE_SHIFT = 1
KEY = hashlib.sha256(b"satqkd.bench.pulse_shift").digest()


def figures(quick: bool) -> list[dict]:
    """Measure pulse_shift_frame_s: one frame's check (median of the repeats)."""
    sequencer = SourceSequencer(None, PROBABILITIES, BASIS_X_PROBABILITY)
    sequencer.load_pass(1, KEY)
    rng = np.random.default_rng(7)
    n = 100_000  # a bright 1 s frame at 1 GHz; the evidence is capped at 65,536 of them
    candidates = np.unique(rng.integers(0, 10**9, 4 * n))
    lit = candidates[sequencer.pattern_of(1, candidates).intensity != 2][:n]
    reported = np.sort(lit) - TRUE_SHIFT
    k = max_pulse_shift(UNCERTAINTY_PS, PULSE_PERIOD_PS)
    times, decision = [], None
    for _ in range(3 if quick else 10):
        started = time.perf_counter()
        decision = resolve_pulse_shift(
            reported,
            k,
            PASS_PULSES,
            PROBABILITIES[2],
            lambda index: sequencer.pattern_of(1, index).intensity,
        )
        times.append(time.perf_counter() - started)
    assert decision is not None
    return [
        {
            "name": "pulse_shift_frame_s",
            "value": float(np.median(times)),
            "unit": "s",
            "params": {
                "detections": int(reported.size),
                "evidence": decision.n_evidence,
                "max_shift": k,
                "chosen_shift": decision.shift,
                "true_shift": TRUE_SHIFT,
                "evidence_cap": MAX_EVIDENCE_DETECTIONS,
                "repeats": len(times),
            },
        }
    ]
