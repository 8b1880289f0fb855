"""XTCE 1.2 (OMG XML Telemetric and Command Exchange) export of the message dictionary.

Ground segments such as YAMCS read a mission database in XTCE; this one describes every
message of `satqkd_core.dictionary` as it travels on the bus (`satqkd_core.codec`): an
abstract `envelope` container (magic, version, kind code, type_id, seq, body_len) that each
message's container extends, restricted on `type_id`, with the message's fields in
declaration order and then the tag (`tag_len`, `tag`). Telecommands are also MetaCommands
with one argument per field. Every name is `<MESSAGE>_<field>` (XTCE names may not hold a
dot). A variable-length field (str, bytes, `T[]`) is written as on the wire: its length
(`<MESSAGE>_<field>_length`: u16 bytes for str, u32 bytes for bytes, u32 elements for arrays)
then the value, sized by that length. Events: `EVENT_event_id` is an enumeration of the
event table. Telecommands carry the 19-byte security trailer (docs/telecommands.md) in
their tag; a ground segment that sends them must sign them the way `satqkd tc send` does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from satqkd_core import dictionary as dct
from satqkd_core.codec import ENVELOPE_VERSION, KIND_CODES, MAGIC
from satqkd_core.dictionary import FieldSpec, MessageSpec, parse_field_type

XTCE_NAMESPACE = "http://www.omg.org/spec/XTCE/20180204"
_SCHEMA_LOCATION = f"{XTCE_NAMESPACE} https://www.omg.org/spec/XTCE/20180204/SpaceSystem.xsd"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_INT_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64, "i64": 64}
_MAX_STR_BITS = (2**16 - 1) * 8
_MAX_BYTES_BITS = (2**32 - 1) * 8
ENVELOPE_CONTAINER = "envelope"

ET.register_namespace("xtce", XTCE_NAMESPACE)


def _q(tag: str) -> str:
    return f"{{{XTCE_NAMESPACE}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, _q(tag), {k: v for k, v in attributes.items() if v})
    if text is not None:
        element.text = text
    return element


def _type_name(element: str, unit: str) -> str:
    return f"{element}_{unit}" if unit else element


def _unit_set(parent: ET.Element, unit: str) -> None:
    units = _sub(parent, "UnitSet")
    if unit:
        _sub(units, "Unit", unit)


def _encoding(parent: ET.Element, element: str) -> None:
    """The data encoding of a scalar wire type (all big-endian)."""
    if element in _INT_BITS:
        _sub(
            parent,
            "IntegerDataEncoding",
            sizeInBits=str(_INT_BITS[element]),
            encoding="twosComplement" if element == "i64" else "unsigned",
            byteOrder="mostSignificantByteFirst",
        )
    elif element == "bool":
        _sub(parent, "IntegerDataEncoding", sizeInBits="8", encoding="unsigned")
    elif element == "f64":
        _sub(
            parent,
            "FloatDataEncoding",
            sizeInBits="64",
            encoding="IEEE754_1985",
            byteOrder="mostSignificantByteFirst",
        )


class _Types:
    """The parameter (or argument) types in use, each declared once."""

    def __init__(self, type_set: ET.Element, argument: bool) -> None:
        self.type_set = type_set
        self.suffix = "ArgumentType" if argument else "ParameterType"
        self.declared: set[str] = set()

    def scalar(self, element: str, unit: str) -> str:
        name = _type_name(element, unit)
        if name in self.declared:
            return name
        self.declared.add(name)
        if element in _INT_BITS:
            node = _sub(
                self.type_set,
                "Integer" + self.suffix,
                name=name,
                signed="true" if element == "i64" else "false",
                sizeInBits=str(_INT_BITS[element]),
            )
        elif element == "f64":
            node = _sub(self.type_set, "Float" + self.suffix, name=name, sizeInBits="64")
        elif element == "bool":
            node = _sub(
                self.type_set,
                "Boolean" + self.suffix,
                name=name,
                zeroStringValue="false",
                oneStringValue="true",
            )
        else:
            raise ValueError(f"{element} is not a scalar with a fixed size")
        _unit_set(node, unit)
        _encoding(node, element)
        return name

    def sized(self, name: str, kind: str, length_ref: str, ref_tag: str) -> str:
        """A str/bytes type whose size in bytes is the value of another parameter."""
        if name in self.declared:
            return name
        self.declared.add(name)
        if kind == "str":
            node = _sub(self.type_set, "String" + self.suffix, name=name)
            _unit_set(node, "")
            encoding = _sub(node, "StringDataEncoding", encoding="UTF-8")
            size = _sub(encoding, "Variable", maxSizeInBits=str(_MAX_STR_BITS))
        else:
            node = _sub(self.type_set, "Binary" + self.suffix, name=name)
            _unit_set(node, "")
            encoding = _sub(node, "BinaryDataEncoding")
            size = _sub(encoding, "SizeInBits")
        dynamic = _sub(size, "DynamicValue")
        _sub(dynamic, ref_tag, **{_ref_attribute(ref_tag): length_ref})
        _sub(dynamic, "LinearAdjustment", slope="8")
        return name

    def array(self, name: str, element_type: str, fixed: int | None, count_ref: str | None) -> str:
        self.declared.add(name)
        node = _sub(self.type_set, "Array" + self.suffix, name=name, arrayTypeRef=element_type)
        dimension = _sub(_sub(node, "DimensionList"), "Dimension")
        _sub(_sub(dimension, "StartingIndex"), "FixedValue", "0")
        ending = _sub(dimension, "EndingIndex")
        if fixed is not None:
            _sub(ending, "FixedValue", str(fixed - 1))
        else:
            dynamic = _sub(ending, "DynamicValue")
            ref_tag = (
                "ArgumentInstanceRef" if self.suffix == "ArgumentType" else ("ParameterInstanceRef")
            )
            _sub(dynamic, ref_tag, **{_ref_attribute(ref_tag): str(count_ref)})
            _sub(dynamic, "LinearAdjustment", slope="1", intercept="-1")
        return name


def _ref_attribute(ref_tag: str) -> str:
    return "argumentRef" if ref_tag == "ArgumentInstanceRef" else "parameterRef"


def _declare_field(
    types: _Types, spec: MessageSpec, field: FieldSpec, argument: bool
) -> list[tuple[str, str, str]]:
    """Get: the (name, type, description) of the items a field is on the wire, declaring
    their types: one item, or the length then the value for a variable-length field."""
    name = f"{spec.name}_{field.name}"
    doc = f"{field.doc} ({field.type})" if field.doc else field.type
    element, fixed, is_array = parse_field_type(field.type)
    ref_tag = "ArgumentInstanceRef" if argument else "ParameterInstanceRef"
    if spec.name == "EVENT" and field.name == "event_id" and not argument:
        return [(name, _event_enumeration(types), doc)]
    if not is_array and element in ("str", "bytes"):
        length = f"{name}_length"
        length_type = types.scalar("u16" if element == "str" else "u32", "byte")
        value_type = types.sized(f"{name}_type", element, length, ref_tag)
        return [(length, length_type, f"length of {field.name} in bytes"), (name, value_type, doc)]
    if not is_array:
        return [(name, types.scalar(element, field.unit), doc)]
    element_type = types.scalar(element, field.unit)
    if fixed is not None:
        return [(name, types.array(f"{name}_type", element_type, fixed, None), doc)]
    count = f"{name}_length"
    count_type = types.scalar("u32", "")
    value_type = types.array(f"{name}_type", element_type, None, count)
    return [(count, count_type, f"number of {field.name} elements"), (name, value_type, doc)]


def _event_enumeration(types: _Types) -> str:
    name = "event_id_type"
    if name not in types.declared:
        types.declared.add(name)
        node = _sub(types.type_set, "EnumeratedParameterType", name=name)
        _unit_set(node, "")
        _encoding(node, "u16")
        values = _sub(node, "EnumerationList")
        for event in sorted(dct.EVENTS.values(), key=lambda e: e.id):
            _sub(
                values,
                "Enumeration",
                value=str(event.id),
                label=event.name,
                shortDescription=f"{event.severity}: {event.doc}",
            )
    return name


_HEADER_ITEMS = (
    ("magic", "u16", "b'SQ' (0x5351)"),
    ("version", "u8", f"envelope version ({ENVELOPE_VERSION})"),
    ("kind_code", "u8", "1 tc, 2 tm, 3 evt, 4 qkd"),
    ("type_id", "u16", "the message's dictionary id"),
    ("seq", "u32", "sender's sequence number"),
    ("body_len", "u32", "bytes of the body"),
)


def _telemetry(root: ET.Element, messages: Iterable[MessageSpec]) -> None:
    meta = _sub(root, "TelemetryMetaData")
    types = _Types(_sub(meta, "ParameterTypeSet"), argument=False)
    parameters = _sub(meta, "ParameterSet")
    containers = _sub(meta, "ContainerSet")

    def parameter(name: str, type_ref: str, doc: str) -> None:
        _sub(parameters, "Parameter", name=name, parameterTypeRef=type_ref, shortDescription=doc)

    envelope = _sub(
        containers,
        "SequenceContainer",
        name=ENVELOPE_CONTAINER,
        abstract="true",
        shortDescription="satqkd envelope header (satqkd_core.codec), big-endian",
    )
    entries = _sub(envelope, "EntryList")
    for name, wire, doc in _HEADER_ITEMS:
        parameter(name, types.scalar(wire, ""), doc)
        _sub(entries, "ParameterRefEntry", parameterRef=name)
    parameter("tag_len", types.scalar("u8", "byte"), "bytes of the tag")
    types.sized("tag_type", "bytes", "tag_len", "ParameterInstanceRef")
    parameter("tag", "tag_type", "authentication tag or telecommand trailer (may be empty)")
    for spec in messages:
        container = _sub(
            containers,
            "SequenceContainer",
            name=spec.name,
            shortDescription=f"{spec.doc} ({spec.kind}, id 0x{spec.id:04X}, {spec.direction})",
        )
        entries = _sub(container, "EntryList")
        for field in spec.fields:
            for name, type_ref, doc in _declare_field(types, spec, field, argument=False):
                parameter(name, type_ref, doc)
                _sub(entries, "ParameterRefEntry", parameterRef=name)
        _sub(entries, "ParameterRefEntry", parameterRef="tag_len")
        _sub(entries, "ParameterRefEntry", parameterRef="tag")
        base = _sub(container, "BaseContainer", containerRef=ENVELOPE_CONTAINER)
        comparisons = _sub(_sub(base, "RestrictionCriteria"), "ComparisonList")
        _sub(comparisons, "Comparison", parameterRef="kind_code", value=str(KIND_CODES[spec.kind]))
        _sub(comparisons, "Comparison", parameterRef="type_id", value=str(spec.id))


def _commands(root: ET.Element, commands: Iterable[MessageSpec]) -> None:
    meta = _sub(root, "CommandMetaData")
    types = _Types(_sub(meta, "ArgumentTypeSet"), argument=True)
    meta_commands = _sub(meta, "MetaCommandSet")
    for spec in commands:
        command = _sub(
            meta_commands,
            "MetaCommand",
            name=spec.name,
            shortDescription=f"{spec.doc} (id 0x{spec.id:04X}, {spec.direction})",
        )
        arguments = _sub(command, "ArgumentList")
        items = [("seq", types.scalar("u32", ""), "anti-replay sequence number")]
        items.append(("body_len", types.scalar("u32", "byte"), "bytes of the body"))
        for field in spec.fields:
            items += _declare_field(types, spec, field, argument=True)
        items.append(("tag_len", types.scalar("u8", "byte"), "19: the security trailer"))
        trailer = types.sized("trailer_type", "bytes", "tag_len", "ArgumentInstanceRef")
        items.append(("trailer", trailer, "format, key id, AES-256-CMAC (docs/telecommands.md)"))
        for name, type_ref, doc in items:
            _sub(arguments, "Argument", name=name, argumentTypeRef=type_ref, shortDescription=doc)
        entries = _sub(
            _sub(command, "CommandContainer", name=f"{spec.name}_container"), "EntryList"
        )
        header = (MAGIC.hex(), 16), (f"{ENVELOPE_VERSION:02x}", 8), (f"{KIND_CODES['tc']:02x}", 8)
        for value, bits in (*header, (f"{spec.id:04x}", 16)):
            _sub(entries, "FixedValueEntry", binaryValue=value, sizeInBits=str(bits))
        for name, _, _ in items:
            _sub(entries, "ArgumentRefEntry", argumentRef=name)


def xtce_document(space_system: str = "satqkd") -> ET.ElementTree:
    """Get: the XTCE 1.2 SpaceSystem of the whole dictionary (every message and event)."""
    root = ET.Element(_q("SpaceSystem"), {"name": space_system})
    root.set(f"{{{_XSI}}}schemaLocation", _SCHEMA_LOCATION)
    root.set(
        "shortDescription",
        "satqkd command, telemetry, event and QKD message dictionary (satqkd_core.dictionary)",
    )
    _sub(
        root,
        "Header",
        validationStatus="Working",
        version=f"envelope-{ENVELOPE_VERSION}",
        classification="NotClassified",
    )
    messages = sorted(dct.DICTIONARY.values(), key=lambda s: s.id)
    _telemetry(root, messages)
    _commands(root, [s for s in messages if s.kind == "tc"])
    return ET.ElementTree(root)


def write_xtce(path: str | Path, space_system: str = "satqkd") -> Path:
    """Control: write the XTCE document to `path` (UTF-8, indented); the path."""
    tree = xtce_document(space_system)
    ET.indent(tree, space="  ")
    out = Path(path)
    tree.write(out, encoding="utf-8", xml_declaration=True)
    return out
