"""The ground-station daemon: pass plans by telecommand, pass execution with the time tagger,
synchronisation and detection reports, post-processing, key store, housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from drivers.interfaces import (
    DeviceError,
    EntropyFailure,
    EntropySource,
    TagBuffer,
    TimeTagger,
)
from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator
from satqkd_core.bbm92 import Bbm92Parameters
from satqkd_core.codec import Envelope
from satqkd_core.errors import InputError, ProtocolError
from satqkd_core.pass_plan import pass_plan_problem
from satqkd_ogs.atp import (
    INSTRUMENT_NAMES,
    AtpRecord,
    DetectorsNotReady,
    StationAtp,
    StationInstruments,
)
from satqkd_ogs.bbm92_session import Bbm92OgsSession
from satqkd_ogs.missions import StationMissions
from satqkd_ogs.pass_summary import ogs_pass_summary, qkd_progress
from satqkd_ogs.relay import file_relay_key
from satqkd_ogs.session import OgsPassResult, OgsSession, PassPlan
from satqkd_ogs.settings import OgsSettings
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import Clock
from satqkd_runtime.keystore import KeyStore, KeyStoreError
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.plan_registry import PlanRegistry
from satqkd_runtime.qkd_channel import ChannelCounts, QkdChannel

log = logging.getLogger("satqkd.ogs")

UP = 0  # Wegman-Carter direction ground -> payload


class OgsDaemon:
    """One optical ground station."""

    # how long (station's clock) the end of a pass (ABORT, events, summary) waits for a broker
    # that went away; then it is given up and the pass released (the payload abandons its side
    # after its own session timeout)
    outage_give_up_s = 300.0

    def __init__(
        self,
        settings: OgsSettings,
        bus: MessageBus,
        clock: Clock,
        tagger: TimeTagger,
        keystore: KeyStore,
        entropy: EntropySource,
        instruments: StationInstruments | None = None,
        tc_verifier: Any = None,
        missions: StationMissions | None = None,
        bbm92: dict[str, Bbm92Parameters] | None = None,
    ) -> None:
        self.settings = settings
        # missions flown as BBM92 (bbm92_session.py): their plans get a BBM92 session
        self.bbm92 = dict(bbm92 or {})
        self.bus = bus
        self.clock = clock
        self.tagger = tagger
        self.keystore = keystore
        self.entropy = entropy
        self.runtime = NodeRuntime(
            bus, settings.mission, settings.node, clock, tc_verifier=tc_verifier
        )
        self.channel = QkdChannel(
            self.runtime,
            WegmanCarterAuthenticator(keystore.load_secret("preshared-auth"), send_direction=UP),
            send_topic=dct.qkd_topic(settings.mission, settings.station, "up"),
            receive_topic=dct.qkd_topic(settings.mission, settings.station, "down"),
            state_store=keystore,
        )
        self.sessions: dict[int, OgsSession] = {}
        # results of recent passes once their sessions were released (counts, no key bits)
        self.results: dict[int, OgsPassResult] = {}
        self.pass_done: dict[int, asyncio.Event] = {}
        self.mode = "idle"
        self.stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # station instruments (connected and closed by whoever built them) and ATP per plan
        self.instruments = instruments if instruments is not None else StationInstruments()
        self.atp: dict[int, StationAtp] = {}
        self.atp_records: dict[int, AtpRecord] = {}
        self.instrument_faults: dict[str, int] = dict.fromkeys(INSTRUMENT_NAMES, 0)
        self._channel_at_load: dict[int, ChannelCounts] = {}  # for the pass summaries
        # passes the previous run left open (it died mid-pass), abandoned at start
        self.passes_abandoned_at_start = 0
        # a station serving several missions: the plans and profile its daemons share
        self.missions = missions

    async def run(self) -> None:
        """Control: serve until SHUTDOWN or cancellation."""
        await self.bus.subscribe(self.runtime.telecommand_topic)
        await self.bus.subscribe(self.channel.receive_topic)
        housekeeping = asyncio.create_task(self._housekeeping(), name="ogs housekeeping")
        try:
            await self.runtime.emit_event("NODE_STARTED", f"station {self.settings.station} up")
            await self._discard_orphaned_keys()
            await self._abandon_open_passes()
            async for message in self.bus.messages():
                try:
                    if message.topic == self.runtime.telecommand_topic:
                        envelope = await self.runtime.decode_telecommand(message.payload)
                        if envelope is not None:
                            await self._execute(envelope)
                    elif message.topic == self.channel.receive_topic:
                        envelope = await self.channel.accept(message.payload)
                        if envelope is not None and envelope.spec.name == "RELAY_XOR":
                            await file_relay_key(self, envelope, len(message.payload))
                        elif envelope is not None:
                            await self._on_qkd_message(envelope)
                except ConnectionError as exc:  # the broker stayed away longer than a publish
                    log.warning("ogs: could not answer on %s: %s", message.topic, exc)
                if self.stopped.is_set():
                    break
        finally:
            housekeeping.cancel()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.tagger.stop()

    async def _housekeeping(self) -> None:
        """Housekeeping telemetry, resumed after a broker outage outlasting a publish."""
        while True:
            try:
                await self.runtime.housekeeping_loop(
                    self.settings.housekeeping_period_s,
                    self._housekeeping_snapshot,
                    lambda: (len(self.sessions), self.passes_abandoned_at_start),
                )
            except ConnectionError as exc:
                log.warning("ogs: housekeeping paused by a broker outage: %s", exc)
                await self.bus.wait_connected()

    async def _on_qkd_message(self, envelope: Envelope) -> None:
        plan_id = int(envelope.fields.get("plan_id", -1))
        session = self.sessions.get(plan_id)
        if session is None and envelope.spec.name == "ABORT" and self._seen(plan_id):
            # the payload gave up a pass this end already ended (or a restart abandoned it):
            # no key of it may stay here either
            for key_id in self.keystore.discard_plan(plan_id):
                await self.runtime.emit_event("KEY_DISCARDED", f"plan {plan_id} key {key_id}")
            return
        try:
            if session is None:
                raise ProtocolError(f"{envelope.spec.name} for unknown plan {plan_id}")
            if envelope.spec.name == "SIFT_RESULT":
                session.on_sift_result(envelope.fields)
            elif envelope.spec.name == "BBM92_COINCIDENCES" and isinstance(
                session, Bbm92OgsSession
            ):
                session.on_coincidences(envelope.fields)
            elif envelope.spec.name == "ABORT":
                # the payload gave up: stop tagging (if still on), end keyless at once
                reason = f"payload aborted: {envelope.fields['reason']}"
                session.request_abort(reason, tell_payload=False)
            else:
                session.inbox.put_nowait(envelope)
        except (ProtocolError, InputError) as exc:
            self.runtime.counters.qkd_rejected += 1
            await self.runtime.emit_event("QKD_MESSAGE_REJECTED", f"{envelope.spec.name}: {exc}")

    async def _execute(self, envelope: Envelope) -> None:
        name, f = envelope.spec.name, envelope.fields
        if name == "RESET_COUNTERS":
            self.instrument_faults.update(dict.fromkeys(INSTRUMENT_NAMES, 0))
        if await self.runtime.execute_common(envelope, self.stopped):
            return
        if name == "LOAD_PASS_PLAN":
            await self._recover_plan_record()
            held: int | None = None
            try:
                plan = self._plan_from(f)
                if self.missions is not None:  # PlanRefused (a ValueError): every reason
                    p = plan
                    now = self.clock.now_unix_s()
                    self.missions.hold(p.plan_id, p.mission, p.aos_unix_s, p.los_unix_s, now)
                    held = plan.plan_id
                kind: type[OgsSession] = OgsSession
                family: dict[str, Any] = {}
                if (bbm92 := self.bbm92.get(plan.mission)) is not None:
                    kind, family = Bbm92OgsSession, {"bbm92": bbm92}
                session = kind(
                    plan,
                    self.settings.location,
                    self.channel,
                    self.keystore,
                    self.settings.protocol,
                    self.entropy,
                    self.settings.sync_window_ps,
                    self.settings.cascade_passes,
                    self.settings.reply_timeout_s,
                    sync_drift_change_ppb_per_s=self.settings.sync_drift_change_ppb_per_s,
                    cascade_max_disturbance=self.settings.cascade_max_disturbance,
                    **family,
                )
                atp = self._atp_for(plan)
                PlanRegistry(self.keystore).record(plan.plan_id)  # before the pass can start
            except (ValueError, InputError, KeyStoreError) as exc:
                if self.missions is not None and held is not None:
                    self.missions.release(held)
                await self.runtime.reject_telecommand(envelope, str(exc))
                return
            self.sessions[plan.plan_id] = session
            self._channel_at_load[plan.plan_id] = ChannelCounts.of(self.channel)
            self.pass_done[plan.plan_id] = asyncio.Event()
            if atp is not None:
                self.atp[plan.plan_id] = atp
                self.atp_records[plan.plan_id] = atp.record
                self._spawn(atp.run())
            self._spawn(session.prepare_reconciliation())  # not after LOS (issue 16)
            self._spawn(self._execute_pass(session))
            await self.runtime.accept_telecommand(envelope)
        elif name == "ABORT_PASS":
            session = self.sessions.get(int(f["plan_id"]))
            if session is None:
                await self.runtime.reject_telecommand(envelope, f"no plan {f['plan_id']}")
                return
            session.result.abort_reason = f"aborted by command: {f['reason']}"
            session.request_abort(session.result.abort_reason)
            if (atp := self.atp.get(int(f["plan_id"]))) is not None:
                atp.request_stop()
            await self.tagger.stop()
            await self.runtime.accept_telecommand(envelope)
        else:
            await self.runtime.reject_telecommand(envelope, f"{name} is not a station command")

    def _plan_from(self, f: dict) -> PassPlan:
        if f["mission"] != self.settings.mission:
            raise ValueError(
                f"plan for mission {f['mission']!r}, station serves {self.settings.mission!r}"
            )
        if f["station"] != self.settings.station:
            raise ValueError(
                f"plan for station {f['station']!r}, this is {self.settings.station!r}"
            )
        problem = pass_plan_problem(f, self.clock.now_unix_s())  # the rules both ends share
        if problem:
            raise ValueError(problem)
        if int(f["plan_id"]) in self.sessions:
            raise ValueError(f"plan {f['plan_id']} already loaded")
        # a plan id is never used twice, across restarts too (recorded on accept)
        refusal = PlanRegistry(self.keystore).refusal(int(f["plan_id"]))
        # a pass starts only if the pad pool covers its worst case (no exhaustion half-way)
        refusal = refusal or self.channel.pass_refusal()
        if refusal:
            raise ValueError(refusal)
        return PassPlan(**{k: f[k] for k in PassPlan.__dataclass_fields__})

    def _atp_for(self, plan: PassPlan) -> StationAtp | None:
        """Get: the ATP controller of a plan, None without instruments; ValueError if its
        ATP window overlaps another plan's (one mount cannot track two satellites)."""
        if not self.instruments.present:
            return None
        start = plan.aos_unix_s - self.settings.atp.prepare_lead_s
        for other in self.atp.values():
            overlaps = start < other.plan.los_unix_s and other.start_unix_s < plan.los_unix_s
            if overlaps and not other.record.finished:
                raise ValueError(
                    f"plan {plan.plan_id} overlaps plan {other.plan.plan_id} "
                    "on the station's instruments"
                )
        return StationAtp(
            plan,
            self.settings.location,
            self.settings.atp,
            self.instruments,
            self.clock,
            self.runtime,
            self.settings.tagger_lead_s,
            self.instrument_faults,
            detectors=self.settings.detectors,
        )

    async def _switch_profile(self, session: OgsSession) -> None:
        """A station serving several missions sets up the plan's mission profile the
        reconfiguration gap before AOS (satqkd_ogs.missions); PROFILE_SWITCHED when it
        changed."""
        if self.missions is None or session.plan.plan_id not in self.missions.held:
            return
        plan_id = session.plan.plan_id
        await self._sleep_unless_aborted(session, self.missions.switch_time_unix_s(plan_id))
        if session.abort_requested is None:
            text = self.missions.switch_to(plan_id)
            if text is not None:
                await self.runtime.emit_event("PROFILE_SWITCHED", text)

    async def _detectors_refusal(self, plan_id: int) -> str | None:
        """Get: why the detectors cannot take this pass, None if they are ready (or absent)."""
        atp = self.atp.get(plan_id)
        if atp is None:
            return None
        return await asyncio.shield(atp.detectors_verdict)

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep_unless_aborted(self, session: OgsSession, unix_s: float) -> None:
        """Wait until `unix_s` on the station's clock, or less if the pass is aborted."""
        waits = {
            asyncio.ensure_future(self.clock.sleep_until(unix_s)),
            asyncio.ensure_future(session.aborted.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _read_unless_aborted(self, session: OgsSession) -> TagBuffer | None:
        """The tagger's next buffer; None once it stopped or the pass was aborted (a wait for
        tags does not hold an aborted pass for the read timeout)."""
        read = asyncio.ensure_future(self.tagger.read(self.settings.tag_read_timeout_s))
        aborted = asyncio.ensure_future(session.aborted.wait())
        try:
            await asyncio.wait({read, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (read, aborted):
                if not waiting.done():
                    waiting.cancel()
            await asyncio.gather(read, aborted, return_exceptions=True)
        return None if read.cancelled() else read.result()

    async def _execute_pass(self, session: OgsSession) -> None:
        plan = session.plan
        outage: str | None = None  # the broker stayed away longer than a publish waits
        try:
            await self._switch_profile(session)
            await self._sleep_unless_aborted(
                session, plan.qkd_start_unix_s - self.settings.tagger_lead_s
            )
            if session.abort_requested is not None:  # aborted before tagging: ends keyless
                await session.post_process()
                return
            refusal = await self._detectors_refusal(plan.plan_id)
            if refusal is not None:
                raise DetectorsNotReady(refusal)
            session.tagger_epoch_unix_s = await self.tagger.start()
            self.mode = "tracking"
            await self.runtime.emit_event("PASS_STARTED", f"plan {plan.plan_id}: tagging")
            while True:
                buffer = await self._read_unless_aborted(session)
                if buffer is None:
                    break
                if session.abort_requested is not None:
                    break
                await session.process_buffer(buffer)
                await self.runtime.publish_telemetry("QKD_PROGRESS", **qkd_progress(session))
                if buffer.stop_unix_s >= plan.qkd_stop_unix_s:
                    break
            await self.tagger.stop()
            self.mode = "post-processing"
            await self.runtime.emit_event(
                "PASS_ENDED", f"plan {plan.plan_id}: {session.result.detections} detections"
            )
            await session.post_process()
        except DetectorsNotReady as exc:
            # an operator's ABORT_PASS before QKD start keeps its own reason
            session.result.abort_reason = session.result.abort_reason or f"pass refused: {exc}"
            session.result.finished = True
            with contextlib.suppress(Exception):  # the payload learns it, or times out alone
                await self.channel.send(
                    "ABORT", plan_id=plan.plan_id, reason=session.result.abort_reason[:500]
                )
        except (DeviceError, ProtocolError, InputError) as exc:
            session.result.abort_reason = f"pass execution failed: {exc}"
            session.result.finished = True
            session._discard_key()
            with contextlib.suppress(Exception):
                await self.tagger.stop()
            if isinstance(exc, EntropyFailure):  # no squashing bits: the pass cannot go on
                await self.runtime.emit_event("ENTROPY_SOURCE_FAILURE", str(exc))
            with contextlib.suppress(Exception):  # else the payload times out alone
                await self.channel.send(
                    "ABORT", plan_id=plan.plan_id, reason=session.result.abort_reason[:500]
                )
        except ConnectionError as exc:
            # the pass cannot go on without the payload: end it keyless, tell it once back
            outage = f"broker outage during the pass: {exc}"
            session.result.abort_reason = session.result.abort_reason or outage
            session.abort_requested = session.abort_requested or outage
            session._discard_key()
            session.result.finished = True
            if (atp := self.atp.get(plan.plan_id)) is not None:
                atp.request_stop()  # the mount is not left tracking a pass that ended
            with contextlib.suppress(Exception):
                await self.tagger.stop()
        finally:
            self.mode = "idle"
            result = session.result
            try:
                if outage is not None:
                    reason = (result.abort_reason or outage)[:500]
                    await self._once_connected(
                        f"plan {plan.plan_id}: ABORT to the payload",
                        lambda: self.channel.send("ABORT", plan_id=plan.plan_id, reason=reason),
                    )
                if result.abort_reason:
                    text = f"plan {plan.plan_id}: {result.abort_reason}"
                    await self._once_connected(
                        f"plan {plan.plan_id}: BLOCK_ABORTED",
                        lambda: self.runtime.emit_event("BLOCK_ABORTED", text),
                    )
                elif result.key_id:
                    bits = result.pa_output_bits
                    text = f"plan {plan.plan_id}: key {result.key_id} ({bits} bits)"
                    await self._once_connected(
                        f"plan {plan.plan_id}: KEY_STORED",
                        lambda: self.runtime.emit_event("KEY_STORED", text),
                    )
                await self._once_connected(
                    f"plan {plan.plan_id}: pass summary", lambda: self._publish_summary(session)
                )
            finally:
                self._release(session)
                self.pass_done[plan.plan_id].set()

    def _release(self, session: OgsSession) -> None:
        """Forget a finished pass: its per-detection arrays and key bits; keep its counts."""
        plan_id = session.plan.plan_id
        session.release()
        self.sessions.pop(plan_id, None)
        try:  # ended at this end: a restart no longer needs to abandon it
            PlanRegistry(self.keystore).close(plan_id)
        except KeyStoreError as exc:
            log.error("ogs: plan %d not closed in the plan record: %s", plan_id, exc)
        self.results[plan_id] = session.result
        self._channel_at_load.pop(plan_id, None)
        atp = self.atp.get(plan_id)
        if atp is not None and atp.record.finished:  # a running ATP still holds the mount
            del self.atp[plan_id]
        for history in (self.results, self.atp_records, self.pass_done):
            while len(history) > 16 and next(iter(history)) != plan_id:
                del history[next(iter(history))]

    async def _discard_orphaned_keys(self) -> None:
        """Keys left pending by a previous run were never confirmed by the payload: drop them."""
        for line in self.keystore.recover().messages():
            await self.runtime.emit_event("KEY_STORE_RECOVERED", line)
        for key_id in self.keystore.discard_pending():
            await self.runtime.emit_event("KEY_DISCARDED", f"key {key_id} pending at start-up")
        await self._recover_plan_record()

    async def _publish_summary(self, session: OgsSession) -> None:
        """Publish OGS_PASS_SUMMARY: the figures the pass report takes from the station."""
        plan_id = session.plan.plan_id
        try:
            fields = ogs_pass_summary(
                session,
                self.settings.location,
                self.atp_records.get(plan_id),
                self._channel_at_load.get(plan_id, ChannelCounts(0, 0, 0, 0)),
                self.clock.now_unix_s(),
            )
        except (ValueError, KeyStoreError) as exc:
            log.warning("plan %d: pass summary not made: %s", plan_id, exc)
            return
        # a ConnectionError goes to the caller, which publishes again once the broker is back
        await self.runtime.publish_telemetry("OGS_PASS_SUMMARY", **fields)

    async def _once_connected(self, what: str, publish: Callable[[], Awaitable[None]]) -> None:
        """Publish, again after each broker outage outlasting a publish, until it goes out;
        given up (logged) after `outage_give_up_s` of the station's clock or if the bus
        itself failed or was closed."""
        await self.runtime.when_connected(what, publish, within_s=self.outage_give_up_s)

    def _seen(self, plan_id: int) -> bool:
        try:
            return PlanRegistry(self.keystore).seen(plan_id)
        except KeyStoreError:
            return False

    async def _recover_plan_record(self) -> None:
        """A plan record that cannot be read is quarantined (so plans are accepted again)."""
        line = PlanRegistry(self.keystore).recover()
        if line is not None:
            await self.runtime.emit_event("KEY_STORE_RECOVERED", line)

    async def _abandon_open_passes(self) -> None:
        """Passes still open in the plan record were running when the previous run died: each
        is ended here without its key (every key it stored destroyed) and the payload is sent
        ABORT, so it ends the pass keyless too (decision 0021)."""
        try:
            abandoned = PlanRegistry(self.keystore).abandon_open()
        except KeyStoreError as exc:  # quarantined just before: only a disk fault is left
            log.error("ogs: open passes unknown: %s", exc)
            return
        for plan_id, destroyed in abandoned:
            self.passes_abandoned_at_start += 1
            reason = f"station restarted: plan {plan_id} was open when it stopped"
            self.results[plan_id] = OgsPassResult(plan_id, abort_reason=reason, finished=True)
            await self.runtime.emit_event(
                "PASS_ABANDONED",
                f"plan {plan_id}: open when the station stopped; ended without a key "
                f"({len(destroyed)} stored key(s) destroyed), ABORT sent",
            )
            self._spawn(
                self._once_connected(
                    f"plan {plan_id}: ABORT to the payload",
                    functools.partial(
                        self.channel.send, "ABORT", plan_id=plan_id, reason=reason[:500]
                    ),
                )
            )

    def _housekeeping_snapshot(self) -> tuple[str, int, int]:
        return self.mode, self.keystore.total_bits(), self.channel.pad_words_remaining
