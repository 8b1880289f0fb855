"""A daemon's port onto the software bus: telecommands in, telemetry and events out.

Both daemons (payload and ground station) use this one runtime, as flight-software components
share their framework: every telecommand is counted accepted or rejected and acknowledged,
every error becomes an event with an id, and QKD protocol messages pass through an
authenticated, sequence-numbered channel that drops re-deliveries (idempotent) and rejects
forgeries without processing them.

Telecommands are authenticated (decision 0016, docs/telecommands.md): with a
`TelecommandVerifier` a telecommand is executed only if its security trailer verifies and its
seq is new; anything else on the telecommand topic (unsigned, forged, replayed, undecodable) is
refused before execution, counted in `tc_auth_failures` (which RESET_COUNTERS does not zero),
reported by a TC_AUTH_FAILURE event and a negative TC_ACK. A node built with no verifier
(`tc_verifier=None`) refuses every telecommand as unauthenticated; only an explicit
`UnauthenticatedTelecommands()` opt-out, for a test or simulation, executes unsigned ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
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
from satqkd_runtime.telecommand_auth import (
    TelecommandAuthError,
    TelecommandStateError,
    TelecommandVerifier,
    UnauthenticatedTelecommands,
)

log = logging.getLogger("satqkd.node")


@dataclass
class NodeCounters:
    """Counters reported in housekeeping telemetry; RESET_COUNTERS zeroes them, except the
    security counter `tc_auth_failures` (telecommands refused as unauthenticated), which only
    a restart of the daemon clears: an unauthenticated command must not erase its own trace."""

    tc_accepted: int = 0
    tc_rejected: int = 0
    qkd_accepted: int = 0
    qkd_rejected: int = 0
    qkd_duplicates: int = 0
    events: dict[str, int] = field(default_factory=dict)
    tc_auth_failures: int = 0

    def reset(self) -> None:
        """Control: zero every counter but `tc_auth_failures`."""
        self.tc_accepted = self.tc_rejected = 0
        self.qkd_accepted = self.qkd_rejected = self.qkd_duplicates = 0
        self.events.clear()


class NodeRuntime:
    """Telecommand intake, telemetry and events of one node (`payload` or `ogs-<station>`)."""

    def __init__(
        self,
        bus: MessageBus,
        mission: str,
        node: str,
        clock: Clock,
        tc_verifier: TelecommandVerifier | UnauthenticatedTelecommands | None = None,
    ) -> None:
        self.bus = bus
        self.tc_verifier = tc_verifier
        if isinstance(tc_verifier, UnauthenticatedTelecommands):
            log.warning("%s: telecommands are NOT authenticated (explicit opt-out)", node)
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
        """Decode and authenticate a telecommand; one that is not to be executed is counted,
        reported as an event, negatively acknowledged, and None returned. An authentic one's
        seq is on disk (it can never be accepted again) before it is returned."""
        verifier = self.tc_verifier
        authenticating = not isinstance(verifier, UnauthenticatedTelecommands)
        try:
            envelope = decode_envelope(payload)
        except CodecError as exc:
            if authenticating:  # nothing undecodable was signed by the control centre
                await self.refuse_unauthenticated(None, f"undecodable telecommand: {exc}")
            else:
                await self.reject_telecommand(None, f"undecodable telecommand: {exc}")
            return None
        if verifier is None:
            await self.refuse_unauthenticated(
                envelope, "this node has no telecommand key loaded: every telecommand is refused"
            )
            return None
        try:
            verifier.verify(payload, envelope)
        except TelecommandAuthError as exc:
            await self.refuse_unauthenticated(envelope, str(exc))
            return None
        except TelecommandStateError as exc:
            await self.reject_telecommand(envelope, f"not executed: {exc}")
            return None
        if envelope.spec.kind != "tc":
            await self.reject_telecommand(
                envelope, f"{envelope.spec.name} is not a telecommand (kind {envelope.spec.kind})"
            )
            return None
        return envelope

    async def refuse_unauthenticated(self, envelope: Envelope | None, reason: str) -> None:
        """Count (in the security counter), report and negatively acknowledge a telecommand
        refused as unauthenticated; `reason` says what failed (never any key material)."""
        self.counters.tc_auth_failures += 1
        what = f"{envelope.spec.name} seq {envelope.seq}" if envelope else "telecommand"
        await self.emit_event("TC_AUTH_FAILURE", f"{what} refused, not executed: {reason}")
        await self.publish_telemetry(
            "TC_ACK",
            command_id=envelope.spec.id if envelope else 0,
            command_seq=envelope.seq if envelope else 0,
            accepted=False,
            reason=f"not authenticated: {reason}"[:200],
        )

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

    async def when_connected(
        self, what: str, send: Callable[[], Awaitable[object]], within_s: float | None = None
    ) -> bool:
        """Control: run `send` (a publish), again after each broker outage that outlasts a
        publish, until it goes out; True once sent. Given up (logged, False) after `within_s`
        of the node's clock, or if the bus itself failed or was closed."""
        give_up_unix_s = None if within_s is None else self.clock.now_unix_s() + within_s
        while True:
            try:
                await send()
                return True
            except ConnectionError as exc:
                log.warning("%s %s waits for the broker: %s", self.node, what, exc)
            back = asyncio.ensure_future(self.bus.wait_connected())
            waits: set[asyncio.Future[None]] = {back}
            if give_up_unix_s is not None:
                waits.add(asyncio.ensure_future(self.clock.sleep_until(give_up_unix_s)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            if not back.done() or back.cancelled():
                log.warning("%s %s not sent: broker away past %g s", self.node, what, within_s)
                return False
            if (failure := back.exception()) is not None:
                log.warning("%s %s not sent: %s", self.node, what, failure)
                return False

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
        self,
        period_s: float,
        snapshot: Callable[[], tuple[str, int, int]],
        passes: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
        """Publish housekeeping every `period_s` on the node's clock, on absolute deadlines;
        `snapshot` gives (mode, key bits stored, authentication words remaining), `passes`
        (passes open now, passes found open at start and abandoned)."""
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
            passes_open, passes_abandoned = passes()
            c = self.counters
            await self.publish_telemetry(
                "HOUSEKEEPING",
                node=self.node,
                mode=mode,
                uptime_s=self.clock.now_unix_s() - self.started_unix_s,
                clock_unix_s=self.clock.now_unix_s(),
                tc_accepted=c.tc_accepted,
                tc_rejected=c.tc_rejected,
                tc_auth_failures=c.tc_auth_failures,
                qkd_accepted=c.qkd_accepted,
                qkd_rejected=c.qkd_rejected,
                qkd_duplicates=c.qkd_duplicates,
                key_bits_stored=key_bits,
                auth_words_remaining=auth_words,
                passes_open=passes_open,
                passes_abandoned_at_start=passes_abandoned,
            )
            deadline += period_s
            await self.clock.sleep_until(deadline)
