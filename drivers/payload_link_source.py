"""The quantum source as the payload computer reaches it: through the payload controller's link.

On the payload the daemon does not drive the laser itself. The controller MCU next to it does,
behind the CCSDS/PUS spacecraft link (`drivers.payload_link.PayloadLink`; emulated by
`firmware_shims.payload_controller`), and enforces the source interlock: emission only inside a
loaded pass plan's QKD window, safe state when no telecommand has arrived for its watchdog
period. `PayloadLinkSource` is a `PulsedSource` whose configure / enable / disable are PUS
function telecommands, so the daemon drives it like any other source, plus what only an
interlocked source has: loading the pass plan into the controller and reports (controller
events, housekeeping anomalies, link loss) for the daemon to pass on as its own events. Built
with the node's key directory (`BuildContext.keys`), its link signs every `enable` with the
emission key there and a new durable counter (SOURCE_ENABLE_SIGNED), which the controller's
laser interlock requires; a controller that refuses it answers INTERLOCK and stays safe.

It keeps the link alive: an are-you-alive (17,1) every `keep_alive_interval_s` of the injected
clock, from a task inside `clock.participating(...)`, so in simulation time waits for each
round trip and runs stay deterministic. Pings that go unanswered, or a line that fails, count as
a link failure: reported, then retried with exponential backoff on the same clock (a failed
line is closed and reopened; an open one that only lost the controller's answers is kept open,
so telemetry keeps arriving). While the link is down the controller's own watchdog puts the
source in its safe state; after reconnecting the driver reads the controller's housekeeping
again, so `enabled` says what the controller says, and a watchdog trip whose event was lost is
still reported.
The pulse pattern record is the on-board sequencer's (the payload computer holds it; the
controller only switches the laser).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from drivers.interfaces import (
    DeviceError,
    DeviceStatus,
    DeviceTimeout,
    PulsedSource,
    PulsePatternRecord,
)
from drivers.options import DriverOptions
from drivers.payload_link import PayloadEvent, PayloadLink, TelecommandError
from satqkd_core.errors import InputError
from satqkd_core.payload_icd import DisableReason, failure_code_name
from satqkd_runtime.clock import Clock

__all__ = [
    "InterlockedSource",
    "LinkSourceCounters",
    "PayloadLinkSource",
    "SourceReport",
]

log = logging.getLogger("satqkd.payload_link_source")

_REPORT_QUEUE_DEPTH = 256
_WAIT_FOREVER_S = 3600.0


@dataclass(frozen=True)
class SourceReport:
    """Something the source's controller reported that the daemon passes on as an event.

    kind: `safe_state` (the source went to its safe state without being commanded to),
    `fault` (the controller or its link misbehaved), `recovered` (the link is back)."""

    kind: Literal["safe_state", "fault", "recovered"]
    text: str


@dataclass
class LinkSourceCounters:
    """Link health as the payload computer sees it."""

    missed_pings: int = 0
    link_failures: int = 0
    reconnect_attempts: int = 0
    reconnects: int = 0
    watchdog_trips: int = 0
    reports_dropped: int = 0


@runtime_checkable
class InterlockedSource(Protocol):
    """A source behind a controller that needs the pass plan and reports on its own."""

    async def load_pass_plan(
        self,
        plan_id: int,
        station_id: int,
        qkd_start_unix_s: float,
        qkd_stop_unix_s: float,
        repetition_rate_hz: float,
    ) -> None:
        """Control: load the plan whose QKD window the interlock enforces."""
        ...

    async def clear_pass_plan(self, plan_id: int) -> None:
        """Control: unload a plan (the source goes to its safe state)."""
        ...

    async def next_report(self) -> SourceReport:
        """Measure: the next report for the daemon, in arrival order."""
        ...


class PayloadLinkSource(PulsedSource):
    """A PulsedSource whose commands are PayloadLink telecommands to the payload controller."""

    def __init__(
        self,
        name: str,
        link: PayloadLink,
        clock: Clock,
        *,
        pattern: Callable[[np.ndarray], Any] | None = None,
        keep_alive_interval_s: float = 2.0,
        missed_pings_before_reconnect: int = 3,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
    ) -> None:
        super().__init__(name)
        if not isinstance(link, PayloadLink):
            raise InputError(f"link must be a PayloadLink, got {type(link).__name__}")
        for value, what in (
            (keep_alive_interval_s, "keep_alive_interval_s"),
            (reconnect_min_s, "reconnect_min_s"),
            (reconnect_max_s, "reconnect_max_s"),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"{what} must be a positive number of seconds, got {value!r}")
        if reconnect_max_s < reconnect_min_s:
            raise InputError(
                f"reconnect_max_s must be >= reconnect_min_s, got {reconnect_max_s!r} "
                f"< {reconnect_min_s!r}"
            )
        if (
            isinstance(missed_pings_before_reconnect, bool)
            or not isinstance(missed_pings_before_reconnect, int)
            or missed_pings_before_reconnect < 1
        ):
            raise InputError(
                "missed_pings_before_reconnect must be an int >= 1, "
                f"got {missed_pings_before_reconnect!r}"
            )
        self.link = link
        self.clock = clock
        self.keep_alive_interval_s = float(keep_alive_interval_s)
        self.missed_pings_before_reconnect = missed_pings_before_reconnect
        self.reconnect_min_s = float(reconnect_min_s)
        self.reconnect_max_s = float(reconnect_max_s)
        self.counters = LinkSourceCounters()
        self.controller_housekeeping: dict[str, float] = {}
        # the controller's fine-tracking figures, per housekeeping report: (on-board time,
        # locked, rms residual over the locked samples since the report before; NaN: none)
        self.fine_tracking_reports: deque[tuple[float, bool, float]] = deque(maxlen=4096)
        self.last_link_error = ""
        self._pattern = pattern
        self._enabled = False
        self._link_up = False
        self._connect_timeout_s = 5.0
        self._plan: tuple[int, int, float, float, float] | None = None
        self._trips_accounted: int | None = None  # controller's watchdog trips already reported
        self._reports: asyncio.Queue[SourceReport] = asyncio.Queue(_REPORT_QUEUE_DEPTH)
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle ---------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: open the link, read the controller's state, start keep-alive and reports."""
        self._connect_timeout_s = float(timeout_s)
        await self.link.connect(timeout_s)
        try:
            await self._read_controller_state()
        except BaseException:
            await self.link.close()
            raise
        self._link_up = True
        self._tasks = [
            asyncio.create_task(self._keep_alive(), name=f"{self.name} keep-alive"),
            asyncio.create_task(self._forward_events(), name=f"{self.name} events"),
            asyncio.create_task(self._watch_housekeeping(), name=f"{self.name} housekeeping"),
        ]

    async def close(self) -> None:
        """Control: command the safe state (if the link is up), stop the tasks, close the link."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task, outcome in zip(
            tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, Exception):  # a task that died before: say so, then close
                log.error("%s: %s had failed: %r", self.name, task.get_name(), outcome)
        if self._link_up and self.link.link_up:
            try:
                await self.link.disable_source()
                self._enabled = False
            except DeviceError as exc:  # the controller's watchdog safes it anyway
                log.warning("%s: safe state on close not confirmed: %s", self.name, exc)
        self._link_up = False
        await self.link.close()

    async def status(self) -> DeviceStatus:
        """Measure: link state, the driver's counters and the controller's latest housekeeping."""
        link_status = await self.link.status()
        return DeviceStatus(
            self.name,
            link_status.identity,
            link_status.connected,
            link_status.healthy and self._link_up,
            {
                **link_status.detail,
                "enabled": self._enabled,
                "source_link": asdict(self.counters),
                "last_link_error": self.last_link_error,
            },
        )

    # --- PulsedSource -------------------------------------------------------------------------

    async def configure(self, repetition_rate_hz: float) -> None:
        """Set: the pulse repetition rate (refused by the controller while emitting)."""
        await self._command(self.link.configure_source(repetition_rate_hz))

    async def enable(self, first_pulse_unix_s: float) -> None:
        """Control: start emitting, pulse 0 at `first_pulse_unix_s` (inside the loaded plan)."""
        await self._command(self.link.enable_source(first_pulse_unix_s))
        self._enabled = True

    async def disable(self) -> None:
        """Control: put the source in its safe state."""
        await self._command(self.link.disable_source())
        self._enabled = False

    @property
    def enabled(self) -> bool:
        """Get: whether the controller last said (or confirmed) that the source emits."""
        return self._enabled

    async def read_pattern(self, pulse_index: np.ndarray) -> PulsePatternRecord:
        """Get: the on-board sequencer's record (basis, bit, intensity) for the pulses."""
        if self._pattern is None:
            raise DeviceError(f"{self.name}: no sequencer pattern source is wired to this source")
        record = self._pattern(np.asarray(pulse_index, dtype=np.int64))
        return PulsePatternRecord(record.basis, record.bit, record.intensity)

    # --- InterlockedSource --------------------------------------------------------------------

    async def load_pass_plan(
        self,
        plan_id: int,
        station_id: int,
        qkd_start_unix_s: float,
        qkd_stop_unix_s: float,
        repetition_rate_hz: float,
    ) -> None:
        """Control: load the plan whose QKD window the controller's interlock enforces."""
        plan = (plan_id, station_id, qkd_start_unix_s, qkd_stop_unix_s, repetition_rate_hz)
        await self._command(self.link.load_pass_plan(*plan))
        self._plan = plan

    async def clear_pass_plan(self, plan_id: int) -> None:
        """Control: unload a plan on the controller (the source goes to its safe state)."""
        await self._command(self.link.clear_pass_plan(plan_id))
        self._enabled = False
        if self._plan is not None and self._plan[0] == plan_id:
            self._plan = None

    async def next_report(self) -> SourceReport:
        """Measure: the next report for the daemon, in arrival order."""
        return await self._reports.get()

    # --- commands -----------------------------------------------------------------------------

    async def _command(self, telecommand: Awaitable[None]) -> None:
        """Run one telecommand; its failure becomes a DeviceError naming this source."""
        if not self._link_up:
            if asyncio.iscoroutine(telecommand):
                telecommand.close()  # never sent: do not leave it un-awaited
            raise DeviceError(
                f"{self.name}: payload controller link is down ({self.last_link_error}); "
                "the controller's watchdog keeps the source in its safe state"
            )
        try:
            await telecommand
        except TelecommandError as exc:
            raise TelecommandError(f"{self.name}: {exc}", exc.code, exc.reason) from None
        except DeviceError as exc:
            raise type(exc)(f"{self.name}: {exc}") from None

    def _report(self, kind: Literal["safe_state", "fault", "recovered"], text: str) -> None:
        if self._reports.full():
            self._reports.get_nowait()  # the newest reports say most about the present
            self.counters.reports_dropped += 1
        self._reports.put_nowait(SourceReport(kind, text))

    # --- link health --------------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        # lockstep: in simulation time waits for each round trip (satqkd_runtime.clock.SimClock)
        with self.clock.participating(f"{self.name} keep-alive"):
            next_ping = self.clock.now_unix_s()
            missed = 0
            while True:
                try:
                    await self.link.ping()
                    missed = 0
                except DeviceTimeout as exc:
                    missed += 1
                    self.counters.missed_pings += 1
                    self.last_link_error = str(exc)
                    if missed >= self.missed_pings_before_reconnect:
                        await self._recover(f"{missed} keep-alive pings unanswered")
                        missed = 0
                except TelecommandError as exc:  # the line works; the controller objected
                    self._report("fault", f"payload controller refused a keep-alive: {exc}")
                except DeviceError as exc:
                    await self._recover(str(exc))
                    missed = 0
                next_ping += self.keep_alive_interval_s
                now = self.clock.now_unix_s()
                if next_ping <= now:  # a reconnection took longer: keep the phase, skip ahead
                    periods = math.floor((now - next_ping) / self.keep_alive_interval_s) + 1
                    next_ping += periods * self.keep_alive_interval_s
                await self.clock.sleep_until(next_ping)

    async def _recover(self, reason: str) -> None:
        """Count a link failure, report it, reconnect with exponential backoff on the clock."""
        self.counters.link_failures += 1
        self._link_up = False
        self.last_link_error = reason
        lost_unix_s = self.clock.now_unix_s()
        self._report(
            "fault",
            f"payload controller link lost: {reason}; reconnecting "
            "(the controller's watchdog puts the source in its safe state)",
        )
        delay_s = self.reconnect_min_s
        attempts = 0
        while True:
            attempts += 1
            self.counters.reconnect_attempts += 1
            try:
                if self.link.link_up:
                    # the line is open and telemetry still flows (the controller's watchdog
                    # event among it): only the controller's answers are missing
                    await self.link.ping()
                else:
                    await self.link.close()
                    await self.link.connect(self._connect_timeout_s)
                await self._read_controller_state()
                break
            except DeviceError as exc:
                self.last_link_error = str(exc)
            await self.clock.sleep_until(self.clock.now_unix_s() + delay_s)
            delay_s = min(2.0 * delay_s, self.reconnect_max_s)
        self._link_up = True
        self.counters.reconnects += 1
        down_s = self.clock.now_unix_s() - lost_unix_s
        state = "emitting" if self._enabled else "in its safe state"
        self._report(
            "recovered",
            f"payload controller link restored after {attempts} attempt(s), {down_s:.1f} s "
            f"down; source {state}",
        )

    async def _read_controller_state(self) -> None:
        """Take the source state from the controller, reloading our plan if it lost it."""
        report = await self.link.request_housekeeping()
        self._on_housekeeping(report.values, report.unix_s)
        plan = self._plan
        if (
            plan is not None
            and int(report.values["plan_id"]) != plan[0]
            and plan[3] > self.clock.now_unix_s()
        ):
            await self.link.load_pass_plan(*plan)  # the controller restarted since we loaded it

    # --- what the controller reports ----------------------------------------------------------

    async def _forward_events(self) -> None:
        while True:
            try:
                event = await self.link.next_event(_WAIT_FOREVER_S)
            except DeviceTimeout:
                continue
            self._on_event(event)

    def _on_event(self, event: PayloadEvent) -> None:
        if event.name == "SOURCE_ENABLED":
            self._enabled = True
        elif event.name == "SOURCE_DISABLED":
            self._enabled = False
        elif event.name == "LINK_LOST_SOURCE_SAFED":
            self.counters.watchdog_trips += 1
            if self._trips_accounted is not None:
                self._trips_accounted += 1
            self._enabled = False
            self._report(
                "safe_state",
                f"payload controller watchdog: no telecommand for "
                f"{event.aux['silence_s']:.1f} s; source in its safe state",
            )
        elif event.name == "TC_REJECTED":
            aux = event.aux
            self._report(
                "fault",
                f"payload controller rejected TC({int(aux['service'])},{int(aux['subtype'])}): "
                f"{failure_code_name(int(aux['code']))}",
            )

    async def _watch_housekeeping(self) -> None:
        while True:
            try:
                report = await self.link.next_housekeeping(_WAIT_FOREVER_S)
            except DeviceTimeout:
                continue
            self._on_housekeeping(report.values, report.unix_s)

    def fine_tracking_over(self, start_unix_s: float, stop_unix_s: float) -> tuple[float, float]:
        """Measure: (rms residual in urad, locked fraction) of the controller's fine-tracking
        loop from its housekeeping reports stamped within [start, stop]: the rms of the
        reports' interval rms values, and the fraction of reports that saw the loop locked;
        (NaN, NaN) when no report there carries a figure (no loop, or no report)."""
        window = [r for r in self.fine_tracking_reports if start_unix_s <= r[0] <= stop_unix_s]
        rms = [r[2] for r in window if math.isfinite(r[2])]
        if not rms and not any(r[1] for r in window):
            return math.nan, math.nan
        residual = math.sqrt(sum(v * v for v in rms) / len(rms)) if rms else math.nan
        return residual, sum(r[1] for r in window) / len(window)

    def _on_housekeeping(self, values: dict[str, float], unix_s: float | None = None) -> None:
        """Compare with the previous report: what an event would have said, had it arrived."""
        previous = self.controller_housekeeping
        self.controller_housekeeping = dict(values)
        if unix_s is not None and "fine_residual_rms_urad" in values:
            self.fine_tracking_reports.append(
                (
                    float(unix_s),
                    bool(values.get("tracking_locked")),
                    float(values["fine_residual_rms_urad"]),
                )
            )
        trips = int(values["watchdog_trips"])
        if self._trips_accounted is not None and trips > self._trips_accounted:
            # the trip's event report was lost (a line that was down): housekeeping still tells
            self.counters.watchdog_trips += trips - self._trips_accounted
            self._report(
                "safe_state",
                f"payload controller reports {trips - self._trips_accounted} watchdog trip(s) "
                "while its link was down; source in its safe state",
            )
        self._trips_accounted = trips  # also after a controller restart (its count from 0)
        if previous:
            corrupt = int(values["bad_packets"]) - int(previous["bad_packets"])
            if corrupt > 0:
                self._report(
                    "fault", f"payload controller counted {corrupt} corrupt packet(s) on its line"
                )
        emitting = bool(values["source_enabled"])
        if self._enabled and not emitting:
            reason = _disable_reason_name(int(values["disable_reason"]))
            log.info("%s: controller reports the source safe (%s)", self.name, reason)
        self._enabled = emitting


def _disable_reason_name(code: int) -> str:
    try:
        return DisableReason(code).name
    except ValueError:
        return f"reason {code}"


class PayloadLinkSourceOptions(DriverOptions):
    """Options of `PayloadLinkSource` and the `PayloadLink` under it: the link's addressing and
    reply timeout, and the keep-alive that holds the controller's link-loss watchdog off."""

    apid: Annotated[int, Field(ge=0, le=2047)] | None = None
    source_id: Annotated[int, Field(ge=0, le=255)] = 1
    reply_timeout_s: Annotated[float, Field(gt=0.0, le=60.0)] = 2.0
    keep_alive_interval_s: Annotated[float, Field(gt=0.0, le=60.0)] = 2.0
    missed_pings_before_reconnect: Annotated[int, Field(ge=1, le=100)] = 3
    reconnect_min_s: Annotated[float, Field(gt=0.0)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0.0)] = 30.0
