"""The pass report is made from what the daemons publish, meets docs/report.schema.json, and
the telemetry it is made from carries no key material."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import math
import re
from pathlib import Path

import jsonschema
import pytest

from satqkd.cli import _build_parser
from satqkd.ogs_reports import plan_records, start_station_reports
from satqkd.report_builder import (
    OGS_SUMMARY,
    PAYLOAD_SUMMARY,
    build_report,
    key_digests,
    load_recorded,
    pass_summaries,
)
from satqkd_core import dictionary as dct
from satqkd_core.codec import encode_envelope
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.keystore import KeyStore
from tests.conftest import REPORT_SCHEMA_PATH, report_schema_errors

# the required minimum of the report (its public contract)
REQUIRED = {
    "": {"schema", "mission", "station", "seed", "pass", "quantum", "sync", "postprocessing"}
    | {"key", "atp", "classical_channel", "timing"},
    "pass": {"aos_utc", "los_utc", "max_elevation_deg", "duration_s"},
    "quantum": {"pulses_sent", "detections", "sifted_bits", "qber", "qber_by_basis"}
    | {"by_intensity"},
    "sync": {"assigned_fraction", "timing_residual_rms_ps"},
    "postprocessing": {"blocks", "aborted_blocks", "ec_efficiency", "ec_rounds", "leak_ec_bits"}
    | {"verification_tag_bits", "pa_input_bits", "pa_output_bits"},
    "key": {"secret_key_bits", "sha256_payload", "sha256_ogs", "abort_reason"},
    "atp": {"acquisition_time_s", "tracking_rms_urad", "mean_pointing_loss_db"},
    "classical_channel": {"uplink_bytes", "downlink_bytes", "messages", "rejected_messages"},
    "timing": {"wall_s", "simulated_s", "key_ready_after_los_s"},
}


@pytest.fixture(scope="module")
def short_pass(short_clear_pass: tuple[Path, dict]) -> Path:
    """The output directory of the session's minute of QKD near culmination of the clear pass,
    seed 7 (tests/conftest.py): a key, in a fraction of a whole pass's time."""
    return short_clear_pass[0]


def _schema() -> dict:
    return json.loads(REPORT_SCHEMA_PATH.read_text(encoding="utf-8"))


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def _properties(schema: dict, path: str = ""):
    """Every property of the schema with its path ('quantum/by_intensity/sent', ...)."""
    for name, sub in schema.get("properties", {}).items():
        where = f"{path}/{name}".lstrip("/")
        yield where, sub
        yield from _properties(sub, where)
        if "items" in sub:
            yield from _properties(sub["items"], where)


def test_the_schema_is_draft_2020_12_and_describes_every_field_with_its_unit() -> None:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for where, sub in _properties(schema):
        assert sub.get("description"), where
        if "properties" not in sub and "items" not in sub:
            assert "Unit:" in sub["description"], where
    sections = {"": schema, **{k: v for k, v in _properties(schema) if "/" not in k}}
    for section, required in REQUIRED.items():
        assert set(sections[section]["required"]) == required, section


def test_a_simulated_pass_report_meets_the_schema(short_pass: Path) -> None:
    report = _report(short_pass)
    assert report["key"]["secret_key_bits"] > 0, report["key"]["abort_reason"]
    assert report_schema_errors(report) == []
    assert (short_pass / "telemetry.jsonl").stat().st_size > 0


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda r: r["key"].pop("sha256_ogs"), "'sha256_ogs' is a required property"),
        (lambda r: r.pop("timing"), "'timing' is a required property"),
        (lambda r: r["quantum"].update(detections="many"), "'many' is not of type 'integer'"),
        (lambda r: r["sync"].update(assigned_fraction=1.5), "1.5 is greater than the maximum"),
        (lambda r: r["key"].update(sha256_ogs="ce94"), "does not match"),
        (lambda r: r["pass"].update(aos_utc="yesterday"), "does not match"),
        (lambda r: r.update(schema="satqkd.pass-report/2"), "was expected"),
    ],
)
def test_a_report_missing_a_field_or_of_a_wrong_type_fails_validation(
    short_pass: Path, change, complaint: str
) -> None:
    report = copy.deepcopy(_report(short_pass))
    change(report)
    errors = report_schema_errors(report)
    assert errors and complaint in errors[0], errors


