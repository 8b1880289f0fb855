"""The queue between a tagger driver's stream reader and `read`: tag buffers in arrival order,
bounded while streaming (back-pressure on the instrument), never blocking the end of a stream
(an error or the end marker always gets in)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from drivers.interfaces import DeviceTimeout, TagBuffer


class TagBufferQueue:
    """Tag buffers waiting for `read`: bounded while streaming (back-pressure), not when ending."""

    def __init__(self, depth: int, *, ended: bool = False) -> None:
        self.depth = depth
        self.ended = ended  # the end marker (or an error) was read: nothing more will come
        self.items: deque[TagBuffer | BaseException | None] = deque()
        self._changed = asyncio.Condition()

    async def put(
        self, item: TagBuffer | BaseException | None, *, wait: Callable[[], bool] | None = None
    ) -> None:
        """Append; while `wait()` holds and the queue is full, wait for the consumer first."""
        async with self._changed:
            if wait is not None:
                await self._changed.wait_for(lambda: len(self.items) < self.depth or not wait())
            self.items.append(item)
            self._changed.notify_all()

    async def get(self, timeout_s: float | None) -> TagBuffer | BaseException | None:
        """Pop the oldest item; TimeoutError if none arrives within timeout_s."""
        async with self._changed:
            # asyncio.timeout, not asyncio.wait_for: Python 3.11's wait_for can return an item
            # and lose a cancellation of the reader that lands in the same loop pass
            async with asyncio.timeout(timeout_s):
                await self._changed.wait_for(lambda: bool(self.items))
            item = self.items.popleft()
            self._changed.notify_all()
            return item

    async def wake(self) -> None:
        """Make a blocked `put` re-check its condition."""
        async with self._changed:
            self._changed.notify_all()

    async def read(self, owner: str, timeout_s: float | None) -> TagBuffer | None:
        """Measure: the next buffer, None once the stream has ended; the stream's error is
        raised; DeviceTimeout naming `owner` if nothing arrives within `timeout_s`."""
        if self.ended and not self.items:
            return None
        try:
            item = await self.get(timeout_s)
        except TimeoutError:
            raise DeviceTimeout(f"{owner}: no tag buffer within {timeout_s} s") from None
        if item is None:
            self.ended = True
            return None
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        return item
