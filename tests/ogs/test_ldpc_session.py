"""LDPC reconciliation between the two sessions of a pass: the payload daemon (LdpcSender) and
the station's session (LdpcReceiver) over authenticated QKD channels on an in-memory bus.

Each test sifts a synthetic block of detections through the real messages (DETECTION_REPORT,
SIFT_RESULT), then runs the station's post-processing to its end: parameter estimation, LDPC,
verification, privacy amplification, key storage at both ends.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from drivers.interfaces import PulsePatternRecord
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.wiring import preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator
from satqkd_core.codec import decode_envelope
from satqkd_core.detection_report import encode_detection_report
from satqkd_core.ephemeris import Station
from satqkd_core.ldpc import code_by_id
from satqkd_core.pass_decisions import ProtocolParameters
from satqkd_ogs.session import ChunkRecord, OgsSession, PassPlan
from satqkd_payload.daemon import PayloadDaemon, PayloadSettings
from satqkd_payload.key_lifecycle import auth_refill_bits
from satqkd_payload.session import PayloadSession
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.qkd_channel import QkdChannel, install_preshared_key
from sim_backends.orbit import circular_orbit_tle
from tests.protocol_params import jinan1_params
from tests.seeded_entropy import seeded_entropy

MISSION, STATION, PLAN_ID = "jinan1-ldpc", "xinglong", 42
EPOCH_UNIX_S = 1_796_083_200.0  # 2026-12-01
UP = dct.qkd_topic(MISSION, STATION, "up")
DOWN = dct.qkd_topic(MISSION, STATION, "down")


@dataclass
class _BusMessage:
    topic: str
    payload: bytes


class LoopbackBus:
    """One in-memory broker for both ends: every publish is recorded and delivered in order to
    the subscribers of its topic; `tamper` may replace what is delivered."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.subscribers: dict[str, list[asyncio.Queue[_BusMessage]]] = {}
        self.tamper: Callable[[str, bytes], list[bytes]] | None = None

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.published.append((topic, payload))
        deliveries = [payload] if self.tamper is None else self.tamper(topic, payload)
        for queue in self.subscribers.get(topic, []):
            for data in deliveries:
                queue.put_nowait(_BusMessage(topic, data))

    def queue(self, topic: str) -> asyncio.Queue[_BusMessage]:
        queue: asyncio.Queue[_BusMessage] = asyncio.Queue()
        self.subscribers.setdefault(topic, []).append(queue)
        return queue

    def names(self, topic: str) -> list[str]:
        return [decode_envelope(p).spec.name for t, p in self.published if t == topic]

    def events(self, node: str) -> list[str]:
        topic = dct.event_topic(MISSION, node)
        return [
            dct.event_by_id(decode_envelope(p).fields["event_id"]).name
            for t, p in self.published
            if t == topic
        ]


class PayloadBus:
    """The payload daemon's view of the loopback bus: an always-connected MessageBus."""

    url = "loopback://"

    def __init__(self, bus: LoopbackBus) -> None:
        self.bus = bus
        self.inbox: asyncio.Queue[_BusMessage] = asyncio.Queue()

    async def wait_connected(self) -> None:
        return None

    async def wait_disconnected(self) -> None:
        await asyncio.Event().wait()  # the loopback never drops

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        await self.bus.publish(topic, payload, qos)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.bus.subscribers.setdefault(topic_filter, []).append(self.inbox)

    async def messages(self) -> AsyncIterator[_BusMessage]:
        while True:
            yield await self.inbox.get()


