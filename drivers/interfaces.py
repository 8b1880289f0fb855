"""Abstract instrument interfaces: one per kind of device, whatever answers behind it.

A daemon holds an instance of one of these and cannot tell whether an instrument, a wire-level
emulator or an in-process simulation answers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class DeviceError(RuntimeError):
    """An instrument reported an error or answered something that makes no sense."""


class DeviceTimeout(DeviceError, TimeoutError):
    """An instrument did not answer in time; the message names it."""


@dataclass(frozen=True)
class PulsePatternRecord:
    """The source's record for some pulses: what the payload sifts against."""

    basis: np.ndarray
    bit: np.ndarray
    intensity: np.ndarray


@dataclass(frozen=True)
class TagBuffer:
    """One buffer of time tags streamed by a time tagger."""

    channel: np.ndarray
    timestamp_ps: np.ndarray
    start_unix_s: float
    stop_unix_s: float
    overflow: bool = False


@dataclass
class DeviceStatus:
    """Identity and health of an instrument."""

    name: str
    identity: str
    connected: bool
    healthy: bool
    detail: dict[str, Any] = field(default_factory=dict)


class Device(ABC):
    """Common life cycle: connect with a timeout, report status, close."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: open the transport and check the instrument answers."""

    @abstractmethod
    async def close(self) -> None:
        """Control: release the transport; the instrument is left in its safe state."""

    @abstractmethod
    async def status(self) -> DeviceStatus:
        """Measure: identity and health."""


class PulsedSource(Device):
    """A decoy-state weak-coherent-pulse source with its pattern sequencer."""

    @abstractmethod
    async def configure(self, repetition_rate_hz: float) -> None:
        """Set: the pulse repetition rate."""

    @abstractmethod
    async def enable(self, first_pulse_unix_s: float) -> None:
        """Control: start emitting; pulse 0 leaves at `first_pulse_unix_s`."""

    @abstractmethod
    async def disable(self) -> None:
        """Control: stop emitting (the safe state)."""

    @property
    @abstractmethod
    def enabled(self) -> bool:
        """Get: whether the source is emitting."""

    @abstractmethod
    async def read_pattern(self, pulse_index: np.ndarray) -> PulsePatternRecord:
        """Get: the sequencer's record (basis, bit, intensity) for the given pulse indices."""


class TimeTagger(Device):
    """A time tagger streaming (channel, timestamp_ps) buffers."""

    @abstractmethod
    async def start(self) -> float:
        """Control: start streaming; returns the UTC instant (s) of timestamp 0."""

    @abstractmethod
    async def stop(self) -> None:
        """Control: stop streaming; a pending `read` then returns None."""

    @abstractmethod
    async def read(self, timeout_s: float | None = None) -> TagBuffer | None:
        """Measure: the next buffer of tags, or None once the stream has stopped."""


# --- appended for instrument drivers (issue 5) --------------------------------------------------


class DeviceDisconnected(DeviceError, ConnectionError):
    """The link to an instrument is lost or cannot be opened; the message names the resource."""
