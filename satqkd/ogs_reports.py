"""Pass reports beside a running ground station (`satqkd ogs run --reports DIR`).

A recorder on its own bus connection listens to the mission's telemetry and events, as a
control centre would, and each time the station's OGS_PASS_SUMMARY of a plan arrives it writes
`DIR/<plan_id>/report.json`, `DIR/<plan_id>/telemetry.jsonl` and `DIR/<plan_id>/frames.parquet`
(the station's per-frame records, from its telemetry alone). The payload's summary may
come later, or never: the report first says what the station knows (the payload's figures
null), and is written again when the payload's summary arrives. The station's key digest is
read from its own key store; the payload's is not at hand here (null).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from satqkd.archives import FRAMES_FILE, frames_from_telemetry
from satqkd.report_builder import (
    OGS_SUMMARY,
    PAYLOAD_SUMMARY,
    PassRecorder,
    Record,
    build_report,
    key_digests,
    save_recorded,
    write_report,
)
from satqkd_core import dictionary as dct
from satqkd_runtime.bus import BusTls, MessageBus
from satqkd_runtime.clock import Clock
from satqkd_runtime.keystore import KeyStore

log = logging.getLogger("satqkd.reports")

# the newest messages a station's recorder keeps: hours of passes (ATP status at ~1 Hz and one
# progress packet a frame while a pass runs, housekeeping between)
MAX_RECORDS = 200_000


def default_reports_dir(station: str) -> Path:
    """Get: where a station writes its reports unless told: ./runs/ogs-<station>/."""
    return Path("runs") / dct.ogs_node(station)


def plan_records(records: Sequence[Mapping[str, Any]], plan_id: int) -> list[Record]:
    """Get: a plan's share of a recorded stream: its own messages (those naming its plan id),
    and the others (events, housekeeping, acknowledgements) that came between its first and
    its last."""
    own = [i for i, r in enumerate(records) if r["fields"].get("plan_id") == plan_id]
    if not own:
        return []
    return [
        dict(r)
        for r in records[own[0] : own[-1] + 1]
        if r["fields"].get("plan_id") in (None, plan_id)
    ]


class StationReports:
    """Writes the reports of one station's passes as their summaries arrive."""

    def __init__(
        self, directory: Path, mission: str, station: str, keystore: KeyStore | None
    ) -> None:
        self.directory = Path(directory)
        self.mission = mission
        self.station = station
        self.node = dct.ogs_node(station)
        self.keystore = keystore
        self.recorder: PassRecorder | None = None
        self.summarised: set[int] = set()
        self.written: list[Path] = []

    def on_record(self, record: Record) -> None:
        """Control: write (again) the report of a plan whose summary this record is."""
        fields = record["fields"]
        if record["name"] == OGS_SUMMARY and record["node"] == self.node:
            self.summarised.add(int(fields["plan_id"]))
            self.write(int(fields["plan_id"]))
        elif (
            record["name"] == PAYLOAD_SUMMARY
            and fields.get("station") == self.station
            and fields.get("plan_id") in self.summarised
        ):
            self.write(int(fields["plan_id"]))

    def write(self, plan_id: int) -> Path | None:
        """Control: write DIR/<plan_id>/report.json, telemetry.jsonl and frames.parquet from
        what has been recorded; the report's path, None if it could not be written (logged)."""
        if self.recorder is None:
            return None
        records = plan_records(self.recorder.records, plan_id)
        try:
            digests = key_digests(records, plan_id=plan_id, ogs_keys=self.keystore)
            report = build_report(records, plan_id=plan_id, key_digests=digests)
            out_dir = self.directory / str(plan_id)
            out_dir.mkdir(parents=True, exist_ok=True)
            save_recorded(records, out_dir / "telemetry.jsonl")
            frames = frames_from_telemetry(records, plan_id, self.station)
            frames.to_parquet(out_dir / FRAMES_FILE, index=False)
            path = write_report(report, out_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("plan %d: report not written: %s", plan_id, exc)
            return None
        self.written.append(path)
        log.info("plan %d: report written to %s", plan_id, path)
        return path


async def start_station_reports(
    stack: contextlib.AsyncExitStack,
    broker_url: str,
    mission: str,
    station: str,
    keystore: KeyStore | None,
    directory: str | Path | None = None,
    tls: BusTls | None = None,
    clock: Clock | None = None,
) -> StationReports:
    """Get: a station's report writer, recording from now on its own bus connection until
    `stack` closes (over `mqtts://`, `tls` holds the recorder's own certificate: a broker that
    makes the certificate's CN the client id would let two connections under the station's
    identity take each other's place); `clock` (the station's) stamps what it records."""
    reports = StationReports(
        Path(directory) if directory is not None else default_reports_dir(station),
        mission,
        station,
        keystore,
    )
    client_id = f"satqkd-{dct.ogs_node(station)}-reports"
    bus = await stack.enter_async_context(MessageBus(broker_url, client_id, tls=tls))
    recorder = PassRecorder(
        bus,
        mission,
        nodes={reports.node, dct.PAYLOAD_NODE},
        max_records=MAX_RECORDS,
        on_record=reports.on_record,
        clock=clock,
    )
    reports.recorder = recorder
    await recorder.start()
    stack.push_async_callback(recorder.stop)
    return reports
