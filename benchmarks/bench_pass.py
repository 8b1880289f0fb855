"""Whole-pass figures: how much faster than real time a simulated pass runs, and when its key
is ready after LOS, on loopback and across the modelled classical link (Cascade and LDPC)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from satqkd.config import load_scenario
from satqkd.simulation import PassRun, run_pass

SCENARIOS = Path(__file__).resolve().parents[1] / "configs/scenarios"
SCENARIO = SCENARIOS / "jinan1-xinglong-clear.yaml"


def _run(path: Path, quick: bool) -> PassRun:
    scenario = load_scenario(path, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run_pass(scenario, Path(tmp), None, None, 60.0 if quick else None))


def _counts(run: PassRun) -> dict[str, Any]:
    result = run.ogs.results[run.plan_id]  # the session itself is released at the end
    physics = run.physics
    return {
        "qkd_s": physics.qkd_stop_unix_s - physics.qkd_start_unix_s,
        "detections": result.detections,
        "secret_key_bits": result.pa_output_bits,
        "ec_method": result.ec_method,
        "ec_round_trips": result.ec_rounds,
        "wall_s": round(run.wall_s, 2),
        "key_ready_after_los_s": round(run.key_ready_after_los_s, 2),
    }


def figures(quick: bool) -> list[dict[str, Any]]:
    """`pass_realtime_factor` and `pass_key_ready_after_los_s` of the clear Jinan-1 pass on
    loopback; `pass_key_ready_on_link_cascade_s` and `..._ldpc_s` across the modelled link."""
    run = _run(SCENARIO, quick)
    physics = run.physics
    simulated = physics.window.los_unix_s - physics.clock_start_unix_s
    counts = _counts(run)
    figures = [
        {
            "name": "pass_realtime_factor",
            "value": simulated / run.wall_s,
            "unit": "x",
            "params": {"scenario": SCENARIO.name, **counts, "broker": "embedded"},
        },
        {
            "name": "pass_key_ready_after_los_s",
            "value": run.key_ready_after_los_s,
            "unit": "s",
            "params": {"scenario": SCENARIO.name, **counts},
        },
    ]
    for name, file in (
        ("pass_key_ready_on_link_cascade_s", "jinan1-xinglong-clear-link.yaml"),
        ("pass_key_ready_on_link_ldpc_s", "jinan1-xinglong-ldpc-link.yaml"),
    ):
        linked = _run(SCENARIOS / file, quick)
        figures.append(
            {
                "name": name,
                "value": linked.key_ready_after_los_s,
                "unit": "s",
                "params": {"scenario": file, **_counts(linked), "link": linked.classical_link},
            }
        )
    return figures
