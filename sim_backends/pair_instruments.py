"""In-process simulated instruments of a BBM92 payload: the pair source (its pump on or off, as
the physics reads it) and the on-board time tagger (fed by the pair simulation, like the
station's `sim_time_tagger`). Registered as driver kinds `pair_source` and `onboard_tagger`.
"""

from __future__ import annotations

import asyncio

from drivers.interfaces import Device, DeviceStatus, PairSource
from drivers.options import DriverOptions
from drivers.registry import BuildRequest, DriverSpec, register_driver
from satqkd_core.errors import InputError
from satqkd_runtime.clock import Clock
from sim_backends.instruments import SimTimeTagger, SimTimeTaggerOptions

__all__ = ["SimPairSource"]


class SimPairSource(PairSource):
    """A pair source whose pump state the pair simulation reads (history kept for reports)."""

    def __init__(self, name: str, clock: Clock) -> None:
        super().__init__(name)
        self._clock = clock
        self._connected = False
        self._enabled = False
        self.pair_rate_hz = 0.0
        self.enabled_changed = asyncio.Event()
        self.history: list[tuple[float, bool]] = []

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: connect (always answers)."""
        self._connected = True

    async def close(self) -> None:
        """Control: pump off and disconnect."""
        await self.disable()
        self._connected = False

    async def status(self) -> DeviceStatus:
        """Measure: identity and state."""
        return DeviceStatus(
            self.name,
            f"satqkd simulated pair source {self.name}",
            self._connected,
            self._connected,
            {"enabled": self._enabled, "pair_rate_hz": self.pair_rate_hz},
        )

    async def configure(self, pair_rate_hz: float) -> None:
        """Set: the pair rate."""
        if not pair_rate_hz > 0.0:
            raise InputError(f"{self.name}: pair_rate_hz must be positive, got {pair_rate_hz!r}")
        self.pair_rate_hz = float(pair_rate_hz)

    async def enable(self, start_unix_s: float) -> None:
        """Control: pump on."""
        self._set(True)

    async def disable(self) -> None:
        """Control: pump off (safe state)."""
        if self._enabled:
            self._set(False)

    def _set(self, value: bool) -> None:
        self._enabled = value
        self.history.append((self._clock.now_unix_s(), value))
        self.enabled_changed.set()

    @property
    def enabled(self) -> bool:
        """Get: pump on or off."""
        return self._enabled


def _build_pair_source(r: BuildRequest) -> Device:
    if r.context.clock is None:
        raise InputError(f"{r.name}: the simulated pair source needs the node's clock")
    return SimPairSource(r.name, r.context.clock)


def _build_onboard_tagger(r: BuildRequest) -> Device:
    if r.context.clock is None:
        raise InputError(f"{r.name}: the simulated on-board tagger needs the node's clock")
    return SimTimeTagger(r.name, r.context.clock, **r.kwargs)


register_driver(
    DriverSpec(
        "sim_pair_source",
        "pair_source",
        SimPairSource,
        DriverOptions,
        _build_pair_source,
        in_process_only=True,
        summary="simulated entangled pair source read by the pair simulation (in-process only)",
    )
)
register_driver(
    DriverSpec(
        "sim_onboard_time_tagger",
        "onboard_tagger",
        SimTimeTagger,
        SimTimeTaggerOptions,
        _build_onboard_tagger,
        in_process_only=True,
        summary="simulated on-board tagger fed by the pair simulation (in-process only)",
    )
)
