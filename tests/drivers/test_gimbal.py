"""PTU gimbal driver: byte-exact protocol, errors and garbles, and against its pty emulator."""

from __future__ import annotations

import asyncio

import pytest

from drivers.gimbal import PtuGimbal
from drivers.interfaces import DeviceError, DeviceTimeout, GimbalLimits
from drivers.transport import ScriptedTransport, open_transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.gimbal import PtuEmulator

RES = 46.2857  # arcsec per count
COUNTS_PER_DEG = 3600.0 / RES

HANDSHAKE = [
    (b"ED\n", b"*\r\n"),
    (b"FT\n", b"*\r\n"),
    (b"V\n", b"* Pan-Tilt Controller v3.4.3\r\n"),
    (b"PR\n", b"* 46.2857\r\n"),
    (b"TR\n", b"* 46.2857\r\n"),
    (b"PN\n", b"* -14000\r\n"),
    (b"PX\n", b"* 14000\r\n"),
    (b"TN\n", b"* -700\r\n"),
    (b"TX\n", b"* 7000\r\n"),
]


async def _connected(pairs: list[tuple[bytes, bytes]], **options: object) -> PtuGimbal:
    script = ScriptedTransport(HANDSHAKE + pairs, name="ptu-script")
    gimbal = PtuGimbal("gimbal", script, timeout_s=0.2, **options)  # type: ignore[arg-type]
    await gimbal.connect(timeout_s=1.0)
    return gimbal


async def test_connect_and_slew_protocol() -> None:
    gimbal = await _connected(
        [
            (b"CI\n", b"*\r\n"),
            (b"PP778\n", b"*\r\n"),  # 10 deg
            (b"TP3111\n", b"*\r\n"),  # 40 deg
            (b"PP\n", b"* 12\r\n"),
            (b"TP\n", b"* -3\r\n"),
            (b"H\n", b"*\r\n"),  # close: halt
        ],
        pan_resolution_arcsec=RES,
    )
    assert gimbal.identity == "Pan-Tilt Controller v3.4.3"
    await gimbal.move_to(10.0, 40.0)
    az, el = await gimbal.position()
    assert az == pytest.approx(12 / COUNTS_PER_DEG)
    assert el == pytest.approx(-3 / COUNTS_PER_DEG)
    await gimbal.close()
    gimbal.transport.assert_all_consumed()  # type: ignore[attr-defined]
    assert gimbal.counters.commands_sent == len(HANDSHAKE) + 6


async def test_rate_mode_limits_and_slew_protocol() -> None:
    gimbal = await _connected(
        [
            (b"CV\n", b"*\r\n"),
            (b"PS-78\n", b"*\r\n"),  # -1 deg/s
            (b"TS39\n", b"*\r\n"),  # 0.5 deg/s
            (b"PS\n", b"* -78\r\n"),
            (b"TS\n", b"* 39\r\n"),
            (b"PN\n", b"* -14000\r\n"),
            (b"PX\n", b"* 14000\r\n"),
            (b"TN\n", b"* -700\r\n"),
            (b"TX\n", b"* 7000\r\n"),
            (b"CI\n", b"*\r\n"),
            (b"PS389\n", b"*\r\n"),  # 5 deg/s
            (b"PA156\n", b"*\r\n"),  # 2 deg/s^2
            (b"TS389\n", b"*\r\n"),
            (b"TA156\n", b"*\r\n"),
            (b"H\n", b"*\r\n"),
        ]
    )
    await gimbal.set_rate(-1.0, 0.5)
    az_rate, el_rate = await gimbal.rate()
    assert az_rate == pytest.approx(-78 / COUNTS_PER_DEG)
    assert el_rate == pytest.approx(39 / COUNTS_PER_DEG)
    limits = await gimbal.limits()
    expected = GimbalLimits(
        -14000 * RES / 3600, 14000 * RES / 3600, -700 * RES / 3600, 7000 * RES / 3600
    )
    assert vars(limits) == pytest.approx(vars(expected))
    await gimbal.set_slew(5.0, 2.0)
    await gimbal.halt()
    gimbal.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_unsolicited_limit_hits_are_recorded() -> None:
    gimbal = await _connected(
        [
            (b"PP\n", b"!P\r\n* 100\r\n"),  # a limit hit just before the reply
            (b"", b"!T\r\n"),  # one between commands
            (b"TP\n", b"* 5\r\n"),
        ]
    )
    await gimbal.pan_position.get()
    assert gimbal.limit_hits == ("az",)
    assert await gimbal.tilt_position.get() == 5
    assert gimbal.limit_hits == ("az", "el")
    gimbal.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_poll_events_without_a_command() -> None:
    gimbal = await _connected([(b"", b"!P\r\n!T\r\n")])
    assert await gimbal.poll_events() == ("az", "el")
    gimbal.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_instrument_error_and_garbled_reply_are_counted() -> None:
    gimbal = await _connected(
        [
            (b"PS\n", b"! Illegal command\r\n"),
            (b"PP\n", b"* twelve\r\n"),
            (b"TP\n", b"~x#\r\n"),
            (b"TP\n", b"* 7\r\n"),
        ]
    )
    with pytest.raises(DeviceError, match=r"gimbal \(ptu-script\): 'PS' rejected: Illegal command"):
        await gimbal.pan_speed.get()
    with pytest.raises(DeviceError, match=r"garbled reply to 'PP': 'twelve'"):
        await gimbal.pan_position.get()
    with pytest.raises(DeviceError, match=r"garbled reply to 'TP'"):
        await gimbal.tilt_position.get()
    assert gimbal.garbled_replies == 2
    assert gimbal.counters.instrument_errors == 1
    assert await gimbal.tilt_position.get() == 7  # the driver keeps working
    gimbal.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_out_of_limits_pointing_is_refused_before_sending() -> None:
    gimbal = await _connected([])
    with pytest.raises(InputError, match="outside"):
        await gimbal.move_to(200.0, 10.0)
    with pytest.raises(InputError, match=r"pan_position \(counts\): 9999999999 is outside"):
        await gimbal.pan_position.set(9_999_999_999)
    gimbal.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_wrong_resolution_or_identity_fails_connect() -> None:
    script = ScriptedTransport(HANDSHAKE[:4])
    gimbal = PtuGimbal("gimbal", script, pan_resolution_arcsec=12.857)
    with pytest.raises(
        DeviceError, match=r"configured resolution 12\.857 .* controller's 46\.2857"
    ):
        await gimbal.connect(timeout_s=1.0)
    assert not script.connected
    bad = [*HANDSHAKE[:2], (b"V\n", b"* Laser Controller 1.0\r\n"), *HANDSHAKE[3:]]
    gimbal = PtuGimbal("gimbal", ScriptedTransport(bad))
    with pytest.raises(DeviceError, match="not the expected instrument"):
        await gimbal.connect(timeout_s=1.0)


