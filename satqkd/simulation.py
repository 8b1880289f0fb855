"""`satqkd sim pass`: one whole pass on a simulated clock.

The scenario plays three roles that are not daemons: the operation control centre (it sends
the pass plan by telecommand over the bus), the physics (orbit, link, channel: what photons
reach the station's detectors, from the pattern the payload's source really emitted), and the
observer (it collects figures for the report). The payload and station daemons are the same
code that runs against hardware; the only path between them is the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivers.interfaces import PulsedSource, TagBuffer, TimeTagger
from drivers.registry import BuildContext
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.assembly import NodeInstruments, assemble_node
from satqkd.broker import EmbeddedBroker
from satqkd.config import ConfigError, Scenario, bench_path, station_path
from satqkd.instruments_config import BenchConfig, load_instruments_config
from satqkd.pass_physics import PassPhysics, plan_pass
from satqkd.report_builder import PassRecorder, SimulationTruth, build_report, key_digests
from satqkd.sim_link import link_buses, link_report
from satqkd.sim_station import ScenarioEmulators, StationBench, build_station
from satqkd.sim_truth import simulation_truth
from satqkd.wiring import ogs_settings, pass_plan_fields, payload_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core import rng
from satqkd_core.codec import decode_envelope
from satqkd_ogs.daemon import OgsDaemon
from satqkd_ogs.missions import StationMissions
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.emission_auth import install_emission_key
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import PRESHARED_KEY_SECRET, install_preshared_key
from satqkd_runtime.telecommand_auth import (
    TelecommandSigner,
    TelecommandVerifier,
    install_telecommand_key,
)
from sim_backends.classical_link import ClassicalLinkModel
from sim_backends.emulators.scpi import LaserSourceEmulator
from sim_backends.entropy import SeededEntropySource

log = logging.getLogger("satqkd.sim")


class SimulationError(RuntimeError):
    """The pass could not run to its end; the message is one line for the user."""


@dataclass
class PassRun:
    """Everything the report is made from."""

    scenario: Scenario
    physics: PassPhysics
    payload: PayloadDaemon
    ogs: OgsDaemon
    plan_id: int
    key_root: Path
    wall_s: float
    key_ready_after_los_s: float
    pulses_sent: int
    bus_bytes: dict[str, int]
    station: StationBench | None = None  # the station's instruments and their truth
    # the bench file of each node, and how each instrument slot was reached
    benches: dict[str, str] = field(default_factory=dict)
    instrument_paths: dict[str, str] = field(default_factory=dict)
    # what the recorder took from the bus, the simulator's truth, the key stores' digests, and
    # the report made of them (satqkd.report_builder)
    recorded: list[dict[str, Any]] = field(default_factory=list)
    truth: SimulationTruth | None = None
    key_digests: dict[str, str | None] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    # the modelled payload <-> station link (satqkd.sim_link), empty unless the scenario models it
    classical_link: dict[str, Any] = field(default_factory=dict)
    # the station's key store of this pass (None: key_root/ogs-<station>)
    ogs_keys: Path | None = None
    # the per-frame counts by intensity, copied before the station releases them (archives)


@dataclass
class SimBench:
    """The instruments of a simulated pass and the scenario's view of them (what the physics
    needs to know: when the source emits, when the tagger started, where tags go)."""

    source: PulsedSource
    tagger: TimeTagger
    source_emitting: Callable[[], bool]
    tagger_started: asyncio.Event
    tagger_epoch: Callable[[], float | None]
    feed: Callable[[TagBuffer], Awaitable[None]]
    paths: dict[str, str]


#: the shipped bench pairs `--instruments` chooses between
BENCH_PRESETS = {
    "in-process": {"payload": "sim-payload", "station": "sim-station"},
    "emulator": {"payload": "sim-payload-emulated", "station": "sim-station-emulated"},
}


def scenario_benches(scenario: Scenario, preset: str | None = None) -> dict[str, BenchConfig]:
    """Get: the payload's and the station's bench, as the scenario names them or as a preset
    (`in-process`: every instrument in memory; `emulator`: every one behind its wire-level
    emulator on a pty or loopback port); ConfigError naming the file and key."""
    if preset is not None and preset not in BENCH_PRESETS:
        raise ConfigError(f"--instruments: {preset!r} not in {sorted(BENCH_PRESETS)}")
    names = BENCH_PRESETS.get(preset or "", {})
    return {
        node: load_instruments_config(bench_path(scenario, node, names.get(node)))
        for node in ("payload", "station")
    }


async def build_bench(
    benches: dict[str, BenchConfig],
    scenario: Scenario,
    physics: PassPhysics,
    clock: SimClock,
    sequencer: SourceSequencer,
    stack: contextlib.AsyncExitStack,
    *,
    emission_keys: tuple[Path, Path] | None = None,
) -> tuple[SimBench, StationBench]:
    """Both nodes' instruments, assembled from their bench files as on a lab bench (in-process,
    behind wire-level emulators, over pyvisa-sim), with the scenario's emulators; and the
    physics' view of them. `emission_keys`: the payload's and its controller's key
    directories (requests to emit are then signed and the controller's interlock enforced)."""
    emulators = ScenarioEmulators(scenario, physics, clock, benches["station"])
    node_keys, controller_keys = emission_keys or (None, None)
    context = BuildContext(
        clock=clock, pattern=sequencer.pattern, keys=node_keys, controller_keys=controller_keys
    )
    payload = await assemble_node(
        benches["payload"], "payload", clock=clock, stack=stack, context=context,
        emulators=emulators,
    )  # fmt: skip
    station = await assemble_node(
        benches["station"], "station", clock=clock, stack=stack, emulators=emulators
    )
    if payload.source is None:
        raise SimulationError(f"{benches['payload'].origin}: no source for the payload")
    if station.tagger is None:
        raise SimulationError(f"{benches['station'].origin}: no time tagger for the station")
    fed = station.emulator_of("tagger") or station.tagger
    if not hasattr(fed, "feed"):
        raise SimulationError(
            f"{benches['station'].origin}: the tagger must be simulated (in-process:// or "
            "emulator://) for the channel simulation to feed it"
        )

    def tagger_epoch() -> float | None:
        return fed.epoch_unix_s  # type: ignore[no-any-return]

    paths = {
        "source": payload.paths["source"],
        "tagger": station.paths["tagger"],
        **station.station_paths(),
    }
    bench = SimBench(
        payload.source,
        station.tagger,
        _source_emitting(payload),
        fed.started,
        tagger_epoch,
        fed.feed,
        paths,
    )
    return bench, await build_station(scenario, station, emulators, stack)


def _source_emitting(payload: NodeInstruments) -> Callable[[], bool]:
    """Get: whether the source hardware emits, as the physics sees it: a laser emulator's
    output state, else what the hardware's driver last confirmed (pyvisa-sim keeps the device
    state inside its session; decision 0009)."""
    hardware = next(iter(payload.hardware.values()), None) or payload.source
    name = next(iter(payload.hardware), None) or payload.entry_names["source"]
    laser = payload.emulators.get(name)
    if isinstance(laser, LaserSourceEmulator):
        return lambda: bool(laser.settings["OUTP:STAT"].value)
    return lambda: bool(hardware.enabled)  # type: ignore[union-attr]


async def _wait_acks(
    occ: MessageBus, expected: dict[str, int], timeout_s: float
) -> dict[str, tuple[bool, str]]:
    """Wait for TC_ACK telemetry of the given command sequence numbers, one per node."""
    acks: dict[str, tuple[bool, str]] = {}

    async def collect() -> None:
        async for message in occ.messages():
            if not message.topic.endswith("/tm/tc_ack"):
                continue
            node = message.topic.split("/")[2]
            ack = decode_envelope(message.payload).fields
            if node in expected and ack["command_seq"] == expected[node]:
                acks[node] = (bool(ack["accepted"]), str(ack["reason"]))
                if len(acks) == len(expected):
                    return

    try:
        async with asyncio.timeout(timeout_s):  # not wait_for (issue 13)
            await collect()
    except TimeoutError:
        missing = sorted(set(expected) - set(acks))
        raise SimulationError(f"no acknowledgement of the pass plan from {missing}") from None
    return acks


async def run_pass(
    scenario: Scenario,
    out_dir: Path,
    broker_url: str | None = None,
    progress: Callable[[float, str], None] | None = None,
    max_duration_s: float | None = None,
    instruments: str | None = None,
    benches: dict[str, BenchConfig] | None = None,
    *,
    key_root: Path | None = None,
    ogs_keys: Path | None = None,
    station_missions: StationMissions | None = None,
) -> PassRun:
    """Run one pass; returns what the report needs. The instruments come from `benches`
    (payload, station), else from the preset `instruments` names, else from the scenario.
    Raises SimulationError for a pass that could not run (no pass in the search window, a
    daemon that does not answer), AssemblyError for an instrument that cannot be reached.

    A station serving several missions (`satqkd sim night`) gives `key_root` (this mission's
    payload and control-centre keys), `ogs_keys` (the station's store for this mission and
    peer) and `station_missions` (the plans and profile its daemons share), all kept across
    the night: the pre-shared key is then installed only into stores that lack one."""
    if scenario.mission.protocol.family == "bbm92":  # pairs, no pulse clock (sim_bbm92.py)
        from satqkd.sim_bbm92 import run_bbm92_pass

        return await run_bbm92_pass(
            scenario, out_dir, broker_url, progress, max_duration_s, instruments, benches,
            key_root=key_root, ogs_keys=ogs_keys, station_missions=station_missions,
        )  # fmt: skip
    wall_start = time.perf_counter()
    seed = scenario.scenario.seed
    physics = plan_pass(scenario, max_duration_s=max_duration_s)
    mission = scenario.mission
    station = scenario.station
    key_root = key_root if key_root is not None else out_dir / "keys"
    payload_keys = key_root / "payload"
    ogs_keys = ogs_keys if ogs_keys is not None else key_root / f"ogs-{station.name}"
    preshared = preshared_auth_key(seed, scenario.scenario.simulation.preshared_auth_messages)
    payload_store, ogs_store = KeyStore(payload_keys / station.name), KeyStore(ogs_keys)
    kept = payload_store.has_secret(PRESHARED_KEY_SECRET) and ogs_store.has_secret(
        PRESHARED_KEY_SECRET
    )
    if station_missions is None or not kept:  # a night keeps each mission's channel state
        install_preshared_key(payload_store, preshared)
        install_preshared_key(ogs_store, preshared)
    occ_keys = key_root / "occ"  # the control centre signs telecommands (decision 0016)
    install_telecommand_key(payload_keys, occ_keys, "payload", force=True)
    install_telecommand_key(ogs_keys, occ_keys, f"ogs-{station.name}", force=True)
    # the payload computer and its controller share the emission key (decision 0020)
    controller_keys = key_root / "payload-controller"
    install_emission_key(payload_keys, controller_keys, force=True)

    clock = SimClock(physics.clock_start_unix_s)
    # the payload computer's sequencer: a fresh pattern key per pass, drawn by the payload
    # daemon from its entropy source when the plan is loaded
    sequencer = SourceSequencer(
        None, mission.source.probabilities, mission.source.basis_x_probability
    )
    # every random value of each node from its own seeded source: the seed reproduces a pass
    payload_entropy = SeededEntropySource(
        "payload-entropy", rng.derive_key(seed, "payload/entropy")
    )
    ogs_entropy = SeededEntropySource("ogs-entropy", rng.derive_key(seed, "ogs/entropy"))
    for entropy in (payload_entropy, ogs_entropy):
        await entropy.connect()
    if benches is None:
        benches = scenario_benches(scenario, instruments)

    async with contextlib.AsyncExitStack() as stack:
        payload_config = payload_settings(mission)
        bench, station_bench = await build_bench(
            benches, scenario, physics, clock, sequencer, stack,
            emission_keys=(payload_keys, controller_keys),
        )  # fmt: skip
        buses = await open_pass_buses(stack, broker_url, seed, scenario, physics, clock)
        payload_bus, ogs_bus = buses.payload, buses.ogs
        link, recorder = buses.link, buses.recorder
        payload = PayloadDaemon(
            payload_config,
            payload_bus,
            clock,
            bench.source,
            payload_keys,
            payload_entropy,
            sequencer,
            tc_verifier=TelecommandVerifier.load(payload_keys, "payload"),
        )
        ogs = OgsDaemon(
            ogs_settings(mission, station, station_path(scenario)),
            ogs_bus,
            clock,
            bench.tagger,
            ogs_store,
            ogs_entropy,
            instruments=station_bench.instruments,
            tc_verifier=TelecommandVerifier.load(ogs_keys, f"ogs-{station.name}"),
            missions=station_missions,
        )
        plan_id = 1 + (seed % 1_000_000)
        plan = pass_plan_fields(plan_id, scenario, physics)
        await start_daemons_with_plan(stack, buses, payload, ogs, occ_keys, station.name, plan)

        pulses_sent = await _drive_pass(
            physics, clock, bench, sequencer, ogs, plan_id, progress, station_bench
        )
        if progress is not None:
            progress(1.0, "LOS: error correction, verification, privacy amplification")
        los_wall = time.perf_counter()
        await clock.advance_to(physics.window.los_unix_s)
        await _wait_for_end(payload, ogs, plan_id, station.name, timeout_s=300.0)
        key_ready = time.perf_counter() - los_wall
        await _await_summaries(recorder, payload, plan_id, station.name)
        bus_bytes = {
            "uplink": ogs.channel.sent_bytes,
            "downlink": payload.links[station.name].channel.sent_bytes,
        }
    run = PassRun(
        scenario=scenario,
        physics=physics,
        payload=payload,
        ogs=ogs,
        plan_id=plan_id,
        key_root=key_root,
        wall_s=time.perf_counter() - wall_start,
        key_ready_after_los_s=key_ready,
        pulses_sent=pulses_sent,
        bus_bytes=bus_bytes,
        station=station_bench,
        benches={node: bench_config.origin for node, bench_config in benches.items()},
        instrument_paths=dict(bench.paths),
        recorded=recorder.records,
        classical_link=link_report(link, physics.window.los_unix_s),
        ogs_keys=ogs_keys,
    )
    _add_report(run)
    return run


@dataclass
class PassBuses:
    """The bus connections of one simulated pass: each daemon's, the control centre's, the
    classical link between the daemons when the scenario models it, and the recorder the
    report is built from."""

    payload: Any
    ogs: Any
    occ: MessageBus
    link: ClassicalLinkModel | None
    recorder: PassRecorder
    mission: str


async def open_pass_buses(
    stack: contextlib.AsyncExitStack,
    broker_url: str | None,
    seed: int,
    scenario: Scenario,
    physics: Any,
    clock: SimClock,
) -> PassBuses:
    """Connect the pass's nodes to the broker (an embedded one when `broker_url` is None),
    put the mission's classical link between the daemons when modelled, and start the
    recorder; everything closes with `stack`."""
    if broker_url is None:
        broker = await stack.enter_async_context(EmbeddedBroker())
        broker_url = broker.url
    payload_bus = await stack.enter_async_context(MessageBus(broker_url, f"payload-{seed}"))
    ogs_bus = await stack.enter_async_context(MessageBus(broker_url, f"ogs-{seed}"))
    payload_bus, ogs_bus, link = await link_buses(
        scenario, physics, clock, payload_bus, ogs_bus, stack
    )
    occ_bus = await stack.enter_async_context(MessageBus(broker_url, f"occ-{seed}"))
    # the report is made of what the daemons publish, recorded as a control centre would
    recorder_bus = await stack.enter_async_context(MessageBus(broker_url, f"rec-{seed}"))
    mission = scenario.mission.name
    recorder = PassRecorder(recorder_bus, mission, clock=clock)
    await recorder.start()
    stack.push_async_callback(recorder.stop)
    return PassBuses(payload_bus, ogs_bus, occ_bus, link, recorder, mission)


async def start_daemons_with_plan(
    stack: contextlib.AsyncExitStack,
    buses: PassBuses,
    payload: PayloadDaemon,
    ogs: OgsDaemon,
    occ_keys: Path,
    station: str,
    plan: dict[str, Any],
) -> None:
    """Run both daemons (stopped with `stack`) and load the signed pass plan at both, as the
    control centre would; SimulationError when either refuses it."""
    await buses.occ.subscribe(f"satqkd/{buses.mission}/+/tm/tc_ack")
    daemon_tasks = [asyncio.create_task(payload.run()), asyncio.create_task(ogs.run())]
    stack.push_async_callback(_stop_tasks, daemon_tasks)
    await asyncio.sleep(0.05)  # both daemons subscribed before the plan is sent
    nodes = {"payload": 0, f"ogs-{station}": 0}  # node -> seq of its plan command
    for node in nodes:
        signer = TelecommandSigner.for_node(occ_keys, node)
        nodes[node], signed = signer.sign("LOAD_PASS_PLAN", plan)
        await buses.occ.publish(dct.telecommand_topic(buses.mission, node), signed)
    acks = await _wait_acks(buses.occ, nodes, timeout_s=30.0)
    refused = {n: r for n, (ok, r) in acks.items() if not ok}
    if refused:
        raise SimulationError(f"pass plan refused: {refused}")


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            log.error("daemon ended with %r", result)


async def _await_summaries(
    recorder: PassRecorder, payload: PayloadDaemon, plan_id: int, station: str
) -> None:
    """Wait until the recorder has the station's pass summary (and the payload's, if its
    part ended)."""
    if await recorder.wait_for("OGS_PASS_SUMMARY", plan_id, 30.0, station) is None:
        raise SimulationError(f"the station's summary of plan {plan_id} did not reach the bus")
    ended = payload.outcome(station, plan_id) is not None
    await recorder.wait_for("PAYLOAD_PASS_SUMMARY", plan_id, 10.0 if ended else 0.0, station)


def _add_report(run: PassRun) -> None:
    """Build the run's report: its recorded telemetry, its key stores' digests, its truth."""
    station = run.scenario.station.name
    run.truth = simulation_truth(
        run.scenario,
        run.physics,
        run.station,
        wall_s=run.wall_s,
        key_ready_after_los_s=run.key_ready_after_los_s,
        benches=run.benches,
        instruments=run.instrument_paths,
    )
    if run.classical_link:
        run.truth = dataclasses.replace(run.truth, classical_link=run.classical_link)
    run.key_digests = key_digests(
        run.recorded,
        plan_id=run.plan_id,
        payload_keys=KeyStore(run.key_root / "payload" / station),
        ogs_keys=KeyStore(run.ogs_keys or run.key_root / f"ogs-{station}"),
    )
    run.report = build_report(
        run.recorded, plan_id=run.plan_id, truth=run.truth, key_digests=run.key_digests
    )


async def _wait_for_end(
    payload: PayloadDaemon, ogs: OgsDaemon, plan_id: int, station: str, timeout_s: float
) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await ogs.pass_done[plan_id].wait()
        deadline = time.perf_counter() + 10.0
        # the payload ends after the station's KEY_STORED reaches it (or an abort does)
        while payload.outcome(station, plan_id) is None and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    except TimeoutError:
        raise SimulationError(f"post-processing did not finish within {timeout_s:g} s") from None


async def _drive_pass(
    physics: PassPhysics,
    clock: SimClock,
    bench: SimBench,
    sequencer: SourceSequencer,
    ogs: OgsDaemon,
    plan_id: int,
    progress: Callable[[float, str], None] | None,
    station: StationBench | None = None,
) -> int:
    """Advance simulated time frame by frame; feed the tagger what the channel detects (through
    the station's pointing and detector gates, when its instruments are in the loop)."""
    await clock.advance_to(physics.qkd_start_unix_s - 1.0)
    await _await_event(bench.tagger_started, "the station did not start its time tagger", 30.0)
    await clock.advance_to(physics.qkd_start_unix_s)
    await _await_condition(bench.source_emitting, "the payload did not enable its source", 30.0)
    epoch = bench.tagger_epoch()
    if epoch is None:
        raise SimulationError("the time tagger reports no epoch after starting")
    pulses_sent = 0
    n_frames = physics.n_frames
    for k in range(n_frames):
        t0 = physics.qkd_start_unix_s + k * physics.frame_s
        t1 = t0 + physics.frame_s
        emitting = bench.source_emitting()
        await clock.advance_to(t1)
        conditions = station.frame_conditions(t0, t1) if station is not None else None
        # an aborted pass's pattern key is gone: nothing more reaches the station from it
        if emitting and sequencer.active_plan is not None:
            frame = physics.detections_for_frame(
                k,
                sequencer.pattern,
                epoch,
                conditions.coupling if conditions is not None else 1.0,
                conditions.live_channels if conditions is not None else None,
            )
            pulses_sent += physics.pulses_per_frame
        else:
            frame = (np.zeros(0, np.uint8), np.zeros(0, np.int64))
        channel, timestamp_ps = frame
        await bench.feed(TagBuffer(channel, timestamp_ps, t0, t1))
        await _station_reported(ogs, plan_id, k - REPORT_LAG_FRAMES)
        session = ogs.sessions.get(plan_id)
        result = session.result if session is not None else ogs.results.get(plan_id)
        if progress is not None:
            detections = result.detections if result is not None else 0
            progress((k + 1) / n_frames, f"{detections} detections")
    return pulses_sent


# Frames the station's reports and the payload's answers may trail the simulated clock by:
# enough for both ends to work on frames side by side, well inside the payload's 5 s silence
# watchdog (the payload has answered frame k - 2 before frame k + 1 is fed: silence <= 3 s).
REPORT_LAG_FRAMES = 2
ANSWER_LAG_FRAMES = 0


async def _station_reported(ogs: OgsDaemon, plan_id: int, frame: int) -> None:
    """Wait (at most 30 s of wall time) until the station has reported `frame` and has the
    payload's answer (SIFT_RESULT) to the report `ANSWER_LAG_FRAMES` frames before it, or the
    pass has ended: in real time reports and answers follow the tagging within a frame or so, and
    the payload safes its source when its station stays silent (PayloadDaemon), so the
    simulated clock must not run ahead of either end however slow the host is."""
    deadline = time.perf_counter() + 30.0
    answered = frame - ANSWER_LAG_FRAMES
    while time.perf_counter() < deadline:
        session = ogs.sessions.get(plan_id)
        if session is None:
            return
        chunks = session.result.chunks
        if len(chunks) > frame and (answered < 0 or chunks[answered].x_bits is not None):
            return
        await asyncio.sleep(0.001)


async def _await_condition(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            raise SimulationError(what)
        await asyncio.sleep(0.001)


async def _await_event(event: asyncio.Event, what: str, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        raise SimulationError(what) from None
