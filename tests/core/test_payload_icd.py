"""The payload link's interface control data: pinned values, known bytes, round trips, framing."""

from __future__ import annotations

import binascii
import math
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacepackets.ccsds.time import CdsShortTimestamp
from spacepackets.ecss.tc import PusTc

from satqkd_core import payload_icd as icd
from satqkd_core.errors import InputError

SETTINGS = settings(max_examples=100, deadline=None)
T0 = 1_700_000_000.0


def _packet(body: bytes, apid: int = icd.PAYLOAD_APID) -> bytes:
    """A CCSDS TM packet written out field by field (CCSDS 133.0-B-2 4.1.3), CRC appended."""
    head = struct.pack(">HHH", 0x0800 | apid, 0xC000, len(body) + 2 - 1)
    return head + body + struct.pack(">H", binascii.crc_hqx(head + body, 0xFFFF))


# --- the declarations, pinned: a change here changes the wire and must be deliberate --------------


def test_the_declared_values_are_the_documented_ones() -> None:
    assert icd.PAYLOAD_APID == 0x065 and icd.ASM == b"\x1a\xcf\xfc\x1d"
    assert (icd.MAX_PACKET_BYTES, icd.PRIMARY_HEADER_BYTES, icd.TIMESTAMP_BYTES) == (1024, 6, 7)
    assert icd.HOUSEKEEPING_SID == 1
    assert {f.name: f.value for f in icd.FunctionId} == {
        "SOURCE_CONFIGURE": 0x0001,
        "SOURCE_ENABLE": 0x0002,
        "SOURCE_DISABLE": 0x0003,
        "LOAD_PASS_PLAN": 0x0010,
        "CLEAR_PASS_PLAN": 0x0011,
        "RESET_COUNTERS": 0x0020,
        "SOURCE_ENABLE_SIGNED": 0x0004,
    }
    assert set(icd.FUNCTION_ARGUMENTS) == set(icd.FunctionId)
    assert {c.value: c.name for c in icd.FailureCode} == {
        1: "CRC_ERROR",
        2: "UNKNOWN_SERVICE",
        3: "BAD_APP_DATA",
        4: "UNKNOWN_FUNCTION",
        10: "INTERLOCK",
        11: "INVALID_PARAMETER",
        12: "UNKNOWN_SID",
    }
    assert [(i, name, severity) for i, (name, severity, _, _) in icd.EVENTS.items()] == [
        (0x0101, "SOURCE_ENABLED", 1),
        (0x0102, "SOURCE_DISABLED", 1),
        (0x0103, "PASS_PLAN_LOADED", 1),
        (0x0104, "PASS_PLAN_CLEARED", 1),
        (0x0105, "COUNTERS_RESET", 1),
        (0x0201, "TC_REJECTED", 2),
        (0x0401, "LINK_LOST_SOURCE_SAFED", 4),
        (0x0402, "LASER_INTERLOCK_TRIPPED", 4),
        (0x0202, "UNAUTHENTICATED_EMISSION_REQUEST", 2),
    ]
    assert all(1 <= severity <= 4 for _, severity, _, _ in icd.EVENTS.values())
    assert {icd.EVENT_IDS[name] for name, *_ in icd.EVENTS.values()} == set(icd.EVENTS)
    for _, _, layout, fields in icd.EVENTS.values():
        assert len(struct.unpack(layout, bytes(struct.calcsize(layout)))) == len(fields)
    assert icd.HOUSEKEEPING_REPORT.format == ">HBBdIIIIIHfdIHBBf"
    assert icd.HOUSEKEEPING_REPORT.size == 58
    assert [int(r) for r in icd.DisableReason] == [0, 1, 2, 3, 4, 5]


