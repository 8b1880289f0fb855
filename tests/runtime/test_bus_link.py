"""LinkedBus: messages on the link's topics arrive when the link model says, in order."""

from __future__ import annotations

import asyncio

import pytest

from satqkd_runtime.bus_link import LinkedBus


class _RecordingBus:
    """Stands in for a MessageBus: records when each publish happened."""

    def __init__(self, fail_topic: str | None = None) -> None:
        self.published: list[tuple[float, str, bytes]] = []
        self.fail_topic = fail_topic
        self.url = "mqtt://127.0.0.1:1"

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if topic == self.fail_topic:
            raise ConnectionError("broker gone")
        self.published.append((asyncio.get_running_loop().time(), topic, payload))


def _qkd(topic: str) -> bool:
    return "/qkd/" in topic


async def test_link_topics_are_delivered_late_and_in_order() -> None:
    inner = _RecordingBus()
    handed: list[tuple[int, float]] = []

    def deliver_at(size: int, now: float) -> float:
        handed.append((size, now))
        return now + 0.05 + 0.01 * len(handed)  # later messages take longer, still in order

    async with LinkedBus(inner, deliver_at, _qkd) as bus:  # type: ignore[arg-type]
        started = asyncio.get_running_loop().time()
        await bus.publish("satqkd/m/qkd/s/up", b"first")
        await bus.publish("satqkd/m/qkd/s/up", b"second!")
        await bus.publish("satqkd/m/tm/hk", b"telemetry")  # not on the link: at once
        assert [p for _, _, p in inner.published] == [b"telemetry"]
        await asyncio.sleep(0.15)
    assert [p for _, _, p in inner.published] == [b"telemetry", b"first", b"second!"]
    assert [size for size, _ in handed] == [5, 7]
    first_at, second_at = inner.published[1][0], inner.published[2][0]
    assert first_at - started >= 0.06 - 1e-3
    assert second_at - started >= 0.07 - 1e-3
    assert bus.delayed_messages == 2
    assert bus.url == inner.url  # everything else is the wrapped bus's


async def test_a_failed_delivery_is_counted_and_later_ones_still_go() -> None:
    inner = _RecordingBus(fail_topic="satqkd/m/qkd/s/lost")
    async with LinkedBus(inner, lambda size, now: now, _qkd) as bus:  # type: ignore[arg-type]
        await bus.publish("satqkd/m/qkd/s/lost", b"x")
        await bus.publish("satqkd/m/qkd/s/up", b"y")
        await asyncio.sleep(0.02)
    assert bus.failed_messages == 1
    assert [p for _, _, p in inner.published] == [b"y"]


async def test_publishing_on_the_link_outside_its_context_is_refused() -> None:
    bus = LinkedBus(_RecordingBus(), lambda size, now: now, _qkd)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="outside `async with`"):
        await bus.publish("satqkd/m/qkd/s/up", b"x")
