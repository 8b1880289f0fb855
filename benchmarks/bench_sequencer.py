"""Pulse pattern throughput: `SourceSequencer.pattern_of` (AES-256 counter mode, decision 0018).

The station asks the payload's sequencer for the pattern of detected pulses only, in batches of
pulse indices scattered over the whole pass; these figures time that lookup on random indices
out of a Jinan-1-sized pass (4e10 pulses, the seed-7 pass sends 4.37e10) with one pass key.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable

import numpy as np

from firmware_shims.source_sequencer import (
    SourceSequencer,
    pattern_words,
    pattern_words_reference,
    sequence_pulses_reference,
)

__all__ = ["figures"]

PASS_PULSES = 4 * 10**10
PROBABILITIES = (0.5, 0.25, 0.25)  # configs/missions/jinan1.yaml
BASIS_X_PROBABILITY = 0.5
PLAN_ID = 1
# A fixed benchmark key (a pass's key comes from the entropy source; the rate does not depend
# on it).
KEY = hashlib.sha256(b"satqkd.bench.sequencer").digest()


def _sequencer() -> SourceSequencer:
    sequencer = SourceSequencer(None, PROBABILITIES, BASIS_X_PROBABILITY)
    sequencer.load_pass(PLAN_ID, KEY)
    return sequencer


def _median_best(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), float(min(times))


def _vectorised(pulses: int, repeats: int) -> dict:
    sequencer = _sequencer()
    index = np.random.default_rng(7).integers(0, PASS_PULSES, pulses, dtype=np.int64)
    sequencer.pattern_of(PLAN_ID, index[:1000])  # warm up
    median_s, best_s = _median_best(lambda: sequencer.pattern_of(PLAN_ID, index), repeats)
    words_median_s, _ = _median_best(lambda: pattern_words(KEY, index), repeats)
    return {
        "name": "pattern_pulses_per_s",
        "value": pulses / median_s,
        "unit": "pulses/s",
        "params": {
            "pulses": pulses,
            "pass_pulses": PASS_PULSES,
            "order": "random indices, one batch",
            "repeats": repeats,
            "median_s": round(median_s, 5),
            "best_s": round(best_s, 5),
            "aes_words_per_s": pulses / words_median_s,
            "method": "AES-256 (ECB over the counter blocks n // 2), half a block per pulse",
        },
    }


def _reference(pulses: int) -> dict:
    sequencer = _sequencer()
    index = np.random.default_rng(8).integers(0, PASS_PULSES, pulses, dtype=np.int64)
    thresholds = (
        sequencer.signal_threshold,
        sequencer.decoy_threshold,
        sequencer.basis_x_threshold,
    )
    started = time.perf_counter()
    basis, bit, intensity = sequence_pulses_reference(
        pattern_words_reference(KEY, index), *thresholds
    )
    elapsed = time.perf_counter() - started
    fast = sequencer.pattern_of(PLAN_ID, index)
    agree = bool(
        np.array_equal(basis, fast.basis)
        and np.array_equal(bit, fast.bit)
        and np.array_equal(intensity, fast.intensity)
    )
    return {
        "name": "pattern_reference_pulses_per_s",
        "value": pulses / elapsed,
        "unit": "pulses/s",
        "params": {
            "pulses": pulses,
            "pass_pulses": PASS_PULSES,
            "method": "pattern_words_reference + sequence_pulses_reference, one pulse at a time",
            "agrees_with_pattern_of": agree,
        },
    }


def figures(quick: bool) -> list[dict]:
    """Measure pattern_pulses_per_s (1e6 random pulses) and the per-pulse reference (1e3)."""
    return [
        _vectorised(10**6, repeats=3 if quick else 10),
        _reference(10**3),
    ]


if __name__ == "__main__":
    for figure in figures(quick="--quick" in sys.argv):
        print(json.dumps(figure))
