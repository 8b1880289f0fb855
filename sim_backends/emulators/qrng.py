"""A streaming QRNG (TrueRNG / OneRNG kind) on a pty, a loopback TCP port or in memory.

Such a device takes no command: while it is powered it streams random bytes, and the host reads
them as they come (drivers/entropy_qrng.py). This emulator streams bytes from its seeded
generator at `rate_bytes_per_s` (real seconds, like the link latency of the other emulators:
a throughput, not dynamics) in a chunk every `period_s`. Output nobody takes is lost, as a USB
device's is when the host does not poll: on a pty once the kernel buffer is full, on TCP once
the socket's send buffer holds `_TCP_BACKLOG_BYTES`.

Faults (`qrng_faults`, settable at any time) make the raw stream fail the health tests:
`stuck` (every byte is `stuck_value`: the Repetition Count Test trips) and `biased` (every
third byte is `biased_value`, never two in a row, so the Repetition Count Test stays quiet and
the Adaptive Proportion Test catches the bias). The base class's `faults.silent` stops the
stream (a stalled device); `disconnect()` drops the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError
from satqkd_runtime.clock import Clock
from sim_backends.emulators.base import LineEmulator

__all__ = ["QrngEmulator", "QrngFaults"]

_TCP_BACKLOG_BYTES = 256 * 1024
_BIAS_PERIOD = 3  # every third byte carries the biased value


@dataclass
class QrngFaults:
    """What is wrong with the noise source right now (change fields at any time)."""

    stuck: bool = False  # every byte is stuck_value
    stuck_value: int = 0xA5
    biased: bool = False  # every third byte is biased_value (a third of the output)
    biased_value: int = 0x00

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("stuck_value", "biased_value"):
            _check_byte(value, name)
        super().__setattr__(name, value)


class QrngEmulator(LineEmulator):
    """A QRNG streaming seeded random bytes; it ignores anything written to it."""

    baudrate = 115200  # a USB CDC port ignores it

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        name: str = "qrng",
        rate_bytes_per_s: float = 200_000.0,
        period_s: float = 0.01,
        seed: int = 0,
    ) -> None:
        for label, value in (("rate_bytes_per_s", rate_bytes_per_s), ("period_s", period_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InputError(f"{label} must be a positive number, got {value!r}")
        super().__init__(name, clock, seed)
        self.rate_bytes_per_s = float(rate_bytes_per_s)
        self.period_s = float(period_s)
        self.qrng_faults = QrngFaults()
        self.bytes_streamed = 0  # generated, whether or not they reached a reader
        self.bytes_lost = 0  # generated while no reader took them
        self._carry = 0.0  # fractional bytes owed by the rate

    # --- protocol: nothing to answer -----------------------------------------------------------

    def respond(self, command: bytes) -> bytes | None:
        """Get: None: a streaming QRNG ignores what the host writes."""
        return None

    # --- endpoints: each also starts the stream ------------------------------------------------

    async def start_pty(self) -> str:
        """Control: serve on a new pty and start streaming."""
        resource = await super().start_pty()
        self._start_stream()
        return resource

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Control: serve on a TCP port and start streaming."""
        resource = await super().start_tcp(host, port)
        self._start_stream()
        return resource

    async def start_memory(self) -> str:
        """Control: serve through memory and start streaming."""
        resource = await super().start_memory()
        self._start_stream()
        return resource

    def _start_stream(self) -> None:
        self._tasks.append(asyncio.create_task(self._stream(), name=f"{self.name} stream"))

    # --- the stream ----------------------------------------------------------------------------

    def next_bytes(self, n: int) -> bytes:
        """Get: the next `n` bytes of the raw stream, faults applied (advances the stream)."""
        data = self._rng.integers(0, 256, size=n, dtype=np.uint8)
        faults = self.qrng_faults
        if faults.stuck:
            data[:] = faults.stuck_value
        elif faults.biased:
            value = faults.biased_value
            index = self.bytes_streamed + np.arange(n)
            marked = index % _BIAS_PERIOD == 0
            # other bytes never take the biased value: it never repeats, only recurs
            others = self._rng.integers(0, 255, size=n, dtype=np.uint16)
            others += others >= value
            data = np.where(marked, value, others).astype(np.uint8)
        self.bytes_streamed += n
        return data.tobytes()

    async def _stream(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.period_s)
            now = loop.time()
            # at most a few periods' worth after a stall of the event loop: no burst backlog
            elapsed = min(now - last, 4 * self.period_s)
            last = now
            if self.faults.silent:
                continue
            self._carry += elapsed * self.rate_bytes_per_s
            n = int(self._carry)
            self._carry -= n
            if n:
                data = self.next_bytes(n)
                self.bytes_lost += n - self._send(data)

    def _send(self, data: bytes) -> int:
        """Write stream bytes to whoever is attached; returns how many went out."""
        if self._memory_peer is not None:
            self._memory_peer._deliver(data)
            return len(data)
        if self._master_fd is not None:
            try:
                return os.write(self._master_fd, data)
            except OSError:  # full (EAGAIN) or no reader: lost, as on a USB device
                return 0
        client = self._client
        if client is not None and not client.is_closing():
            if client.transport.get_write_buffer_size() > _TCP_BACKLOG_BYTES:
                return 0
            with contextlib.suppress(OSError):
                client.write(data)
                return len(data)
        return 0


def _check_byte(value: object, label: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise InputError(f"{label} must be an int in 0..255, got {value!r}")