def test_the_declarations_agree_with_spacepackets() -> None:
    stamp = CdsShortTimestamp.from_unix_days(math.floor(T0 / 86400), 1234).pack()
    assert len(stamp) == icd.TIMESTAMP_BYTES
    tc = PusTc(
        service=17,
        message_subtype=1,
        apid=icd.PAYLOAD_APID,
        ack_flags=icd.ACK_ACCEPTANCE | icd.ACK_COMPLETION,
    ).pack()
    assert tc[6] == 0x20 | 0b1001  # PUS-C version 2, acceptance and completion acknowledged
    assert icd.crc16_ok(tc)


# --- framing and CRC ------------------------------------------------------------------------------


def test_crc16_is_ccitt_false_and_checks_a_whole_packet() -> None:
    assert icd.crc16_ccitt(b"123456789") == 0x29B1  # the catalogued check value of CRC-16/CCITT
    assert icd.crc16_ccitt(b"") == 0xFFFF
    packet = _packet(b"\x20\x11\x02")
    assert icd.crc16_ok(packet) and icd.crc16_ok(bytearray(packet))
    corrupt = bytearray(packet)
    corrupt[7] ^= 0x01
    assert not icd.crc16_ok(corrupt)
    with pytest.raises(InputError, match="data must be bytes, got str"):
        icd.crc16_ccitt("123")  # type: ignore[arg-type]


def test_frame_packet_prefixes_the_sync_marker() -> None:
    assert icd.frame_packet(b"\x01\x02") == b"\x1a\xcf\xfc\x1d\x01\x02"
    with pytest.raises(InputError, match="packet must be bytes"):
        icd.frame_packet([1, 2])  # type: ignore[arg-type]


def test_extract_frames_on_edge_buffers() -> None:
    empty = bytearray()
    assert icd.extract_frames(empty, check_crc=True) == icd.FrameScan([], 0, [])
    short = bytearray(b"\x00")
    assert icd.extract_frames(short, check_crc=True) == icd.FrameScan([], 0, [])
    assert short == b"\x00"  # up to three bytes may be the start of a marker
    noise = bytearray(b"\x00\x01\x02\x03\x1a\xcf")
    assert icd.extract_frames(noise, check_crc=True).skipped_bytes == 3
    assert noise == b"\x03\x1a\xcf"
    header_only = bytearray(icd.ASM + b"\x08\x65\xc0")
    assert icd.extract_frames(header_only, check_crc=True) == icd.FrameScan([], 0, [])
    assert len(header_only) == 7  # waits for the rest of the primary header
    with pytest.raises(InputError, match="buffer must be a bytearray"):
        icd.extract_frames(b"\x00", check_crc=True)  # type: ignore[arg-type]


def test_extract_frames_rejects_long_lengths_and_bad_crcs_and_resynchronises() -> None:
    good = _packet(b"\x20\x11\x02")
    corrupt = bytearray(_packet(b"\x20\x01\x07\x00\x00"))
    corrupt[-3] ^= 0x40
    long_length = icd.ASM + struct.pack(">HHH", 0x0865, 0xC000, 5000)
    line = bytes(long_length) + icd.ASM + bytes(corrupt) + icd.ASM + good
    buffer = bytearray(line)
    scan = icd.extract_frames(buffer, check_crc=True)
    assert scan.packets == [good]
    assert scan.rejected == ["length 5007 > 1024", "CRC-16 mismatch"]
    assert scan.skipped_bytes == len(line) - len(icd.ASM) - len(good) and not buffer
    # without the CRC check (the firmware checks later, to answer with a failure report)
    buffer = bytearray(line)
    scan = icd.extract_frames(buffer, check_crc=False)
    assert scan.packets == [bytes(corrupt), good]
    assert scan.rejected == ["length 5007 > 1024"]


def test_a_packet_hidden_inside_a_rejected_one_is_found() -> None:
    inner = _packet(b"\x20\x11\x02")
    # a false marker whose length field swallows the real packet that follows it
    false_start = icd.ASM + struct.pack(">HHH", 0x0865, 0xC000, 40)
    buffer = bytearray(false_start + icd.ASM + inner + bytes(40))
    scan = icd.extract_frames(buffer, check_crc=True)
    assert scan.packets == [inner] and scan.rejected == ["CRC-16 mismatch"]
    # a stray marker right before the real one: its "header" is the real marker
    buffer = bytearray(icd.ASM + icd.ASM + inner)
    scan = icd.extract_frames(buffer, check_crc=True)
    assert scan.packets == [inner] and scan.rejected == ["length 2156 > 1024"]
    assert scan.skipped_bytes == len(icd.ASM) and not buffer


