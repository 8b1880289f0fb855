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
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.interfaces import PulsedSource, TagBuffer, TimeTagger
from drivers.payload_link import PayloadLink
from drivers.payload_link_source import PayloadLinkSource
from drivers.scpi import LASER_SOURCE_SIM_RESOURCE, ScpiLaserSource
from drivers.time_tagger_tcp import TcpTimeTagger
from drivers.transport import open_transport
from firmware_shims.payload_controller import PayloadController
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.broker import EmbeddedBroker
from satqkd.config import Scenario, station_path
from satqkd.pass_physics import PassPhysics, plan_pass
from satqkd.sim_station import StationBench, build_station, station_paths
from satqkd.wiring import ogs_settings, pass_plan_fields, payload_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core import rng
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from sim_backends.emulators.scpi import LaserSourceEmulator
from sim_backends.emulators.time_tagger import TimeTaggerEmulator
from sim_backends.instruments import SimPulsedSource, SimTimeTagger

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


async def build_bench(
    paths: dict[str, str],
    clock: SimClock,
    sequencer: SourceSequencer,
    stack: contextlib.AsyncExitStack,
    *,
    controller_keep_alive_s: float = 2.0,
) -> SimBench:
    """Instruments in-process, or behind their wire-level emulators on loopback sockets (the
    daemons then drive them through the same drivers as on a bench)."""
    source, source_emitting = await _build_source(
        paths, clock, sequencer, stack, controller_keep_alive_s
    )
    if paths["tagger"] == "emulator":
        emulator = TimeTaggerEmulator(clock, n_channels=4)
        await emulator.start()
        stack.push_async_callback(emulator.close)
        tagger: TimeTagger = TcpTimeTagger("tagger", open_transport(emulator.resource))
        started, feed = emulator.started, emulator.feed

        def tagger_epoch() -> float | None:
            return emulator.epoch_unix_s

    else:
        sim_tagger = SimTimeTagger("tagger", clock)
        tagger, started, feed = sim_tagger, sim_tagger.started, sim_tagger.feed

        def tagger_epoch() -> float | None:
            return sim_tagger.epoch_unix_s

    await tagger.connect(timeout_s=10.0)
    stack.push_async_callback(tagger.close)
    return SimBench(source, tagger, source_emitting, started, tagger_epoch, feed, dict(paths))


