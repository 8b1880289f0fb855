"""`satqkd tm export ARCHIVE --format influx|csv`: a telemetry archive of a real pass (the
session's short clear pass, each message as a recorder receives it) as InfluxDB line protocol
that a strict parser of the protocol reads back into every message and field, and as one CSV
table a packet. The parser follows the protocol's reference (measurement, tag set, field set,
timestamp; escapes per element), not the writer's code."""

from __future__ import annotations

import csv
import math
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from satqkd.cli import main
from satqkd.pass_recorder import save_recorded
from satqkd.telemetry_archive import ArchiveWriter, envelope_of, read_archive, record_from_bus
from satqkd_core import dictionary as dct
from satqkd_core.codec import encode_envelope
from satqkd_core.dictionary import parse_field_type

T0 = 1_796_134_697.0
# an event whose text and topic hold every character the protocol escapes
AWKWARD_TEXT = 'pointing "lost", az=12 deg\\el; retry\nnow'
AWKWARD_TOPIC = "satqkd/lab mission,b=1/ogs-x y/evt"

# ---- a strict line-protocol parser ---------------------------------------------------------

_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INT = re.compile(r"-?\d+i")
_BOOL = {"t": True, "T": True, "true": True, "True": True, "TRUE": True}
_BOOL |= {"f": False, "F": False, "false": False, "False": False, "FALSE": False}


def _name(line: str, at: int, ends: str, escapable: str) -> tuple[str, int]:
    """An unquoted element (measurement, tag key/value, field key) up to an unescaped char of
    `ends`; a backslash escapes the chars of `escapable` and itself."""
    out = []
    while at < len(line) and line[at] not in ends:
        char = line[at]
        if char == "\\" and at + 1 < len(line) and line[at + 1] in escapable + "\\":
            out.append(line[at + 1])
            at += 2
            continue
        assert char not in "\n\r", "a raw newline inside an element"
        out.append(char)
        at += 1
    assert out, f"empty element at {at}: {line!r}"
    return "".join(out), at


def _field_value(line: str, at: int) -> tuple[object, int]:
    if line[at] == '"':
        out, at = [], at + 1
        while line[at] != '"':
            if line[at] == "\\" and line[at + 1] in '"\\':
                out.append(line[at + 1])
                at += 2
            else:
                out.append(line[at])
                at += 1
        return "".join(out), at + 1
    end = at
    while end < len(line) and line[end] not in ", ":
        end += 1
    token = line[at:end]
    if _INT.fullmatch(token):
        return int(token[:-1]), end
    if token in _BOOL:
        return _BOOL[token], end
    assert _FLOAT.fullmatch(token), f"not a field value: {token!r}"
    return float(token), end


