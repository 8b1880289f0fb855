"""Interface control data of the payload controller's spacecraft link: ECSS PUS over CCSDS.

Declared once, here, for both ends of the line: the ground driver
(`drivers.payload_link.PayloadLink`) and the controller firmware emulation
(`firmware_shims.payload_controller.PayloadController`). Packets are CCSDS space packets
(CCSDS 133.0-B-2) carrying ECSS-E-ST-70-41C (PUS-C) services, each preceded on the line by the
CCSDS attached sync marker 0x1ACFFC1D (CCSDS 131.0-B) so a receiver finds packet boundaries
again after line noise, and each ending with the PUS CRC-16/CCITT (init 0xFFFF). Both ends build
and parse the packet headers with `spacepackets`; this module holds what travels inside them
(application data, source data) and the framing on the line, with no dependency beyond stdlib.

| TC | app data | effect |
|---|---|---|
| (17,1) are-you-alive / NO-OP | - | TM (17,2) |
| (3,27) one-shot housekeeping | N u8, N x SID u16 | TM (3,25) per SID |
| (3,5) / (3,6) enable / disable periodic housekeeping | N u8, N x SID u16 | |
| (3,31) modify collection interval | N u8, N x (SID u16, interval_ms u32) | |
| (8,1) perform function | function id u16, arguments | see FunctionId, FUNCTION_ARGUMENTS |

TM: (1,1)/(1,2) acceptance success/failure, (1,7)/(1,8) completion success/failure (request id:
the TC's packet id u16 and sequence control u16; a failure notice adds code u8 then a UTF-8
reason), (3,25) housekeeping report (SID u16, then HOUSEKEEPING_FIELDS), (5,1..4) event reports
by severity (event id u16, then EVENTS' aux data), (17,2) alive. Every TM carries a CDS short
time stamp (CCSDS 301.0-B-4 3.3: P-field, u16 days since 1958, u32 ms of day). All big-endian.
"""

from __future__ import annotations

import binascii
import enum
import struct
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from satqkd_core.errors import InputError

__all__ = [
    "ACK_ACCEPTANCE",
    "ACK_COMPLETION",
    "ASM",
    "EVENTS",
    "EVENT_IDS",
    "FUNCTION_ARGUMENTS",
    "HOUSEKEEPING_FIELDS",
    "HOUSEKEEPING_REPORT",
    "HOUSEKEEPING_SID",
    "MAX_FAILURE_REASON_BYTES",
    "MAX_PACKET_BYTES",
    "PAYLOAD_APID",
    "PRIMARY_HEADER_BYTES",
    "TIMESTAMP_BYTES",
    "DisableReason",
    "EventReport",
    "FailureCode",
    "FrameScan",
    "FunctionId",
    "InterlockReason",
    "VerificationReport",
    "crc16_ccitt",
    "crc16_ok",
    "extract_frames",
    "failure_code_name",
    "frame_packet",
    "pack_event",
    "pack_function",
    "pack_housekeeping",
    "pack_housekeeping_intervals",
    "pack_sid_list",
    "pack_verification",
    "unpack_event",
    "unpack_housekeeping",
    "unpack_housekeeping_intervals",
    "unpack_sid_list",
    "unpack_verification",
]

PAYLOAD_APID = 0x065
ASM = bytes.fromhex("1ACFFC1D")  # CCSDS 131.0-B attached sync marker
MAX_PACKET_BYTES = 1024  # the controller's packet buffer: a longer length field is corrupt
PRIMARY_HEADER_BYTES = 6  # CCSDS 133.0-B-2 4.1.3
TIMESTAMP_BYTES = 7  # CDS short with its P-field
HOUSEKEEPING_SID = 1
MAX_FAILURE_REASON_BYTES = 200
# TC secondary header acknowledgement flags (ECSS-E-ST-70-41C 7.4.3.1): which success reports
# the TC asks for; failure reports are always sent.
ACK_ACCEPTANCE = 0b1000
ACK_COMPLETION = 0b0001


