"""`satqkd tm xtce`: the XTCE 1.2 mission database lists every dictionary entry and describes
the bytes on the bus: a small reader that knows only XTCE decodes real envelopes with it to
the values the codec decodes."""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from satqkd.cli import main
from satqkd.xtce import XTCE_NAMESPACE
from satqkd_core import dictionary as dct
from satqkd_core.codec import encode_envelope
from satqkd_runtime.telecommand_auth import TelecommandSigner, install_telecommand_key

NS = {"x": XTCE_NAMESPACE}


@pytest.fixture(scope="module")
def xtce(tmp_path_factory: pytest.TempPathFactory) -> ET.Element:
    out = tmp_path_factory.mktemp("xtce") / "satqkd.xml"
    assert main(["tm", "xtce", "--out", str(out)]) == 0
    root = ET.parse(out).getroot()  # well-formed, or this raises
    return root


def test_the_database_is_xtce_1_2_and_lists_every_entry(xtce: ET.Element) -> None:
    assert xtce.tag == f"{{{XTCE_NAMESPACE}}}SpaceSystem"
    containers = {c.get("name") for c in xtce.iterfind(".//x:SequenceContainer", NS)}
    assert containers == {"envelope", *dct.DICTIONARY}
    commands = {c.get("name") for c in xtce.iterfind(".//x:MetaCommand", NS)}
    assert commands == {s.name for s in dct.DICTIONARY.values() if s.kind == "tc"}
    parameters = {p.get("name") for p in xtce.iterfind(".//x:Parameter", NS)}
    for spec in dct.DICTIONARY.values():
        for field in spec.fields:
            assert f"{spec.name}_{field.name}" in parameters
    for spec in (s for s in dct.DICTIONARY.values() if s.kind == "tc"):
        command = xtce.find(f".//x:MetaCommand[@name='{spec.name}']", NS)
        arguments = {a.get("name") for a in command.iterfind(".//x:Argument", NS)}
        assert {f"{spec.name}_{f.name}" for f in spec.fields} <= arguments
    labels = {e.get("label"): int(e.get("value")) for e in xtce.iterfind(".//x:Enumeration", NS)}
    assert labels == {event.name: event.id for event in dct.EVENTS.values()}
    # the schema's identity constraints: names unique within each set
    for name_set in ("ParameterTypeSet", "ArgumentTypeSet", "ParameterSet", "ContainerSet"):
        names = [t.get("name") for t in xtce.find(f".//x:{name_set}", NS)]
        assert len(names) == len(set(names)), name_set
    types = {t.get("name") for t in xtce.find(".//x:ParameterTypeSet", NS)}
    for parameter in xtce.iterfind(".//x:Parameter", NS):
        assert parameter.get("parameterTypeRef") in types  # every reference resolves