@st.composite
def _line(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], list[int]]:
    """Packets with noise (free of the marker's first byte) between them, cut into reads."""
    count = draw(st.integers(0, 6))
    packets = [
        _packet(draw(st.binary(min_size=1, max_size=80)), draw(st.integers(0, 0x7FE)))
        for _ in range(count)
    ]
    noise_bytes = st.binary(max_size=13).map(lambda b: b.replace(b"\x1a", b"\x00"))
    noises = [draw(noise_bytes) for _ in range(count + 1)]
    cuts = draw(st.lists(st.integers(1, 70), max_size=40))
    return packets, noises, cuts


@SETTINGS
@given(_line(), st.booleans())
def test_extract_frames_finds_every_packet_whatever_the_reads(
    line: tuple[list[bytes], list[bytes], list[int]], check_crc: bool
) -> None:
    packets, noises, cuts = line
    stream = noises[0] + b"".join(
        icd.frame_packet(p) + noise for p, noise in zip(packets, noises[1:], strict=True)
    )
    buffer = bytearray()
    found: list[bytes] = []
    skipped = 0
    position = 0
    for size in [*cuts, len(stream)]:  # the last read delivers whatever is left
        buffer += stream[position : position + size]
        position += size
        scan = icd.extract_frames(buffer, check_crc=check_crc)
        assert scan.rejected == []
        found += scan.packets
        skipped += scan.skipped_bytes
    assert found == packets
    assert skipped + len(buffer) == sum(map(len, noises)) and len(buffer) <= len(icd.ASM) - 1


# --- telecommand application data -----------------------------------------------------------------


def test_telecommand_app_data_has_the_documented_bytes() -> None:
    assert icd.pack_sid_list([1]) == b"\x01\x00\x01"
    assert icd.pack_housekeeping_intervals([(1, 2500)]) == struct.pack(">BHI", 1, 1, 2500)
    plan = icd.pack_function(icd.FunctionId.LOAD_PASS_PLAN, 9, 3, T0 + 60, T0 + 360, 100e6)
    assert plan == struct.pack(">HIHddd", 0x0010, 9, 3, T0 + 60, T0 + 360, 100e6)
    assert icd.pack_function(icd.FunctionId.SOURCE_ENABLE, T0) == struct.pack(">Hd", 2, T0)
    assert icd.pack_function(icd.FunctionId.RESET_COUNTERS) == b"\x00\x20"


@SETTINGS
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=255))
def test_sid_lists_round_trip(sids: list[int]) -> None:
    assert icd.unpack_sid_list(icd.pack_sid_list(sids)) == sids


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)), min_size=1))
def test_housekeeping_intervals_round_trip(pairs: list[tuple[int, int]]) -> None:
    assert icd.unpack_housekeeping_intervals(icd.pack_housekeeping_intervals(pairs)) == pairs


@SETTINGS
@given(st.sampled_from(list(icd.FunctionId)), st.data())
def test_function_arguments_round_trip_through_their_layout(
    function: icd.FunctionId, data: st.DataObject
) -> None:
    layout = struct.Struct(icd.FUNCTION_ARGUMENTS[function])
    by_code = {
        "d": lambda _: st.floats(allow_nan=False),
        "I": lambda _: st.integers(0, 2**32 - 1),
        "H": lambda _: st.integers(0, 0xFFFF),
        "s": lambda n: st.binary(min_size=n, max_size=n),  # a tag: "16s" is one argument
    }
    codes = re.findall(r"(\d*)([a-zA-Z])", layout.format[1:])
    arguments = tuple(data.draw(by_code[code](int(n or 1))) for n, code in codes)
    packed = icd.pack_function(function, *arguments)
    assert struct.unpack_from(">H", packed)[0] == function
    assert layout.unpack(packed[2:]) == arguments