class FunctionId(enum.IntEnum):
    """Service 8 functions: (8,1) app data is the id (u16) then the arguments shown."""

    SOURCE_CONFIGURE = 0x0001  # f64 repetition_rate_hz
    SOURCE_ENABLE = 0x0002  # f64 first_pulse_unix_s
    SOURCE_DISABLE = 0x0003  # -
    LOAD_PASS_PLAN = 0x0010  # u32 plan_id, u16 station_id, f64 qkd_start, f64 qkd_stop, f64 rate
    CLEAR_PASS_PLAN = 0x0011  # u32 plan_id
    RESET_COUNTERS = 0x0020  # -
    # f64 first_pulse_unix_s, u32 counter, 16 B AES-CMAC tag (emission_request_tag); a
    # controller holding an emission key refuses any other request to emit (laser interlock)
    SOURCE_ENABLE_SIGNED = 0x0004


# Argument layout (struct format, after the u16 function id) of each function.
FUNCTION_ARGUMENTS: dict[FunctionId, str] = {
    FunctionId.SOURCE_CONFIGURE: ">d",
    FunctionId.SOURCE_ENABLE: ">d",
    FunctionId.SOURCE_DISABLE: ">",
    FunctionId.LOAD_PASS_PLAN: ">IHddd",
    FunctionId.CLEAR_PASS_PLAN: ">I",
    FunctionId.RESET_COUNTERS: ">",
    FunctionId.SOURCE_ENABLE_SIGNED: ">dI16s",
}


class FailureCode(enum.IntEnum):
    """Failure notice codes of (1,2) acceptance and (1,8) completion failures."""

    CRC_ERROR = 1
    UNKNOWN_SERVICE = 2
    BAD_APP_DATA = 3
    UNKNOWN_FUNCTION = 4
    INTERLOCK = 10
    INVALID_PARAMETER = 11
    UNKNOWN_SID = 12


class DisableReason(enum.IntEnum):
    """Why the source last went to its safe state (housekeeping and SOURCE_DISABLED aux)."""

    NONE = 0
    COMMANDED = 1
    PLAN_ENDED = 2
    LINK_WATCHDOG = 3
    PLAN_CLEARED = 4
    LASER_INTERLOCK = 5  # the interlock's reasons: housekeeping interlock_reasons


class InterlockReason(enum.IntFlag):
    """Why the payload's laser interlock forbids emission (housekeeping interlock_reasons)."""

    NONE = 0
    TRACKING_LOST = 0x01  # the uplink beacon is not tracked
    BELOW_ELEVATION_MASK = 0x02  # the beam would leave the station's allowed elevations
    KEEP_OUT_CONE = 0x04  # the beam would cross a configured keep-out cone (aircraft, ...)
    LINK_LOST = 0x08  # no valid telecommand for the link timeout
    UNAUTHENTICATED_REQUEST = 0x10  # a request to emit without a valid authentication tag
    NO_GEOMETRY = 0x20  # where the beam points is unknown


# Event id -> (name, PUS severity subtype 1 info .. 4 high, aux struct format, aux field names)
EVENTS: dict[int, tuple[str, int, str, tuple[str, ...]]] = {
    0x0101: ("SOURCE_ENABLED", 1, ">d", ("first_pulse_unix_s",)),
    0x0102: ("SOURCE_DISABLED", 1, ">B", ("reason",)),
    0x0103: ("PASS_PLAN_LOADED", 1, ">I", ("plan_id",)),
    0x0104: ("PASS_PLAN_CLEARED", 1, ">I", ("plan_id",)),
    0x0105: ("COUNTERS_RESET", 1, ">", ()),
    0x0201: ("TC_REJECTED", 2, ">BBB", ("service", "subtype", "code")),
    0x0401: ("LINK_LOST_SOURCE_SAFED", 4, ">f", ("silence_s",)),
    0x0402: ("LASER_INTERLOCK_TRIPPED", 4, ">H", ("reasons",)),
    0x0202: ("UNAUTHENTICATED_EMISSION_REQUEST", 2, ">B", ("function",)),
}
EVENT_IDS: dict[str, int] = {name: event_id for event_id, (name, *_rest) in EVENTS.items()}

