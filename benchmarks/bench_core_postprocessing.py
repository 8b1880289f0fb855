"""Figures for post-processing: Cascade efficiency and Toeplitz hashing speed and memory."""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from satqkd_core import privacy_amplification as pa
from satqkd_core.authentication import TAG_BYTES
from satqkd_core.bits import binary_entropy
from satqkd_core.cascade import CascadeCorrector, CascadeResponder
from satqkd_core.codec import encode_envelope
from satqkd_core.dictionary import DICTIONARY
from satqkd_core.light_time import SPEED_OF_LIGHT_M_S
from satqkd_core.privacy_amplification import toeplitz_hash
from satqkd_core.privacy_amplification_fft import toeplitz_product_parity_fft
from sim_backends.classical_link import ClassicalLinkModel

CASCADE_FRAME_BITS = 10_000
CASCADE_QBERS = (0.01, 0.02, 0.05)
CASCADE_PASSES = 16


CASCADE_SPEED_BITS = 10**6
CASCADE_SPEED_QBER = 0.01
# the seed-7 clear Jinan-1 pass's sifted key and QBER, and its light time at LOS (5.71 ms)
CASCADE_LINK_BITS = 2_387_175
CASCADE_LINK_QBER = 0.0107
CASCADE_LINK_LIGHT_TIME_S = 5.705e-3
REPO = Path(__file__).resolve().parents[1]
# a checkout of B. Rijsman's cascade-python (not on PyPI): compared side by side when given
CASCADE_PYTHON_ENV = "SATQKD_CASCADE_PYTHON"


