"""A daemon a test can kill in-process: its bus and its clock, which, once killed, never
return again (what SIGKILL leaves on disk and on the bus: none of its code runs on)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock


class KillableBus:
    """A MessageBus a test can kill: afterwards every call waits forever (nothing the daemon
    sends leaves, nothing reaches it), and `kill_before(name)` kills it at that publish."""

    def __init__(self, inner: MessageBus) -> None:
        self.inner = inner
        self.url = inner.url
        self.killed = asyncio.Event()
        self.kill_before: str | None = None

    @property
    def connected(self) -> bool:
        return self.inner.connected

    async def _dead(self) -> Any:
        await asyncio.Event().wait()

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if self.kill_before is not None and not self.killed.is_set():
            envelope = decode_envelope(payload)
            name = envelope.spec.name
            if name == "EVENT":
                name = "event:" + dct.event_by_id(envelope.fields["event_id"]).name
            if name == self.kill_before:
                self.killed.set()
        if self.killed.is_set():
            await self._dead()
        await self.inner.publish(topic, payload, qos)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        if self.killed.is_set():
            await self._dead()
        await self.inner.subscribe(topic_filter, qos)

    async def wait_connected(self) -> None:
        if self.killed.is_set():
            await self._dead()
        await self.inner.wait_connected()

    async def wait_disconnected(self) -> None:
        with contextlib.suppress(Exception):
            await self.inner.wait_disconnected()
            if not self.killed.is_set():
                return
        await self._dead()  # a dead process never learns its connection went

    async def messages(self) -> AsyncIterator[Any]:
        try:
            async for message in self.inner.messages():
                if self.killed.is_set():
                    await self._dead()
                yield message
        except Exception:
            if not self.killed.is_set():
                raise
        if self.killed.is_set():  # its connection closed: a dead process runs nothing on
            await self._dead()


class KillableClock:
    """The simulated clock as one daemon sees it: once its bus is killed, it never wakes."""

    judges_overruns = False

    def __init__(self, clock: SimClock, killed: asyncio.Event) -> None:
        self.clock, self.killed = clock, killed

    def now_unix_s(self) -> float:
        return self.clock.now_unix_s()

    def participating(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.clock.participating(name)

    async def sleep_until(self, unix_s: float) -> None:
        await self.clock.sleep_until(unix_s)
        if self.killed.is_set():
            await asyncio.Event().wait()
