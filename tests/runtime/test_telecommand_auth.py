"""Telecommand authentication (decision 0016): AES-256-CMAC against the NIST vectors, every
tampered byte refused, replays and old seqs refused, a wrong key id refused, the node's
watermark and the control centre's send sequence both survive a restart or a crash."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from satqkd_core import dictionary as dct
from satqkd_core.codec import CodecError, authenticated_bytes, decode_envelope, encode_envelope
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.telecommand_auth import (
    SEND_STATE_SECRET,
    TRAILER_BYTES,
    TRAILER_FORMAT,
    WATERMARK_SECRET,
    TelecommandAuthError,
    TelecommandKey,
    TelecommandKeyError,
    TelecommandSigner,
    TelecommandVerifier,
    UnauthenticatedTelecommands,
    cmac_aes256,
    install_telecommand_key,
)

# NIST SP 800-38B, Appendix D.3 (AES-256), examples 9-12: the key and the message prefixes.
NIST_KEY = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
NIST_MESSAGE = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
NIST_TAGS = {
    0: "028962f61b7bf89efc6b551f4667d983",
    16: "28a7023f452e8f82bd4bf28d8c37c35c",
    40: "aaf3d8f1de5640c232f5b169b9c911e6",
    64: "e1992190549f6ed5696a2c056c315410",
}
PLAN = {
    "plan_id": 7,
    "mission": "m",
    "station": "s",
    "tle_line1": "1 x",
    "tle_line2": "2 x",
    "aos_unix_s": 1.0,
    "los_unix_s": 2.0,
    "qkd_start_unix_s": 1.2,
    "qkd_stop_unix_s": 1.8,
    "repetition_rate_hz": 1e8,
}


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.published.append((topic, payload))


def _pair(tmp_path: Path, node: str = "payload") -> tuple[TelecommandSigner, TelecommandVerifier]:
    install_telecommand_key(tmp_path / node, tmp_path / "occ", node)
    return (
        TelecommandSigner.for_node(tmp_path / "occ", node),
        TelecommandVerifier.load(tmp_path / node, node),
    )


def _accept(verifier: TelecommandVerifier, data: bytes) -> None:
    verifier.verify(data, decode_envelope(data))


@pytest.mark.parametrize("length", sorted(NIST_TAGS))
def test_cmac_matches_the_nist_sp800_38b_aes256_examples(length: int) -> None:
    assert cmac_aes256(NIST_KEY, NIST_MESSAGE[:length]).hex() == NIST_TAGS[length]


def test_trailer_layout_is_format_key_id_and_the_cmac_of_the_authenticated_bytes(
    tmp_path: Path,
) -> None:
    signer, verifier = _pair(tmp_path)
    seq, data = signer.sign("SOURCE_ENABLE", {"enable": True})
    envelope = decode_envelope(data)
    assert seq == envelope.seq == 1
    tag = envelope.tag
    assert len(tag) == TRAILER_BYTES == 19
    assert tag[0] == TRAILER_FORMAT and int.from_bytes(tag[1:3], "big") == signer.key_id == 1
    assert tag[3:] == cmac_aes256(signer.key.key, authenticated_bytes(data))
    _accept(verifier, data)
    assert verifier.highest_accepted_seq == 1


def test_every_tampered_byte_is_refused(tmp_path: Path) -> None:
    signer, verifier = _pair(tmp_path)
    _, data = signer.sign("LOAD_PASS_PLAN", PLAN)
    for index in range(len(data)):
        for flip in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[index] ^= flip
            try:
                envelope = decode_envelope(bytes(tampered))
            except CodecError:
                continue  # undecodable: refused before any check (see the node tests)
            with pytest.raises(TelecommandAuthError):
                verifier.verify(bytes(tampered), envelope)
    assert verifier.highest_accepted_seq == 0  # no failure moved the watermark
    _accept(verifier, data)


def test_missing_short_or_foreign_trailers_are_refused(tmp_path: Path) -> None:
    signer, verifier = _pair(tmp_path)
    unsigned = encode_envelope(dct.DICTIONARY["SOURCE_ENABLE"], 5, {"enable": True})
    with pytest.raises(TelecommandAuthError, match="no security trailer"):
        _accept(verifier, unsigned)
    wegman_carter = encode_envelope(dct.DICTIONARY["NOOP"], 5, {}, tag=b"\x01" * 8)
    with pytest.raises(TelecommandAuthError, match="trailer of 8 bytes"):
        _accept(verifier, wegman_carter)
    _, data = signer.sign("NOOP", {})
    other_format = data[:-TRAILER_BYTES] + b"\x02" + data[-TRAILER_BYTES + 1 :]
    with pytest.raises(TelecommandAuthError, match="unknown trailer format 0x02"):
        _accept(verifier, other_format)


def test_wrong_key_id_and_another_nodes_key_are_refused(tmp_path: Path) -> None:
    signer, verifier = _pair(tmp_path)
    body = authenticated_bytes(encode_envelope(dct.DICTIONARY["NOOP"], 9, {}))
    # the right key but another key id in the trailer
    trailer = bytes((TRAILER_FORMAT,)) + (2).to_bytes(2, "big") + signer.key.mac(body)
    with pytest.raises(TelecommandAuthError, match=r"wrong key id 2 .*holds key id 1"):
        _accept(verifier, body + bytes((TRAILER_BYTES,)) + trailer)
    # a command signed for the station is refused by the payload (each node its own key)
    station_signer, _ = _pair(tmp_path, "ogs-s")
    _, for_station = station_signer.sign("NOOP", {})
    with pytest.raises(TelecommandAuthError, match="bad MAC"):
        _accept(verifier, for_station)
    assert verifier.highest_accepted_seq == 0


def test_replays_and_older_seqs_are_refused(tmp_path: Path) -> None:
    signer, verifier = _pair(tmp_path)
    _, first = signer.sign("NOOP", {})
    _, second = signer.sign("RESET_COUNTERS", {})
    _accept(verifier, second)
    with pytest.raises(TelecommandAuthError, match="seq 2 is not above the last accepted seq 2"):
        _accept(verifier, second)
    with pytest.raises(TelecommandAuthError, match="seq 1 is not above"):
        _accept(verifier, first)  # signed earlier, delivered late: refused too


def test_watermark_is_durable_before_verify_returns_and_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer, verifier = _pair(tmp_path)
    captured = [signer.sign("NOOP", {})[1] for _ in range(3)]
    synced: list[bool] = []  # True for a directory
    real_fsync = os.fsync

    def spy(descriptor: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(descriptor).st_mode))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", spy)
    for data in captured:
        _accept(verifier, data)
        stored = json.loads(KeyStore(tmp_path / "payload").load_secret(WATERMARK_SECRET))
        assert stored == {"key_id": 1, "highest_accepted_seq": decode_envelope(data).seq}
    assert synced.count(False) >= 3 and synced.count(True) >= 3  # file and directory each time
    monkeypatch.undo()
    path = tmp_path / "payload" / f"{WATERMARK_SECRET}.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    restarted = TelecommandVerifier.load(tmp_path / "payload", "payload")
    assert restarted.highest_accepted_seq == 3
    for data in captured:
        with pytest.raises(TelecommandAuthError, match="not above"):
            _accept(restarted, data)
    _accept(restarted, signer.sign("NOOP", {})[1])


def test_a_signer_restarted_after_a_crash_never_reuses_a_seq(tmp_path: Path) -> None:
    signer, _ = _pair(tmp_path)
    used = {signer.sign("NOOP", {})[0] for _ in range(5)}
    assert used == {1, 2, 3, 4, 5}
    # the process dies without a word: the next one resumes above the reserved block
    again = TelecommandSigner.for_node(tmp_path / "occ", "payload")
    seq, _ = again.sign("NOOP", {})
    assert seq == 1 + signer.reservation and seq not in used
    # two signers at once (two OCC processes) reserve disjoint blocks
    other = TelecommandSigner.for_node(tmp_path / "occ", "payload", reservation=1)
    seqs = [again.sign("NOOP", {})[0], other.sign("NOOP", {})[0], again.sign("NOOP", {})[0]]
    assert len({*seqs, seq, *used}) == len(seqs) + 1 + len(used)
    state = json.loads(KeyStore(tmp_path / "occ" / "payload").load_secret(SEND_STATE_SECRET))
    assert state["next_seq"] > max(seqs)


def test_a_used_up_sequence_asks_for_a_new_key(tmp_path: Path) -> None:
    signer, _ = _pair(tmp_path)
    store = KeyStore(tmp_path / "occ" / "payload")
    store.store_secret(SEND_STATE_SECRET, json.dumps({"key_id": 1, "next_seq": 2**32 - 1}).encode())
    assert signer.sign("NOOP", {})[0] == 2**32 - 1
    with pytest.raises(TelecommandKeyError, match="used up; install a new key with --force"):
        signer.sign("NOOP", {})


def test_installation_refuses_to_overwrite_and_force_resets_both_ends(tmp_path: Path) -> None:
    signer, verifier = _pair(tmp_path)
    _, old = signer.sign("NOOP", {})
    _accept(verifier, old)
    with pytest.raises(TelecommandKeyError, match=r"already hold.*give --force"):
        install_telecommand_key(tmp_path / "payload", tmp_path / "occ", "payload")
    new = install_telecommand_key(tmp_path / "payload", tmp_path / "occ", "payload", force=True)
    assert new.key_id == 2 and "key=" not in repr(new) and new.key.hex() not in repr(new)
    signer2 = TelecommandSigner.for_node(tmp_path / "occ", "payload")
    verifier2 = TelecommandVerifier.load(tmp_path / "payload", "payload")
    assert verifier2.highest_accepted_seq == 0
    seq, data = signer2.sign("NOOP", {})
    assert seq == 1
    with pytest.raises(TelecommandAuthError, match="wrong key id 1"):
        _accept(verifier2, old)  # a command of the replaced key
    _accept(verifier2, data)
    for directory in (tmp_path / "payload", tmp_path / "occ", tmp_path / "occ" / "payload"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for directory in (tmp_path / "payload", tmp_path / "occ" / "payload"):
        key_file = directory / "telecommand-key.secret"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_missing_or_damaged_keys_fail_in_one_line_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TelecommandKeyError) as missing:
        TelecommandVerifier.load(tmp_path / "ogs", "ogs-xinglong")
    assert "satqkd keys telecommand --node ogs-xinglong" in str(missing.value)
    assert "\n" not in str(missing.value)
    with pytest.raises(TelecommandKeyError, match="no telecommand key for payload"):
        TelecommandSigner.for_node(tmp_path / "occ", "payload")
    KeyStore(tmp_path / "bad").store_secret("telecommand-key", b"{not json")
    with pytest.raises(TelecommandKeyError, match="damaged"):
        TelecommandVerifier.load(tmp_path / "bad", "payload")
    with pytest.raises(TelecommandKeyError, match="32 bytes"):
        TelecommandKey(1, b"short")


async def test_node_refuses_unauthenticated_commands_in_a_counter_reset_counters_keeps(
    tmp_path: Path,
) -> None:
    signer, verifier = _pair(tmp_path)
    bus = RecordingBus()
    node = NodeRuntime(bus, "m", "payload", SimClock(0.0), tc_verifier=verifier)  # type: ignore[arg-type]
    unsigned = encode_envelope(dct.DICTIONARY["RESET_COUNTERS"], 9, {})
    node.counters.tc_rejected = 4
    assert await node.decode_telecommand(unsigned) is None
    assert await node.decode_telecommand(b"\x00garbage") is None
    assert node.counters.tc_auth_failures == 2 and node.counters.tc_rejected == 4
    _, reset = signer.sign("RESET_COUNTERS", {})
    envelope = await node.decode_telecommand(reset)
    assert envelope is not None
    assert await node.execute_common(envelope, asyncio.Event())
    assert node.counters.tc_rejected == 0 and node.counters.tc_auth_failures == 2
    published = [decode_envelope(p) for _, p in bus.published]
    acks = [e.fields for e in published if e.spec.name == "TC_ACK"]
    assert [a["accepted"] for a in acks] == [False, False, True]
    assert acks[0]["command_seq"] == 9 and "no security trailer" in acks[0]["reason"]
    texts = [e.fields["text"] for e in published if e.spec.name == "EVENT"]
    assert any("RESET_COUNTERS seq 9 refused" in t for t in texts)
    events = {dct.event_by_id(e.fields["event_id"]).name for e in published if "text" in e.fields}
    assert "TC_AUTH_FAILURE" in events and "TC_REJECTED" not in events
    key_hex = signer.key.key.hex()
    for (_, payload), message in zip(bus.published, published, strict=True):
        assert signer.key.key not in payload and key_hex not in str(message.fields)


async def test_without_a_verifier_everything_is_refused_unless_explicitly_opted_out() -> None:
    bus = RecordingBus()
    noop = encode_envelope(dct.DICTIONARY["NOOP"], 1, {})
    closed = NodeRuntime(bus, "m", "payload", SimClock(0.0))  # type: ignore[arg-type]
    assert await closed.decode_telecommand(noop) is None
    assert closed.counters.tc_auth_failures == 1
    ack = decode_envelope(bus.published[-1][1]).fields
    assert not ack["accepted"] and "no telecommand key loaded" in ack["reason"]
    opted_out = NodeRuntime(
        bus,  # type: ignore[arg-type]
        "m",
        "payload",
        SimClock(0.0),
        tc_verifier=UnauthenticatedTelecommands(),
    )
    assert await opted_out.decode_telecommand(noop) is not None
    assert await opted_out.decode_telecommand(b"junk") is None
    assert opted_out.counters.tc_rejected == 1 and opted_out.counters.tc_auth_failures == 0