def test_the_recorded_stream_alone_gives_a_valid_report_with_the_same_figures(
    short_pass: Path,
) -> None:
    simulated = _report(short_pass)
    recorded = load_recorded(short_pass / "telemetry.jsonl")
    alone = build_report(recorded)  # no truth, no key stores: what a control centre can make
    assert report_schema_errors(alone) == []
    assert alone["seed"] is None and "scenario" not in alone
    assert alone["key"]["sha256_ogs"] is None and alone["key"]["sha256_payload"] is None
    assert alone["atp"]["model"] == "measured" and alone["atp"]["mean_pointing_loss_db"] is None
    assert alone["timing"]["wall_s"] is None
    # every figure a daemon measures is the simulated report's own
    for section in ("pass", "postprocessing", "classical_channel"):
        assert alone[section] == simulated[section], section
    quantum = {k: v for k, v in simulated["quantum"].items() if k != "mean_channel_loss_db"}
    assert alone["quantum"] == quantum
    assert alone["sync"] == {k: v for k, v in simulated["sync"].items() if "true" not in k}
    assert alone["key"]["secret_key_bits"] == simulated["key"]["secret_key_bits"]
    daemon = simulated["atp"]["station_tracking"]["daemon"]
    assert alone["atp"]["station_tracking"]["daemon"] == daemon
    assert alone["atp"]["acquisition_time_s"] == daemon["acquisition_time_s"]
    # with the key stores at hand the digests are the simulated report's
    keys = short_pass / "keys"
    digests = key_digests(
        recorded, payload_keys=KeyStore(keys / "payload" / "xinglong"),
        ogs_keys=KeyStore(keys / "ogs-xinglong"),
    )  # fmt: skip
    assert digests == {"payload": simulated["key"]["sha256_payload"],
                       "ogs": simulated["key"]["sha256_ogs"]}  # fmt: skip


def test_a_recorded_stream_without_the_station_summary_is_refused(short_pass: Path) -> None:
    recorded = load_recorded(short_pass / "telemetry.jsonl")
    without = [r for r in recorded if r["name"] != OGS_SUMMARY]
    with pytest.raises(ValueError, match="no OGS_PASS_SUMMARY in the stream"):
        build_report(without)
    with pytest.raises(ValueError, match="no OGS_PASS_SUMMARY of plan 99"):
        build_report(recorded, plan_id=99)


