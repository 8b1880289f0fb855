"""Trial of one LDPC mother-code spec in the blind exchange (issue 16, decision 0041).

Not a benchmark module (a PEG build takes minutes): a script that builds the code of a spec
(`MOTHER_CODES` or `DESIGN_CANDIDATES` of satqkd_core/ldpc_construction.py), or loads it from
--cache, and runs it as the only code through full sender/receiver exchanges like
benchmarks/bench_ldpc.py (20 frames an exchange, that benchmark's seeds for the QBER), then
prints one JSON line: efficiency (leak over h(Q) x framed bits), failed frames, the per-frame
need (efficiency at which each frame decoded: its mean and spread set a code's blind window,
`typical_efficiency` / `efficiency_spread`), round trips, decoder iterations, CPU seconds.

    python -m benchmarks.ldpc_code_trials --spec r70d_n64k --qber 0.05 --frames 100 \
        --cache /tmp/ldpc-codes

`--step-efficiency` and `--round-stall` try another blind schedule: the efficiency each reveal
round adds (satqkd_core.ldpc_frames.STEP_EFFICIENCY) and the iterations without progress after
which a round that is not the frame's last gives up
(satqkd_core.ldpc_reconciliation.ROUND_STALL_ITERATIONS). Both ends read these constants, so
the script sets them for its own process only; the project's schedule is unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import satqkd_core.ldpc_frames as ldpc_frames
import satqkd_core.ldpc_protocol as ldpc_protocol
import satqkd_core.ldpc_reconciliation as ldpc_reconciliation
from benchmarks.bench_ldpc import FRAMES_PER_KEY, _exchange, _upper_bound
from satqkd_core.bits import binary_entropy
from satqkd_core.ldpc import LdpcCode, available_codes, load_code
from satqkd_core.ldpc_construction import DESIGN_CANDIDATES, MOTHER_CODES, build_code
from satqkd_core.ldpc_reconciliation import reconciliation_efficiency


def load_or_build(name: str, cache: Path | None, n: int | None) -> LdpcCode:
    """The code of the spec `name`: the shipped file if there is one (and no other `n`), else
    built (frame length `n` if given) and cached as <cache>/<name>_n<n>.npz."""
    specs = {s.name: s for s in MOTHER_CODES + DESIGN_CANDIDATES}
    if name not in specs:
        raise SystemExit(f"ldpc_code_trials: no spec named {name!r}; known: {', '.join(specs)}")
    if n is None and name in available_codes():
        return load_code(name)  # a shipped code: its data file
    spec = specs[name] if n is None else dataclasses.replace(specs[name], n=n)
    path = None if cache is None else cache / f"{spec.name}_n{spec.n}.npz"
    if path is not None and path.exists():
        return LdpcCode.load(path)
    started = time.process_time()
    code = build_code(spec)
    print(f"built {spec.name} n={spec.n} in {time.process_time() - started:.0f} CPU-s",
          file=sys.stderr)  # fmt: skip
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        code.save(str(path))
    return code


def exchange(code: LdpcCode, qber: float, frames: int, seed: int) -> dict:
    """One blind exchange of `frames` frames with `code` as the only code (bench_ldpc's), with
    the efficiency each decoded frame needed."""
    run = _exchange(qber, frames, seed, codes=(code,))
    plan = run["plan"]
    need = (code.m - plan.punctured + run["revealed"]) / (
        plan.frame_key_bits * binary_entropy(qber)
    )
    return {**run, "need": need[run["frame_ok"]]}


def trial(code: LdpcCode, qber: float, frames: int, first_key: int = 0) -> dict:
    """Exchanges of FRAMES_PER_KEY frames (bench_ldpc's seeds, from its key `first_key` on)
    adding up to `frames`."""
    keys = max(1, frames // FRAMES_PER_KEY)
    per_key = max(1, frames // keys)
    seeds = [1000 * int(qber * 1000) + first_key + i for i in range(keys)]
    runs = [exchange(code, qber, per_key, seed) for seed in seeds]
    total = per_key * keys
    failed = sum(r["failed"] for r in runs)
    need = np.concatenate([r["need"] for r in runs])
    plan = runs[0]["plan"]
    bits = sum(r["framed"] for r in runs)
    cpu_s = sum(r["cpu_s"] for r in runs)
    return {
        "code": code.name,
        "n": code.n,
        "rate": round(code.rate, 4),
        "qber": qber,
        "efficiency": round(reconciliation_efficiency(sum(r["leak"] for r in runs), bits, qber), 4),
        "start_efficiency": round(plan.efficiency(plan.punctured, qber), 4),
        "frames": total,
        "first_key": first_key,
        "failed": failed,
        "fer_95pct_upper": round(_upper_bound(failed, total), 5),
        "undetected_bit_errors": sum(r["wrong"] for r in runs),
        "need_mean": round(float(need.mean()), 4),
        "need_spread": round(float(need.std()), 4),
        "need_max": round(float(need.max()), 4),
        "round_trips_mean": round(float(np.mean([r["round_trips"] for r in runs])), 2),
        "iterations_per_frame": round(sum(r["iterations"] for r in runs) / total, 1),
        "bits_per_cpu_s": round(bits / cpu_s),
    }


@contextmanager
def blind_schedule(step_efficiency: float | None, round_stall: int | None) -> Iterator[None]:
    """Run the exchanges of this process with another reveal step and round stall, if given
    (the sender and the receiver read the same module constants), and restore them after."""
    if step_efficiency is not None and not step_efficiency > 0.0:
        raise SystemExit("ldpc_code_trials: --step-efficiency must be > 0")
    if round_stall is not None and round_stall < 1:
        raise SystemExit("ldpc_code_trials: --round-stall must be >= 1")
    saved = (
        ldpc_frames.STEP_EFFICIENCY,
        ldpc_protocol.STEP_EFFICIENCY,
        ldpc_reconciliation.ROUND_STALL_ITERATIONS,
    )
    if step_efficiency is not None:
        ldpc_frames.STEP_EFFICIENCY = ldpc_protocol.STEP_EFFICIENCY = step_efficiency
    if round_stall is not None:
        ldpc_reconciliation.ROUND_STALL_ITERATIONS = round_stall
    try:
        yield
    finally:
        (
            ldpc_frames.STEP_EFFICIENCY,
            ldpc_protocol.STEP_EFFICIENCY,
            ldpc_reconciliation.ROUND_STALL_ITERATIONS,
        ) = saved


def main(argv: list[str] | None = None) -> int:
    """Command line: one spec, one QBER, a number of frames; prints a JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ldpc_code_trials")
    parser.add_argument("--spec", required=True, help="MotherCodeSpec name")
    parser.add_argument("--qber", type=float, required=True)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--first-key", type=int, default=0, help="skip this many exchanges")
    parser.add_argument("--n", type=int, default=None, help="frame length instead of the spec's")
    parser.add_argument("--cache", type=Path, default=None, help="folder for built codes")
    parser.add_argument("--typical", type=float, default=None, help="override the window mean")
    parser.add_argument("--spread", type=float, default=None, help="override the window spread")
    parser.add_argument(
        "--step-efficiency", type=float, default=None, help="efficiency a reveal round adds"
    )
    parser.add_argument(
        "--round-stall", type=int, default=None, help="stall iterations of a round not the last"
    )
    args = parser.parse_args(argv)
    code = load_or_build(args.spec, args.cache, args.n)
    if args.typical is not None or args.spread is not None:
        code = dataclasses.replace(
            code,
            typical_efficiency=args.typical or code.typical_efficiency,
            efficiency_spread=args.spread or code.efficiency_spread,
        )
    with blind_schedule(args.step_efficiency, args.round_stall):
        result = trial(code, args.qber, args.frames, args.first_key)
        schedule = {
            "step_efficiency": ldpc_frames.STEP_EFFICIENCY,
            "round_stall": ldpc_reconciliation.ROUND_STALL_ITERATIONS,
        }
    print(json.dumps({**result, **schedule}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
