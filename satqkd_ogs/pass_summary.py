"""The station's OGS_PASS_SUMMARY: every figure of the pass report the station measures.

Counts, rates and instants only: no key bits and no digest of a key ever go on the bus (a
SHA-256 of the key would tell 256 bits of it to anyone listening). Byte and message counts are
those since the plan was loaded (`ChannelCounts` taken then), not the daemon's lifetime.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from satqkd_core.ephemeris import Station, StationTrack, topocentric
from satqkd_core.finite_key import binary_entropy
from satqkd_runtime.qkd_channel import ChannelCounts

if TYPE_CHECKING:
    from satqkd_ogs.atp_record import AtpRecord
    from satqkd_ogs.session import OgsSession

NAN = float("nan")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_PEAK_TOLERANCE_S = 0.01
_FINITE_KEY_FIELDS = ("s_x0", "s_x1", "s_z0", "s_z1", "v_z1", "phi_x")


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _or_nan(value: float | None) -> float:
    return NAN if value is None else float(value)


def max_elevation_deg(session: OgsSession, location: Station | StationTrack) -> float:
    """Get: the pass's highest elevation, refined from the session's 1 s ephemeris grid by a
    golden-section search to 0.01 s (the accuracy the pass search gives)."""
    plan = session.plan
    grid, elevation = session.grid_unix_s, session.elevation_deg
    inside = (grid >= plan.aos_unix_s) & (grid <= plan.los_unix_s)
    if not inside.any():
        return float(np.max(elevation))
    k = int(np.flatnonzero(inside)[np.argmax(elevation[inside])])
    a = max(plan.aos_unix_s, float(grid[max(k - 1, 0)]))
    b = min(plan.los_unix_s, float(grid[min(k + 1, grid.size - 1)]))

    def at(t: float) -> float:
        geometry = topocentric(plan.tle_line1, plan.tle_line2, location, np.array([t]))
        return float(geometry.elevation_deg[0])

    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = at(c), at(d)
    while b - a > _PEAK_TOLERANCE_S:
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = at(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = at(d)
    return max(at(0.5 * (a + b)), float(elevation[k]))


def min_range_m(session: OgsSession, location: Station | StationTrack) -> float:
    """Get: the shortest range at the centre of a processed frame (NaN without frames)."""
    chunks = session.result.chunks
    if not chunks:
        return NAN
    mid = np.array([0.5 * (c.start_unix_s + c.stop_unix_s) for c in chunks])
    plan = session.plan
    return float(np.min(topocentric(plan.tle_line1, plan.tle_line2, location, mid).range_m))


def _error_rates(session: OgsSession) -> dict[str, Any]:
    """QBER figures and error-correction efficiency as the report gives them: X errors are
    known only in the bits error correction kept (LDPC drops failed frames)."""
    result = session.result
    ec_ran = result.ec_rounds > 0
    x_err, z_err = sum(result.x_errors), sum(result.z_errors)
    n_z = sum(result.z_detections)
    n_x_known = result.ec_kept_bits if ec_ran else 0
    qber_x = _ratio(x_err, n_x_known) if ec_ran else 0.0
    qber_z = _ratio(z_err, n_z)
    # f = leak / (n h(Q)) over the bits error correction covered, at the error rate it found
    h = binary_entropy(qber_x) if ec_ran else 0.0
    return {
        "x_errors_known": ec_ran,
        "qber": _ratio(x_err + z_err, n_x_known + n_z) if ec_ran else qber_z,
        "qber_x": qber_x,
        "qber_z": qber_z,
        "ec_efficiency": _ratio(result.leak_ec_bits, result.ec_input_bits * h) if h > 0 else 0.0,
    }


def _finite_key(session: OgsSession) -> dict[str, Any]:
    bound = session.result.finite_key
    fields: dict[str, Any] = {"finite_key_known": bound is not None}
    for name in _FINITE_KEY_FIELDS:
        fields[name] = float(bound[name]) if bound is not None else NAN
    fields["finite_key_bits"] = int(bound["key_length_bits"]) if bound is not None else 0
    fields["finite_key_bounds"] = str(bound["bounds"]) if bound is not None else ""
    return fields


def _atp(record: AtpRecord | None) -> dict[str, Any]:
    summary = record.summary() if record is not None else {}
    faults = summary.get("faults", {})
    return {
        "atp_present": record is not None,
        "atp_acquisition_time_s": _or_nan(summary.get("acquisition_time_s")),
        "atp_acquisitions": int(summary.get("acquisitions", 0)),
        "atp_track_losses": int(summary.get("track_losses", 0)),
        "atp_offloads": int(summary.get("offloads", 0)),
        "atp_spot_valid_fraction": float(summary.get("spot_valid_fraction") or 0.0),
        "atp_spot_rms_urad": _or_nan(summary.get("spot_rms_urad")),
        "atp_gimbal_faults": int(faults.get("gimbal", 0)),
        "atp_fsm_faults": int(faults.get("fsm", 0)),
        "atp_beacon_faults": int(faults.get("beacon", 0)),
        "atp_detector_faults": int(faults.get("detectors", 0)),
        "atp_detectors_refused": summary.get("detectors_refused") or "",
    }


def qkd_progress(session: OgsSession) -> dict[str, Any]:
    """Get: the QKD_PROGRESS fields after the session's latest frame: that frame's instants,
    clock offset and timing residual; counts so far, by intensity those of the frames the
    payload has answered (its sifting answer follows the frame's detection report)."""
    result = session.result
    chunk = result.chunks[-1]
    answered = [c for c in result.chunks if c.x_by_intensity is not None]
    by_intensity = [0, 0, 0]
    for c in answered:
        for k in range(3):
            by_intensity[k] += c.x_by_intensity[k] + c.z_by_intensity[k]  # type: ignore[index]
    z_errors = sum(c.z_errors for c in result.chunks)
    z_sifted = sum(c.z_sifted for c in result.chunks)
    return {
        "plan_id": session.plan.plan_id,
        "chunk": chunk.chunk,
        "detections": result.detections,
        "sifted_bits": sum(c.sifted for c in result.chunks),
        "qber_z": z_errors / z_sifted if z_sifted else 0.0,
        "elevation_deg": chunk.elevation_deg,
        "frame_start_unix_s": chunk.start_unix_s,
        "frame_stop_unix_s": chunk.stop_unix_s,
        "sifted_by_intensity": by_intensity,
        "sifted_span_s": sum(c.stop_unix_s - c.start_unix_s for c in answered),
        "clock_offset_ps": chunk.clock_offset_ps,
        "clock_drift_ppb": _or_nan(result.clock_drift_ppb),
        "timing_residual_rms_ps": chunk.residual_rms_ps,
    }


def _frames(session: OgsSession) -> dict[str, Any]:
    """Get: the summary's per-frame arrays (index = chunk; three values a frame by intensity,
    NaN where the payload never answered the frame)."""
    chunks = session.result.chunks
    unknown = (NAN, NAN, NAN)
    return {
        "frame_clock_offset_ps": np.array([c.clock_offset_ps for c in chunks], np.float64),
        "frame_timing_residual_rms_ps": np.array([c.residual_rms_ps for c in chunks], np.float64),
        **{
            field: np.array(
                [v for c in chunks for v in (getattr(c, f"{kind}_by_intensity") or unknown)],
                np.float64,
            )
            for field, kind in (
                ("frame_x_sifted", "x"),
                ("frame_z_sifted", "z"),
                ("frame_z_errors", "z_errors"),
            )
        },
    }


def ogs_pass_summary(
    session: OgsSession,
    location: Station | StationTrack,
    atp_record: AtpRecord | None,
    channel_at_load: ChannelCounts,
    now_unix_s: float,
) -> dict[str, Any]:
    """Get: the OGS_PASS_SUMMARY fields of a session whose post-processing ended;
    `channel_at_load` is the channel's counters when its plan was loaded."""
    plan, result = session.plan, session.result
    key_bits = result.key_bits if result.key_id and not result.abort_reason else 0
    stored_unix_s = NAN if result.key_stored_unix_s is None else result.key_stored_unix_s
    channel = channel_at_load.since(session.channel)
    return {
        "plan_id": plan.plan_id,
        "station": plan.station,
        "aos_unix_s": plan.aos_unix_s,
        "los_unix_s": plan.los_unix_s,
        "qkd_start_unix_s": plan.qkd_start_unix_s,
        "qkd_stop_unix_s": plan.qkd_stop_unix_s,
        "max_elevation_deg": max_elevation_deg(session, location),
        "min_range_m": min_range_m(session, location),
        "intensities": [float(mu) for mu in session.params.intensities],
        "tags": result.tags,
        "detections": result.detections,
        "sifted_bits": sum(result.x_detections) + sum(result.z_detections),
        "x_detections": list(result.x_detections),
        "z_detections": list(result.z_detections),
        "x_errors": list(result.x_errors),
        "z_errors": list(result.z_errors),
        **_error_rates(session),
        "assigned_fraction": result.assigned_fraction,
        "timing_residual_rms_ps": result.residual_rms_ps,
        "clock_offset_ps": _or_nan(result.clock_offset_at_qkd_start_ps),
        "clock_drift_ppb": _or_nan(result.clock_drift_ppb),
        "blocks": 1,
        "aborted_blocks": 0 if key_bits else 1,
        "ec_method": result.ec_method,
        "ec_rounds": result.ec_rounds,
        "ec_frames": result.ec_frames,
        "ec_frames_failed": result.ec_frames_failed,
        "leak_ec_bits": result.leak_ec_bits,
        "verification_tag_bits": result.verification_tag_bits,
        "pa_input_bits": result.pa_input_bits,
        "pa_output_bits": result.pa_output_bits,
        "auth_refill_bits": result.auth_refill_bits,
        "eps_sec": session.params.eps_sec,
        "eps_cor": session.params.eps_cor,
        **_finite_key(session),
        "secret_key_bits": key_bits,
        "key_id": result.key_id or "",
        "abort_reason": (result.abort_reason or "")[:500],
        "key_stored_unix_s": stored_unix_s,
        "ended_unix_s": now_unix_s,
        "uplink_bytes": channel.sent_bytes,
        "uplink_messages": channel.sent_messages,
        "received_bytes": channel.received_bytes,
        "rejected_messages": channel.rejected,
        "auth_messages_left": session.channel.pool_messages_left,
        "detection_report_bytes": result.report_bytes,
        **_atp(atp_record),
        **_frames(session),
    }
