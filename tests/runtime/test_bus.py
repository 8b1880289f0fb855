"""MessageBus through real brokers: pub/sub, large payloads, ordering, restarts, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from satqkd_runtime.bus import BusMessage, MessageBus, parse_mqtt_url

MosquittoBroker = Any  # tests/conftest.py's MosquittoBroker (conftest is not importable)


class Collector:
    """Drains a bus's messages() into a list in the background, so tests can poll it."""

    def __init__(self, bus: MessageBus) -> None:
        self.messages: list[BusMessage] = []
        self._task = asyncio.create_task(self._drain(bus))

    async def _drain(self, bus: MessageBus) -> None:
        async for message in bus.messages():
            self.messages.append(message)

    async def wait_for_count(self, count: int, timeout_s: float = 10.0) -> list[BusMessage]:
        async with asyncio.timeout(timeout_s):
            while len(self.messages) < count:
                await asyncio.sleep(0.005)
        return self.messages

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def collecting(bus: MessageBus) -> AsyncIterator[Collector]:
    collector = Collector(bus)
    try:
        yield collector
    finally:
        await collector.stop()


def fast_bus(url: str, client_id: str, **kwargs: object) -> MessageBus:
    options: dict[str, object] = {
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "connect_timeout_s": 5.0,
    }
    options.update(kwargs)
    return MessageBus(url, client_id, **options)  # type: ignore[arg-type]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


# ---- construction and validation ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1883",
        "mqtt://",
        "mqtt://host:notaport",
        "mqtt://host:70000",
        "mqtt://host:0",
        "mqtt://host:1883/path",
        "127.0.0.1:1883",
        "",
    ],
)
def test_bad_url_is_rejected_naming_it(url: str) -> None:
    with pytest.raises(ValueError, match="url") as info:
        MessageBus(url, "client")
    assert repr(url) in str(info.value) or url in str(info.value)


def test_url_parsing() -> None:
    assert parse_mqtt_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884)
    assert parse_mqtt_url("mqtt://broker.local") == ("broker.local", 1883)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"reconnect_min_s": 0.0}, "reconnect_min_s"),
        ({"reconnect_min_s": 2.0, "reconnect_max_s": 1.0}, "reconnect_max_s"),
        ({"connect_timeout_s": -1.0}, "connect_timeout_s"),
        ({"publish_timeout_s": float("inf")}, "publish_timeout_s"),
    ],
)
def test_bad_timing_arguments_are_rejected(kwargs: dict[str, float], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        MessageBus("mqtt://127.0.0.1:1883", "client", **kwargs)  # type: ignore[arg-type]


def test_empty_client_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="client_id"):
        MessageBus("mqtt://127.0.0.1:1883", "")


async def test_connection_failure_names_the_url() -> None:
    url = f"mqtt://127.0.0.1:{free_tcp_port()}"
    bus = MessageBus(url, "nobody-home", connect_timeout_s=0.5, reconnect_min_s=0.05)
    with pytest.raises(ConnectionError, match=url.replace(".", r"\.")):
        async with bus:
            pass
    assert not bus.connected