async def _build_source(
    paths: dict[str, str],
    clock: SimClock,
    sequencer: SourceSequencer,
    stack: contextlib.AsyncExitStack,
    controller_keep_alive_s: float,
) -> tuple[PulsedSource, Callable[[], bool]]:
    """The source hardware on its path (in-process, SCPI emulator over TCP, SCPI over
    pyvisa-sim) and what the payload daemon drives: that hardware itself, or (payload_link
    emulator) a PayloadLinkSource talking PUS over a pty to the controller firmware that owns
    the hardware. Also the physics' view: whether the hardware emits."""
    if paths["source"] == "emulator":
        laser = LaserSourceEmulator(clock)
        await laser.start_tcp()
        stack.push_async_callback(laser.stop)
        hardware: PulsedSource = ScpiLaserSource(
            "source", open_transport(laser.resource), pattern=sequencer.pattern
        )

        def source_emitting() -> bool:
            return bool(laser.settings["OUTP:STAT"].value)

    elif paths["source"] == "visa-sim":
        visa_laser = ScpiLaserSource(
            "source", open_transport(LASER_SOURCE_SIM_RESOURCE), pattern=sequencer.pattern
        )
        hardware = visa_laser

        # pyvisa-sim keeps the device state inside its session: the physics follows the
        # emission the instrument confirmed to its driver (decision 0009)
        def source_emitting() -> bool:
            return visa_laser.enabled

    else:
        sim_source = SimPulsedSource("source", sequencer.pattern, clock)
        hardware = sim_source

        def source_emitting() -> bool:
            return sim_source.enabled

    await hardware.connect(timeout_s=10.0)
    stack.push_async_callback(hardware.close)
    if paths.get("payload_link", "in-process") != "emulator":
        return hardware, source_emitting
    controller = PayloadController(clock, source_hardware=hardware)
    await controller.start()
    stack.push_async_callback(controller.close)
    link = PayloadLink("payload-link", open_transport(f"serial://{controller.port_path}"))
    source = PayloadLinkSource(
        "source",
        link,
        clock,
        pattern=sequencer.pattern,
        keep_alive_interval_s=controller_keep_alive_s,
    )
    await source.connect(timeout_s=10.0)
    stack.push_async_callback(source.close)
    return source, source_emitting


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
        await asyncio.wait_for(collect(), timeout_s)
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
) -> PassRun:
    """Run one pass; returns what the report needs. Raises SimulationError for a pass that
    could not run (no pass in the search window, a daemon that does not answer)."""
    wall_start = time.perf_counter()
    seed = scenario.scenario.seed
    physics = plan_pass(scenario, max_duration_s=max_duration_s)
    mission = scenario.mission
    station = scenario.station
    key_root = out_dir / "keys"
    payload_keys = key_root / "payload"
    ogs_keys = key_root / f"ogs-{station.name}"
    preshared = preshared_auth_key(seed, scenario.scenario.simulation.preshared_auth_messages)
    KeyStore(payload_keys / station.name).store_secret("preshared-auth", preshared)
    ogs_store = KeyStore(ogs_keys)
    ogs_store.store_secret("preshared-auth", preshared)

    clock = SimClock(physics.clock_start_unix_s)
    sequencer = SourceSequencer(
        rng.derive_key(seed, "payload/qrng"),
        mission.source.probabilities,
        mission.source.basis_x_probability,
    )
    chosen = scenario.scenario.simulation.instruments
    paths = {"source": chosen.source, "tagger": chosen.tagger, "payload_link": chosen.payload_link}
    if instruments is not None:
        paths = dict.fromkeys(paths, instruments)

    async with contextlib.AsyncExitStack() as stack:
        payload_config = payload_settings(mission)
        bench = await build_bench(
            paths,
            clock,
            sequencer,
            stack,
            controller_keep_alive_s=payload_config.controller_keep_alive_s,
        )
        station_bench = await build_station(
            scenario, physics, clock, station_paths(scenario, instruments), stack
        )
        if broker_url is None:
            broker = await stack.enter_async_context(EmbeddedBroker())
            broker_url = broker.url
        payload_bus = await stack.enter_async_context(MessageBus(broker_url, f"payload-{seed}"))
        ogs_bus = await stack.enter_async_context(MessageBus(broker_url, f"ogs-{seed}"))
        occ_bus = await stack.enter_async_context(MessageBus(broker_url, f"occ-{seed}"))
        payload = PayloadDaemon(
            payload_config,
            payload_bus,
            clock,
            bench.source,
            payload_keys,
            rng.derive_key(seed, "payload/entropy"),
        )
        ogs = OgsDaemon(
            ogs_settings(mission, station, station_path(scenario)),
            ogs_bus,
            clock,
            bench.tagger,
            ogs_store,
            rng.derive_key(seed, "ogs/entropy"),
            instruments=station_bench.instruments,
        )
        await occ_bus.subscribe(f"satqkd/{mission.name}/+/tm/tc_ack")
        daemon_tasks = [asyncio.create_task(payload.run()), asyncio.create_task(ogs.run())]
        stack.push_async_callback(_stop_tasks, daemon_tasks)
        await asyncio.sleep(0.05)  # both daemons subscribed before the plan is sent

        plan_id = 1 + (seed % 1_000_000)
        plan = pass_plan_fields(plan_id, scenario, physics)
        spec = dct.DICTIONARY["LOAD_PASS_PLAN"]
        nodes = {"payload": 1, f"ogs-{station.name}": 1}
        for node, seq in nodes.items():
            await occ_bus.publish(
                dct.telecommand_topic(mission.name, node), encode_envelope(spec, seq, plan)
            )
        acks = await _wait_acks(occ_bus, nodes, timeout_s=30.0)
        refused = {n: r for n, (ok, r) in acks.items() if not ok}
        if refused:
            raise SimulationError(f"pass plan refused: {refused}")

        pulses_sent = await _drive_pass(
            physics, clock, bench, sequencer, ogs, plan_id, progress, station_bench
        )
        if progress is not None:
            progress(1.0, "LOS: error correction, verification, privacy amplification")
        los_wall = time.perf_counter()
        await clock.advance_to(physics.window.los_unix_s)
        await _wait_for_end(payload, ogs, plan_id, station.name, timeout_s=300.0)
        key_ready = time.perf_counter() - los_wall
        bus_bytes = {
            "uplink": ogs.channel.sent_bytes,
            "downlink": payload.links[station.name].channel.sent_bytes,
        }
    return PassRun(
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
    )


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            log.error("daemon ended with %r", result)


async def _wait_for_end(
    payload: PayloadDaemon, ogs: OgsDaemon, plan_id: int, station: str, timeout_s: float
) -> None:
    try:
        await asyncio.wait_for(ogs.pass_done[plan_id].wait(), timeout_s)
        deadline = time.perf_counter() + 10.0
        session = payload.session(station, plan_id)
        while session is not None and not session.finished and time.perf_counter() < deadline:
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
        if emitting:
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
        if progress is not None:
            detections = ogs.sessions[plan_id].result.detections
            progress((k + 1) / n_frames, f"{detections} detections")
    return pulses_sent


async def _await_condition(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            raise SimulationError(what)
        await asyncio.sleep(0.001)


async def _await_event(event: asyncio.Event, what: str, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        raise SimulationError(what) from None
