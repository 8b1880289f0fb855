"""Figures for blind LDPC reconciliation: efficiency, frame errors, round trips, decoder speed.

Every figure comes from full sender/receiver exchanges (satqkd_core.ldpc_reconciliation) with
the shipped mother codes over a binary symmetric channel whose QBER the receiver and the
sender know exactly (as estimated by parameter estimation). Efficiency is the leak over
h(Q) times the framed key bits (the tail that fills no frame is not counted), frames that
fail included in the leak.
"""

from __future__ import annotations

import time

import numpy as np

from satqkd_core.bits import binary_entropy
from satqkd_core.ldpc import (
    LdpcCode,
    channel_llr_magnitude,
    compute_syndrome,
    decode_syndrome,
    mother_codes,
)
from satqkd_core.ldpc_frames import plan_frames
from satqkd_core.ldpc_reconciliation import (
    DECODE_THREADS,
    LdpcReceiver,
    LdpcSender,
    reconciliation_efficiency,
)

LDPC_QBERS = (0.01, 0.02, 0.05)
FRAMES_PER_KEY = 20  # frames reconciled in one exchange (a ~0.5 Mbit block)


def figures(quick: bool) -> list[dict]:
    """Measure ldpc_efficiency (one per QBER), ldpc_decode_bits_per_s."""
    frames = 2 if quick else 600
    results = []
    timings = []
    for qber in LDPC_QBERS:
        figure, timing = _efficiency(qber, frames)
        results.append(figure)
        timings.append(timing)
    results.append(_decoder_throughput(timings, quick))
    return results


def _exchange(
    qber: float, frames: int, seed: int, codes: tuple[LdpcCode, ...] | None = None
) -> dict:
    """One blind exchange of `frames` frames (the shipped codes, or only `codes`)."""
    plan = plan_frames(qber, codes or mother_codes())
    rng = np.random.default_rng(seed)
    n = frames * plan.frame_key_bits
    reference = rng.integers(0, 2, n).astype(np.uint8)
    noisy = reference ^ (rng.random(n) < qber).astype(np.uint8)
    started, wall_started = time.process_time(), time.perf_counter()
    sender = LdpcSender(reference, qber, seed, codes=codes, fill=rng.bytes(n))
    receiver = LdpcReceiver(noisy, qber, seed, codes=codes)
    receiver.apply_first(sender.first_message())
    while (request := receiver.next_request()) is not None:
        receiver.apply_reply(sender.reply(request))
    cpu_s = time.process_time() - started
    wall_s = time.perf_counter() - wall_started
    kept = receiver.kept_mask()
    return {
        "plan": plan,
        "leak": receiver.leak_bits,
        "framed": n,
        "failed": int(frames - receiver.frame_ok.sum()),
        "frame_ok": receiver.frame_ok.copy(),
        "revealed": receiver.revealed_counts,
        "wrong": int(np.count_nonzero(receiver.corrected_key[kept] != reference[kept])),
        "round_trips": receiver.round_trips,
        "iterations": receiver.decoder_iterations,
        "decoded_edges": receiver.decoded_edges,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
    }


def _efficiency(qber: float, frames: int) -> tuple[dict, dict]:
    keys = max(1, frames // FRAMES_PER_KEY)
    per_key = max(1, frames // keys)
    runs = [_exchange(qber, per_key, 1000 * int(qber * 1000) + i) for i in range(keys)]
    leak = sum(r["leak"] for r in runs)
    framed = sum(r["framed"] for r in runs)
    total_frames = per_key * keys
    failed = sum(r["failed"] for r in runs)
    plan = runs[0]["plan"]
    trips = [r["round_trips"] for r in runs]
    efficiency = reconciliation_efficiency(leak, framed, qber)
    figure = {
        "name": "ldpc_efficiency",
        "value": round(efficiency, 4),
        "unit": "leak/(n h(Q))",
        "params": {
            "qber": qber,
            "code": plan.code.name,
            "code_length": plan.code.n,
            "frame_key_bits": plan.frame_key_bits,
            "shortened": plan.shortened,
            "punctured_at_start": plan.punctured,
            "reveal_step": plan.reveal_step,
            "start_efficiency": round(plan.efficiency(plan.punctured, qber), 4),
            "frames": total_frames,
            "frame_error_rate": failed / total_frames,
            "frame_error_rate_95pct_upper": round(_upper_bound(failed, total_frames), 5),
            "undetected_bit_errors": sum(r["wrong"] for r in runs),
            "round_trips_mean": round(float(np.mean(trips)), 2),
            "round_trips_max": int(max(trips)),
            "frames_per_exchange": per_key,
            "decoder_iterations_per_frame": round(
                sum(r["iterations"] for r in runs) / total_frames, 1
            ),
        },
    }
    timing = {
        "qber": qber,
        "bits": framed,
        "cpu_s": sum(r["cpu_s"] for r in runs),
        "wall_s": sum(r["wall_s"] for r in runs),
        "iterations": sum(r["iterations"] for r in runs),
        "edges": runs[0]["decoded_edges"],
        "frames": total_frames,
    }
    return figure, timing


def _upper_bound(failures: int, trials: int) -> float:
    """One-sided 95 % upper bound on a failure probability (exact for 0, else Wilson)."""
    if failures == 0:
        return 1.0 - 0.05 ** (1.0 / trials)
    z = 1.6449
    p = failures / trials
    centre = p + z * z / (2 * trials)
    spread = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return float((centre + spread) / (1 + z * z / trials))


def _decoder_throughput(timings: list[dict], quick: bool) -> dict:
    bits = sum(t["bits"] for t in timings)
    cpu_s = sum(t["cpu_s"] for t in timings)
    wall_s = sum(t["wall_s"] for t in timings)
    edge_updates = sum(t["iterations"] * t["edges"] for t in timings)
    single = _single_decode(quick)
    return {
        "name": "ldpc_decode_bits_per_s",
        "value": round(bits / cpu_s),
        "unit": "bit/s",
        "params": {
            "measured": "key bits reconciled per CPU second of a whole blind exchange "
            "(sender and receiver, all rounds), one core",
            "qbers": list(LDPC_QBERS),
            "ns_per_edge_update": round(1e9 * cpu_s / edge_updates, 2),
            "decode_threads": DECODE_THREADS,
            "wall_bits_per_s": round(bits / wall_s),
            "wall_measured": "the same exchanges per wall second, frames decoding on "
            "decode_threads threads (the cores, if no other job holds them)",
            "single_decode_bits_per_s": single["bits_per_s"],
            "single_decode": single,
        },
    }


def _single_decode(quick: bool) -> dict:
    """One-shot decoding throughput of a whole rate-0.7 code word at efficiency ~1.15."""
    code = next(c for c in mother_codes() if c.rate >= 0.69)
    qber = 0.0445
    rng = np.random.default_rng(7)
    repeats = 2 if quick else 10
    seconds, iterations = 0.0, 0
    for _ in range(repeats):
        word = rng.integers(0, 2, code.n).astype(np.uint8)
        noisy = word ^ (rng.random(code.n) < qber).astype(np.uint8)
        llr = (1.0 - 2.0 * noisy) * channel_llr_magnitude(qber)
        syndrome = compute_syndrome(code, word)
        started = time.process_time()
        result = decode_syndrome(code, syndrome, llr)
        seconds += time.process_time() - started
        iterations += result.iterations
    return {
        "code": code.name,
        "qber": qber,
        "efficiency": round(code.m / (code.n * binary_entropy(qber)), 3),
        "iterations_mean": iterations / repeats,
        "bits_per_s": round(repeats * code.n / seconds),
    }
