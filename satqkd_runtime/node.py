"""A daemon's port onto the software bus: telecommands in, telemetry and events out.

Both daemons (payload and ground station) use this one runtime, as flight-software components
share their framework: every telecommand is counted accepted or rejected and acknowledged,
every error becomes an event with an id, and QKD protocol messages pass through an
authenticated, sequence-numbered channel that drops re-deliveries (idempotent) and rejects
forgeries without processing them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from satqkd_core import dictionary as dct
from satqkd_core.codec import (
    CodecError,
    Envelope,
    decode_envelope,
    encode_envelope,
)
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import Clock

log = logging.getLogger("satqkd.node")


@dataclass
class NodeCounters:
    """Counters reported in housekeeping telemetry; RESET_COUNTERS zeroes them."""

    tc_accepted: int = 0
    tc_rejected: int = 0
    qkd_accepted: int = 0
    qkd_rejected: int = 0
    qkd_duplicates: int = 0
    events: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Control: zero every counter."""
        self.tc_accepted = self.tc_rejected = 0
        self.qkd_accepted = self.qkd_rejected = self.qkd_duplicates = 0
        self.events.clear()


class NodeRuntime:
    """Telecommand intake, telemetry and events of one node (`payload` or `ogs-<station>`)."""

    def __init__(
        self, bus: MessageBus, mission: str, node: str, clock: Clock, tc_verifier: Any = None
    ) -> None:
        self.bus = bus
        self.tc_verifier = tc_verifier
        self.mission = mission
        self.node = node
        self.clock = clock
        self.counters = NodeCounters()
        self.started_unix_s = clock.now_unix_s()
        self.telecommand_topic = dct.telecommand_topic(mission, node)
        self.event_topic = dct.event_topic(mission, node)
        self._tm_seq = 0

    async def emit_event(self, name: str, text: str) -> None:
        """Publish an event (declared in the dictionary) and log it locally."""
        spec = dct.EVENTS[name]
        self.counters.events[name] = self.counters.events.get(name, 0) + 1
        level = logging.WARNING if spec.severity.startswith(("WARNING", "FATAL")) else logging.INFO
        log.log(level, "%s %s: %s", self.node, name, text)
        await self._publish(
            self.event_topic,
            "EVENT",
            {"event_id": spec.id, "severity": spec.severity, "text": text[:500]},
        )

    async def publish_telemetry(self, name: str, **fields: Any) -> None:
        """Publish one telemetry packet declared in the dictionary."""
        await self._publish(dct.telemetry_topic(self.mission, self.node, name), name, fields)

    async def _publish(self, topic: str, name: str, fields: dict[str, Any]) -> None:
        self._tm_seq = (self._tm_seq + 1) % 2**32
        spec = dct.DICTIONARY[name]
        await self.bus.publish(topic, encode_envelope(spec, self._tm_seq, fields), qos=spec.qos)

    async def decode_telecommand(self, payload: bytes) -> Envelope | None:
        """Decode a telecommand; a bad one is counted, reported as an event, and None returned."""
        try:
            envelope = decode_envelope(payload)
        except CodecError as exc:
            await self.reject_telecommand(None, f"undecodable telecommand: {exc}")
            return None
        if envelope.spec.kind != "tc":
            await self.reject_telecommand(
                envelope, f"{envelope.spec.name} is not a telecommand (kind {envelope.spec.kind})"
            )
            return None
        return envelope

    async def accept_telecommand(self, envelope: Envelope) -> None:
        """Count and acknowledge an executed telecommand."""
        self.counters.tc_accepted += 1
        await self.publish_telemetry(
            "TC_ACK",
            command_id=envelope.spec.id,
            command_seq=envelope.seq,
            accepted=True,
            reason="",
        )

    async def reject_telecommand(self, envelope: Envelope | None, reason: str) -> None:
        """Count, report and negatively acknowledge a telecommand."""
        self.counters.tc_rejected += 1
        await self.emit_event("TC_REJECTED", reason)
        await self.publish_telemetry(
            "TC_ACK",
            command_id=envelope.spec.id if envelope else 0,
            command_seq=envelope.seq if envelope else 0,
            accepted=False,
            reason=reason[:200],
        )

    async def execute_common(self, envelope: Envelope, stopped: asyncio.Event) -> bool:
        """Execute a telecommand every node has (NOOP, RESET_COUNTERS, SHUTDOWN); False if
        the command is not one of them."""
        name = envelope.spec.name
        if name == "RESET_COUNTERS":
            self.counters.reset()
        elif name == "SHUTDOWN":
            await self.emit_event("SHUTTING_DOWN", "by telecommand")
            stopped.set()
        elif name != "NOOP":
            return False
        await self.accept_telecommand(envelope)
        return True

    async def housekeeping_loop(
        self, period_s: float, snapshot: Callable[[], tuple[str, int, int]]
    ) -> None:
        """Publish housekeeping every `period_s` on the node's clock, on absolute deadlines;
        `snapshot` gives (mode, key bits stored, authentication words remaining)."""
        deadline = self.clock.now_unix_s()
        while True:
            # lateness is judged at wake-up: work done after it (a publish waiting on the
            # broker) is not the loop's overrun, and in simulation time moves on meanwhile
            late_s = self.clock.now_unix_s() - deadline
            if late_s > 0.5 * period_s:
                if self.clock.judges_overruns:
                    await self.emit_event("LOOP_OVERRUN", f"housekeeping {late_s:.3f} s late")
                deadline = self.clock.now_unix_s()
            mode, key_bits, auth_words = snapshot()
            c = self.counters
            await self.publish_telemetry(
                "HOUSEKEEPING",
                node=self.node,
                mode=mode,
                uptime_s=self.clock.now_unix_s() - self.started_unix_s,
                clock_unix_s=self.clock.now_unix_s(),
                tc_accepted=c.tc_accepted,
                tc_rejected=c.tc_rejected,
                qkd_accepted=c.qkd_accepted,
                qkd_rejected=c.qkd_rejected,
                qkd_duplicates=c.qkd_duplicates,
                key_bits_stored=key_bits,
                auth_words_remaining=auth_words,
            )
            deadline += period_s
            await self.clock.sleep_until(deadline)
