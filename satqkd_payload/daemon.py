"""The payload daemon: telecommands, source control, on-board sifting, key buffers per
station, housekeeping. Talks to the ground only through the message bus.

Safe states. The source goes to its safe state, and a pass it was emitting for is ended without
a key, when the ground link has been down for `ground_link_timeout_s` of the daemon's clock (the
broker connection, or, with the broker connected, the station of the pass silent: nothing
authenticated from it), or when the source's controller safes it on its own (its link watchdog).
A pass whose emission was cut is aborted when the station starts post-processing (its first
message after the detection reports): sifting goes on meanwhile, so the station's record stays
complete and both ends end the pass at the same step, without a key (decision 0009). Events
cannot be sent while the ground link is down: SOURCE_SAFE_STATE follows once it is back.

Its parts: the source over a pass (`source_control.py`), how passes end and what a previous run
left at start-up (`pass_endings.py`); this module takes telecommands and QKD messages and holds
the links with the stations.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.interfaces import (
    DeviceError,
    EntropyFailure,
    EntropySource,
    PulsedSource,
    TimeTagger,
)
from drivers.payload_link_source import InterlockedSource
from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator
from satqkd_core.bbm92 import Bbm92Parameters
from satqkd_core.codec import Envelope
from satqkd_core.errors import ProtocolError
from satqkd_core.pass_plan import pass_plan_problem
from satqkd_core.pulse_shift import max_pulse_shift
from satqkd_payload.bbm92_session import Bbm92PayloadSession, run_pair_source
from satqkd_payload.key_lifecycle import (
    PATTERN_DIR,
    PatternSequencer,
    auth_refill_bits,
    discard_leftover_records,
)
from satqkd_payload.pass_endings import PassEndings, StationLink
from satqkd_payload.pass_summary import EmissionWindow
from satqkd_payload.relay import relay_keys
from satqkd_payload.session import PayloadPassOutcome, PayloadSession
from satqkd_payload.settings import PayloadSettings
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import Clock
from satqkd_runtime.keystore import KeyStore, KeyStoreError
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.plan_registry import PlanRegistry
from satqkd_runtime.qkd_channel import ChannelCounts, QkdChannel

log = logging.getLogger("satqkd.payload")


NODE = "payload"
UP, DOWN = 0, 1  # Wegman-Carter directions: ground->payload, payload->ground


@dataclass
class PayloadCounters:
    """Safety and link counters of the payload daemon (not reset by RESET_COUNTERS)."""

    ground_link_losses: int = 0
    ground_link_safings: int = 0
    controller_safings: int = 0
    instrument_errors: int = 0
    passes_interrupted: int = 0
    publish_failures: int = 0


class PayloadDaemon(PassEndings):
    """One payload: source, sifting, one key buffer per station it has a pre-shared key with."""

    def __init__(
        self,
        settings: PayloadSettings,
        bus: MessageBus,
        clock: Clock,
        source: PulsedSource,
        key_root: Path,
        entropy: EntropySource,
        sequencer: PatternSequencer,
        tc_verifier: Any = None,
        bbm92: Bbm92Parameters | None = None,
        onboard_tagger: TimeTagger | None = None,
    ) -> None:
        self.settings = settings
        # BBM92 (bbm92_session.py): `source` is the pair source, the tagger the on-board one
        self.bbm92, self.onboard_tagger = bbm92, onboard_tagger
        if bbm92 is not None and onboard_tagger is None:
            raise ValueError("a BBM92 payload needs its on-board time tagger")
        self.bus = bus
        self.clock = clock
        self.source = source
        self.key_root = Path(key_root)
        self.entropy = entropy
        self.sequencer = sequencer
        if settings.pattern_mode == "recorded":  # InputError naming the probabilities
            sequencer.check_recorded_mode()
        # recorded patterns a crashed run left would tell anyone with the disk a past pattern
        discard_leftover_records(self.key_root)
        self.runtime = NodeRuntime(bus, settings.mission, NODE, clock, tc_verifier=tc_verifier)
        self.links: dict[str, StationLink] = {}
        self.mode = "idle"
        self.stopped = asyncio.Event()
        self.counters = PayloadCounters()
        self.ground_link_lost = False
        # (station, plan id) -> why its emission was cut; the pass ends without a key
        self.interrupted: dict[tuple[str, int], str] = {}
        self._emitting_for: tuple[str, int] | None = None
        # (station, plan id) -> when the source emitted, and the channel at plan load
        self.emissions: dict[tuple[str, int], EmissionWindow] = {}
        self._channel_at_load: dict[tuple[str, int], ChannelCounts] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # (station, plan id) -> the watchdog that abandons the session if its station goes
        # silent, and when the station was last heard from on that plan (daemon's clock)
        self._watchdogs: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._last_heard: dict[tuple[str, int], float] = {}
        # how recent passes ended, once their sessions were released (key ids, no key bits)
        self.ended: dict[tuple[str, int], PayloadPassOutcome] = {}
        # passes the previous run left open (it died mid-pass), abandoned at start
        self.passes_abandoned_at_start = 0
        self._load_station_links()

    def _load_station_links(self) -> None:
        """Every sub-directory of the key root with a pre-shared key is a station we serve."""
        for directory in sorted(p for p in self.key_root.glob("*") if p.is_dir()):
            if directory.name == PATTERN_DIR:  # recorded patterns, not a station
                continue
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
            self.links[station] = StationLink(station, store, channel)

    def session(self, station: str, plan_id: int) -> PayloadSession | None:
        """Get: the session of a pass plan, if loaded and not yet released."""
        link = self.links.get(station)
        return link.sessions.get(plan_id) if link else None

    def outcome(self, station: str, plan_id: int) -> PayloadPassOutcome | None:
        """Get: how a pass ended (None while it runs or if unknown)."""
        session = self.session(station, plan_id)
        if session is not None:
            return session.outcome if session.finished else None
        return self.ended.get((station, plan_id))

    async def run(self) -> None:
        """Control: serve until SHUTDOWN or cancellation; the source ends in its safe state."""
        await self.bus.subscribe(self.runtime.telecommand_topic)
        for link in self.links.values():
            await self.bus.subscribe(link.channel.receive_topic)
        watchers = [
            asyncio.create_task(self._housekeeping(), name="payload housekeeping"),
            asyncio.create_task(self._watch_ground_link(), name="payload ground link"),
        ]
        if isinstance(self.source, InterlockedSource):
            watchers.append(asyncio.create_task(self._forward_source_reports(), name="reports"))
        try:
            await self.runtime.emit_event(
                "NODE_STARTED", f"payload serving stations {sorted(self.links)}"
            )
            await self._discard_orphaned_keys()
            await self._abandon_open_passes()
            async for message in self.bus.messages():
                try:
                    await self._dispatch(message.topic, message.payload)
                except ConnectionError as exc:  # the broker stayed away longer than a publish
                    self.counters.publish_failures += 1
                    log.warning("payload: could not answer on %s: %s", message.topic, exc)
                if self.stopped.is_set():
                    break
        finally:
            for task in [*watchers, *self._tasks]:
                task.cancel()
            await asyncio.gather(*watchers, *self._tasks, return_exceptions=True)
            try:
                await self.source.disable()
            except DeviceError as exc:
                log.error("payload: source safe state at shutdown not confirmed: %s", exc)
            self.mode = "safe"
            if self.settings.pattern_mode == "recorded":  # no record outlives its daemon
                for link in self.links.values():
                    for plan_id in link.sessions:
                        self.sequencer.forget(plan_id)

    async def _housekeeping(self) -> None:
        """Housekeeping telemetry, resumed after a broker outage outlasting a publish."""
        while True:
            try:
                await self.runtime.housekeeping_loop(
                    self.settings.housekeeping_period_s,
                    self._housekeeping_snapshot,
                    self._pass_counts,
                )
            except ConnectionError:
                self.counters.publish_failures += 1
                await self.bus.wait_connected()

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

    async def _on_qkd_message(self, link: StationLink, envelope: Envelope) -> None:
        plan_id = int(envelope.fields.get("plan_id", -1))
        session = link.sessions.get(plan_id)
        if session is not None:
            self._last_heard[(link.station, plan_id)] = self.clock.now_unix_s()
        if session is None and envelope.spec.name == "ABORT":
            await self._late_abort(link, plan_id, str(envelope.fields.get("reason", "")))
            return
        cut = self.interrupted.get((link.station, plan_id))
        if (
            cut is not None
            and session is not None
            and not session.finished
            and envelope.spec.name not in ("DETECTION_REPORT", "ABORT")
        ):
            # post-processing starts: the pulses counted as sent were not all emitted
            await self._abort_session(session, f"source emission interrupted: {cut}")
            await self._end_session(link, session)
            return
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
            if isinstance(exc, EntropyFailure):
                await self._emit("ENTROPY_SOURCE_FAILURE", str(exc))
            await self._emit("QKD_MESSAGE_REJECTED", f"{link.station}: {reason}")
            await self._abort_session(session, reason)
        if session.finished:
            await self._end_session(link, session)

    async def _execute(self, envelope: Envelope) -> None:
        name, f = envelope.spec.name, envelope.fields
        if await self.runtime.execute_common(envelope, self.stopped):
            return
        if name == "LOAD_PASS_PLAN":
            await self._recover_plan_records()
            reason = self._check_plan(f)
            if not reason:  # recorded before the source can know the plan: never used twice
                try:
                    PlanRegistry(self.links[f["station"]].keystore).record(int(f["plan_id"]))
                except KeyStoreError as exc:
                    reason = str(exc)
            if reason:
                await self.runtime.reject_telecommand(envelope, reason)
                return
            link = self.links[f["station"]]
            plan_id = int(f["plan_id"])
            refusal = await self._load_plan_into_source(f) or (
                None if self.bbm92 is not None else await self._load_pattern(f)
            )
            if refusal:  # never started: nothing to abandon after a restart (id stays used)
                PlanRegistry(link.keystore).close(plan_id)
                await self.runtime.reject_telecommand(envelope, refusal)
                return
            plan_key = (str(f["station"]), plan_id)
            self._channel_at_load[plan_key] = ChannelCounts.of(link.channel)
            family: dict[str, Any] = {}
            if self.bbm92 is not None:
                family = {"bbm92": self.bbm92, "qkd_start_unix_s": float(f["qkd_start_unix_s"])}
            session_class = PayloadSession if not family else Bbm92PayloadSession
            session = link.sessions[plan_id] = session_class(
                plan_id=plan_id,
                station=f["station"],
                pattern=functools.partial(self.sequencer.pattern_of, plan_id),
                channel=link.channel,
                keystore=link.keystore,
                params=self.settings.protocol,
                entropy=self.entropy,
                auth_refill=functools.partial(auth_refill_bits, link.channel),
                pending_key_timeout_s=self.settings.pending_key_timeout_s,
                **family,
                **(_pulse_shift_bounds(self.settings, f) if not family else {}),
            )
            if isinstance(session, Bbm92PayloadSession) and self.onboard_tagger is not None:
                # the pair source and the on-board tagger over the window
                self._spawn(run_pair_source(self, f, session, self.onboard_tagger))
            else:
                self._spawn(self._source_schedule(f))
                # its station's DETECTION_REPORTs come every frame: silence is a cut link
                self._spawn(self._watch_station_during_emission(link, f))
            self._spawn(session.prepare_reconciliation())  # not after LOS (issue 16)
            end_unix_s = max(float(f["qkd_stop_unix_s"]), float(f["los_unix_s"]))
            watchdog = asyncio.create_task(
                self._watch_session(link, link.sessions[plan_id], end_unix_s),
                name=f"payload session watchdog {plan_key}",
            )
            self._watchdogs[plan_key] = watchdog
            self._tasks.add(watchdog)
            watchdog.add_done_callback(self._tasks.discard)
            await self.runtime.accept_telecommand(envelope)
        elif name == "ABORT_PASS":
            await self._safe_source(f"pass aborted: {f['reason']}")
            await self._abort_sessions(int(f["plan_id"]), f"aborted by command: {f['reason']}")
            if isinstance(self.source, InterlockedSource):
                with contextlib.suppress(DeviceError):  # not loaded there: nothing to clear
                    await self.source.clear_pass_plan(int(f["plan_id"]))
            self.mode = "idle"
            await self.runtime.emit_event("SOURCE_SAFE_STATE", f"pass aborted: {f['reason']}")
            await self.runtime.accept_telecommand(envelope)
        elif name == "SOURCE_ENABLE":
            try:
                if f["enable"]:
                    await self.source.configure(self.settings.repetition_rate_hz)
                    await self.source.enable(self.clock.now_unix_s())
                else:
                    await self.source.disable()
            except DeviceError as exc:
                await self.runtime.reject_telecommand(envelope, f"source: {exc}")
                return
            await self.runtime.accept_telecommand(envelope)
        elif name == "RELAY_KEYS":
            await relay_keys(self, envelope)
        else:
            await self.runtime.reject_telecommand(envelope, f"{name} is not a payload command")

    def _check_plan(self, f: dict) -> str | None:
        if f["mission"] != self.settings.mission:
            return (
                f"plan for mission {f['mission']!r}, this payload flies {self.settings.mission!r}"
            )
        if f["station"] not in self.links:
            return f"no pre-shared key with station {f['station']!r} (known: {sorted(self.links)})"
        problem = pass_plan_problem(f, self.clock.now_unix_s())  # the rules both ends share
        if problem:
            return problem
        if abs(f["repetition_rate_hz"] - self.settings.repetition_rate_hz) > 1e-6:
            return (
                f"repetition_rate_hz {f['repetition_rate_hz']:g} differs from the source's "
                f"{self.settings.repetition_rate_hz:g}"
            )
        if int(f["plan_id"]) in self.links[f["station"]].sessions or self.sequencer.has_pass(
            int(f["plan_id"])
        ):
            return f"plan {f['plan_id']} already loaded"
        # a plan id is never used twice, across restarts too (recorded per station on accept)
        refusal = PlanRegistry(self.links[f["station"]].keystore).refusal(int(f["plan_id"]))
        # a pass starts only if the pad pool covers its worst case (no exhaustion half-way)
        return refusal or self.links[f["station"]].channel.pass_refusal()

    def _pass_counts(self) -> tuple[int, int]:
        open_now = sum(len(link.sessions) for link in self.links.values())
        return open_now, self.passes_abandoned_at_start

    def _housekeeping_snapshot(self) -> tuple[str, int, int]:
        key_bits = sum(link.keystore.total_bits() for link in self.links.values())
        words = sum(link.channel.pad_words_remaining for link in self.links.values())
        return self.mode, key_bits, words


def _pulse_shift_bounds(settings: PayloadSettings, plan: dict[str, Any]) -> dict[str, int]:
    """The plan's pulses, and the whole periods the station's sync may be off by (the
    mission's clock offset uncertainty over the pulse period): satqkd_core.pulse_shift."""
    rate = float(plan["repetition_rate_hz"])
    return {
        "max_pulse_shift": max_pulse_shift(settings.clock_offset_uncertainty_ps, 1e12 / rate),
        "n_pulses": round((plan["qkd_stop_unix_s"] - plan["qkd_start_unix_s"]) * rate),
    }
