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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.bus import MessageBus
from drivers.clock import SimClock
from drivers.interfaces import TagBuffer
from drivers.keystore import KeyStore
from drivers.sim import SimPulsedSource, SimTimeTagger
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.broker import EmbeddedBroker
from satqkd.config import Scenario
from satqkd.pass_physics import PassPhysics, plan_pass
from satqkd.wiring import ogs_settings, pass_plan_fields, payload_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core import rng
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon

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
    source = SimPulsedSource("source", sequencer.pattern, clock)
    tagger = SimTimeTagger("tagger", clock)
    await source.connect()
    await tagger.connect()

    async with contextlib.AsyncExitStack() as stack:
        if broker_url is None:
            broker = await stack.enter_async_context(EmbeddedBroker())
            broker_url = broker.url
        payload_bus = await stack.enter_async_context(MessageBus(broker_url, f"payload-{seed}"))
        ogs_bus = await stack.enter_async_context(MessageBus(broker_url, f"ogs-{seed}"))
        occ_bus = await stack.enter_async_context(MessageBus(broker_url, f"occ-{seed}"))
        payload = PayloadDaemon(
            payload_settings(mission),
            payload_bus,
            clock,
            source,
            payload_keys,
            rng.derive_key(seed, "payload/entropy"),
        )
        ogs = OgsDaemon(
            ogs_settings(mission, station),
            ogs_bus,
            clock,
            tagger,
            ogs_store,
            rng.derive_key(seed, "ogs/entropy"),
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
            physics, clock, source, sequencer, tagger, ogs, plan_id, progress
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
    source: SimPulsedSource,
    sequencer: SourceSequencer,
    tagger: SimTimeTagger,
    ogs: OgsDaemon,
    plan_id: int,
    progress: Callable[[float, str], None] | None,
) -> int:
    """Advance simulated time frame by frame; feed the tagger what the channel detects."""
    await clock.advance_to(physics.qkd_start_unix_s - 1.0)
    await _await_event(tagger.started, "the station did not start its time tagger", 30.0)
    await clock.advance_to(physics.qkd_start_unix_s)
    await _await_event(source.enabled_changed, "the payload did not enable its source", 30.0)
    epoch = tagger.epoch_unix_s
    assert epoch is not None
    pulses_sent = 0
    n_frames = physics.n_frames
    for k in range(n_frames):
        t0 = physics.qkd_start_unix_s + k * physics.frame_s
        t1 = t0 + physics.frame_s
        emitting = source.enabled
        await clock.advance_to(t1)
        if emitting:
            frame = physics.detections_for_frame(k, sequencer.pattern, epoch)
            pulses_sent += physics.pulses_per_frame
        else:
            frame = (np.zeros(0, np.uint8), np.zeros(0, np.int64))
        channel, timestamp_ps = frame
        await tagger.feed(TagBuffer(channel, timestamp_ps, t0, t1))
        if progress is not None:
            detections = ogs.sessions[plan_id].result.detections
            progress((k + 1) / n_frames, f"{detections} detections")
    return pulses_sent


async def _await_event(event: asyncio.Event, what: str, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        raise SimulationError(what) from None
