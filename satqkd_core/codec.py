"""Binary codec for dictionary messages: the body encoding and the authenticated envelope.

Envelope (all integers big-endian)::

    offset  size        field
    0       2           magic b"SQ"
    2       1           version (ENVELOPE_VERSION)
    3       1           kind code: 1 tc, 2 tm, 3 evt, 4 qkd
    4       2           type_id (the message's dictionary id)
    6       4           seq (sender's sequence number, u32)
    10      4           body_len
    14      body_len    body: the fields in declaration order, no names or padding
    14+L    1           tag_len (0..255)
    15+L    tag_len     tag (Wegman-Carter tag for QKD messages; empty otherwise)

The tag covers `authenticated_bytes(data)`, i.e. everything before tag_len. The encoding is
canonical (one byte string per value), so a decoded envelope re-encodes to the same bytes.
Field encodings are listed in `satqkd_core.dictionary.SCALAR_TYPES` and docs/protocol.md.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from satqkd_core.dictionary import KINDS, MessageSpec, parse_field_type, spec_by_id
from satqkd_core.errors import InputError

MAGIC = b"SQ"
ENVELOPE_VERSION = 1
KIND_CODES: dict[str, int] = {kind: code for code, kind in enumerate(KINDS, start=1)}
_KINDS_BY_CODE: dict[int, str] = {code: kind for kind, code in KIND_CODES.items()}
_HEADER = struct.Struct(">2sBBHII")
HEADER_BYTES = _HEADER.size  # 14
MAX_TAG_BYTES = 255
MAX_SEQ = 2**32 - 1

_STRUCTS: dict[str, struct.Struct] = {
    "u8": struct.Struct(">B"),
    "u16": struct.Struct(">H"),
    "u32": struct.Struct(">I"),
    "u64": struct.Struct(">Q"),
    "i64": struct.Struct(">q"),
    "f64": struct.Struct(">d"),
}
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
# (wire dtype, native dtype returned to callers) per array element type
_ARRAY_DTYPES: dict[str, tuple[np.dtype, np.dtype]] = {
    "u32": (np.dtype(">u4"), np.dtype(np.uint32)),
    "u64": (np.dtype(">u8"), np.dtype(np.uint64)),
    "i64": (np.dtype(">i8"), np.dtype(np.int64)),
    "f64": (np.dtype(">f8"), np.dtype(np.float64)),
}
_U16 = _STRUCTS["u16"]
_U32 = _STRUCTS["u32"]
_MAX_STR_BYTES = 2**16 - 1
_MAX_BYTES = 2**32 - 1


class CodecError(InputError):
    """Bytes are not a well-formed envelope/body, or fields do not match the declaration."""


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope: the message declaration, sequence number, field values and tag."""

    spec: MessageSpec
    seq: int
    fields: dict[str, Any]
    tag: bytes


# ---- encoding -----------------------------------------------------------------------------


def _is_integer(value: object) -> TypeGuard[int | np.integer]:
    # bool is an int subclass; a bool where a counter is expected is a caller bug.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _encode_scalar(where: str, type_name: str, value: object, out: list[bytes]) -> None:
    if type_name in _INT_BOUNDS:
        low, high = _INT_BOUNDS[type_name]
        if not _is_integer(value) or not low <= int(value) <= high:
            raise CodecError(
                f"{where}: expected {type_name} integer in [{low}, {high}], got {value!r}"
            )
        out.append(_STRUCTS[type_name].pack(int(value)))
    elif type_name == "f64":
        if not (_is_integer(value) or isinstance(value, float | np.floating)):
            raise CodecError(f"{where}: expected f64 (a real number), got {value!r}")
        try:
            out.append(_STRUCTS["f64"].pack(float(value)))
        except OverflowError:
            raise CodecError(f"{where}: {value!r} does not fit in f64") from None
    elif type_name == "bool":
        if not isinstance(value, bool | np.bool_):
            raise CodecError(f"{where}: expected bool, got {value!r}")
        out.append(b"\x01" if value else b"\x00")
    elif type_name == "str":
        if not isinstance(value, str):
            raise CodecError(f"{where}: expected str, got {type(value).__name__}")
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CodecError(f"{where}: string is not encodable as UTF-8 ({exc.reason})") from None
        if len(encoded) > _MAX_STR_BYTES:
            raise CodecError(f"{where}: string of {len(encoded)} bytes exceeds {_MAX_STR_BYTES}")
        out += (_U16.pack(len(encoded)), encoded)
    else:  # bytes
        if not isinstance(value, bytes | bytearray | memoryview):
            raise CodecError(
                f"{where}: expected bytes, got {type(value).__name__} (use .tobytes())"
            )
        raw = bytes(value)
        if len(raw) > _MAX_BYTES:
            raise CodecError(f"{where}: {len(raw)} bytes exceed {_MAX_BYTES}")
        out += (_U32.pack(len(raw)), raw)


