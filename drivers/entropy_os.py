"""The operating system's CSPRNG as an entropy source: the production default.

`os.urandom` reads the kernel's cryptographically secure generator (getrandom(2) on Linux),
which the kernel seeds from its own entropy sources and reseeds continuously; it never blocks
once the kernel is seeded at boot. Its output is computationally secure, not information-
theoretically random: a key drawn from it is as strong as the kernel's generator (see
docs/decisions/0017-entropy-source-instrument.md). It has no transport: a bench names it with
`in-process://os_entropy`, and unlike the in-process simulation drivers it is a host service,
allowed in production daemons.
"""

from __future__ import annotations

import asyncio
import os

from drivers.entropy import DrawCounter, check_draw, refuse_seeded_in_production
from drivers.interfaces import DeviceDisconnected, DeviceStatus, EntropyFailure, EntropySource

__all__ = ["OsEntropySource", "refuse_seeded_in_production"]

#: draws larger than this are made in a worker thread, so the event loop never stalls
_THREAD_THRESHOLD_BYTES = 1 << 20


class OsEntropySource(EntropySource):
    """Random bytes from `os.urandom`, counted by purpose prefix."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._connected = False
        self._counter = DrawCounter()

    @property
    def seeded(self) -> bool:
        """Get: False: the kernel's generator is never seeded by this program."""
        return False

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: check the kernel generator answers (one byte, not counted)."""
        try:
            os.urandom(1)
        except (OSError, NotImplementedError) as exc:
            raise EntropyFailure(f"{self.name}: os.urandom is unavailable: {exc}") from None
        self._connected = True

    async def close(self) -> None:
        """Control: mark the source closed (nothing to release)."""
        self._connected = False

    async def status(self) -> DeviceStatus:
        """Measure: identity and what was drawn."""
        return DeviceStatus(
            self.name,
            "operating system CSPRNG (os.urandom)",
            self._connected,
            self._connected,
            {"drawn_bytes": self._counter.total},
        )

    async def read(self, n_bytes: int, purpose: str) -> bytes:
        """Get: `n_bytes` bytes of `os.urandom` for `purpose` (InputError for a bad request,
        DeviceDisconnected before connect, EntropyFailure if the kernel refuses)."""
        prefix = check_draw(n_bytes, purpose)
        if not self._connected:
            raise DeviceDisconnected(f"{self.name}: not connected")
        try:
            if n_bytes > _THREAD_THRESHOLD_BYTES:
                data = await asyncio.to_thread(os.urandom, n_bytes)
            else:
                data = os.urandom(n_bytes)
        except (OSError, NotImplementedError) as exc:
            raise EntropyFailure(f"{self.name}: os.urandom failed: {exc}") from None
        self._counter.record(prefix, n_bytes)
        return data

    @property
    def drawn_bytes(self) -> dict[str, int]:
        """Get: bytes delivered so far, by purpose prefix."""
        return self._counter.by_prefix
