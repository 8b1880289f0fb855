"""The payload controller's telecommands: parse each one (acceptance) and perform it (completion).

`ControllerCommands` is the command side of `firmware_shims.payload_controller.PayloadController`
(which inherits it): the PUS services it answers (17,1 are-you-alive; 3,27 / 3,5 / 3,6 / 3,31
housekeeping; 8,1 perform function), the checks of each TC's app data, and the functions of the
source and the pass plan with their interlocks (plan window, configured rate, the laser
interlock's judgement of a request to emit). A parse failure is an acceptance failure (1,2);
a failure while performing is a completion failure (1,8). The line, the hardware, the periodic
tick and the telemetry are the controller's (`payload_controller.py`).
"""

from __future__ import annotations

import inspect
import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spacepackets.ecss.tc import PusTc

from satqkd_core.errors import InputError
from satqkd_core.payload_icd import (
    ACK_ACCEPTANCE,
    ACK_COMPLETION,
    FUNCTION_ARGUMENTS,
    HOUSEKEEPING_SID,
    DisableReason,
    FailureCode,
    FunctionId,
    InterlockReason,
    unpack_housekeeping_intervals,
    unpack_sid_list,
)

if TYPE_CHECKING:
    from firmware_shims.laser_interlock import LaserInterlock

__all__ = ["CommandFailure", "ControllerCommands", "ControllerCounters", "PassPlan"]

_Action = Callable[[], Awaitable[None] | None]


@dataclass
class ControllerCounters:
    """Command and packet counters reported in housekeeping."""

    tc_accepted: int = 0
    tc_rejected: int = 0
    tc_failed: int = 0
    bad_packets: int = 0
    foreign_packets: int = 0
    watchdog_trips: int = 0
    tm_sent: int = 0
    tm_dropped: int = 0
    hardware_faults: int = 0


@dataclass(frozen=True)
class PassPlan:
    """A loaded pass plan: the QKD window the source may emit in, and its rate."""

    plan_id: int
    station_id: int
    qkd_start_unix_s: float
    qkd_stop_unix_s: float
    repetition_rate_hz: float


