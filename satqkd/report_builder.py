"""The pass report (`report.json`, schema satqkd.pass-report/1) from what the daemons publish.

A `PassRecorder` (satqkd.pass_recorder, re-exported here) listens on the bus to a mission's
telemetry and events, as the operation control centre does, and keeps the decoded stream
(saved and loaded as JSON lines, `telemetry.jsonl`). `build_report` turns a recorded stream
into the report: the figures come from the station's OGS_PASS_SUMMARY and the payload's
PAYLOAD_PASS_SUMMARY, so a pass on real hardware gives the same report as a simulated one. Two
things do not come from the bus: the SHA-256 digests of the stored keys (`key_digests`, read
from the key stores the caller can reach; telemetry never carries a digest of a key), and, for
a simulated pass only, the simulator's truth (`SimulationTruth`), added on top. Fields:
docs/report.md and docs/report.schema.json.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from satqkd.pass_recorder import (
    PassRecorder,
    Record,
    find_record,
    load_recorded,
    record_of,
    save_recorded,
)
from satqkd_runtime.keystore import KeyStore, KeyStoreError

__all__ = [
    "SCHEMA",
    "AtpTruth",
    "PassRecorder",
    "Record",
    "SimulationTruth",
    "build_report",
    "key_digests",
    "load_recorded",
    "pass_summaries",
    "record_of",
    "save_recorded",
    "write_report",
]

SCHEMA = "satqkd.pass-report/1"
INTENSITY_LABELS = ("signal", "decoy", "vacuum")
OGS_SUMMARY = "OGS_PASS_SUMMARY"
PAYLOAD_SUMMARY = "PAYLOAD_PASS_SUMMARY"
BBM92_SUMMARY = "BBM92_PASS_SUMMARY"  # a BBM92 pass's own figures (satqkd_ogs.bbm92_session)
FAULT_FIELDS = {
    "gimbal": "atp_gimbal_faults",
    "fsm": "atp_fsm_faults",
    "beacon": "atp_beacon_faults",
    "detectors": "atp_detector_faults",
}


def pass_summaries(
    recorded: Iterable[Mapping[str, Any]], plan_id: int | None = None
) -> tuple[Record | None, Record | None]:
    """Get: the station's and the payload's summary records of a plan (of the last plan the
    station summarised, if plan_id is None); None for one not recorded."""
    records = list(recorded)
    ogs = find_record(records, OGS_SUMMARY, plan_id, None)
    if ogs is None:
        return None, None
    fields = ogs["fields"]
    payload = find_record(records, PAYLOAD_SUMMARY, fields["plan_id"], fields["station"])
    return ogs, payload


def _stored_key_digest(store: KeyStore | None, key_id: str | None) -> str | None:
    if store is None or not key_id:
        return None
    try:
        bits = store.load(key_id)
    except (KeyStoreError, OSError):
        return None
    return hashlib.sha256(np.packbits(bits, bitorder="big").tobytes()).hexdigest()


def key_digests(
    recorded: Iterable[Mapping[str, Any]],
    *,
    plan_id: int | None = None,
    payload_keys: KeyStore | None = None,
    ogs_keys: KeyStore | None = None,
) -> dict[str, str | None]:
    """Get: SHA-256 of the key each end stored for the plan, read from the key stores given
    (by the key id its summary names); None for an end whose store or key is not at hand."""
    ogs, payload = pass_summaries(recorded, plan_id)
    return {
        "payload": _stored_key_digest(
            payload_keys, payload["fields"]["key_id"] if payload else None
        ),
        "ogs": _stored_key_digest(ogs_keys, ogs["fields"]["key_id"] if ogs else None),
    }


# ---- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AtpTruth:
    """The simulator's knowledge of the pointing: the statistical model's figures, or (station
    instruments in the loop) the truth of where the station pointed, and the wire-level
    instruments' own counts of what the daemon asked of them."""

    model: str  # "statistical" or "instruments"
    acquisition_time_s: float
    tracking_rms_urad: float
    mean_pointing_loss_db: float
    transmitter_pointing_loss_db: float | None = None
    station_coupling_loss_db: float | None = None
    instruments: Mapping[str, str] = field(default_factory=dict)
    instrument_commands: Mapping[str, int] = field(default_factory=dict)
    # fine_residual_rms_urad, acquired, inside_field_of_view_fraction, mean_coupling,
    # min_frame_coupling: as the report shows them
    station: Mapping[str, Any] = field(default_factory=dict)
    # the payload end when its own pointing is simulated (PayloadPointingTruth.report())
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SimulationTruth:
    """What only a simulated pass knows, added on top of the telemetry's report."""

    scenario: str
    seed: int
    clock_offset_ps: float
    clock_drift_ppb: float
    mean_channel_loss_db: float
    atp: AtpTruth
    wall_s: float
    simulated_s: float
    key_ready_after_los_s: float  # wall seconds: a simulated clock stands still at LOS
    #: the bench file of each node and how each instrument slot was reached (in-process,
    #: emulator, visa-sim, hardware, recording; "none" for a slot the bench leaves empty)
    benches: dict[str, str] = field(default_factory=dict)
    instruments: dict[str, str] = field(default_factory=dict)
    #: the modelled payload <-> station link, as `classical_channel.link` shows it
    classical_link: Mapping[str, Any] = field(default_factory=dict)


