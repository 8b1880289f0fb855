"""A telemetry archive (`satqkd.telemetry_archive`) as InfluxDB line protocol or as CSV tables,
for the tools ground segments plot telemetry with (Grafana over InfluxDB, a spreadsheet).

Line protocol (InfluxDB's write format, docs.influxdata.com/influxdb/v2/reference/syntax/
line-protocol/): one point a message, e.g. (one line)

    TC_ACK,mission=jinan1,node=payload seq=3i,command_id=16i,command_seq=1i,accepted=true,
    reason="" 1796134697250000000

- measurement: the packet's name (EVENT for events); tags: `mission` and `node` from the topic
  (and `event`, an event's name), an empty one left out (the protocol has no empty tag value);
- fields: `seq` and every decoded field: unsigned and signed integers with the `i` suffix (a
  value past the signed 64-bit range as a float), f64 as a float (`repr`, exact), booleans as
  true/false, strings double-quoted; an array becomes NAME_0, NAME_1, ...; a missing value (NaN,
  null) is left out, as is a field named like a tag (HOUSEKEEPING's `node` repeats the tag);
- timestamp: `received_unix_s` in nanoseconds (from its shortest decimal form). A record
  without one (a stream saved before recorders stamped arrival times) is refused (InfluxDB
  would stamp every point with the time of the write and keep one). Two messages of one
  series in the same nanosecond would overwrite each other: the later is moved on by 1 ns.
- escaping: measurement: comma and space; tag keys, tag values and field keys: comma, equals
  sign and space; string field values: double quote; everywhere a backslash (two contiguous
  backslashes read as one). A newline or carriage return (which the protocol cannot carry
  anywhere) is written as the two characters `\\n` / `\\r`.

CSV: one table a packet (`housekeeping.csv`, `event.csv`, ...) with the columns
received_unix_s, received_utc, mission, node, seq, (event,) and the packet's fields in
dictionary order (arrays spread as NAME_0, ...; a missing value empty).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from satqkd.telemetry_archive import RECEIVED, ArchiveError
from satqkd_core import dictionary as dct
from satqkd_core.dictionary import parse_field_type

FORMATS = ("influx", "csv")
INT64_MAX = 2**63 - 1
_TAG_KEYS = ("event", "mission", "node")  # sorted, as InfluxDB prefers them


def _escape(text: str, special: str) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    for char in special:
        text = text.replace(char, "\\" + char)
    return text


def escape_measurement(name: str) -> str:
    """Get: a measurement name escaped for line protocol (comma, space)."""
    return _escape(name, ", ")


def escape_key(text: str) -> str:
    """Get: a tag key, tag value or field key escaped for line protocol (comma, '=', space)."""
    return _escape(text, ",= ")


def quote_string(text: str) -> str:
    """Get: a string field value for line protocol, double-quoted (backslash, double quote)."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n").replace("\r", "\\r") + '"'


def _mission(record: Mapping[str, Any]) -> str:
    levels = str(record.get("topic", "")).split("/")
    return levels[1] if len(levels) > 1 else ""


def _tags(record: Mapping[str, Any]) -> dict[str, str]:
    tags = {"mission": _mission(record), "node": str(record.get("node", ""))}
    if record.get("kind") == "evt" and isinstance(record.get("event"), str):
        tags["event"] = record["event"]
    return {key: tags[key] for key in _TAG_KEYS if tags.get(key)}