def test_bad_telecommand_arguments_are_named() -> None:
    with pytest.raises(InputError, match=r"sids must hold 1\.\.255 SIDs, got 0"):
        icd.pack_sid_list([])
    with pytest.raises(InputError, match="sid must be a u16, got 70000"):
        icd.pack_sid_list([70000])
    with pytest.raises(InputError, match=r"data must be N u8 then N SIDs u16, got 2 bytes"):
        icd.unpack_sid_list(b"\x01\x00")
    with pytest.raises(InputError, match="data must be N u8 then N SIDs u16, got 0 bytes"):
        icd.unpack_sid_list(b"")
    with pytest.raises(InputError, match="interval_ms must be a whole number"):
        icd.pack_housekeeping_intervals([(1, 2.5)])  # type: ignore[list-item]
    with pytest.raises(InputError, match="interval_ms must be a u32"):
        icd.pack_housekeeping_intervals([(1, -1)])
    with pytest.raises(InputError, match=r"N \(SID u16, ms u32\), got 6 bytes"):
        icd.unpack_housekeeping_intervals(b"\x02" + bytes(5))
    with pytest.raises(InputError, match="function must be a FunctionId, got 1"):
        icd.pack_function(1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="arguments of LOAD_PASS_PLAN must fit '>IHddd'"):
        icd.pack_function(icd.FunctionId.LOAD_PASS_PLAN, 1, 2)
    with pytest.raises(InputError, match="arguments of CLEAR_PASS_PLAN must fit"):
        icd.pack_function(icd.FunctionId.CLEAR_PASS_PLAN, -1)


# --- telemetry source data ------------------------------------------------------------------------


def test_verification_reports_have_the_documented_bytes_and_round_trip() -> None:
    request_id = struct.pack(">HH", 0x1800 | icd.PAYLOAD_APID, 0xC000 | 17)
    assert icd.pack_verification(request_id) == request_id
    failure = icd.pack_verification(request_id, icd.FailureCode.INTERLOCK, "no pass plan")
    assert failure == request_id + b"\x0ano pass plan"
    assert icd.unpack_verification(failure) == icd.VerificationReport(
        icd.PAYLOAD_APID, 17, 10, "no pass plan"
    )
    assert icd.unpack_verification(request_id) == (icd.PAYLOAD_APID, 17, 0, "")
    long_reason = icd.pack_verification(request_id, 3, "é" * 150)  # 300 bytes of UTF-8
    assert len(long_reason) == 4 + 1 + icd.MAX_FAILURE_REASON_BYTES
    assert icd.unpack_verification(long_reason).reason == "é" * 100
    with pytest.raises(InputError, match="request_id must be the TC's first 4 header bytes"):
        icd.pack_verification(b"\x00\x01\x02")
    with pytest.raises(InputError, match="code must be a u8, got 256"):
        icd.pack_verification(request_id, 256, "x")
    with pytest.raises(InputError, match="data must hold a 4-byte request id, got 3 bytes"):
        icd.unpack_verification(b"\x00\x01\x02")


def test_failure_codes_are_named_and_undeclared_ones_numbered() -> None:
    assert icd.failure_code_name(2) == "UNKNOWN_SERVICE"
    assert icd.failure_code_name(99) == "code 99"


def _housekeeping_values() -> st.SearchStrategy[dict[str, float]]:
    by_code = {
        "B": st.integers(0, 0xFF),
        "H": st.integers(0, 0xFFFF),
        "I": st.integers(0, 2**32 - 1),
        "d": st.floats(allow_nan=False),
        # binary32 values, so the round trip through ">f" is exact
        "f": st.floats(allow_nan=False, width=32),
    }
    return st.fixed_dictionaries({name: by_code[code] for name, code, _ in icd.HOUSEKEEPING_FIELDS})