def _utc(unix_s: float | None) -> str | None:
    if unix_s is None:
        return None
    moment = datetime.fromtimestamp(unix_s, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _pass(o: Mapping[str, Any]) -> dict[str, Any]:
    min_range_m = o["min_range_m"]
    return {
        "aos_utc": _utc(o["aos_unix_s"]),
        "los_utc": _utc(o["los_unix_s"]),
        "max_elevation_deg": _round(o["max_elevation_deg"], 4),
        "duration_s": round(o["los_unix_s"] - o["aos_unix_s"], 3),
        "qkd_start_utc": _utc(o["qkd_start_unix_s"]),
        "qkd_stop_utc": _utc(o["qkd_stop_unix_s"]),
        "min_range_km": None if min_range_m is None else round(min_range_m / 1e3, 3),
    }


def _quantum(
    o: Mapping[str, Any], p: Mapping[str, Any] | None, truth: SimulationTruth | None
) -> dict[str, Any]:
    x_det, z_det = o["x_detections"], o["z_detections"]
    x_err, z_err = o["x_errors"], o["z_errors"]
    by_intensity = [
        {
            "label": INTENSITY_LABELS[k],
            "mu": o["intensities"][k],
            "sent": p["sent_by_intensity"][k] if p is not None else None,
            "detections": x_det[k] + z_det[k],
            "errors": x_err[k] + z_err[k],
            "x_detections": x_det[k],
            "z_detections": z_det[k],
            "z_errors": z_err[k],
        }
        for k in range(3)
    ]
    quantum = {
        "pulses_sent": p["pulses_sent"] if p is not None else None,
        "detections": o["detections"],
        "sifted_bits": o["sifted_bits"],
        "qber": round(o["qber"], 6),
        "qber_by_basis": {"x": round(o["qber_x"], 6), "z": round(o["qber_z"], 6)},
        "x_errors_known": o["x_errors_known"],
        "by_intensity": by_intensity,
    }
    if truth is not None:
        quantum["mean_channel_loss_db"] = round(truth.mean_channel_loss_db, 3)
    return quantum


def _sync(o: Mapping[str, Any], truth: SimulationTruth | None) -> dict[str, Any]:
    sync = {
        "assigned_fraction": round(o["assigned_fraction"], 6),
        "timing_residual_rms_ps": round(o["timing_residual_rms_ps"], 3),
        # as tracked at the end of the pass, referred to the QKD start instant (0: never synced)
        "clock_offset_ps": round(o["clock_offset_ps"] or 0.0, 3),
        "clock_drift_ppb": round(o["clock_drift_ppb"] or 0.0, 4),
    }
    if truth is not None:
        sync["true_clock_offset_ps"] = float(truth.clock_offset_ps)
        sync["true_clock_drift_ppb"] = float(truth.clock_drift_ppb)
    return sync


# Wegman-Carter forgery bound per received byte: a message of b bytes (>= 15: the envelope
# header) is L <= b/7 + 1 words and costs 9 (L + 2) / 2^64 <= 9 b (1/7 + 1/5) / 2^64
# (satqkd_core.authentication); every verified or failed message counts.
_AUTH_EPS_PER_BYTE = 9.0 * (1.0 / 7.0 + 1.0 / 5.0) / 2.0**64


def _epsilon_budget(
    o: Mapping[str, Any], p: Mapping[str, Any] | None, bound: str = "lim2014"
) -> dict[str, Any]:
    """Every term the pass's key is eps-secure and eps-correct with, and their sum (`bound`:
    the finite-key bound the key length is from)."""
    eps_sec, eps_cor = float(o["eps_sec"]), float(o["eps_cor"])
    received = int(o["received_bytes"]) + (int(p["received_bytes"]) if p is not None else 0)
    rows = [
        ("parameter_estimation", 15.0 * eps_sec / 21.0,
         "decoy-state Hoeffding bounds and phase-error sampling: 15 of the 21 terms of "
         "eps_sec/21 (Lim et al. 2014)"),
        ("error_correction", 0.0,
         "a failed correction is caught by verification (counted there); what it disclosed "
         "is charged in bits (leak_ec_bits), not in epsilon"),
        ("verification", eps_cor, "hash collision of the error-verification tag (eps_cor)"),
        ("privacy_amplification", 6.0 * eps_sec / 21.0,
         "smoothing and leftover hashing: 6 of the 21 terms (the 6 log2(21/eps_sec) bits)"),
        ("authentication", received * _AUTH_EPS_PER_BYTE,
         f"Wegman-Carter forgery over the {received} QKD message bytes both ends checked "
         "(failed checks included)"),
    ]  # fmt: skip
    if bound == "tomamichel2012":  # BBM92: one eps_sec for sampling and hashing together
        rows = [
            ("parameter_estimation", 0.0,
             "Serfling sampling of the test basis (the mu term): within privacy_amplification's "
             "eps_sec (Tomamichel et al. 2012, Eq. (2), one eps_sec for both)"),
            *rows[1:3],
            ("privacy_amplification", eps_sec,
             "smoothing, sampling and leftover hashing together: eps_sec of Tomamichel et al. "
             "2012, Eq. (2)"),
            rows[4],
        ]  # fmt: skip
    terms = [{"term": t, "epsilon": e, "basis": b} for t, e, b in rows]
    return {"terms": terms, "total": sum(e for _, e, _ in rows)}


def _auth_pool(o: Mapping[str, Any], p: Mapping[str, Any] | None) -> dict[str, Any]:
    """The pass's pad-word economy: words its messages used (one per message each way), words
    its key refilled (64 bits each, both ways alike), messages left each way at each end."""
    used = int(o["uplink_messages"]) + (int(p["downlink_messages"]) if p is not None else 0)
    refilled = int(o["auth_refill_bits"]) // 64
    return {
        "pad_words_used": used,
        "pad_words_refilled": refilled,
        "pad_words_net": refilled - used,
        "messages_left_ogs": o.get("auth_messages_left"),
        "messages_left_payload": p.get("auth_messages_left") if p is not None else None,
    }


def _postprocessing(o: Mapping[str, Any], p: Mapping[str, Any] | None) -> dict[str, Any]:
    finite_key = None
    if o["finite_key_known"]:
        finite_key = {name: o[name] for name in ("s_x0", "s_x1", "s_z0", "s_z1", "v_z1", "phi_x")}
        finite_key["key_length_bits"] = o["finite_key_bits"]
        finite_key["bounds"] = o["finite_key_bounds"]
    return {
        "blocks": o["blocks"],
        "aborted_blocks": o["aborted_blocks"],
        "ec_method": o["ec_method"],
        "ec_efficiency": round(o["ec_efficiency"], 4),
        "ec_rounds": o["ec_rounds"],
        # LDPC frames and the failed ones, dropped at both ends (0 for Cascade: no frames)
        "ec_frames": o["ec_frames"],
        "ec_frames_failed": o["ec_frames_failed"],
        "leak_ec_bits": o["leak_ec_bits"],
        "verification_tag_bits": o["verification_tag_bits"],
        "pa_input_bits": o["pa_input_bits"],
        "pa_output_bits": o["pa_output_bits"],
        "auth_refill_bits": o["auth_refill_bits"],
        "auth_pool": _auth_pool(o, p),
        "finite_key": finite_key,
        "epsilon_budget": _epsilon_budget(o, p),
    }


def _key(
    o: Mapping[str, Any], p: Mapping[str, Any] | None, digests: Mapping[str, str | None]
) -> dict[str, Any]:
    key_bits = o["secret_key_bits"]
    reason = o["abort_reason"] or (p["abort_reason"] if p is not None else "") or None
    if key_bits == 0 and reason is None:
        reason = "no key produced"
    return {
        "secret_key_bits": key_bits,
        "sha256_payload": digests.get("payload"),
        "sha256_ogs": digests.get("ogs"),
        "key_id": o["key_id"] if key_bits else None,
        "abort_reason": None if key_bits > 0 else reason,
    }


def _station_daemon(o: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "acquisition_time_s": _round(o["atp_acquisition_time_s"], 3),
        "acquisitions": o["atp_acquisitions"],
        "track_losses": o["atp_track_losses"],
        "offloads": o["atp_offloads"],
        "faults": {name: o[column] for name, column in FAULT_FIELDS.items()},
        "detectors_refused": o["atp_detectors_refused"] or None,
    }


def _payload_tracking_measured(atp: dict[str, Any], p: Mapping[str, Any] | None) -> None:
    """Control: where the payload controller reported its own fine-tracking figures (its
    housekeeping, in PAYLOAD_PASS_SUMMARY), `payload_tracking` shows them, not the
    simulator's: the residual (and the rejection ratio it divides) and the locked fraction."""
    tracking = atp.get("payload_tracking")
    if tracking is None or p is None:
        return
    residual, locked = p.get("fine_residual_rms_urad"), p.get("fine_locked_fraction")
    if _finite(residual):
        tracking["tracking_residual_rms_urad"] = round(float(residual), 4)
        vibration = tracking.get("micro_vibration_rms_urad")
        if residual > 0 and _finite(vibration):
            tracking["rejection_ratio"] = round(min(float(vibration) / float(residual), 1e9), 2)
    if _finite(locked):
        tracking["locked_fraction"] = round(float(locked), 4)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _atp(o: Mapping[str, Any], truth: SimulationTruth | None) -> dict[str, Any]:
    spot_valid = round(o["atp_spot_valid_fraction"], 4)
    if truth is None:
        # a pass without a simulator: what the station measured (no pointing loss: the
        # station cannot tell it from the rest of the channel loss)
        atp: dict[str, Any] = {
            "acquisition_time_s": _round(o["atp_acquisition_time_s"], 3),
            "tracking_rms_urad": _round(o["atp_spot_rms_urad"], 4),
            "mean_pointing_loss_db": None,
            "model": "measured",
        }
        if o["atp_present"]:
            atp["station_tracking"] = {
                "spot_valid_fraction": spot_valid,
                "daemon": _station_daemon(o),
            }
        return atp
    t = truth.atp
    atp = {
        "acquisition_time_s": round(t.acquisition_time_s, 3),
        "tracking_rms_urad": round(t.tracking_rms_urad, 4),
        "mean_pointing_loss_db": round(t.mean_pointing_loss_db, 4),
    }
    if t.payload:
        atp["payload_tracking"] = dict(t.payload)
    if t.model != "instruments":
        return {**atp, "model": t.model}
    tracking: dict[str, Any] = {
        "instruments": dict(t.instruments),
        **t.instrument_commands,
        "spot_valid_fraction": spot_valid,
        **t.station,
    }
    if o["atp_present"]:
        tracking["daemon"] = _station_daemon(o)
    return {
        **atp,
        "transmitter_pointing_loss_db": _round(t.transmitter_pointing_loss_db, 4),
        "station_coupling_loss_db": _round(t.station_coupling_loss_db, 4),
        "model": t.model,
        "station_tracking": tracking,
    }


def _classical_channel(o: Mapping[str, Any], p: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "uplink_bytes": o["uplink_bytes"],
        "downlink_bytes": p["downlink_bytes"] if p is not None else None,
        "messages": o["uplink_messages"] + p["downlink_messages"] if p is not None else None,
        "rejected_messages": (
            o["rejected_messages"] + p["rejected_messages"] if p is not None else None
        ),
        "detection_report_bits_per_detection": round(
            _ratio(8 * o["detection_report_bytes"], o["detections"]), 3
        ),
    }


def _timing(o: Mapping[str, Any], truth: SimulationTruth | None) -> dict[str, Any]:
    if truth is not None:
        return {
            "wall_s": round(truth.wall_s, 3),
            "simulated_s": round(truth.simulated_s, 3),
            "key_ready_after_los_s": round(truth.key_ready_after_los_s, 3),
            "realtime_factor": round(_ratio(truth.simulated_s, truth.wall_s), 2),
        }
    # on the station's clock: when the key was stored (or the pass ended without one)
    ready = o["key_stored_unix_s"] if o["key_stored_unix_s"] is not None else o["ended_unix_s"]
    return {
        "wall_s": None,
        "simulated_s": None,
        "key_ready_after_los_s": _round(None if ready is None else ready - o["los_unix_s"], 3),
    }


def _protocol(records: list[Mapping[str, Any]], o: Mapping[str, Any]) -> dict[str, Any] | None:
    """Get: the `protocol` section of a BBM92 pass (its BBM92_PASS_SUMMARY), None for a
    decoy-BB84 pass (its figures are the other sections')."""
    found = find_record(records, BBM92_SUMMARY, o["plan_id"], o["station"])
    if found is None:
        return None
    f = found["fields"]
    return {
        "family": f["family"],
        "finite_key_bound": f["finite_key_bound"],
        "timing_blocks": f["timing_blocks"],
        "uplink_timing_bytes": f["uplink_timing_bytes"],
        "coincidences": f["coincidences"],
        "n_key_bits": f["n_key_bits"],
        "k_test_bits": f["k_test_bits"],
        "test_errors": f["test_errors"],
        "qber_test": _round(f["qber_test"], 6) if _finite(f["qber_test"]) else None,
        "qber_tolerance": f["qber_tolerance"],
        "correlation_significance": (
            _round(f["correlation_significance"], 2)
            if _finite(f["correlation_significance"])
            else None
        ),
        "mu": _round(f["mu"], 6) if _finite(f["mu"]) else None,
        "key_length_bits": f["key_length_bits"],
    }


def write_report(report: Mapping[str, Any], out_dir: Path) -> Path:
    """Write report.json into out_dir; every number is a plain JSON number."""
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def build_report(
    recorded: Iterable[Mapping[str, Any]],
    *,
    plan_id: int | None = None,
    truth: SimulationTruth | None = None,
    key_digests: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Get: report.json of one plan (the last one the station summarised if plan_id is None)
    from a recorded stream; ValueError if the stream has no station summary of it.

    Without the payload's summary the payload's figures are null. `key_digests` ("payload",
    "ogs": SHA-256 hex of the stored keys) come from the key stores, never from telemetry;
    `truth` adds a simulated pass's own figures."""
    recorded = list(recorded)  # read twice: the summaries, then a protocol's own summary
    ogs, payload = pass_summaries(recorded, plan_id)
    if ogs is None:
        which = "" if plan_id is None else f" of plan {plan_id}"
        raise ValueError(f"recorded: no {OGS_SUMMARY}{which} in the stream")
    o, p = ogs["fields"], payload["fields"] if payload is not None else None
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "mission": str(ogs["topic"]).split("/")[1],
        "station": o["station"],
    }
    if truth is not None:
        report["scenario"] = truth.scenario
    report["seed"] = truth.seed if truth is not None else None
    report["plan_id"] = o["plan_id"]
    report["pass"] = _pass(o)
    report["quantum"] = _quantum(o, p, truth)
    report["sync"] = _sync(o, truth)
    report["postprocessing"] = _postprocessing(o, p)
    report["key"] = _key(o, p, key_digests or {})
    report["atp"] = _atp(o, truth)
    _payload_tracking_measured(report["atp"], p)
    report["classical_channel"] = _classical_channel(o, p)
    if truth is not None and truth.classical_link:
        report["classical_channel"]["link"] = dict(truth.classical_link)
    report["timing"] = _timing(o, truth)
    if (protocol := _protocol(recorded, o)) is not None:
        report["protocol"] = protocol
        bound = protocol["finite_key_bound"]
        report["postprocessing"]["epsilon_budget"] = _epsilon_budget(o, p, bound)
    if truth is not None:
        report["simulation"] = {"benches": truth.benches, "instruments": truth.instruments}
    return report
