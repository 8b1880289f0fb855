"""The payload daemon: telecommands, source control, on-board sifting, key buffers per
station, housekeeping. Talks to the ground only through the message bus."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from drivers.bus import MessageBus
from drivers.clock import Clock
from drivers.interfaces import PulsedSource
from drivers.keystore import KeyStore
from drivers.node import NodeRuntime, QkdChannel
from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator
from satqkd_core.codec import Envelope
from satqkd_core.errors import ProtocolError
from satqkd_core.pass_decisions import ProtocolParameters
from satqkd_payload.session import PayloadSession

log = logging.getLogger("satqkd.payload")

NODE = "payload"
UP, DOWN = 0, 1  # Wegman-Carter directions: ground->payload, payload->ground


@dataclass(frozen=True)
class PayloadSettings:
    """What the payload daemon needs from the mission profile."""

    mission: str
    protocol: ProtocolParameters
    repetition_rate_hz: float
    housekeeping_period_s: float = 10.0


@dataclass
class _StationLink:
    station: str
    keystore: KeyStore
    channel: QkdChannel
    sessions: dict[int, PayloadSession] = field(default_factory=dict)


class PayloadDaemon:
    """One payload: source, sifting, one key buffer per station it has a pre-shared key with."""

    def __init__(
        self,
        settings: PayloadSettings,
        bus: MessageBus,
        clock: Clock,
        source: PulsedSource,
        key_root: Path,
        entropy_key: int,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.clock = clock
        self.source = source
        self.key_root = Path(key_root)
        self.entropy_key = entropy_key
        self.runtime = NodeRuntime(bus, settings.mission, NODE, clock)
        self.links: dict[str, _StationLink] = {}
        self.mode = "idle"
        self.stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._load_station_links()

    def _load_station_links(self) -> None:
        """Every sub-directory of the key root with a pre-shared key is a station we serve."""
        for directory in sorted(p for p in self.key_root.glob("*") if p.is_dir()):
            store = KeyStore(directory)
            try:
                preshared = store.load_secret("preshared-auth")
            except Exception:
                continue
            station = directory.name
            channel = QkdChannel(
                self.runtime,
                WegmanCarterAuthenticator(preshared, send_direction=DOWN),
                send_topic=dct.qkd_topic(self.settings.mission, station, "down"),
                receive_topic=dct.qkd_topic(self.settings.mission, station, "up"),
                state_store=store,
            )
            self.links[station] = _StationLink(station, store, channel)

    def session(self, station: str, plan_id: int) -> PayloadSession | None:
        """Get: the session of a pass plan, if loaded."""
        link = self.links.get(station)
        return link.sessions.get(plan_id) if link else None

    async def run(self) -> None:
        """Control: serve until SHUTDOWN or cancellation; the source ends in its safe state."""
        await self.bus.subscribe(self.runtime.telecommand_topic)
        for link in self.links.values():
            await self.bus.subscribe(link.channel.receive_topic)
        housekeeping = asyncio.create_task(
            self.runtime.housekeeping_loop(
                self.settings.housekeeping_period_s, self._housekeeping_snapshot
            )
        )
        try:
            await self.runtime.emit_event(
                "NODE_STARTED", f"payload serving stations {sorted(self.links)}"
            )
            async for message in self.bus.messages():
                await self._dispatch(message.topic, message.payload)
                if self.stopped.is_set():
                    break
        finally:
            housekeeping.cancel()
            for task in list(self._tasks):
                task.cancel()
            await self.source.disable()
            self.mode = "safe"

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        if topic == self.runtime.telecommand_topic:
            envelope = await self.runtime.decode_telecommand(payload)
            if envelope is not None:
                await self._execute(envelope)
            return
        for link in self.links.values():
            if topic == link.channel.receive_topic:
                envelope = await link.channel.accept(payload)
                if envelope is not None:
                    await self._on_qkd_message(link, envelope)
                return

    async def _on_qkd_message(self, link: _StationLink, envelope: Envelope) -> None:
        plan_id = int(envelope.fields.get("plan_id", -1))
        session = link.sessions.get(plan_id)
        try:
            if session is None:
                raise ProtocolError(f"{envelope.spec.name} for unknown plan {plan_id}")
            await session.handle(envelope)
        except ProtocolError as exc:
            self.runtime.counters.qkd_rejected += 1
            await self.runtime.emit_event(
                "QKD_MESSAGE_REJECTED", f"{link.station}: {envelope.spec.name}: {exc}"
            )
            return
        except Exception as exc:
            self.runtime.counters.qkd_rejected += 1
            reason = f"payload could not process {envelope.spec.name}: {exc}"
            await self.runtime.emit_event("QKD_MESSAGE_REJECTED", f"{link.station}: {reason}")
            await session.abort(reason)
        if session.finished:
            await self._report_session_end(session)

    async def _report_session_end(self, session: PayloadSession) -> None:
        outcome = session.outcome
        if getattr(session, "_end_reported", False):
            return
        session._end_reported = True  # type: ignore[attr-defined]
        if outcome.abort_reason:
            await self.runtime.emit_event(
                "BLOCK_ABORTED", f"{session.station} plan {session.plan_id}: {outcome.abort_reason}"
            )
        elif outcome.confirmed:
            await self.runtime.emit_event(
                "KEY_STORED",
                f"{session.station} plan {session.plan_id}: key {outcome.key_id} "
                f"({outcome.key_bits} bits)",
            )

    async def _execute(self, envelope: Envelope) -> None:
        name, f = envelope.spec.name, envelope.fields
        if await self.runtime.execute_common(envelope, self.stopped):
            return
        if name == "LOAD_PASS_PLAN":
            reason = self._check_plan(f)
            if reason:
                await self.runtime.reject_telecommand(envelope, reason)
                return
            link = self.links[f["station"]]
            link.sessions[int(f["plan_id"])] = PayloadSession(
                plan_id=int(f["plan_id"]),
                station=f["station"],
                source=self.source,
                channel=link.channel,
                keystore=link.keystore,
                params=self.settings.protocol,
                entropy_key=self.entropy_key,
            )
            self._spawn(self._source_schedule(f))
            await self.runtime.accept_telecommand(envelope)
        elif name == "ABORT_PASS":
            await self.source.disable()
            self.mode = "idle"
            await self.runtime.emit_event("SOURCE_SAFE_STATE", f"pass aborted: {f['reason']}")
            await self.runtime.accept_telecommand(envelope)
        elif name == "SOURCE_ENABLE":
            if f["enable"]:
                await self.source.configure(self.settings.repetition_rate_hz)
                await self.source.enable(self.clock.now_unix_s())
            else:
                await self.source.disable()
            await self.runtime.accept_telecommand(envelope)
        else:
            await self.runtime.reject_telecommand(envelope, f"{name} is not a payload command")

    def _check_plan(self, f: dict) -> str | None:
        if f["mission"] != self.settings.mission:
            return (
                f"plan for mission {f['mission']!r}, this payload flies {self.settings.mission!r}"
            )
        if f["station"] not in self.links:
            return f"no pre-shared key with station {f['station']!r} (known: {sorted(self.links)})"
        if not f["qkd_start_unix_s"] < f["qkd_stop_unix_s"]:
            return "qkd_start_unix_s must be before qkd_stop_unix_s"
        if f["qkd_stop_unix_s"] <= self.clock.now_unix_s():
            return "pass plan is already over"
        if abs(f["repetition_rate_hz"] - self.settings.repetition_rate_hz) > 1e-6:
            return (
                f"repetition_rate_hz {f['repetition_rate_hz']:g} differs from the source's "
                f"{self.settings.repetition_rate_hz:g}"
            )
        if int(f["plan_id"]) in self.links[f["station"]].sessions:
            return f"plan {f['plan_id']} already loaded"
        return None

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _source_schedule(self, plan: dict) -> None:
        """Emit from qkd_start to qkd_stop; pulse 0 leaves at qkd_start."""
        await self.source.configure(plan["repetition_rate_hz"])
        await self.clock.sleep_until(plan["qkd_start_unix_s"])
        await self.source.enable(plan["qkd_start_unix_s"])
        self.mode = "qkd"
        await self.runtime.emit_event("PASS_STARTED", f"source on for {plan['station']}")
        await self.clock.sleep_until(plan["qkd_stop_unix_s"])
        await self.source.disable()
        self.mode = "idle"
        await self.runtime.emit_event("PASS_ENDED", f"source off after {plan['station']} pass")

    def _housekeeping_snapshot(self) -> tuple[str, int, int]:
        key_bits = sum(link.keystore.total_bits() for link in self.links.values())
        words = sum(link.channel.pad_words_remaining for link in self.links.values())
        return self.mode, key_bits, words
