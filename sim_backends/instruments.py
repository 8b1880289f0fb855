"""In-process simulated backends for the instrument interfaces.

The scenario wires these to the physics: the source answers from the firmware sequencer's
pattern, the tagger streams what the channel simulation detects. No wire protocol sits in
between here (the emulators in sim_backends/emulators do that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from drivers.interfaces import (
    Device,
    DeviceStatus,
    DeviceTimeout,
    PulsedSource,
    PulsePatternRecord,
    TagBuffer,
    TimeTagger,
)
from drivers.options import DriverOptions
from drivers.registry import BuildRequest, DriverSpec, register_driver
from satqkd_core.errors import InputError
from satqkd_runtime.clock import Clock


class SimPulsedSource(PulsedSource):
    """A source whose pattern comes from a callable (the firmware sequencer)."""

    def __init__(
        self, name: str, pattern: Callable[[np.ndarray], Any], clock: Clock, identity: str = ""
    ) -> None:
        super().__init__(name)
        self._pattern = pattern
        self._clock = clock
        self._identity = identity or f"satqkd simulated source {name}"
        self._connected = False
        self._enabled = False
        self.repetition_rate_hz = 0.0
        self.first_pulse_unix_s: float | None = None
        self.enabled_changed = asyncio.Event()
        self.history: list[tuple[float, bool]] = []

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: connect (always answers)."""
        self._connected = True

    async def close(self) -> None:
        """Control: disable and disconnect."""
        await self.disable()
        self._connected = False

    async def status(self) -> DeviceStatus:
        """Measure: identity and state."""
        return DeviceStatus(
            self.name,
            self._identity,
            self._connected,
            self._connected,
            {"enabled": self._enabled, "repetition_rate_hz": self.repetition_rate_hz},
        )

    async def configure(self, repetition_rate_hz: float) -> None:
        """Set: repetition rate."""
        self.repetition_rate_hz = float(repetition_rate_hz)

    async def enable(self, first_pulse_unix_s: float) -> None:
        """Control: start emitting."""
        self.first_pulse_unix_s = float(first_pulse_unix_s)
        self._set_enabled(True)

    async def disable(self) -> None:
        """Control: stop emitting (safe state)."""
        if self._enabled:
            self._set_enabled(False)

    def _set_enabled(self, value: bool) -> None:
        self._enabled = value
        self.history.append((self._clock.now_unix_s(), value))
        self.enabled_changed.set()

    @property
    def enabled(self) -> bool:
        """Get: emitting or not."""
        return self._enabled

    async def read_pattern(self, pulse_index: np.ndarray) -> PulsePatternRecord:
        """Get: the sequencer record for the pulses."""
        pattern = self._pattern(np.asarray(pulse_index, dtype=np.int64))
        return PulsePatternRecord(pattern.basis, pattern.bit, pattern.intensity)


class SimTimeTagger(TimeTagger):
    """A tagger fed buffer by buffer by the channel simulation (bounded queue: back-pressure)."""

    def __init__(self, name: str, clock: Clock, queue_depth: int = 4) -> None:
        super().__init__(name)
        self._clock = clock
        self._queue: asyncio.Queue[TagBuffer | None] = asyncio.Queue(maxsize=queue_depth)
        self._connected = False
        self.running = False
        self.epoch_unix_s: float | None = None
        self.started = asyncio.Event()

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: connect (always answers)."""
        self._connected = True

    async def close(self) -> None:
        """Control: stop and disconnect."""
        await self.stop()
        self._connected = False

    async def status(self) -> DeviceStatus:
        """Measure: identity and state."""
        return DeviceStatus(
            self.name,
            f"satqkd simulated time tagger {self.name}",
            self._connected,
            self._connected,
            {"running": self.running, "queued_buffers": self._queue.qsize()},
        )

    async def start(self) -> float:
        """Control: start; timestamp 0 is the whole second at or before now."""
        self.epoch_unix_s = float(int(self._clock.now_unix_s()))
        # an acquisition starts empty: the last one's end marker is not this one's end
        while not self._queue.empty():
            self._queue.get_nowait()
        self.running = True
        self.started.set()
        return self.epoch_unix_s

    async def stop(self) -> None:
        """Control: stop streaming."""
        if self.running:
            self.running = False
            # buffers nobody will read (a pass aborted mid-way) give way to the end marker
            while self._queue.full():
                self._queue.get_nowait()
            await self._queue.put(None)

    async def read(self, timeout_s: float | None = None) -> TagBuffer | None:
        """Measure: next buffer, None once stopped."""
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for (issue 13)
                return await self._queue.get()
        except TimeoutError:
            raise DeviceTimeout(f"{self.name}: no tag buffer within {timeout_s} s") from None

    async def feed(self, buffer: TagBuffer) -> None:
        """Simulation side: deliver one buffer (waits while the reader lags); a stopped
        tagger drops it, as a real one records nothing."""
        if not self.running:
            return
        await self._queue.put(buffer)


class SimTimeTaggerOptions(DriverOptions):
    """Options of the in-process simulated tagger: how many fed buffers it holds."""

    queue_depth: Annotated[int, Field(ge=1, le=1024)] = 4


def _build_sim_source(r: BuildRequest) -> Device:
    if r.context.pattern is None or r.context.clock is None:
        raise InputError(f"{r.name}: the simulated source needs the node's clock and pattern")
    return SimPulsedSource(r.name, r.context.pattern, r.context.clock)


def _build_sim_tagger(r: BuildRequest) -> Device:
    if r.context.clock is None:
        raise InputError(f"{r.name}: the simulated tagger needs the node's clock")
    return SimTimeTagger(r.name, r.context.clock, **r.kwargs)


register_driver(
    DriverSpec(
        "sim_pulsed_source",
        "source",
        SimPulsedSource,
        DriverOptions,
        _build_sim_source,
        in_process_only=True,
        summary="simulated source answering from the payload's sequencer (in-process only)",
    )
)
register_driver(
    DriverSpec(
        "sim_time_tagger",
        "tagger",
        SimTimeTagger,
        SimTimeTaggerOptions,
        _build_sim_tagger,
        in_process_only=True,
        summary="simulated tagger streaming what the channel simulation feeds it (in-process only)",
    )
)