class CommandFailure(Exception):
    """A telecommand refused (at acceptance) or failed (at completion), with its PUS code."""

    def __init__(self, code: FailureCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ControllerCommands:
    """The telecommand side of the payload controller (a base of `PayloadController`, which
    provides the state named below and the hardware, event and telemetry methods)."""

    counters: ControllerCounters
    plan: PassPlan | None
    source_enabled: bool
    repetition_rate_hz: float
    first_pulse_unix_s: float | None
    hardware_safe_pending: bool
    interlock: LaserInterlock | None
    periodic_housekeeping: bool
    housekeeping_interval_s: float
    _next_housekeeping_unix_s: float

    async def _execute(self, tc: PusTc) -> None:
        request_id = bytes(tc.sp_header.pack()[:4])
        ack = tc.pus_tc_sec_header.ack_flags
        key = (tc.service, tc.message_subtype)
        handler = self._handlers().get(key)
        try:
            if handler is None:
                raise CommandFailure(FailureCode.UNKNOWN_SERVICE, f"no TC ({key[0]},{key[1]})")
            action = handler(bytes(tc.app_data))  # parse: failures here are acceptance failures
        except CommandFailure as failure:
            self.counters.tc_rejected += 1
            self._verification(request_id, 2, failure.code, failure.reason)
            self._event("TC_REJECTED", tc.service, tc.message_subtype, int(failure.code))
            return
        self.counters.tc_accepted += 1
        if ack & ACK_ACCEPTANCE:
            self._verification(request_id, 1)
        try:
            outcome = action()
            if inspect.isawaitable(outcome):  # a function that drives the hardware
                await outcome
        except CommandFailure as failure:
            self.counters.tc_failed += 1
            self._verification(request_id, 8, failure.code, failure.reason)
            return
        if ack & ACK_COMPLETION:
            self._verification(request_id, 7)

    def _handlers(self) -> dict[tuple[int, int], Callable[[bytes], _Action]]:
        return {
            (17, 1): lambda data: self._parse_none(data, lambda: self._send_tm(17, 2, b"")),
            (3, 27): lambda data: self._parse_sids(data, self._one_shot_housekeeping),
            (3, 5): lambda data: self._parse_sids(data, lambda _: self._set_periodic(True)),
            (3, 6): lambda data: self._parse_sids(data, lambda _: self._set_periodic(False)),
            (3, 31): self._parse_interval,
            (8, 1): self._parse_function,
        }

    @staticmethod
    def _parse_none(data: bytes, action: Callable[[], None]) -> Callable[[], None]:
        if data:
            raise CommandFailure(FailureCode.BAD_APP_DATA, f"expected no app data, got {len(data)}")
        return action

    def _parse_sids(self, data: bytes, action: Callable[[list[int]], None]) -> Callable[[], None]:
        try:
            sids = unpack_sid_list(data)
        except InputError:
            raise CommandFailure(
                FailureCode.BAD_APP_DATA, "expected N u8 then N SIDs u16"
            ) from None

        def run() -> None:
            unknown = [sid for sid in sids if sid != HOUSEKEEPING_SID]
            if unknown:
                raise CommandFailure(FailureCode.UNKNOWN_SID, f"no housekeeping SID {unknown}")
            action(sids)

        return run

    def _parse_interval(self, data: bytes) -> Callable[[], None]:
        try:
            pairs = unpack_housekeeping_intervals(data)
        except InputError:
            raise CommandFailure(
                FailureCode.BAD_APP_DATA, "expected N u8 then N (SID, ms)"
            ) from None

        def run() -> None:
            for sid, interval_ms in pairs:
                if sid != HOUSEKEEPING_SID:
                    raise CommandFailure(FailureCode.UNKNOWN_SID, f"no housekeeping SID {sid}")
                if interval_ms < 100:
                    raise CommandFailure(
                        FailureCode.INVALID_PARAMETER, f"interval {interval_ms} ms < 100 ms"
                    )
                self.housekeeping_interval_s = interval_ms / 1000.0
                self._next_housekeeping_unix_s = (
                    self.clock.now_unix_s() + self.housekeeping_interval_s
                )

        return run

    def _parse_function(self, data: bytes) -> _Action:
        if len(data) < 2:
            raise CommandFailure(FailureCode.BAD_APP_DATA, "expected a function id u16")
        raw_id = struct.unpack_from(">H", data)[0]
        try:
            function = FunctionId(raw_id)
        except ValueError:
            raise CommandFailure(
                FailureCode.UNKNOWN_FUNCTION, f"no function 0x{raw_id:04X}"
            ) from None
        layout = struct.Struct(FUNCTION_ARGUMENTS[function])
        if len(data) - 2 != layout.size:
            raise CommandFailure(
                FailureCode.BAD_APP_DATA,
                f"{function.name} takes {layout.size} argument bytes, got {len(data) - 2}",
            )
        arguments = layout.unpack_from(data, 2)
        if any(isinstance(a, float) and not math.isfinite(a) for a in arguments):
            raise CommandFailure(FailureCode.BAD_APP_DATA, f"{function.name}: non-finite argument")
        return lambda: self._perform(function, arguments)

    async def _perform(self, function: FunctionId, arguments: tuple) -> None:
        now = self.clock.now_unix_s()
        if function is FunctionId.SOURCE_CONFIGURE:
            (rate,) = arguments
            if not 0.0 < rate <= 10e9:
                raise CommandFailure(FailureCode.INVALID_PARAMETER, f"rate {rate} Hz")
            if self.source_enabled:
                raise CommandFailure(FailureCode.INTERLOCK, "cannot change rate while emitting")
            self.repetition_rate_hz = rate
        elif function in (FunctionId.SOURCE_ENABLE, FunctionId.SOURCE_ENABLE_SIGNED):
            if self.interlock is not None and not self.interlock.check_request(function, arguments):
                self._event("UNAUTHENTICATED_EMISSION_REQUEST", int(function) & 0xFF)
                await self._trip(InterlockReason.UNAUTHENTICATED_REQUEST)
                raise CommandFailure(FailureCode.INTERLOCK, "unauthenticated emission request")
            await self._enable_source(arguments[0], now)
        elif function is FunctionId.SOURCE_DISABLE:
            was_enabled = self.source_enabled
            await self._set_source(False, DisableReason.COMMANDED)
            if not was_enabled:  # already safe by state: try an unconfirmed hardware again
                await self._make_hardware_safe()
            if self.hardware_safe_pending:  # the state is safe, the hardware has not confirmed
                raise CommandFailure(
                    FailureCode.INTERLOCK, "source hardware did not confirm its safe state"
                )
        elif function is FunctionId.LOAD_PASS_PLAN:
            plan = PassPlan(*arguments)
            if not plan.qkd_start_unix_s < plan.qkd_stop_unix_s or plan.qkd_stop_unix_s <= now:
                raise CommandFailure(
                    FailureCode.INVALID_PARAMETER, "need qkd_start < qkd_stop and stop in future"
                )
            if not 0.0 < plan.repetition_rate_hz <= 10e9:
                raise CommandFailure(FailureCode.INVALID_PARAMETER, "repetition rate")
            if self.source_enabled:
                raise CommandFailure(FailureCode.INTERLOCK, "a plan is executing")
            self.plan = plan
            self.repetition_rate_hz = plan.repetition_rate_hz
            self._event("PASS_PLAN_LOADED", plan.plan_id)
        elif function is FunctionId.CLEAR_PASS_PLAN:
            (plan_id,) = arguments
            if self.plan is None or self.plan.plan_id != plan_id:
                raise CommandFailure(FailureCode.INVALID_PARAMETER, f"plan {plan_id} not loaded")
            await self._set_source(False, DisableReason.PLAN_CLEARED)
            self.plan = None
            self._event("PASS_PLAN_CLEARED", plan_id)
        else:  # RESET_COUNTERS
            # watchdog trips and hardware faults are safety records, not command counters
            self.counters = ControllerCounters(
                watchdog_trips=self.counters.watchdog_trips,
                hardware_faults=self.counters.hardware_faults,
            )
            self._event("COUNTERS_RESET")

    async def _enable_source(self, first_pulse_unix_s: float, now: float) -> None:
        plan = self.plan
        if plan is None:
            raise CommandFailure(FailureCode.INTERLOCK, "no pass plan loaded")
        if not plan.qkd_start_unix_s <= first_pulse_unix_s < plan.qkd_stop_unix_s:
            raise CommandFailure(
                FailureCode.INTERLOCK, f"first pulse outside plan {plan.plan_id}'s QKD window"
            )
        if now >= plan.qkd_stop_unix_s:
            raise CommandFailure(FailureCode.INTERLOCK, f"plan {plan.plan_id}'s window is over")
        if self.repetition_rate_hz <= 0.0:
            raise CommandFailure(FailureCode.INTERLOCK, "repetition rate not configured")
        if self.source_enabled:
            raise CommandFailure(FailureCode.INTERLOCK, "the source is already emitting")
        if self.interlock is not None:
            reasons = self._interlock_reasons(now)
            if reasons:
                raise CommandFailure(FailureCode.INTERLOCK, f"laser interlock: {reasons!r}")
        await self._start_hardware(first_pulse_unix_s)
        self.first_pulse_unix_s = first_pulse_unix_s
        await self._set_source(True, DisableReason.NONE)

    def _set_periodic(self, enabled: bool) -> None:
        self.periodic_housekeeping = enabled
        self._next_housekeeping_unix_s = self.clock.now_unix_s() + self.housekeeping_interval_s

    def _one_shot_housekeeping(self, sids: list[int]) -> None:
        for _ in sids:
            self._send_housekeeping()