def test_housekeeping_has_the_documented_bytes() -> None:
    values = (1, 0, 100e6, 42, 7, 1, 2, 3, 4, 0.5, 1234.5, 0, 0x21, 1, 0, 0.25)
    names = [name for name, _, _ in icd.HOUSEKEEPING_FIELDS]
    expected = struct.pack(">HBBdIIIIIHfdIHBBf", 1, *values)
    assert icd.pack_housekeeping(dict(zip(names, values, strict=True))) == expected
    assert icd.unpack_housekeeping(expected) == (1, dict(zip(names, values, strict=True)))


@SETTINGS
@given(_housekeeping_values(), st.integers(0, 0xFFFF))
def test_housekeeping_round_trips(values: dict[str, float], sid: int) -> None:
    assert icd.unpack_housekeeping(icd.pack_housekeeping(values, sid)) == (sid, values)


def test_bad_housekeeping_is_named() -> None:
    with pytest.raises(InputError, match=r"values lack housekeeping fields \['tm_dropped'\]"):
        values = {name: 0 for name, _, _ in icd.HOUSEKEEPING_FIELDS if name != "tm_dropped"}
        icd.pack_housekeeping(values)
    too_big = {name: 0 for name, _, _ in icd.HOUSEKEEPING_FIELDS} | {"watchdog_trips": 70000}
    with pytest.raises(InputError, match="values do not fit HOUSEKEEPING_FIELDS"):
        icd.pack_housekeeping(too_big)
    with pytest.raises(InputError, match="data must be 58 bytes of housekeeping, got 49"):
        icd.unpack_housekeeping(bytes(49))


def test_events_have_the_documented_bytes() -> None:
    assert icd.pack_event("LINK_LOST_SOURCE_SAFED", 10.25) == (4, struct.pack(">Hf", 0x0401, 10.25))
    assert icd.pack_event("COUNTERS_RESET") == (1, b"\x01\x05")
    assert icd.pack_event("TC_REJECTED", 9, 9, 2) == (2, b"\x02\x01\x09\x09\x02")


@st.composite
def _event(draw: st.DrawFn) -> tuple[str, tuple[float, ...]]:
    name, _, layout, _ = icd.EVENTS[draw(st.sampled_from(list(icd.EVENTS)))]
    by_code = {
        "B": st.integers(0, 0xFF),
        "H": st.integers(0, 0xFFFF),
        "I": st.integers(0, 2**32 - 1),
        "d": st.floats(allow_nan=False),
        "f": st.floats(allow_nan=False, width=32),
    }
    return name, tuple(draw(by_code[code]) for code in layout[1:])


@SETTINGS
@given(_event())
def test_events_round_trip(event: tuple[str, tuple[float, ...]]) -> None:
    name, aux = event
    severity, data = icd.pack_event(name, *aux)
    report = icd.unpack_event(severity, data)
    fields = icd.EVENTS[icd.EVENT_IDS[name]][3]
    assert (report.event_id, report.name, report.severity) == (icd.EVENT_IDS[name], name, severity)
    assert report.aux == dict(zip(fields, aux, strict=True))


def test_bad_events_are_named() -> None:
    with pytest.raises(InputError, match="name must be a declared event, got 'NOPE'"):
        icd.pack_event("NOPE")
    with pytest.raises(InputError, match="aux of SOURCE_DISABLED must fit '>B'"):
        icd.pack_event("SOURCE_DISABLED", 300)
    with pytest.raises(InputError, match="event id 0x7777 is not declared"):
        icd.unpack_event(1, b"\x77\x77")
    with pytest.raises(InputError, match="SOURCE_ENABLED reported with severity 2, declared 1"):
        icd.unpack_event(2, struct.pack(">Hd", 0x0101, T0))
    with pytest.raises(InputError, match="SOURCE_ENABLED carries 8 aux bytes, got 4"):
        icd.unpack_event(1, struct.pack(">Hf", 0x0101, 1.0))
    with pytest.raises(InputError, match="data must start with an event id u16, got 1 bytes"):
        icd.unpack_event(1, b"\x01")
