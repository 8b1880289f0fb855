"""Counted, reported and backed-off access to the station's instruments during a pass.

An instrument that fails (a DeviceError such as a timeout or a dropped link, an OSError, or
anything else a driver raises) never ends the pass: the failure is counted for the pass and
for the daemon's housekeeping, reported as ATP_INSTRUMENT_FAULT, and the instrument is left
alone for a backoff that doubles with each consecutive failure (clock time, capped). The first
call after the backoff is the retry; its success is reported as ATP_INSTRUMENT_RECOVERED.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from drivers.interfaces import DeviceError
from satqkd_core.errors import InputError
from satqkd_runtime.clock import Clock

log = logging.getLogger("satqkd.ogs.atp")

#: returned by `InstrumentGuard.call` when the instrument was not asked or did not answer
FAILED: Any = object()

DEGRADED_BEHAVIOUR = {
    "beacon": "program track only",
    "fsm": "the beacon spot steers the gimbal",
    "gimbal": "mount not driven",
    "detectors": "detector monitoring paused",
}


@dataclass
class _Health:
    """Backoff state of one instrument."""

    faulted: bool = False
    retry_unix_s: float = -math.inf
    backoff_s: float = 0.0
    last_error: str = ""


class InstrumentGuard:
    """Calls instruments for one pass; failures become counts, events and backoff."""

    def __init__(
        self,
        clock: Clock,
        emit_event: Callable[[str, str], Awaitable[None]],
        retry_s: float,
        retry_max_s: float,
        pass_faults: dict[str, int],
        daemon_faults: dict[str, int],
    ) -> None:
        self.clock = clock
        self.emit_event = emit_event
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.pass_faults = pass_faults
        self.daemon_faults = daemon_faults
        self._health = {name: _Health() for name in DEGRADED_BEHAVIOUR}

    def available(self, name: str) -> bool:
        """Get: whether an instrument may be asked now (not inside a backoff)."""
        return self.clock.now_unix_s() >= self._health[name].retry_unix_s

    def last_error(self, name: str) -> str:
        """Get: the text of an instrument's most recent failure ('' if none)."""
        return self._health[name].last_error

    async def call(
        self, name: str, operation: Callable[[], Awaitable[Any]], *, wait: bool = True
    ) -> Any:
        """Get: the operation's result; FAILED if the instrument is inside its backoff (unless
        `wait` is False: safe-state commands are always tried) or fails now."""
        health = self._health[name]
        now = self.clock.now_unix_s()
        if wait and now < health.retry_unix_s:
            return FAILED
        try:
            result = await operation()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever a driver raises, the pass goes on
            if not isinstance(exc, (DeviceError, OSError, TimeoutError, InputError)):
                log.exception("unexpected failure of the %s", name)
            await self._failed(name, health, exc, now)
            return FAILED
        if health.faulted:
            health.faulted, health.backoff_s = False, 0.0
            await self.emit_event("ATP_INSTRUMENT_RECOVERED", f"{name} answers again")
        return result

    async def _failed(self, name: str, health: _Health, exc: Exception, now: float) -> None:
        backoff = 2.0 * health.backoff_s if health.faulted else self.retry_s
        health.backoff_s = min(backoff, self.retry_max_s)
        health.faulted = True
        health.retry_unix_s = now + health.backoff_s
        health.last_error = str(exc)
        self.pass_faults[name] = self.pass_faults.get(name, 0) + 1
        self.daemon_faults[name] = self.daemon_faults.get(name, 0) + 1
        await self.emit_event(
            "ATP_INSTRUMENT_FAULT",
            f"{name}: {type(exc).__name__}: {exc}; retry in {health.backoff_s:g} s, "
            f"{DEGRADED_BEHAVIOUR[name]}",
        )
