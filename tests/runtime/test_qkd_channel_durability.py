"""The authenticated QKD channel survives crashes without reusing a pad word or accepting a
replay; the key store makes its renames and unlinks durable; failed tag checks are capped;
the pool warns when low and can be refilled from confirmed QKD key at both ends."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator, preshared_key_bytes
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_core.errors import AuthenticationError, InputError
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore, KeyStoreError
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.qkd_channel import (
    QkdChannel,
    forgery_probability,
    install_preshared_key,
)

REPO = Path(__file__).resolve().parents[2]
UP, DOWN = dct.qkd_topic("m", "s", "up"), dct.qkd_topic("m", "s", "down")


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.published.append((topic, payload))

    def qkd(self) -> list[bytes]:
        return [p for t, p in self.published if "/qkd/" in t]


def _key(messages: int, seed: int = 1) -> bytes:
    size = preshared_key_bytes(messages)
    return bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8))


def _channel(
    directory: Path | None, key: bytes, direction: int, bus: RecordingBus, **options: Any
) -> QkdChannel:
    send, receive = (UP, DOWN) if direction == 0 else (DOWN, UP)
    return QkdChannel(
        NodeRuntime(bus, "m", ("ogs-s", "payload")[direction], SimClock(0.0)),  # type: ignore[arg-type]
        WegmanCarterAuthenticator(key, send_direction=direction),
        send,
        receive,
        KeyStore(directory) if directory is not None else None,
        **options,
    )


def _installed(tmp_path: Path, key: bytes) -> tuple[Path, Path]:
    ends = tmp_path / "ogs", tmp_path / "payload"
    for end in ends:
        install_preshared_key(KeyStore(end), key)
    return ends


def _state(directory: Path) -> dict[str, Any]:
    return dict(json.loads(KeyStore(directory).load_secret("auth-sequence")))


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record, in order, `fsync <path>`, `replace <dst>` and `unlink <path>`."""
    calls: list[str] = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink

    def fsync(fd: int) -> None:
        calls.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        calls.append(f"replace {dst}")

    def unlink(path: Any, **kwargs: Any) -> None:
        real_unlink(path, **kwargs)
        calls.append(f"unlink {path}")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    return calls


# --- key store -----------------------------------------------------------------------------


def test_every_replace_and_unlink_is_followed_by_a_directory_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path / "ogs")
    directory = str(store.directory)
    calls = _record_fsyncs(monkeypatch)
    store.store_secret("auth-sequence", b"{}")
    store.store(str(uuid.UUID(int=1, version=4)), np.ones(9, np.uint8), "p", 1, 0.0)
    store.delete_secret("auth-sequence")
    changes = [i for i, c in enumerate(calls) if c.startswith(("replace", "unlink"))]
    assert len(changes) == 4  # secret, key, metadata, unlink
    for i in changes:
        assert calls[i + 1] == f"fsync {directory}", calls
    # the data itself was fsynced before its rename
    assert calls[0] == f"fsync {directory}/auth-sequence.secret.tmp"


def test_discard_zeroes_the_key_on_disk_then_unlinks_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path)
    key_id = str(uuid.UUID(int=2, version=4))
    store.store(key_id, np.ones(4096, np.uint8), "p", 1, 0.0)
    seen: dict[str, bytes] = {}
    real_unlink = os.unlink

    def unlink(path: Any, **kwargs: Any) -> None:
        seen[Path(path).name] = Path(path).read_bytes()
        real_unlink(path, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    calls = _record_fsyncs(monkeypatch)
    store.discard(key_id)
    assert seen[f"{key_id}.key"] == bytes(512)  # overwritten with zeros before the unlink
    assert calls[0] == f"fsync {tmp_path}/{key_id}.key" and calls[-1] == f"fsync {tmp_path}"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyStoreError, match="no key"):
        store.discard(key_id)
    # an orphan (metadata left by an interrupted store) is discarded too
    orphan = str(uuid.UUID(int=3, version=4))
    store.store(orphan, np.ones(8, np.uint8), "p", 1, 0.0)
    (tmp_path / f"{orphan}.key").unlink()
    store.discard(orphan)
    assert list(tmp_path.iterdir()) == []


# --- missing or corrupt state ----------------------------------------------------------------


def test_a_pool_without_its_sequence_state_is_refused_in_one_line(tmp_path: Path) -> None:
    key = _key(100)
    ogs, _ = _installed(tmp_path, key)
    KeyStore(ogs).delete_secret("auth-sequence")
    with pytest.raises(KeyStoreError) as refused:
        _channel(ogs, key, 0, RecordingBus())
    message = str(refused.value)
    assert "\n" not in message and str(ogs) in message
    assert "satqkd keys bootstrap --force" in message and "both ends" in message
    KeyStore(ogs).store_secret("auth-sequence", b"{not json")
    with pytest.raises(KeyStoreError, match="auth-sequence is corrupt"):
        _channel(ogs, key, 0, RecordingBus())
    # a store holding no pre-shared key starts from the beginning, as before
    assert _channel(tmp_path / "empty", key, 0, RecordingBus()).next_send_seq == 0


