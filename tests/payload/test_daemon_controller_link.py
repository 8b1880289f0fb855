"""The payload daemon driving its source through the payload controller (PayloadLinkSource over a
real pty to the controller firmware), commanded over a real Mosquitto broker: the pass plan
reaches the controller's interlock, a refusal becomes a rejected telecommand, and a silent link
safes the source, is evented, reconnected, and ends the pass without a key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers.payload_link import PayloadLink
from drivers.payload_link_source import PayloadLinkSource
from firmware_shims.payload_controller import PayloadController
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import MissionConfig, load_model
from satqkd.wiring import payload_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator
from satqkd_core.codec import Envelope, decode_envelope
from satqkd_payload.daemon import PayloadDaemon
from satqkd_payload.source_control import station_number
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.plan_registry import PlanRegistry
from satqkd_runtime.qkd_channel import QkdChannel, install_preshared_key
from sim_backends.instruments import SimPulsedSource
from tests.drivers.cuttable_line import CuttableLine
from tests.seeded_entropy import seeded_entropy
from tests.tc_signing import OccSigner, install_tc_key

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
T0 = 1_800_000_000.0
STATION = "xinglong"

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]


@dataclass
class Rig:
    clock: SimClock
    controller: PayloadController
    laser: SimPulsedSource
    line: CuttableLine
    daemon: PayloadDaemon
    daemon_task: asyncio.Task[None]
    occ: MessageBus
    station: QkdChannel
    rate_hz: float
    tc: OccSigner  # the control centre's telecommand signer
    seen: list[tuple[str, Envelope]] = field(default_factory=list)

    async def wait_for(
        self, accept: Callable[[str, Envelope], bool], what: str, timeout_s: float = 10.0
    ) -> Envelope:
        """Get the first message (telemetry, event or QKD message) that `accept` takes."""
        async with asyncio.timeout(timeout_s):
            while True:
                for topic, envelope in self.seen:
                    if accept(topic, envelope):
                        return envelope
                await asyncio.sleep(0.01)
        raise AssertionError(what)  # pragma: no cover  (asyncio.timeout raises first)

    async def event(self, name: str, text: str = "") -> str:
        """Get the text of the first event `name` whose text contains `text`."""

        def accept(_topic: str, envelope: Envelope) -> bool:
            return (
                envelope.spec.name == "EVENT"
                and dct.event_by_id(envelope.fields["event_id"]).name == name
                and text in envelope.fields["text"]
            )

        return str((await self.wait_for(accept, f"event {name}")).fields["text"])

    async def ack(self, seq: int) -> dict:
        """Get the TC_ACK of the telecommand with this sequence number."""

        def accept(_topic: str, envelope: Envelope) -> bool:
            return envelope.spec.name == "TC_ACK" and envelope.fields["command_seq"] == seq

        return (await self.wait_for(accept, f"ack of TC {seq}")).fields

    async def load_plan(self, seq: int, plan_id: int, start_s: float, stop_s: float) -> dict:
        plan = {
            "plan_id": plan_id,
            "mission": "jinan1",
            "station": STATION,
            "tle_line1": "1 99999U          26335.00000000  .00000000  00000-0  00000-0 0    05",
            "tle_line2": "2 99999  97.4000 100.0000 0001000   0.0000   0.0000 15.21000000    09",
            "aos_unix_s": T0,
            "los_unix_s": T0 + stop_s + 10,
            "qkd_start_unix_s": T0 + start_s,
            "qkd_stop_unix_s": T0 + stop_s,
            "repetition_rate_hz": self.rate_hz,
        }
        signed_seq, signed = self.tc.signed("payload", "LOAD_PASS_PLAN", **plan)
        assert signed_seq == seq, "telecommands are signed with consecutive seqs from 1"
        await self.occ.publish(dct.telecommand_topic("jinan1", "payload"), signed)
        return await self.ack(seq)


async def _step_to(clock: SimClock, unix_s: float, step_s: float = 0.25) -> None:
    while clock.now_unix_s() < unix_s - 1e-9:
        await clock.advance_to(min(clock.now_unix_s() + step_s, unix_s))
        await asyncio.sleep(0.005)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
async def rig(mosquitto_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    clock = SimClock(T0)
    mission = load_model(MissionConfig, MISSION)
    sequencer = SourceSequencer(99, tuple(mission.source.probabilities), 0.5)
    laser = SimPulsedSource("laser", sequencer.pattern, clock)
    preshared = preshared_auth_key(3, 4096)
    install_preshared_key(KeyStore(tmp_path / "keys" / STATION), preshared)
    async with contextlib.AsyncExitStack() as stack:
        controller = await stack.enter_async_context(
            PayloadController(clock, link_timeout_s=3.0, tick_s=0.1, source_hardware=laser)
        )
        assert controller.port_path is not None
        line = CuttableLine(controller.port_path, 115200)
        source = PayloadLinkSource(
            "source",
            PayloadLink("payload-link", line, reply_timeout_s=0.3),
            clock,
            pattern=sequencer.pattern,
            keep_alive_interval_s=1.0,
            missed_pings_before_reconnect=2,
            reconnect_min_s=1.0,
            reconnect_max_s=2.0,
        )
        await source.connect(timeout_s=2.0)
        stack.push_async_callback(source.close)
        bus = await stack.enter_async_context(MessageBus(mosquitto_url, "payload-under-test"))
        occ = await stack.enter_async_context(MessageBus(mosquitto_url, "occ-and-station"))
        await occ.subscribe("satqkd/jinan1/payload/#")
        await occ.subscribe(dct.qkd_topic("jinan1", STATION, "down"))
        station = QkdChannel(
            NodeRuntime(occ, "jinan1", f"ogs-{STATION}", clock),
            WegmanCarterAuthenticator(preshared, send_direction=0),
            send_topic=dct.qkd_topic("jinan1", STATION, "up"),
            receive_topic=dct.qkd_topic("jinan1", STATION, "down"),
        )
        daemon = PayloadDaemon(
            payload_settings(mission), bus, clock, source, tmp_path / "keys",
            await seeded_entropy(7), sequencer,
            tc_verifier=install_tc_key(tmp_path / "keys", tmp_path / "occ", "payload"),
        )  # fmt: skip
        task = asyncio.create_task(daemon.run())
        rig = Rig(
            clock, controller, laser, line, daemon, task, occ, station,
            mission.source.repetition_rate_hz, OccSigner(tmp_path / "occ"),
        )  # fmt: skip

        async def collect() -> None:
            async for message in occ.messages():
                rig.seen.append((message.topic, decode_envelope(message.payload)))

        collector = asyncio.create_task(collect())
        try:
            await rig.event("NODE_STARTED")
            yield rig
        finally:
            line.cut = False
            for running in (task, collector):
                running.cancel()
            await asyncio.gather(task, collector, return_exceptions=True)


async def test_a_plan_the_controller_refuses_is_a_rejected_telecommand(rig: Rig) -> None:
    ack = await rig.load_plan(1, plan_id=12, start_s=1.0, stop_s=60.0)
    assert ack["accepted"], ack["reason"]
    plan = rig.controller.plan
    assert plan is not None and plan.plan_id == 12 and plan.station_id == station_number(STATION)
    await _step_to(rig.clock, T0 + 1.5)
    await _until(lambda: rig.laser.enabled)
    assert rig.laser.first_pulse_unix_s == T0 + 1.0
    refused = await rig.load_plan(2, plan_id=13, start_s=100.0, stop_s=200.0)
    assert not refused["accepted"]
    assert refused["reason"].startswith("source controller refused the plan: source: ")
    assert "LOAD_PASS_PLAN failed: INTERLOCK: a plan is executing" in refused["reason"]
    assert "plan 13 not loaded" in await rig.event("INSTRUMENT_ERROR")
    assert rig.daemon.session(STATION, 13) is None
    assert rig.laser.enabled and not rig.daemon_task.done()


async def test_a_silent_controller_link_safes_the_source_and_ends_the_pass(rig: Rig) -> None:
    assert (await rig.load_plan(1, plan_id=11, start_s=2.0, stop_s=60.0))["accepted"]
    await _step_to(rig.clock, T0 + 2.5)
    await _until(lambda: rig.laser.enabled)
    await rig.event("PASS_STARTED")
    rig.line.cut = True  # the keep-alive stops reaching the controller
    await _step_to(rig.clock, T0 + 6.0)
    assert not rig.laser.enabled  # the firmware's watchdog, 3 s after the last telecommand
    safe = await rig.event("SOURCE_SAFE_STATE")
    assert safe.startswith("payload controller watchdog: no telecommand for 3.")
    assert "payload controller link lost: 2 keep-alive pings unanswered" in (
        await rig.event("INSTRUMENT_ERROR", "link lost")
    )
    daemon = rig.daemon
    assert not rig.daemon_task.done() and daemon.mode == "safe"
    assert daemon.counters.controller_safings == 1
    assert daemon.interrupted[(STATION, 11)].startswith("payload controller watchdog")
    rig.line.cut = False
    await _step_to(rig.clock, T0 + 12.0)
    assert "source in its safe state" in await rig.event("INSTRUMENT_ERROR", "link restored")
    assert not rig.laser.enabled  # nothing re-enables an interrupted pass

    # the station starts post-processing: the payload ends the pass without a key
    await rig.station.send(
        "PE_COUNTS",
        plan_id=11,
        n_chunks=0,
        x_detections=[0, 0, 0],
        z_detections=[0, 0, 0],
        z_errors=[0, 0, 0],
    )
    abort = await rig.wait_for(lambda _t, e: e.spec.name == "ABORT", "ABORT to the station")
    assert abort.fields["plan_id"] == 11
    assert abort.fields["reason"].startswith("source emission interrupted: payload controller")
    async with asyncio.timeout(10.0):  # the session is released once its end is reported
        while daemon.session(STATION, 11) is not None:
            await asyncio.sleep(0.01)
    outcome = daemon.outcome(STATION, 11)
    assert outcome is not None and outcome.key_id is None
    assert "source emission interrupted" in await rig.event("BLOCK_ABORTED")


async def test_an_accepted_plan_id_is_recorded_and_never_taken_again(rig: Rig) -> None:
    assert (await rig.load_plan(1, plan_id=21, start_s=100.0, stop_s=200.0))["accepted"]
    assert PlanRegistry(rig.daemon.links[STATION].keystore).seen(21)  # on disk, per station
    again = await rig.load_plan(2, plan_id=21, start_s=300.0, stop_s=400.0)
    assert not again["accepted"] and "already loaded" in again["reason"]
    late = await rig.load_plan(3, plan_id=22, start_s=0.0, stop_s=100.0)  # starts now
    assert not late["accepted"] and "already started" in late["reason"]
    assert not PlanRegistry(rig.daemon.links[STATION].keystore).seen(22)
