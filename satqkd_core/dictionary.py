"""Command, telemetry, event and QKD-message dictionary: every message is declared once here.

As in F Prime and cFS, the declaration (name, numeric id, kind, typed fields with units, direction,
QoS; severities for events) is the contract between payload, ground stations and the operation
control centre. Topics (below), the binary codec (`satqkd_core.codec`) and the tables in
docs/protocol.md are all derived from it; `python -m satqkd_core.dictionary --write
docs/protocol.md` regenerates the tables.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

from satqkd_core.errors import InputError

# Wire encoding of each field type (all big-endian); used by the codec and rendered into the docs.
SCALAR_TYPES: dict[str, str] = {
    "u8": "1-byte unsigned integer",
    "u16": "2-byte unsigned integer",
    "u32": "4-byte unsigned integer",
    "u64": "8-byte unsigned integer",
    "i64": "8-byte two's-complement integer",
    "f64": "8-byte IEEE 754 binary64",
    "bool": "1 byte, 0x00 or 0x01 (any other value is rejected)",
    "str": "u16 byte length, then that many bytes of UTF-8",
    "bytes": "u32 byte length, then the bytes",
}
ARRAY_ELEMENT_TYPES: tuple[str, ...] = ("u32", "u64", "i64", "f64")
_FIXED_ARRAY_TYPES: tuple[str, ...] = ("u64[3]", "f64[3]")
_VARIABLE_ARRAY_TYPES: tuple[str, ...] = ("u32[]", "u64[]", "i64[]", "f64[]")
FIELD_TYPES: tuple[str, ...] = (*SCALAR_TYPES, *_FIXED_ARRAY_TYPES, *_VARIABLE_ARRAY_TYPES)

KINDS: tuple[str, ...] = ("tc", "tm", "evt", "qkd")
# Numeric id range reserved for each kind (inclusive).
KIND_ID_RANGES: dict[str, tuple[int, int]] = {
    "tc": (0x0000, 0x00FF),
    "tm": (0x0100, 0x01FF),
    "evt": (0x0200, 0x02FF),
    "qkd": (0x0300, 0x03FF),
}
DIRECTIONS: tuple[str, ...] = (
    "occ->payload",  # telecommand only the payload accepts
    "occ->node",  # telecommand accepted by the payload and by every OGS
    "node->occ",  # telemetry and events from any node
    "ogs->payload",  # QKD "up"
    "payload->ogs",  # QKD "down"
    "any",  # QKD message either end may send
)
# F Prime event severities, least to most severe.
SEVERITIES: tuple[str, ...] = (
    "DIAGNOSTIC",
    "ACTIVITY_LO",
    "ACTIVITY_HI",
    "WARNING_LO",
    "WARNING_HI",
    "FATAL",
)

PAYLOAD_NODE = "payload"
_CONFIG_NAME = re.compile(r"[a-z0-9_-]+")
_NODE_NAME = re.compile(r"payload|occ|ogs-[a-z0-9_-]+")


@dataclass(frozen=True)
class FieldSpec:
    """One typed field of a message: name, wire type, unit and description."""

    name: str
    type: str
    unit: str = ""
    doc: str = ""


@dataclass(frozen=True)
class MessageSpec:
    """One declared message: name, numeric id, kind, ordered fields, direction and QoS."""

    name: str
    id: int
    kind: str  # "tc" | "tm" | "evt" | "qkd"
    fields: tuple[FieldSpec, ...]
    doc: str
    direction: str
    qos: int = 1


@dataclass(frozen=True)
class EventSpec:
    """One declared event id (carried in an EVENT message) with its F Prime severity."""

    name: str
    id: int
    severity: str
    doc: str


class UnknownMessageError(KeyError):
    """No message is declared with the requested numeric id or name."""

    def __str__(self) -> str:
        # KeyError's default str() wraps the message in quotes; keep it readable.
        return str(self.args[0]) if self.args else "unknown message"


def parse_field_type(type_name: str) -> tuple[str, int | None, bool]:
    """Get (element type, fixed length or None, is_array) for a declared field type."""
    if type_name in SCALAR_TYPES:
        return type_name, None, False
    match = re.fullmatch(r"([a-z0-9]+)\[(\d*)\]", type_name)
    if match is None or match.group(1) not in ARRAY_ELEMENT_TYPES or type_name not in FIELD_TYPES:
        raise InputError(f"field type: unknown type {type_name!r}; known: {', '.join(FIELD_TYPES)}")
    length = int(match.group(2)) if match.group(2) else None
    return match.group(1), length, True


def _f(name: str, type_: str, unit: str = "", doc: str = "") -> FieldSpec:
    return FieldSpec(name=name, type=type_, unit=unit, doc=doc)


_PLAN_ID = _f("plan_id", "u32", "", "pass plan this message belongs to")
_PLAN_WINDOW = (
    _f("aos_unix_s", "f64", "s", "acquisition of signal of the plan (UTC, Unix epoch)"),
    _f("los_unix_s", "f64", "s", "loss of signal of the plan (UTC, Unix epoch)"),
    _f("qkd_start_unix_s", "f64", "s", "start of quantum transmission of the plan"),
    _f("qkd_stop_unix_s", "f64", "s", "end of quantum transmission of the plan"),
)

_MESSAGES: tuple[MessageSpec, ...] = (
    # ---- telecommands -------------------------------------------------------------------
    MessageSpec(
        "NOOP", 0x0001, "tc", (), "Do nothing; answered by TC_ACK (link check).", "occ->node"
    ),
    MessageSpec(
        "RESET_COUNTERS",
        0x0002,
        "tc",
        (),
        "Reset the accepted/rejected command and message counters to zero.",
        "occ->node",
    ),
    MessageSpec(
        "LOAD_PASS_PLAN",
        0x0010,
        "tc",
        (
            _f("plan_id", "u32", "", "identifier of the plan, unique per mission"),
            _f("mission", "str", "", "mission profile name"),
            _f("station", "str", "", "ground station name"),
            _f("tle_line1", "str", "", "two-line element set, line 1"),
            _f("tle_line2", "str", "", "two-line element set, line 2"),
            _f("aos_unix_s", "f64", "s", "acquisition of signal (UTC, Unix epoch)"),
            _f("los_unix_s", "f64", "s", "loss of signal (UTC, Unix epoch)"),
            _f("qkd_start_unix_s", "f64", "s", "emission instant of pulse 0"),
            _f("qkd_stop_unix_s", "f64", "s", "end of quantum transmission"),
            _f("repetition_rate_hz", "f64", "Hz", "source pulse repetition rate"),
        ),
        "Load the plan of one pass (geometry, QKD window, source rate).",
        "occ->node",
    ),
    MessageSpec(
        "ABORT_PASS",
        0x0011,
        "tc",
        (_PLAN_ID, _f("reason", "str", "", "operator's reason, logged and echoed in events")),
        "Abort the pass of a loaded plan; no key is produced from its unfinished blocks.",
        "occ->node",
    ),
    MessageSpec(
        "SOURCE_ENABLE",
        0x0020,
        "tc",
        (_f("enable", "bool", "", "true to emit pulses, false to go to the safe state"),),
        "Enable or disable the quantum source (payload only).",
        "occ->payload",
    ),
    MessageSpec(
        "RELAY_KEYS",
        0x0030,
        "tc",
        (
            _f("relay_id", "u32", "", "identifier of the relay, never used twice per payload"),
            _f("station_a", "str", "", "station whose key the relay hands to station_b"),
            _f("station_b", "str", "", "station that recovers station_a's key"),
            _f("bits", "u64", "bit", "relay key length (a multiple of the key size)"),
            _f(
                "blocks_a",
                "str",
                "",
                "confirmed keys of the link with A to take bits from, "
                "comma-separated ids in order (empty: all, oldest first)",
            ),
            _f("blocks_b", "str", "", "the same for the link with B"),
        ),
        "Trusted relay: broadcast key_A XOR key_B to both stations (payload only; docs/relay.md).",
        "occ->payload",
    ),
    MessageSpec(
        "SHUTDOWN", 0x00FF, "tc", (), "Stop the daemon after a clean shutdown.", "occ->node"
    ),
    # ---- telemetry ----------------------------------------------------------------------
    MessageSpec(
        "TC_ACK",
        0x0101,
        "tm",
        (
            _f("command_id", "u16", "", "type id of the acknowledged telecommand"),
            _f("command_seq", "u32", "", "envelope sequence number of that telecommand"),
            _f("accepted", "bool", "", "true if the command was accepted"),
            _f("reason", "str", "", "why it was rejected (empty when accepted)"),
        ),
        "Acceptance or rejection of one telecommand.",
        "node->occ",
    ),
    MessageSpec(
        "HOUSEKEEPING",
        0x0110,
        "tm",
        (
            _f("node", "str", "", "'payload' or 'ogs-<station>'"),
            _f("mode", "str", "", "operating mode of the daemon"),
            _f("uptime_s", "f64", "s", "time since the daemon started"),
            _f("clock_unix_s", "f64", "s", "the node's clock (UTC, Unix epoch)"),
            _f("tc_accepted", "u32", "", "telecommands accepted"),
            _f("tc_rejected", "u32", "", "telecommands rejected"),
            _f(
                "tc_auth_failures",
                "u32",
                "",
                "telecommands refused as unauthenticated (not zeroed by RESET_COUNTERS)",
            ),
            _f("qkd_accepted", "u32", "", "QKD messages accepted"),
            _f("qkd_rejected", "u32", "", "QKD messages rejected (malformed, bad tag, bad state)"),
            _f("qkd_duplicates", "u32", "", "QKD messages ignored as re-deliveries"),
            _f("key_bits_stored", "u64", "bit", "confirmed final key bits in the key store"),
            _f("auth_words_remaining", "u64", "", "authentication pad words left in the pool"),
            _f("passes_open", "u32", "", "passes loaded and not yet ended at this node"),
            _f(
                "passes_abandoned_at_start",
                "u32",
                "",
                "passes found open at start (the previous run died mid-pass), abandoned at both "
                "ends",
            ),
        ),
        "Periodic housekeeping of a node (counters as in F Prime / cFS).",
        "node->occ",
        qos=0,
    ),
    MessageSpec(
        "QKD_PROGRESS",
        0x0111,
        "tm",
        (
            _PLAN_ID,
            _f("chunk", "u32", "", "last processed detection frame"),
            _f("detections", "u64", "", "detections so far in this pass"),
            _f("sifted_bits", "u64", "bit", "sifted key bits so far in this pass"),
            _f("qber_z", "f64", "", "Z-basis error rate so far (fraction, NaN if unknown)"),
            _f("elevation_deg", "f64", "deg", "satellite elevation seen from the station"),
            _f("frame_start_unix_s", "f64", "s", "start of the frame `chunk`"),
            _f("frame_stop_unix_s", "f64", "s", "end of the frame `chunk`"),
            _f(
                "sifted_by_intensity",
                "u64[3]",
                "",
                "sifted detections so far (both bases) per intensity: signal, decoy, vacuum; "
                "of the frames whose sifting answer the payload has sent",
            ),
            _f("sifted_span_s", "f64", "s", "total length of the frames sifted so far"),
            _f(
                "clock_offset_ps",
                "f64",
                "ps",
                "payload clock offset at the frame's centre (NaN: frame not synchronised)",
            ),
            _f("clock_drift_ppb", "f64", "ppb", "tracked payload clock rate (NaN: none yet)"),
            _f(
                "timing_residual_rms_ps",
                "f64",
                "ps",
                "RMS timing residual of the frame's assigned tags (NaN: none assigned)",
            ),
        ),
        "Progress of the QKD part of a pass, one per processed frame.",
        "node->occ",
    ),
    MessageSpec(
        "ATP_STATUS",
        0x0120,
        "tm",
        (
            _PLAN_ID,
            _f("mode", "str", "", "ATP mode: waiting, slewing, acquiring, tracking, ..."),
            _f("gimbal_az_deg", "f64", "deg", "gimbal azimuth read back (NaN if unknown)"),
            _f("gimbal_el_deg", "f64", "deg", "gimbal elevation read back (NaN if unknown)"),
            _f("predicted_az_deg", "f64", "deg", "program-track azimuth of the satellite"),
            _f("predicted_el_deg", "f64", "deg", "program-track elevation of the satellite"),
            _f("fsm_tip_urad", "f64", "urad", "fast-steering mirror tip command"),
            _f("fsm_tilt_urad", "f64", "urad", "fast-steering mirror tilt command"),
            _f("spot_x_urad", "f64", "urad", "beacon spot x from boresight (NaN if unread)"),
            _f("spot_y_urad", "f64", "urad", "beacon spot y from boresight (NaN if unread)"),
            _f("spot_valid", "bool", "", "true if the beacon spot is in the sensor's range"),
            _f("power_nw", "f64", "nW", "beacon power on the sensor (NaN if unread)"),
            _f("max_detector_temperature_c", "f64", "degC", "warmest detector (NaN if unread)"),
            _f("gimbal_faults", "u32", "", "gimbal faults since the daemon started"),
            _f("fsm_faults", "u32", "", "fast-steering mirror faults since the daemon started"),
            _f("beacon_faults", "u32", "", "beacon sensor faults since the daemon started"),
            _f("detector_faults", "u32", "", "detector controller faults since the daemon started"),
        ),
        "Station ATP state about once a second while a pass plan is being tracked.",
        "node->occ",
        qos=0,
    ),
    # The pass summaries carry every figure of the pass report (docs/report.md) that an end
    # measures; counts and rates only: never key bits, nor any digest of a key.
    MessageSpec(
        "OGS_PASS_SUMMARY",
        0x0130,
        "tm",
        (
            _PLAN_ID,
            _f("station", "str", "", "ground station name"),
            *_PLAN_WINDOW,
            _f("max_elevation_deg", "f64", "deg", "highest elevation of the plan's orbit"),
            _f("min_range_m", "f64", "m", "shortest range at a frame centre (NaN: no frame)"),
            _f("intensities", "f64[3]", "", "mean photon numbers: signal, decoy, vacuum"),
            _f("tags", "u64", "", "time tags read from the tagger"),
            _f("detections", "u64", "", "detections (one per pulse) reported to the payload"),
            _f("sifted_bits", "u64", "bit", "sifted bits, both bases"),
            _f("x_detections", "u64[3]", "", "sifted X-basis (key) detections per intensity"),
            _f("z_detections", "u64[3]", "", "sifted Z-basis (test) detections per intensity"),
            _f("x_errors", "u64[3]", "", "X-basis errors per intensity found by correction"),
            _f("z_errors", "u64[3]", "", "Z-basis errors per intensity"),
            _f("x_errors_known", "bool", "", "true if error correction ran (X errors known)"),
            _f("qber", "f64", "", "error rate over the bits whose errors are known"),
            _f("qber_x", "f64", "", "X-basis error rate in the bits correction kept"),
            _f("qber_z", "f64", "", "Z-basis error rate"),
            _f("assigned_fraction", "f64", "", "fraction of tags assigned a pulse"),
            _f("timing_residual_rms_ps", "f64", "ps", "RMS timing residual of assigned tags"),
            _f("clock_offset_ps", "f64", "ps", "tracked clock offset at QKD start (NaN: none)"),
            _f("clock_drift_ppb", "f64", "ppb", "tracked payload clock rate (NaN: none)"),
            _f("blocks", "u32", "", "key blocks of the pass"),
            _f("aborted_blocks", "u32", "", "blocks that gave no key"),
            _f("ec_method", "str", "", "error correction: 'cascade' or 'ldpc'"),
            _f("ec_efficiency", "f64", "", "leak / (n h(qber_x)); 0 if it did not run"),
            _f("ec_rounds", "u32", "", "error-correction round trips on the link"),
            _f("ec_frames", "u32", "", "LDPC frames (0 for Cascade)"),
            _f("ec_frames_failed", "u32", "", "LDPC frames that failed and were dropped"),
            _f(
                "leak_ec_bits",
                "u64",
                "bit",
                "bits error correction is charged: both directions, dropped frames included",
            ),
            _f("verification_tag_bits", "u64", "bit", "bits disclosed by verification"),
            _f("pa_input_bits", "u64", "bit", "corrected bits into privacy amplification"),
            _f("pa_output_bits", "u64", "bit", "bits out of privacy amplification"),
            _f(
                "auth_refill_bits",
                "u64",
                "bit",
                "leading output bits that refilled the authentication pool (not stored)",
            ),
            _f("eps_sec", "f64", "", "secrecy parameter the key length was computed for"),
            _f("eps_cor", "f64", "", "correctness parameter (error verification)"),
            _f("finite_key_known", "bool", "", "true if the finite-key bound was evaluated"),
            _f("s_x0", "f64", "", "finite key: lower bound on vacuum X detections"),
            _f("s_x1", "f64", "", "finite key: lower bound on single-photon X detections"),
            _f("s_z0", "f64", "", "finite key: lower bound on vacuum Z detections"),
            _f("s_z1", "f64", "", "finite key: lower bound on single-photon Z detections"),
            _f("v_z1", "f64", "", "finite key: upper bound on single-photon Z errors"),
            _f("phi_x", "f64", "", "finite key: upper bound on the X phase error rate"),
            _f("finite_key_bits", "i64", "bit", "key length the bound allows (may be <= 0)"),
            _f("finite_key_bounds", "str", "", "concentration bounds used"),
            _f("secret_key_bits", "u64", "bit", "final key bits stored (0: no key)"),
            _f("key_id", "str", "", "identifier of the key stored (empty: none stored)"),
            _f("abort_reason", "str", "", "why the pass gave no key (empty: it did)"),
            _f("key_stored_unix_s", "f64", "s", "when the key was stored (NaN: none)"),
            _f("ended_unix_s", "f64", "s", "when the station's part of the pass ended"),
            _f("uplink_bytes", "u64", "byte", "QKD message bytes the station sent"),
            _f("uplink_messages", "u32", "", "QKD messages the station sent"),
            _f("received_bytes", "u64", "byte", "QKD message bytes the station received"),
            _f("rejected_messages", "u32", "", "QKD messages the station rejected"),
            _f(
                "auth_messages_left",
                "u32",
                "",
                "messages the authentication pool still covers each way after the pass",
            ),
            _f("detection_report_bytes", "u64", "byte", "bytes of encoded detection reports"),
            _f("atp_present", "bool", "", "true if the station drove ATP instruments"),
            _f("atp_acquisition_time_s", "f64", "s", "AOS to first acquisition (NaN: none)"),
            _f("atp_acquisitions", "u32", "", "beacon acquisitions"),
            _f("atp_track_losses", "u32", "", "beacon spot losses while tracking"),
            _f("atp_offloads", "u32", "", "mirror offloads to the gimbal"),
            _f("atp_spot_valid_fraction", "f64", "", "ATP samples after AOS with a valid spot"),
            _f("atp_spot_rms_urad", "f64", "urad", "RMS spot radius while valid (NaN: none)"),
            _f("atp_gimbal_faults", "u32", "", "gimbal faults during the pass"),
            _f("atp_fsm_faults", "u32", "", "fast-steering mirror faults during the pass"),
            _f("atp_beacon_faults", "u32", "", "beacon sensor faults during the pass"),
            _f("atp_detector_faults", "u32", "", "detector controller faults during the pass"),
            _f("atp_detectors_refused", "str", "", "why the detectors refused it (empty: no)"),
            # per frame (index = chunk), so archives hold what the station measured
            _f(
                "frame_clock_offset_ps",
                "f64[]",
                "ps",
                "per frame: clock offset at its centre (NaN: frame not synchronised)",
            ),
            _f(
                "frame_timing_residual_rms_ps",
                "f64[]",
                "ps",
                "per frame: RMS timing residual of its assigned tags (NaN: none assigned)",
            ),
            _f(
                "frame_x_sifted",
                "f64[]",
                "",
                "per frame, 3 values (signal, decoy, vacuum): sifted X-basis detections "
                "(NaN: no sifting answer)",
            ),
            _f(
                "frame_z_sifted",
                "f64[]",
                "",
                "per frame, 3 values: sifted Z-basis detections (NaN: no sifting answer)",
            ),
            _f(
                "frame_z_errors",
                "f64[]",
                "",
                "per frame, 3 values: Z-basis errors (NaN: no sifting answer)",
            ),
        ),
        "The station's figures of one pass, once its part ended (key stored or aborted); "
        "counts only, no key material. Byte and message counts run from the plan's load.",
        "node->occ",
    ),
    MessageSpec(
        "KEY_DEMAND",
        0x0150,
        "tm",
        (
            _f("demand_id", "str", "", "identifier of the demand, unique per posting station"),
            _f("endpoint_a", "str", "", "an end point: a station or a satellite (mission) name"),
            _f("endpoint_b", "str", "", "the other end point"),
            _f("bits", "u64", "bit", "secret key bits wanted between the two end points"),
            _f("deadline_unix_s", "f64", "s", "when the key is wanted by (UTC, Unix epoch)"),
        ),
        "Key demand a station posts to the operation control centre (docs/occ.md).",
        "node->occ",
    ),
    MessageSpec(
        "DEMAND_STATUS",
        0x0151,
        "tm",
        (
            _f("demand_id", "str", "", "identifier of the demand"),
            _f("bits", "u64", "bit", "secret key bits wanted"),
            _f("planned_bits", "u64", "bit", "expected bits of the passes planned for it"),
            _f("delivered_bits", "u64", "bit", "bits the stations' pass summaries reported"),
            _f("planned_passes", "u32", "", "passes planned for it"),
            _f("met", "bool", "", "true once the delivered bits reach the demand"),
        ),
        "The operation control centre's plan and fulfilment of one demand, after each change.",
        "node->occ",
    ),
    MessageSpec(
        "PAYLOAD_PASS_SUMMARY",
        0x0131,
        "tm",
        (
            _PLAN_ID,
            _f("station", "str", "", "ground station of the pass"),
            _f("emission_start_unix_s", "f64", "s", "source on for the plan (NaN: never)"),
            _f("emission_stop_unix_s", "f64", "s", "source off, at most QKD stop (NaN: never)"),
            _f("repetition_rate_hz", "f64", "Hz", "pulse repetition rate"),
            _f("pulses_sent", "u64", "", "pulses emitted inside the plan's QKD window"),
            _f("intensities", "f64[3]", "", "mean photon numbers: signal, decoy, vacuum"),
            _f("sent_by_intensity", "u64[3]", "", "pulses_sent x each intensity's probability"),
            _f("detections", "u64", "", "detections the station reported"),
            _f("sifted_bits", "u64", "bit", "detections kept in sifting (bases matched)"),
            _f(
                "leak_ec_bits",
                "u64",
                "bit",
                "bits error correction is charged: both directions, dropped frames included",
            ),
            _f("pa_input_bits", "u64", "bit", "reference bits into privacy amplification"),
            _f("secret_key_bits", "u64", "bit", "final key bits stored (0: no key)"),
            _f("key_id", "str", "", "identifier of the key stored (empty: none stored)"),
            _f("key_confirmed", "bool", "", "true once the station confirmed the same key"),
            _f(
                "auth_refill_bits",
                "u64",
                "bit",
                "bits of the new key that refilled the authentication pool (not stored)",
            ),
            _f("abort_reason", "str", "", "why the pass gave no key (empty: it did)"),
            _f("key_stored_unix_s", "f64", "s", "when the key was stored (NaN: none)"),
            _f("ended_unix_s", "f64", "s", "when the payload's part of the pass ended"),
            _f("downlink_bytes", "u64", "byte", "QKD message bytes the payload sent"),
            _f("downlink_messages", "u32", "", "QKD messages the payload sent"),
            _f("received_bytes", "u64", "byte", "QKD message bytes the payload received"),
            _f("rejected_messages", "u32", "", "QKD messages the payload rejected"),
            _f(
                "auth_messages_left",
                "u32",
                "",
                "messages the authentication pool still covers each way after the pass",
            ),
            _f(
                "fine_residual_rms_urad",
                "f64",
                "urad",
                "payload controller's fine-tracking residual over the emission, from its "
                "housekeeping (NaN: no figure)",
            ),
            _f(
                "fine_locked_fraction",
                "f64",
                "",
                "controller housekeeping reports over the emission that saw fine tracking "
                "locked (NaN: no figure)",
            ),
        ),
        "The payload's figures of one pass with one station, once it ended; counts only, "
        "no key material. Byte and message counts run from the plan's load.",
        "node->occ",
    ),
    MessageSpec(
        "RELAY_DONE",
        0x0160,
        "tm",
        (
            _f("relay_id", "u32", "", "the relay"),
            _f("filed", "bool", "", "true if this station filed the relay key"),
            _f("reason", "str", "", "why not (empty when filed)"),
            _f("bits", "u64", "bit", "relay key bits filed"),
            _f(
                "relay_block_id",
                "str",
                "",
                "block the key was filed as (its keys' ids derive from it alike at both stations)",
            ),
            _f("message_bytes", "u64", "byte", "bytes of the RELAY_XOR message received"),
        ),
        "A station's outcome of a trusted relay; ids and counts only, no key material.",
        "node->occ",
    ),
    MessageSpec(
        "BBM92_PASS_SUMMARY",
        0x0170,
        "tm",
        (
            _PLAN_ID,
            _f("station", "str", "", "the station"),
            _f("family", "str", "", "protocol family (bbm92)"),
            _f("finite_key_bound", "str", "", "the bound the key length is from"),
            _f("timing_blocks", "u32", "", "timing blocks uplinked"),
            _f("uplink_timing_bytes", "u64", "byte", "compressed timing sent up"),
            _f("coincidences", "u64", "", "coincidences the payload found"),
            _f("n_key_bits", "u64", "bit", "sifted key-basis (X) coincidences"),
            _f("k_test_bits", "u64", "bit", "sifted test-basis (Z) coincidences, disclosed"),
            _f("test_errors", "u64", "", "test bits that differed"),
            _f("qber_test", "f64", "", "test-basis error rate (NaN: no test)"),
            _f("qber_tolerance", "f64", "", "tolerance fixed before the pass"),
            _f("correlation_significance", "f64", "", "coarse correlation peak, std devs"),
            _f("clock_offset_ps", "f64", "ps", "tracked clock offset at the last block's end"),
            _f("mu", "f64", "", "statistical deviation of the bound (NaN: not reached)"),
            _f("key_length_bits", "u64", "bit", "the bound's key length (0: no key)"),
        ),
        "The station's BBM92 figures of one pass, once it ended; counts only, no key material.",
        "node->occ",
    ),
    # ---- events -------------------------------------------------------------------------
    MessageSpec(
        "EVENT",
        0x0200,
        "evt",
        (
            _f("event_id", "u16", "", "id from the event table"),
            _f("severity", "str", "", "severity from the event table"),
            _f("text", "str", "", "human-readable detail"),
        ),
        "An event from the event table, with its severity and text.",
        "node->occ",
    ),
    # ---- QKD protocol (authenticated) ---------------------------------------------------
    MessageSpec(
        "DETECTION_REPORT",
        0x0300,
        "qkd",
        (
            _PLAN_ID,
            _f("chunk", "u32", "", "detection frame number, from 0 per pass"),
            _f("frame_start_unix_s", "f64", "s", "start of the frame"),
            _f("frame_stop_unix_s", "f64", "s", "end of the frame"),
            _f("n_detections", "u32", "", "detections in the report"),
            _f("report", "bytes", "", "detection-report encoding: pulse indices + OGS bases"),
        ),
        "OGS detections of one frame: which pulses were detected and in which basis.",
        "ogs->payload",
    ),
    MessageSpec(
        "SIFT_RESULT",
        0x0301,
        "qkd",
        (
            _PLAN_ID,
            _f("chunk", "u32", "", "frame this result answers"),
            _f("n_detections", "u32", "", "detections in that frame's report"),
            _f("keep", "bytes", "", "packed keep mask, one bit per detection (bases match)"),
            _f("n_kept", "u32", "", "set bits in the keep mask"),
            _f(
                "intensity",
                "bytes",
                "",
                "intensity labels of kept detections, 2 bits each "
                "(0 signal, 1 decoy, 2 vacuum), first in the high bits",
            ),
            _f("z_bits", "bytes", "", "packed payload bits of the kept Z-basis (test) detections"),
            _f(
                "pulse_shift",
                "i64",
                "pulse",
                "whole pulse periods the payload added to every reported index before sifting "
                "(found from the detections on vacuum pulses; public, no key bit)",
            ),
            _f(
                "pulse_index_ambiguous",
                "bool",
                "",
                "true: no shift was clearly right, nothing of the frame is kept",
            ),
        ),
        "Payload's on-board sifting of one frame.",
        "payload->ogs",
    ),
    MessageSpec(
        "PE_COUNTS",
        0x0302,
        "qkd",
        (
            _PLAN_ID,
            _f("n_chunks", "u32", "", "frames included in the block"),
            _f("x_detections", "u64[3]", "", "X-basis detections per intensity"),
            _f("z_detections", "u64[3]", "", "Z-basis detections per intensity"),
            _f("z_errors", "u64[3]", "", "Z-basis errors per intensity"),
        ),
        "Block statistics for decoy-state parameter estimation (Lim et al. 2014).",
        "ogs->payload",
    ),
    MessageSpec(
        "ABORT",
        0x0303,
        "qkd",
        (_PLAN_ID, _f("reason", "str", "", "why the block is abandoned")),
        "Abandon the block; neither end stores key from it.",
        "any",
    ),
    MessageSpec(
        "EC_QUERY",
        0x0304,
        "qkd",
        (
            _PLAN_ID,
            _f("round", "u32", "", "round trip number, from 0"),
            _f("permutation_seed", "u64", "", "seed of the Cascade permutations"),
            _f("passes", "u32", "", "Cascade passes"),
            _f("qber_estimate", "f64", "", "error rate estimate (fraction) the blocks are for"),
            _f(
                "query",
                "bytes",
                "",
                "rows (pass_index, start, stop), compact: first round by block sizes, later "
                "rounds varint-coded (satqkd_core.cascade_messages)",
            ),
        ),
        "Cascade parity queries of one round trip.",
        "ogs->payload",
    ),
    MessageSpec(
        "EC_REPLY",
        0x0305,
        "qkd",
        (
            _PLAN_ID,
            _f("round", "u32", "", "round trip this reply answers"),
            _f("parities", "bytes", "", "packed parities, one bit per query row"),
            _f("n", "u32", "", "number of parities"),
        ),
        "Parities answering one EC_QUERY.",
        "payload->ogs",
    ),
    MessageSpec(
        "EC_DONE",
        0x0306,
        "qkd",
        (
            _PLAN_ID,
            _f(
                "leak_ec_bits",
                "u64",
                "bit",
                "bits error correction is charged (both directions, dropped frames included)",
            ),
            _f("round_trips", "u32", "", "round trips used"),
        ),
        "Error correction finished.",
        "ogs->payload",
    ),
    MessageSpec(
        "VERIFY",
        0x0307,
        "qkd",
        (
            _PLAN_ID,
            _f("hash_key", "u64[]", "", "polynomial hash keys (words < 2^61 - 1)"),
            _f("tag", "bytes", "", "payload's verification hash of its key"),
        ),
        "Error verification: hash of the payload's corrected key.",
        "payload->ogs",
    ),
    MessageSpec(
        "VERIFY_RESULT",
        0x0308,
        "qkd",
        (_PLAN_ID, _f("ok", "bool", "", "true if the OGS key has the same hash")),
        "Outcome of error verification.",
        "ogs->payload",
    ),
    MessageSpec(
        "PA_SEED",
        0x0309,
        "qkd",
        (
            _PLAN_ID,
            _f("output_bits", "u64", "bit", "final key length"),
            _f("seed", "bytes", "", "packed Toeplitz seed"),
            _f("n_seed_bits", "u64", "bit", "seed length (input + output - 1)"),
            _f("key_id", "str", "", "identifier under which both ends store the key"),
            _f(
                "auth_refill_bits",
                "u64",
                "bit",
                "leading bits of the output that refill the authentication pool, not stored",
            ),
        ),
        "Privacy amplification seed and output length (public, not key material).",
        "payload->ogs",
    ),
    MessageSpec(
        "KEY_STORED",
        0x030A,
        "qkd",
        (
            _PLAN_ID,
            _f("key_id", "str", "", "identifier of the stored key"),
            _f("key_bits", "u64", "bit", "stored key length"),
        ),
        "The OGS stored the final key (pending until KEY_CONFIRMED).",
        "ogs->payload",
    ),
    MessageSpec(
        "KEY_CONFIRMED",
        0x0311,
        "qkd",
        (_PLAN_ID, _f("key_id", "str", "", "identifier of the key both ends now hold")),
        "The payload holds the key too and confirmed it; the OGS confirms its copy.",
        "payload->ogs",
    ),
    # LDPC reconciliation (satqkd_core.ldpc_reconciliation; missions with
    # protocol.reconciliation: ldpc use these in place of EC_QUERY / EC_REPLY)
    MessageSpec(
        "LDPC_START",
        0x030B,
        "qkd",
        (
            _PLAN_ID,
            _f("seed", "u64", "", "seed of the public frame layout (below 2^63)"),
            _f("qber_estimate", "f64", "", "error rate (fraction) the frames are planned for"),
        ),
        "Start blind LDPC reconciliation; the payload answers with LDPC_SYNDROMES.",
        "ogs->payload",
    ),
    MessageSpec(
        "LDPC_SYNDROMES",
        0x030C,
        "qkd",
        (
            _PLAN_ID,
            _f("code_id", "u32", "", "mother code used for every frame"),
            _f("code_digest", "u64", "", "digest of that code's matrix and puncturing order"),
            _f("key_bits", "u64", "bit", "sifted key bits in the block"),
            _f("frames", "u32", "", "frames in the block (the tail filling no frame is dropped)"),
            _f("frame_key_bits", "u32", "bit", "key bits per frame"),
            _f("shortened", "u32", "", "shortened symbols per frame"),
            _f("punctured", "u32", "", "punctured symbols per frame"),
            _f("reveal_step", "u32", "", "punctured values a failed frame gets per round"),
            _f("positions_seed", "u64", "", "seed of the frame layout, derived from seed"),
            _f("first_frame", "u32", "", "first frame whose syndrome this part carries"),
            _f("frame_count", "u32", "", "consecutive frames in this part"),
            _f("syndromes", "bytes", "", "packed syndromes of those frames, frame after frame"),
        ),
        "One part of the LDPC syndromes (parts of consecutive frames, up to ~1 MB each).",
        "payload->ogs",
    ),
    MessageSpec(
        "LDPC_REVEAL_REQUEST",
        0x030D,
        "qkd",
        (
            _PLAN_ID,
            _f("round", "u32", "", "blind round, from 1"),
            _f("frames", "u32[]", "", "frames that failed to decode, increasing"),
            _f("counts", "u32[]", "", "punctured values asked for each of those frames"),
        ),
        "Blind round: ask for more punctured values of the frames that failed.",
        "ogs->payload",
    ),
    MessageSpec(
        "LDPC_REVEAL_REPLY",
        0x030E,
        "qkd",
        (
            _PLAN_ID,
            _f("round", "u32", "", "blind round this reply answers"),
            _f("revealed_bits", "u32", "bit", "punctured values disclosed"),
            _f("values", "bytes", "", "packed punctured values, frame after frame"),
        ),
        "Punctured values answering one LDPC_REVEAL_REQUEST (private fill, never key bits).",
        "payload->ogs",
    ),
    MessageSpec(
        "LDPC_FINAL",
        0x030F,
        "qkd",
        (
            _PLAN_ID,
            _f("round", "u32", "", "last round number"),
            _f("frame_ok", "bytes", "", "packed flags, one per frame: decoded (kept) or dropped"),
        ),
        "End of LDPC reconciliation: which frames both ends keep.",
        "ogs->payload",
    ),
    MessageSpec(
        "LDPC_FINAL_ACK",
        0x0310,
        "qkd",
        (_PLAN_ID, _f("round", "u32", "", "round of the LDPC_FINAL acknowledged")),
        "The payload kept the frames LDPC_FINAL names.",
        "payload->ogs",
    ),
    # BBM92 (docs/bbm92.md, decision 0035): no pulse clock; the station uplinks its timing per
    # block, the payload finds the coincidences and answers; the test sample decides the block
    MessageSpec(
        "BBM92_TIMING",
        0x0320,
        "qkd",
        (
            _PLAN_ID,
            _f("chunk", "u32", "", "timing block number, from 0 per pass"),
            _f("block_start_ps", "i64", "ps", "block start after QKD start (station timeline)"),
            _f("block_stop_ps", "i64", "ps", "block end after QKD start (station timeline)"),
            _f("timing", "bytes", "", "CompressedTiming: Rice-coded tag gaps and basis bits"),
        ),
        "The station's tags of one block (light time removed) and their bases, compressed.",
        "ogs->payload",
    ),
    MessageSpec(
        "BBM92_COINCIDENCES",
        0x0321,
        "qkd",
        (
            _PLAN_ID,
            _f("chunk", "u32", "", "timing block this reply answers"),
            _f("n", "u32", "", "coincidences found in the block"),
            _f("index", "u32[]", "", "station tag index (within the block) of each coincidence"),
            _f("basis", "bytes", "", "packed payload basis bits, one per coincidence"),
            _f("offset_ps", "f64", "ps", "tracked clock offset (station - payload) at block end"),
            _f("drift_ppb", "f64", "ppb", "tracked rate of that offset (station - payload)"),
            _f("significance", "f64", "", "coarse correlation peak, standard deviations"),
        ),
        "The coincidences the payload found in one timing block, with its bases.",
        "payload->ogs",
    ),
    MessageSpec(
        "BBM92_TEST",
        0x0322,
        "qkd",
        (
            _PLAN_ID,
            _f("n_chunks", "u32", "", "timing blocks in the key block"),
            _f("n_key_bits", "u64", "bit", "sifted key-basis (X) coincidences"),
            _f("k_test_bits", "u64", "bit", "sifted test-basis (Z) coincidences"),
            _f("test_bits", "bytes", "", "packed station Z bits, all disclosed"),
        ),
        "The station's sifted counts and its whole test sample, for the error estimate.",
        "ogs->payload",
    ),
    MessageSpec(
        "BBM92_TEST_RESULT",
        0x0323,
        "qkd",
        (
            _PLAN_ID,
            _f("k_test_bits", "u64", "bit", "test bits compared"),
            _f("test_errors", "u64", "", "test bits that differ"),
            _f("passed", "bool", "", "error rate within the tolerance agreed before the pass"),
        ),
        "The payload's verdict on the test sample (a failed test aborts the block).",
        "payload->ogs",
    ),
    # trusted relay through the satellite (satqkd_core.trusted_relay; docs/relay.md)
    MessageSpec(
        "RELAY_XOR",
        0x0340,
        "qkd",
        (
            _f("relay_id", "u32", "", "the relay (RELAY_KEYS)"),
            _f("station_a", "str", "", "station whose key is relayed"),
            _f("station_b", "str", "", "station that recovers it"),
            _f("key_size_bits", "u32", "bit", "key size of the key ranges"),
            _f("bits", "u64", "bit", "relay key length"),
            _f("keys_a", "str", "", "keys of the link with A used: block:first:count;..."),
            _f("keys_b", "str", "", "keys of the link with B used, in the same order"),
            _f("xor", "bytes", "", "key_A XOR key_B (public: reveals neither key)"),
        ),
        "The trusted relay's broadcast, sent to both stations; the only relay traffic.",
        "payload->ogs",
    ),
)

DICTIONARY: dict[str, MessageSpec] = {spec.name: spec for spec in _MESSAGES}
_BY_ID: dict[int, MessageSpec] = {spec.id: spec for spec in _MESSAGES}

_EVENTS: tuple[EventSpec, ...] = (
    EventSpec("TC_REJECTED", 0x0001, "WARNING_LO", "A telecommand was rejected (see TC_ACK)."),
    EventSpec(
        "QKD_MESSAGE_REJECTED",
        0x0002,
        "WARNING_LO",
        "A QKD message was malformed or inconsistent with the exchange.",
    ),
    EventSpec("AUTH_FAILURE", 0x0003, "WARNING_HI", "A QKD message's authentication tag failed."),
    EventSpec(
        "DUPLICATE_MESSAGE", 0x0004, "DIAGNOSTIC", "A re-delivered message (same seq) was ignored."
    ),
    EventSpec("BUS_RECONNECTED", 0x0005, "WARNING_LO", "The broker connection was re-established."),
    EventSpec("AUTH_POOL_LOW", 0x0006, "WARNING_LO", "Few authentication pad words remain."),
    EventSpec(
        "TC_AUTH_FAILURE",
        0x0007,
        "WARNING_HI",
        "A telecommand without a valid MAC, or replayed, was refused (not executed).",
    ),
    EventSpec(
        "AUTH_FAILURE_LIMIT",
        0x0008,
        "FATAL",
        "Failed tag checks reached their cap: the channel accepts nothing more.",
    ),
    EventSpec("PASS_STARTED", 0x0010, "ACTIVITY_HI", "A planned pass started (AOS)."),
    EventSpec("PASS_ENDED", 0x0011, "ACTIVITY_HI", "A planned pass ended (LOS or abort)."),
    EventSpec("BLOCK_ABORTED", 0x0012, "WARNING_LO", "A key block was abandoned; text says why."),
    EventSpec("KEY_STORED", 0x0013, "ACTIVITY_HI", "A final key was stored."),
    EventSpec("PLAN_LOADED", 0x0014, "ACTIVITY_LO", "A pass plan was loaded."),
    EventSpec("NODE_STARTED", 0x0015, "ACTIVITY_HI", "The daemon started and subscribed."),
    EventSpec(
        "KEY_STORE_RECOVERED",
        0x0017,
        "WARNING_LO",
        "At start-up a key store removed crash leftovers or quarantined a corrupt entry.",
    ),
    EventSpec(
        "KEY_DISCARDED",
        0x0016,
        "WARNING_LO",
        "A pending key was deleted: the peer never confirmed holding it, or the pass aborted.",
    ),
    EventSpec(
        "PASS_ABANDONED",
        0x0018,
        "WARNING_LO",
        "A pass open when the daemon last stopped was found at start and ended at both ends "
        "without its key (ABORT sent to the peer).",
    ),
    EventSpec(
        "PROFILE_SWITCHED",
        0x0019,
        "ACTIVITY_LO",
        "A station serving several missions set up another mission's profile for a pass "
        "(filter, detector and tagger channels, protocol, time synchronisation).",
    ),
    EventSpec(
        "SOURCE_SAFE_STATE", 0x0020, "WARNING_HI", "The quantum source went to its safe state."
    ),
    EventSpec("LOOP_OVERRUN", 0x0021, "WARNING_LO", "A periodic loop missed its deadline."),
    EventSpec(
        "INSTRUMENT_ERROR", 0x0022, "WARNING_HI", "An instrument reported or caused an error."
    ),
    EventSpec(
        "ENTROPY_SOURCE_FAILURE",
        0x0023,
        "FATAL",
        "The entropy source failed a health test or stopped answering; nothing random is drawn.",
    ),
    EventSpec("CONFIG_ERROR", 0x0030, "WARNING_HI", "A configuration value was invalid."),
    EventSpec(
        "DEMAND_REJECTED",
        0x0050,
        "WARNING_LO",
        "The operation control centre refused a key demand (the reason names the field).",
    ),
    EventSpec(
        "PLAN_SENT",
        0x0051,
        "ACTIVITY_LO",
        "The operation control centre sent a pass plan to the payload and a station.",
    ),
    EventSpec(
        "PLAN_REFUSED",
        0x0052,
        "WARNING_HI",
        "A node refused a pass plan of the operation control centre (with its reason).",
    ),
    EventSpec("ATP_ACQUIRED", 0x0040, "ACTIVITY_HI", "The station acquired the beacon spot."),
    EventSpec(
        "ATP_TRACK_LOST", 0x0041, "WARNING_LO", "The beacon spot was lost; the station scans."
    ),
    EventSpec(
        "ATP_INSTRUMENT_FAULT",
        0x0042,
        "WARNING_HI",
        "A station ATP instrument failed; ATP degrades and retries it.",
    ),
    EventSpec(
        "ATP_INSTRUMENT_RECOVERED", 0x0043, "ACTIVITY_LO", "A faulted ATP instrument answers again."
    ),
    EventSpec("DETECTORS_READY", 0x0044, "ACTIVITY_LO", "Detectors cold enough, biased and gated."),
    EventSpec(
        "DETECTOR_FAULT",
        0x0045,
        "WARNING_HI",
        "Detectors too warm or not answering (before QKD start: the pass is refused).",
    ),
    EventSpec(
        "GIMBAL_LIMIT",
        0x0046,
        "WARNING_LO",
        "A pass point lies outside the gimbal's travel (skipped), an axis hit a limit, or the "
        "slew did not reach the AOS direction by AOS.",
    ),
    EventSpec(
        "LASER_SAFETY",
        0x0047,
        "WARNING_HI",
        "The station's uplink laser was switched off: tracking lost, pointing outside the "
        "allowed zone, ground link lost or an unauthenticated request (with the reasons).",
    ),
    EventSpec(
        "RELAY_FILED",
        0x0060,
        "ACTIVITY_HI",
        "A trusted relay ended at this node (payload: broadcast sent; station: key filed).",
    ),
    EventSpec(
        "RELAY_REFUSED",
        0x0061,
        "WARNING_HI",
        "A trusted relay was refused at this node (the text says why; no key filed).",
    ),
    EventSpec("SHUTTING_DOWN", 0x00FF, "ACTIVITY_HI", "The daemon is shutting down."),
)

EVENTS: dict[str, EventSpec] = {event.name: event for event in _EVENTS}
_EVENTS_BY_ID: dict[int, EventSpec] = {event.id: event for event in _EVENTS}


def _check_declarations() -> None:
    """Refuse to import a dictionary with duplicate ids, bad kinds, directions or types."""
    if len(DICTIONARY) != len(_MESSAGES) or len(_BY_ID) != len(_MESSAGES):
        raise RuntimeError("dictionary: message names and ids must be unique")
    for spec in _MESSAGES:
        low, high = KIND_ID_RANGES[spec.kind]
        if not low <= spec.id <= high:
            raise RuntimeError(f"dictionary: {spec.name} id {spec.id:#06x} outside {spec.kind}")
        if spec.direction not in DIRECTIONS or spec.qos not in (0, 1, 2):
            raise RuntimeError(f"dictionary: {spec.name} has a bad direction or qos")
        names = [field.name for field in spec.fields]
        if len(set(names)) != len(names):
            raise RuntimeError(f"dictionary: {spec.name} has duplicate field names")
        for field in spec.fields:
            parse_field_type(field.type)
    if len(EVENTS) != len(_EVENTS) or len(_EVENTS_BY_ID) != len(_EVENTS):
        raise RuntimeError("dictionary: event names and ids must be unique")
    for event in _EVENTS:
        if event.severity not in SEVERITIES or not 0 <= event.id <= 0xFFFF:
            raise RuntimeError(f"dictionary: event {event.name} has a bad severity or id")


_check_declarations()


def spec_by_id(type_id: int) -> MessageSpec:
    """Get the message declared with this numeric id (UnknownMessageError, a KeyError, if none)."""
    is_id = isinstance(type_id, int) and not isinstance(type_id, bool)
    spec = _BY_ID.get(type_id) if is_id else None
    if spec is None:
        raise UnknownMessageError(
            f"type_id: no message is declared with id {type_id!r}"
            + (f" ({type_id:#06x})" if is_id else "")
        )
    return spec


def spec_by_name(name: str) -> MessageSpec:
    """Get the message declared with this name (UnknownMessageError, a KeyError, if none)."""
    spec = DICTIONARY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownMessageError(f"name: no message is declared with name {name!r}")
    return spec


def event_by_id(event_id: int) -> EventSpec:
    """Get the event declared with this id (UnknownMessageError, a KeyError, if none)."""
    is_id = isinstance(event_id, int) and not isinstance(event_id, bool)
    event = _EVENTS_BY_ID.get(event_id) if is_id else None
    if event is None:
        raise UnknownMessageError(f"event_id: no event is declared with id {event_id!r}")
    return event


def event_fields(event_name: str, text: str) -> dict[str, Any]:
    """Get the EVENT message fields for a declared event name and a detail text."""
    event = EVENTS.get(event_name) if isinstance(event_name, str) else None
    if event is None:
        raise InputError(f"event_name: no event is declared with name {event_name!r}")
    if not isinstance(text, str):
        raise InputError(f"text: must be a str, got {type(text).__name__}")
    return {"event_id": event.id, "severity": event.severity, "text": text}


def _check_config_name(argument: str, value: object) -> str:
    if not isinstance(value, str) or _CONFIG_NAME.fullmatch(value) is None:
        raise InputError(f"{argument}: must match [a-z0-9_-]+, got {value!r}")
    return value


def _check_node(node: object) -> str:
    if not isinstance(node, str) or _NODE_NAME.fullmatch(node) is None:
        raise InputError(
            f"node: must be 'payload' or 'ogs-<station>' ([a-z0-9_-]+), or 'occ', got {node!r}"
        )
    return node


def ogs_node(station: str) -> str:
    """Get the node name of a ground station: 'ogs-<station>'."""
    return "ogs-" + _check_config_name("station", station)


def telecommand_topic(mission: str, node: str) -> str:
    """Get the topic on which a node receives its telecommands."""
    return f"satqkd/{_check_config_name('mission', mission)}/{_check_node(node)}/tc"


def telemetry_topic(mission: str, node: str, name: str) -> str:
    """Get the topic of one telemetry packet published by a node."""
    spec = DICTIONARY.get(name) if isinstance(name, str) else None
    if spec is None or spec.kind != "tm":
        raise InputError(f"name: {name!r} is not a declared telemetry packet")
    mission = _check_config_name("mission", mission)
    return f"satqkd/{mission}/{_check_node(node)}/tm/{name.lower()}"


def event_topic(mission: str, node: str) -> str:
    """Get the topic on which a node publishes its events."""
    return f"satqkd/{_check_config_name('mission', mission)}/{_check_node(node)}/evt"


def qkd_topic(mission: str, station: str, direction: str) -> str:
    """Get the QKD topic of one station: direction 'up' (ogs->payload) or 'down'."""
    if direction not in ("up", "down"):
        raise InputError(f"direction: must be 'up' or 'down', got {direction!r}")
    mission = _check_config_name("mission", mission)
    return f"satqkd/{mission}/qkd/{_check_config_name('station', station)}/{direction}"


# ---- documentation ------------------------------------------------------------------------

GENERATED_BEGIN = "<!-- BEGIN GENERATED: python -m satqkd_core.dictionary; do not edit by hand -->"
GENERATED_END = "<!-- END GENERATED -->"

_TOPIC_PATTERNS: dict[str, str] = {
    "tc": "`satqkd/{mission}/{node}/tc`",
    "tm": "`satqkd/{mission}/{node}/tm/{name}`",
    "evt": "`satqkd/{mission}/{node}/evt`",
}
_KIND_TITLES: dict[str, str] = {
    "tc": "Telecommands",
    "tm": "Telemetry",
    "evt": "Events",
    "qkd": "QKD protocol messages (authenticated)",
}


def _topic_of(spec: MessageSpec) -> str:
    if spec.direction == "occ->payload":
        return _TOPIC_PATTERNS[spec.kind].replace("{node}", PAYLOAD_NODE)
    if spec.kind != "qkd":
        return _TOPIC_PATTERNS[spec.kind].replace("{name}", spec.name.lower())
    if spec.direction == "ogs->payload":
        return "`satqkd/{mission}/qkd/{station}/up`"
    if spec.direction == "payload->ogs":
        return "`satqkd/{mission}/qkd/{station}/down`"
    return "`satqkd/{mission}/qkd/{station}/up` or `.../down` (by sender)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "—"


def render_markdown() -> str:
    """Get the generated tables of docs/protocol.md (types, messages, events)."""
    lines = [
        "### Field types",
        "",
        "| type | encoding (big-endian) |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {_cell(encoding)} |" for name, encoding in SCALAR_TYPES.items()]
    lines += [
        f"| `{element}[3]` | three `{element}`, no length prefix |" for element in ("u64", "f64")
    ]
    lines += [
        f"| `{element}[]` | u32 element count, then the `{element}` elements "
        "(numpy array in and out) |"
        for element in ARRAY_ELEMENT_TYPES
    ]
    lines += ["", "### Message summary", ""]
    lines += ["| id | name | kind | direction | QoS | topic |", "|---|---|---|---|---|---|"]
    for spec in sorted(_MESSAGES, key=lambda s: s.id):
        lines.append(
            f"| `0x{spec.id:04X}` | {spec.name} | {spec.kind} | {spec.direction} | {spec.qos} "
            f"| {_topic_of(spec)} |"
        )
    for kind in KINDS:
        lines += ["", f"### {_KIND_TITLES[kind]}"]
        for spec in sorted((s for s in _MESSAGES if s.kind == kind), key=lambda s: s.id):
            lines += [
                "",
                f"#### `0x{spec.id:04X}` {spec.name}",
                "",
                f"{spec.doc} Direction: {spec.direction}; QoS {spec.qos}; topic {_topic_of(spec)}.",
                "",
            ]
            if not spec.fields:
                lines.append("No fields (empty body).")
                continue
            lines += ["| # | field | type | unit | description |", "|---|---|---|---|---|"]
            for index, field in enumerate(spec.fields):
                lines.append(
                    f"| {index} | `{field.name}` | `{field.type}` | {_cell(field.unit)} "
                    f"| {_cell(field.doc)} |"
                )
    lines += ["", "### Event ids (carried in EVENT)", ""]
    lines += ["| event_id | name | severity | meaning |", "|---|---|---|---|"]
    for event in sorted(_EVENTS, key=lambda e: e.id):
        lines.append(
            f"| `0x{event.id:04X}` | {event.name} | {event.severity} | {_cell(event.doc)} |"
        )
    return "\n".join(lines) + "\n"


def splice_generated(document: str, generated: str) -> str:
    """Get `document` with the text between the generated-section markers replaced."""
    begin = document.find(GENERATED_BEGIN)
    end = document.find(GENERATED_END)
    if begin < 0 or end < 0 or end < begin:
        raise InputError("document: generated-section markers missing or out of order")
    head = document[: begin + len(GENERATED_BEGIN)]
    return head + "\n\n" + generated + "\n" + document[end:]


def generated_section(document: str) -> str:
    """Get the text between the generated-section markers of a document (as spliced)."""
    begin = document.find(GENERATED_BEGIN)
    end = document.find(GENERATED_END)
    if begin < 0 or end < 0 or end < begin:
        raise InputError("document: generated-section markers missing or out of order")
    return document[begin + len(GENERATED_BEGIN) : end].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the generated tables, or splice them into a document with --write PATH."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stdout.write(render_markdown())
        return 0
    if len(args) == 2 and args[0] == "--write":
        # The only file access in this module: the documentation generator's command line.
        from pathlib import Path

        path = Path(args[1])
        try:
            document = path.read_text(encoding="utf-8")
            path.write_text(splice_generated(document, render_markdown()), encoding="utf-8")
        except (OSError, InputError) as exc:
            sys.stderr.write(f"{path}: {exc}\n")
            return 2
        return 0
    sys.stderr.write("usage: python -m satqkd_core.dictionary [--write docs/protocol.md]\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