def test_install_writes_the_initial_state_and_drops_old_extensions(tmp_path: Path) -> None:
    ogs, _ = _installed(tmp_path, _key(100))
    store = KeyStore(ogs)
    store.store_secret("auth-pool-extensions", b'{"extensions": []}')
    store.store_secret("auth-sequence", b'{"next_send_seq": 512, "highest_received_seq": 9}')
    install_preshared_key(store, _key(100, seed=2))
    assert _state(ogs) == {
        "next_send_seq": 0,
        "highest_received_seq": -1,
        "auth_failures": 0,
        "failed_message_bytes": [],
        "pool_low_reported": False,
    }
    assert not store.has_secret("auth-pool-extensions")
    with pytest.raises(InputError, match="preshared_key"):
        install_preshared_key(store, b"short")


# --- receive watermark -----------------------------------------------------------------------


async def test_the_watermark_is_on_disk_before_accept_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key(100)
    ogs, payload = _installed(tmp_path, key)
    bus = RecordingBus()
    sender, receiver = _channel(ogs, key, 0, bus), _channel(payload, key, 1, bus)
    for reason in ("a", "b"):
        await sender.send("ABORT", plan_id=1, reason=reason)
    calls = _record_fsyncs(monkeypatch)
    assert await receiver.accept(bus.qkd()[0]) is not None
    assert _state(payload)["highest_received_seq"] == 0
    assert f"fsync {payload}/auth-sequence.secret.tmp" in calls
    assert calls[-1] == f"fsync {payload}"
    # a restarted receiver refuses the replay and takes the next message
    again = _channel(payload, key, 1, bus)
    assert await again.accept(bus.qkd()[0]) is None
    assert again.runtime.counters.qkd_duplicates == 1
    assert await again.accept(bus.qkd()[1]) is not None


# --- failure cap -----------------------------------------------------------------------------


def _forged(genuine: bytes) -> bytes:
    forged = bytearray(genuine)
    forged[-1] ^= 0x01  # the last tag byte
    return bytes(forged)


