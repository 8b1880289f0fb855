"""The payload's source through its controller: PayloadLinkSource against the controller
firmware on a real pty, the controller driving an in-process source as its hardware."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from drivers.interfaces import DeviceError
from drivers.payload_link import PayloadLink, TelecommandError
from drivers.payload_link_source import InterlockedSource, PayloadLinkSource, SourceReport
from drivers.transport import SerialTransport
from firmware_shims.payload_controller import PayloadController
from firmware_shims.source_sequencer import SourceSequencer
from satqkd_core.errors import InputError
from satqkd_core.payload_icd import DisableReason, FailureCode
from satqkd_runtime.clock import SimClock
from sim_backends.instruments import SimPulsedSource
from tests.drivers.cuttable_line import CuttableLine

T0 = 1_700_000_000.0


@dataclass
class Bench:
    clock: SimClock
    controller: PayloadController
    laser: SimPulsedSource
    line: CuttableLine
    source: PayloadLinkSource
    sequencer: SourceSequencer


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    clock = SimClock(T0)
    sequencer = SourceSequencer(1234, (0.5, 0.25, 0.25), 0.5)
    laser = SimPulsedSource("laser", sequencer.pattern, clock)
    async with PayloadController(
        clock, link_timeout_s=3.0, tick_s=0.1, source_hardware=laser
    ) as controller:
        assert controller.port_path is not None
        line = CuttableLine(controller.port_path, 115200)
        source = PayloadLinkSource(
            "source",
            PayloadLink("payload-link", line, reply_timeout_s=0.3),
            clock,
            pattern=sequencer.pattern,
            keep_alive_interval_s=1.0,
            missed_pings_before_reconnect=2,
            reconnect_min_s=1.0,
            reconnect_max_s=2.0,
        )
        await source.connect(timeout_s=2.0)
        try:
            yield Bench(clock, controller, laser, line, source, sequencer)
        finally:
            line.cut = False
            await source.close()


async def _step_to(clock: SimClock, unix_s: float, step_s: float = 0.25) -> None:
    """Advance simulated time in steps, giving the pty a moment after each."""
    while clock.now_unix_s() < unix_s - 1e-9:
        await clock.advance_to(min(clock.now_unix_s() + step_s, unix_s))
        await asyncio.sleep(0.005)


async def _reports_until(source: PayloadLinkSource, kind: str) -> list[SourceReport]:
    seen = []
    while True:
        report = await asyncio.wait_for(source.next_report(), 5.0)
        seen.append(report)
        if report.kind == kind:
            return seen


async def test_enable_outside_the_plan_window_is_refused_with_the_firmware_code(
    bench: Bench,
) -> None:
    source = bench.source
    assert isinstance(source, InterlockedSource)
    with pytest.raises(DeviceError) as no_plan:
        await source.enable(T0 + 10)
    assert isinstance(no_plan.value, TelecommandError)
    assert no_plan.value.code == FailureCode.INTERLOCK
    assert str(no_plan.value) == (
        "source: payload-link: SOURCE_ENABLE failed: INTERLOCK: no pass plan loaded"
    )
    await source.load_pass_plan(5, 7, T0 + 10, T0 + 20, 100e6)
    with pytest.raises(TelecommandError, match="INTERLOCK: first pulse outside plan 5's") as out:
        await source.enable(T0 + 25)
    assert out.value.code == FailureCode.INTERLOCK
    assert not source.enabled and not bench.laser.enabled
    await source.enable(T0 + 10)  # inside the window
    assert source.enabled and bench.laser.enabled
    assert bench.laser.first_pulse_unix_s == T0 + 10 and bench.laser.repetition_rate_hz == 100e6
    await source.disable()
    assert not source.enabled and not bench.laser.enabled
    assert bench.controller.disable_reason == DisableReason.COMMANDED


async def test_the_pattern_record_is_the_sequencers(bench: Bench) -> None:
    index = np.array([0, 1, 7, 1_000_003], dtype=np.int64)
    record = await bench.source.read_pattern(index)
    expected = bench.sequencer.pattern(index)
    for got, want in zip(
        (record.basis, record.bit, record.intensity),
        (expected.basis, expected.bit, expected.intensity),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)


async def test_keep_alive_feeds_the_controller_watchdog(bench: Bench) -> None:
    await bench.source.load_pass_plan(6, 7, T0 + 1, T0 + 600, 100e6)
    await bench.source.enable(T0 + 1)
    await _step_to(bench.clock, T0 + 12.0)  # four watchdog periods without a command
    assert bench.laser.enabled and bench.controller.counters.watchdog_trips == 0
    assert bench.source.counters.missed_pings == 0
    assert bench.controller.counters.tc_accepted >= 12  # one ping a simulated second
    status = await bench.source.status()
    assert status.healthy and status.detail["enabled"] is True
    assert status.detail["source_link"]["link_failures"] == 0


async def test_a_silent_link_safes_the_source_and_is_reconnected(bench: Bench) -> None:
    source, clock = bench.source, bench.clock
    await source.load_pass_plan(7, 7, T0 + 1, T0 + 600, 100e6)
    await source.enable(T0 + 1)
    bench.line.cut = True  # from now on no telecommand reaches the controller
    await _step_to(clock, T0 + 3.5)
    assert not bench.laser.enabled  # the firmware's watchdog, 3 s after the last TC
    assert bench.controller.disable_reason == DisableReason.LINK_WATCHDOG
    reports = await _reports_until(source, "safe_state")
    assert [r.kind for r in reports] == ["fault", "safe_state"]
    assert reports[0].text.startswith("payload controller link lost: 2 keep-alive pings")
    assert reports[1].text.startswith("payload controller watchdog: no telecommand for 3.")
    assert not source.enabled
    with pytest.raises(DeviceError, match="payload controller link is down"):
        await source.enable(T0 + 4)  # nothing goes out while reconnecting
    bench.line.cut = False
    await _step_to(clock, T0 + 9.0)  # the next reconnection attempt, after its backoff
    recovered = await _reports_until(source, "recovered")
    assert recovered[-1].text.startswith("payload controller link restored after ")
    assert recovered[-1].text.endswith("source in its safe state")
    counters = source.counters
    assert (counters.link_failures, counters.reconnects, counters.watchdog_trips) == (1, 1, 1)
    assert counters.missed_pings >= 2 and counters.reconnect_attempts >= 2
    await source.enable(T0 + 9.5)  # the link is back: the plan still allows emission
    assert bench.laser.enabled


async def test_a_dead_line_is_counted_reported_and_retried_with_backoff(bench: Bench) -> None:
    source, clock = bench.source, bench.clock
    await bench.controller.close()  # the controller's end of the line is gone (EIO on the pty)
    await _step_to(clock, T0 + 1.0)  # the next keep-alive finds the line dead
    reports = await _reports_until(source, "fault")
    assert reports[-1].text.startswith("payload controller link lost: ")
    with pytest.raises(DeviceError, match="source: payload controller link is down"):
        await source.disable()
    first = source.counters.reconnect_attempts
    await _step_to(clock, T0 + 8.0)  # backoff 1 s then 2 s (the maximum): about 4 more tries
    assert source.counters.link_failures == 1 and source.counters.reconnects == 0
    assert 3 <= source.counters.reconnect_attempts - first <= 5
    assert not (await source.status()).healthy


def test_bad_arguments_are_named() -> None:
    clock = SimClock(T0)
    link = PayloadLink("payload-link", SerialTransport("/dev/null"))
    with pytest.raises(InputError, match="link must be a PayloadLink"):
        PayloadLinkSource("source", "serial:///dev/null", clock)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="keep_alive_interval_s must be a positive number"):
        PayloadLinkSource("source", link, clock, keep_alive_interval_s=0.0)
    with pytest.raises(InputError, match="reconnect_max_s must be >= reconnect_min_s"):
        PayloadLinkSource("source", link, clock, reconnect_min_s=5.0, reconnect_max_s=1.0)
    with pytest.raises(InputError, match="missed_pings_before_reconnect must be an int >= 1"):
        PayloadLinkSource("source", link, clock, missed_pings_before_reconnect=0)


async def test_read_pattern_without_a_sequencer_is_a_device_error() -> None:
    clock = SimClock(T0)
    source = PayloadLinkSource(
        "source", PayloadLink("payload-link", SerialTransport("/dev/null")), clock
    )
    with pytest.raises(DeviceError, match="source: no sequencer pattern source"):
        await source.read_pattern(np.arange(3, dtype=np.int64))
