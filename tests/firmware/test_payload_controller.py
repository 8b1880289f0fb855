"""The payload controller firmware shim on a real pty, driven through the real PayloadLink."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest
from spacepackets.ecss.tc import PusTc

from drivers.interfaces import DeviceError, DeviceTimeout
from drivers.payload_link import PayloadLink, TelecommandError
from drivers.transport import SerialTransport
from firmware_shims.payload_controller import PayloadController
from satqkd_core.errors import InputError
from satqkd_core.payload_icd import ASM, DisableReason, FailureCode
from satqkd_runtime.clock import SimClock
from sim_backends.instruments import SimPulsedSource

T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


@pytest.fixture
async def controller(clock: SimClock) -> AsyncIterator[PayloadController]:
    async with PayloadController(
        clock, link_timeout_s=3.0, housekeeping_interval_s=2.0, tick_s=0.1
    ) as controller:
        yield controller


@pytest.fixture
async def link(controller: PayloadController) -> AsyncIterator[PayloadLink]:
    assert controller.port_path is not None
    link = PayloadLink("payload-link", SerialTransport(controller.port_path, 115200))
    await link.connect(timeout_s=2.0)
    yield link
    await link.close()


async def _step_to(clock: SimClock, unix_s: float) -> None:
    """Advance simulated time and give the real pty a moment to carry what that produced."""
    await clock.advance_to(unix_s)
    await asyncio.sleep(0.02)


async def _events_until(link: PayloadLink, name: str) -> list[str]:
    seen = []
    while True:
        event = await link.next_event(2.0)
        seen.append(event.name)
        if event.name == name:
            return seen


async def test_noop_counts_and_reset_counters_clears(link: PayloadLink) -> None:
    await link.ping()
    await link.ping()
    hk = await link.request_housekeeping()
    assert hk.values["tc_accepted"] == 4  # connect's ping, two pings, this request
    assert hk.values["tc_rejected"] == hk.values["tc_failed"] == 0
    await link.reset_counters()
    assert await _events_until(link, "COUNTERS_RESET") == ["COUNTERS_RESET"]
    assert (await link.request_housekeeping()).values["tc_accepted"] == 1


async def test_bad_telecommands_are_rejected_counted_and_reported(link: PayloadLink) -> None:
    with pytest.raises(TelecommandError, match="rejected: UNKNOWN_SERVICE") as unknown:
        await link.send_telecommand(9, 9)
    with pytest.raises(TelecommandError, match="rejected: BAD_APP_DATA"):
        await link.send_telecommand(8, 1, b"\x00")
    with pytest.raises(TelecommandError, match="rejected: UNKNOWN_FUNCTION: no function 0x7777"):
        await link.send_telecommand(8, 1, b"\x77\x77")
    with pytest.raises(TelecommandError, match="rejected: BAD_APP_DATA: SOURCE_ENABLE takes 8"):
        await link.send_telecommand(8, 1, b"\x00\x02\x01")
    with pytest.raises(TelecommandError, match="failed: UNKNOWN_SID"):
        await link.send_telecommand(3, 27, struct.pack(">BH", 1, 9))
    assert unknown.value.code == 2
    hk = await link.request_housekeeping()
    assert (hk.values["tc_rejected"], hk.values["tc_failed"]) == (4, 1)
    rejected = [e.aux for e in link.events if e.name == "TC_REJECTED"]
    assert rejected[0] == {"service": 9, "subtype": 9, "code": 2}
    assert len(rejected) == 4


async def test_corrupt_and_foreign_packets_on_the_line(
    link: PayloadLink, controller: PayloadController
) -> None:
    corrupt = bytearray(PusTc(service=17, message_subtype=1, apid=0x065, seq_count=900).pack())
    corrupt[-1] ^= 0x01
    foreign = PusTc(service=17, message_subtype=1, apid=0x123, seq_count=901).pack()
    await link.transport.write(b"\x00\x55noise" + ASM + bytes(corrupt) + ASM + bytes(foreign))
    assert await _events_until(link, "TC_REJECTED") == ["TC_REJECTED"]
    await link.ping()  # the line still works after the noise
    hk = await link.request_housekeeping()
    assert hk.values["bad_packets"] == 1 and hk.values["tc_rejected"] == 1
    assert controller.counters.foreign_packets == 1
    assert link.counters.unmatched_verifications == 1  # the (1,2) for a TC this link never sent


async def test_the_source_needs_a_plan_and_stays_inside_its_window(
    link: PayloadLink, controller: PayloadController, clock: SimClock
) -> None:
    changes: list[bool] = []
    controller.on_source_change = changes.append
    with pytest.raises(TelecommandError, match="SOURCE_ENABLE failed: INTERLOCK: no pass plan"):
        await link.enable_source(T0 + 10)
    await link.load_pass_plan(5, 1, T0 + 10, T0 + 12, 100e6)
    with pytest.raises(TelecommandError, match="INTERLOCK: first pulse outside plan 5"):
        await link.enable_source(T0 + 5)
    await link.enable_source(T0 + 10)
    assert controller.source_enabled and controller.repetition_rate_hz == 100e6
    with pytest.raises(TelecommandError, match="INTERLOCK: cannot change rate while emitting"):
        await link.configure_source(50e6)
    for second in range(1, 13):  # keep the link alive while the plan runs out
        await _step_to(clock, T0 + second)
        await link.ping()
    await _step_to(clock, T0 + 12.2)
    assert (await _events_until(link, "SOURCE_DISABLED"))[-1:] == ["SOURCE_DISABLED"]
    assert not controller.source_enabled
    assert controller.disable_reason == DisableReason.PLAN_ENDED
    assert changes == [True, False]
    hk = await link.request_housekeeping()
    assert hk.values["tc_failed"] == 3 and hk.values["watchdog_trips"] == 0


async def test_the_source_goes_safe_when_the_link_goes_silent(
    link: PayloadLink, controller: PayloadController, clock: SimClock
) -> None:
    await link.load_pass_plan(6, 1, T0 + 1, T0 + 600, 100e6)
    await link.enable_source(T0 + 1)  # last telecommand at T0
    await _step_to(clock, T0 + 2.9)
    assert controller.source_enabled
    await _step_to(clock, T0 + 3.2)
    assert not controller.source_enabled
    assert controller.disable_reason == DisableReason.LINK_WATCHDOG
    seen = await _events_until(link, "SOURCE_DISABLED")
    assert seen[-2:] == ["LINK_LOST_SOURCE_SAFED", "SOURCE_DISABLED"]
    safed = next(e for e in link.events if e.name == "LINK_LOST_SOURCE_SAFED")
    assert safed.severity == 4 and 3.0 <= safed.aux["silence_s"] < 3.2
    hk = await link.request_housekeeping()
    assert hk.values["watchdog_trips"] == 1 and hk.values["source_enabled"] == 0
    assert hk.values["disable_reason"] == DisableReason.LINK_WATCHDOG
    await link.enable_source(T0 + 4)  # the link is back: the operator may re-enable
    assert controller.source_enabled


async def test_keep_alive_pings_feed_the_watchdog(
    link: PayloadLink, controller: PayloadController, clock: SimClock
) -> None:
    await link.load_pass_plan(7, 1, T0 + 1, T0 + 600, 100e6)
    await link.enable_source(T0 + 1)
    pinger = asyncio.create_task(link.keep_alive(1.0, clock))
    for step in range(1, 41):  # 10 s in quarter seconds, three watchdog periods
        await _step_to(clock, T0 + 0.25 * step)
    pinger.cancel()
    assert controller.source_enabled and controller.counters.watchdog_trips == 0
    assert controller.counters.tc_accepted >= 8


async def test_periodic_housekeeping_follows_its_interval(
    link: PayloadLink, clock: SimClock
) -> None:
    waiter = asyncio.create_task(link.wait_for_housekeeping(2.0))
    await _step_to(clock, T0 + 2.15)  # due at 2.0, sent on the 0.1 s tick at 2.1
    report = await waiter
    assert report.unix_s == pytest.approx(T0 + 2.1, abs=0.01)
    assert report.values["uptime_s"] == pytest.approx(2.1, abs=0.01)
    await link.set_housekeeping_interval(0.5)
    waiter = asyncio.create_task(link.wait_for_housekeeping(2.0))
    await _step_to(clock, T0 + 2.75)
    assert (await waiter).unix_s == pytest.approx(T0 + 2.7, abs=0.01)
    await link.disable_periodic_housekeeping()
    waiter = asyncio.create_task(link.wait_for_housekeeping(0.2))
    await _step_to(clock, T0 + 6.0)
    with pytest.raises(DeviceTimeout, match=r"no housekeeping report within 0\.2 s"):
        await waiter


async def test_telemetry_nobody_reads_is_dropped_and_counted(clock: SimClock) -> None:
    async with PayloadController(clock, housekeeping_interval_s=0.1, tick_s=0.1) as controller:
        await asyncio.sleep(0.01)  # let its periodic loop start waiting on the clock
        await clock.advance_to(T0 + 200.0)  # 2000 reports of ~70 bytes into an unread pty
        assert controller.counters.tm_dropped > 0
        produced = controller.counters.tm_sent + controller.counters.tm_dropped
        assert 1990 <= produced <= 2000  # one report per 0.1 s tick
        assert controller.counters.tm_sent * 70 < 200_000  # pty buffer + 64 KiB queue, not more


def test_bad_configuration_is_named(clock: SimClock) -> None:
    with pytest.raises(InputError, match="link_timeout_s must be a positive number"):
        PayloadController(clock, link_timeout_s=0.0)
    with pytest.raises(InputError, match="apid must be in"):
        PayloadController(clock, apid=0x7FF)


# --- the source hardware the controller owns ---------------------------------------------------


class _FlakyHardware:
    """A source whose enable can be refused and whose disable fails a given number of times."""

    def __init__(self, refuse_enable: str = "", disable_failures: int = 0) -> None:
        self.refuse_enable = refuse_enable
        self.disable_failures = disable_failures
        self.emitting = False
        self.calls: list[str] = []

    async def configure(self, repetition_rate_hz: float) -> None:
        self.calls.append(f"configure {repetition_rate_hz:g}")

    async def enable(self, first_pulse_unix_s: float) -> None:
        self.calls.append("enable")
        if self.refuse_enable:
            raise DeviceError(self.refuse_enable)
        self.emitting = True

    async def disable(self) -> None:
        self.calls.append("disable")
        if self.disable_failures:
            self.disable_failures -= 1
            raise DeviceError("laser controller: no reply to OUTP:STAT 0")
        self.emitting = False


@contextlib.asynccontextmanager
async def _controller_with(
    clock: SimClock, hardware: object
) -> AsyncIterator[tuple[PayloadController, PayloadLink]]:
    async with PayloadController(
        clock, link_timeout_s=3.0, tick_s=0.1, source_hardware=hardware
    ) as controller:
        assert controller.port_path is not None
        link = PayloadLink("payload-link", SerialTransport(controller.port_path, 115200))
        await link.connect(timeout_s=2.0)
        try:
            yield controller, link
        finally:
            await link.close()


async def test_the_controller_drives_its_source_hardware(clock: SimClock) -> None:
    laser = SimPulsedSource("laser", lambda index: None, clock)
    async with _controller_with(clock, laser) as (controller, link):
        assert controller.source_hardware is laser
        await link.load_pass_plan(8, 1, T0 + 1, T0 + 600, 100e6)
        assert not laser.enabled  # a plan alone does not emit
        await link.enable_source(T0 + 1)
        assert laser.enabled and laser.first_pulse_unix_s == T0 + 1
        assert laser.repetition_rate_hz == 100e6
        with pytest.raises(TelecommandError, match="INTERLOCK: the source is already emitting"):
            await link.enable_source(T0 + 2)
        await _step_to(clock, T0 + 3.2)  # no telecommand for 3 s: the watchdog trips
        assert not laser.enabled
        assert laser.history == [(T0, True), (pytest.approx(T0 + 3.0, abs=0.11), False)]


async def test_a_hardware_refusal_fails_the_enable_as_an_interlock(clock: SimClock) -> None:
    hardware = _FlakyHardware(refuse_enable="laser controller: interlock open")
    async with _controller_with(clock, hardware) as (controller, link):
        await link.load_pass_plan(9, 1, T0 + 1, T0 + 600, 100e6)
        with pytest.raises(TelecommandError) as refused:
            await link.enable_source(T0 + 1)
        assert refused.value.code == FailureCode.INTERLOCK
        assert "source hardware refused to emit: laser controller: interlock open" in str(
            refused.value
        )
        assert not controller.source_enabled and controller.counters.hardware_faults == 1
        await _step_to(clock, T0 + 0.15)  # the next tick makes sure it is off
        assert hardware.calls == ["configure 1e+08", "enable", "disable"]
        assert not controller.hardware_safe_pending


async def test_an_unconfirmed_safe_state_is_retried_every_tick(clock: SimClock) -> None:
    hardware = _FlakyHardware(disable_failures=2)
    async with _controller_with(clock, hardware) as (controller, link):
        await link.load_pass_plan(10, 1, T0 + 1, T0 + 600, 100e6)
        await link.enable_source(T0 + 1)
        assert hardware.emitting
        with pytest.raises(TelecommandError, match="did not confirm its safe state"):
            await link.disable_source()
        assert not controller.source_enabled and hardware.emitting
        await _step_to(clock, T0 + 0.15)  # tick 1: fails again
        assert hardware.emitting and controller.hardware_safe_pending
        await _step_to(clock, T0 + 0.25)  # tick 2: confirmed
        assert not hardware.emitting and not controller.hardware_safe_pending
        assert controller.counters.hardware_faults == 2
        await link.reset_counters()  # a safety record: survives RESET_COUNTERS
        assert controller.counters.hardware_faults == 2
