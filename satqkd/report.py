"""Writing a pass's report (`report.json`, schema satqkd.pass-report/1) and its recorded
telemetry (`telemetry.jsonl`), and saying in plain words why a pass gave no key. The report
itself is made by `satqkd.report_builder` from what the daemons published (docs/report.md);
archives: `satqkd.archives`; plots: `satqkd.plots`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from satqkd.report_builder import SCHEMA, save_recorded, write_report
from satqkd.simulation import PassRun

__all__ = ["SCHEMA", "build_report", "explain_no_key", "write_report", "write_telemetry"]


def build_report(run: PassRun) -> dict[str, Any]:
    """Get: the report of a simulated pass, as `run_pass` built it from the recorded
    telemetry, the key stores' digests and the simulator's truth (no key material)."""
    return run.report


def write_telemetry(run: PassRun, out_dir: Path) -> Path:
    """Write the telemetry and events recorded during the pass as JSON lines."""
    return save_recorded(run.recorded, out_dir / "telemetry.jsonl")


def _qkd_seconds(report: dict[str, Any]) -> float | None:
    from datetime import datetime

    p = report["pass"]
    start, stop = p.get("qkd_start_utc"), p.get("qkd_stop_utc")
    if not start or not stop:
        return None
    parse = datetime.fromisoformat
    return (
        parse(stop.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))
    ).total_seconds()


def explain_no_key(
    report: dict[str, Any], culmination_after_aos_s: float | None = None
) -> str | None:
    """Get: why a pass gave no key and the next thing to try, in plain words, from its report
    (None if it gave a key). The report's own `key.abort_reason` keeps the protocol's terms."""
    key = report["key"]
    if key["secret_key_bits"]:
        return None
    reason = str(key.get("abort_reason") or "no key produced")
    q = report["quantum"]
    qkd_s = _qkd_seconds(report)
    window = f"{qkd_s:.0f} s of QKD" if qkd_s is not None else "the QKD window"
    near_top = (
        f" (culmination is {culmination_after_aos_s:.0f} s after AOS: "
        f"--start-after-aos-s {max(0.0, culmination_after_aos_s - 30):.0f})"
        if culmination_after_aos_s is not None
        else ""
    )
    if reason.startswith("finite-key bound leaves no key"):
        return (
            f"too few detections for a key: {q['sifted_bits']} sifted bits in {window} are not "
            "enough for the finite-size security bound to leave any secret bits. Next: a longer "
            "QKD window (raise or drop --max-duration-s), or start nearer culmination where the "
            f"count rate is highest{near_top}, or a higher pass or clearer weather."
        )
    match = re.match(r"qber ([0-9.]+) above ([0-9.]+) threshold", reason)
    if match:
        return (
            f"too many errors: {100 * float(match[1]):.1f} % of the test bits were wrong, above "
            f"the {100 * float(match[2]):.0f} % the protocol tolerates. An eavesdropper (see the "
            "scenario's attacks), background light or polarisation misalignment raise it. Next: "
            "check qber.png and `satqkd sim link SCENARIO` (expected QBER), the scenario's "
            "attacks and the station's polarisation compensation."
        )
    if reason.startswith("no sifted detections"):
        return (
            f"no photons were counted in both bases ({q['detections']} detections). Next: check "
            "the pointing (atp.png) and count rate (count_rate.png), and that the pass rises "
            "above the QKD elevation mask (`satqkd sim link SCENARIO`)."
        )
    if reason.startswith(("verification failed", "error correction kept no key bits")):
        return (
            f"error correction could not make both ends' keys equal ({reason}). Next: a lower "
            "QBER (qber.png) or the other reconciliation (protocol.reconciliation: ldpc | cascade)."
        )
    if "aborted by command" in reason:
        return f"the pass was stopped by a telecommand ({reason})."
    return f"{reason}. Next: run with -v for the daemons' log, and see telemetry.jsonl."
