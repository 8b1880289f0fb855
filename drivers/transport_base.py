"""The transport interface and the buffered base the byte-stream transports share."""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from pathlib import Path

from drivers.interfaces import DeviceDisconnected, DeviceTimeout
from satqkd_core.errors import InputError

_READ_CHUNK_BYTES = 4096
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _check_timeout(timeout_s: float, name: str = "timeout_s") -> float:
    value = float(timeout_s)
    if not math.isfinite(value) or value < 0.0:
        raise InputError(f"{name} must be a finite number of seconds >= 0, got {timeout_s!r}")
    return value


class Transport(ABC):
    """A byte stream to one instrument: open with a timeout, write, read framed replies, close."""

    name: str
    connected: bool

    @abstractmethod
    async def open(self, timeout_s: float = 5.0) -> None:
        """Control: open the link; DeviceTimeout naming the resource if it does not open in time."""

    @abstractmethod
    async def close(self) -> None:
        """Control: release the link (idempotent)."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Control: send bytes exactly as given."""

    @abstractmethod
    async def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Measure: bytes up to and including `terminator`."""

    @abstractmethod
    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        """Measure: exactly `n` bytes."""

    @abstractmethod
    async def read_available(self, timeout_s: float) -> bytes:
        """Measure: whatever arrives first (at least one byte)."""

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<{type(self).__name__} {self.name} {state}>"


class _BufferedTransport(Transport):
    """Reads served from a receive buffer that a reader (callback, task or thread) fills."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connected = False
        self._buffer = bytearray()
        self._data_arrived = asyncio.Event()
        self._lost_reason: str | None = None

    def _reset_buffer(self) -> None:
        self._buffer.clear()
        self._data_arrived = asyncio.Event()
        self._lost_reason = None

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        self._data_arrived.set()

    def _feed_lost(self, reason: str) -> None:
        if self._lost_reason is None:
            self._lost_reason = reason
        self.connected = False
        self._data_arrived.set()

    def _raise_if_unusable(self) -> None:
        if self._lost_reason is not None:
            raise DeviceDisconnected(f"{self.name}: {self._lost_reason}")
        if not self.connected:
            raise DeviceDisconnected(f"{self.name}: not connected")

    async def _wait_for_data(self, deadline: float, what: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._data_arrived.clear()
        remaining = deadline - loop.time()
        if remaining <= 0.0:
            # one pass through the loop so data already signalled by a reader is not missed
            await asyncio.sleep(0)
            if self._data_arrived.is_set():
                return
            raise DeviceTimeout(f"{self.name}: no {what} within {timeout_s:g} s")
        # asyncio.timeout_at, not wait_for: Python 3.11's wait_for returns the result of a wait
        # that finished in the same loop pass as a cancel() of the reading task, losing the
        # cancellation, so a reader stopped just as bytes arrive would go on reading forever
        try:
            async with asyncio.timeout_at(deadline):
                await self._data_arrived.wait()
        except TimeoutError:
            if self._data_arrived.is_set():
                return  # bytes arrived in the pass the deadline fell in
            raise DeviceTimeout(f"{self.name}: no {what} within {timeout_s:g} s") from None

    async def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Measure: bytes up to and including `terminator`."""
        if not isinstance(terminator, bytes | bytearray) or not terminator:
            raise InputError(f"terminator must be non-empty bytes, got {terminator!r}")
        timeout_s = _check_timeout(timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        searched_from = 0
        while True:
            index = self._buffer.find(terminator, searched_from)
            if index >= 0:
                end = index + len(terminator)
                reply = bytes(self._buffer[:end])
                del self._buffer[:end]
                return reply
            searched_from = max(0, len(self._buffer) - len(terminator) + 1)
            self._raise_if_unusable()
            await self._wait_for_data(deadline, f"reply ending in {bytes(terminator)!r}", timeout_s)

    async def read_exactly(self, n: int, timeout_s: float) -> bytes:
        """Measure: exactly `n` bytes."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError(f"n must be an int >= 0, got {n!r}")
        timeout_s = _check_timeout(timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self._buffer) < n:
            self._raise_if_unusable()
            await self._wait_for_data(deadline, f"{n} bytes (have {len(self._buffer)})", timeout_s)
        reply = bytes(self._buffer[:n])
        del self._buffer[:n]
        return reply

    async def read_available(self, timeout_s: float) -> bytes:
        """Measure: whatever arrives first (at least one byte)."""
        timeout_s = _check_timeout(timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._buffer:
            self._raise_if_unusable()
            await self._wait_for_data(deadline, "bytes", timeout_s)
        reply = bytes(self._buffer)
        self._buffer.clear()
        return reply


# --- TCP ---------------------------------------------------------------------------------------