async def test_failed_tag_checks_are_capped_and_counted_on_disk(tmp_path: Path) -> None:
    key = _key(100)
    ogs, payload = _installed(tmp_path, key)
    bus = RecordingBus()
    sender = _channel(ogs, key, 0, bus)
    receiver = _channel(payload, key, 1, bus, failure_cap=3)
    for reason in ("short", "a longer reason " * 10, "x"):
        await sender.send("ABORT", plan_id=1, reason=reason)
    await sender.send("ABORT", plan_id=1, reason="genuine")
    messages = bus.qkd()
    expected = 0.0
    for message in messages[:3]:
        assert await receiver.accept(_forged(message)) is None
        words = -(-(len(message) - 9) // 7)  # authenticated bytes: all but tag_len and tag
        expected += 9 * (words + 2) / 2**64
    assert receiver.auth_failures == 3 and receiver.failure_limit_reached
    assert receiver.forgery_probability_spent() == pytest.approx(expected, rel=1e-12)
    assert forgery_probability(7) == 27 / 2**64
    counters = receiver.runtime.counters
    assert counters.events["AUTH_FAILURE"] == 3 and counters.events["AUTH_FAILURE_LIMIT"] == 1
    state = _state(payload)
    assert state["auth_failures"] == 3 and len(state["failed_message_bytes"]) == 3
    # at the cap even an authentic message is refused, counted, and nothing is sent
    assert await receiver.accept(messages[3]) is None
    assert await receiver.accept(messages[3]) is None
    assert counters.qkd_rejected == 5 and counters.events["AUTH_FAILURE_LIMIT"] == 1
    with pytest.raises(AuthenticationError, match="bootstrap --force"):
        await receiver.send("ABORT", plan_id=1, reason="no")
    # a restart keeps refusing (and says so once); replacing the key clears it
    restarted = _channel(payload, key, 1, bus, failure_cap=3)
    assert restarted.auth_failures == 3
    assert await restarted.accept(messages[3]) is None
    assert restarted.runtime.counters.events["AUTH_FAILURE_LIMIT"] == 1
    install_preshared_key(KeyStore(payload), key)
    assert await _channel(payload, key, 1, bus, failure_cap=3).accept(messages[3]) is not None


async def test_a_seq_beyond_the_pool_is_rejected_but_not_a_forgery_attempt(
    tmp_path: Path,
) -> None:
    key = _key(4)
    _, payload = _installed(tmp_path, key)
    receiver = _channel(payload, key, 1, RecordingBus())
    spec = dct.DICTIONARY["ABORT"]
    beyond = encode_envelope(spec, 4, {"plan_id": 1, "reason": "x"}, tag=bytes(8))
    assert await receiver.accept(beyond) is None
    assert receiver.runtime.counters.qkd_rejected == 1 and receiver.auth_failures == 0


# --- pool low and refill ---------------------------------------------------------------------


async def test_pool_low_is_reported_once_per_crossing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(QkdChannel, "SEQ_RESERVATION", 2)
    key = _key(10)
    ogs, _ = _installed(tmp_path, key)
    bus = RecordingBus()
    sender = _channel(ogs, key, 0, bus, pool_low_messages=4)
    events = sender.runtime.counters.events
    for _ in range(6):
        await sender.send("ABORT", plan_id=1, reason="r")
    assert sender.pad_words_remaining == 4 and "AUTH_POOL_LOW" not in events
    await sender.send("ABORT", plan_id=1, reason="r")
    assert events["AUTH_POOL_LOW"] == 1 and _state(ogs)["pool_low_reported"]
    # no second report: not after another send, not after a restart
    await sender.send("ABORT", plan_id=1, reason="r")
    restarted = _channel(ogs, key, 0, bus, pool_low_messages=4)
    await restarted.send("ABORT", plan_id=1, reason="r")
    assert events["AUTH_POOL_LOW"] == 1 and "AUTH_POOL_LOW" not in restarted.runtime.counters.events
    # a refill too small to lift the pool above the threshold does not re-arm it
    assert restarted.extend_pool("k1", bytes(16))
    await restarted.send("ABORT", plan_id=1, reason="r")
    assert "AUTH_POOL_LOW" not in restarted.runtime.counters.events
    # one that does re-arms it; the next crossing is reported again
    restarted.extend_pool("k2", bytes(16 * 6))
    assert not _state(ogs)["pool_low_reported"]
    while restarted.pad_words_remaining >= 4:
        await restarted.send("ABORT", plan_id=1, reason="r")
    assert restarted.runtime.counters.events["AUTH_POOL_LOW"] == 1


async def test_two_ends_refilled_alike_authenticate_past_the_original_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(QkdChannel, "SEQ_RESERVATION", 4)
    key = _key(6)
    ogs, payload = _installed(tmp_path, key)
    bus = RecordingBus()
    ground, space = _channel(ogs, key, 0, bus), _channel(payload, key, 1, bus)
    qkd_key = bytes(np.random.default_rng(9).integers(0, 256, 16 * 20, np.uint8))

    order: list[str] = []
    real_extend = ground.authenticator.extend_pool

    def extend(data: bytes) -> None:  # the extension is on disk before the pool uses it
        order.append(json.loads(KeyStore(ogs).load_secret("auth-pool-extensions"))["extensions"])
        real_extend(data)

    monkeypatch.setattr(ground.authenticator, "extend_pool", extend)
    for channel in (ground, space):
        assert channel.extend_pool("qkd-1", qkd_key[:160])
        assert not channel.extend_pool("qkd-1", qkd_key[:160])  # idempotent per key id
        assert channel.extend_pool("qkd-2", qkd_key[160:])
    assert [e[-1]["key_id"] for e in order] == ["qkd-1", "qkd-2"]
    assert ground.authenticator.max_sequence() == 6 + 20 - 1
    with pytest.raises(InputError, match="other bytes"):
        ground.extend_pool("qkd-1", bytes(160))
    with pytest.raises(InputError, match="multiple of 8"):
        ground.extend_pool("qkd-3", bytes(12))
    assert ground.pool_extension_ids() == ["qkd-1", "qkd-2"]

    async def exchange(a: QkdChannel, b: QkdChannel, count: int) -> None:
        for _ in range(count):
            for sender, receiver in ((a, b), (b, a)):
                await sender.send("ABORT", plan_id=1, reason="r")
                assert await receiver.accept(bus.qkd()[-1]) is not None

    await exchange(ground, space, 10)  # seqs 0..9: past the 6 pre-shared messages
    # both ends restart: the pool is rebuilt (pre-shared key, then the refills in order)
    ground, space = _channel(ogs, key, 0, bus), _channel(payload, key, 1, bus)
    assert ground.next_send_seq == 12 and ground.pool_extension_ids() == ["qkd-1", "qkd-2"]
    await exchange(ground, space, 10)  # seqs 12..21
    assert decode_envelope(bus.qkd()[-1]).seq == 21
    # an end that has not applied the refills cannot verify the refilled words
    lagging = _channel(None, key, 1, RecordingBus())
    assert await lagging.accept(bus.qkd()[-2]) is None


# --- crashes: a killed process never reuses a pad word, a replay stays refused ---------------

DRIVER = r"""
import asyncio, json, os, signal, sys
from pathlib import Path

from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator
from satqkd_core.codec import decode_envelope
from satqkd_runtime import keystore
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.qkd_channel import QkdChannel

directory, role, log_path, count, kill = sys.argv[1:6]
point, _, at = kill.partition(":")
at_seq = int(at or -1)
up, down = dct.qkd_topic("m", "s", "up"), dct.qkd_topic("m", "s", "down")


def die(where):
    if point == where:
        os.kill(os.getpid(), signal.SIGKILL)


class LoggingBus:
    async def publish(self, topic, payload, qos=1):
        if topic == up:
            seq = decode_envelope(payload).seq
            if seq == at_seq:
                die("before-publish")
            with open(log_path, "a") as log:
                log.write(f"{seq} {payload.hex()}\n")
            if seq == at_seq:
                die("after-publish")


real_write, real_replace = keystore._write_private, keystore.os.replace


def write(path, data, durable=True):
    if path.name == "auth-sequence.secret":
        reserved = json.loads(data)["next_send_seq"]
        if reserved == at_seq:
            die("before-reserve")
        real_write(path, data, durable)
        if reserved == at_seq:
            die("after-reserve")
    else:
        real_write(path, data, durable)


keystore._write_private = write
store = KeyStore(directory)
direction = 0 if role == "send" else 1
channel = QkdChannel(
    NodeRuntime(LoggingBus(), "m", "ogs-s" if role == "send" else "payload", SimClock(0.0)),
    WegmanCarterAuthenticator(store.load_secret("preshared-auth"), send_direction=direction),
    up if role == "send" else down,
    down if role == "send" else up,
    store,
)


async def main():
    if role == "send":
        for _ in range(int(count)):
            await channel.send("ABORT", plan_id=1, reason="r")
        return
    accepted = []
    for line in Path(log_path).read_text().splitlines():
        envelope = await channel.accept(bytes.fromhex(line.split()[1]))
        if envelope is not None:
            accepted.append(envelope.seq)
            with open(count, "a") as out:
                out.write(f"{envelope.seq}\n")
            if envelope.seq == at_seq:
                die("after-accept")
    print(json.dumps({"duplicates": channel.runtime.counters.qkd_duplicates}))


asyncio.run(main())
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(driver), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_sender_killed_anywhere_never_reuses_a_pad_word(tmp_path: Path) -> None:
    key = _key(2000)
    ogs, payload = _installed(tmp_path, key)
    log = tmp_path / "published.log"
    runs = [  # (messages to send, where the process is killed)
        ("300", "after-publish:5"),  # mid-block: resumes at the next block (256)
        ("300", "before-publish:258"),  # tagged, never published
        ("300", "before-reserve:1024"),  # the reservation of 768..1023 never reached the disk
        ("300", "after-reserve:1280"),  # reserved on disk, nothing of it used
        ("5", "none"),
    ]
    for count, kill in runs:
        done = _run(tmp_path, str(ogs), "send", str(log), count, kill)
        expected = 0 if kill == "none" else -signal.SIGKILL
        assert done.returncode == expected, (kill, done.stderr[-2000:])
    seqs = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert all(a < b for a, b in itertools.pairwise(seqs)), "a seq went back"
    assert len(seqs) == len(set(seqs))
    assert seqs[:7] == [0, 1, 2, 3, 4, 5, 256] and 258 not in seqs
    # killed before its reservation reached the disk: 768 is used after the restart, once
    assert seqs.count(768) == 1 and 1024 not in seqs and seqs[-5:] == list(range(1280, 1285))
    # every published message is authentic for the other end, in order
    receiver = _channel(payload, key, 1, RecordingBus())
    for line in log.read_text().splitlines():
        assert await receiver.accept(bytes.fromhex(line.split()[1])) is not None


async def test_a_receiver_killed_after_accepting_refuses_the_replay(tmp_path: Path) -> None:
    key = _key(100)
    ogs, payload = _installed(tmp_path, key)
    bus = RecordingBus()
    sender = _channel(ogs, key, 0, bus)
    for _ in range(5):
        await sender.send("ABORT", plan_id=1, reason="r")
    log = tmp_path / "published.log"
    log.write_text("".join(f"{decode_envelope(m).seq} {m.hex()}\n" for m in bus.qkd()))
    accepted = tmp_path / "accepted.log"
    first = _run(tmp_path, str(payload), "receive", str(log), str(accepted), "after-accept:2")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert accepted.read_text().split() == ["0", "1", "2"]
    # a new process is given the same messages again: only the unseen ones pass
    second = _run(tmp_path, str(payload), "receive", str(log), str(accepted), "none")
    assert second.returncode == 0, second.stderr[-2000:]
    assert accepted.read_text().split() == ["0", "1", "2", "3", "4"]
    assert json.loads(second.stdout) == {"duplicates": 3}
