"""The in-memory transport: the same drivers and emulators as on a pty or socket, no port in
between; replies, unsolicited lines and faults behave as they do on a port."""

from __future__ import annotations

import asyncio

import pytest

from drivers.beacon import QuadCellBeacon
from drivers.fsm import PiGcsMirror
from drivers.gimbal import PtuGimbal
from drivers.interfaces import DeviceDisconnected, DeviceError, DeviceTimeout
from drivers.registry import DRIVERS, BuildContext, build_driver
from drivers.transport import open_transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators import EMULATORS, InMemoryTransport, start_emulator
from sim_backends.emulators.beacon import QuadCellEmulator
from sim_backends.emulators.fsm import GcsMirrorEmulator
from sim_backends.emulators.gimbal import PtuEmulator

T0 = 1_700_000_000.0
FAST_BACKOFF = {"reconnect_backoff_s": 0.01, "reconnect_backoff_max_s": 0.04}
# every registered driver whose emulator speaks lines, found through the instrument registry
BY_EMULATOR = {spec.emulator: spec.name for spec in DRIVERS.values() if spec.emulator in EMULATORS}
#: options a bench must state; a QRNG only streams (no commands, so no command counters)
REQUIRED_OPTIONS = {"serial_qrng": {"min_entropy_bits_per_byte": 7.0}}
STREAM_ONLY = {"serial_qrng"}


def test_every_line_emulator_has_a_registered_driver() -> None:
    assert set(BY_EMULATOR) == set(EMULATORS)


@pytest.mark.parametrize("name", sorted(EMULATORS))
async def test_every_driver_connects_to_its_emulator_through_memory(name: str) -> None:
    clock = SimClock(T0)
    emulator = await start_emulator(name, clock, seed=1, port="memory")
    assert emulator.resource == f"memory://{emulator.name}"
    driver = build_driver(
        name, BY_EMULATOR[name], emulator.memory_transport(),
        REQUIRED_OPTIONS.get(BY_EMULATOR[name]), timeout_s=0.5,
        context=BuildContext(clock=clock),
    )  # fmt: skip
    try:
        await driver.connect(timeout_s=2.0)
        status = await driver.status()
        assert status.connected
        assert emulator.connections == 1
        if BY_EMULATOR[name] not in STREAM_ONLY:
            assert status.detail["counters"]["timeouts"] == 0
            assert status.detail["counters"]["garbled_replies"] == 0
            assert emulator.commands_total == len(emulator.commands_received) > 0
    finally:
        await driver.close()
        await emulator.stop()


async def test_unknown_port_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no port kind 'usb'"):
        await start_emulator("gimbal", SimClock(T0), port="usb")


async def _beacon_readings(port: str, n: int) -> tuple[list[tuple], list[bytes]]:
    clock = SimClock(T0)
    emulator = QuadCellEmulator(clock, seed=42)
    if port == "memory":
        await emulator.start_memory()
        transport = emulator.memory_transport()
    else:
        await emulator.start_pty()
        transport = open_transport(emulator.resource)
    sensor = QuadCellBeacon("beacon", transport, timeout_s=1.0)
    readings = []
    try:
        await sensor.connect(timeout_s=2.0)
        for k in range(n):
            await clock.advance_to(T0 + 0.1 * (k + 1))
            spot = await sensor.read_spot()
            readings.append((spot.frame, spot.x_urad, spot.y_urad, spot.power_nw, spot.valid))
        return readings, list(emulator.commands_received)
    finally:
        await sensor.close()
        await emulator.stop()


async def test_memory_and_pty_paths_give_the_same_readings_and_commands() -> None:
    memory, memory_commands = await _beacon_readings("memory", 25)
    pty, pty_commands = await _beacon_readings("pty", 25)
    assert memory == pty  # same seeded noise, same instants, same bytes
    assert memory_commands == pty_commands
    assert len({reading[1] for reading in memory}) == 25  # the spot really moves


