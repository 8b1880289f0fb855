"""Quad-cell beacon driver: byte-exact QC/1 protocol, checksums, and its pty emulator."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.beacon import QuadCellBeacon, frame_reply, nmea_checksum
from drivers.interfaces import BeaconSpot, DeviceError
from drivers.transport import ScriptedTransport, open_transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators import beacon as beacon_emulator
from sim_backends.emulators.beacon import QuadCellEmulator, circle_path

HANDSHAKE = [(b"ID?\r", b"ID,SATQKD-LAB,QC-4,SN0031,1.2*4E\r\n")]


def test_checksum_matches_a_hand_computed_line() -> None:
    # XOR of "OK" is 0x4F ^ 0x4B = 0x04
    assert frame_reply("OK") == b"OK*04\r\n"
    assert nmea_checksum(b"ID,SATQKD-LAB,QC-4,SN0031,1.2") == 0x4E


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60))
def test_driver_and_emulator_frame_replies_identically(body: str) -> None:
    assert frame_reply(body) == beacon_emulator.frame_reply(body)


async def _connected(pairs: list[tuple[bytes, bytes]]) -> QuadCellBeacon:
    sensor = QuadCellBeacon(
        "beacon", ScriptedTransport(HANDSHAKE + pairs, name="qc"), timeout_s=0.2
    )
    await sensor.connect(timeout_s=1.0)
    return sensor


async def test_protocol_for_every_method() -> None:
    sensor = await _connected(
        [
            (b"CEN?\r", frame_reply("CEN,1200,12.500,-3.250,41.700,1")),
            (b"EXP 500.0\r", frame_reply("OK")),
            (b"EXP?\r", frame_reply("EXP,500.0")),
            (b"STAT?\r", frame_reply("STAT,31.5,0")),  # status
            (b"CEN?\r", frame_reply("CEN,1201,0.000,0.000,0.000,0")),
        ]
    )
    assert sensor.identity == "SATQKD-LAB,QC-4,SN0031,1.2"
    assert await sensor.read_spot() == BeaconSpot(12.5, -3.25, 41.7, True, 1200)
    await sensor.set_exposure(500.0)
    assert await sensor.exposure() == 500.0
    status = await sensor.status()
    assert status.healthy and status.detail["spot_valid"] is False
    await sensor.close()  # nothing to make safe: no bytes sent
    sensor.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_bad_checksum_and_malformed_body_are_garbled() -> None:
    sensor = await _connected(
        [
            (b"CEN?\r", b"CEN,1,2.0,3.0,4.0,1*00\r\n"),
            (b"CEN?\r", b"CEN,1,2.0,3.0,4.0,1\r\n"),
            (b"CEN?\r", frame_reply("CEN,1,2.0,x,4.0,1")),
            (b"EXP?\r", frame_reply("EXP,10.0")),
        ]
    )
    for _ in range(3):
        with pytest.raises(DeviceError, match="garbled reply to 'CEN\\?'"):
            await sensor.read_spot()
    assert sensor.garbled_replies == 3
    assert await sensor.exposure() == 10.0
    sensor.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_instrument_errors_and_validation() -> None:
    sensor = await _connected([(b"EXP 20.0\r", frame_reply("ERR,3,out of range"))])
    with pytest.raises(DeviceError, match=r"'EXP 20\.0' rejected: 3,out of range"):
        await sensor.set_exposure(20.0)
    with pytest.raises(InputError, match=r"exposure_us \(us\): 5 is outside \[10, 100000\]"):
        await sensor.set_exposure(5)
    sensor.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_emulator_spot_follows_its_path_over_pty() -> None:
    clock = SimClock(1_700_000_000.0)
    emulator = QuadCellEmulator(clock, spot_path=circle_path(40.0, 20.0), seed=3)
    sensor = QuadCellBeacon("beacon", open_transport(await emulator.start_pty()), timeout_s=1.0)
    try:
        await sensor.connect(timeout_s=2.0)
        start = clock.now_unix_s()
        await clock.advance_to(start + 5.0)  # a quarter turn: (0, 40) urad
        spot = await sensor.read_spot()
        assert spot.valid and spot.frame == 5000
        assert spot.x_urad == pytest.approx(0.0, abs=3.0)
        assert spot.y_urad == pytest.approx(40.0, abs=3.0)
        emulator.power_nw = 0.0  # beacon lost
        assert not (await sensor.read_spot()).valid
        emulator.power_nw = 4000.0
        await sensor.set_exposure(5000.0)
        status = await sensor.status()
        assert not status.healthy and status.detail["saturated"] is True
    finally:
        await sensor.close()
        await emulator.stop()
