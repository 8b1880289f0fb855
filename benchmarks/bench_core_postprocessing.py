"""Figures for post-processing: Cascade efficiency and Toeplitz hashing speed and memory."""

from __future__ import annotations

import multiprocessing
import resource
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from satqkd_core import privacy_amplification as pa
from satqkd_core.bits import binary_entropy
from satqkd_core.cascade import CascadeCorrector, CascadeResponder
from satqkd_core.privacy_amplification import toeplitz_hash
from satqkd_core.privacy_amplification_fft import toeplitz_product_parity_fft

CASCADE_FRAME_BITS = 10_000
CASCADE_QBERS = (0.01, 0.02, 0.05)
CASCADE_PASSES = 16


def figures(quick: bool) -> list[dict]:
    """Measure cascade_efficiency, pa_input_bits_per_s and (full run) pa_peak_memory_mb."""
    results = [_cascade_efficiency(frames=8 if quick else 200)]
    results.append(_pa_throughput(10**6, repeats=3 if quick else 10))
    if not quick:
        results.append(_pa_peak_memory(10**8))
    return results


def _cascade_frame(qber: float, seed: int) -> tuple[bool, int, int]:
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 2, CASCADE_FRAME_BITS).astype(np.uint8)
    noisy = reference ^ (rng.random(CASCADE_FRAME_BITS) < qber).astype(np.uint8)
    corrector = CascadeCorrector(noisy, qber, seed, CASCADE_PASSES)
    responder = CascadeResponder(reference, seed, CASCADE_PASSES)
    while (query := corrector.next_query()) is not None:
        corrector.apply_reply(responder.reply(query))
    assert corrector.leak_bits == responder.leak_bits
    return (
        np.array_equal(corrector.corrected_key, reference),
        corrector.leak_bits,
        corrector.round_trips,
    )


def _cascade_efficiency(frames: int) -> dict:
    by_qber = {}
    efficiencies = []
    started = time.perf_counter()
    for qber in CASCADE_QBERS:
        leaks, trips, failures = [], [], 0
        for frame in range(frames):
            ok, leak, round_trips = _cascade_frame(qber, 10_000 * int(qber * 1000) + frame)
            failures += not ok
            leaks.append(leak)
            trips.append(round_trips)
        f = float(np.mean(leaks)) / (CASCADE_FRAME_BITS * binary_entropy(qber))
        efficiencies.append(f)
        by_qber[f"{qber:g}"] = {
            "efficiency": round(f, 4),
            "round_trips_mean": round(float(np.mean(trips)), 1),
            "round_trips_max": int(np.max(trips)),
            "frame_error_rate": failures / frames,
        }
    elapsed = time.perf_counter() - started
    return {
        "name": "cascade_efficiency",
        "value": float(np.mean(efficiencies)),
        "unit": "leak/(n h(Q))",
        "params": {
            "frame_bits": CASCADE_FRAME_BITS,
            "qbers": list(CASCADE_QBERS),
            "passes": CASCADE_PASSES,
            "frames_per_qber": frames,
            "channel": "binary symmetric, f against the channel QBER",
            "by_qber": by_qber,
            "round_trips_mean": round(
                float(np.mean([v["round_trips_mean"] for v in by_qber.values()])), 1
            ),
            "frame_error_rate": float(np.mean([v["frame_error_rate"] for v in by_qber.values()])),
            "cpu_s_per_frame": round(elapsed / (frames * len(CASCADE_QBERS)), 4),
        },
    }


def _toeplitz_inputs(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 2, n, dtype=np.uint8)
    toeplitz_seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    return key, toeplitz_seed


def _median_seconds(fn: object, repeats: int) -> tuple[float, float]:
    """(median, best) wall time of repeated calls after one warm-up call."""
    fn()  # warm-up (numba caches, FFT plans)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), min(times)


def _pa_throughput(n: int, repeats: int) -> dict:
    m = n // 2
    key, toeplitz_seed = _toeplitz_inputs(n, m, 1)
    median, best = _median_seconds(lambda: toeplitz_hash(key, toeplitz_seed, m), repeats)
    # The fallback for CPUs without carry-less multiply, on the same input.
    fft_median, _ = _median_seconds(
        lambda: toeplitz_product_parity_fft(key, toeplitz_seed, m), max(3, repeats // 3)
    )
    block_words, leaf_words = pa._block_shape(m)
    return {
        "name": "pa_input_bits_per_s",
        "value": n / median,
        "unit": "bit/s",
        "params": {
            "input_bits": n,
            "output_bits": m,
            "repeats": repeats,
            "median_s": round(median, 5),
            "best_s": round(best, 5),
            "method": "GF(2) Toeplitz product, Karatsuba split, carry-less multiply",
            "clmul_instruction": pa.CLMUL_INSTRUCTION or "none (FFT path)",
            "block_bits": 64 * block_words,
            "leaf_words": leaf_words,
            "fft_fallback_bits_per_s": n / fft_median,
        },
    }


def _pa_peak_memory(n: int) -> dict:
    # a fresh process, so that its peak resident size is this hash's and nothing else's
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        measured = pool.submit(_pa_memory_in_this_process, n).result()
    return {
        "name": "pa_peak_memory_mb",
        "value": measured["max_rss_mb"],
        "unit": "MiB",
        "params": {
            "input_bits": n,
            "output_bits": n // 2,
            "measured": "peak resident size of a fresh process (interpreter and inputs included)",
            "tracemalloc_peak_mb": measured["tracemalloc_peak_mb"],
            "inputs_mb": measured["inputs_mb"],
            "elapsed_s_in_fresh_process": measured["elapsed_s"],
        },
    }


def _pa_memory_in_this_process(n: int) -> dict:
    m = n // 2
    tracemalloc.start()
    key, toeplitz_seed = _toeplitz_inputs(n, m, 2)
    started = time.perf_counter()
    toeplitz_hash(key, toeplitz_seed, m)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "max_rss_mb": round(max_rss_kib / 1024, 1),
        "tracemalloc_peak_mb": round(peak / 2**20, 1),
        "inputs_mb": round((key.nbytes + toeplitz_seed.nbytes) / 2**20, 1),
        "elapsed_s": round(elapsed, 2),
    }
