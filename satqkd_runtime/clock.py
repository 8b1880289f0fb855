"""Injected clocks: every daemon takes its time from one of these, never from `time` directly.

`RealClock` follows UTC; `SimClock` is advanced by a scenario, so a ten-minute pass runs in
seconds with the same daemon code. Loops schedule on absolute deadlines (`sleep_until`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
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

    def participating(self, name: str) -> AbstractContextManager[None]:
        """Control: mark the calling task as a loop whose work between sleeps must finish before
        simulated time moves on (lockstep); a no-op against real time."""
        ...


class SimulationStalled(RuntimeError):
    """A lockstep participant did not come back to its clock; the message names it."""


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

    @contextlib.contextmanager
    def participating(self, name: str) -> Iterator[None]:
        """Control: nothing to do: real time does not wait for anyone."""
        yield


class SimClock:
    """Simulated time, moved forward only by `advance_to`; sleepers wake in deadline order.

    Lockstep: a task inside `participating(name)` (an ATP loop, a link keep-alive) may do real
    I/O between two sleeps, e.g. round trips to an emulator over a socket. Time does not move
    past a deadline until every participant has come back to `sleep_until` (or left), so what
    such a loop reads and commands happens at the same simulated instants on every run, however
    long its I/O takes in wall time. That is what keeps a pass with instruments behind emulators
    deterministic. A participant that does not come back within `settle_timeout_s` of wall time
    stops the simulation with `SimulationStalled` naming it.
    """

    judges_overruns = False

    def __init__(self, start_unix_s: float, settle_timeout_s: float = 60.0) -> None:
        self._now = float(start_unix_s)
        self._sleepers: list[tuple[float, int, asyncio.Future[None], asyncio.Task | None]] = []
        self._order = itertools.count()
        self.settle_timeout_s = float(settle_timeout_s)
        self._participants: dict[asyncio.Task, str] = {}
        self._busy: set[asyncio.Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def now_unix_s(self) -> float:
        """Get the simulated UTC time."""
        return self._now

    @contextlib.contextmanager
    def participating(self, name: str) -> Iterator[None]:
        """Control: the calling task joins the lockstep until the block ends (see the class)."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("participating() must be called from inside an asyncio task")
        if task in self._participants:
            raise RuntimeError(f"task is already participating as {self._participants[task]!r}")
        self._participants[task] = name
        self._mark(task, busy=True)
        try:
            yield
        finally:
            del self._participants[task]
            self._mark(task, busy=False)

    def _mark(self, task: asyncio.Task, busy: bool) -> None:
        if busy and task in self._participants:
            self._busy.add(task)
            self._idle.clear()
        else:
            self._busy.discard(task)
            if not self._busy:
                self._idle.set()

    async def sleep_until(self, unix_s: float) -> None:
        """Wait until the simulation has advanced to `unix_s`."""
        if unix_s <= self._now:
            await asyncio.sleep(0)
            return
        task = asyncio.current_task()
        participant = task if task in self._participants else None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (float(unix_s), next(self._order), future, participant))
        if participant is not None:
            self._mark(participant, busy=False)
        try:
            await future
        finally:
            if participant is not None:
                self._mark(participant, busy=True)

    async def _settle(self) -> None:
        """Wait until no participant is busy between two sleeps."""
        deadline = time.monotonic() + self.settle_timeout_s
        while True:
            for task in [t for t in self._busy if t.done()]:
                self._busy.discard(task)
            if not self._busy:
                self._idle.set()
                return
            self._idle.clear()
            remaining = deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):  # not wait_for (issue 13)
                    await self._idle.wait()
            except TimeoutError:
                names = sorted(self._participants.get(t, "?") for t in self._busy)
                raise SimulationStalled(
                    f"simulated time held at {self._now:.3f}: {', '.join(names)} did not return "
                    f"to the clock within {self.settle_timeout_s:g} s of wall time"
                ) from None

    async def advance_to(self, unix_s: float) -> None:
        """Move time forward to `unix_s`, waking each sleeper at its own deadline in turn."""
        if unix_s < self._now:
            raise ValueError(f"simulated time cannot go back: {unix_s} < {self._now}")
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= unix_s:
            deadline, _, future, participant = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                if participant is not None:
                    self._mark(participant, busy=True)  # busy from now: it owns this instant
                future.set_result(None)
            # let the woken task run up to its next await before waking the next one
            for _ in range(3):
                await asyncio.sleep(0)
            await self._settle()
        self._now = float(unix_s)
        await asyncio.sleep(0)

    @property
    def pending_sleepers(self) -> int:
        """Get the number of tasks waiting on a future deadline."""
        return sum(1 for _, _, f, _ in self._sleepers if not f.done())
