"""Injected clocks: every daemon takes its time from one of these, never from `time` directly.

`RealClock` follows UTC; `SimClock` is advanced by a scenario, so a ten-minute pass runs in
seconds with the same daemon code. Loops schedule on absolute deadlines (`sleep_until`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """What a daemon may ask of time."""

    #: whether lateness against this clock means anything: a scenario advances simulated time
    #: without waiting for daemons' I/O, so only the real clock can judge loop overruns
    judges_overruns: bool

    def now_unix_s(self) -> float:
        """Get the current UTC time in seconds since the Unix epoch."""
        ...

    async def sleep_until(self, unix_s: float) -> None:
        """Wait until the clock reads at least `unix_s` (returns at once if it already does)."""
        ...


class RealClock:
    """Wall-clock UTC time."""

    judges_overruns = True

    def now_unix_s(self) -> float:
        """Get UTC now."""
        return time.time()

    async def sleep_until(self, unix_s: float) -> None:
        """Wait until UTC reaches `unix_s`."""
        delay = unix_s - time.time()
        if delay > 0:
            await asyncio.sleep(delay)


class SimClock:
    """Simulated time, moved forward only by `advance_to`; sleepers wake in deadline order."""

    judges_overruns = False

    def __init__(self, start_unix_s: float) -> None:
        self._now = float(start_unix_s)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_unix_s(self) -> float:
        """Get the simulated UTC time."""
        return self._now

    async def sleep_until(self, unix_s: float) -> None:
        """Wait until the simulation has advanced to `unix_s`."""
        if unix_s <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (float(unix_s), next(self._order), future))
        await future

    async def advance_to(self, unix_s: float) -> None:
        """Move time forward to `unix_s`, waking each sleeper at its own deadline in turn."""
        if unix_s < self._now:
            raise ValueError(f"simulated time cannot go back: {unix_s} < {self._now}")
        while self._sleepers and self._sleepers[0][0] <= unix_s:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            # let the woken task run up to its next await before waking the next one
            for _ in range(3):
                await asyncio.sleep(0)
        self._now = float(unix_s)
        await asyncio.sleep(0)

    @property
    def pending_sleepers(self) -> int:
        """Get the number of tasks waiting on a future deadline."""
        return sum(1 for _, _, f in self._sleepers if not f.done())
