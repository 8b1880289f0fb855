"""Fault-injection harness: one payload and one station daemon in-process on a simulated clock,
talking through a real Mosquitto, the physics feeding the station's tagger; passes one after
another on the same daemons, each with at most one fault at a phase of the pass.

Passes are 30-s QKD windows of the overhead passes of the clear Jinan-1/Xinglong scenario (its
night passes above 60 deg, one after another, windows around culmination in each), each
planned (LOAD_PASS_PLAN, plan LOS a few seconds after QKD stop) a few seconds before its start.
After each pass the clock moves on a housekeeping period and both daemons must publish
housekeeping.

Faults:
- `Outage(phase, duration_s)`: Mosquitto is stopped at the phase and started again after
  `duration_s` of simulated time, during which the clock goes on (the payload's ground-link
  watchdog, pending-key and session timers run on it) and the physics goes on feeding the
  station's tagger from what the source emits. The daemons' publishes give up after
  `PUBLISH_TIMEOUT_S` of wall time, and the broker stays down `duration_s / WALL_PER_SIM` of
  wall time, so outages of 40 s and more also outlast a publish (their ConnectionError paths).
- `Crash(victim, before)`: the victim daemon dies just before it publishes message `before`
  (a QKD message, or an event as `event:NAME`): from then on none of its code runs
  (its bus swallows everything and never returns, its clock never wakes it), which is what
  SIGKILL leaves on disk and on the bus; a new daemon is then started on the same key
  directories, as a restart would.

Phases: `before-aos` (plans loaded), `tagging` (third frame), `sifting` (last frame: detection
reports and sifting answers in flight), `reconciliation` (first EC_QUERY or LDPC_START on the
bus), `confirmation` (first PA_SEED on the bus).

`SimPair.fly` returns what each end was left with, and checks what must hold after any fault:
no key at one end only or different at the two ends, nothing pending, no session or plan left
open, both ends ended the pass within bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from drivers.interfaces import TagBuffer
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import Scenario, load_scenario, station_path
from satqkd.instruments_config import validate_instruments
from satqkd.pass_physics import PassPhysics, choose_pass, plan_pass
from satqkd.simulation import SimBench, build_bench, scenario_benches
from satqkd.wiring import ogs_settings, pass_plan_fields, payload_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core import rng
from satqkd_core.codec import Envelope, decode_envelope
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.plan_registry import PlanRegistry
from satqkd_runtime.qkd_channel import install_preshared_key
from tests.reliability.killable import KillableBus, KillableClock
from tests.seeded_entropy import seeded_entropy
from tests.tc_signing import OccSigner, install_tc_key

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
PHASES = ("before-aos", "tagging", "sifting", "reconciliation", "confirmation")
PHASE_MESSAGES = {"reconciliation": ("EC_QUERY", "LDPC_START"), "confirmation": ("PA_SEED",)}
PUBLISH_TIMEOUT_S = 1.0  # wall seconds a daemon's publish waits through an outage
WALL_PER_SIM = 20.0  # simulated seconds of outage per wall second the broker stays down
QKD_WINDOW_S = 30.0
# QKD windows of an overhead pass lie around its culmination (a key is possible there)
FIRST_QKD_BEFORE_MID_S = 34.0
LAST_QKD_AFTER_MID_S = 30.0
MIN_MAX_ELEVATION_DEG = 60.0
SEARCH_DAYS = 10.0  # for the next high night pass
SESSION_TIMEOUT_S = 30.0  # the payload abandons a silent station's session after this
REPLY_TIMEOUT_S = 20.0  # wall seconds the station waits for each payload answer
HOUSEKEEPING_S = 5.0
# pad words per direction at launch: a 30-s window's key refills fewer than its exchange
# spends, so a 4096-message pool runs dry after about seven passes
PRESHARED_MESSAGES = 65536
# which daemon run (e.g. "payload0") a task belongs to: a daemon's run task is created with its
# name set here, and every task it creates inherits it (a task copies its creator's context)
_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("sim_pair_run", default=None)
BURY_ROUNDS = 50  # cancellations a killed daemon's task may need to end (one per await)
END_WAIT_S = 180.0  # wall seconds both ends have to end a pass after LOS (else: a hang)
STEP_WAIT_S = 120.0  # wall seconds a pass has to reach the step a fault waits for
FEED_WAIT_S = 2.0  # wall seconds a frame waits for the station to read (then it is lost)


@dataclass(frozen=True)
class Outage:
    """The broker goes away at `phase` for `duration_s` of simulated time."""

    phase: str
    duration_s: float


@dataclass(frozen=True)
class Crash:
    """`victim` ("payload" or "station") dies just before publishing `before`, restarted."""

    victim: str
    before: str


@dataclass
class PassEnd:
    """What each end was left with after one pass (ids and counts, no key material)."""

    plan_id: int
    fault: Outage | Crash | None
    ogs_key_id: str | None
    ogs_abort: str | None
    payload_key_id: str | None
    payload_abort: str | None
    key_bits: int
    wall_s: float
    ended_after_fault_wall_s: float | None = None


@dataclass
class SimPair:
    """Both daemons, the broker, the physics and an observer of the bus (see the module)."""

    broker: Any  # tests.conftest.MosquittoBroker
    root: Path
    seed: int = 5
    scenario: Scenario = field(init=False)
    seen: list[tuple[float, str, Envelope]] = field(default_factory=list)

    async def __aenter__(self) -> SimPair:
        # every task records the daemon run it belongs to, so that burying a killed daemon
        # also ends the tasks it spawned (a killed process runs none of its tasks on)
        self.task_runs: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = (
            weakref.WeakKeyDictionary()
        )
        loop = asyncio.get_running_loop()
        self._previous_factory = loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task:
            task = asyncio.Task(coro, loop=loop, **kwargs)
            run = _RUN.get()
            if run is not None:
                self.task_runs[task] = run
            return task

        loop.set_task_factory(factory)
        seed = self.seed
        self.scenario = load_scenario(CLEAR, seed=seed)
        self.pass_index = 0
        self._overhead_pass(0)
        first = self._physics(self.next_start_after_aos_s)
        mission, station = self.scenario.mission, self.scenario.station
        preshared = preshared_auth_key(seed, PRESHARED_MESSAGES)
        self.payload_keys = self.root / "payload"
        self.payload_store = KeyStore(self.payload_keys / station.name)
        install_preshared_key(self.payload_store, preshared)
        self.ogs_store = KeyStore(self.root / "ogs")
        install_preshared_key(self.ogs_store, preshared)
        self.clock = SimClock(first.clock_start_unix_s)
        self.sequencer = SourceSequencer(
            None, mission.source.probabilities, mission.source.basis_x_probability
        )
        self.stack = contextlib.AsyncExitStack()
        await self.stack.__aenter__()
        tagger = {"driver": "sim_time_tagger", "resource": "in-process://tagger"}
        benches = {
            "payload": scenario_benches(self.scenario)["payload"],
            "station": validate_instruments({"name": "t", "instruments": {"tagger": tagger}}, "t"),
        }
        self.bench: SimBench
        self.bench, _ = await build_bench(
            benches, self.scenario, first, self.clock, self.sequencer, self.stack
        )
        self.signer = OccSigner(self.root / "occ")
        self.payload_verifier = install_tc_key(self.payload_keys, self.root / "occ", "payload")
        self.ogs_verifier = install_tc_key(
            self.root / "ogs", self.root / "occ", f"ogs-{station.name}"
        )
        self.occ = await self.stack.enter_async_context(self._bus("occ"))
        await self.occ.subscribe(f"satqkd/{mission.name}/#")
        self.tasks: list[asyncio.Task[Any]] = [asyncio.create_task(self._observe())]
        self.restarts = 0
        self.bus_stacks: dict[str, contextlib.AsyncExitStack] = {}
        self.runs: dict[str, asyncio.Task[Any]] = {}
        self.dead: list[asyncio.Task[Any]] = []  # killed daemons, parked until the pass ends
        self.dead_runs: set[str] = set()  # ... and the names of their runs (see _RUN)
        self.run_names: dict[str, str] = {}  # each daemon's current run
        await self._start_payload()
        await self._start_station()
        await asyncio.sleep(0.1)  # both daemons subscribed
        return self

    async def __aexit__(self, *exc: object) -> None:
        asyncio.get_running_loop().set_task_factory(self._previous_factory)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.stack.__aexit__(None, None, None)

    # --- assembly ---------------------------------------------------------------------------

    def _overhead_pass(self, index: int) -> None:
        """Move on to the index-th high night pass (searched for once, from the last one's
        LOS): its AOS, its first QKD window's start."""
        self.pass_index = index
        after = self.scenario.scenario.search.start_utc
        if index > 0:
            after = datetime.fromtimestamp(self.los_unix_s + 60.0, UTC)
        self.search = (after, SEARCH_DAYS)
        window = choose_pass(self._scenario_at(0.0))[1]
        # later look-ups of this pass search only around it (a search of days costs seconds)
        self.search = (datetime.fromtimestamp(window.aos_unix_s - 600.0, UTC), 0.02)
        window = choose_pass(self._scenario_at(0.0))[1]  # as every later look-up finds it
        self.aos_unix_s, self.los_unix_s = window.aos_unix_s, window.los_unix_s
        mid_after_aos_s = 0.5 * (window.los_unix_s - window.aos_unix_s)
        self.next_start_after_aos_s = math.ceil(mid_after_aos_s - FIRST_QKD_BEFORE_MID_S)
        self.last_start_after_aos_s = mid_after_aos_s + LAST_QKD_AFTER_MID_S

    def _scenario_at(self, qkd_after_aos_s: float) -> Scenario:
        sc = self.scenario.scenario
        sim = sc.simulation.model_copy(update={"qkd_start_after_aos_s": qkd_after_aos_s})
        search = sc.search.model_copy(
            update={
                "start_utc": self.search[0],
                "days": self.search[1],
                "pass_index": 0,
                "min_max_elevation_deg": MIN_MAX_ELEVATION_DEG,
            }
        )
        return self.scenario.model_copy(
            update={"scenario": sc.model_copy(update={"simulation": sim, "search": search})}
        )

    def _physics(self, qkd_after_aos_s: float) -> PassPhysics:
        return plan_pass(self._scenario_at(qkd_after_aos_s), max_duration_s=QKD_WINDOW_S)

    def _bus(self, name: str) -> MessageBus:
        return MessageBus(
            self.broker.url,
            f"{name}-{self.seed}",
            reconnect_min_s=0.05,
            reconnect_max_s=0.3,
            publish_timeout_s=PUBLISH_TIMEOUT_S,
        )

    async def _open_bus(self, which: str) -> KillableBus:
        """A daemon's bus, on a connection of its own that `_close_bus` drops at a kill."""
        stack = contextlib.AsyncExitStack()
        inner = await stack.enter_async_context(self._bus(f"{which}{self.restarts}"))
        self.stack.push_async_callback(stack.aclose)
        self.bus_stacks[which] = stack
        return KillableBus(inner)

    async def _close_bus(self, which: str) -> None:
        """The killed process's connection goes, as the OS closes a dead process's sockets."""
        await self.bus_stacks.pop(which).aclose()

    async def _start_payload(self) -> None:
        self.payload_bus = await self._open_bus("payload")
        mission = self.scenario.mission
        settings = dataclasses.replace(
            payload_settings(mission),
            session_timeout_s=SESSION_TIMEOUT_S,
            housekeeping_period_s=HOUSEKEEPING_S,
        )
        self.payload = PayloadDaemon(
            settings,
            self.payload_bus,  # type: ignore[arg-type]
            KillableClock(self.clock, self.payload_bus.killed),  # type: ignore[arg-type]
            self.bench.source,
            self.payload_keys,
            await seeded_entropy(rng.derive_key(self.seed + self.restarts, "payload/entropy")),
            self.sequencer,
            tc_verifier=self.payload_verifier,
        )
        self.run_names["payload"] = f"payload{self.restarts}"
        token = _RUN.set(self.run_names["payload"])
        self.runs["payload"] = asyncio.create_task(self.payload.run())
        _RUN.reset(token)
        self.tasks.append(self.runs["payload"])

    async def _start_station(self) -> None:
        self.ogs_bus = await self._open_bus("station")
        mission, station = self.scenario.mission, self.scenario.station
        settings = dataclasses.replace(
            ogs_settings(mission, station, station_path(self.scenario)),
            reply_timeout_s=REPLY_TIMEOUT_S,
            housekeeping_period_s=HOUSEKEEPING_S,
        )
        self.ogs = OgsDaemon(
            settings,
            self.ogs_bus,  # type: ignore[arg-type]
            KillableClock(self.clock, self.ogs_bus.killed),  # type: ignore[arg-type]
            self.bench.tagger,
            self.ogs_store,
            await seeded_entropy(rng.derive_key(self.seed + self.restarts, "ogs/entropy")),
            tc_verifier=self.ogs_verifier,
        )
        self.run_names["station"] = f"station{self.restarts}"
        token = _RUN.set(self.run_names["station"])
        self.runs["station"] = asyncio.create_task(self.ogs.run())
        _RUN.reset(token)
        self.tasks.append(self.runs["station"])

    async def _observe(self) -> None:
        async for message in self.occ.messages():
            with contextlib.suppress(Exception):
                envelope = decode_envelope(message.payload)
                if "/qkd/" in message.topic:  # the name is enough: detection reports are big
                    envelope = dataclasses.replace(envelope, fields={})
                self.seen.append((time.monotonic(), message.topic, envelope))

    # --- what the observer saw --------------------------------------------------------------

    def names_since(self, since: float, node: str | None = None) -> list[str]:
        """Get: names of the messages seen since `since` (events by their event name)."""
        names = []
        for wall, topic, envelope in self.seen:
            if wall < since or (node is not None and f"/{node}/" not in topic):
                continue
            name = envelope.spec.name
            if name == "EVENT":
                name = dct.event_by_id(envelope.fields["event_id"]).name
            names.append(name)
        return names

    # --- one pass -----------------------------------------------------------------------------

    async def fly(self, plan_id: int, fault: Outage | Crash | None = None) -> PassEnd:
        """Control: plan and fly one pass with at most one fault; get what each end holds
        (AssertionError if an end did not end it, or the ends disagree)."""
        self.seen.clear()  # what earlier passes published: nothing looks back that far
        wall_start = time.monotonic()
        # an outage before AOS ends 4 s before QKD start: the plan is loaded before it
        early_s = fault.duration_s if isinstance(fault, Outage) and fault.phase == PHASES[0] else 0
        start = max(
            self.next_start_after_aos_s, self.clock.now_unix_s() + 5 + early_s - self.aos_unix_s
        )
        if start > self.last_start_after_aos_s:  # on to the next overhead pass
            self._overhead_pass(self.pass_index + 1)
            start = self.next_start_after_aos_s
        physics = self._physics(math.ceil(start))
        self.next_start_after_aos_s = physics.qkd_stop_unix_s + 2.0 - self.aos_unix_s
        plan = pass_plan_fields(plan_id, self.scenario, physics)
        plan["los_unix_s"] = plan["qkd_stop_unix_s"] + 5.0
        await self.clock.advance_to(physics.qkd_start_unix_s - 4.0 - early_s)
        await self._load(plan)
        crash = fault if isinstance(fault, Crash) else None
        outage = fault if isinstance(fault, Outage) else None
        if crash is not None:
            victim_bus = self.payload_bus if crash.victim == "payload" else self.ogs_bus
            victim_bus.kill_before = crash.before
        fault_at: float | None = None
        if outage is not None and outage.phase == PHASES[0]:
            fault_at = time.monotonic()
            await self._outage(outage.duration_s, None)
        lead_s = self.ogs.settings.tagger_lead_s
        await self.clock.advance_to(max(self.clock.now_unix_s(), physics.qkd_start_unix_s - lead_s))

        def tagging() -> bool:
            session = self.ogs.sessions.get(plan_id)
            return session is None or session.tagger_epoch_unix_s is not None

        assert await self._wait(tagging, 10.0), "the station did not start its tagger"
        await self.clock.advance_to(max(self.clock.now_unix_s(), physics.qkd_start_unix_s))
        await self._wait(self.bench.source_emitting, 5.0)  # not after a crash or a safing
        epoch = self.bench.tagger_epoch()
        self._answers_before = self.payload.links[self.scenario.station.name].channel.sent_messages
        frame = 0
        while frame < physics.n_frames:
            in_phase = outage is not None and (
                (outage.phase == "tagging" and frame == 2)
                or (outage.phase == "sifting" and frame == physics.n_frames - 1)
            )
            if in_phase:
                fault_at = time.monotonic()
                frame = await self._outage(outage.duration_s, (physics, frame, epoch))  # type: ignore[union-attr]
                continue
            await self._feed(physics, frame, epoch)
            frame += 1
        if outage is not None and outage.phase in PHASE_MESSAGES:
            wanted = set(PHASE_MESSAGES[outage.phase])
            if await self._wait(lambda: wanted & set(self.names_since(wall_start)), STEP_WAIT_S):
                fault_at = time.monotonic()
                await self._outage(outage.duration_s, None)
        if crash is not None:
            killed = self.payload_bus.killed if crash.victim == "payload" else self.ogs_bus.killed
            await self._wait(killed.is_set, STEP_WAIT_S)
            if killed.is_set():
                fault_at = time.monotonic()
                await self._close_bus(crash.victim)
                self.dead.append(self.runs[crash.victim])
                self.dead_runs.add(self.run_names[crash.victim])
                await asyncio.sleep(0.2)
                self.restarts += 1
                if crash.victim == "payload":
                    await self._start_payload()
                else:
                    await self._start_station()
        await self._end(plan_id, physics)
        end = self._check(plan_id, fault, wall_start, fault_at)
        await self._bury()
        await self.housekeeping_resumes()
        return end

    async def _bury(self) -> None:
        """Free what a killed daemon held (the harness's memory, not the process's: a dead
        process's is the system's again); its parked tasks end without touching the disk, as
        what they would close was closed by the restarted daemon. Every task the killed run
        spawned goes too (not only its main task: a spawned task parked on the dead bus would
        hold its session, arrays and all, for ever). A task whose cleanup awaits the dead bus
        again is cancelled again, up to BURY_ROUNDS times."""
        self.dead += [t for t, run in list(self.task_runs.items()) if run in self.dead_runs]
        self.dead_runs.clear()
        pending = {task for task in self.dead if not task.done()}
        for _ in range(BURY_ROUNDS):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.05)
        assert not pending, f"killed daemon tasks that never end: {pending}"
        self.tasks = [t for t in self.tasks if t not in self.dead]
        self.dead.clear()

    async def _load(self, plan: dict[str, Any]) -> None:
        since = time.monotonic()
        station = self.scenario.station.name
        seqs = {}
        for node in ("payload", f"ogs-{station}"):
            seqs[node], data = self.signer.signed(node, "LOAD_PASS_PLAN", **plan)
            await self.occ.publish(dct.telecommand_topic(self.scenario.mission.name, node), data)

        def acks() -> dict[str, tuple[bool, str]]:
            found = {}
            for wall, topic, envelope in self.seen:
                node = topic.split("/")[2]
                if (
                    wall >= since
                    and envelope.spec.name == "TC_ACK"
                    and envelope.fields["command_seq"] == seqs.get(node)
                ):
                    found[node] = (envelope.fields["accepted"], envelope.fields["reason"])
            return found

        await self._wait(lambda: len(acks()) == 2, 20)
        assert len(acks()) == 2 and all(ok for ok, _ in acks().values()), acks()

    async def _feed(self, physics: PassPhysics, k: int, epoch: float | None) -> None:
        t0 = physics.qkd_start_unix_s + k * physics.frame_s
        emitting = self.bench.source_emitting()
        await self.clock.advance_to(t0 + physics.frame_s)
        channel, timestamp_ps = np.zeros(0, np.uint8), np.zeros(0, np.int64)
        if emitting and self.sequencer.active_plan is not None and epoch is not None:
            channel, timestamp_ps = physics.detections_for_frame(k, self.sequencer.pattern, epoch)
        feeding = asyncio.ensure_future(
            self.bench.feed(TagBuffer(channel, timestamp_ps, t0, t0 + physics.frame_s))
        )
        # a tagger the station stopped (its pass ended) drops the buffer; a station that does
        # not read (blocked on the broker) loses it, as a real tagger's buffer overflows
        done, _ = await asyncio.wait({feeding}, timeout=FEED_WAIT_S)
        if not done:
            feeding.cancel()
        # in real time the station's reports follow its tagging within a frame or so, and the
        # payload answers each (it safes its source when its station stays silent): the clock
        # waits for them while the broker is there
        await self._wait(lambda: self._reported(k - 1), FEED_WAIT_S)

    def _reported(self, frame: int) -> bool:
        if not (self.payload_bus.connected and self.ogs_bus.connected):
            return True
        session = self.ogs.sessions.get(max(self.ogs.sessions, default=-1))
        if session is None or len(session.result.chunks) <= frame:
            return session is None
        answered = self.payload.links[self.scenario.station.name].channel.sent_messages
        return answered - self._answers_before > frame

    async def _outage(
        self, duration_s: float, tagging: tuple[PassPhysics, int, float | None] | None
    ) -> int:
        """Broker down for `duration_s` of simulated time; during tagging the frames of that
        time are fed as the source emits them. Get the next frame to feed."""
        self.broker.stop()
        end = self.clock.now_unix_s() + duration_s
        frame = tagging[1] if tagging is not None else 0
        while self.clock.now_unix_s() < end:
            if tagging is not None and frame < tagging[0].n_frames:
                await self._feed(tagging[0], frame, tagging[2])
                frame += 1
            else:
                await self.clock.advance_to(min(end, self.clock.now_unix_s() + 1.0))
            await asyncio.sleep(1.0 / WALL_PER_SIM)  # a simulated second of outage
        self.broker.start()
        # the outage ends when the daemons are back on it (a reconnection takes wall time:
        # the simulated clock does not run on meanwhile)
        await self._wait(lambda: self.payload_bus.connected and self.ogs_bus.connected, 10.0)
        return frame

    async def _wait(self, condition: Callable[[], Any], wall_s: float) -> bool:
        deadline = time.monotonic() + wall_s
        while time.monotonic() < deadline:
            if condition():
                return True
            await asyncio.sleep(0.01)
        return bool(condition())

    async def _end(self, plan_id: int, physics: PassPhysics) -> None:
        """Both ends end the pass: wait (wall) for them, moving the clock to LOS and then on,
        a second at a time, up to the payload's session timeout after LOS."""
        station = self.scenario.station.name
        los = physics.qkd_stop_unix_s + 5.0
        if self.clock.now_unix_s() < los:
            await self.clock.advance_to(los)

        def ended() -> bool:
            done = self.ogs.pass_done.get(plan_id)
            station_ended = (done is not None and done.is_set()) or plan_id in self.ogs.results
            payload_ended = self.payload.outcome(station, plan_id) is not None
            released = not self.payload.session(station, plan_id)
            # an ABORT from a restarted end may still be on its way to an end that had ended
            agreed = self.payload_store.key_ids(state=None) == self.ogs_store.key_ids(state=None)
            return station_ended and payload_ended and released and agreed

        limit = los + SESSION_TIMEOUT_S + 2 * HOUSEKEEPING_S
        deadline = time.monotonic() + END_WAIT_S
        while not await self._wait(ended, 0.5) and time.monotonic() < deadline:
            if self.clock.now_unix_s() < limit:
                await self.clock.advance_to(self.clock.now_unix_s() + 1.0)
        assert ended(), (
            f"plan {plan_id} did not end at both ends: station "
            f"{self.ogs.results.get(plan_id)}, payload {self.payload.outcome(station, plan_id)}"
        )

    def _check(
        self, plan_id: int, fault: Outage | Crash | None, wall_start: float, fault_at: float | None
    ) -> PassEnd:
        station = self.scenario.station.name
        result = self.ogs.results[plan_id]
        outcome = self.payload.outcome(station, plan_id)
        assert outcome is not None
        # the same keys at both ends: confirmed ones equal, nothing pending, nothing open
        assert self.payload_store.key_ids(state="pending") == []
        assert self.ogs_store.key_ids(state="pending") == []
        assert self.payload_store.key_ids() == self.ogs_store.key_ids()
        assert self.payload_store.digest() == self.ogs_store.digest()
        assert PlanRegistry(self.payload_store).open_ids() == []
        assert PlanRegistry(self.ogs_store).open_ids() == []
        assert not self.ogs.sessions and not self.payload.links[station].sessions
        if result.key_id is not None or (outcome.confirmed and not outcome.discarded):
            assert result.key_id == outcome.key_id and outcome.confirmed
            assert result.key_id in self.ogs_store.key_ids()
        ended_wall = time.monotonic()
        return PassEnd(
            plan_id,
            fault,
            result.key_id,
            result.abort_reason,
            outcome.key_id if outcome.confirmed and not outcome.discarded else None,
            outcome.abort_reason,
            result.key_bits,
            ended_wall - wall_start,
            None if fault_at is None else ended_wall - fault_at,
        )

    async def housekeeping_resumes(self) -> None:
        """Control: move the clock on a housekeeping period; AssertionError unless both
        daemons published housekeeping meanwhile (their housekeeping survived the faults)."""
        since = time.monotonic()
        await self.clock.advance_to(self.clock.now_unix_s() + HOUSEKEEPING_S + 1.0)
        station = f"ogs-{self.scenario.station.name}"
        for node in ("payload", station):
            await self._wait(lambda n=node: "HOUSEKEEPING" in self.names_since(since, n), 5)
            assert "HOUSEKEEPING" in self.names_since(since, node), f"{node} housekeeping stopped"


async def run_with_timeout(coroutine: Awaitable[Any], wall_s: float) -> Any:
    """Control: await with a wall-time bound (a hang is a failure naming the bound)."""
    try:
        return await asyncio.wait_for(coroutine, wall_s)
    except TimeoutError:
        raise AssertionError(f"hung: nothing ended within {wall_s:g} s of wall time") from None
