"""Attacks on the trusted relay, each against the defence that stops it: a forged or replayed
RELAY_XOR, an unsigned or forged RELAY_KEYS, a relay naming keys used up, pending or too few,
a relay id used twice; and no key material (nor the XOR) in telemetry, events or logs."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from satqkd.relay_run import RelayRequest, relay_nodes
from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.key_management import KeyManagement
from satqkd_runtime.keystore import KeyStore
from tests.app.relay_stores import add_shared_key, two_links

A, B = "xinglong", "stellenbosch"


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def _states(directory: Path) -> dict[str, int]:
    with KeyManagement(directory / "kms") as kms:
        return kms.counts()


async def test_forged_and_replayed_xor_messages_are_rejected_and_counted(tmp_path: Path) -> None:
    stores = two_links(tmp_path)
    async with relay_nodes(stores["payload"], stores["stations"]) as nodes:
        station_b = nodes.stations[B]
        spy = MessageBus(nodes.broker_url, "relay-spy")
        async with spy:
            down_b = dct.qkd_topic("jinan1", B, "down")
            await spy.subscribe(down_b)
            fields = {
                "relay_id": 1, "station_a": A, "station_b": B, "key_size_bits": 256,
                "bits": 256, "keys_a": f"{stores['keys'][A][0]}:0:1",
                "keys_b": f"{stores['keys'][B][0]}:0:1", "xor": secrets.token_bytes(32),
            }  # fmt: skip
            forged = encode_envelope(
                dct.DICTIONARY["RELAY_XOR"], 3, fields, tag=secrets.token_bytes(8)
            )
            await spy.publish(down_b, forged)
            await _until(lambda: station_b.runtime.counters.qkd_rejected == 1)
            assert station_b.runtime.counters.events["AUTH_FAILURE"] == 1
            assert not KeyStore(stores["stations"][B]).has_secret("relay-record")

            result = await nodes.relay(RelayRequest(1, A, B, 1024))
            assert result.ok, result.abort_reason
            async with asyncio.timeout(5):
                async for genuine in spy.messages():  # the spy hears its own forgery too
                    if genuine.payload != forged:
                        break
            before = _states(stores["stations"][B])

            # the same bytes again: the channel drops the seq it accepted already
            await spy.publish(down_b, genuine.payload)
            await _until(lambda: station_b.runtime.counters.qkd_duplicates == 1)
            # the same relay with a fresh seq and a valid tag: the station's record refuses it
            replay = decode_envelope(genuine.payload).fields
            await nodes.payload.links[B].channel.send("RELAY_XOR", **replay)
            await _until(lambda: station_b.runtime.counters.events.get("RELAY_REFUSED") == 1)
            assert station_b.runtime.counters.qkd_rejected == 2
            assert _states(stores["stations"][B]) == before  # nothing taken, nothing filed


async def test_relay_commands_that_must_not_run_are_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    stores = two_links(tmp_path)
    payload = stores["payload"]
    key_a = stores["keys"][A][0]
    async with relay_nodes(payload, stores["stations"]) as nodes:
        request = RelayRequest(1, A, B, 1024)
        fields = {
            "relay_id": 1, "station_a": A, "station_b": B, "bits": 1024, "blocks_a": "",
            "blocks_b": "",
        }  # fmt: skip
        unsigned = encode_envelope(dct.DICTIONARY["RELAY_KEYS"], 9, fields)
        refused = await nodes.send_relay_command(request, 9, unsigned)
        assert "not authenticated" in refused.refusals["payload"]
        seq, signed = nodes.signer.sign("RELAY_KEYS", fields)
        forged = signed[:-1] + bytes([signed[-1] ^ 1])
        refused = await nodes.send_relay_command(request, seq, forged)
        assert "not authenticated" in refused.refusals["payload"]
        assert nodes.payload.runtime.counters.tc_auth_failures == 2
        # a key a pass stored that its station has not confirmed yet (added once the payload
        # answered: at start it discards those a previous run left)
        pending, _ = add_shared_key(payload, stores["stations"][A], A, 4096, confirmed=False)

        too_many = await nodes.relay(RelayRequest(2, A, B, 8192))
        assert "16 keys of 256 bits available in the named keys, 32 needed" in (
            too_many.abort_reason or ""
        )
        not_confirmed = await nodes.relay(RelayRequest(3, A, B, 1024, blocks_a=(pending,)))
        assert f"key {pending} is not confirmed" in (not_confirmed.abort_reason or "")
        unknown = await nodes.relay(RelayRequest(3, A, B, 1024, blocks_b=(key_a,)))
        assert f"key {key_a} is not a key of this link" in (unknown.abort_reason or "")
        for station in (A, B):  # a refused relay takes nothing
            assert _states(payload / station)["consumed"] == 0
            assert not (stores["stations"][station] / "kms").exists()

        whole = await nodes.relay(RelayRequest(4, A, B, 4096, blocks_a=(key_a,)))
        assert whole.ok, whole.abort_reason
        used_up = await nodes.relay(RelayRequest(5, A, B, 256, blocks_a=(key_a,)))
        assert f"key {key_a} of the link with A {A} is used up" in (used_up.abort_reason or "")
        again = await nodes.relay(RelayRequest(4, A, B, 256))
        assert "relay id 4 was used before" in (again.abort_reason or "")
        assert not used_up.ok and not again.ok and again.sha256 == whole.sha256
    assert nodes.payload.runtime.counters.events["RELAY_REFUSED"] == 5


async def test_no_key_material_nor_the_xor_in_telemetry_events_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stores = two_links(tmp_path)
    key_a, key_b = stores["keys"][A][1][:256], stores["keys"][B][1][:256]
    xor = bytes(x ^ y for x, y in zip(key_a, key_b, strict=True))
    caplog.set_level(logging.DEBUG)
    seen: list[tuple[str, bytes]] = []
    async with (
        relay_nodes(stores["payload"], stores["stations"]) as nodes,
        MessageBus(nodes.broker_url, "relay-spy") as spy,
    ):
        await spy.subscribe("satqkd/#")

        async def record() -> None:
            async for message in spy.messages():
                seen.append((message.topic, message.payload))

        recorder = asyncio.create_task(record())
        result = await nodes.relay(RelayRequest(1, A, B, 2048))
        await asyncio.sleep(0.2)
        recorder.cancel()
    assert result.ok, result.abort_reason
    assert any("/qkd/" in topic for topic, _ in seen)  # the broadcast itself was seen
    secrets_seen = [key_a, key_b, xor, key_a[:16], xor[:16]]
    for topic, payload in seen:
        for secret in secrets_seen[:2] + secrets_seen[3:4]:
            assert secret not in payload, topic
        if "/qkd/" not in topic:  # the XOR travels only in RELAY_XOR
            assert xor[:16] not in payload, topic
        for secret in secrets_seen:
            assert secret.hex()[:32] not in payload.decode("latin-1"), topic
    for secret in secrets_seen:
        assert secret.hex()[:32] not in caplog.text
        for station in (A, B):
            record = KeyStore(stores["stations"][station]).load_secret("relay-record")
            assert secret.hex()[:32].encode() not in record and secret[:16] not in record