class ScriptedSource:
    """The payload's source record for the synthetic block (what on-board sifting reads)."""

    def __init__(self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> None:
        self.basis, self.bit, self.intensity = basis, bit, intensity

    async def read_pattern(self, pulse_index: np.ndarray) -> PulsePatternRecord:
        return PulsePatternRecord(
            self.basis[pulse_index], self.bit[pulse_index], self.intensity[pulse_index]
        )

    def pattern(self, pulse_index: np.ndarray) -> PulsePatternRecord:
        return PulsePatternRecord(
            self.basis[pulse_index], self.bit[pulse_index], self.intensity[pulse_index]
        )

    async def disable(self) -> None:
        return None


@dataclass
class Block:
    """Synthetic detections: the payload's pattern and what the station saw."""

    source: ScriptedSource
    pulse_index: np.ndarray
    ogs_basis: np.ndarray
    ogs_bit: np.ndarray


def make_block(detections: int, qber_x: float, qber_z: float, seed: int) -> Block:
    """Detections of one pass: intensities in the proportions a Jinan-1-like pass detects them,
    errors at the given rates in each basis (decoy a little noisier, vacuum random)."""
    rng = np.random.default_rng(seed)
    pulses = 3 * detections
    basis = rng.integers(0, 2, pulses).astype(np.uint8)
    bit = rng.integers(0, 2, pulses).astype(np.uint8)
    intensity = rng.choice(3, pulses, p=[0.94, 0.0598, 0.0002]).astype(np.uint8)
    index = np.sort(rng.choice(pulses, detections, replace=False)).astype(np.int64)
    ogs_basis = rng.integers(0, 2, detections).astype(np.uint8)
    error_rate = (
        np.where(basis[index] == 0, qber_x, qber_z) * np.array([1.0, 1.4, 0.0])[intensity[index]]
    )
    error_rate[intensity[index] == 2] = 0.5
    flips = (rng.random(detections) < error_rate).astype(np.uint8)
    ogs_bit = np.where(
        ogs_basis == basis[index], bit[index] ^ flips, rng.integers(0, 2, detections)
    )
    return Block(ScriptedSource(basis, bit, intensity), index, ogs_basis, ogs_bit.astype(np.uint8))


@dataclass
class Pass:
    bus: LoopbackBus
    payload: PayloadDaemon
    payload_session: PayloadSession
    ogs: OgsSession
    ogs_runtime: NodeRuntime
    ogs_store: KeyStore
    payload_store: KeyStore
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def run(self, block: Block) -> None:
        """Sift the block, then post-process to the end at both ends."""
        await self.sift(block)
        await self.ogs.post_process()
        async with asyncio.timeout(10.0):
            while not self.payload_session.finished:
                await asyncio.sleep(0.01)

    async def sift(self, block: Block, chunks: int = 2) -> None:
        """Report the block's detections frame by frame and take the payload's sifting."""
        bounds = np.linspace(0, block.pulse_index.size, chunks + 1).astype(int)
        for chunk, (a, b) in enumerate(itertools.pairwise(bounds)):
            record = ChunkRecord(
                chunk=chunk,
                start_unix_s=EPOCH_UNIX_S + chunk,
                stop_unix_s=EPOCH_UNIX_S + chunk + 1,
                elevation_deg=45.0,
                tags=int(b - a),
                detections=int(b - a),
                pulse_index=block.pulse_index[a:b],
                basis=block.ogs_basis[a:b],
                bit=block.ogs_bit[a:b],
            )
            self.ogs.result.chunks.append(record)
            self.ogs.result.detections += record.detections
            await self.ogs.channel.send(
                "DETECTION_REPORT",
                plan_id=PLAN_ID,
                chunk=chunk,
                frame_start_unix_s=record.start_unix_s,
                frame_stop_unix_s=record.stop_unix_s,
                n_detections=record.detections,
                report=encode_detection_report(record.pulse_index, record.basis),
            )
        async with asyncio.timeout(30.0):
            while any(c.x_bits is None for c in self.ogs.result.chunks):
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def start_pass(
    tmp_path: Path, block: Block, params: ProtocolParameters | None = None, timeout_s: float = 20.0
) -> Pass:
    """Both ends of an LDPC pass on a loopback bus, their keys under tmp_path, running."""
    params = params or jinan1_params()
    bus, clock = LoopbackBus(), SimClock(EPOCH_UNIX_S)
    preshared = preshared_auth_key(5, 4096)
    payload_store = KeyStore(tmp_path / "payload" / STATION)
    install_preshared_key(payload_store, preshared)
    ogs_store = KeyStore(tmp_path / "ogs")
    install_preshared_key(ogs_store, preshared)
    payload = PayloadDaemon(
        PayloadSettings(MISSION, params, 1e8),
        PayloadBus(bus),  # type: ignore[arg-type]
        clock,
        block.source,  # type: ignore[arg-type]
        tmp_path / "payload",
        await seeded_entropy(11),
        SourceSequencer(None, (0.5, 0.25, 0.25), 0.5),
    )
    session = PayloadSession(
        PLAN_ID,
        STATION,
        block.source.pattern,
        payload.links[STATION].channel,
        payload.links[STATION].keystore,
        params,
        await seeded_entropy(11),
        auth_refill=functools.partial(auth_refill_bits, payload.links[STATION].channel),
    )
    payload.links[STATION].sessions[PLAN_ID] = session
    runtime = NodeRuntime(bus, MISSION, f"ogs-{STATION}", clock)  # type: ignore[arg-type]
    channel = QkdChannel(
        runtime, WegmanCarterAuthenticator(preshared, send_direction=0), UP, DOWN, ogs_store
    )
    tle = circular_orbit_tle(500.0, 97.4, 30.0, EPOCH_UNIX_S - 3600.0)
    plan = PassPlan(
        PLAN_ID,
        MISSION,
        STATION,
        *tle,
        EPOCH_UNIX_S - 10.0,
        EPOCH_UNIX_S + 600.0,
        EPOCH_UNIX_S,
        EPOCH_UNIX_S + 300.0,
        1e8,
    )
    ogs = OgsSession(
        plan,
        Station(40.3958, 117.5775, 900.0),
        channel,
        ogs_store,
        params,
        await seeded_entropy(12),
        1000.0,
        16,
        timeout_s,
    )
    running = Pass(bus, payload, session, ogs, runtime, ogs_store, payload_store)
    down = bus.queue(DOWN)

    async def station_intake() -> None:
        # what the station daemon does with a QKD message: sift results now, rest queued
        while True:
            message = await down.get()
            envelope = await channel.accept(message.payload)
            if envelope is None:
                continue
            if envelope.spec.name == "SIFT_RESULT":
                ogs.on_sift_result(envelope.fields)
            else:
                ogs.inbox.put_nowait(envelope)

    running.tasks = [
        asyncio.create_task(payload.run()),
        asyncio.create_task(station_intake()),
    ]
    await asyncio.sleep(0)  # the payload subscribes
    return running


@pytest.fixture
async def ldpc_pass(tmp_path: Path) -> AsyncIterator[Callable[..., Pass]]:
    opened: list[Pass] = []

    async def start(
        block: Block, params: ProtocolParameters | None = None, timeout_s: float = 20.0
    ) -> Pass:
        running = await start_pass(tmp_path, block, params, timeout_s)
        opened.append(running)
        return running

    yield start
    for running in opened:
        await running.close()


def _assert_same_key_at_both_ends(p: Pass) -> None:
    result = p.ogs.result
    assert result.abort_reason is None, result.abort_reason
    assert p.payload_session.outcome.abort_reason is None
    assert p.payload_session.outcome.confirmed
    assert result.pa_output_bits > result.key_bits > 0
    assert p.ogs_store.total_bits() == p.payload_store.total_bits() == result.key_bits
    assert p.ogs_store.digest() == p.payload_store.digest()


def test_a_good_exchange_gives_both_ends_the_same_key(good_ldpc_exchange: Pass) -> None:
    # 1.1 M detections at Q 1.1 %, block seed 1: the session's exchange (tests/conftest.py)
    p = good_ldpc_exchange
    _assert_same_key_at_both_ends(p)
    result = p.ogs.result
    assert result.ec_method == "ldpc" and result.ec_frames >= 4 and result.ec_frames_failed == 0
    # the whole block in frames but for a tail shorter than the number of frames
    n_x = sum(result.x_detections)
    assert 0 <= n_x - result.pa_input_bits < result.ec_frames
    # few round trips: start, a handful of blind rounds, final; no Cascade message at all
    assert 2 <= result.ec_rounds <= 20
    up, down = p.bus.names(UP), p.bus.names(DOWN)
    assert "EC_QUERY" not in up and "EC_REPLY" not in down
    assert up.count("LDPC_START") == 1 and up.count("LDPC_FINAL") == 1
    assert down.count("LDPC_FINAL_ACK") == 1 and "LDPC_SYNDROMES" in down
    assert up.count("LDPC_REVEAL_REQUEST") == down.count("LDPC_REVEAL_REPLY")
    assert result.ec_rounds == 2 + up.count("LDPC_REVEAL_REQUEST")
    # leakage counted exactly: each frame's syndrome less its punctured symbols, plus every
    # revealed value; the payload agreed to the same count (EC_DONE), the key was charged it
    down_fields = [decode_envelope(d).fields for t, d in p.bus.published if t == DOWN]
    first = next(f for f in down_fields if "syndromes" in f)
    code = code_by_id(first["code_id"])
    revealed = sum(f["revealed_bits"] for f in down_fields if "revealed_bits" in f)
    frames, frame_bits = first["frames"], result.ec_input_bits // result.ec_frames
    disclosed = frames * (code.m - first["punctured"]) + revealed
    # charged besides: each dropped frame's bits, each frame's public outcome (decoded after
    # 0..R reveal rounds or given up: ceil(log2(R + 2)) bits)
    rounds = -(-first["punctured"] // first["reveal_step"])
    outcome = math.ceil(math.log2(rounds + 2))
    dropped = result.ec_frames_failed * frame_bits
    assert result.leak_ec_bits == disclosed + dropped + frames * outcome
    assert result.finite_key is not None
    # efficiency of this exchange: LDPC at Q ~1 % (decision 0004: f ~1.16)
    h = -(0.011 * np.log2(0.011) + 0.989 * np.log2(0.989))
    assert 1.0 < result.leak_ec_bits / (result.ec_input_bits * h) < 1.35
    assert p.ogs_runtime.counters.qkd_rejected == 0
    assert p.payload.runtime.counters.qkd_rejected == 0


async def test_failed_frames_are_dropped_at_both_ends(ldpc_pass) -> None:
    # the key basis is much noisier than the test basis says: some frames cannot decode
    # (0.0129 with r91d_n64k's window, decisions 0041, 0047: some of its 8 frames fail, not all)
    block = make_block(1_600_000, qber_x=0.0129, qber_z=0.0105, seed=5)
    p = await ldpc_pass(block)
    await p.run(block)
    result = p.ogs.result
    assert 0 < result.ec_frames_failed < result.ec_frames, (result.ec_frames_failed,)
    kept_frames = result.ec_frames - result.ec_frames_failed
    frame_bits = result.ec_input_bits // result.ec_frames
    # both ends went on with exactly the decoded frames' bits: verification passed on them
    assert result.pa_input_bits == result.ec_kept_bits == kept_frames * frame_bits
    assert result.verification_tag_bits > 0
    assert "verification failed" not in str(result.abort_reason)
    # the finite-key bound is taken on every frame's X detections (no post-selection); the
    # dropped frames' bits are charged as disclosed
    assert sum(result.x_detections) > result.pa_input_bits
    assert result.leak_ec_bits > result.ec_frames_failed * frame_bits
    _assert_same_key_at_both_ends(p)


async def test_malformed_and_forged_ldpc_messages_are_rejected_and_counted(ldpc_pass) -> None:
    block = make_block(900_000, qber_x=0.011, qber_z=0.011, seed=2)
    p = await ldpc_pass(block)
    injected: dict[str, int] = {}

    def tamper(topic: str, data: bytes) -> list[bytes]:
        name = decode_envelope(data).spec.name
        if topic == DOWN and name == "LDPC_SYNDROMES" and "forged" not in injected:
            injected["forged"] = 1
            forged = bytearray(data)
            forged[-2] ^= 0x10  # a bit of the tag: an eavesdropper's altered copy
            return [bytes(forged), data]
        return [data]

    p.bus.tamper = tamper

    async def misbehave() -> None:
        # authentic but wrong messages from both ends, once the exchange has started
        while "LDPC_SYNDROMES" not in p.bus.names(DOWN):
            await asyncio.sleep(0.001)
        payload_channel = p.payload.links[STATION].channel
        # station side: an acknowledgement before any final request, a reply to no request
        await payload_channel.send("LDPC_FINAL_ACK", plan_id=PLAN_ID, round=1)
        await payload_channel.send(
            "LDPC_REVEAL_REPLY", plan_id=PLAN_ID, round=1, revealed_bits=3, values=b"\x00"
        )
        # payload side: a reveal request for a frame that does not exist, a second start
        await p.ogs.channel.send(
            "LDPC_REVEAL_REQUEST",
            plan_id=PLAN_ID,
            round=1,
            frames=np.array([10_000], np.uint32),
            counts=np.array([1], np.uint32),
        )
        await p.ogs.channel.send("LDPC_START", plan_id=PLAN_ID, seed=1, qber_estimate=0.01)
        injected["misbehaved"] = 1

    helper = asyncio.create_task(misbehave())
    await p.run(block)
    await helper
    # the pass still ends with the same key at both ends
    _assert_same_key_at_both_ends(p)
    assert injected == {"forged": 1, "misbehaved": 1}
    station = p.ogs_runtime.counters
    assert station.qkd_rejected == 3  # the forgery and the two out-of-place messages
    assert station.events["AUTH_FAILURE"] == 1
    assert station.events["QKD_MESSAGE_REJECTED"] == 2
    assert p.payload.runtime.counters.qkd_rejected == 2
    assert p.bus.events("payload").count("QKD_MESSAGE_REJECTED") == 2


async def test_a_cascade_mission_refuses_ldpc_and_an_ldpc_mission_refuses_cascade(
    ldpc_pass,
) -> None:
    block = make_block(900_000, qber_x=0.011, qber_z=0.011, seed=3)
    p = await ldpc_pass(block, params=jinan1_params("cascade"))
    # the station runs Cascade: an LDPC_START sneaked in first is refused and counted
    await p.ogs.channel.send("LDPC_START", plan_id=PLAN_ID, seed=1, qber_estimate=0.01)
    await p.run(block)
    _assert_same_key_at_both_ends(p)
    assert p.ogs.result.ec_method == "cascade" and p.ogs.result.ec_frames == 0
    assert p.payload.runtime.counters.qkd_rejected == 1


async def test_a_silent_payload_times_out_with_a_reason(ldpc_pass) -> None:
    block = make_block(900_000, qber_x=0.011, qber_z=0.011, seed=5)
    p = await ldpc_pass(block, timeout_s=0.5)

    def drop_syndromes(topic: str, data: bytes) -> list[bytes]:
        return [] if decode_envelope(data).spec.name == "LDPC_SYNDROMES" else [data]

    p.bus.tamper = drop_syndromes
    await p.sift(block)
    await p.ogs.post_process()
    result = p.ogs.result
    assert result.finished and result.key_id is None
    assert result.abort_reason == "payload did not answer the LDPC exchange within 0.5 s"
    assert p.ogs_store.total_bits() == 0
