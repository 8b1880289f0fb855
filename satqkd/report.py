"""Writing a pass's report (`report.json`, schema satqkd.pass-report/1), its recorded
telemetry (`telemetry.jsonl`) and its plots. The report itself is made by
`satqkd.report_builder` from what the daemons published (docs/report.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from satqkd.report_builder import SCHEMA, save_recorded, write_report
from satqkd.simulation import PassRun

__all__ = ["SCHEMA", "build_report", "write_plots", "write_report", "write_telemetry"]


def build_report(run: PassRun) -> dict[str, Any]:
    """Get: the report of a simulated pass, as `run_pass` built it from the recorded
    telemetry, the key stores' digests and the simulator's truth (no key material)."""
    return run.report


def write_telemetry(run: PassRun, out_dir: Path) -> Path:
    """Write the telemetry and events recorded during the pass as JSON lines."""
    return save_recorded(run.recorded, out_dir / "telemetry.jsonl")


def write_plots(run: PassRun, out_dir: Path) -> list[Path]:
    """Elevation, count rate, QBER and key over the pass, one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    physics = run.physics
    result = run.ogs.results[run.plan_id]
    t0 = physics.window.aos_unix_s
    chunks = result.chunks
    t_chunk = np.array([0.5 * (c.start_unix_s + c.stop_unix_s) - t0 for c in chunks])
    span = np.array([c.stop_unix_s - c.start_unix_s for c in chunks])
    paths = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    grid_t = physics.elevation_grid_unix_s - t0
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(grid_t, physics.elevation_grid_deg, label="elevation")
    ax.axvspan(physics.qkd_start_unix_s - t0, physics.qkd_stop_unix_s - t0, alpha=0.15, label="QKD")
    ax.set(xlabel="time after AOS (s)", ylabel="elevation (deg)", title="Pass geometry")
    ax.legend()
    save(fig, "elevation.png")

    fig, ax = plt.subplots(figsize=(7, 3.6))
    if chunks:
        rate = np.array([c.detections for c in chunks]) / np.maximum(span, 1e-9)
        (line1,) = ax.semilogy(t_chunk, np.maximum(rate, 1e-1), label="detections per s")
        ax2 = ax.twinx()
        (line2,) = ax2.plot(
            physics.frame_mid_unix_s - t0, physics.frame_total_loss_db, "C1", label="link loss"
        )
        ax2.set_ylabel("link loss (dB)")
        ax.legend(handles=[line1, line2], loc="upper right")
    ax.set(xlabel="time after AOS (s)", ylabel="detections per s", title="Count rate")
    save(fig, "count_rate.png")

    fig, ax = plt.subplots(figsize=(7, 3.6))
    if chunks:
        z_err = np.array([c.z_errors for c in chunks], dtype=float)
        z_n = np.array([c.z_sifted for c in chunks], dtype=float)
        window = max(1, len(chunks) // 40)
        kernel = np.ones(window)
        qber = np.convolve(z_err, kernel, "same") / np.maximum(np.convolve(z_n, kernel, "same"), 1)
        ax.plot(t_chunk, 100 * qber, label=f"Z-basis QBER ({window}-frame average)")
        ax.axhline(100 * run.scenario.mission.protocol.qber_abort_threshold, color="r", ls="--")
    ax.set(xlabel="time after AOS (s)", ylabel="QBER (%)", title="Quantum bit error rate")
    ax.legend()
    save(fig, "qber.png")

    fig, ax = plt.subplots(figsize=(7, 3.6))
    if chunks:
        sifted = np.cumsum([c.sifted for c in chunks])
        ax.plot(t_chunk, sifted, label="sifted bits (cumulative)")
        if result.key_bits and not result.abort_reason:
            ax.axhline(result.key_bits, color="g", ls="--", label="final secret key")
    ax.set(xlabel="time after AOS (s)", ylabel="bits", title="Key over the pass")
    ax.legend()
    save(fig, "key.png")
    return paths