# SID 1 housekeeping: (name, struct code, unit), packed big-endian in this order after the SID.
HOUSEKEEPING_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("source_enabled", "B", ""),
    ("disable_reason", "B", ""),
    ("repetition_rate_hz", "d", "Hz"),
    ("plan_id", "I", ""),
    ("tc_accepted", "I", ""),
    ("tc_rejected", "I", ""),
    ("tc_failed", "I", ""),
    ("bad_packets", "I", ""),
    ("watchdog_trips", "H", ""),
    ("link_silence_s", "f", "s"),
    ("uptime_s", "d", "s"),
    ("tm_dropped", "I", ""),
    # the payload's pointing and laser interlock (decision 0020)
    ("interlock_reasons", "H", ""),
    ("beacon_enabled", "B", ""),
    ("tracking_locked", "B", ""),
    ("fine_residual_rms_urad", "f", "urad"),
)
HOUSEKEEPING_REPORT = struct.Struct(">H" + "".join(code for _, code, _ in HOUSEKEEPING_FIELDS))


class FrameScan(NamedTuple):
    """What one pass over a receive buffer found: whole packets, bytes skipped, rejections."""

    packets: list[bytes]
    skipped_bytes: int
    rejected: list[str]


class EventReport(NamedTuple):
    """A decoded (5,x) event report's source data."""

    event_id: int
    name: str
    severity: int
    aux: dict[str, float]


class VerificationReport(NamedTuple):
    """A decoded (1,x) report: the TC it answers and, for failures, the code and reason."""

    tc_apid: int
    tc_sequence: int
    code: int
    reason: str


# --- framing on the line -------------------------------------------------------------------------


def crc16_ccitt(data: bytes | bytearray) -> int:
    """Get the PUS packet error control CRC-16/CCITT (poly 0x1021, init 0xFFFF) of `data`."""
    if not isinstance(data, (bytes, bytearray)):
        raise InputError(f"data must be bytes, got {type(data).__name__}")
    return binascii.crc_hqx(data, 0xFFFF)


def crc16_ok(packet: bytes | bytearray) -> bool:
    """Check a packet ending in its CRC-16: the CRC over packet and CRC together is zero."""
    return crc16_ccitt(packet) == 0


def frame_packet(packet: bytes) -> bytes:
    """Get the bytes that go on the line for one packet: the sync marker, then the packet."""
    if not isinstance(packet, (bytes, bytearray)):
        raise InputError(f"packet must be bytes, got {type(packet).__name__}")
    return ASM + bytes(packet)


def extract_frames(buffer: bytearray, *, check_crc: bool) -> FrameScan:
    """Cut whole sync-marked packets out of `buffer` (consumed in place); skip what is not one.

    A length beyond MAX_PACKET_BYTES, or with `check_crc` a CRC that does not check, rejects the
    candidate; the bytes of a packet still arriving, or of a marker that may straddle the next
    read, stay in the buffer.
    """
    if not isinstance(buffer, bytearray):
        raise InputError(f"buffer must be a bytearray (consumed in place), got {type(buffer)}")
    packets: list[bytes] = []
    rejected: list[str] = []
    skipped = 0
    marker = len(ASM)
    while True:
        start = buffer.find(ASM)
        if start < 0:
            keep = marker - 1  # a marker may straddle the next read
            if len(buffer) > keep:
                skipped += len(buffer) - keep
                del buffer[: len(buffer) - keep]
            return FrameScan(packets, skipped, rejected)
        if start:
            skipped += start
            del buffer[:start]
        if len(buffer) < marker + PRIMARY_HEADER_BYTES:
            return FrameScan(packets, skipped, rejected)
        # the packet data length field holds the octets after the primary header minus one
        data_length = struct.unpack_from(">H", buffer, marker + 4)[0]
        length = PRIMARY_HEADER_BYTES + data_length + 1
        if length > MAX_PACKET_BYTES:
            rejected.append(f"length {length} > {MAX_PACKET_BYTES}")
        elif len(buffer) < marker + length:
            return FrameScan(packets, skipped, rejected)
        elif check_crc and not crc16_ok(buffer[marker : marker + length]):
            rejected.append("CRC-16 mismatch")
        else:
            packets.append(bytes(buffer[marker : marker + length]))
            del buffer[: marker + length]
            continue
        # drop only the marker's first byte: the real next packet may start inside this one
        skipped += 1
        del buffer[:1]