def _sequence_to_array(
    where: str, element: str, kind: str, value: list[Any] | tuple[Any, ...]
) -> np.ndarray:
    """Convert a Python list/tuple to a numpy array of the element type, checking each item."""
    # numpy's own inference would turn [2**63, 0] into float64 and lose precision silently.
    if element == "f64":
        if not all(_is_integer(item) or isinstance(item, float | np.floating) for item in value):
            raise CodecError(f"{where}: expected {kind} of real numbers")
        try:
            return np.array(value, dtype=np.float64)
        except OverflowError:
            raise CodecError(f"{where}: an element does not fit in f64") from None
    if not all(_is_integer(item) for item in value):
        raise CodecError(f"{where}: expected integers in {kind}")
    low, high = _INT_BOUNDS[element]
    for item in value:
        if not low <= int(item) <= high:
            raise CodecError(f"{where}: element {item} outside {element} range [{low}, {high}]")
    return np.array([int(item) for item in value], dtype=_ARRAY_DTYPES[element][1])


def _array_for_wire(where: str, element: str, length: int | None, value: object) -> np.ndarray:
    """Validate an array field value and convert it to its big-endian wire dtype."""
    kind = f"{element}[{'' if length is None else length}]"
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, list | tuple):
        array = _sequence_to_array(where, element, kind, value)
    else:
        raise CodecError(f"{where}: expected {kind} as a numpy array, got {type(value).__name__}")
    if array.ndim != 1:
        raise CodecError(f"{where}: expected a 1-D {kind}, got shape {array.shape}")
    if length is not None and array.shape[0] != length:
        raise CodecError(f"{where}: expected {length} elements, got {array.shape[0]}")
    wire_dtype = _ARRAY_DTYPES[element][0]
    if array.size == 0:
        return np.empty(0, dtype=wire_dtype)
    if element == "f64":
        if array.dtype.kind not in "fiu":
            raise CodecError(f"{where}: expected real numbers, got dtype {array.dtype}")
        return array.astype(wire_dtype)
    if array.dtype.kind not in "iu":
        raise CodecError(f"{where}: expected integers, got dtype {array.dtype}")
    low, high = _INT_BOUNDS[element]
    smallest, largest = int(array.min()), int(array.max())
    if smallest < low or largest > high:
        bad = smallest if smallest < low else largest
        raise CodecError(f"{where}: element {bad} outside {element} range [{low}, {high}]")
    return array.astype(wire_dtype)


def encode_body(spec: MessageSpec, fields: Mapping[str, Any]) -> bytes:
    """Encode a message's fields in declaration order (CodecError names message and field)."""
    if not isinstance(spec, MessageSpec):
        raise CodecError(f"spec: expected a MessageSpec, got {type(spec).__name__}")
    if not isinstance(fields, Mapping):
        raise CodecError(f"{spec.name}: fields must be a mapping, got {type(fields).__name__}")
    declared = [field.name for field in spec.fields]
    missing = [name for name in declared if name not in fields]
    if missing:
        raise CodecError(f"{spec.name}: missing field(s) {', '.join(map(repr, missing))}")
    extra = sorted(str(name) for name in fields if name not in declared)
    if extra:
        raise CodecError(f"{spec.name}: undeclared field(s) {', '.join(map(repr, extra))}")
    out: list[bytes] = []
    for field in spec.fields:
        where = f"{spec.name}.{field.name}"
        element, length, is_array = parse_field_type(field.type)
        value = fields[field.name]
        if not is_array:
            _encode_scalar(where, element, value, out)
            continue
        array = _array_for_wire(where, element, length, value)
        if length is None:
            out.append(_U32.pack(array.shape[0]))
        out.append(array.tobytes())
    return b"".join(out)


def encode_envelope(
    spec: MessageSpec, seq: int, fields: Mapping[str, Any], tag: bytes = b""
) -> bytes:
    """Encode a complete envelope: header, body and (possibly empty) tag."""
    body = encode_body(spec, fields)
    if not _is_integer(seq) or not 0 <= int(seq) <= MAX_SEQ:
        raise CodecError(f"{spec.name}: seq must be an integer in [0, {MAX_SEQ}], got {seq!r}")
    if not isinstance(tag, bytes | bytearray):
        raise CodecError(f"{spec.name}: tag must be bytes, got {type(tag).__name__}")
    if len(tag) > MAX_TAG_BYTES:
        raise CodecError(f"{spec.name}: tag of {len(tag)} bytes exceeds {MAX_TAG_BYTES}")
    header = _HEADER.pack(
        MAGIC, ENVELOPE_VERSION, KIND_CODES[spec.kind], spec.id, int(seq), len(body)
    )
    return b"".join((header, body, bytes((len(tag),)), bytes(tag)))


# ---- decoding -----------------------------------------------------------------------------


