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


class PairSource(Device):
    """An entangled photon-pair source (a BBM92 payload's; continuous-wave SPDC pump)."""

    @abstractmethod
    async def configure(self, pair_rate_hz: float) -> None:
        """Set: the pair rate the pump is set for."""

    @abstractmethod
    async def enable(self, start_unix_s: float) -> None:
        """Control: pump on (pairs from `start_unix_s`)."""

    @abstractmethod
    async def disable(self) -> None:
        """Control: pump off (the safe state)."""

    @property
    @abstractmethod
    def enabled(self) -> bool:
        """Get: whether the source emits pairs."""


class EntropyFailure(DeviceError):
    """The entropy source failed a health test or cannot deliver: nothing random is drawn
    until it is reconnected (the message says which test or what failed)."""


class EntropySource(Device):
    """Random bytes for every secret and every public random value a node draws.

    `read(n_bytes, purpose)` returns exactly `n_bytes` fresh bytes, never the same bytes
    twice, or raises EntropyFailure. `purpose` names what the bytes are for (e.g.
    "pattern-key/plan 17"); real sources only count it, the seeded simulation source derives
    its output from (seed, purpose, how many times that purpose was drawn) so a seed
    reproduces a pass whatever order concurrent draws happen in.
    """

    @property
    @abstractmethod
    def seeded(self) -> bool:
        """Get: True for a deterministic (seeded, simulation-only) source, never secret."""

    @abstractmethod
    async def read(self, n_bytes: int, purpose: str) -> bytes:
        """Get: `n_bytes` random bytes for `purpose` (EntropyFailure if the source failed)."""

    @property
    @abstractmethod
    def drawn_bytes(self) -> dict[str, int]:
        """Get: bytes delivered so far, by purpose prefix (the text before the first '/')."""


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


@dataclass(frozen=True)
class GimbalLimits:
    """The travel a gimbal allows, in degrees."""

    az_min_deg: float
    az_max_deg: float
    el_min_deg: float
    el_max_deg: float

    def contains(self, az_deg: float, el_deg: float) -> bool:
        """Get: whether a pointing lies within the limits."""
        return (
            self.az_min_deg <= az_deg <= self.az_max_deg
            and self.el_min_deg <= el_deg <= self.el_max_deg
        )


class Gimbal(Device):
    """A two-axis (azimuth/elevation) mount: coarse pointing of the telescope."""

    @abstractmethod
    async def move_to(self, az_deg: float, el_deg: float) -> None:
        """Control: slew to an absolute pointing (position mode)."""

    @abstractmethod
    async def set_rate(self, az_rate_deg_s: float, el_rate_deg_s: float) -> None:
        """Control: move at constant signed rates (velocity mode, for tracking)."""

    @abstractmethod
    async def halt(self) -> None:
        """Control: stop both axes."""

    @abstractmethod
    async def position(self) -> tuple[float, float]:
        """Measure: the current (azimuth, elevation) in degrees."""

    @abstractmethod
    async def rate(self) -> tuple[float, float]:
        """Get: the commanded (azimuth, elevation) rates in degrees per second."""

    @abstractmethod
    async def limits(self) -> GimbalLimits:
        """Get: the travel limits."""

    @property
    @abstractmethod
    def limit_hits(self) -> tuple[str, ...]:
        """Get: the axes ('az' or 'el') that ran into a limit, oldest first, since connect."""


@dataclass(frozen=True)
class MirrorRange:
    """The tip/tilt travel of a fast-steering mirror, in microradians."""

    tip_min_urad: float
    tip_max_urad: float
    tilt_min_urad: float
    tilt_max_urad: float


class FastSteeringMirror(Device):
    """A tip/tilt mirror: fine pointing inside the telescope's field of view."""

    @abstractmethod
    async def set_servo(self, enabled: bool) -> None:
        """Control: close (True) or open (False) the position servo loop on both axes."""

    @abstractmethod
    async def servo_enabled(self) -> bool:
        """Get: whether the servo loop is closed on both axes."""

    @abstractmethod
    async def move_to(self, tip_urad: float, tilt_urad: float) -> None:
        """Control: command an absolute tip/tilt."""

    @abstractmethod
    async def move_by(self, tip_step_urad: float, tilt_step_urad: float) -> None:
        """Control: command a relative tip/tilt step."""

    @abstractmethod
    async def position(self) -> tuple[float, float]:
        """Measure: the sensor readback (tip, tilt) in microradians."""

    @abstractmethod
    async def on_target(self) -> bool:
        """Measure: whether both axes have settled on their targets."""

    @abstractmethod
    async def travel_range(self) -> MirrorRange:
        """Get: the travel range."""


@dataclass(frozen=True)
class BeaconSpot:
    """One beacon measurement: spot centroid (angle from boresight) and optical power."""

    x_urad: float
    y_urad: float
    power_nw: float
    valid: bool
    frame: int


class BeaconSensor(Device):
    """A quad cell or camera on the beacon: where the satellite's beacon spot is."""

    @abstractmethod
    async def read_spot(self) -> BeaconSpot:
        """Measure: the latest spot centroid and power."""

    @abstractmethod
    async def set_exposure(self, exposure_us: float) -> None:
        """Set: integration (exposure) time in microseconds."""

    @abstractmethod
    async def exposure(self) -> float:
        """Get: integration (exposure) time in microseconds."""


class PhotonDetector(Device):
    """Single-photon detectors behind one bias/gate controller, channels numbered from 1."""

    channel_count: int

    @abstractmethod
    async def set_bias(self, channel: int, bias_v: float) -> None:
        """Set: the bias voltage of a channel."""

    @abstractmethod
    async def bias(self, channel: int) -> float:
        """Get: the bias set-point of a channel in volts."""

    @abstractmethod
    async def set_gate(self, channel: int, enabled: bool) -> None:
        """Control: arm (True) or disarm (False) a channel's gate."""

    @abstractmethod
    async def gate_enabled(self, channel: int) -> bool:
        """Get: whether a channel's gate is armed."""

    @abstractmethod
    async def temperature(self, channel: int) -> float:
        """Measure: a channel's detector temperature in degrees Celsius."""

    @abstractmethod
    async def count_rate(self, channel: int) -> float:
        """Measure: a channel's count rate in counts per second."""