class XtceReader:
    """Decodes a packet with nothing but the XTCE: containers, entries, types and sizes."""

    def __init__(self, root: ET.Element) -> None:
        self.types = {t.get("name"): t for t in root.find(".//x:ParameterTypeSet", NS)}
        self.parameters = {
            p.get("name"): p.get("parameterTypeRef") for p in root.iterfind(".//x:Parameter", NS)
        }
        self.containers = {c.get("name"): c for c in root.iterfind(".//x:SequenceContainer", NS)}

    def _size(self, dynamic: ET.Element, values: dict[str, Any]) -> int:
        ref = dynamic.find("x:ParameterInstanceRef", NS).get("parameterRef")
        adjust = dynamic.find("x:LinearAdjustment", NS)
        slope = float(adjust.get("slope", 1)) if adjust is not None else 1.0
        intercept = float(adjust.get("intercept", 0)) if adjust is not None else 0.0
        return int(values[ref] * slope + intercept)

    def _value(self, type_name: str, data: bytes, bit: int, values: dict[str, Any]):
        node = self.types[type_name]
        kind = node.tag.split("}")[1]
        if kind == "ArrayParameterType":
            ending = node.find(".//x:EndingIndex", NS)
            fixed = ending.find("x:FixedValue", NS)
            last = (
                int(fixed.text)
                if fixed is not None
                else self._size(ending.find("x:DynamicValue", NS), values)
            )
            items = []
            for _ in range(last + 1):
                item, bit = self._value(node.get("arrayTypeRef"), data, bit, values)
                items.append(item)
            return items, bit
        if kind in ("StringParameterType", "BinaryParameterType"):
            size_bits = self._size(node.find(".//x:DynamicValue", NS), values)
            raw = data[bit // 8 : (bit + size_bits) // 8]
            return (raw.decode("utf-8") if kind.startswith("String") else raw), bit + size_bits
        encoding = node.find("x:IntegerDataEncoding", NS)
        if encoding is None:
            encoding = node.find("x:FloatDataEncoding", NS)
        size = int(encoding.get("sizeInBits"))
        raw = data[bit // 8 : (bit + size) // 8]
        if kind == "FloatParameterType":
            return struct.unpack(">d", raw)[0], bit + size
        value = int.from_bytes(raw, "big", signed=encoding.get("encoding") == "twosComplement")
        return (bool(value) if kind == "BooleanParameterType" else value), bit + size

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Get: (container name, parameter values) of one packet."""
        values: dict[str, Any] = {}
        bit = 0
        for entry in self.containers["envelope"].find("x:EntryList", NS):
            name = entry.get("parameterRef")
            values[name], bit = self._value(self.parameters[name], data, bit, values)
        for name, container in self.containers.items():  # noqa: B007 (the match, below)
            criteria = container.findall(".//x:Comparison", NS)
            if criteria and all(
                values[c.get("parameterRef")] == int(c.get("value")) for c in criteria
            ):
                break
        else:
            raise AssertionError("no container matches")
        for entry in container.find("x:EntryList", NS):
            ref = entry.get("parameterRef")
            values[ref], bit = self._value(self.parameters[ref], data, bit, values)
        assert bit == 8 * len(data), f"{name}: {bit} bits described, {8 * len(data)} sent"
        return name, values


def _same(decoded: Any, expected: Any) -> bool:
    if isinstance(expected, np.ndarray):
        expected = expected.tolist()
    if isinstance(expected, list):
        return len(decoded) == len(expected) and all(map(_same, decoded, expected))
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(decoded)
    return decoded == expected


def test_a_reader_of_the_xtce_alone_decodes_real_envelopes(
    xtce: ET.Element, short_clear_pass: tuple[Path, dict], tmp_path: Path
) -> None:
    from satqkd.telemetry_archive import envelope_of, read_archive
    from satqkd_core.codec import decode_envelope

    reader = XtceReader(xtce)
    seen: set[str] = set()
    for record in read_archive(short_clear_pass[0] / "telemetry.jsonl"):
        if record["name"] in seen:
            continue  # one of each packet and event kind is enough
        seen.add(record["name"])
        data = envelope_of(record)
        name, values = reader.decode(data)
        envelope = decode_envelope(data)
        assert name == envelope.spec.name
        for field, expected in envelope.fields.items():
            assert _same(values[f"{name}_{field}"], expected), (name, field)
    assert {"HOUSEKEEPING", "ATP_STATUS", "QKD_PROGRESS", "OGS_PASS_SUMMARY", "EVENT"} <= seen
    install_telecommand_key(tmp_path / "node", tmp_path / "occ", "payload")
    signer = TelecommandSigner.for_node(tmp_path / "occ", "payload", reservation=1)
    _, signed = signer.sign("SOURCE_ENABLE", {"enable": True})
    name, values = reader.decode(signed)
    assert (name, values["SOURCE_ENABLE_enable"], values["tag_len"]) == ("SOURCE_ENABLE", True, 19)


_SAMPLES = {"u8": 7, "u16": 513, "u32": 70000, "u64": 2**40 + 3, "i64": -5, "f64": 1.25,
            "bool": True, "str": "ab\u00e9", "bytes": b"\x01\x02\x03"}  # fmt: skip


def _sample(type_name: str) -> Any:
    element, fixed, is_array = dct.parse_field_type(type_name)
    if not is_array:
        return _SAMPLES[element]
    dtype = {"u32": np.uint32, "u64": np.uint64, "i64": np.int64, "f64": np.float64}[element]
    return np.arange(1, (fixed or 2) + 1).astype(dtype)


@pytest.mark.parametrize("name", sorted(dct.DICTIONARY))
def test_every_message_decodes_by_the_xtce_alone(xtce: ET.Element, name: str) -> None:
    spec = dct.DICTIONARY[name]
    fields = {f.name: _sample(f.type) for f in spec.fields}
    if name == "EVENT":
        fields["event_id"] = dct.EVENTS["KEY_STORED"].id
    decoded_name, values = XtceReader(xtce).decode(encode_envelope(spec, 11, fields, b"tg"))
    assert (decoded_name, values["type_id"], values["seq"], values["tag"]) == (
        name,
        spec.id,
        11,
        b"tg",
    )
    for field, expected in fields.items():
        assert _same(values[f"{name}_{field}"], expected), field