def parse_point(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    """(measurement, tags, fields, timestamp) of one line; AssertionError if it breaks the
    protocol."""
    measurement, at = _name(line, 0, ", ", ", ")
    tags: dict[str, str] = {}
    while line[at] == ",":
        key, at = _name(line, at + 1, "=", ",= ")
        value, at = _name(line, at + 1, ", ", ",= ")
        assert key not in tags
        tags[key] = value
    assert line[at] == " "
    fields: dict[str, object] = {}
    at += 1
    while True:
        key, at = _name(line, at, "=", ",= ")
        assert line[at] == "=" and key not in fields
        fields[key], at = _field_value(line, at + 1)
        if line[at] == " ":
            break
        assert line[at] == ",", f"after a field: {line[at:]!r}"
        at += 1
    stamp = line[at + 1 :]
    assert re.fullmatch(r"-?\d+", stamp), f"timestamp {stamp!r}"
    return measurement, tags, fields, int(stamp)


# ---- the archive ---------------------------------------------------------------------------


@pytest.fixture
def archive(short_clear_pass: tuple[Path, dict], tmp_path: Path) -> tuple[Path, list[dict]]:
    """A telemetry archive of the session's pass: every message's bytes as a recorder
    receives them, 50 ms apart, then one awkward event."""
    path = tmp_path / "pass.jsonl"
    recorded = read_archive(short_clear_pass[0] / "telemetry.jsonl")
    event = dct.spec_by_name("EVENT")
    awkward = encode_envelope(
        event, 99, {"event_id": 21, "severity": "ACTIVITY_HI", "text": AWKWARD_TEXT}
    )
    with ArchiveWriter(path) as writer:
        for index, record in enumerate(recorded):
            writer.write(record_from_bus(record["topic"], envelope_of(record), T0 + 0.05 * index))
        writer.write(record_from_bus(AWKWARD_TOPIC, awkward, T0 + 0.05 * len(recorded)))
    return path, read_archive(path)


def _expected_fields(record: dict) -> dict[str, object]:
    """The decoded fields of a record as the export should carry them (arrays spread; missing
    values and a field named like a tag left out)."""
    spec = dct.spec_by_name(record["name"])
    expected: dict[str, object] = {"seq": record["seq"]}
    for field in spec.fields:
        value = record["fields"][field.name]
        _, _, is_array = parse_field_type(field.type)
        items = enumerate(value) if is_array else [(None, value)]
        for index, item in items:
            key = field.name if index is None else f"{field.name}_{index}"
            if item is not None and key not in ("node", "mission"):
                expected[key] = item
    return expected


def test_every_message_and_field_reaches_line_protocol(archive, tmp_path: Path, capsys) -> None:
    path, records = archive
    out = tmp_path / "pass.lp"
    assert main(["tm", "export", str(path), "--format", "influx", "--out", str(out)]) == 0
    assert f"{len(records)} point(s)" in capsys.readouterr().out
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines.pop() == "" and len(lines) == len(records)
    names = set()
    for line, record in zip(lines, records, strict=True):
        measurement, tags, fields, stamp = parse_point(line)
        names.add(measurement)
        assert measurement == record["name"]
        assert tags["node"] == record["node"] and tags["mission"] == record["topic"].split("/")[1]
        assert tags.get("event") == record.get("event")
        assert stamp == int(Decimal(repr(record["received_unix_s"])) * 10**9)  # exact
        expected = _expected_fields(record)
        assert fields.keys() == expected.keys(), record["name"]
        for key, value in expected.items():
            got = fields[key]
            if isinstance(value, str):  # the protocol carries no newline: written as \n
                value = value.replace("\n", "\\n")
            assert type(got) is type(value) and got == value, (record["name"], key, got, value)
    # every kind of packet of a pass is there, and the awkward event survives escaping
    assert {"HOUSEKEEPING", "ATP_STATUS", "QKD_PROGRESS", "OGS_PASS_SUMMARY", "EVENT"} <= names
    measurement, tags, fields, _ = parse_point(lines[-1])
    assert tags == {"event": "NODE_STARTED", "mission": "lab mission,b=1", "node": "ogs-x y"}
    assert fields["text"] == AWKWARD_TEXT.replace("\n", "\\n")


def test_csv_has_one_table_a_packet_with_every_field(archive, tmp_path: Path) -> None:
    path, records = archive
    out = tmp_path / "tables"
    assert main(["tm", "export", str(path), "--format", "csv", "--out", str(out)]) == 0
    for name in {record["name"] for record in records}:
        with (out / f"{name.lower()}.csv").open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        mine = [record for record in records if record["name"] == name]
        assert len(rows) == len(mine)
        for row, record in zip(rows, mine, strict=True):
            assert float(row["received_unix_s"]) == record["received_unix_s"]
            assert (row["node"], int(row["seq"])) == (record["node"], record["seq"])
            for key, value in _expected_fields(record).items():
                text = row[key]
                if isinstance(value, bool):
                    assert text == str(value).lower()
                elif isinstance(value, float):
                    assert float(text) == value or (math.isnan(value) and text == "")
                else:
                    assert text == str(value), (name, key)


def test_a_reports_telemetry_exports_in_the_passs_simulated_time(
    short_clear_pass: tuple[Path, dict], tmp_path: Path
) -> None:
    out_dir, report = short_clear_pass
    out = tmp_path / "report.lp"
    source = out_dir / "telemetry.jsonl"
    assert main(["tm", "export", str(source), "--format", "influx", "--out", str(out)]) == 0
    stamps = [parse_point(line)[3] for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(stamps) == len(read_archive(source))
    # stamped by the simulated clock: the points fall in the pass, from before its QKD window
    # (the plan's acknowledgements) to after it (the summaries), not at the time of the run
    window = report["pass"]
    start_ns, stop_ns = (
        round(datetime.fromisoformat(window[k]).timestamp() * 1e9)
        for k in ("qkd_start_utc", "qkd_stop_utc")
    )
    assert min(stamps) < start_ns < stop_ns < max(stamps) < start_ns + 3_600 * 10**9


def test_an_archive_without_arrival_times_is_refused_for_influx(
    short_clear_pass: tuple[Path, dict], tmp_path: Path, capsys
) -> None:
    untimed = tmp_path / "untimed.jsonl"  # a stream saved before recorders stamped arrivals
    records = read_archive(short_clear_pass[0] / "telemetry.jsonl")
    save_recorded(
        [{k: v for k, v in r.items() if k != "received_unix_s"} for r in records], untimed
    )
    out = tmp_path / "pass.lp"
    assert main(["tm", "export", str(untimed), "--format", "influx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no received_unix_s" in err and "satqkd tm record" in err
    assert not out.exists()  # nothing half-written
    assert main(["tm", "export", str(untimed), "--format", "influx", "--out", str(tmp_path)]) == 2
    assert "writes a file, not a directory" in capsys.readouterr().err