def _strings(value: object) -> list[str]:
    """Every string in a decoded value, nested lists included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_the_telemetry_of_a_pass_carries_no_key_material(short_pass: Path) -> None:
    text = (short_pass / "telemetry.jsonl").read_text(encoding="utf-8")
    key_file = next((short_pass / "keys" / "ogs-xinglong").glob("*.key"))
    key = key_file.read_bytes()
    assert len(key) > 1000
    # neither the key's digest nor any stretch of the key itself, in any encoding
    assert hashlib.sha256(key).hexdigest() not in text
    for start in range(0, len(key) - 16, len(key) // 64):
        assert key[start : start + 16].hex() not in text
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    long_hex = re.compile(r"[0-9a-fA-F]{32,}")  # 128 bits or more written out in hex
    for record in map(json.loads, text.splitlines()):
        for name, value in record["fields"].items():
            where = (record["name"], name)
            assert not any(word in name for word in ("sha", "digest", "hash")), where
            assert name != "key" and not name.endswith(("_key", "key_material")), where
            if "key_bits" in name:  # a count of key bits, never the bits
                assert isinstance(value, int) and not isinstance(value, bool), where
            if name == "key_id":  # the public identifier both ends store the key under
                assert value == "" or uuid.fullmatch(value), where
            for string in _strings(value):  # event texts may name a key by its identifier
                assert not long_hex.search(uuid.sub("", string)), where


def test_no_telemetry_or_event_is_declared_with_a_field_for_key_material() -> None:
    for spec in dct.DICTIONARY.values():
        if spec.kind not in ("tm", "evt"):
            continue
        for field in spec.fields:
            assert field.type != "bytes", (spec.name, field.name)
            assert not any(word in field.name for word in ("sha", "digest", "hash")), field.name
    for name in (OGS_SUMMARY, PAYLOAD_SUMMARY):
        assert dct.DICTIONARY[name].kind == "tm"


def _wire_fields(name: str, fields: dict) -> dict:
    """Recorded fields as the codec takes them again (null reals were NaN on the wire)."""
    wire = {}
    for spec in dct.DICTIONARY[name].fields:
        value = fields[spec.name]
        wire[spec.name] = math.nan if value is None and spec.type == "f64" else value
    return wire


def _wait_for(condition, timeout_s: float = 15.0):
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    return asyncio.wait_for(wait(), timeout_s)


async def test_a_station_writes_its_report_and_rewrites_it_when_the_payload_reports(
    short_pass: Path, tmp_path: Path, embedded_broker_url: str
) -> None:
    recorded = load_recorded(short_pass / "telemetry.jsonl")
    ogs, payload = pass_summaries(recorded)
    assert ogs is not None and payload is not None
    plan_id = ogs["fields"]["plan_id"]
    simulated = _report(short_pass)
    reports_dir = tmp_path / "reports"
    report_path = reports_dir / str(plan_id) / "report.json"
    async with (
        contextlib.AsyncExitStack() as stack,
        MessageBus(embedded_broker_url, "test-occ") as occ,
    ):
        reports = await start_station_reports(
            stack,
            embedded_broker_url,
            "jinan1",
            "xinglong",
            KeyStore(short_pass / "keys" / "ogs-xinglong"),
            reports_dir,
        )
        spec = dct.DICTIONARY[OGS_SUMMARY]
        data = encode_envelope(spec, 1, _wire_fields(OGS_SUMMARY, ogs["fields"]))
        await occ.publish(ogs["topic"], data)
        await _wait_for(report_path.exists)
        first = json.loads(report_path.read_text())
        assert first["quantum"]["pulses_sent"] is None  # the payload has not reported yet
        assert first["classical_channel"]["downlink_bytes"] is None
        assert first["key"]["sha256_ogs"] == simulated["key"]["sha256_ogs"]
        assert first["key"]["sha256_payload"] is None  # the payload's store is not at hand
        assert report_schema_errors(first) == []
        spec = dct.DICTIONARY[PAYLOAD_SUMMARY]
        data = encode_envelope(spec, 1, _wire_fields(PAYLOAD_SUMMARY, payload["fields"]))
        await occ.publish(payload["topic"], data)
        await _wait_for(lambda: len(reports.written) == 2)
    again = json.loads(report_path.read_text())
    assert again["quantum"]["pulses_sent"] == simulated["quantum"]["pulses_sent"]
    assert again["classical_channel"] == simulated["classical_channel"]
    assert again["quantum"]["by_intensity"][0]["sent"] > 0
    telemetry = load_recorded(report_path.parent / "telemetry.jsonl")
    assert [r["name"] for r in telemetry] == [OGS_SUMMARY, PAYLOAD_SUMMARY]


def test_plan_records_keep_a_plans_messages_and_what_came_between_them() -> None:
    def rec(name: str, **fields: object) -> dict:
        return {"topic": "t", "node": "n", "name": name, "fields": fields}

    stream = [
        rec("HOUSEKEEPING"),
        rec("ATP_STATUS", plan_id=1),
        rec("ATP_STATUS", plan_id=2),
        rec("EVENT", event_id=1),
        rec(OGS_SUMMARY, plan_id=1),
        rec("HOUSEKEEPING"),
    ]
    assert [r["name"] for r in plan_records(stream, 1)] == ["ATP_STATUS", "EVENT", OGS_SUMMARY]
    assert plan_records(stream, 3) == []


def test_ogs_run_takes_a_reports_directory() -> None:
    common = ["ogs", "run", "s.yaml", "--mission", "m.yaml", "--broker", "mqtt://h:1"]
    args = _build_parser().parse_args([*common, "--keys", "k", "--reports", "out"])
    assert args.reports == "out"
    assert _build_parser().parse_args([*common, "--keys", "k"]).reports is None
