"""The pass report (`report.json`, schema satqkd.pass-report/1) and its plots."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from satqkd.simulation import PassRun
from satqkd_core.finite_key import binary_entropy
from satqkd_runtime.keystore import KeyStore

SCHEMA = "satqkd.pass-report/1"
INTENSITY_LABELS = ("signal", "decoy", "vacuum")


def _utc(unix_s: float) -> str:
    return (
        datetime.fromtimestamp(unix_s, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def build_report(run: PassRun) -> dict[str, Any]:
    """Assemble report.json from a finished run (no key material, only digests)."""
    sc, physics, ogs = run.scenario, run.physics, run.ogs
    result = ogs.sessions[run.plan_id].result
    payload_session = run.payload.session(sc.station.name, run.plan_id)
    payload_outcome = payload_session.outcome if payload_session else None
    mission = sc.mission
    x_det, z_det = np.array(result.x_detections), np.array(result.z_detections)
    x_err, z_err = np.array(result.x_errors), np.array(result.z_errors)
    ec_ran = result.ec_rounds > 0
    n_x, n_z = int(x_det.sum()), int(z_det.sum())
    # X errors are known only in the bits error correction kept (LDPC drops failed frames)
    n_x_known = int(result.ec_kept_bits) if ec_ran else 0
    qber_x = _ratio(x_err.sum(), n_x_known) if ec_ran else 0.0
    qber_z = _ratio(z_err.sum(), n_z)
    qber = _ratio(x_err.sum() + z_err.sum(), n_x_known + n_z) if ec_ran else qber_z
    payload_store = KeyStore(run.key_root / "payload" / sc.station.name)
    ogs_store = KeyStore(run.key_root / f"ogs-{sc.station.name}")
    key_bits = result.pa_output_bits if result.key_id and not result.abort_reason else 0
    abort_reason = result.abort_reason or (
        payload_outcome.abort_reason if payload_outcome else None
    )
    if key_bits == 0 and abort_reason is None:
        abort_reason = "no key produced"
    # f = leak / (n h(Q)) over the bits error correction covered (LDPC: whole frames, not the
    # tail), at the error rate it found in the bits it kept (the dropped ones are not known)
    qber_ec = _ratio(x_err.sum(), result.ec_kept_bits) if ec_ran else 0.0
    h = binary_entropy(qber_ec) if ec_ran else 0.0
    ec_efficiency = _ratio(result.leak_ec_bits, result.ec_input_bits * h) if h > 0 else 0.0
    by_intensity = [
        {
            "label": INTENSITY_LABELS[k],
            "mu": float(mission.source.intensities[k]),
            "sent": round(run.pulses_sent * mission.source.probabilities[k]),
            "detections": int(x_det[k] + z_det[k]),
            "errors": int(x_err[k] + z_err[k]),
            "x_detections": int(x_det[k]),
            "z_detections": int(z_det[k]),
            "z_errors": int(z_err[k]),
        }
        for k in range(3)
    ]
    counters = [run.payload.runtime.counters, ogs.runtime.counters]
    return {
        "schema": SCHEMA,
        "mission": mission.name,
        "station": sc.station.name,
        "scenario": sc.scenario.name,
        "seed": sc.scenario.seed,
        "pass": {
            "aos_utc": _utc(physics.window.aos_unix_s),
            "los_utc": _utc(physics.window.los_unix_s),
            "max_elevation_deg": round(float(physics.window.max_elevation_deg), 4),
            "duration_s": round(physics.window.los_unix_s - physics.window.aos_unix_s, 3),
            "qkd_start_utc": _utc(physics.qkd_start_unix_s),
            "qkd_stop_utc": _utc(physics.qkd_stop_unix_s),
            "min_range_km": round(float(physics.frame_range_m.min()) / 1e3, 3),
        },
        "quantum": {
            "pulses_sent": int(run.pulses_sent),
            "detections": int(result.detections),
            "sifted_bits": int(n_x + n_z),
            "qber": round(qber, 6),
            "qber_by_basis": {"x": round(qber_x, 6), "z": round(qber_z, 6)},
            "x_errors_known": ec_ran,
            "by_intensity": by_intensity,
            "mean_channel_loss_db": round(float(np.mean(physics.frame_total_loss_db)), 3),
        },
        "sync": {
            "assigned_fraction": round(result.assigned_fraction, 6),
            "timing_residual_rms_ps": round(result.residual_rms_ps, 3),
            # as tracked at the end of the pass, referred to the QKD start instant
            "clock_offset_ps": round(float(result.clock_offset_at_qkd_start_ps or 0.0), 3),
            "clock_drift_ppb": round(float(result.clock_drift_ppb or 0.0), 4),
            "true_clock_offset_ps": float(sc.scenario.simulation.clock_offset_ps),
            "true_clock_drift_ppb": float(sc.scenario.simulation.clock_drift_ppb),
        },
        "postprocessing": {
            "blocks": 1,
            "aborted_blocks": 0 if key_bits > 0 else 1,
            "ec_method": result.ec_method,
            "ec_efficiency": round(ec_efficiency, 4),
            "ec_rounds": int(result.ec_rounds),
            # LDPC frames and the failed ones, dropped at both ends (0 for Cascade: no frames)
            "ec_frames": int(result.ec_frames),
            "ec_frames_failed": int(result.ec_frames_failed),
            "leak_ec_bits": int(result.leak_ec_bits),
            "verification_tag_bits": int(result.verification_tag_bits),
            "pa_input_bits": int(result.pa_input_bits),
            "pa_output_bits": int(result.pa_output_bits),
            "finite_key": result.finite_key,
        },
        "key": {
            "secret_key_bits": int(key_bits),
            "sha256_payload": payload_store.digest(),
            "sha256_ogs": ogs_store.digest(),
            "key_id": result.key_id if key_bits else None,
            "abort_reason": None if key_bits > 0 else abort_reason,
        },
        "atp": _atp_section(run),
        "classical_channel": {
            "uplink_bytes": int(run.bus_bytes["uplink"]),
            "downlink_bytes": int(run.bus_bytes["downlink"]),
            "messages": int(
                ogs.channel.sent_messages + run.payload.links[sc.station.name].channel.sent_messages
            ),
            "rejected_messages": int(sum(c.qkd_rejected for c in counters)),
            "detection_report_bits_per_detection": round(
                _ratio(8 * result.report_bytes, result.detections), 3
            ),
        },
        "timing": {
            "wall_s": round(run.wall_s, 3),
            "simulated_s": round(physics.window.los_unix_s - physics.clock_start_unix_s, 3),
            "key_ready_after_los_s": round(run.key_ready_after_los_s, 3),
            "realtime_factor": round(
                _ratio(physics.window.los_unix_s - physics.clock_start_unix_s, run.wall_s), 2
            ),
        },
    }


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """Write report.json; every number is a plain JSON number."""
    path = out_dir / "report.json"
    text = json.dumps(report, indent=2, allow_nan=False)
    path.write_text(text + "\n")
    return path


def write_plots(run: PassRun, out_dir: Path) -> list[Path]:
    """Elevation, count rate, QBER and key over the pass, one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    physics = run.physics
    result = run.ogs.sessions[run.plan_id].result
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
        if result.pa_output_bits and not result.abort_reason:
            ax.axhline(result.pa_output_bits, color="g", ls="--", label="final secret key")
    ax.set(xlabel="time after AOS (s)", ylabel="bits", title="Key over the pass")
    ax.legend()
    save(fig, "key.png")
    return paths


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