def _byte_view(data: object, what: str) -> memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"{what}: expected bytes, got {type(data).__name__}")
    view = memoryview(data)
    if not view.c_contiguous:
        raise CodecError(f"{what}: expected a contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _need(where: str, view: memoryview, offset: int, size: int) -> None:
    if size > len(view) - offset:
        raise CodecError(
            f"{where}: truncated, needs {size} bytes at offset {offset}, "
            f"only {len(view) - offset} left"
        )


def _decode_field(
    spec_name: str, type_name: str, field_name: str, view: memoryview, offset: int
) -> tuple[Any, int]:
    where = f"{spec_name}.{field_name}"
    element, length, is_array = parse_field_type(type_name)
    if is_array:
        wire_dtype, native_dtype = _ARRAY_DTYPES[element]
        if length is None:
            _need(where, view, offset, 4)
            (length,) = _U32.unpack_from(view, offset)
            offset += 4
        size = length * wire_dtype.itemsize
        _need(where, view, offset, size)
        array = np.frombuffer(view, dtype=wire_dtype, count=length, offset=offset)
        return array.astype(native_dtype), offset + size
    if element in _STRUCTS:
        unpacker = _STRUCTS[element]
        _need(where, view, offset, unpacker.size)
        return unpacker.unpack_from(view, offset)[0], offset + unpacker.size
    if element == "bool":
        _need(where, view, offset, 1)
        if view[offset] > 1:
            raise CodecError(f"{where}: bool byte must be 0 or 1, got {view[offset]}")
        return view[offset] == 1, offset + 1
    prefix = _U16 if element == "str" else _U32
    _need(where, view, offset, prefix.size)
    (size,) = prefix.unpack_from(view, offset)
    offset += prefix.size
    _need(where, view, offset, size)
    raw = bytes(view[offset : offset + size])
    if element == "bytes":
        return raw, offset + size
    try:
        return raw.decode("utf-8"), offset + size
    except UnicodeDecodeError as exc:
        raise CodecError(f"{where}: invalid UTF-8 ({exc.reason})") from None


def decode_body(spec: MessageSpec, body: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode a message body into field values (arrays come back as native numpy arrays)."""
    if not isinstance(spec, MessageSpec):
        raise CodecError(f"spec: expected a MessageSpec, got {type(spec).__name__}")
    view = _byte_view(body, f"{spec.name} body")
    fields: dict[str, Any] = {}
    offset = 0
    for field in spec.fields:
        fields[field.name], offset = _decode_field(spec.name, field.type, field.name, view, offset)
    if offset != len(view):
        raise CodecError(f"{spec.name}: {len(view) - offset} trailing bytes after the last field")
    return fields


def _parse_header(view: memoryview) -> tuple[MessageSpec, int, int]:
    """Check the header; get (spec, seq, end of body) of an envelope."""
    if len(view) < HEADER_BYTES:
        raise CodecError(f"envelope: truncated, {len(view)} bytes, header needs {HEADER_BYTES}")
    magic, version, kind_code, type_id, seq, body_len = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise CodecError(f"envelope: bad magic {magic!r}, expected {MAGIC!r}")
    if version != ENVELOPE_VERSION:
        raise CodecError(f"envelope: unsupported version {version}, expected {ENVELOPE_VERSION}")
    kind = _KINDS_BY_CODE.get(kind_code)
    if kind is None:
        raise CodecError(f"envelope: unknown kind code {kind_code}")
    try:
        spec = spec_by_id(type_id)
    except KeyError as exc:
        raise CodecError(f"envelope: {exc}") from None
    if spec.kind != kind:
        raise CodecError(f"envelope: {spec.name} is a {spec.kind} message, header says {kind}")
    end_of_body = HEADER_BYTES + body_len
    if end_of_body + 1 > len(view):
        raise CodecError(
            f"envelope: truncated {spec.name}, body_len {body_len} and tag_len need "
            f"{end_of_body + 1} bytes, got {len(view)}"
        )
    return spec, seq, end_of_body


def authenticated_bytes(data: bytes) -> bytes:
    """Get the part of an encoded envelope that its tag covers (everything before tag_len)."""
    view = _byte_view(data, "envelope")
    _, _, end_of_body = _parse_header(view)
    return bytes(view[:end_of_body])


def decode_envelope(data: bytes) -> Envelope:
    """Decode an envelope; any malformed input raises CodecError."""
    view = _byte_view(data, "envelope")
    spec, seq, end_of_body = _parse_header(view)
    tag_len = view[end_of_body]
    if len(view) != end_of_body + 1 + tag_len:
        raise CodecError(
            f"envelope: {spec.name} tag_len {tag_len} needs {end_of_body + 1 + tag_len} bytes "
            f"in total, got {len(view)}"
        )
    fields = decode_body(spec, view[HEADER_BYTES:end_of_body])
    return Envelope(spec=spec, seq=seq, fields=fields, tag=bytes(view[end_of_body + 1 :]))
