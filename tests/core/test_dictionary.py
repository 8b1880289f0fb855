"""The message dictionary: declarations, ids, topics, events and the generated protocol doc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from satqkd_core import dictionary as d
from satqkd_core.errors import InputError

REPO = Path(__file__).resolve().parents[2]

# The brief's required declarations: name -> (id, kind, direction, required (field, type) pairs).
REQUIRED: dict[str, tuple[int, str, str, list[tuple[str, str]]]] = {
    "NOOP": (0x0001, "tc", "occ->node", []),
    "RESET_COUNTERS": (0x0002, "tc", "occ->node", []),
    "LOAD_PASS_PLAN": (
        0x0010,
        "tc",
        "occ->node",
        [
            ("plan_id", "u32"),
            ("mission", "str"),
            ("station", "str"),
            ("tle_line1", "str"),
            ("tle_line2", "str"),
            ("aos_unix_s", "f64"),
            ("los_unix_s", "f64"),
            ("qkd_start_unix_s", "f64"),
            ("qkd_stop_unix_s", "f64"),
            ("repetition_rate_hz", "f64"),
        ],
    ),
    "ABORT_PASS": (0x0011, "tc", "occ->node", [("plan_id", "u32"), ("reason", "str")]),
    "SOURCE_ENABLE": (0x0020, "tc", "occ->payload", [("enable", "bool")]),
    "SHUTDOWN": (0x00FF, "tc", "occ->node", []),
    "TC_ACK": (
        0x0101,
        "tm",
        "node->occ",
        [("command_id", "u16"), ("command_seq", "u32"), ("accepted", "bool"), ("reason", "str")],
    ),
    "HOUSEKEEPING": (
        0x0110,
        "tm",
        "node->occ",
        [
            ("node", "str"),
            ("mode", "str"),
            ("uptime_s", "f64"),
            ("clock_unix_s", "f64"),
            ("tc_accepted", "u32"),
            ("tc_rejected", "u32"),
            ("qkd_accepted", "u32"),
            ("qkd_rejected", "u32"),
            ("qkd_duplicates", "u32"),
            ("key_bits_stored", "u64"),
            ("auth_words_remaining", "u64"),
        ],
    ),
    "QKD_PROGRESS": (
        0x0111,
        "tm",
        "node->occ",
        [
            ("plan_id", "u32"),
            ("chunk", "u32"),
            ("detections", "u64"),
            ("sifted_bits", "u64"),
            ("qber_z", "f64"),
            ("elevation_deg", "f64"),
        ],
    ),
    "EVENT": (
        0x0200,
        "evt",
        "node->occ",
        [("event_id", "u16"), ("severity", "str"), ("text", "str")],
    ),
    "DETECTION_REPORT": (
        0x0300,
        "qkd",
        "ogs->payload",
        [
            ("plan_id", "u32"),
            ("chunk", "u32"),
            ("frame_start_unix_s", "f64"),
            ("frame_stop_unix_s", "f64"),
            ("n_detections", "u32"),
            ("report", "bytes"),
        ],
    ),
    "SIFT_RESULT": (
        0x0301,
        "qkd",
        "payload->ogs",
        [
            ("plan_id", "u32"),
            ("chunk", "u32"),
            ("n_detections", "u32"),
            ("keep", "bytes"),
            ("n_kept", "u32"),
            ("intensity", "bytes"),
            ("z_bits", "bytes"),
            ("pulse_shift", "i64"),
            ("pulse_index_ambiguous", "bool"),
        ],
    ),
    "PE_COUNTS": (
        0x0302,
        "qkd",
        "ogs->payload",
        [
            ("plan_id", "u32"),
            ("n_chunks", "u32"),
            ("x_detections", "u64[3]"),
            ("z_detections", "u64[3]"),
            ("z_errors", "u64[3]"),
        ],
    ),
    "ABORT": (0x0303, "qkd", "any", [("plan_id", "u32"), ("reason", "str")]),
    "EC_QUERY": (
        0x0304,
        "qkd",
        "ogs->payload",
        [
            ("plan_id", "u32"),
            ("round", "u32"),
            ("permutation_seed", "u64"),
            ("passes", "u32"),
            ("qber_estimate", "f64"),
            ("query", "bytes"),
        ],
    ),
    "EC_REPLY": (
        0x0305,
        "qkd",
        "payload->ogs",
        [("plan_id", "u32"), ("round", "u32"), ("parities", "bytes"), ("n", "u32")],
    ),
    "EC_DONE": (
        0x0306,
        "qkd",
        "ogs->payload",
        [("plan_id", "u32"), ("leak_ec_bits", "u64"), ("round_trips", "u32")],
    ),
    "VERIFY": (
        0x0307,
        "qkd",
        "payload->ogs",
        [("plan_id", "u32"), ("hash_key", "u64[]"), ("tag", "bytes")],
    ),
    "VERIFY_RESULT": (0x0308, "qkd", "ogs->payload", [("plan_id", "u32"), ("ok", "bool")]),
    "PA_SEED": (
        0x0309,
        "qkd",
        "payload->ogs",
        [
            ("plan_id", "u32"),
            ("output_bits", "u64"),
            ("seed", "bytes"),
            ("n_seed_bits", "u64"),
            ("key_id", "str"),
        ],
    ),
    "KEY_STORED": (
        0x030A,
        "qkd",
        "ogs->payload",
        [("plan_id", "u32"), ("key_id", "str"), ("key_bits", "u64")],
    ),
}

REQUIRED_EVENTS = (
    "TC_REJECTED",
    "QKD_MESSAGE_REJECTED",
    "AUTH_FAILURE",
    "DUPLICATE_MESSAGE",
    "PASS_STARTED",
    "PASS_ENDED",
    "BLOCK_ABORTED",
    "KEY_STORED",
    "SOURCE_SAFE_STATE",
    "CONFIG_ERROR",
)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_message_is_declared_as_specified(name: str) -> None:
    type_id, kind, direction, fields = REQUIRED[name]
    spec = d.DICTIONARY[name]
    assert (spec.name, spec.id, spec.kind, spec.direction) == (name, type_id, kind, direction)
    declared = [(field.name, field.type) for field in spec.fields]
    # Extra fields may be added, but the required ones keep their relative order.
    assert [pair for pair in declared if pair in fields] == fields
    assert spec.doc


def test_ids_and_names_are_unique_and_in_their_kind_range() -> None:
    specs = list(d.DICTIONARY.values())
    assert len({spec.id for spec in specs}) == len(specs)
    assert all(name == spec.name for name, spec in d.DICTIONARY.items())
    for spec in specs:
        low, high = d.KIND_ID_RANGES[spec.kind]
        assert low <= spec.id <= high, spec.name
        assert spec.name.isupper() and spec.name.replace("_", "").isalnum()
        assert spec.direction in d.DIRECTIONS
        assert spec.qos in (0, 1, 2)


def test_fields_have_valid_types_units_and_docs() -> None:
    for spec in d.DICTIONARY.values():
        names = [field.name for field in spec.fields]
        assert len(set(names)) == len(names), spec.name
        for field in spec.fields:
            assert field.type in d.FIELD_TYPES, (spec.name, field.name)
            assert field.doc, (spec.name, field.name)
            assert field.name.isidentifier() and field.name.islower()
            # Unit suffixes in names agree with the declared unit.
            if field.name.endswith("_s"):
                assert field.unit == "s", (spec.name, field.name)
            if field.name.endswith("_deg"):
                assert field.unit == "deg", (spec.name, field.name)


def test_qkd_messages_have_a_protocol_direction() -> None:
    for spec in d.DICTIONARY.values():
        if spec.kind == "qkd":
            assert spec.direction in ("ogs->payload", "payload->ogs", "any")
            assert spec.qos == 1
        else:
            assert spec.direction in ("occ->payload", "occ->node", "node->occ")


def test_parse_field_type() -> None:
    assert d.parse_field_type("u32") == ("u32", None, False)
    assert d.parse_field_type("u64[3]") == ("u64", 3, True)
    assert d.parse_field_type("f64[]") == ("f64", None, True)
    for bad in ("u128", "u8[]", "str[]", "u64[4]", "u64[", ""):
        with pytest.raises(InputError, match="field type"):
            d.parse_field_type(bad)


def test_spec_by_id_and_name() -> None:
    for spec in d.DICTIONARY.values():
        assert d.spec_by_id(spec.id) is spec
        assert d.spec_by_name(spec.name) is spec
    with pytest.raises(KeyError) as info:
        d.spec_by_id(0x7777)
    assert isinstance(info.value, d.UnknownMessageError)
    assert str(info.value) == "type_id: no message is declared with id 30583 (0x7777)"
    with pytest.raises(KeyError, match="no message is declared"):
        d.spec_by_id("1")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no message is declared"):
        d.spec_by_id(True)
    with pytest.raises(KeyError, match="'BOGUS'"):
        d.spec_by_name("BOGUS")


def test_event_table() -> None:
    for name in REQUIRED_EVENTS:
        assert name in d.EVENTS
    events = list(d.EVENTS.values())
    assert len({event.id for event in events}) == len(events)
    for event in events:
        assert event.severity in d.SEVERITIES
        assert 0 <= event.id <= 0xFFFF
        assert d.event_by_id(event.id) is event
        assert event.doc
    assert d.EVENTS["AUTH_FAILURE"].severity == "WARNING_HI"
    assert d.SEVERITIES == (
        "DIAGNOSTIC",
        "ACTIVITY_LO",
        "ACTIVITY_HI",
        "WARNING_LO",
        "WARNING_HI",
        "FATAL",
    )
    with pytest.raises(KeyError, match="event_id"):
        d.event_by_id(0xFFFE)


def test_event_fields() -> None:
    fields = d.event_fields("AUTH_FAILURE", "tag mismatch at seq 12")
    assert fields == {
        "event_id": d.EVENTS["AUTH_FAILURE"].id,
        "severity": "WARNING_HI",
        "text": "tag mismatch at seq 12",
    }
    assert set(fields) == {field.name for field in d.DICTIONARY["EVENT"].fields}
    with pytest.raises(InputError, match="event_name"):
        d.event_fields("NOT_AN_EVENT", "x")
    with pytest.raises(InputError, match="text"):
        d.event_fields("AUTH_FAILURE", 3)  # type: ignore[arg-type]


def test_topics() -> None:
    assert d.telecommand_topic("jinan1", "payload") == "satqkd/jinan1/payload/tc"
    assert d.telecommand_topic("jinan1", "ogs-xinglong") == "satqkd/jinan1/ogs-xinglong/tc"
    assert (
        d.telemetry_topic("jinan1", "payload", "HOUSEKEEPING")
        == "satqkd/jinan1/payload/tm/housekeeping"
    )
    assert d.telemetry_topic("m", "ogs-a_b", "TC_ACK") == "satqkd/m/ogs-a_b/tm/tc_ack"
    assert d.event_topic("jinan1", "ogs-graz") == "satqkd/jinan1/ogs-graz/evt"
    assert d.qkd_topic("jinan1", "xinglong", "up") == "satqkd/jinan1/qkd/xinglong/up"
    assert d.qkd_topic("jinan1", "xinglong", "down") == "satqkd/jinan1/qkd/xinglong/down"
    assert d.ogs_node("stellenbosch") == "ogs-stellenbosch"


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: d.telecommand_topic("Jinan1", "payload"), "mission"),
        (lambda: d.telecommand_topic("jinan1", "ground"), "node"),
        (lambda: d.telecommand_topic("jinan1", "ogs-"), "node"),
        (lambda: d.event_topic("jinan1", "ogs-a/b"), "node"),
        (lambda: d.event_topic("", "payload"), "mission"),
        (lambda: d.telemetry_topic("jinan1", "payload", "NOOP"), "name"),
        (lambda: d.telemetry_topic("jinan1", "payload", "housekeeping"), "name"),
        (lambda: d.qkd_topic("jinan1", "xinglong", "sideways"), "direction"),
        (lambda: d.qkd_topic("jinan1", "xing+long", "up"), "station"),
        (lambda: d.qkd_topic("jin#an1", "xinglong", "up"), "mission"),
        (lambda: d.ogs_node("Graz"), "station"),
    ],
)
def test_topic_arguments_are_validated(call, argument: str) -> None:
    with pytest.raises(InputError, match=f"^{argument}:"):
        call()


def test_render_markdown_lists_every_declaration() -> None:
    text = d.render_markdown()
    for spec in d.DICTIONARY.values():
        assert f"`0x{spec.id:04X}` {spec.name}" in text
        for field in spec.fields:
            assert f"`{field.name}` | `{field.type}`" in text
    for event in d.EVENTS.values():
        assert f"| `0x{event.id:04X}` | {event.name} | {event.severity} |" in text
    for type_name in d.FIELD_TYPES:
        assert f"| `{type_name}` |" in text
    assert "`satqkd/{mission}/payload/tc`" in text  # SOURCE_ENABLE goes to the payload only


def test_protocol_doc_tables_are_generated_from_the_dictionary() -> None:
    document = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert d.generated_section(document) == d.render_markdown(), (
        "docs/protocol.md is stale: run python -m satqkd_core.dictionary --write docs/protocol.md"
    )


def test_splice_replaces_only_the_generated_section() -> None:
    document = f"intro\n{d.GENERATED_BEGIN}\nold table\n{d.GENERATED_END}\noutro\n"
    spliced = d.splice_generated(document, "new table\n")
    assert spliced.startswith("intro\n") and spliced.endswith(f"{d.GENERATED_END}\noutro\n")
    assert d.generated_section(spliced) == "new table\n"
    with pytest.raises(InputError, match="markers"):
        d.splice_generated("no markers", "x")
    with pytest.raises(InputError, match="markers"):
        d.generated_section(f"{d.GENERATED_END}\n{d.GENERATED_BEGIN}")


def test_command_line_prints_and_writes(tmp_path: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "satqkd_core.dictionary"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert printed.stdout == d.render_markdown()
    target = tmp_path / "protocol.md"
    target.write_text(f"# doc\n{d.GENERATED_BEGIN}\nstale\n{d.GENERATED_END}\n", encoding="utf-8")
    assert d.main(["--write", str(target)]) == 0
    assert d.generated_section(target.read_text(encoding="utf-8")) == d.render_markdown()
    assert d.main(["--bogus"]) == 2
