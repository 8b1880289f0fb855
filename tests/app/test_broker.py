"""EmbeddedBroker: free loopback port, large QoS 1 payloads, quiet logging, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
import socket

import pytest

from satqkd.broker import EmbeddedBroker
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_core.dictionary import DICTIONARY, qkd_topic
from satqkd_runtime.bus import MessageBus


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def test_listens_on_a_free_loopback_port_and_closes_it() -> None:
    async with EmbeddedBroker() as first, EmbeddedBroker() as second:
        for broker in (first, second):
            assert re.fullmatch(r"mqtt://127\.0\.0\.1:\d+", broker.url)
            assert broker.url.endswith(f":{broker.port}")
            assert accepts_connections(broker.port)
        assert first.port != second.port
        port = first.port
    assert not accepts_connections(port)
    with pytest.raises(RuntimeError, match="not running"):
        _ = first.url


def test_bad_port_is_rejected() -> None:
    with pytest.raises(ValueError, match="port"):
        EmbeddedBroker(port=70000)


async def test_pa_seed_sized_qos1_message_goes_through() -> None:
    # The PA seed of a 1.6 Mbit block is ~200 KB: it must pass at QoS 1 as one message.
    spec = DICTIONARY["PA_SEED"]
    seed = bytes(range(256)) * 800
    fields = {
        "plan_id": 7,
        "output_bits": 800_000,
        "seed": seed,
        "n_seed_bits": len(seed) * 8,
        "key_id": "jinan1-xinglong-7-0",
        "auth_refill_bits": 0,
    }
    envelope = encode_envelope(spec, 42, fields, tag=b"\x01" * 8)
    assert len(envelope) > 200_000
    async with EmbeddedBroker() as broker:
        topic = qkd_topic("jinan1", "xinglong", "down")
        async with MessageBus(broker.url, "ogs") as ogs, MessageBus(broker.url, "payload") as sat:
            await ogs.subscribe(topic, qos=1)
            await sat.publish(topic, envelope, qos=1)
            messages = ogs.messages()
            received = await asyncio.wait_for(anext(messages), 10.0)
            await messages.aclose()
    assert received.topic == topic
    assert received.payload == envelope
    decoded = decode_envelope(received.payload)
    assert decoded.seq == 42 and decoded.fields["seed"] == seed


async def test_broker_logging_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with EmbeddedBroker() as broker, MessageBus(broker.url, "quiet") as bus:
        await bus.subscribe("quiet/t")
        await bus.publish("quiet/t", b"x")
        messages = bus.messages()
        await asyncio.wait_for(anext(messages), 5.0)
        await messages.aclose()
    noisy = [
        record
        for record in caplog.records
        if record.name.split(".")[0] in ("amqtt", "transitions") and record.levelno < logging.ERROR
    ]
    assert noisy == []