# a frame whose signal missed the field stop entirely counts as this loss (JSON has no inf)
_MAX_COUPLING_LOSS_DB = 60.0


def _atp_section(run: PassRun) -> dict[str, Any]:
    """The "atp" part: with the station's instruments in the loop, the truth of its pointing
    (sim_backends.sky) and what the daemon asked of them; otherwise the statistical model."""
    physics = run.physics
    transmitter_db = np.asarray(physics.frame_pointing_loss_db, dtype=np.float64)
    station = run.station
    if station is None or station.sky is None:
        return {
            "acquisition_time_s": round(physics.acquisition_time_s, 3),
            "tracking_rms_urad": round(physics.tracking_rms_urad, 4),
            "mean_pointing_loss_db": round(float(np.mean(transmitter_db)), 4),
            "model": "statistical",
        }
    window = physics.window
    truth = station.sky.tracking_summary(window.aos_unix_s, window.los_unix_s)
    coupling = np.asarray(station.frame_coupling, dtype=np.float64)
    with np.errstate(divide="ignore"):
        station_db = np.minimum(-10.0 * np.log10(coupling), _MAX_COUPLING_LOSS_DB)
    mean_transmitter_db = float(np.mean(transmitter_db)) if transmitter_db.size else 0.0
    mean_station_db = float(np.mean(station_db)) if station_db.size else 0.0
    record = run.ogs.atp_records.get(run.plan_id)
    daemon = record.summary() if record is not None else {}
    tracking: dict[str, Any] = {
        "instruments": dict(station.paths),
        **station.counters(),
        "spot_valid_fraction": round(float(daemon.get("spot_valid_fraction") or 0.0), 4),
        "fine_residual_rms_urad": round(float(truth["fine_residual_rms_urad"]), 4),
        "acquired": bool(truth["acquired"]),
        "inside_field_of_view_fraction": round(float(truth["inside_field_of_view_fraction"]), 4),
        "mean_coupling": round(float(np.mean(coupling)) if coupling.size else 1.0, 6),
        "min_frame_coupling": round(float(np.min(coupling)) if coupling.size else 1.0, 6),
    }
    if daemon:
        acquired_s = daemon.get("acquisition_time_s")
        tracking["daemon"] = {
            "acquisition_time_s": None if acquired_s is None else round(float(acquired_s), 3),
            "acquisitions": int(daemon.get("acquisitions", 0)),
            "track_losses": int(daemon.get("track_losses", 0)),
            "offloads": int(daemon.get("offloads", 0)),
            "faults": dict(daemon.get("faults", {})),
            "detectors_refused": daemon.get("detectors_refused"),
        }
    return {
        "acquisition_time_s": round(float(truth["acquisition_time_s"]), 3),
        "tracking_rms_urad": round(float(truth["tracking_rms_urad"]), 4),
        "mean_pointing_loss_db": round(mean_transmitter_db + mean_station_db, 4),
        "transmitter_pointing_loss_db": round(mean_transmitter_db, 4),
        "station_coupling_loss_db": round(mean_station_db, 4),
        "model": "instruments",
        "station_tracking": tracking,
    }
