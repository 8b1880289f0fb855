"""What the pass monitor shows, folded from the telemetry and event stream.

`PassView.add(record)` takes the decoded records of `satqkd.pass_recorder.record_of` (live
from the bus or replayed from an archive) and `snapshot()` gives the page's JSON. Where each
figure comes from:

| on the page | telemetry |
|---|---|
| sky track, satellite and mount | ATP_STATUS `predicted_az_deg/el_deg`, `gimbal_az_deg/el_deg` |
| the station's mask | the station file given to the monitor (`min_elevation_deg`) |
| ATP mode and beacon spot | ATP_STATUS `mode`, `spot_x_urad`, `spot_y_urad`, `spot_valid` |
| detections, sifted bits, Z-basis QBER per frame | QKD_PROGRESS |
| sifted counts and rates by intensity, live | QKD_PROGRESS `sifted_by_intensity` |
| clock offset, drift, timing residual per frame, live | QKD_PROGRESS |
| counts by intensity, X-basis QBER, at the end | OGS_PASS_SUMMARY, PAYLOAD_PASS_SUMMARY |
| clock offset at QKD start, drift, timing residual of the pass | OGS_PASS_SUMMARY |
| key inventory and mode per node | HOUSEKEEPING `key_bits_stored`, `mode` |
| events | EVENT |

Telemetry carries counts and rates only, never key material, so neither does the page.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

INTENSITY_LABELS = ("signal", "decoy", "vacuum")
MAX_TRACK_POINTS = 2000
MAX_SPOTS = 120
MAX_FRAMES = 3600
MAX_EVENTS = 50
_TRACK_STEP_DEG = 0.2  # a new track point once the satellite moved this far


def _number(value: Any) -> float | None:
    """A finite float, or None (NaN and missing figures are shown as gaps, never as 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _azimuth(value: Any) -> float | None:
    az = _number(value)
    return None if az is None else az % 360.0


class PassView:
    """The monitor's picture of the mission: one pass (the latest plan) and every node."""

    def __init__(
        self,
        source: str,
        station: str | None = None,
        min_elevation_deg: float | None = None,
    ) -> None:
        self.source = source
        self.station = station
        self.min_elevation_deg = min_elevation_deg
        self.messages = 0
        self.version = 0
        self.nodes: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._reset_pass(None)

    def _reset_pass(self, plan_id: int | None) -> None:
        self.plan_id = plan_id
        self.track: deque[list[float]] = deque(maxlen=MAX_TRACK_POINTS)
        self.satellite: dict[str, float | None] | None = None
        self.mount: dict[str, float | None] | None = None
        self.atp: dict[str, Any] | None = None
        self.spots: deque[list[float]] = deque(maxlen=MAX_SPOTS)
        self.progress: dict[str, Any] | None = None
        self.frames: deque[dict[str, Any]] = deque(maxlen=MAX_FRAMES)
        self.ogs_summary: dict[str, Any] | None = None
        self.payload_summary: dict[str, Any] | None = None

    def _plan(self, fields: Mapping[str, Any]) -> None:
        plan_id = fields.get("plan_id")
        if isinstance(plan_id, int) and plan_id != self.plan_id:
            self._reset_pass(plan_id)

    def add(self, record: Mapping[str, Any]) -> None:
        """Control: fold one decoded telemetry or event record into the view."""
        name = record.get("name")
        fields = record.get("fields")
        if not isinstance(fields, Mapping):
            return
        self.messages += 1
        self.version += 1
        node = str(record.get("node", ""))
        handler = _HANDLERS.get(str(name))
        if handler is not None:
            handler(self, node, fields, record)

    def _housekeeping(self, node: str, f: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        self.nodes[node] = {
            "mode": f.get("mode"),
            "uptime_s": _number(f.get("uptime_s")),
            "clock_unix_s": _number(f.get("clock_unix_s")),
            "key_bits_stored": f.get("key_bits_stored"),
            "auth_words_remaining": f.get("auth_words_remaining"),
            "tc_accepted": f.get("tc_accepted"),
            "tc_rejected": f.get("tc_rejected"),
            "tc_auth_failures": f.get("tc_auth_failures"),
        }

    def _atp_status(self, node: str, f: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        self._plan(f)
        az, el = _azimuth(f.get("predicted_az_deg")), _number(f.get("predicted_el_deg"))
        if az is not None and el is not None:
            self.satellite = {"az_deg": az, "el_deg": el}
            last = self.track[-1] if self.track else None
            if last is None or _separation_deg(last, (az, el)) >= _TRACK_STEP_DEG:
                self.track.append([round(az, 3), round(el, 3)])
        self.mount = {
            "az_deg": _azimuth(f.get("gimbal_az_deg")),
            "el_deg": _number(f.get("gimbal_el_deg")),
        }
        spot_x, spot_y = _number(f.get("spot_x_urad")), _number(f.get("spot_y_urad"))
        valid = bool(f.get("spot_valid"))
        self.atp = {
            "node": node,
            "mode": f.get("mode"),
            "spot_x_urad": spot_x,
            "spot_y_urad": spot_y,
            "spot_valid": valid,
            "power_nw": _number(f.get("power_nw")),
            "fsm_tip_urad": _number(f.get("fsm_tip_urad")),
            "fsm_tilt_urad": _number(f.get("fsm_tilt_urad")),
            "max_detector_temperature_c": _number(f.get("max_detector_temperature_c")),
            "faults": {k: f.get(f"{k}_faults") for k in ("gimbal", "fsm", "beacon", "detector")},
        }
        if valid and spot_x is not None and spot_y is not None:
            self.spots.append([round(spot_x, 3), round(spot_y, 3)])

    def _qkd_progress(self, node: str, f: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        self._plan(f)
        previous = self.progress["detections"] if self.progress else 0
        detections = int(f.get("detections", 0))
        by_intensity = f.get("sifted_by_intensity")
        self.progress = {
            "node": node,
            "chunk": f.get("chunk"),
            "detections": detections,
            "sifted_bits": f.get("sifted_bits"),
            "qber_z": _number(f.get("qber_z")) if f.get("sifted_bits") else None,
            "elevation_deg": _number(f.get("elevation_deg")),
            "frame_start_unix_s": _number(f.get("frame_start_unix_s")),
            "frame_stop_unix_s": _number(f.get("frame_stop_unix_s")),
            "sifted_by_intensity": (
                [int(v) for v in by_intensity] if isinstance(by_intensity, list) else None
            ),
            "sifted_span_s": _number(f.get("sifted_span_s")),
            "clock_offset_ps": _number(f.get("clock_offset_ps")),
            "clock_drift_ppb": _number(f.get("clock_drift_ppb")),
            "timing_residual_rms_ps": _number(f.get("timing_residual_rms_ps")),
        }
        self.frames.append(
            {
                "chunk": f.get("chunk"),
                "detections": max(detections - previous, 0),
                "qber_z": self.progress["qber_z"],
                "elevation_deg": self.progress["elevation_deg"],
                "clock_offset_ps": self.progress["clock_offset_ps"],
                "timing_residual_rms_ps": self.progress["timing_residual_rms_ps"],
            }
        )

    def _ogs_summary(self, node: str, f: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        self._plan(f)
        self.ogs_summary = dict(f)

    def _payload_summary(self, node: str, f: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        if self.plan_id is None or f.get("plan_id") == self.plan_id:
            self._plan(f)
            self.payload_summary = dict(f)

    def _event(self, node: str, f: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        self.events.appendleft(
            {
                "received_unix_s": _number(record.get("received_unix_s")),
                "node": node,
                "severity": f.get("severity"),
                "event": record.get("event") or f"event {f.get('event_id')}",
                "text": f.get("text"),
            }
        )

    def by_intensity(self) -> list[dict[str, Any]]:
        """Get: per intensity, pulses sent, sifted detections (both bases) and their rate over
        the QKD window, errors, from the pass summaries; before the station summarised, the
        sifted detections so far and their rate over the frames sifted (mean photon number,
        pulses sent and errors unknown); empty before the first sifted frame."""
        ogs, payload = self.ogs_summary, self.payload_summary
        if ogs is None:
            return self._live_by_intensity()
        start, stop = _number(ogs.get("qkd_start_unix_s")), _number(ogs.get("qkd_stop_unix_s"))
        window_s = stop - start if start is not None and stop is not None else None
        sent = payload.get("sent_by_intensity") if payload else None
        rows = []
        for i, label in enumerate(INTENSITY_LABELS):
            detections = int(ogs["x_detections"][i]) + int(ogs["z_detections"][i])
            errors = int(ogs["z_errors"][i]) + (
                int(ogs["x_errors"][i]) if ogs.get("x_errors_known") else 0
            )
            rows.append(
                {
                    "label": label,
                    "mu": _number(ogs["intensities"][i]),
                    "sent": int(sent[i]) if sent else None,
                    "detections": detections,
                    "errors": errors,
                    "rate_hz": detections / window_s if window_s and window_s > 0 else None,
                }
            )
        return rows

    def _live_by_intensity(self) -> list[dict[str, Any]]:
        progress = self.progress or {}
        counts, span_s = progress.get("sifted_by_intensity"), progress.get("sifted_span_s")
        if not counts or not span_s:
            return []
        return [
            {
                "label": label,
                "mu": None,
                "sent": None,
                "detections": counts[i],
                "errors": None,
                "rate_hz": counts[i] / span_s,
            }
            for i, label in enumerate(INTENSITY_LABELS)
        ]

    def _clock(self) -> dict[str, Any]:
        """The pass summary's clock figures once it arrived, else those of the latest frame."""
        ogs = self.ogs_summary
        if ogs is not None:
            return {
                "at": "QKD start",
                "offset_ps": _number(ogs.get("clock_offset_ps")),
                "drift_ppb": _number(ogs.get("clock_drift_ppb")),
                "residual_rms_ps": _number(ogs.get("timing_residual_rms_ps")),
                "assigned_fraction": _number(ogs.get("assigned_fraction")),
            }
        progress = self.progress or {}
        return {
            "at": f"frame {progress['chunk']}" if progress else None,
            "offset_ps": progress.get("clock_offset_ps"),
            "drift_ppb": progress.get("clock_drift_ppb"),
            "residual_rms_ps": progress.get("timing_residual_rms_ps"),
            "assigned_fraction": None,
        }

    def snapshot(self) -> dict[str, Any]:
        """Get: everything the page shows, as plain JSON (None where a figure is unknown)."""
        ogs = self.ogs_summary or {}
        qber_x = _number(ogs.get("qber_x")) if ogs.get("x_errors_known") else None
        qber_z_final = _number(ogs.get("qber_z")) if ogs else None
        live_z = self.progress["qber_z"] if self.progress else None
        return {
            "source": self.source,
            "messages": self.messages,
            "version": self.version,
            "station": {"name": self.station, "min_elevation_deg": self.min_elevation_deg},
            "plan_id": self.plan_id,
            "track": list(self.track),
            "satellite": self.satellite,
            "mount": self.mount,
            "atp": self.atp,
            "spots": list(self.spots),
            "progress": self.progress,
            "frames": list(self.frames),
            "qber": {"x": qber_x, "z": qber_z_final if qber_z_final is not None else live_z},
            "by_intensity": self.by_intensity(),
            "by_intensity_final": self.ogs_summary is not None,
            "clock": self._clock(),
            "key": {
                "secret_key_bits": ogs.get("secret_key_bits"),
                "abort_reason": ogs.get("abort_reason") or None,
                "payload_confirmed": (self.payload_summary or {}).get("key_confirmed"),
            }
            if ogs
            else None,
            "nodes": dict(sorted(self.nodes.items())),
            "events": list(self.events),
        }


def _separation_deg(a: list[float] | tuple[float, float], b: tuple[float, float]) -> float:
    daz = (b[0] - a[0] + 180.0) % 360.0 - 180.0
    return math.hypot(daz * math.cos(math.radians(b[1])), b[1] - a[1])


_HANDLERS = {
    "HOUSEKEEPING": PassView._housekeeping,
    "ATP_STATUS": PassView._atp_status,
    "QKD_PROGRESS": PassView._qkd_progress,
    "OGS_PASS_SUMMARY": PassView._ogs_summary,
    "PAYLOAD_PASS_SUMMARY": PassView._payload_summary,
    "EVENT": PassView._event,
}
