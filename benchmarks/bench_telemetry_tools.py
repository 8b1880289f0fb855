"""How fast the telemetry tools take a daemon's stream (issue 12): decoding a received envelope
into a record (`tm watch`, `tm record`, the monitor), appending it to an archive, folding it
into the monitor's view, and serialising the view the page is pushed. A pass publishes a few
messages a second per station (ATP_STATUS at ~1 Hz, one QKD_PROGRESS per tagger buffer,
housekeeping): each figure is compared with that.

The stream is synthetic but has a pass's shape: a 600 s pass of ATP_STATUS at 1 Hz with the
satellite crossing the sky, 600 QKD_PROGRESS frames and housekeeping every 10 s from both
nodes, encoded by the codec as the daemons publish them."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from satqkd.monitor.state import PassView
from satqkd.telemetry_archive import ArchiveWriter, record_from_bus
from satqkd_core import dictionary as dct
from satqkd_core.codec import encode_envelope

_PASS_S = 600


def _stream() -> list[tuple[str, bytes]]:
    """(topic, envelope) of one synthetic pass, in publication order."""
    atp_spec, progress_spec = dct.DICTIONARY["ATP_STATUS"], dct.DICTIONARY["QKD_PROGRESS"]
    hk_spec = dct.DICTIONARY["HOUSEKEEPING"]
    out: list[tuple[str, bytes]] = []
    for second in range(_PASS_S):
        phase = second / _PASS_S
        el = 10.0 + 60.0 * math.sin(math.pi * phase)
        az = (180.0 + 180.0 * phase) % 360.0
        atp = {f.name: 0 for f in atp_spec.fields if f.type in ("u32", "u64")}
        atp.update({f.name: 0.0 for f in atp_spec.fields if f.type == "f64"})
        atp.update(plan_id=1, mode="tracking", predicted_az_deg=az, predicted_el_deg=el,
                   gimbal_az_deg=az, gimbal_el_deg=el, spot_x_urad=1.5, spot_y_urad=-0.7,
                   spot_valid=True)  # fmt: skip
        out.append(("satqkd/m/ogs-s/tm/atp_status", encode_envelope(atp_spec, second, atp)))
        progress = {"plan_id": 1, "chunk": second, "detections": 50_000 * (second + 1),
                    "sifted_bits": 25_000 * second, "qber_z": 0.011, "elevation_deg": el,
                    "frame_start_unix_s": 1.8e9 + second, "frame_stop_unix_s": 1.8e9 + second + 1,
                    "sifted_by_intensity": [20_000 * second, 4_000 * second, 1_000 * second],
                    "sifted_span_s": float(second), "clock_offset_ps": 1234.5 + 0.01 * second,
                    "clock_drift_ppb": 0.01, "timing_residual_rms_ps": 45.0}  # fmt: skip
        out.append(
            ("satqkd/m/ogs-s/tm/qkd_progress", encode_envelope(progress_spec, second, progress))
        )
        if second % 10 == 0:
            for node in ("payload", "ogs-s"):
                hk = {f.name: 0 for f in hk_spec.fields if f.type in ("u32", "u64")}
                hk.update(node=node, mode="qkd", uptime_s=float(second),
                          clock_unix_s=1.8e9 + second)  # fmt: skip
                topic = f"satqkd/m/{node}/tm/housekeeping"
                out.append((topic, encode_envelope(hk_spec, second, hk)))
    return out


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def figures(quick: bool) -> list[dict]:
    """Get: records per second decoded, archived and folded; ms per pushed snapshot."""
    stream = _stream()
    repeats = 1 if quick else 5
    params = {"messages": len(stream), "pass_s": _PASS_S, "repeats": repeats}

    started = time.perf_counter()
    for _ in range(repeats):
        records = [record_from_bus(topic, payload, 0.0) for topic, payload in stream]
    decode_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        with ArchiveWriter(Path(scratch) / "archive.jsonl") as writer:
            for _ in range(repeats):
                for record in records:
                    writer.write(record)
        archive_s = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(repeats):
        view = PassView("bench", "s", 10.0)
        for record in records:
            view.add(record)
    fold_s = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(repeats * 10):
        text = json.dumps(view.snapshot(), allow_nan=False)
    snapshot_s = (time.perf_counter() - started) / (repeats * 10)

    count = len(records) * repeats
    return [
        {"name": "tm_decode_records_per_s", "value": _rate(count, decode_s), "unit": "1/s",
         "params": params},
        {"name": "tm_archive_records_per_s", "value": _rate(count, archive_s), "unit": "1/s",
         "params": {**params, "note": "one flushed JSON line each"}},
        {"name": "monitor_fold_records_per_s", "value": _rate(count, fold_s), "unit": "1/s",
         "params": params},
        {"name": "monitor_snapshot_ms", "value": 1e3 * snapshot_s, "unit": "ms",
         "params": {**params, "snapshot_bytes": len(text),
                    "track_points": len(view.snapshot()["track"])}},
    ]  # fmt: skip
