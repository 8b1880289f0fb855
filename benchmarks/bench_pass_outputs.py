"""What a simulated pass writes after its end, besides report.json: the archives
(frames.parquet, atp.parquet) and the plots with their CSV (issue 12). Runs one short pass
(20 s of QKD near culmination of the clear Jinan-1/Xinglong pass, seed 7; 5 s with --quick),
then times each output on its own."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def figures(quick: bool) -> list[dict]:
    """Get: seconds to write the archives and the plots of one pass."""
    from satqkd.api import run_pass
    from satqkd.archives import pass_timeline, write_archives
    from satqkd.plots import PassData, write_plots

    duration_s = 5.0 if quick else 20.0
    params = {"scenario": "jinan1-xinglong-clear", "seed": 7, "qkd_s": duration_s}
    scenario = Path(__file__).resolve().parents[1] / "configs/scenarios/jinan1-xinglong-clear.yaml"
    result = run_pass(scenario, seed=7, start_after_aos_s=200, max_duration_s=duration_s)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        started = time.perf_counter()
        write_archives(out, result.frames, result.atp, csv=True)
        archives_s = time.perf_counter() - started
        started = time.perf_counter()
        timeline = pass_timeline(result.scenario, step_s=1.0)
        timeline_s = time.perf_counter() - started
        data = PassData(result.report, result.frames, result.atp, result.scenario, timeline)
        started = time.perf_counter()
        written = write_plots(data, out)
        plots_s = time.perf_counter() - started
    return [
        {"name": "pass_archives_write_s", "value": archives_s, "unit": "s",
         "params": {**params, "atp_samples": len(result.atp), "csv": True}},
        {"name": "pass_timeline_s", "value": timeline_s, "unit": "s",
         "params": {**params, "note": "pass search included"}},
        {"name": "pass_plots_write_s", "value": plots_s, "unit": "s",
         "params": {**params, "files": len(written)}},
    ]  # fmt: skip