# --- telecommand application data ----------------------------------------------------------------


def _u16(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise InputError(f"{name} must be a u16, got {value!r}")
    return value


def pack_sid_list(sids: Sequence[int]) -> bytes:
    """Get (3,5)/(3,6)/(3,27) app data: N u8, then N SIDs u16."""
    if not 1 <= len(sids) <= 0xFF:
        raise InputError(f"sids must hold 1..255 SIDs, got {len(sids)}")
    checked = [_u16(sid, "sid") for sid in sids]
    return struct.pack(f">B{len(checked)}H", len(checked), *checked)


def unpack_sid_list(data: bytes) -> list[int]:
    """Get the SIDs of (3,5)/(3,6)/(3,27) app data."""
    if not data or len(data) != 1 + 2 * data[0]:
        raise InputError(f"data must be N u8 then N SIDs u16, got {len(data)} bytes")
    return list(struct.unpack_from(f">{data[0]}H", data, 1))


def pack_housekeeping_intervals(intervals_ms: Sequence[tuple[int, int]]) -> bytes:
    """Get (3,31) app data: N u8, then N (SID u16, collection interval_ms u32)."""
    if not 1 <= len(intervals_ms) <= 0xFF:
        raise InputError(f"intervals_ms must hold 1..255 pairs, got {len(intervals_ms)}")
    body = bytearray([len(intervals_ms)])
    for sid, interval_ms in intervals_ms:
        if isinstance(interval_ms, bool) or not isinstance(interval_ms, int):
            raise InputError(f"interval_ms must be a whole number, got {interval_ms!r}")
        if not 0 <= interval_ms <= 0xFFFFFFFF:
            raise InputError(f"interval_ms must be a u32, got {interval_ms!r}")
        body += struct.pack(">HI", _u16(sid, "sid"), interval_ms)
    return bytes(body)


def unpack_housekeeping_intervals(data: bytes) -> list[tuple[int, int]]:
    """Get the (SID, interval_ms) pairs of (3,31) app data."""
    if not data or len(data) != 1 + 6 * data[0]:
        raise InputError(f"data must be N u8 then N (SID u16, ms u32), got {len(data)} bytes")
    return [struct.unpack_from(">HI", data, 1 + 6 * i) for i in range(data[0])]


def pack_function(function: FunctionId, *arguments: float) -> bytes:
    """Get (8,1) app data: the function id u16, then its arguments in FUNCTION_ARGUMENTS' layout."""
    if not isinstance(function, FunctionId):
        raise InputError(f"function must be a FunctionId, got {function!r}")
    try:
        return struct.pack(">H", function) + struct.pack(FUNCTION_ARGUMENTS[function], *arguments)
    except struct.error as exc:
        layout = FUNCTION_ARGUMENTS[function]
        raise InputError(
            f"arguments of {function.name} must fit {layout!r}, got {arguments!r}: {exc}"
        ) from None


# --- telemetry source data -----------------------------------------------------------------------


def pack_verification(request_id: bytes, code: int | None = None, reason: str = "") -> bytes:
    """Get (1,x) source data: the TC's request id, and for a failure its code and reason."""
    if not isinstance(request_id, (bytes, bytearray)) or len(request_id) != 4:
        raise InputError(f"request_id must be the TC's first 4 header bytes, got {request_id!r}")
    if code is None:
        return bytes(request_id)
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 0xFF:
        raise InputError(f"code must be a u8, got {code!r}")
    # cut in bytes, not characters: the receiver decodes with replacement
    return bytes(request_id) + bytes([code]) + reason.encode("utf-8")[:MAX_FAILURE_REASON_BYTES]


def unpack_verification(data: bytes) -> VerificationReport:
    """Get the TC a (1,x) report answers and its failure code (0 if none) and reason."""
    if len(data) < 4:
        raise InputError(f"data must hold a 4-byte request id, got {len(data)} bytes")
    packet_id, sequence_control = struct.unpack_from(">HH", data)
    code = data[4] if len(data) > 4 else 0
    reason = bytes(data[5:]).decode("utf-8", errors="replace")
    return VerificationReport(packet_id & 0x7FF, sequence_control & 0x3FFF, code, reason)


def failure_code_name(code: int) -> str:
    """Get the declared name of a failure code, or 'code N' for one not declared."""
    try:
        return FailureCode(code).name
    except ValueError:
        return f"code {code}"


def pack_housekeeping(values: Mapping[str, float], sid: int = HOUSEKEEPING_SID) -> bytes:
    """Get (3,25) source data: the SID, then every HOUSEKEEPING_FIELDS value in its order."""
    missing = [name for name, _, _ in HOUSEKEEPING_FIELDS if name not in values]
    if missing:
        raise InputError(f"values lack housekeeping fields {missing}")
    ordered = [values[name] for name, _, _ in HOUSEKEEPING_FIELDS]
    try:
        return HOUSEKEEPING_REPORT.pack(_u16(sid, "sid"), *ordered)
    except struct.error as exc:
        raise InputError(f"values do not fit HOUSEKEEPING_FIELDS: {exc}") from None


def unpack_housekeeping(data: bytes) -> tuple[int, dict[str, float]]:
    """Get the SID and the named values of (3,25) source data."""
    if len(data) != HOUSEKEEPING_REPORT.size:
        raise InputError(
            f"data must be {HOUSEKEEPING_REPORT.size} bytes of housekeeping, got {len(data)}"
        )
    sid, *values = HOUSEKEEPING_REPORT.unpack(data)
    names = [name for name, _, _ in HOUSEKEEPING_FIELDS]
    return sid, dict(zip(names, values, strict=True))


def pack_event(name: str, *aux: float) -> tuple[int, bytes]:
    """Get an event's severity (its (5,x) subtype) and source data: event id u16, then aux."""
    event_id = EVENT_IDS.get(name)
    if event_id is None:
        raise InputError(f"name must be a declared event, got {name!r}")
    _, severity, layout, _ = EVENTS[event_id]
    try:
        return severity, struct.pack(">H", event_id) + struct.pack(layout, *aux)
    except struct.error as exc:
        raise InputError(f"aux of {name} must fit {layout!r}, got {aux!r}: {exc}") from None


def unpack_event(subtype: int, data: bytes) -> EventReport:
    """Get the event a (5,subtype) report carries, checked against its declaration."""
    if len(data) < 2:
        raise InputError(f"data must start with an event id u16, got {len(data)} bytes")
    (event_id,) = struct.unpack_from(">H", data)
    if event_id not in EVENTS:
        raise InputError(f"event id 0x{event_id:04X} is not declared")
    name, severity, layout, fields = EVENTS[event_id]
    if severity != subtype:
        raise InputError(f"event {name} reported with severity {subtype}, declared {severity}")
    if len(data) - 2 != struct.calcsize(layout):
        raise InputError(
            f"event {name} carries {struct.calcsize(layout)} aux bytes, got {len(data) - 2}"
        )
    aux = struct.unpack(layout, data[2:])
    return EventReport(event_id, name, severity, dict(zip(fields, aux, strict=True)))
