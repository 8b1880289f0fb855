"""Binary codec: round trips of every declared message, known bytes, validation, fuzzing."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from satqkd_core import codec
from satqkd_core.codec import (
    CodecError,
    Envelope,
    authenticated_bytes,
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
)
from satqkd_core.dictionary import (
    DICTIONARY,
    FIELD_TYPES,
    FieldSpec,
    MessageSpec,
    parse_field_type,
)
from satqkd_core.errors import InputError
from tests.conftest import examples

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# whole messages drawn field by field are slow examples: fewer in the default run (ci-deep: 100)
ROUND_TRIP_SETTINGS = settings(SETTINGS, max_examples=examples(100, 30))
INT_RANGES = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
NATIVE = {"u32": np.uint32, "u64": np.uint64, "i64": np.int64, "f64": np.float64}


# ---- strategies ---------------------------------------------------------------------------


def value_strategy(type_name: str) -> st.SearchStrategy[Any]:
    """Any valid value of a declared field type (arrays as numpy arrays or Python lists)."""
    element, length, is_array = parse_field_type(type_name)
    if not is_array:
        if element in INT_RANGES:
            return st.integers(*INT_RANGES[element])
        return {
            "f64": st.floats(allow_nan=True, allow_infinity=True),
            "bool": st.booleans(),
            "str": st.text(max_size=40),
            "bytes": st.binary(max_size=200),
        }[element]
    # Lengths 0..70 cover empty, one element, and counts that are not multiples of 8 or 64.
    shape = st.just(length) if length is not None else st.integers(0, 70)
    arrays = hnp.arrays(NATIVE[element], shape)
    return st.one_of(arrays, arrays.map(lambda a: a.tolist()))


def fields_strategy(spec: MessageSpec) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f.name: value_strategy(f.type) for f in spec.fields})


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[MessageSpec, int, dict[str, Any], bytes]:
    spec = draw(st.sampled_from(sorted(DICTIONARY.values(), key=lambda s: s.id)))
    seq = draw(st.integers(0, 2**32 - 1))
    tag = draw(st.binary(max_size=16))
    return spec, seq, draw(fields_strategy(spec)), tag


def assert_same_value(type_name: str, sent: Any, received: Any) -> None:
    element, _, is_array = parse_field_type(type_name)
    if is_array:
        assert isinstance(received, np.ndarray)
        assert received.dtype == NATIVE[element] and received.dtype.isnative
        expected = np.asarray(sent, dtype=NATIVE[element])
        # Compare bit patterns so NaN payloads and signed zeros count too.
        assert received.tobytes() == expected.tobytes()
    elif element == "f64":
        assert struct.pack(">d", received) == struct.pack(">d", float(sent))
    elif element == "bytes":
        assert received == bytes(sent) and type(received) is bytes
    else:
        assert received == sent and type(received) is type(sent)


# ---- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DICTIONARY))
@ROUND_TRIP_SETTINGS
@given(data=st.data())
def test_every_message_round_trips(name: str, data: st.DataObject) -> None:
    spec = DICTIONARY[name]
    fields = data.draw(fields_strategy(spec))
    seq = data.draw(st.integers(0, 2**32 - 1))
    tag = data.draw(st.binary(max_size=codec.MAX_TAG_BYTES))
    encoded = encode_envelope(spec, seq, fields, tag)
    envelope = decode_envelope(encoded)
    assert envelope.spec is spec and envelope.seq == seq and envelope.tag == tag
    assert set(envelope.fields) == set(fields)
    for field in spec.fields:
        assert_same_value(field.type, fields[field.name], envelope.fields[field.name])
    # Canonical: the decoded values encode to the very same bytes.
    assert encode_envelope(spec, seq, envelope.fields, envelope.tag) == encoded
    body = encode_body(spec, fields)
    assert authenticated_bytes(encoded) == encoded[: codec.HEADER_BYTES + len(body)]
    assert encoded[codec.HEADER_BYTES : codec.HEADER_BYTES + len(body)] == body
    assert decode_body(spec, body).keys() == envelope.fields.keys()


def test_known_bytes_of_a_tc_ack_envelope() -> None:
    spec = DICTIONARY["TC_ACK"]
    fields = {"command_id": 0x0010, "command_seq": 5, "accepted": True, "reason": "ok"}
    expected = bytes.fromhex(
        "5351"  # magic "SQ"
        "01"  # version
        "02"  # kind tm
        "0101"  # type_id TC_ACK
        "01020304"  # seq
        "0000000b"  # body_len 11
        "0010"  # command_id
        "00000005"  # command_seq
        "01"  # accepted
        "0002"
        + b"ok".hex()  # reason: u16 length + UTF-8
        + "02"  # tag_len
        "aabb"  # tag
    )
    assert encode_envelope(spec, 0x01020304, fields, b"\xaa\xbb") == expected
    assert authenticated_bytes(expected) == expected[:-3]
    assert decode_envelope(expected) == Envelope(spec, 0x01020304, fields, b"\xaa\xbb")


def test_known_bytes_of_array_fields() -> None:
    pe = DICTIONARY["PE_COUNTS"]
    body = encode_body(
        pe,
        {
            "plan_id": 1,
            "n_chunks": 2,
            "x_detections": [3, 4, 5],
            "z_detections": np.array([6, 7, 8], dtype=np.uint16),
            "z_errors": np.zeros(3, dtype=np.int64),
        },
    )
    words = [3, 4, 5, 6, 7, 8, 0, 0, 0]
    assert body == struct.pack(">II", 1, 2) + struct.pack(">9Q", *words)
    query = DICTIONARY["EC_QUERY"]
    body = encode_body(
        query,
        {
            "plan_id": 9,
            "round": 0,
            "permutation_seed": 2**64 - 1,
            "passes": 4,
            "qber_estimate": 0.03,
            "query": b"\x01\x02\x80\x01\x07",  # compact rows (satqkd_core.cascade_messages)
        },
    )
    assert body == struct.pack(">IIQId", 9, 0, 2**64 - 1, 4, 0.03) + struct.pack(
        ">I5B", 5, 1, 2, 0x80, 1, 7
    )


def test_empty_messages_have_empty_bodies() -> None:
    for name in ("NOOP", "RESET_COUNTERS", "SHUTDOWN"):
        encoded = encode_envelope(DICTIONARY[name], 0, {})
        assert len(encoded) == codec.HEADER_BYTES + 1
        assert decode_envelope(encoded).fields == {}


def test_pa_seed_of_200_kb_round_trips() -> None:
    rng = np.random.default_rng(20250101)
    seed = rng.integers(0, 256, size=200_000, dtype=np.uint8).tobytes()
    fields = {
        "plan_id": 3,
        "output_bits": 10**6,
        "seed": seed,
        "n_seed_bits": 1_600_000,
        "key_id": "k",
        "auth_refill_bits": 1024,
    }
    encoded = encode_envelope(DICTIONARY["PA_SEED"], 1, fields, b"t" * 8)
    assert decode_envelope(encoded).fields == fields


def test_numpy_scalars_and_buffers_are_accepted() -> None:
    spec = DICTIONARY["SIFT_RESULT"]
    fields = {
        "plan_id": np.uint32(1),
        "chunk": np.int64(2),
        "n_detections": np.uint8(3),
        "keep": bytearray(b"\xe0"),
        "n_kept": 3,
        "intensity": memoryview(np.array([0, 1, 2], dtype=np.uint8)),
        "z_bits": np.packbits(np.array([1, 0, 1], dtype=np.uint8)).tobytes(),
        "pulse_shift": np.int64(-1),
        "pulse_index_ambiguous": np.False_,
    }
    decoded = decode_envelope(encode_envelope(spec, 0, fields)).fields
    assert decoded["plan_id"] == 1 and type(decoded["plan_id"]) is int
    assert decoded["keep"] == b"\xe0" and decoded["intensity"] == b"\x00\x01\x02"
    flag = decode_envelope(encode_envelope(DICTIONARY["SOURCE_ENABLE"], 0, {"enable": np.True_}))
    assert flag.fields == {"enable": True}
    data = encode_envelope(DICTIONARY["NOOP"], 7, {})
    assert decode_envelope(bytearray(data)).seq == 7
    assert decode_envelope(memoryview(data)).seq == 7


# ---- encode validation --------------------------------------------------------------------


def valid_fields(spec: MessageSpec) -> dict[str, Any]:
    simple = {
        "u8": 1,
        "u16": 1,
        "u32": 1,
        "u64": 1,
        "i64": -1,
        "f64": 0.5,
        "bool": False,
        "str": "s",
        "bytes": b"b",
        "u64[3]": [1, 2, 3],
        "f64[3]": [0.1, 0.2, 0.3],
        "u32[]": np.arange(3, dtype=np.uint32),
        "u64[]": np.arange(3, dtype=np.uint64),
        "i64[]": np.arange(-1, 2, dtype=np.int64),
        "f64[]": np.linspace(0, 1, 3),
    }
    return {field.name: simple[field.type] for field in spec.fields}


@pytest.mark.parametrize(
    ("message", "field", "bad_value", "complaint"),
    [
        ("TC_ACK", "command_id", 2**16, r"u16 integer in \[0, 65535\]"),
        ("TC_ACK", "command_id", -1, "u16 integer"),
        ("TC_ACK", "command_seq", "5", "u32 integer"),
        ("TC_ACK", "command_seq", True, "u32 integer"),
        ("TC_ACK", "command_seq", 1.0, "u32 integer"),
        ("TC_ACK", "accepted", 1, "expected bool"),
        ("TC_ACK", "reason", b"bytes", "expected str"),
        ("TC_ACK", "reason", "x" * 65536, "exceeds 65535"),
        ("TC_ACK", "reason", "\ud800", "UTF-8"),
        ("HOUSEKEEPING", "key_bits_stored", 2**64, "u64 integer"),
        ("HOUSEKEEPING", "uptime_s", "1.0", "expected f64"),
        ("HOUSEKEEPING", "uptime_s", 10**400, "does not fit in f64"),
        ("HOUSEKEEPING", "uptime_s", None, "expected f64"),
        ("DETECTION_REPORT", "report", "text", "expected bytes"),
        ("DETECTION_REPORT", "report", np.zeros(3, dtype=np.uint8), "expected bytes"),
        ("PE_COUNTS", "x_detections", [1, 2], "expected 3 elements"),
        ("PE_COUNTS", "z_errors", [1, -2, 3], "element -2 outside u64"),
        ("PE_COUNTS", "z_detections", [1.0, 2.0, 3.0], "expected integers"),
        ("PE_COUNTS", "z_detections", 3, "as a numpy array"),
        ("PE_COUNTS", "z_detections", [2**64, -1, 0], "outside u64"),
        ("PE_COUNTS", "x_detections", (1, True, 3), "expected integers"),
        ("EC_QUERY", "query", np.zeros(3, dtype=np.int64), "expected bytes"),
        ("EC_QUERY", "permutation_seed", np.int64(-1), "u64 integer"),
        ("VERIFY", "hash_key", ["a"], "expected integers"),
        ("VERIFY_RESULT", "ok", "yes", "expected bool"),
    ],
)
def test_mistyped_field_names_message_and_field(
    message: str, field: str, bad_value: Any, complaint: str
) -> None:
    spec = DICTIONARY[message]
    fields = valid_fields(spec)
    encode_body(spec, fields)  # the baseline is valid
    fields[field] = bad_value
    with pytest.raises(CodecError, match=rf"^{message}\.{field}: .*{complaint}"):
        encode_body(spec, fields)


def test_missing_and_undeclared_fields_are_named() -> None:
    spec = DICTIONARY["ABORT_PASS"]
    with pytest.raises(CodecError, match=r"^ABORT_PASS: missing field\(s\) 'reason'"):
        encode_body(spec, {"plan_id": 1})
    with pytest.raises(CodecError, match=r"^ABORT_PASS: undeclared field\(s\) 'extra'"):
        encode_body(spec, {"plan_id": 1, "reason": "r", "extra": 2})
    with pytest.raises(CodecError, match="mapping"):
        encode_body(spec, [("plan_id", 1)])  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="spec"):
        encode_body("ABORT_PASS", {})  # type: ignore[arg-type]


def test_envelope_arguments_are_validated() -> None:
    spec = DICTIONARY["NOOP"]
    with pytest.raises(CodecError, match="seq"):
        encode_envelope(spec, 2**32, {})
    with pytest.raises(CodecError, match="seq"):
        encode_envelope(spec, -1, {})
    with pytest.raises(CodecError, match="tag of 256 bytes"):
        encode_envelope(spec, 0, {}, b"x" * 256)
    with pytest.raises(CodecError, match="tag must be bytes"):
        encode_envelope(spec, 0, {}, "tag")  # type: ignore[arg-type]


def test_codec_error_is_an_input_error() -> None:
    assert issubclass(CodecError, InputError) and issubclass(CodecError, ValueError)


# ---- decode validation --------------------------------------------------------------------

GOOD = encode_envelope(
    DICTIONARY["TC_ACK"],
    9,
    {"command_id": 1, "command_seq": 2, "accepted": False, "reason": "no"},
    b"tag",
)


def patched(data: bytes, offset: int, replacement: bytes) -> bytes:
    return data[:offset] + replacement + data[offset + len(replacement) :]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"", "header needs 14"),
        (GOOD[:13], "header needs 14"),
        (patched(GOOD, 0, b"XQ"), "bad magic"),
        (patched(GOOD, 2, b"\x02"), "unsupported version 2"),
        (patched(GOOD, 3, b"\x09"), "unknown kind code 9"),
        (patched(GOOD, 3, b"\x04"), "TC_ACK is a tm message, header says qkd"),
        (patched(GOOD, 4, b"\x7f\xff"), "no message is declared with id 32767"),
        (patched(GOOD, 10, b"\x00\x00\x00\x0c"), "TC_ACK tag_len 116 needs"),
        (patched(GOOD, 10, b"\x00\x00\x00\x0a"), "TC_ACK tag_len 111 needs"),
        (GOOD[:10] + b"\x00\x00\x00\x06" + GOOD[14:20] + b"\x00", "TC_ACK.accepted: truncated"),
        (GOOD[:10] + b"\x00\x00\x00\x08" + GOOD[14:22] + b"\x00", "TC_ACK.reason: truncated"),
        (patched(GOOD, 10, b"\x10\x00\x00\x00"), "truncated TC_ACK"),
        (GOOD + b"\x00", "tag_len 3 needs"),
        (GOOD[:-1], "tag_len 3 needs"),
        (patched(GOOD, 20, b"\x02"), "bool byte must be 0 or 1, got 2"),
        (patched(GOOD, 23, b"\xff"), "invalid UTF-8"),
        ("not bytes", "expected bytes"),
        (None, "expected bytes"),
    ],
)
def test_malformed_envelopes_are_codec_errors(data: Any, complaint: str) -> None:
    with pytest.raises(CodecError, match=complaint):
        decode_envelope(data)


def test_trailing_body_bytes_are_rejected() -> None:
    spec = DICTIONARY["VERIFY_RESULT"]
    body = encode_body(spec, {"plan_id": 1, "ok": True})
    with pytest.raises(CodecError, match="1 trailing bytes"):
        decode_body(spec, body + b"\x00")
    header = struct.pack(">2sBBHII", b"SQ", 1, 4, spec.id, 0, len(body) + 1)
    with pytest.raises(CodecError, match="trailing"):
        decode_envelope(header + body + b"\x00" + b"\x00")


def test_authenticated_bytes_rejects_what_it_cannot_delimit() -> None:
    assert authenticated_bytes(GOOD) == GOOD[:-4]
    with pytest.raises(CodecError):
        authenticated_bytes(GOOD[:10])
    with pytest.raises(CodecError):
        authenticated_bytes(patched(GOOD, 10, b"\x10\x00\x00\x00"))


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_codec_error(data: bytes) -> None:
    try:
        envelope = decode_envelope(data)
    except CodecError:
        return
    assert encode_envelope(envelope.spec, envelope.seq, envelope.fields, envelope.tag) == data


@st.composite
def plausible_envelopes(draw: st.DrawFn) -> bytes:
    """A valid header for a declared message, then random body bytes, tag_len and tag."""
    spec = draw(st.sampled_from(sorted(DICTIONARY.values(), key=lambda s: s.id)))
    body = draw(st.binary(max_size=120))
    tail = draw(st.binary(max_size=12))
    body_len = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
    kind = codec.KIND_CODES[spec.kind]
    return struct.pack(">2sBBHII", b"SQ", 1, kind, spec.id, 0, body_len) + body + tail


@SETTINGS
@given(data=plausible_envelopes())
def test_garbled_bodies_never_raise_anything_but_codec_error(data: bytes) -> None:
    try:
        envelope = decode_envelope(data)
        authenticated_bytes(data)
    except CodecError:
        return
    assert encode_envelope(envelope.spec, envelope.seq, envelope.fields, envelope.tag) == data


@SETTINGS
@given(message=envelopes(), data=st.data())
def test_truncated_or_extended_envelopes_are_codec_errors(message, data: st.DataObject) -> None:
    spec, seq, fields, tag = message
    encoded = encode_envelope(spec, seq, fields, tag)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CodecError):
        decode_envelope(encoded[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(CodecError):
        decode_envelope(encoded + extra)


@SETTINGS
@given(message=envelopes(), data=st.data())
def test_mutated_envelopes_decode_canonically_or_fail_cleanly(message, data: st.DataObject) -> None:
    spec, seq, fields, tag = message
    encoded = bytearray(encode_envelope(spec, seq, fields, tag))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    try:
        envelope = decode_envelope(bytes(encoded))
    except CodecError:
        return
    again = encode_envelope(envelope.spec, envelope.seq, envelope.fields, envelope.tag)
    assert again == bytes(encoded)


# Every declared field type, including array types no message uses yet.
ALL_TYPES = MessageSpec(
    name="ALL_TYPES",
    id=0x03FF,
    kind="qkd",
    fields=tuple(FieldSpec(f"f_{i}", type_name) for i, type_name in enumerate(FIELD_TYPES)),
    doc="test-only declaration",
    direction="any",
)


@ROUND_TRIP_SETTINGS
@given(data=st.data())
def test_every_field_type_round_trips_through_a_body(data: st.DataObject) -> None:
    fields = data.draw(fields_strategy(ALL_TYPES))
    body = encode_body(ALL_TYPES, fields)
    decoded = decode_body(ALL_TYPES, body)
    for field in ALL_TYPES.fields:
        assert_same_value(field.type, fields[field.name], decoded[field.name])
    assert encode_body(ALL_TYPES, decoded) == body
    for cut in sorted({0, len(body) // 2, len(body) - 1}):
        with pytest.raises(CodecError):
            decode_body(ALL_TYPES, body[:cut])


@pytest.mark.parametrize(
    ("type_name", "bad_value", "complaint"),
    [
        ("f64[3]", [0.0, "x", 1.0], "real numbers"),
        ("f64[3]", [0.0, 1.0], "expected 3 elements"),
        ("f64[]", [10**400], "does not fit in f64"),
        ("f64[]", np.array(["a"]), "expected real numbers"),
        ("u32[]", [2**32], "outside u32"),
        ("u32[]", np.array([-1], dtype=np.int8), "outside u32"),
        ("i64[]", np.zeros((2, 3), dtype=np.int64), r"1-D i64\[\]"),
        ("i64[]", np.array([2**63], dtype=np.uint64), "outside i64"),
        ("i64[]", np.array([True]), "expected integers"),
    ],
)
def test_array_types_are_validated(type_name: str, bad_value: Any, complaint: str) -> None:
    spec = MessageSpec("ONE", 0x03FE, "qkd", (FieldSpec("v", type_name),), "test", "any")
    with pytest.raises(CodecError, match=rf"^ONE\.v: .*{complaint}"):
        encode_body(spec, {"v": bad_value})