async def test_unsolicited_limit_hit_reaches_the_driver() -> None:
    clock = SimClock(T0)
    emulator = PtuEmulator(clock, tilt_limits=(-100, 700))
    await emulator.start_memory()
    gimbal = PtuGimbal("gimbal", emulator.memory_transport(), timeout_s=0.5)
    try:
        await gimbal.connect(timeout_s=2.0)
        await gimbal.set_rate(0.0, -1.0)  # down at 1 deg/s: the -100 count limit in ~1.3 s
        await clock.advance_to(T0 + 3.0)  # the unit's own tick notices the limit unprompted
        assert await gimbal.poll_events() == ("el",)
        assert (await gimbal.position())[1] == pytest.approx(-100 * 46.2857 / 3600, abs=1e-9)
    finally:
        await gimbal.close()
        await emulator.stop()


async def test_silent_instrument_times_out_then_recovers() -> None:
    emulator = GcsMirrorEmulator(SimClock(T0))
    await emulator.start_memory()
    mirror = PiGcsMirror("fsm", emulator.memory_transport(), timeout_s=0.1)
    try:
        await mirror.connect(timeout_s=2.0)
        emulator.faults.silent = True
        with pytest.raises(DeviceTimeout, match=r"fsm \(memory://fsm\).*'POS\? A B'.*0\.1 s"):
            await mirror.position()
        emulator.faults.silent = False
        assert await mirror.position() == (0.0, 0.0)
        assert mirror.counters.timeouts == 1
    finally:
        await mirror.close()
        await emulator.stop()


async def test_garbled_and_late_replies_behave_as_on_a_port() -> None:
    emulator = await start_emulator("beacon", SimClock(T0), port="memory")
    sensor = QuadCellBeacon("beacon", emulator.memory_transport(), timeout_s=0.2)
    try:
        await sensor.connect(timeout_s=2.0)
        emulator.faults.garble = True
        with pytest.raises(DeviceError, match="garbled reply to 'CEN\\?'"):
            await sensor.read_spot()
        emulator.faults.garble = False
        emulator.faults.reply_delay_s = 0.05  # late but inside the timeout
        assert (await sensor.read_spot()).valid
        emulator.faults.reply_delay_s = 0.4  # later than the timeout
        with pytest.raises(DeviceTimeout):
            await sensor.read_spot()
        emulator.faults.reply_delay_s = 0.0
        await asyncio.sleep(0.45)  # the late reply arrives now and is discarded as stale
        assert (await sensor.read_spot()).valid
        assert sensor.counters.stale_bytes_discarded > 0
    finally:
        await sensor.close()
        await emulator.stop()


async def test_dropped_link_is_reconnected_by_the_driver() -> None:
    emulator = GcsMirrorEmulator(SimClock(T0))
    await emulator.start_memory()
    mirror = PiGcsMirror("fsm", emulator.memory_transport(), timeout_s=0.5, **FAST_BACKOFF)
    try:
        await mirror.connect(timeout_s=2.0)
        await mirror.set_servo(True)
        await emulator.disconnect()
        assert await mirror.servo_enabled()  # repeated on the reopened link
        assert mirror.counters.reconnects == 1
        assert emulator.connections == 2
    finally:
        await mirror.close()
        await emulator.stop()


async def test_transport_errors_name_the_link() -> None:
    emulator = GcsMirrorEmulator(SimClock(T0))
    transport = emulator.memory_transport()
    with pytest.raises(DeviceDisconnected, match="memory://fsm: emulator is not started"):
        await transport.open()
    await emulator.start_memory()
    with pytest.raises(DeviceDisconnected, match="memory://fsm: not connected"):
        await transport.write(b"*IDN?\n")
    await transport.open()
    with pytest.raises(DeviceTimeout, match=r"memory://fsm: no reply ending in b'\\n' within 0 s"):
        await transport.read_until(b"\n", 0.0)
    with pytest.raises(InputError, match="terminator"):
        await transport.read_until(b"", 1.0)
    with pytest.raises(InputError, match="timeout_s"):
        await transport.read_available(-1.0)
    await transport.write(b"*IDN?\n")
    assert (await transport.read_until(b"\n", 1.0)).startswith(b"(c)2024 Physik Instrumente")
    # a second controller takes the port over, as on a real instrument port
    other = InMemoryTransport(emulator)
    await other.open()
    with pytest.raises(DeviceDisconnected, match="another controller took the port"):
        await transport.write(b"ERR?\n")
    await other.write(b"ERR?\n")
    assert await other.read_exactly(2, 1.0) == b"0\n"
    await emulator.stop()
    with pytest.raises(DeviceDisconnected, match="instrument switched off"):
        await other.read_available(1.0)
