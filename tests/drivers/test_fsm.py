"""PI GCS tip/tilt driver: byte-exact protocol, errors, and against its emulator over TCP."""

from __future__ import annotations

import pytest

from drivers.fsm import PiGcsMirror
from drivers.interfaces import DeviceError, MirrorRange
from drivers.transport import ScriptedTransport, open_transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.fsm import IDENTITY, GcsMirrorEmulator

HANDSHAKE = [
    (b"*IDN?\n", IDENTITY.encode() + b"\n"),
    (b"ERR?\n", b"0\n"),
    (b"TMN? A B\n", b"A=-2.500000 \nB=-2.000000\n"),
    (b"TMX? A B\n", b"A=2.500000 \nB=2.000000\n"),
]


def _ok(command: bytes) -> list[tuple[bytes, bytes]]:
    """A set command: no reply, then the driver's error check."""
    return [(command, b""), (b"ERR?\n", b"0\n")]


async def _connected(pairs: list[tuple[bytes, bytes]]) -> PiGcsMirror:
    mirror = PiGcsMirror("fsm", ScriptedTransport(HANDSHAKE + pairs, name="gcs"), timeout_s=0.2)
    await mirror.connect(timeout_s=1.0)
    return mirror


async def test_gcs_protocol_for_every_interface_method() -> None:
    mirror = await _connected(
        [
            *_ok(b"SVO A 1 B 1\n"),
            (b"SVO? A B\n", b"A=1 \nB=1\n"),
            *_ok(b"MOV A 0.125000 B -0.250000\n"),
            *_ok(b"MVR A 0.001000 B 0.000000\n"),
            (b"POS? A B\n", b"A=0.126000 \nB=-0.249500\n"),
            (b"ONT? A B\n", b"A=1 \nB=0\n"),
            # close: centre the mirror if the servo is closed
            (b"SVO? A B\n", b"A=1 \nB=1\n"),
            *_ok(b"MOV A 0.000000 B 0.000000\n"),
        ]
    )
    assert mirror.identity == IDENTITY
    assert await mirror.travel_range() == MirrorRange(-2500.0, 2500.0, -2000.0, 2000.0)
    await mirror.set_servo(True)
    assert await mirror.servo_enabled()
    await mirror.move_to(125.0, -250.0)
    await mirror.move_by(1.0, 0.0)
    tip, tilt = await mirror.position()
    assert (tip, tilt) == pytest.approx((126.0, -249.5))
    assert not await mirror.on_target()
    await mirror.close()
    mirror.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_declared_per_axis_commands() -> None:
    mirror = await _connected(
        [
            (b"POS? B\n", b"B=0.500000\n"),
            *_ok(b"SVO A 0\n"),
            (b"SVO? A\n", b"A=0\n"),
            *_ok(b"MOV B 1.000000\n"),
            (b"MOV? B\n", b"B=1.000000\n"),
            (b"ERR?\n", b"0\n"),
        ]
    )
    assert await mirror.readback.get(axis="B") == 0.5
    await mirror.servo.set(False, axis="A")
    assert await mirror.servo.get(axis="A") is False
    await mirror.target.set(1.0, axis="B")
    assert await mirror.target.get(axis="B") == 1.0
    assert await mirror.error_code.get() == 0
    mirror.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_rejected_move_reports_gcs_error() -> None:
    mirror = await _connected([(b"MOV A 1.000000 B 0.000000\n", b""), (b"ERR?\n", b"5\n")])
    with pytest.raises(DeviceError, match=r"GCS error 5 \(move attempted with servo off\)"):
        await mirror.move_to(1000.0, 0.0)
    assert mirror.counters.instrument_errors == 1
    mirror.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_garbled_and_wrong_axis_replies_are_counted() -> None:
    mirror = await _connected(
        [
            (b"POS? A B\n", b"A=0.1 \nC=0.2\n"),
            (b"POS? A B\n", b"~Q%\n"),
            (b"ONT? A B\n", b"A=1 \nB=1\n"),
        ]
    )
    with pytest.raises(DeviceError, match="expected axes"):
        await mirror.position()
    with pytest.raises(DeviceError, match="garbled reply to 'POS\\? A B'"):
        await mirror.position()
    assert mirror.garbled_replies == 2
    assert await mirror.on_target()
    mirror.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_targets_outside_travel_are_refused_before_sending() -> None:
    mirror = await _connected([])
    with pytest.raises(InputError, match=r"fsm tip_urad: 3000\.0 is outside \[-2500, 2500\]"):
        await mirror.move_to(3000.0, 0.0)
    with pytest.raises(InputError, match="axes"):
        PiGcsMirror("fsm", ScriptedTransport([]), axes=("A", "A"))
    mirror.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_emulator_first_order_response_over_tcp() -> None:
    clock = SimClock(1_700_000_000.0)
    emulator = GcsMirrorEmulator(clock, time_constant_s=0.002)
    resource = await emulator.start_tcp()
    mirror = PiGcsMirror("fsm", open_transport(resource), timeout_s=1.0)
    try:
        await mirror.connect(timeout_s=2.0)
        with pytest.raises(DeviceError, match="servo off"):
            await mirror.move_to(100.0, 0.0)
        await mirror.set_servo(True)
        t0 = clock.now_unix_s()
        await mirror.move_to(200.0, -100.0)
        await clock.advance_to(t0 + 0.002)  # one time constant: 1 - 1/e of the way
        tip, tilt = await mirror.position()
        assert tip == pytest.approx(200.0 * (1 - 1 / 2.718281828), rel=1e-3)
        assert tilt == pytest.approx(-100.0 * (1 - 1 / 2.718281828), rel=1e-3)
        assert not await mirror.on_target()
        await clock.advance_to(t0 + 0.05)
        assert await mirror.on_target()
        await mirror.move_by(-50.0, 0.0)
        await clock.advance_to(t0 + 0.1)
        tip, _ = await mirror.position()
        assert tip == pytest.approx(150.0, abs=1e-3)
        status = await mirror.status()
        assert status.healthy and status.detail["servo"] is True
    finally:
        await mirror.close()
        await emulator.stop()
    assert emulator.commands_received[-2:] == [b"MOV A 0.000000 B 0.000000", b"ERR?"]