async def test_power_on_echo_is_skipped_until_echo_is_disabled() -> None:
    echoed = [(b"ED\n", b"ED\r\n*\r\n"), *HANDSHAKE[1:], (b"PP\n", b"* 3\r\n")]
    gimbal = PtuGimbal("gimbal", ScriptedTransport(echoed))
    await gimbal.connect(timeout_s=1.0)
    assert await gimbal.pan_position.get() == 3
    gimbal.transport.assert_all_consumed()  # type: ignore[attr-defined]


async def test_silent_instrument_times_out_naming_it() -> None:
    gimbal = PtuGimbal("az-el mount", ScriptedTransport([(b"ED\n", b"")]), timeout_s=0.05)
    with pytest.raises(DeviceTimeout, match=r"az-el mount \(scripted\).*'ED'"):
        await gimbal.connect(timeout_s=1.0)


# --- against the emulator on a real pty ------------------------------------------------------


async def test_emulator_slews_and_reports_limit_hit_over_pty() -> None:
    clock = SimClock(1_700_000_000.0)
    emulator = PtuEmulator(clock)
    resource = await emulator.start_pty()
    assert resource.startswith("serial://")
    gimbal = PtuGimbal("gimbal", open_transport(resource), pan_resolution_arcsec=RES)
    try:
        await gimbal.connect(timeout_s=2.0)
        assert "Pan-Tilt" in gimbal.identity
        await gimbal.set_slew(10.0, 20.0)
        await gimbal.move_to(30.0, 20.0)
        t0 = clock.now_unix_s()
        await clock.advance_to(t0 + 1.0)
        az_mid, _ = await gimbal.position()
        # speed-limited: 1 s at most 10 deg/s (after a 0.5 s ramp) cannot reach 30 deg
        assert 2.0 < az_mid < 10.0
        await clock.advance_to(t0 + 6.0)
        az, el = await gimbal.position()
        assert az == pytest.approx(30.0, abs=0.02)
        assert el == pytest.approx(20.0, abs=0.02)
        # velocity mode towards the +180 deg pan limit: the unit stops there and says !P
        await gimbal.set_rate(10.0, 0.0)
        for step in range(1, 40):
            await clock.advance_to(t0 + 6.0 + 0.5 * step)
        await asyncio.sleep(0.05)  # let the unprompted line cross the pty
        assert await gimbal.poll_events() == ("az",)
        az, _ = await gimbal.position()
        assert az == pytest.approx(14000 / COUNTS_PER_DEG, abs=0.02)
        status = await gimbal.status()
        assert status.healthy and status.detail["limit_hits"] == 1
    finally:
        await gimbal.close()
        await emulator.stop()
    assert emulator.commands_received[-1] == b"H"  # close left the unit halted
