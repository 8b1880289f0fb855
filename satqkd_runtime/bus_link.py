"""A message bus whose messages on some topics cross a link that takes time.

`LinkedBus` wraps a `MessageBus`. A publish on a topic the `crosses_link` predicate accepts is
handed to `deliver_at(size_bytes, now) -> instant` (the link's model: when the message
arrives, on the event loop's clock) and published on the wrapped bus at that instant by one
worker, in the order of the publishes; the publisher does not wait for the link, as a sender
on a real link does not. Every other publish, and everything else, goes to the wrapped bus
unchanged. The model itself (range delay, serialisation) is the caller's: the runtime knows
nothing of orbits. A model that keeps its own time (e.g. simulated time) gives `wait_until`,
awaited with each instant instead of sleeping until it on the event loop, and
`on_delivered(published)`, called after each link message is handed on (True) or lost (False),
in the order of the publishes, so it learns when each message reached its receiver.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from satqkd_runtime.bus import MessageBus

__all__ = ["LinkedBus"]

_log = logging.getLogger(__name__)


class LinkedBus:
    """`MessageBus` with delayed delivery of the topics that cross a link (module docstring)."""

    def __init__(
        self,
        bus: MessageBus,
        deliver_at: Callable[[int, float], float],
        crosses_link: Callable[[str], bool],
        on_delivered: Callable[[bool], None] | None = None,
        wait_until: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._bus = bus
        self._on_delivered = on_delivered
        self._wait_until = wait_until
        self._deliver_at = deliver_at
        self._crosses_link = crosses_link
        self._queue: asyncio.Queue[tuple[float, str, bytes, int]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.delayed_messages = 0
        self.failed_messages = 0

    async def __aenter__(self) -> LinkedBus:
        self._worker = asyncio.create_task(self._deliver(), name="linked-bus")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish now, or, on a topic that crosses the link, when the link delivers it."""
        if not self._crosses_link(topic):
            await self._bus.publish(topic, payload, qos)
            return
        if self._worker is None:
            raise RuntimeError("LinkedBus used outside `async with`")
        loop = asyncio.get_running_loop()
        self._queue.put_nowait((self._deliver_at(len(payload), loop.time()), topic, payload, qos))

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            instant, topic, payload, qos = await self._queue.get()
            if self._wait_until is not None:
                await self._wait_until(instant)
            elif (wait := instant - loop.time()) > 0:
                await asyncio.sleep(wait)
            try:
                await self._bus.publish(topic, payload, qos)
                self.delayed_messages += 1
                published = True
            except (OSError, TimeoutError, ValueError) as exc:
                # as a lossy link would: the message is lost, the protocol's timeouts act
                self.failed_messages += 1
                published = False
                _log.warning("linked bus: %s not delivered: %s", topic, exc)
            if self._on_delivered is not None:
                self._on_delivered(published)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)
