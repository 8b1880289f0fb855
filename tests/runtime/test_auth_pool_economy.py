"""The authentication pad pool's economy: a pass starts only if the pool covers its worst case
(refused at both ends, with the figure, counted), a new key refills what the pool lacks of its
target (bounded by the key), and refilled words keep Wegman-Carter's guarantees: a replay or a
forgery after a refill is still rejected, and an end without the refill cannot authenticate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator, preshared_key_bytes
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_payload.key_lifecycle import (
    REFILL_MARGIN_MESSAGES,
    REFILL_TARGET_MESSAGES,
    auth_refill_bits,
)
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.qkd_channel import (
    DEFAULT_PASS_RESERVE_MESSAGES,
    QkdChannel,
    install_preshared_key,
)
from tests.app.test_plan_validity_both_ends import (
    STATION,
    T0,
    _payload,
    _plan,
    _station,
    _station_verdict,
)

UP, DOWN = dct.qkd_topic("m", "s", "up"), dct.qkd_topic("m", "s", "down")


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[bytes] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if "/qkd/" in topic:  # QKD messages only (not the events)
            self.published.append(payload)


def _key(messages: int, seed: int = 1) -> bytes:
    size = preshared_key_bytes(messages)
    return bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8))


def _channel(key: bytes, direction: int, bus: RecordingBus, **options: Any) -> QkdChannel:
    send, receive = (UP, DOWN) if direction == 0 else (DOWN, UP)
    return QkdChannel(
        NodeRuntime(bus, "m", ("ogs-s", "payload")[direction], SimClock(0.0)),  # type: ignore[arg-type]
        WegmanCarterAuthenticator(key, send_direction=direction),
        send,
        receive,
        **options,
    )


def _install(tmp_path: Path, messages: int) -> tuple[Path, Path]:
    key = _key(messages, seed=3)
    install_preshared_key(KeyStore(tmp_path / "payload" / STATION), key)
    install_preshared_key(KeyStore(tmp_path / "ogs"), key)
    return tmp_path / "payload", tmp_path / "ogs"


async def test_both_ends_refuse_a_pass_the_pool_cannot_cover(tmp_path: Path) -> None:
    clock = SimClock(T0)
    short = _install(tmp_path / "short", DEFAULT_PASS_RESERVE_MESSAGES - 1)
    payload, station = await _payload(short[0], clock), await _station(short[1], clock)
    fields = _plan(3, payload.settings.repetition_rate_hz)
    refused = payload._check_plan(fields)
    # the same one line at both ends, naming the pool's figure and what a pass may need
    assert refused is not None and refused == _station_verdict(station, fields)
    assert f"{DEFAULT_PASS_RESERVE_MESSAGES - 1} messages left" in refused
    assert f"may need {DEFAULT_PASS_RESERVE_MESSAGES}" in refused
    assert payload.links[STATION].channel.passes_refused == 1
    assert station.channel.passes_refused == 1
    # exactly the reserve: the pass may start at both ends
    enough = _install(tmp_path / "enough", DEFAULT_PASS_RESERVE_MESSAGES)
    payload, station = await _payload(enough[0], clock), await _station(enough[1], clock)
    assert payload._check_plan(fields) is None and _station_verdict(station, fields) is None


async def test_the_peers_messages_count_against_the_pool() -> None:
    """The pool left is the busier direction's: a station that sent more than the payload
    has used more of the pool, and the payload refuses by the station's figure."""
    bus = RecordingBus()
    key = _key(12)
    ground = _channel(key, 0, bus, pass_reserve_messages=6)
    space = _channel(key, 1, bus, pass_reserve_messages=6)
    for _ in range(7):
        await ground.send("ABORT", plan_id=1, reason="r")
        assert await space.accept(bus.published[-1]) is not None
    assert space.next_send_seq == 0 and space.pad_words_remaining == 12
    assert space.pool_messages_left == ground.pool_messages_left == 5
    assert "5 messages left, a pass may need 6" in (space.pass_refusal() or "")
    assert ground.pass_refusal() is not None and ground.passes_refused == 1


@dataclasses.dataclass
class _Pool:
    pool_messages_left: int


@pytest.mark.parametrize(
    ("left", "output_bits", "expected_messages"),
    [
        (REFILL_TARGET_MESSAGES + REFILL_MARGIN_MESSAGES, 10**6, 0),  # full: the key is all key
        (REFILL_TARGET_MESSAGES - 700, 10**6, 700 + REFILL_MARGIN_MESSAGES),  # what was spent
        (REFILL_TARGET_MESSAGES - 700, 28_317, 221),  # a key shorter than its pass's words
        (REFILL_TARGET_MESSAGES - 700, 128 * 50, 49),  # a whole number of messages: one left
        (REFILL_TARGET_MESSAGES - 700, 100, 0),  # less than one message
        (0, 0, 0),
    ],
)
def test_a_key_refills_what_the_pool_lacks_bounded_by_the_key(
    left: int, output_bits: int, expected_messages: int
) -> None:
    refill = auth_refill_bits(_Pool(left), output_bits)  # type: ignore[arg-type]
    assert refill == 128 * expected_messages
    assert refill == 0 or refill < output_bits  # the key stored keeps at least one bit


async def test_after_a_refill_replays_and_forgeries_are_still_rejected() -> None:
    bus = RecordingBus()
    key = _key(4)
    ground, space = _channel(key, 0, bus), _channel(key, 1, bus)
    for _ in range(4):  # the whole pre-shared pool
        await ground.send("ABORT", plan_id=1, reason="before")
        assert await space.accept(bus.published[-1]) is not None
    old = bus.published[-1]
    refill = bytes(np.random.default_rng(5).integers(0, 256, 16 * 4, np.uint8))
    for channel in (ground, space):
        assert channel.extend_pool("key-1", refill)
    assert ground.pool_messages_left == space.pool_messages_left == 4
    await ground.send("ABORT", plan_id=1, reason="after")
    new = bus.published[-1]
    counters = space.runtime.counters
    # a replay of a message tagged before the refill: dropped, never processed twice
    assert await space.accept(old) is None and counters.qkd_duplicates == 1
    # the new message with its fields changed under the same seq and tag: a failed forgery
    seq, tag = decode_envelope(new).seq, decode_envelope(new).tag
    forged = encode_envelope(
        dct.DICTIONARY["ABORT"], seq, {"plan_id": 1, "reason": "evil"}, tag=tag
    )
    assert await space.accept(forged) is None and space.auth_failures == 1
    # an adversary who knows the pre-shared key but not the refill (it came from QKD key)
    outsider_bus = RecordingBus()
    outsider = _channel(key, 0, outsider_bus)
    outsider.extend_pool("key-1", bytes(len(refill)))
    while outsider.next_send_seq < seq:  # its own copies of the earlier messages
        await outsider.send("ABORT", plan_id=1, reason="before")
    await outsider.send("ABORT", plan_id=1, reason="evil")  # the refilled word of seq
    assert await space.accept(outsider_bus.published[-1]) is None and space.auth_failures == 2
    # the genuine message still goes through, once
    assert await space.accept(new) is not None
    assert await space.accept(new) is None and counters.qkd_duplicates == 2
