"""The payload's processing budget for one clear Jinan-1 pass, in CPU-seconds on one core.

What the payload computer does per pass, with the same core calls its session makes
(satqkd_payload/session.py): decode each detection report, look up the pattern of the detected
pulses (AES-256 counter mode, firmware_shims.source_sequencer), sift and build the reply; then
answer error correction (Cascade responder, or the LDPC sender's syndromes and reveals), hash
the key for verification and run privacy amplification. The station's share (encoding the
reports, the Cascade corrector, the LDPC decoder) runs in this process to produce the messages
the payload answers; the payload's share replays them in a fresh process on one core
(NUMBA_NUM_THREADS=1), timed step by step with the process's CPU clock, its peak resident size
read at the end (the interpreter and numba alone are reported as the baseline).

Sizes are those of the seed-7 clear pass (docs/performance.md "Whole pass"): 9,548,312
detections in 437 one-second reports of 1e8 pulses, QBER 1.07 %, 382,097 (Cascade) or 573,020
(LDPC) secret bits out of privacy amplification. `--quick` runs a tenth of the pass.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

DETECTIONS = 9_548_312
CHUNKS = 437
PULSES_PER_CHUNK = 100_000_000
QBER = 0.0107
PA_OUTPUT_BITS = {"cascade": 382_097, "ldpc": 573_020}
EPS_COR = 1e-15
EPS_FRAME = 1e-3
# a stated reference: the payload computer class of a microsatellite (see docs/performance.md)
REFERENCE_COMPUTER = "ARM Cortex-A53 class, 1.2 GHz, one core (e.g. Zynq UltraScale+ MPSoC APU)"


def figures(quick: bool) -> list[dict]:
    """`payload_cpu_s_per_pass` (Cascade and LDPC) and `payload_peak_memory_mb`."""
    scale = 10 if quick else 1
    inputs = _pass_inputs(DETECTIONS // scale, CHUNKS // scale or 1, seed=7)
    os.environ["NUMBA_NUM_THREADS"] = "1"  # the children inherit it: one core
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        sifted = pool.submit(_payload_sifting, inputs["reports"], inputs["pattern_key"]).result()
    reference = sifted.pop("reference_key")
    noisy = reference ^ (np.random.default_rng(8).random(reference.size) < QBER).astype(np.uint8)
    results = []
    peak = sifted["max_rss_mb"]
    for method in ("cascade", "ldpc"):
        started, wall = time.process_time(), time.perf_counter()
        exchange = _station_side(method, reference, noisy)
        station_cpu_s = time.process_time() - started
        station_wall_s = time.perf_counter() - wall
        output_bits = min(PA_OUTPUT_BITS[method] // scale, reference.size // 2)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            post = pool.submit(
                _payload_postprocessing, method, reference, exchange, output_bits
            ).result()
        steps = {**sifted["steps"], **post["steps"]}
        heaviest = max(steps, key=steps.__getitem__)
        peak = max(peak, post["max_rss_mb"])
        results.append(
            {
                "name": "payload_cpu_s_per_pass",
                "value": round(sum(steps.values()), 3),
                "unit": "CPU-s",
                "params": {
                    "reconciliation": method,
                    "steps_cpu_s": {k: round(v, 3) for k, v in steps.items()},
                    "heaviest_step": heaviest,
                    "detections": inputs["detections"],
                    "reports": len(inputs["reports"]),
                    "sifted_x_bits": int(reference.size),
                    "pa_output_bits": output_bits,
                    "ec_messages_answered": post["messages"],
                    "loading_once_per_start_cpu_s": round(post["loading_cpu_s"], 3),
                    # the station's side as run here to make the messages (both ends' calls,
                    # all threads): what the key waits for at the station besides the link
                    "station_side_cpu_s": round(station_cpu_s, 3),
                    "station_side_wall_s": round(station_wall_s, 3),
                    "peak_rss_mb": post["max_rss_mb"],
                    "baseline_rss_mb": post["baseline_rss_mb"],
                    "core": "one core of this machine (NUMBA_NUM_THREADS=1)",
                    "reference_computer": REFERENCE_COMPUTER,
                    "scale": f"1/{scale} of the seed-7 clear pass",
                },
            }
        )
    results.append(
        {
            "name": "payload_peak_memory_mb",
            "value": peak,
            "unit": "MiB",
            "params": {
                "measured": "peak resident size of the payload's fresh process, either method",
                "sifting_peak_rss_mb": sifted["max_rss_mb"],
                "baseline_rss_mb": sifted["baseline_rss_mb"],
                "scale": f"1/{scale} of the seed-7 clear pass",
            },
        }
    )
    return results


# ---- the station's side, in this process ----------------------------------------------------


def _pass_inputs(detections: int, chunks: int, seed: int) -> dict[str, Any]:
    """Encoded detection reports (what the station uplinks) and the pass's pattern key."""
    from satqkd_core.detection_report import encode_detection_report

    rng = np.random.default_rng(seed)
    per_chunk = np.full(chunks, detections // chunks)
    per_chunk[: detections % chunks] += 1
    reports = []
    for chunk, count in enumerate(per_chunk):
        pulses = np.sort(rng.choice(PULSES_PER_CHUNK, size=int(count), replace=False))
        pulse_index = chunk * PULSES_PER_CHUNK + pulses.astype(np.int64)
        basis = rng.integers(0, 2, pulse_index.size).astype(np.uint8)
        reports.append(encode_detection_report(pulse_index, basis))
    return {
        "reports": reports,
        "pattern_key": rng.bytes(32),
        "detections": int(per_chunk.sum()),
    }


def _station_side(method: str, reference: np.ndarray, noisy: np.ndarray) -> dict[str, Any]:
    """The messages the station sends the payload during error correction (recorded)."""
    if method == "cascade":
        from satqkd_core.cascade import CascadeCorrector, CascadeResponder

        corrector = CascadeCorrector(noisy, QBER, 11)
        responder = CascadeResponder(reference, 11)
        queries = []  # as the daemons send them: compact EC_QUERY rows (decision 0034)
        while (query := corrector.next_query_message()) is not None:
            queries.append(query)
            corrector.apply_reply_message(responder.reply_message(query))
        return {"seed": 11, "queries": queries}
    from satqkd_core.ldpc_reconciliation import LdpcReceiver, LdpcSender

    receiver = LdpcReceiver(noisy, QBER, 12)
    start = receiver.start_request()
    needed = LdpcSender.fill_bits_needed(reference.size, start, eps_frame=EPS_FRAME)
    fill = np.random.default_rng(13).bytes((needed + 7) // 8)
    sender = LdpcSender.from_start_request(reference, start, eps_frame=EPS_FRAME, fill=fill)
    for part in sender.first_messages():
        receiver.apply_first(part)
    requests = []
    while (request := receiver.next_request()) is not None:
        requests.append(request)
        receiver.apply_reply(sender.reply(request))
    return {"start": start, "fill": fill, "requests": requests}


# ---- the payload's side, in a fresh one-core process -----------------------------------------


def _rss_mb() -> float:
    """Peak resident size of this process image (VmHWM: getrusage's ru_maxrss can carry the
    spawning parent's peak over fork and exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _warm_up() -> float:
    """Load every kernel the payload uses (numba cache) on tiny inputs; the baseline RSS."""
    from satqkd_core.detection_report import decode_detection_report, encode_detection_report
    from satqkd_core.privacy_amplification import toeplitz_hash
    from satqkd_core.sifting import sift_mask
    from satqkd_core.verification import random_verification_hash_key, verification_tag

    pulses = np.arange(0, 1000, 7, dtype=np.int64)
    decode_detection_report(encode_detection_report(pulses, np.zeros(pulses.size, np.uint8)))
    sift_mask(np.zeros(4, np.uint8), np.zeros(4, np.uint8))
    key = np.zeros(4096, np.uint8)
    verification_tag(key, random_verification_hash_key(np.random.default_rng(0), 4))
    toeplitz_hash(key, np.zeros(4096 + 1023, np.uint8), 1024)
    return _rss_mb()


def _payload_sifting(reports: list[bytes], pattern_key: bytes) -> dict[str, Any]:
    from firmware_shims.source_sequencer import SourceSequencer
    from satqkd_core.detection_report import decode_detection_report
    from satqkd_core.sifting import pack_intensity_labels, sift_mask

    baseline = _warm_up()
    sequencer = SourceSequencer(None, (0.5, 0.25, 0.25), 0.5)
    sequencer.load_pass(1, pattern_key)
    sequencer.pattern_of(1, np.arange(8, dtype=np.int64))
    steps = {"decode_reports": 0.0, "pattern_lookup": 0.0, "sift_and_reply": 0.0}
    x_bits = []
    for report in reports:
        t0 = time.process_time()
        pulse_index, station_basis = decode_detection_report(report)
        t1 = time.process_time()
        record = sequencer.pattern_of(1, pulse_index)
        t2 = time.process_time()
        keep = sift_mask(record.basis, station_basis)
        kept_basis, kept_intensity, kept_bits = (
            record.basis[keep],
            record.intensity[keep],
            record.bit[keep],
        )
        is_x = kept_basis == 0
        np.packbits(keep.astype(np.uint8), bitorder="big")
        pack_intensity_labels(kept_intensity)
        np.packbits(kept_bits[~is_x], bitorder="big")
        x_bits.append(kept_bits[is_x].copy())
        t3 = time.process_time()
        steps["decode_reports"] += t1 - t0
        steps["pattern_lookup"] += t2 - t1
        steps["sift_and_reply"] += t3 - t2
    return {
        "steps": steps,
        "reference_key": np.concatenate(x_bits),
        "max_rss_mb": _rss_mb(),
        "baseline_rss_mb": baseline,
    }


def _payload_postprocessing(
    method: str, reference: np.ndarray, exchange: dict[str, Any], output_bits: int
) -> dict[str, Any]:
    from satqkd_core.privacy_amplification import toeplitz_hash, toeplitz_seed_bits
    from satqkd_core.verification import (
        random_verification_hash_key,
        verification_hash_key_words,
        verification_tag,
    )

    baseline = _warm_up()
    rng = np.random.default_rng(14)
    loading = 0.0  # once per daemon start, not per pass: kernels and the LDPC mother code
    if method == "cascade":
        from satqkd_core.cascade import CascadeResponder

        started = time.process_time()
        CascadeResponder(np.zeros(64, np.uint8), 1).reply(np.array([[0, 0, 64]]))
        loading = time.process_time() - started
    else:
        from satqkd_core.ldpc_reconciliation import LdpcSender

        started = time.process_time()
        LdpcSender.from_start_request(
            reference, exchange["start"], eps_frame=EPS_FRAME, fill=exchange["fill"]
        )
        loading = time.process_time() - started
    t0 = time.process_time()
    if method == "cascade":
        responder = CascadeResponder(reference, exchange["seed"])
        for query in exchange["queries"]:
            responder.reply_message(query)
        messages = len(exchange["queries"])
        key = reference
    else:
        sender = LdpcSender.from_start_request(
            reference, exchange["start"], eps_frame=EPS_FRAME, fill=exchange["fill"]
        )
        sender.first_messages()
        for request in exchange["requests"]:
            sender.reply(request)
        messages = 1 + len(exchange["requests"])
        key = reference[sender.kept_mask()]
    t1 = time.process_time()
    words = random_verification_hash_key(rng, verification_hash_key_words(EPS_COR, key.size))
    verification_tag(key, words)
    t2 = time.process_time()
    seed = rng.integers(0, 2, toeplitz_seed_bits(key.size, output_bits)).astype(np.uint8)
    toeplitz_hash(key, seed, output_bits)
    t3 = time.process_time()
    name = "cascade_responder" if method == "cascade" else "ldpc_sender"
    return {
        "steps": {name: t1 - t0, "verification": t2 - t1, "privacy_amplification": t3 - t2},
        "messages": messages,
        "loading_cpu_s": loading,
        "max_rss_mb": _rss_mb(),
        "baseline_rss_mb": baseline,
    }