async def test_bad_publish_and_subscribe_arguments(embedded_broker_url: str) -> None:
    async with fast_bus(embedded_broker_url, "validator") as bus:
        with pytest.raises(ValueError, match="topic"):
            await bus.publish("a/+/b", b"x")
        with pytest.raises(ValueError, match="topic"):
            await bus.publish("", b"x")
        with pytest.raises(ValueError, match="qos"):
            await bus.publish("a/b", b"x", qos=3)
        with pytest.raises(ValueError, match="payload"):
            await bus.publish("a/b", "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="topic_filter"):
            await bus.subscribe("a/#/b")
        with pytest.raises(ValueError, match="topic_filter"):
            await bus.subscribe("a/b+")
        assert bus.stats.published_messages == 0


# ---- through both brokers -----------------------------------------------------------------


async def test_publish_subscribe_round_trip(broker_url: str) -> None:
    url = broker_url
    async with fast_bus(url, "rt-sub") as subscriber, fast_bus(url, "rt-pub") as publisher:
        assert subscriber.connected and publisher.connected
        await subscriber.subscribe("satqkd/test/+/tm/#")
        async with collecting(subscriber) as collector:
            await publisher.publish("satqkd/test/payload/tm/housekeeping", b"\x00\x01hk", qos=1)
            await publisher.publish("satqkd/test/ogs-a/tm/tc_ack", b"", qos=0)
            await publisher.publish("satqkd/test/payload/tc", b"not subscribed")
            received = await collector.wait_for_count(2)
            await asyncio.sleep(0.05)
        assert received == [
            BusMessage("satqkd/test/payload/tm/housekeeping", b"\x00\x01hk"),
            BusMessage("satqkd/test/ogs-a/tm/tc_ack", b""),
        ]
        assert publisher.stats.published_messages == 3
        assert publisher.stats.published_bytes == 4 + 0 + 14
        assert subscriber.stats.received_messages == 2
        assert subscriber.stats.received_bytes == 4
        assert subscriber.stats.reconnects == publisher.stats.reconnects == 0


async def test_large_qos1_payloads(broker_url: str) -> None:
    url = broker_url
    payloads = [bytes([index]) * (200_000 + index) for index in range(4)]
    async with fast_bus(url, "big-sub") as subscriber, fast_bus(url, "big-pub") as publisher:
        await subscriber.subscribe("satqkd/test/qkd/xinglong/down", qos=1)
        async with collecting(subscriber) as collector:
            for payload in payloads:
                await publisher.publish("satqkd/test/qkd/xinglong/down", payload, qos=1)
            received = await collector.wait_for_count(len(payloads))
    assert [message.payload for message in received] == payloads
    assert subscriber.stats.received_bytes == sum(map(len, payloads))


async def test_concurrent_publishes_keep_per_topic_order(broker_url: str) -> None:
    url = broker_url
    count = 200
    async with fast_bus(url, "order-sub") as subscriber, fast_bus(url, "order-pub") as publisher:
        await subscriber.subscribe("order/#")
        async with collecting(subscriber) as collector:
            await asyncio.gather(
                *(
                    publisher.publish(f"order/{index % 2}", index.to_bytes(4, "big"))
                    for index in range(count)
                )
            )
            received = await collector.wait_for_count(count)
    for topic_index in (0, 1):
        sequence = [
            int.from_bytes(message.payload, "big")
            for message in received
            if message.topic == f"order/{topic_index}"
        ]
        assert sequence == list(range(topic_index, count, 2))


async def test_messages_iterator_ends_when_bus_closes(broker_url: str) -> None:
    url = broker_url
    bus = fast_bus(url, "closer")
    received: list[BusMessage] = []

    async def consume() -> None:
        async for message in bus.messages():
            received.append(message)

    async with bus:
        await bus.subscribe("closer/t")
        consumer = asyncio.create_task(consume())
        await bus.publish("closer/t", b"one")
        await wait_until(lambda: len(received) == 1)
    await asyncio.wait_for(consumer, 5.0)
    assert received == [BusMessage("closer/t", b"one")]
    assert not bus.connected


# ---- broker restarts (mosquitto, which a test can stop and start on the same port) ---------


@pytest.mark.mosquitto
async def test_resubscribes_after_mosquitto_restart(mosquitto: MosquittoBroker) -> None:
    async with (
        fast_bus(mosquitto.url, "restart-sub", persistent_session=False) as subscriber,
        fast_bus(mosquitto.url, "restart-pub", persistent_session=False) as publisher,
    ):
        await subscriber.subscribe("restart/t")
        async with collecting(subscriber) as collector:
            await publisher.publish("restart/t", b"before")
            await collector.wait_for_count(1)

            mosquitto.stop()  # no persistence: the broker forgets every subscription
            await wait_until(lambda: not subscriber.connected and not publisher.connected)
            mosquitto.start()
            # The publisher may come back before the subscriber has resubscribed; probe until
            # one message gets through, which only the restored subscription allows.
            probe = 0
            async with asyncio.timeout(15.0):
                while len(collector.messages) < 2:
                    await publisher.publish("restart/t", f"probe {probe}".encode())
                    probe += 1
                    await asyncio.sleep(0.05)
            await publisher.publish("restart/t", b"after")
            received = await collector.wait_for_count(3)
    assert received[0].payload == b"before"
    assert received[1].payload.startswith(b"probe")
    assert received[-1].payload == b"after"
    assert subscriber.stats.reconnects >= 1
    assert publisher.stats.reconnects >= 1


@pytest.mark.mosquitto
async def test_publish_while_disconnected_waits_then_is_sent(mosquitto: MosquittoBroker) -> None:
    # One bus publishes to its own subscription: after a reconnect the bus restores its
    # subscriptions before releasing waiting publishes, so the message must come back.
    async with fast_bus(mosquitto.url, "self-loop", persistent_session=False) as bus:
        await bus.subscribe("loop/t")
        async with collecting(bus) as collector:
            mosquitto.stop()
            await wait_until(lambda: not bus.connected)
            pending = asyncio.create_task(bus.publish("loop/t", b"sent while down"))
            await asyncio.sleep(0.3)
            assert not pending.done()
            assert bus.stats.published_messages == 0
            mosquitto.start()
            await asyncio.wait_for(pending, 15.0)
            received = await collector.wait_for_count(1)
    assert received == [BusMessage("loop/t", b"sent while down")]
    assert bus.stats.published_messages == 1
    assert bus.stats.reconnects == 1


@pytest.mark.mosquitto
async def test_publish_gives_up_after_publish_timeout(mosquitto: MosquittoBroker) -> None:
    async with fast_bus(mosquitto.url, "give-up", publish_timeout_s=0.5) as bus:
        mosquitto.stop()
        await wait_until(lambda: not bus.connected)
        with pytest.raises(ConnectionError, match=mosquitto.url.replace(".", r"\.")):
            await bus.publish("gone/t", b"x")
        assert bus.stats.published_messages == 0


@pytest.mark.mosquitto
async def test_persistent_session_keeps_messages_across_restart(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    broker = mosquitto_factory(persistence=True)
    async with fast_bus(
        broker.url, "durable-sub", reconnect_min_s=0.5, reconnect_max_s=1.0
    ) as subscriber:
        await subscriber.subscribe("durable/t", qos=1)
        async with collecting(subscriber) as collector:
            broker.restart()  # the broker saves and restores the subscriber's session
            # Published before the subscriber can have reconnected (its backoff is 0.5 s):
            # only the broker's stored session can route this message to it.
            async with fast_bus(broker.url, "durable-pub") as publisher:
                await publisher.publish("durable/t", b"queued", qos=1)
            received = await collector.wait_for_count(1)
    assert received[0] == BusMessage("durable/t", b"queued")
    assert subscriber.stats.reconnects >= 1


@pytest.mark.mosquitto
async def test_stale_session_is_discarded_on_entry(mosquitto: MosquittoBroker) -> None:
    crashed = fast_bus(mosquitto.url, "reused-id")
    await crashed.__aenter__()
    await crashed.subscribe("stale/t", qos=1)
    # Drop the connection without the clean exit, as a crashed daemon would: the broker keeps
    # its persistent session and queues the next message for it.
    await crashed._stop_supervisor()
    async with fast_bus(mosquitto.url, "stale-pub") as publisher:
        await publisher.publish("stale/t", b"stale", qos=1)
    async with fast_bus(mosquitto.url, "reused-id") as restarted:
        await restarted.subscribe("fresh/t")
        async with collecting(restarted) as collector:
            await restarted.publish("fresh/t", b"fresh")
            received = await collector.wait_for_count(1)
            await asyncio.sleep(0.1)
    assert received == [BusMessage("fresh/t", b"fresh")]


async def test_bus_can_be_reopened_after_closing(embedded_broker_url: str) -> None:
    bus = fast_bus(embedded_broker_url, "reopen")
    for round_number in range(2):
        async with bus:
            await bus.subscribe("reopen/t")
            await bus.publish("reopen/t", bytes([round_number]))
            messages = bus.messages()
            received = await asyncio.wait_for(anext(messages), 5.0)
            await messages.aclose()
            assert received == BusMessage("reopen/t", bytes([round_number]))
        assert not bus.connected
        with pytest.raises(ConnectionError, match="not open"):
            await bus.publish("reopen/t", b"closed")
    assert bus.stats.published_messages == 2 and bus.stats.received_messages == 2


@pytest.mark.mosquitto
async def test_connection_state_follows_the_broker(mosquitto: MosquittoBroker) -> None:
    async with fast_bus(mosquitto.url, "state", persistent_session=False) as bus:
        assert bus.connected
        await asyncio.wait_for(bus.wait_connected(), 1.0)  # up: returns at once
        went_down = asyncio.create_task(bus.wait_disconnected())
        await asyncio.sleep(0.05)
        assert not went_down.done()
        mosquitto.stop()
        await asyncio.wait_for(went_down, 10.0)
        assert not bus.connected and bus.stats.disconnects == 1
        came_back = asyncio.create_task(bus.wait_connected())
        await asyncio.sleep(0.3)
        assert not came_back.done()  # the broker is still away
        mosquitto.start()
        await asyncio.wait_for(came_back, 15.0)
        assert bus.connected and bus.stats.reconnects == 1
    assert bus.stats.disconnects == 1  # a clean close is not a lost connection
    with pytest.raises(ConnectionError, match="is not open"):
        await bus.wait_connected()
