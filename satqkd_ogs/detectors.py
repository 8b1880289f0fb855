"""The station's single-photon detectors around one pass: go/no-go before QKD start (every
channel colder than the limit, then bias and gates), temperature watch during the pass,
gates off and bias to zero after it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from drivers.interfaces import PhotonDetector
from satqkd_ogs.atp_record import AtpRecord
from satqkd_ogs.instrument_guard import FAILED, InstrumentGuard
from satqkd_runtime.clock import Clock


class DetectorsNotReady(Exception):
    """The detectors failed their check before QKD start; the message says why."""


class DetectorControl:
    """Bias, gates and temperatures of the detectors behind one controller, for one pass."""

    def __init__(
        self,
        detectors: PhotonDetector,
        bias_v: float,
        max_temperature_c: float,
        poll_s: float,
        clock: Clock,
        guard: InstrumentGuard,
        emit_event: Callable[[str, str], Awaitable[None]],
        record: AtpRecord,
    ) -> None:
        self.detectors = detectors
        self.bias_v = bias_v
        self.max_temperature_c = max_temperature_c
        self.poll_s = poll_s
        self.clock = clock
        self.guard = guard
        self.emit_event = emit_event
        self.record = record
        #: None once the detectors are ready; otherwise why the pass is refused
        self.verdict: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.biased = False
        self.warmest_c = math.nan
        self._warm: tuple[int, ...] = ()

    async def prepare(self, deadline_unix_s: float, stop: asyncio.Event) -> None:
        """Control: until `deadline_unix_s` (QKD start less the tagger lead), poll until every
        channel is colder than the limit, then bias and gate them; otherwise refuse the pass.
        Runs in its own task, in lockstep with simulated time (it does I/O between sleeps)."""
        with self.clock.participating("ogs detectors"):
            while not stop.is_set():
                now = self.clock.now_unix_s()
                temperatures = await self.guard.call("detectors", self._temperatures, wait=False)
                if temperatures is FAILED:
                    problem = (
                        f"detector controller not answering ({self.guard.last_error('detectors')})"
                    )
                elif warm := self._too_warm(temperatures):
                    problem = f"detectors too warm: {warm}"
                elif await self.guard.call("detectors", self._switch_on, wait=False) is FAILED:
                    problem = (
                        f"detector bias or gates refused ({self.guard.last_error('detectors')})"
                    )
                else:
                    self.biased = True
                    self.verdict.set_result(None)
                    await self.emit_event(
                        "DETECTORS_READY",
                        f"{self.detectors.channel_count} channel(s) colder than "
                        f"{self.max_temperature_c:g} C, biased at {self.bias_v:g} V and gated",
                    )
                    return
                if now >= deadline_unix_s:
                    await self.refuse(problem)
                    return
                await self.clock.sleep_until(min(now + self.poll_s, deadline_unix_s))
        await self.refuse("pass stopped before QKD start")

    async def refuse(self, reason: str) -> None:
        """Control: settle the verdict as a refusal (no-op once settled) and report it."""
        if self.verdict.done():
            return
        self.record.detectors_refused = reason
        self.verdict.set_result(reason)
        await self.emit_event("DETECTOR_FAULT", f"pass refused: {reason}")

    async def watch(self) -> None:
        """Control: read the temperatures once (while biased); DETECTOR_FAULT when the set
        of channels above the limit changes to a non-empty one."""
        if not self.biased:
            return
        temperatures = await self.guard.call("detectors", self._temperatures)
        if temperatures is FAILED:
            return
        self.warmest_c = max(t for _, t in temperatures)
        warm = tuple(ch for ch, t in temperatures if t > self.max_temperature_c)
        if warm and warm != self._warm:
            await self.emit_event("DETECTOR_FAULT", f"{self._too_warm(temperatures)} mid-pass")
        self._warm = warm

    async def switch_off(self) -> None:
        """Control: gates off, then bias to zero, on every channel (always tried)."""

        async def off() -> None:
            for channel in self._channels():
                await self.detectors.set_gate(channel, False)
            for channel in self._channels():
                await self.detectors.set_bias(channel, 0.0)

        await self.guard.call("detectors", off, wait=False)
        self.biased = False

    def _channels(self) -> range:
        return range(1, self.detectors.channel_count + 1)

    async def _temperatures(self) -> list[tuple[int, float]]:
        return [(ch, await self.detectors.temperature(ch)) for ch in self._channels()]

    async def _switch_on(self) -> None:
        for channel in self._channels():
            await self.detectors.set_bias(channel, self.bias_v)
        for channel in self._channels():
            await self.detectors.set_gate(channel, True)

    def _too_warm(self, temperatures: list[tuple[int, float]]) -> str:
        """Get: '' if every channel is cold enough, else which are not and the limit."""
        warm = [
            f"channel {ch} at {t:.1f} C" for ch, t in temperatures if t > self.max_temperature_c
        ]
        return f"{', '.join(warm)} (limit {self.max_temperature_c:g} C)" if warm else ""
