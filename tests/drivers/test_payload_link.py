"""Byte-exact protocol tests of the PUS/CCSDS payload link driver."""

from __future__ import annotations

import asyncio
import binascii
import struct
import subprocess
import sys

import pytest

from drivers.interfaces import DeviceTimeout
from drivers.payload_link import PayloadLink, TelecommandError
from drivers.transport import ScriptedTransport
from satqkd_core import payload_icd as icd
from satqkd_core.errors import InputError

ASM = bytes.fromhex("1ACFFC1D")
APID = 0x065
T0 = 1_700_000_000.0


def _crc(packet: bytes) -> bytes:
    return struct.pack(">H", binascii.crc_hqx(packet, 0xFFFF))


def tc(seq: int, service: int, subtype: int, app: bytes = b"") -> bytes:
    """A PUS-C TC written out field by field (CCSDS 133.0-B-2, ECSS-E-ST-70-41C 7.4.3)."""
    body = bytes([0x20 | 0b1001, service, subtype]) + struct.pack(">H", 1) + app
    head = struct.pack(">HHH", 0x1800 | APID, 0xC000 | seq, len(body) + 2 - 1)
    return ASM + head + body + _crc(head + body)


def tm(seq: int, service: int, subtype: int, data: bytes, unix_s: float = T0) -> bytes:
    """A PUS-C TM with a CDS short time stamp (P-field 0x40, days since 1958, ms of day)."""
    days = int(unix_s // 86400)
    stamp = b"\x40" + struct.pack(">HI", days + 4383, round((unix_s - days * 86400) * 1000))
    body = bytes([0x20, service, subtype]) + struct.pack(">HH", seq, 0) + stamp + data
    head = struct.pack(">HHH", 0x0800 | APID, 0xC000 | seq, len(body) + 2 - 1)
    return ASM + head + body + _crc(head + body)


def request_id(seq: int) -> bytes:
    return struct.pack(">HH", 0x1800 | APID, 0xC000 | seq)


def verified(seq: int, tm_seq: int, *middle: bytes) -> bytes:
    """Acceptance (1,1), what the TC produced, completion (1,7)."""
    return (
        tm(tm_seq, 1, 1, request_id(seq))
        + b"".join(middle)
        + tm(tm_seq + 1 + len(middle), 1, 7, request_id(seq))
    )


PING = (tc(0, 17, 1), verified(0, 0, tm(1, 17, 2, b"")))


def link_for(pairs: list[tuple[bytes, bytes]]) -> tuple[PayloadLink, ScriptedTransport]:
    transport = ScriptedTransport([PING, *pairs], name="script")
    return PayloadLink("payload-link", transport, reply_timeout_s=0.5), transport


def test_the_hand_written_tc_matches_the_spacepackets_docstring_example() -> None:
    # spacepackets' PusTc docstring: service 17/1, seq 22, APID 1, ack 0b1111 -> this packet
    body = bytes([0x2F, 17, 1, 0, 0])
    head = struct.pack(">HHH", 0x1801, 0xC016, 6)
    assert (head + body + _crc(head + body)).hex(",") == "18,01,c0,16,00,06,2f,11,01,00,00,ab,62"


async def test_connect_pings_and_every_byte_is_as_scripted() -> None:
    link, transport = link_for([(tc(1, 17, 1), verified(1, 3, tm(4, 17, 2, b"")))])
    await link.connect()
    assert await link.ping() >= 0.0
    assert link.counters.tc_sent == 2 and link.counters.tc_accepted == 2
    assert link.counters.tm_received == 6 and link.counters.bad_packets == 0
    await link.close()
    transport.assert_all_consumed()


async def test_one_shot_housekeeping_is_decoded_by_the_declared_layout() -> None:
    values = (1, 0, 100e6, 42, 7, 1, 2, 3, 4, 0.5, 1234.5, 0, 0x12, 1, 1, 0.375)
    report = struct.pack(">HBBdIIIIIHfdIHBBf", 1, *values)
    link, transport = link_for(
        [(tc(1, 3, 27, b"\x01\x00\x01"), verified(1, 3, tm(4, 3, 25, report, T0 + 1.25)))]
    )
    await link.connect()
    hk = await link.request_housekeeping()
    assert hk.sid == 1 and hk.unix_s == T0 + 1.25
    names = [name for name, _, _ in icd.HOUSEKEEPING_FIELDS]
    assert hk.values == dict(zip(names, values, strict=True))
    assert (await link.status()).detail["housekeeping"]["plan_id"] == 42
    await link.close()
    transport.assert_all_consumed()


async def test_source_and_plan_functions_encode_their_arguments() -> None:
    plan_args = struct.pack(">HIHddd", 0x0010, 9, 3, T0 + 60, T0 + 360, 100e6)
    link, transport = link_for(
        [
            (tc(1, 8, 1, plan_args), verified(1, 3)),
            (tc(2, 8, 1, struct.pack(">Hd", 0x0001, 100e6)), verified(2, 5)),
            (tc(3, 8, 1, struct.pack(">Hd", 0x0002, T0 + 60)), verified(3, 7)),
            (tc(4, 8, 1, struct.pack(">H", 0x0003)), verified(4, 9)),
            (tc(5, 8, 1, struct.pack(">HI", 0x0011, 9)), verified(5, 11)),
            (tc(6, 8, 1, struct.pack(">H", 0x0020)), verified(6, 13)),
            (tc(7, 3, 5, b"\x01\x00\x01"), verified(7, 15)),
            (tc(8, 3, 6, b"\x01\x00\x01"), verified(8, 17)),
            (tc(9, 3, 31, struct.pack(">BHI", 1, 1, 2500)), verified(9, 19)),
        ]
    )
    await link.connect()
    await link.load_pass_plan(9, 3, T0 + 60, T0 + 360, 100e6)
    await link.configure_source(100e6)
    await link.enable_source(T0 + 60)
    await link.disable_source()
    await link.clear_pass_plan(9)
    await link.reset_counters()
    await link.enable_periodic_housekeeping()
    await link.disable_periodic_housekeeping()
    await link.set_housekeeping_interval(2.5)
    await link.close()
    transport.assert_all_consumed()


async def test_an_acceptance_failure_raises_with_its_code_and_reason() -> None:
    failure = request_id(1) + bytes([2]) + b"no TC (9,9)"
    link, transport = link_for([(tc(1, 9, 9), tm(3, 1, 2, failure))])
    await link.connect()
    with pytest.raises(TelecommandError, match=r"TC\(9,9\) rejected: UNKNOWN_SERVICE: no TC") as e:
        await link.send_telecommand(9, 9)
    assert e.value.code == 2 and link.counters.tc_rejected == 1
    transport.assert_all_consumed()


async def test_a_completion_failure_names_the_function() -> None:
    failure = request_id(1) + bytes([10]) + b"no pass plan loaded"
    link, transport = link_for(
        [
            (
                tc(1, 8, 1, struct.pack(">Hd", 2, T0)),
                tm(3, 1, 1, request_id(1)) + tm(4, 1, 8, failure),
            )
        ]
    )
    await link.connect()
    with pytest.raises(TelecommandError, match="SOURCE_ENABLE failed: INTERLOCK: no pass plan"):
        await link.enable_source(T0)
    assert link.counters.tc_failed == 1 and link.counters.tc_accepted == 2
    transport.assert_all_consumed()


async def test_bad_packets_are_counted_and_the_receiver_resynchronises() -> None:
    good = tm(3, 1, 1, request_id(1))
    corrupt = bytearray(tm(4, 17, 2, b""))
    corrupt[-3] ^= 0x40  # one bit of the time stamp: the CRC no longer checks
    long_length = ASM + struct.pack(">HHH", 0x0865, 0xC000, 5000)  # a length beyond any packet
    noise = b"\x00\xff\x1a\xcf"  # line noise, including half a marker
    reply = (
        noise + good + bytes(corrupt) + long_length + tm(5, 17, 2, b"") + tm(6, 1, 7, request_id(1))
    )
    link, transport = link_for([(tc(1, 17, 1), reply)])
    await link.connect()
    await link.ping()  # the good (17,2) and (1,7) still get through
    assert link.counters.bad_packets == 2
    assert link.counters.skipped_bytes >= len(noise)
    assert "bad packet" in link.last_error
    await link.close()
    transport.assert_all_consumed()


async def test_unsolicited_events_are_decoded_in_order() -> None:
    enabled = tm(3, 5, 1, struct.pack(">Hd", 0x0101, T0 + 60), T0 + 59.5)
    safed = tm(4, 5, 4, struct.pack(">Hf", 0x0401, 10.25), T0 + 70.0)
    link, transport = link_for([(b"", enabled + safed)])
    await link.connect()
    first, second = await link.next_event(1.0), await link.next_event(1.0)
    assert (first.name, first.severity, first.aux) == (
        "SOURCE_ENABLED",
        1,
        {"first_pulse_unix_s": T0 + 60},
    )
    assert first.unix_s == T0 + 59.5
    assert (second.name, second.severity, second.aux) == (
        "LINK_LOST_SOURCE_SAFED",
        4,
        {"silence_s": 10.25},
    )
    with pytest.raises(DeviceTimeout, match=r"payload-link: no event report within 0\.01 s"):
        await link.next_event(0.01)
    transport.assert_all_consumed()


async def test_periodic_housekeeping_is_queued_in_order_and_a_lagging_reader_loses_the_oldest() -> (
    None
):
    def report(plan_id: int) -> bytes:
        values = (0, 0, 100e6, plan_id, 0, 0, 0, 0, 0, 0.0, 1.0, 0, 0, 0, 0, 0.0)
        return tm(3 + plan_id, 3, 25, struct.pack(">HBBdIIIIIHfdIHBBf", 1, *values))

    burst = b"".join(report(k) for k in range(66))  # two more than the queue holds
    link, transport = link_for([(b"", burst)])
    await link.connect()
    async with asyncio.timeout(2.0):
        while link.counters.housekeeping_dropped < 2:
            await asyncio.sleep(0.01)
    received = [(await link.next_housekeeping(1.0)).values["plan_id"] for _ in range(64)]
    assert received == list(range(2, 66))  # the newest 64, oldest first
    assert link.housekeeping[1].values["plan_id"] == 65  # the latest, for status()
    with pytest.raises(DeviceTimeout, match=r"no housekeeping report within 0\.01 s"):
        await link.next_housekeeping(0.01)
    assert link.link_up
    await link.close()
    assert not link.link_up
    transport.assert_all_consumed()


async def test_closing_the_link_as_telemetry_lands_stops_its_receiver() -> None:
    # a close() in the loop pass an event report lands in once waited forever for the receiver
    # (Python 3.11's wait_for lost the cancel): the hang seen in tests/firmware under load
    safed = tm(3, 5, 4, struct.pack(">Hf", 0x0401, 10.25), T0 + 70.0)
    link, transport = link_for([(b"line", safed)])
    await link.connect()
    await transport.write(b"line")  # the controller's event report lands on the line now...
    closing = asyncio.create_task(link.close())  # ...and close() cancels the receiver at once
    await asyncio.wait([closing], timeout=2.0)
    assert closing.done(), "close() still waits for the receiver"
    assert not link.link_up and not transport.connected
    assert "payload-link telemetry" not in {task.get_name() for task in asyncio.all_tasks()}


async def test_closing_the_link_while_being_cancelled_still_releases_the_line() -> None:
    # close() in a task's teardown (a `finally` after its cancel) once re-raised before
    # closing the transport, leaving the line open
    link, transport = link_for([])
    await link.connect()
    closed: list[bool] = []

    async def owner() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await link.close()
            closed.append(transport.connected)

    task = asyncio.create_task(owner())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [False], "the line was left open"
    assert not link.link_up


async def test_a_silent_controller_times_out_naming_the_link_and_the_stage() -> None:
    link, transport = link_for(
        [
            (tc(1, 8, 1, struct.pack(">H", 3)), b""),
            (tc(2, 8, 1, struct.pack(">H", 3)), tm(3, 1, 1, request_id(2))),
        ]
    )
    await link.connect()
    with pytest.raises(DeviceTimeout, match=r"no acceptance report for SOURCE_DISABLE within 0.5"):
        await link.disable_source()
    with pytest.raises(DeviceTimeout, match=r"no completion report for SOURCE_DISABLE within 0.5"):
        await link.disable_source()
    assert link.counters.tc_timed_out == 2
    transport.assert_all_consumed()


async def test_arguments_are_checked_before_anything_is_sent() -> None:
    link, transport = link_for([])
    await link.connect()
    with pytest.raises(InputError, match="first_pulse_unix_s must be a finite number"):
        await link.enable_source(float("nan"))
    with pytest.raises(InputError, match="plan_id must be a u32"):
        await link.load_pass_plan(-1, 0, T0, T0 + 1, 1e8)
    with pytest.raises(InputError, match=r"interval_s must be in 0\.1\.\.86400 s"):
        await link.set_housekeeping_interval(0.01)
    with pytest.raises(InputError, match="transport must be a Transport"):
        PayloadLink("x", "serial:///dev/null")  # type: ignore[arg-type]
    transport.assert_all_consumed()


def test_the_flat_namespace_exports_the_link_and_the_taggers_without_any_vendor_sdk() -> None:
    # a fresh interpreter whose importer refuses (and records) any vendor SDK module
    probe = """
import importlib.abc, sys
asked = []
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("TimeTagger", "Swabian"):
            asked.append(name)
            raise ImportError(name)
        return None
sys.meta_path.insert(0, Refuse())
import drivers, drivers.payload_link, drivers.time_tagger_tcp
assert drivers.PayloadLink is drivers.payload_link.PayloadLink
assert drivers.TcpTimeTagger is drivers.time_tagger_tcp.TcpTimeTagger
assert drivers.VendorTaggerAdapter is drivers.time_tagger_tcp.VendorTaggerAdapter
assert {"PayloadLink", "TcpTimeTagger", "VendorTaggerAdapter"} <= set(drivers.__all__)
print(asked)
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