def figures(quick: bool) -> list[dict]:
    """Measure cascade_efficiency, cascade_bits_per_s, pa_input_bits_per_s and (full run)
    pa_peak_memory_mb."""
    results = [_cascade_efficiency(frames=8 if quick else 200)]
    results.append(_cascade_speed(CASCADE_SPEED_BITS, repeats=1 if quick else 5, quick=quick))
    results.append(_cascade_on_link(CASCADE_LINK_BITS // (10 if quick else 1)))
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


def _bsc_keys(n: int, qber: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 2, n).astype(np.uint8)
    return reference, reference ^ (rng.random(n) < qber).astype(np.uint8)


def _timed_cascade(reference: np.ndarray, noisy: np.ndarray, qber: float, seed: int) -> dict:
    """One in-process exchange; CPU seconds of each end (process clock, one thread)."""
    clock = time.process_time
    started = clock()
    corrector = CascadeCorrector(noisy, qber, seed, CASCADE_PASSES)
    corrector_s = clock() - started
    started = clock()
    responder = CascadeResponder(reference, seed, CASCADE_PASSES)
    responder_s = clock() - started
    while True:  # the wire form the daemons send (compact EC_QUERY rows), coding included
        started = clock()
        query = corrector.next_query_message()
        corrector_s += clock() - started
        if query is None:
            break
        started = clock()
        answers = responder.reply_message(query)
        responder_s += clock() - started
        started = clock()
        corrector.apply_reply_message(answers)
        corrector_s += clock() - started
    errors = int(np.count_nonzero(reference != noisy))
    entropy = binary_entropy(errors / reference.size)
    return {
        "ok": bool(np.array_equal(corrector.corrected_key, reference)),
        "corrector_s": corrector_s,
        "responder_s": responder_s,
        "f": corrector.leak_bits / (reference.size * entropy),
        "f_both_directions": corrector.total_leak_bits / (reference.size * entropy),
        "round_trips": corrector.round_trips,
    }


def _cascade_speed(n: int, repeats: int, quick: bool) -> dict:
    """`cascade_bits_per_s`: one n-bit block through corrector and responder in one process."""
    _timed_cascade(*_bsc_keys(4096, CASCADE_SPEED_QBER, 0), CASCADE_SPEED_QBER, 0)  # warm-up
    runs = [
        _timed_cascade(*_bsc_keys(n, CASCADE_SPEED_QBER, 100 + i), CASCADE_SPEED_QBER, 100 + i)
        for i in range(repeats)
    ]
    totals = [r["corrector_s"] + r["responder_s"] for r in runs]
    median = float(np.median(totals))
    params: dict = {
        "block_bits": n,
        "qber": CASCADE_SPEED_QBER,
        "passes": CASCADE_PASSES,
        "repeats": repeats,
        "median_cpu_s": round(median, 4),
        "corrector_cpu_s": round(float(np.median([r["corrector_s"] for r in runs])), 4),
        "responder_cpu_s": round(float(np.median([r["responder_s"] for r in runs])), 4),
        "station_bits_per_s": n / float(np.median([r["corrector_s"] for r in runs])),
        "payload_bits_per_s": n / float(np.median([r["responder_s"] for r in runs])),
        "f_payload_answers": round(float(np.mean([r["f"] for r in runs])), 4),
        "f_both_directions": round(float(np.mean([r["f_both_directions"] for r in runs])), 4),
        "round_trips_mean": round(float(np.mean([r["round_trips"] for r in runs])), 1),
        "blocks_corrected": sum(r["ok"] for r in runs),
    }
    checkout = os.environ.get(CASCADE_PYTHON_ENV)
    if checkout:
        params["cascade_python"] = _compare_cascade_python(checkout, 10**4 if quick else 10**5)
    return {"name": "cascade_bits_per_s", "value": n / median, "unit": "bit/s", "params": params}


def _cascade_on_link(n: int) -> dict:
    """`cascade_link_s`: seconds one Cascade exchange spends on Jinan-1's modelled classical
    link (sim_backends.classical_link: the mission's rates and framing, the light time of LOS
    at the clear pass's end, each end answering at once), the EC_QUERY and EC_REPLY envelopes
    as the daemons send them, against the same queries as three int64 a row (before
    decision 0034). Deterministic: CPU load does not enter it."""
    reference, noisy = _bsc_keys(n, CASCADE_LINK_QBER, 7)
    corrector = CascadeCorrector(noisy, CASCADE_LINK_QBER, 7, CASCADE_PASSES)
    responder = CascadeResponder(reference, 7, CASCADE_PASSES)
    mission = yaml.safe_load((REPO / "configs" / "missions" / "jinan1.yaml").read_text())
    rates = {key: float(value) for key, value in mission["classical_link"].items()}
    rates["framing_bytes"] = int(rates["framing_bytes"])
    links = {
        form: ClassicalLinkModel(
            lambda: CASCADE_LINK_LIGHT_TIME_S * SPEED_OF_LIGHT_M_S,
            rates["uplink_bps"],
            rates["downlink_bps"],
            rates["framing_bytes"],
        )
        for form in ("compact", "int64_rows")
    }
    tag = bytes(TAG_BYTES)
    query_spec, reply_spec = DICTIONARY["EC_QUERY"], DICTIONARY["EC_REPLY"]
    fields = {"plan_id": 1, "permutation_seed": 7, "passes": CASCADE_PASSES, "qber_estimate": 0.01}
    ready = {form: 0.0 for form in links}
    rows = query_bytes = 0
    while (query := corrector.next_query_message()) is not None:
        k = corrector.pending_rows
        answers = responder.reply_message(query)
        reply = encode_envelope(
            reply_spec,
            corrector.round_trips,
            {
                "plan_id": 1,
                "round": corrector.round_trips,
                "n": k,
                "parities": np.packbits(answers).tobytes(),
            },
            tag,
        )
        compact = encode_envelope(
            query_spec, corrector.round_trips, {**fields, "round": 0, "query": query}, tag
        )
        sizes = {"compact": len(compact), "int64_rows": len(compact) - len(query) + 24 * k}
        for form, link in links.items():
            ready[form] = link.schedule("uplink", sizes[form], ready[form])
            ready[form] = link.schedule("downlink", len(reply), ready[form])
        rows += k
        query_bytes += len(query)
        corrector.apply_reply_message(answers)
    summary = {form: link.summary() for form, link in links.items()}
    return {
        "name": "cascade_link_s",
        "value": ready["compact"],
        "unit": "s",
        "params": {
            "key_bits": n,
            "qber": CASCADE_LINK_QBER,
            "passes": CASCADE_PASSES,
            "light_time_ms": CASCADE_LINK_LIGHT_TIME_S * 1e3,
            "link": rates,
            "round_trips": corrector.round_trips,
            "query_rows": rows,
            "query_bytes_per_row": round(query_bytes / rows, 3),
            "uplink_bytes": summary["compact"]["uplink"]["bytes"],
            "downlink_bytes": summary["compact"]["downlink"]["bytes"],
            "int64_rows_uplink_bytes": summary["int64_rows"]["uplink"]["bytes"],
            "int64_rows_link_s": round(ready["int64_rows"], 3),
            "light_time_s": round(2 * corrector.round_trips * CASCADE_LINK_LIGHT_TIME_S, 3),
            "key_corrected": bool(np.array_equal(corrector.corrected_key, reference)),
        },
    }


def _compare_cascade_python(checkout: str, n: int) -> dict:
    """Ours and cascade-python's "option8" (Cascade opt. (8)) on the same n-bit key."""
    sys.path.insert(0, checkout)
    from cascade.key import Key  # type: ignore[import-not-found]
    from cascade.mock_classical_channel import (  # type: ignore[import-not-found]
        MockClassicalChannel,
    )
    from cascade.reconciliation import Reconciliation  # type: ignore[import-not-found]

    reference, noisy = _bsc_keys(n, CASCADE_SPEED_QBER, 7)
    ours = _timed_cascade(reference, noisy, CASCADE_SPEED_QBER, 7)
    correct, received = Key(), Key()
    correct._size = received._size = n
    correct._bits = dict(enumerate(reference.tolist()))
    received._bits = dict(enumerate(noisy.tolist()))
    reconciliation = Reconciliation(
        "option8", MockClassicalChannel(correct), received, CASCADE_SPEED_QBER
    )
    started = time.process_time()
    reconciled = reconciliation.reconcile()
    theirs_s = time.process_time() - started
    errors = int(np.count_nonzero(reference != noisy))
    theirs_ok = all(reconciled.get_bit(i) == int(reference[i]) for i in range(n))
    ours_s = ours["corrector_s"] + ours["responder_s"]
    return {
        "source": f"cascade-python checkout {checkout} (algorithm option8)",
        "block_bits": n,
        "ours_bits_per_s": n / ours_s,
        "theirs_bits_per_s": n / theirs_s,
        "speed_ratio": round(theirs_s / ours_s, 1),
        "ours_f": round(ours["f"], 4),
        "theirs_f": round(
            reconciliation.stats.reply_parity_bits / (n * binary_entropy(errors / n)), 4
        ),
        "ours_round_trips": ours["round_trips"],
        "theirs_round_trips": reconciliation.stats.ask_parity_messages,
        "both_corrected": bool(ours["ok"] and theirs_ok),
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
