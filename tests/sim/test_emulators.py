"""Emulators: dynamics from the injected clock, and fault injection seen through real drivers
over real ptys and sockets (silence, late replies, line noise, dropped links)."""

from __future__ import annotations

import asyncio
import os

import pytest

from drivers.beacon import QuadCellBeacon
from drivers.fsm import PiGcsMirror
from drivers.gimbal import PtuGimbal
from drivers.interfaces import DeviceDisconnected, DeviceError, DeviceTimeout
from drivers.registry import DRIVERS, BuildContext, build_driver
from drivers.scpi import ScpiBiasSupply, ScpiLaserSource
from drivers.transport import open_transport
from satqkd_runtime.clock import SimClock
from sim_backends.emulators import EMULATORS, start_emulator
from sim_backends.emulators.fsm import GcsMirrorEmulator
from sim_backends.emulators.gimbal import PtuEmulator

T0 = 1_700_000_000.0
FAST_BACKOFF = {"reconnect_backoff_s": 0.01, "reconnect_backoff_max_s": 0.04}
#: options a bench must state; a QRNG only streams (no commands, so no command counters)
REQUIRED_OPTIONS = {"serial_qrng": {"min_entropy_bits_per_byte": 7.0}}
STREAM_ONLY = {"serial_qrng"}


# --- dynamics without a driver --------------------------------------------------------------


async def test_gimbal_slew_follows_a_trapezoidal_profile() -> None:
    clock = SimClock(T0)
    unit = PtuEmulator(clock)
    # power-on state: echo and verbose feedback, as the driver's handshake expects to find
    assert unit.respond(b"PP") == b"PP\r\n* Current pan position is 0\r\n"
    assert unit.respond(b"ED") == b"ED\r\n*\r\n"
    assert unit.respond(b"FT") == b"*\r\n"
    assert unit.respond(b"PS2000") == b"*\r\n"
    assert unit.respond(b"PA1000") == b"*\r\n"
    assert unit.respond(b"PP10000") == b"*\r\n"

    # accelerate 2 s (2000 counts), cruise 3 s at 2000 counts/s, decelerate 2 s: 7 s in all
    # (integrated in 1 ms steps: within a couple of counts of the exact profile)
    def pan() -> int:
        reply = unit.respond(b"PP")
        assert reply is not None and reply.startswith(b"* ")
        return int(reply[2:])

    await clock.advance_to(T0 + 1.0)
    assert pan() == pytest.approx(500, abs=2)  # a t^2 / 2 at 1000 counts/s^2
    await clock.advance_to(T0 + 3.5)
    assert pan() == pytest.approx(5000, abs=2)  # half way, at cruise speed
    await clock.advance_to(T0 + 6.0)
    assert pan() == pytest.approx(9500, abs=2)  # decelerating: 1 s before the end
    await clock.advance_to(T0 + 7.1)
    assert pan() == 10000
    assert unit.respond(b"PP99999") == b"! Maximum allowable Pan position exceeded\r\n"
    assert unit.respond(b"QQ") == b"! Illegal command\r\n"


async def test_gimbal_velocity_mode_stops_at_the_limit() -> None:
    clock = SimClock(T0)
    unit = PtuEmulator(clock, tilt_limits=(-100, 100))
    unit.echo, unit.terse = False, True
    sent: list[bytes] = []
    unit.send_unsolicited = sent.append  # type: ignore[method-assign]
    unit.respond(b"TA100000")
    unit.respond(b"CV")
    unit.respond(b"TS-50")
    await clock.advance_to(T0 + 1.0)
    unit.advance()
    assert unit.respond(b"TP") == b"* -50\r\n"
    await clock.advance_to(T0 + 3.0)
    unit.advance()
    assert sent == [b"!T\r\n"]
    assert unit.respond(b"TP") == b"* -100\r\n"
    assert unit.respond(b"TS") == b"* 0\r\n"  # stopped: a new rate must be commanded


async def test_mirror_emulator_refuses_bad_commands_with_gcs_codes() -> None:
    mirror = GcsMirrorEmulator(SimClock(T0))
    for command, code in (
        (b"MOV A 1", b"5\n"),  # servo off
        (b"SVO A 1 B 1", b"0\n"),
        (b"MOV A 9", b"7\n"),  # outside +-2.5
        (b"MOV C 1", b"15\n"),
        (b"MOV A", b"1\n"),
        (b"FOO", b"2\n"),
    ):
        assert mirror.respond(command) is None
        assert mirror.respond(b"ERR?") == code, command


# --- fault injection through drivers ---------------------------------------------------------


async def test_silent_instrument_times_out_naming_it_then_recovers() -> None:
    emulator = GcsMirrorEmulator(SimClock(T0))
    resource = await emulator.start_tcp()
    mirror = PiGcsMirror("fsm-bench", open_transport(resource), timeout_s=0.1)
    try:
        await mirror.connect(timeout_s=2.0)
        emulator.faults.silent = True
        with pytest.raises(DeviceTimeout, match=rf"fsm-bench \({resource}\).*'POS\? A B'.*0\.1 s"):
            await mirror.position()
        assert mirror.counters.timeouts == 1
        emulator.faults.silent = False
        assert await mirror.position() == (0.0, 0.0)
    finally:
        await mirror.close()
        await emulator.stop()


async def test_connect_to_a_silent_instrument_times_out() -> None:
    emulator = await start_emulator("laser")
    emulator.faults.silent = True
    laser = ScpiLaserSource("laser", open_transport(emulator.resource), timeout_s=0.1)
    try:
        with pytest.raises(DeviceTimeout, match=r"laser \(tcp://.*'\*IDN\?'"):
            await laser.connect(timeout_s=2.0)
        assert not laser.connected
    finally:
        await emulator.stop()


