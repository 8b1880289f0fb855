"""Recording a mission's telemetry and events from the bus, as a control centre would.

A `PassRecorder` subscribes on its own bus connection to `satqkd/{mission}/+/tm/#` and
`satqkd/{mission}/+/evt` and keeps every message decoded as a plain JSON record (`record_of`),
stamped `received_unix_s` with the node clock's time when it arrived (simulated time in a
simulation, so a report's telemetry.jsonl is a timed archive `satqkd tm export` can write);
`save_recorded` / `load_recorded` write and read such a stream as JSON lines
(`telemetry.jsonl`). `satqkd.report_builder` makes the pass report of a recorded stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from satqkd_core import dictionary as dct
from satqkd_core.codec import CodecError, decode_envelope
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import Clock, RealClock

log = logging.getLogger("satqkd.recorder")

Record = dict[str, Any]


def _json_value(value: Any) -> Any:
    """A decoded field as a plain JSON value: arrays as lists, NaN and infinities as null."""
    if isinstance(value, np.ndarray):
        return [_json_value(item) for item in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.hex()
    return value


def record_of(topic: str, payload: bytes) -> Record:
    """Get: one telemetry or event message as a record (CodecError if it is not one)."""
    envelope = decode_envelope(payload)
    if envelope.spec.kind not in ("tm", "evt"):
        raise CodecError(f"{envelope.spec.name} is not telemetry or an event")
    levels = topic.split("/")
    record: Record = {
        "topic": topic,
        "node": levels[2] if len(levels) > 2 else "",
        "kind": envelope.spec.kind,
        "name": envelope.spec.name,
        "seq": envelope.seq,
        "fields": {name: _json_value(value) for name, value in envelope.fields.items()},
    }
    if envelope.spec.name == "EVENT":
        with contextlib.suppress(KeyError):
            record["event"] = dct.event_by_id(int(envelope.fields["event_id"])).name
    return record


def save_recorded(records: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """Write a recorded stream as JSON lines (one message a line, in arrival order)."""
    lines = [json.dumps(dict(r), allow_nan=False, separators=(",", ":")) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def load_recorded(path: Path) -> list[Record]:
    """Read a recorded stream written by `save_recorded`; ValueError names a bad line."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("fields"), dict):
            raise ValueError(f"{path}:{number}: not a recorded message")
        records.append(record)
    return records


class PassRecorder:
    """Records a mission's telemetry and events from its own bus connection.

    `nodes` keeps only those nodes' messages; `max_records` keeps only the newest ones (a
    long-running recorder); `on_record` is called with every record kept, in arrival order;
    `clock` stamps each record's `received_unix_s` (the system clock unless given).
    """

    def __init__(
        self,
        bus: MessageBus,
        mission: str,
        *,
        nodes: Iterable[str] | None = None,
        max_records: int | None = None,
        on_record: Callable[[Record], Awaitable[None] | None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.bus = bus
        self.clock: Clock = clock if clock is not None else RealClock()
        self.mission = mission
        dct.event_topic(mission, dct.PAYLOAD_NODE)  # InputError naming a bad mission name
        self.topics = (f"satqkd/{mission}/+/tm/#", f"satqkd/{mission}/+/evt")
        self.nodes = frozenset(nodes) if nodes is not None else None
        self._records: deque[Record] = deque(maxlen=max_records)
        self.on_record = on_record
        self.undecodable = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def records(self) -> list[Record]:
        """Get: the records kept so far, oldest first (a copy)."""
        return list(self._records)

    async def start(self) -> None:
        """Control: subscribe and start recording (returns once subscribed)."""
        for topic in self.topics:
            await self.bus.subscribe(topic)
        self._task = asyncio.create_task(self._run(), name=f"recorder-{self.mission}")

    async def stop(self) -> None:
        """Control: stop recording; the records stay."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> PassRecorder:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        async for message in self.bus.messages():
            try:
                record = record_of(message.topic, message.payload)
            except CodecError as exc:
                self.undecodable += 1
                log.warning("recorder: %s: %s", message.topic, exc)
                continue
            if self.nodes is not None and record["node"] not in self.nodes:
                continue
            record["received_unix_s"] = self.clock.now_unix_s()
            self._records.append(record)
            self._changed.set()
            if self.on_record is not None:
                outcome = self.on_record(record)
                if outcome is not None:
                    await outcome

    async def wait_for(
        self, name: str, plan_id: int, timeout_s: float, station: str | None = None
    ) -> Record | None:
        """Get: the first record `name` of `plan_id` (and station), waiting up to timeout_s;
        None if it has not arrived by then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            found = find_record(self._records, name, plan_id, station)
            if found is not None:
                return found
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for (issue 13)
                    await self._changed.wait()

    def save(self, path: Path) -> Path:
        """Write the records as JSON lines (`telemetry.jsonl`)."""
        return save_recorded(self._records, path)


def find_record(
    records: Iterable[Mapping[str, Any]], name: str, plan_id: int | None, station: str | None
) -> Record | None:
    """Get: the last record `name` (of the plan and station, if given), None if there is none."""
    found = None
    for record in records:
        f = record["fields"]
        if record.get("name") != name:
            continue
        if plan_id is not None and f.get("plan_id") != plan_id:
            continue
        if station is not None and f.get("station") != station:
            continue
        found = record
    return dict(found) if found is not None else None
