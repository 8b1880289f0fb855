"""A telemetry archive: every TM/EVT message of a mission (or of some nodes) as received.

The archive is JSON lines, one message a line, in arrival order: the decoded record of
`satqkd.pass_recorder.record_of` (topic, node, kind, name, seq, fields; NaN as null) plus
`received_unix_s` (the recorder's clock when it arrived) and `envelope` (the message's bytes
in hex, exactly as published, so a tool that decodes the binary packets (YAMCS with the XTCE
export of `satqkd.xtce`) can be fed the same stream). A `telemetry.jsonl` written beside a
report (simulated passes, `ogs run --reports`) is a valid archive without `envelope` (its
`received_unix_s` is the node clock's: simulated time in a simulation): it is read, replayed
and turned into a report the same way.

`ArchiveWriter` appends and flushes each line, so an archive cut by a crash or a power cut
loses at most its last line (`read_archive` ignores a torn last line and says so).
`record_from_bus` makes an archive record of a received message; `envelope_of` gives the
bytes of a record back (re-encoded from its fields for an archive without them).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from satqkd.pass_recorder import Record, record_of
from satqkd_core import dictionary as dct
from satqkd_core.codec import CodecError, encode_envelope
from satqkd_core.dictionary import parse_field_type

log = logging.getLogger("satqkd.archive")

RECEIVED = "received_unix_s"
ENVELOPE = "envelope"


class ArchiveError(ValueError):
    """An archive cannot be read or written; the message names the file (and line)."""


def record_from_bus(topic: str, payload: bytes, received_unix_s: float | None = None) -> Record:
    """Get: the archive record of one received TM/EVT message (CodecError if it is not one)."""
    record = record_of(topic, payload)
    record[RECEIVED] = time.time() if received_unix_s is None else float(received_unix_s)
    record[ENVELOPE] = bytes(payload).hex()
    return record


class ArchiveWriter:
    """Appends records to an archive file, one flushed line each (the file is created)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.written = 0
        self._file: IO[str] | None = None

    def open(self) -> ArchiveWriter:
        """Control: open the file for appending; ArchiveError naming it if that fails."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ArchiveError(f"{self.path}: cannot write the archive ({exc.strerror})") from None
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        """Control: append one record and flush it to the operating system."""
        if self._file is None:
            raise ArchiveError(f"{self.path}: the archive is not open")
        line = json.dumps(dict(record), allow_nan=False, separators=(",", ":"))
        self._file.write(line + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        """Control: close the file (what was written stays)."""
        handle, self._file = self._file, None
        if handle is not None:
            handle.close()

    def __enter__(self) -> ArchiveWriter:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _checked(record: object, where: str) -> Record:
    if not isinstance(record, dict) or not isinstance(record.get("fields"), dict):
        raise ArchiveError(f"{where}: not a recorded message (needs 'name' and 'fields')")
    name = record.get("name")
    spec = dct.DICTIONARY.get(name) if isinstance(name, str) else None
    if spec is None or spec.kind not in ("tm", "evt"):
        raise ArchiveError(f"{where}: {name!r} is not a declared telemetry packet or event")
    received = record.get(RECEIVED)
    if received is not None and not (isinstance(received, int | float) and math.isfinite(received)):
        raise ArchiveError(f"{where}: {RECEIVED} must be a number, got {received!r}")
    return record


def read_archive(path: str | Path) -> list[Record]:
    """Get: the records of an archive (or of a report's telemetry.jsonl), in order.

    ArchiveError names the file and line of anything that is not a recorded TM/EVT message;
    a torn last line (a recorder stopped mid-write) is left out with a warning."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read the archive ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ArchiveError(f"{path}: not a telemetry archive (not UTF-8 text)") from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    records: list[Record] = []
    for index, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if index == len(numbered) - 1 and index > 0:
                log.warning("%s:%d: torn last line left out (%s)", path, number, exc.msg)
                break
            raise ArchiveError(f"{path}:{number}: not JSON ({exc.msg})") from None
        records.append(_checked(record, f"{path}:{number}"))
    if not records:
        raise ArchiveError(f"{path}: the archive holds no telemetry")
    return records


def _field_value(type_name: str, value: Any) -> Any:
    """A field value as the codec takes it from its JSON form (null f64 -> NaN, hex bytes)."""
    element, _, is_array = parse_field_type(type_name)
    if is_array:
        dtype = {"u32": np.uint32, "u64": np.uint64, "i64": np.int64, "f64": np.float64}[element]
        items = [math.nan if v is None else v for v in value]
        return np.asarray(items, dtype=dtype)
    if element == "f64":
        return math.nan if value is None else float(value)
    if element == "bytes":
        return bytes.fromhex(value)
    return value


def envelope_of(record: Mapping[str, Any]) -> bytes:
    """Get: the bytes of a recorded message: as received if the archive kept them, else
    re-encoded from its fields (CodecError if the fields do not fit the declaration)."""
    if isinstance(record.get(ENVELOPE), str):
        try:
            return bytes.fromhex(record[ENVELOPE])
        except ValueError:
            raise CodecError(f"{record.get('name')}: {ENVELOPE} is not hex") from None
    spec = dct.spec_by_name(str(record.get("name")))
    fields = record["fields"]
    try:
        values = {f.name: _field_value(f.type, fields[f.name]) for f in spec.fields}
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"{spec.name}: recorded fields do not fit ({exc})") from None
    return encode_envelope(spec, int(record.get("seq", 0)), values)


def plan_ids(records: Iterable[Mapping[str, Any]]) -> list[int]:
    """Get: the plan ids the station summarised in a stream, in order."""
    ids = []
    for record in records:
        if record.get("name") == "OGS_PASS_SUMMARY":
            plan_id = int(record["fields"]["plan_id"])
            if plan_id not in ids:
                ids.append(plan_id)
    return ids
