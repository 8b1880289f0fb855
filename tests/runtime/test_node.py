"""The QKD channel accepts each authentic message once, rejects forgeries, and keeps its
sequence state across a restart so no pad word is reused and no replay is accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator, preshared_key_bytes
from satqkd_core.codec import decode_envelope
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.qkd_channel import QkdChannel


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.published.append((topic, payload))


def _pair(tmp_path: Path, preshared: bytes) -> tuple[QkdChannel, QkdChannel, RecordingBus]:
    bus = RecordingBus()
    clock = SimClock(0.0)
    up, down = dct.qkd_topic("m", "s", "up"), dct.qkd_topic("m", "s", "down")
    ogs = QkdChannel(
        NodeRuntime(bus, "m", "ogs-s", clock),
        WegmanCarterAuthenticator(preshared, send_direction=0),
        up,
        down,
        state_store=KeyStore(tmp_path / "ogs"),
    )
    payload = QkdChannel(
        NodeRuntime(bus, "m", "payload", clock),
        WegmanCarterAuthenticator(preshared, send_direction=1),
        down,
        up,
        state_store=KeyStore(tmp_path / "payload"),
    )
    return ogs, payload, bus


def _last_qkd(bus: RecordingBus) -> bytes:
    return next(p for t, p in reversed(bus.published) if "/qkd/" in t)


async def test_accept_once_reject_forgery_and_survive_restart(tmp_path: Path) -> None:
    n_bytes = preshared_key_bytes(1024)
    preshared = bytes(np.random.default_rng(3).integers(0, 256, n_bytes, np.uint8))
    ogs, payload, bus = _pair(tmp_path, preshared)
    await ogs.send("ABORT", plan_id=1, reason="first")
    first = _last_qkd(bus)
    envelope = await payload.accept(first)
    assert envelope is not None and envelope.fields["reason"] == "first"
    assert await payload.accept(first) is None  # re-delivery
    assert payload.runtime.counters.qkd_duplicates == 1
    forged = bytearray(first)
    forged[-3] ^= 0x01  # flip a tag bit
    assert await payload.accept(bytes(forged)) is None
    assert payload.runtime.counters.qkd_rejected == 1
    events = [decode_envelope(p).fields for t, p in bus.published if t.endswith("/evt")]
    assert any(dct.event_by_id(e["event_id"]).name == "AUTH_FAILURE" for e in events)

    # restart both ends from their key stores: no pad word reuse, no replay accepted
    ogs2, payload2, bus2 = _pair(tmp_path, preshared)
    # resumes after the block of sequence numbers reserved before the first send
    assert ogs2.next_send_seq == QkdChannel.SEQ_RESERVATION
    assert await payload2.accept(first) is None
    assert payload2.runtime.counters.qkd_duplicates == 1
    await ogs2.send("ABORT", plan_id=1, reason="second")
    second = _last_qkd(bus2)
    assert decode_envelope(second).seq == QkdChannel.SEQ_RESERVATION
    accepted = await payload2.accept(second)
    assert accepted is not None and accepted.fields["reason"] == "second"
    assert ogs2.pad_words_remaining == ogs.pad_words_remaining - QkdChannel.SEQ_RESERVATION