async def test_slow_reply_late_bytes_do_not_answer_the_next_command() -> None:
    emulator = await start_emulator("detectors")
    supply = ScpiBiasSupply("spd", open_transport(emulator.resource), timeout_s=0.15)
    try:
        await supply.connect(timeout_s=2.0)
        emulator.faults.reply_delay_s = 0.05  # slow but within the timeout: fine
        assert await supply.bias(1) == 0.0
        emulator.faults.reply_delay_s = 0.3  # slower than the timeout
        with pytest.raises(DeviceTimeout, match="'MEAS1:TEMP\\?'"):
            await supply.temperature(1)
        emulator.faults.reply_delay_s = 0.0
        await asyncio.sleep(0.35)  # the late temperature reply arrives now
        await supply.set_bias(2, 30.0)
        assert await supply.bias(2) == 30.0  # not the stale temperature
        assert supply.counters.stale_bytes_discarded > 0
    finally:
        await supply.close()
        await emulator.stop()


async def test_garbled_replies_are_rejected_and_counted() -> None:
    emulator = await start_emulator("beacon")
    sensor = QuadCellBeacon("beacon", open_transport(emulator.resource), timeout_s=0.5)
    try:
        await sensor.connect(timeout_s=2.0)
        emulator.faults.garble = True
        for _ in range(3):
            with pytest.raises(DeviceError, match="garbled reply to 'CEN\\?'"):
                await sensor.read_spot()
        assert sensor.garbled_replies == 3
        emulator.faults.garble = False
        assert (await sensor.read_spot()).valid
        status = await sensor.status()
        assert status.detail["counters"]["garbled_replies"] == 3
    finally:
        await sensor.close()
        await emulator.stop()


async def test_tcp_disconnect_is_reconnected_with_backoff() -> None:
    emulator = GcsMirrorEmulator(SimClock(T0))
    resource = await emulator.start_tcp()
    mirror = PiGcsMirror("fsm", open_transport(resource), timeout_s=0.5, **FAST_BACKOFF)
    try:
        await mirror.connect(timeout_s=2.0)
        await mirror.set_servo(True)
        await emulator.disconnect()
        await asyncio.sleep(0.02)
        assert await mirror.servo_enabled()  # the query is repeated on the new link
        assert mirror.counters.reconnects == 1
        assert emulator.connections == 2
        assert list(mirror.reconnect_delays_s) == [0.01]
        # a relative step is not idempotent: after a drop it is not sent twice
        await emulator.disconnect()
        await asyncio.sleep(0.02)
        with pytest.raises(DeviceDisconnected, match="not repeated"):
            await mirror.move_by(10.0, 0.0)
        assert await mirror.position() == (0.0, 0.0)
    finally:
        await mirror.close()
        await emulator.stop()


async def test_pty_disconnect_is_reconnected_through_the_stable_path() -> None:
    emulator = await start_emulator("gimbal", SimClock(T0))
    gimbal = PtuGimbal("gimbal", open_transport(emulator.resource), timeout_s=0.5, **FAST_BACKOFF)
    try:
        await gimbal.connect(timeout_s=2.0)
        first_pty = os.path.realpath(emulator.serial_path)
        await emulator.disconnect()
        assert os.path.realpath(emulator.serial_path) != first_pty
        await asyncio.sleep(0.02)
        assert await gimbal.position() == (0.0, 0.0)
        assert gimbal.counters.reconnects == 1
    finally:
        await gimbal.close()
        await emulator.stop()


async def test_instrument_gone_for_good_gives_up_after_doubling_delays() -> None:
    emulator = GcsMirrorEmulator(SimClock(T0))
    resource = await emulator.start_tcp()
    mirror = PiGcsMirror(
        "fsm", open_transport(resource), timeout_s=0.5, reconnect_attempts=4, **FAST_BACKOFF
    )
    await mirror.connect(timeout_s=2.0)
    await emulator.stop()
    await asyncio.sleep(0.02)
    with pytest.raises(DeviceDisconnected, match=rf"fsm \({resource}\).*after 4 attempt"):
        await mirror.position()
    assert list(mirror.reconnect_delays_s) == [0.01, 0.02, 0.04, 0.04]
    assert not mirror.connected
    await mirror.close()


@pytest.mark.parametrize("name", sorted(EMULATORS))
async def test_every_registered_emulator_answers_its_driver(name: str) -> None:
    """Each emulator on its own kind of port, answering the driver the registry names for it."""
    driver = next(spec.name for spec in DRIVERS.values() if spec.emulator == name)
    clock = SimClock(T0)
    emulator = await start_emulator(name, clock)
    expected_scheme = "serial://" if EMULATORS[name][1] == "pty" else "tcp://"
    assert emulator.resource.startswith(expected_scheme)
    device = build_driver(
        name, driver, open_transport(emulator.resource), REQUIRED_OPTIONS.get(driver),
        timeout_s=1.0, context=BuildContext(clock=clock),
    )  # fmt: skip
    try:
        await device.connect(timeout_s=2.0)
        status = await device.status()
        assert status.connected and status.identity
        if driver not in STREAM_ONLY:
            assert status.detail["counters"]["garbled_replies"] == 0
    finally:
        await device.close()
        await emulator.stop()
    with pytest.raises(ValueError, match="no emulator 'telescope'"):
        await start_emulator("telescope")
