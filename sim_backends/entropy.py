"""The deterministic entropy source of simulations: a scenario seed reproduces every draw.

The output for the k-th draw (k = 0, 1, ...) of one purpose string is SHAKE-256 of
(domain, seed, purpose, k), each field length-prefixed, truncated to the length asked for. It
depends on nothing else, so two tasks drawing for different purposes get the same bytes
whatever order the event loop runs them in; draws of one purpose are numbered in the order
they are made. `seeded` is True: daemons refuse it unless told the run is a test
(`drivers.entropy.refuse_seeded_in_production`). Registered in-process only, as
`sim_entropy`, the way `sim_pulsed_source` is.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Annotated

from pydantic import Field

from drivers.entropy import DrawCounter, check_draw
from drivers.interfaces import Device, DeviceDisconnected, DeviceStatus, EntropySource
from drivers.options import DriverOptions
from drivers.registry import BuildRequest, DriverSpec, register_driver
from satqkd_core.errors import InputError

__all__ = ["SeededEntropyOptions", "SeededEntropySource", "seeded_draw"]

_DOMAIN = b"satqkd seeded entropy v1"
_MAX_SEED_BYTES = 1024


def _field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def _seed_bytes(seed: int | bytes) -> bytes:
    if isinstance(seed, bytes):
        if len(seed) > _MAX_SEED_BYTES:
            raise InputError(f"seed must be at most {_MAX_SEED_BYTES} bytes, got {len(seed)}")
        return b"b" + seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be an int >= 0 or bytes, got {seed!r}")
    return b"i" + str(seed).encode("ascii")  # decimal text: the same bytes on every platform


def seeded_draw(seed: int | bytes, purpose: str, index: int, n_bytes: int) -> bytes:
    """Get: the bytes of draw number `index` (from 0) of `purpose` under `seed`."""
    check_draw(n_bytes, purpose)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(f"index must be an int >= 0, got {index!r}")
    message = b"".join(
        (
            _field(_DOMAIN),
            _field(_seed_bytes(seed)),
            _field(purpose.encode("utf-8")),
            struct.pack(">Q", index),
        )
    )
    return hashlib.shake_256(message).digest(n_bytes)


class SeededEntropySource(EntropySource):
    """Predictable bytes from a seed, for simulations and tests only (see the module)."""

    def __init__(self, name: str, seed: int | bytes = 0) -> None:
        super().__init__(name)
        _seed_bytes(seed)  # validate now, not at the first draw
        self.seed = seed
        self._draws: dict[str, int] = {}
        self._counter = DrawCounter()
        self._connected = False

    @property
    def seeded(self) -> bool:
        """Get: True: anyone knowing the seed knows every byte."""
        return True

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: connect (always answers; draw numbering carries on across reconnects)."""
        self._connected = True

    async def close(self) -> None:
        """Control: disconnect."""
        self._connected = False

    async def status(self) -> DeviceStatus:
        """Measure: identity and what was drawn."""
        return DeviceStatus(
            self.name,
            f"satqkd seeded simulation entropy {self.name} (predictable)",
            self._connected,
            self._connected,
            {"seeded": True, "drawn_bytes": self._counter.total},
        )

    async def read(self, n_bytes: int, purpose: str) -> bytes:
        """Get: the next draw of `purpose` (InputError for a bad request, DeviceDisconnected
        before connect)."""
        prefix = check_draw(n_bytes, purpose)
        if not self._connected:
            raise DeviceDisconnected(f"{self.name}: not connected")
        index = self._draws.get(purpose, 0)
        self._draws[purpose] = index + 1
        self._counter.record(prefix, n_bytes)
        return seeded_draw(self.seed, purpose, index, n_bytes)

    @property
    def drawn_bytes(self) -> dict[str, int]:
        """Get: bytes delivered so far, by purpose prefix."""
        return self._counter.by_prefix

    def draws_of(self, purpose: str) -> int:
        """Get: how many times `purpose` was drawn."""
        return self._draws.get(purpose, 0)


class SeededEntropyOptions(DriverOptions):
    """Options of the seeded simulation source: its seed."""

    seed: Annotated[int, Field(ge=0)] = 0


def _build_seeded(r: BuildRequest) -> Device:
    return SeededEntropySource(r.name, **r.kwargs)


register_driver(
    DriverSpec(
        "sim_entropy",
        "entropy",
        SeededEntropySource,
        SeededEntropyOptions,
        _build_seeded,
        in_process_only=True,
        summary="seeded, predictable simulation entropy (SHAKE-256 of seed, purpose, draw; "
        "in-process only, never for keys)",
    )
)
