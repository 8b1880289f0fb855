"""The payload's source over a pass and in its safe states, as a part of `PayloadDaemon`:
loading a plan's pattern and controller plan, emitting over its window, safing.

The source emits from QKD start to QKD stop of a plan, with that pass's pattern active. It goes
to its safe state, and a pass it was emitting for ends without a key, when the ground link (the
broker connection) has been down for `ground_link_timeout_s`, when its controller safes it on
its own, or when an operator aborts the pass.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.interfaces import DeviceError, EntropyFailure, EntropySource, PulsedSource
from drivers.payload_link_source import InterlockedSource, SourceReport
from satqkd_core.payload_icd import crc16_ccitt
from satqkd_payload.key_lifecycle import (
    PATTERN_KEY_BYTES,
    PatternRecordError,
    erase_pattern_record,
    pattern_record_path,
    record_pattern,
)
from satqkd_payload.pass_summary import EmissionWindow

if TYPE_CHECKING:
    from satqkd_payload.daemon import PayloadCounters
    from satqkd_payload.key_lifecycle import PatternSequencer
    from satqkd_payload.settings import PayloadSettings
    from satqkd_runtime.bus import MessageBus
    from satqkd_runtime.clock import Clock
    from satqkd_runtime.node import NodeRuntime

log = logging.getLogger("satqkd.payload")


class SourceControl:
    """Emission windows, safe states and interrupted passes (mixed into PayloadDaemon)."""

    settings: PayloadSettings
    bus: MessageBus
    clock: Clock
    source: PulsedSource
    sequencer: PatternSequencer
    counters: PayloadCounters
    mode: str
    ground_link_lost: bool
    interrupted: dict[tuple[str, int], str]
    emissions: dict[tuple[str, int], EmissionWindow]
    _emitting_for: tuple[str, int] | None
    runtime: NodeRuntime
    entropy: EntropySource
    key_root: Path

    async def _emit(self, name: str, text: str) -> None:
        """Emit an event; one that cannot be published (broker away too long) is logged."""
        try:
            await self.runtime.emit_event(name, text)
        except ConnectionError as exc:
            self.counters.publish_failures += 1
            log.warning("payload: event %s not sent (%s): %s", name, exc, text)

    async def _source_schedule(self, plan: dict) -> None:
        """Emit from qkd_start to qkd_stop; pulse 0 leaves at qkd_start."""
        key = (str(plan["station"]), int(plan["plan_id"]))
        try:
            await self.source.configure(plan["repetition_rate_hz"])
        except DeviceError as exc:
            await self._instrument_error(f"plan {key[1]}: source not configured: {exc}")
            self._interrupt(key, f"source not configured: {exc}")
            return
        await self.clock.sleep_until(plan["qkd_start_unix_s"])
        if self.ground_link_lost:
            self._interrupt(key, "ground link down at QKD start: source kept safe")
            return
        if key in self.interrupted:
            return
        try:
            self.sequencer.activate(int(plan["plan_id"]))
            await self.source.enable(plan["qkd_start_unix_s"])
        except DeviceError as exc:
            await self._instrument_error(f"plan {key[1]}: source not enabled: {exc}")
            self._interrupt(key, f"source not enabled: {exc}")
            return
        self._emitting_for = key
        self.emissions[key] = EmissionWindow(
            plan["qkd_start_unix_s"], plan["qkd_stop_unix_s"], plan["repetition_rate_hz"]
        )
        self.mode = "qkd"
        await self._emit("PASS_STARTED", f"source on for {plan['station']}")
        await self.clock.sleep_until(plan["qkd_stop_unix_s"])
        self._emitting_for = None
        await self._safe_source("end of the QKD window")
        self.mode = "idle"
        await self._emit("PASS_ENDED", f"source off after {plan['station']} pass")

    def _interrupt(self, key: tuple[str, int], reason: str) -> None:
        """Mark a pass whose emission was cut; it ends without a key (see the module)."""
        if (emission := self.emissions.get(key)) is not None:
            emission.close(self.clock.now_unix_s())
        if key not in self.interrupted:
            self.interrupted[key] = reason
            self.counters.passes_interrupted += 1
            log.warning("payload: plan %d with %s interrupted: %s", key[1], key[0], reason)

    async def _safe_source(self, reason: str) -> bool:
        """Command the safe state; False (counted, evented) if the source did not confirm it."""
        for emission in self.emissions.values():
            emission.close(self.clock.now_unix_s())
        try:
            await self.source.disable()
        except DeviceError as exc:
            await self._instrument_error(f"safe state ({reason}) not confirmed: {exc}")
            return False
        return True

    async def _instrument_error(self, text: str) -> None:
        self.counters.instrument_errors += 1
        await self._emit("INSTRUMENT_ERROR", text)

    async def _watch_ground_link(self) -> None:
        """Safe the source when the broker stays unreachable for ground_link_timeout_s."""
        timeout_s = self.settings.ground_link_timeout_s
        while True:
            await self.bus.wait_disconnected()
            down_unix_s = self.clock.now_unix_s()
            self.counters.ground_link_losses += 1
            log.warning("payload: ground link down (broker %s unreachable)", self.bus.url)
            back = asyncio.ensure_future(self.bus.wait_connected())
            expiry = asyncio.ensure_future(self.clock.sleep_until(down_unix_s + timeout_s))
            try:
                await asyncio.wait({back, expiry}, return_when=asyncio.FIRST_COMPLETED)
                if back.done():
                    back.result()  # a bus that failed for good ends the watch loudly
                    continue
                self.ground_link_lost = True
                self.counters.ground_link_safings += 1
                safed_unix_s = self.clock.now_unix_s()
                confirmed = await self._safe_source("ground link lost")
                cut = self._emitting_for
                if cut is not None:
                    self._interrupt(cut, f"ground link lost for {timeout_s:g} s: source safed")
                    self._emitting_for = None
                self.mode = "safe"
                await back
            finally:
                self.ground_link_lost = False
                expiry.cancel()
                back.cancel()
            down_s = self.clock.now_unix_s() - down_unix_s
            await self._emit(
                "SOURCE_SAFE_STATE",
                f"ground link lost: broker unreachable for {down_s:.1f} s (timeout "
                f"{timeout_s:g} s); source {'safed' if confirmed else 'NOT confirmed safe'} "
                f"at {safed_unix_s:.3f}"
                + (f"; plan {cut[1]} with {cut[0]} ends without a key" if cut else ""),
            )

    async def _forward_source_reports(self) -> None:
        """Pass the source controller's reports on as this daemon's events."""
        assert isinstance(self.source, InterlockedSource)
        while True:
            report: SourceReport = await self.source.next_report()
            if report.kind == "safe_state":
                self.counters.controller_safings += 1
                cut = self._emitting_for
                if cut is not None:
                    self._interrupt(cut, report.text)
                    self._emitting_for = None
                    self.mode = "safe"
                await self._emit("SOURCE_SAFE_STATE", report.text)
            else:
                await self._instrument_error(report.text)

    async def _load_plan_into_source(self, f: dict) -> str | None:
        """Load the plan into an interlocked source's controller; the refusal, if any."""
        if not isinstance(self.source, InterlockedSource):
            return None
        try:
            await self.source.load_pass_plan(
                int(f["plan_id"]),
                station_number(f["station"]),
                float(f["qkd_start_unix_s"]),
                float(f["qkd_stop_unix_s"]),
                float(f["repetition_rate_hz"]),
            )
        except DeviceError as exc:
            await self._instrument_error(f"pass plan {f['plan_id']} not loaded: {exc}")
            return f"source controller refused the plan: {exc}"
        return None

    async def _load_pattern(self, f: dict) -> str | None:
        """Give the sequencer a fresh pattern for the plan, no bit of it shared with another
        pass: a 256-bit key (`expanded`) or every pulse's byte drawn and recorded now
        (`recorded`); the refusal, if any."""
        station, plan_id = str(f["station"]), int(f["plan_id"])
        try:
            if self.settings.pattern_mode != "recorded":
                key = await self.entropy.read(PATTERN_KEY_BYTES, f"pattern-key/{station}/{plan_id}")
                self.sequencer.load_pass(plan_id, key)
                return None
            path = pattern_record_path(self.key_root, station, plan_id)
            pulses = round((f["qkd_stop_unix_s"] - f["qkd_start_unix_s"]) * f["repetition_rate_hz"])
            purpose = f"pattern-record/{station}/{plan_id}"
            await record_pattern(self.entropy, path, pulses, purpose)
        except EntropyFailure as exc:
            await self._emit("ENTROPY_SOURCE_FAILURE", str(exc))
            return f"entropy source: {exc}"
        except PatternRecordError as exc:
            return f"pattern record: {exc}"
        try:
            self.sequencer.load_recorded_pass(plan_id, path)
        except ValueError as exc:
            erase_pattern_record(path)
            return f"pattern record: {exc}"
        return None


def station_number(station: str) -> int:
    """Get the u16 station id the payload controller's plan carries (CRC-16 of the name)."""
    return crc16_ccitt(station.encode("utf-8"))