def _columns(spec: dct.MessageSpec, record: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(column name, element type, value) of a record's fields in dictionary order, arrays
    spread; a value the record lacks is None."""
    fields = record["fields"]
    for field in spec.fields:
        element, length, is_array = parse_field_type(field.type)
        value = fields.get(field.name)
        if not is_array:
            yield field.name, element, value
            continue
        items = list(value) if isinstance(value, list) else []
        count = length if length is not None else len(items)
        for index in range(count):
            item = items[index] if index < len(items) else None
            yield f"{field.name}_{index}", element, item


def _field_text(element: str, value: Any) -> str | None:
    """A field value in line protocol, None for a missing one."""
    if value is None:
        return None
    if element == "bool":
        return "true" if value else "false"
    if element == "str":
        return quote_string(str(value))
    if element == "bytes":
        return quote_string(value if isinstance(value, str) else bytes(value).hex())
    if element == "f64":
        number = float(value)
        return repr(number) if math.isfinite(number) else None
    number = int(value)  # u16, u32, u64, i64
    return f"{number}i" if -INT64_MAX - 1 <= number <= INT64_MAX else repr(float(number))


def _timestamp_ns(record: Mapping[str, Any], where: str) -> int:
    received = record.get(RECEIVED)
    if not isinstance(received, int | float) or isinstance(received, bool):
        raise ArchiveError(
            f"{where}: no {RECEIVED} (a report's telemetry.jsonl keeps no arrival times): "
            "InfluxDB needs one a point; record the stream with `satqkd tm record`"
        )
    # from the shortest decimal of the float: 1796134697.25 s is ...697250000000 ns, not the
    # ...697249999872 that multiplying the float by 1e9 gives
    return int((Decimal(repr(float(received))) * 1_000_000_000).to_integral_value())


def influx_lines(records: Iterable[Mapping[str, Any]], source: str = "archive") -> Iterator[str]:
    """Get: one line-protocol line (without its newline) a record, in order; ArchiveError
    naming `source` and the record for one without an arrival time."""
    last_ns: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        spec = dct.spec_by_name(str(record["name"]))
        tags = _tags(record)
        series = escape_measurement(spec.name) + "".join(
            f",{escape_key(key)}={escape_key(value)}" for key, value in tags.items()
        )
        fields = [f"seq={int(record.get('seq', 0))}i"]
        for column, element, value in _columns(spec, record):
            text = _field_text(element, value)
            if text is not None and column not in tags and column != "seq":
                fields.append(f"{escape_key(column)}={text}")
        stamp = _timestamp_ns(record, f"{source}: message {number} ({spec.name})")
        stamp = max(stamp, last_ns.get(series, stamp - 1) + 1)  # never two points at one time
        last_ns[series] = stamp
        yield f"{series} {','.join(fields)} {stamp}"


def write_influx(records: list[Mapping[str, Any]], path: str | Path, source: str) -> int:
    """Control: write the records as line protocol to `path` (whole, or not at all); get the
    number of points."""
    lines = list(influx_lines(records, source))  # refuses before anything is written
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def _csv_value(element: str, value: Any) -> str:
    if value is None:
        return ""
    if element == "bool":
        return "true" if value else "false"
    if element == "f64":
        number = float(value)
        return repr(number) if math.isfinite(number) else ""
    return str(value)


def write_csv(records: list[Mapping[str, Any]], out_dir: str | Path) -> dict[str, int]:
    """Control: write one CSV table a packet into `out_dir` (created); get the rows written
    per file name."""
    out = Path(out_dir)
    by_packet: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_packet.setdefault(str(record["name"]), []).append(record)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, packet_records in by_packet.items():
        spec = dct.spec_by_name(name)
        spread = [[column for column, _, _ in _columns(spec, record)] for record in packet_records]
        columns = list(dict.fromkeys(column for row in spread for column in row))
        head = ["received_unix_s", "received_utc", "mission", "node", "seq"]
        head += ["event"] if spec.kind == "evt" else []
        file_name = f"{name.lower()}.csv"
        with (out / file_name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(head + columns)
            for record in packet_records:
                received = record.get(RECEIVED)
                timed = isinstance(received, int | float) and not isinstance(received, bool)
                row = [
                    repr(float(received)) if timed else "",
                    datetime.fromtimestamp(received, UTC).isoformat() if timed else "",
                    _mission(record),
                    record.get("node", ""),
                    record.get("seq", ""),
                ]
                row += [record.get("event", "")] if spec.kind == "evt" else []
                values = {c: _csv_value(e, v) for c, e, v in _columns(spec, record)}
                writer.writerow(row + [values.get(column, "") for column in columns])
        written[file_name] = len(packet_records)
    return written
