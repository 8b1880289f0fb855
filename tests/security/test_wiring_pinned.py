"""Security wiring between modules, pinned (a mutation check found these survived the suite).

1. The Wegman-Carter tag (satqkd_core.authentication) against a plain-Python implementation
   written here from the documented key layout and hash, never from the module's own helpers
   (`gf2_64_multiply`, `poly_hash_words`), plus hard-coded known answers. The two mutations
   the issue named (one hash key used twice, k2 = k1; the GF(2^64) mixing skipped) are shown
   to change the tag, so the known-answer tests fail on them. The QKD channel
   (satqkd_runtime.qkd_channel) is pinned to tag the authenticated bytes of each envelope with
   pad word 2 * seq + direction of the seq it carries, and so are both daemons on the wire.
2. A residual error after error correction (LDPC and Cascade): verification fails and the
   pass ends with no key stored at either end.

The end-to-end key length of a simulated pass is pinned in test_key_length_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from satqkd.wiring import preshared_auth_key
from satqkd_core.authentication import WegmanCarterAuthenticator
from satqkd_core.codec import authenticated_bytes, decode_envelope
from satqkd_core.errors import AuthenticationError
from satqkd_ogs.session import OgsSession
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.qkd_channel import QkdChannel, install_preshared_key
from tests.ogs import test_ldpc_session as rig
from tests.protocol_params import jinan1_params

# The station/payload rig of the LDPC session tests, re-exported here as a fixture.
ldpc_pass = rig.ldpc_pass

# ---- an independent Wegman-Carter implementation, from the documentation only -------------

P61 = (1 << 61) - 1  # the GF(p) of the polynomial hash
GF64_MODULUS = (1 << 64) | (1 << 4) | (1 << 3) | (1 << 1) | 1  # x^64 + x^4 + x^3 + x + 1
HASH_KEY_BYTES = 16  # k1 (bytes 0..7), k2 (bytes 8..15)
PAD_BYTES = 8
UP, DOWN = 0, 1  # ground -> payload, payload -> ground


def ref_poly_hash(message: bytes, k1: int) -> int:
    """h1 of satqkd_core.verification's docstring: the message cut into 7-byte big-endian words
    w_1..w_L (the last zero-padded), the length in bits as a final word, and
    h = w_1 k^(L+1) + w_2 k^L + ... + w_L k^2 + len k (mod p), summed term by term."""
    words = [
        int.from_bytes(message[i : i + 7].ljust(7, b"\0"), "big") for i in range(0, len(message), 7)
    ]
    n_words = len(words)
    total = 8 * len(message) * k1
    for i, word in enumerate(words, start=1):
        total += word * pow(k1, n_words + 2 - i, P61)
    return total % P61


def ref_gf64_multiply(a: int, b: int) -> int:
    """a * b in GF(2)[x] / (x^64 + x^4 + x^3 + x + 1): carry-less product, then long division."""
    product = 0
    for bit in range(64):
        if (b >> bit) & 1:
            product ^= a << bit
    for degree in range(127, 63, -1):
        if (product >> degree) & 1:
            product ^= GF64_MODULUS << (degree - 64)
    return product


def ref_hash_keys(key: bytes) -> tuple[int, int]:
    """(k1, k2): bytes 0..7 and 8..15, big-endian, reduced mod p."""
    return int.from_bytes(key[0:8], "big") % P61, int.from_bytes(key[8:16], "big") % P61


def ref_pad(key: bytes, seq: int, direction: int) -> int:
    """Pool word 2 * seq + direction, 8 bytes big-endian, after the 16 hash-key bytes."""
    start = HASH_KEY_BYTES + PAD_BYTES * (2 * seq + direction)
    assert start + PAD_BYTES <= len(key), "test key too short for this seq"
    return int.from_bytes(key[start : start + PAD_BYTES], "big")


def ref_tag(key: bytes, message: bytes, seq: int, direction: int) -> bytes:
    """The documented tag: (k2 * h1 in GF(2^64)) XOR pad, 8 bytes big-endian."""
    k1, k2 = ref_hash_keys(key)
    mixed = ref_gf64_multiply(k2, ref_poly_hash(message, k1))
    return (mixed ^ ref_pad(key, seq, direction)).to_bytes(8, "big")


def mutant_same_hash_key(key: bytes, message: bytes, seq: int, direction: int) -> bytes:
    """The tag if the code used the same bytes for both hash keys (k2 = k1)."""
    k1, _ = ref_hash_keys(key)
    mixed = ref_gf64_multiply(k1, ref_poly_hash(message, k1))
    return (mixed ^ ref_pad(key, seq, direction)).to_bytes(8, "big")


def mutant_no_gf64_mixing(key: bytes, message: bytes, seq: int, direction: int) -> bytes:
    """The tag if the code skipped the GF(2^64) step (tag = h1 XOR pad)."""
    k1, _ = ref_hash_keys(key)
    return (ref_poly_hash(message, k1) ^ ref_pad(key, seq, direction)).to_bytes(8, "big")


def fixed_key(label: bytes, pad_words: int) -> bytes:
    """A reproducible pre-shared key: 16 hash-key bytes and `pad_words` pad words."""
    return hashlib.shake_256(label).digest(HASH_KEY_BYTES + PAD_BYTES * pad_words)


# k1 bytes all 0xFF (2^64 - 1 = 7 mod p) and k2 bytes above p: the reduction mod p matters
KEY_RANDOM = fixed_key(b"satqkd wiring test key A", 4096)
KEY_HIGH = b"\xff" * 8 + (P61 + 12345).to_bytes(8, "big") + fixed_key(b"pads B", 4096)[16:]
MESSAGE_1031 = hashlib.shake_256(b"a 1031-byte message").digest(1031)

CASES: list[tuple[str, bytes, bytes, int, int]] = [
    ("empty-up", KEY_RANDOM, b"", 0, UP),
    ("empty-down", KEY_RANDOM, b"", 0, DOWN),
    ("7-bytes-up", KEY_RANDOM, b"7 bytes", 3, UP),
    ("8-bytes-down", KEY_RANDOM, b"8 bytes!", 3, DOWN),
    ("14-bytes-down", KEY_RANDOM, b"fourteen bytes", 17, DOWN),
    ("trailing-zero-up", KEY_RANDOM, b"\x01\x00", 1, UP),  # same padded word as b"\x01"
    ("1031-bytes-up", KEY_RANDOM, MESSAGE_1031, 2047, UP),
    ("1031-bytes-down", KEY_RANDOM, MESSAGE_1031, 2047, DOWN),
    ("high-key-7-bytes-up", KEY_HIGH, b"\x00" * 6 + b"\x01", 0, UP),
    ("high-key-1031-bytes-down", KEY_HIGH, MESSAGE_1031, 1000, DOWN),
]
CASE_IDS = [case[0] for case in CASES]

# Computed once with ref_tag above and pasted: a change on either side fails these.
KNOWN_ANSWERS: list[tuple[bytes, bytes, int, int, str]] = [
    (KEY_RANDOM, b"", 0, UP, "b1d198196b6544df"),
    (KEY_RANDOM, b"7 bytes", 3, UP, "98094418cceb9a59"),
    (KEY_RANDOM, MESSAGE_1031, 2047, DOWN, "27eb4a1e3d6f4b6a"),
    (KEY_HIGH, MESSAGE_1031, 1000, DOWN, "36563bd37d326d60"),
]
KNOWN_ANSWER_IDS = [
    "empty-seq0-up",
    "7-bytes-seq3-up",
    "1031-bytes-seq2047-down",
    "high-key-seq1000-down",
]


def test_the_reference_arithmetic_is_right() -> None:
    """The reference itself, on values checkable by hand, so the known answers rest on it."""
    # x^63 * x = x^64 = x^4 + x^3 + x + 1
    assert ref_gf64_multiply(1 << 63, 2) == 0x1B
    assert ref_gf64_multiply(0xDEADBEEF, 1) == 0xDEADBEEF
    assert ref_gf64_multiply(3, 3) == 5  # (x + 1)^2 = x^2 + 1 in characteristic 2
    # one word w and the length: w k^2 + len k
    assert ref_poly_hash(b"\x01", 2) == (1 << 48) * 4 + 8 * 2
    assert ref_poly_hash(b"", 5) == 0
    assert ref_hash_keys(KEY_HIGH) == (7, 12345)


@pytest.mark.parametrize(("name", "key", "message", "seq", "direction"), CASES, ids=CASE_IDS)
def test_tag_matches_the_documented_construction(
    name: str, key: bytes, message: bytes, seq: int, direction: int
) -> None:
    """Pins the whole documented tag: key layout (k1, k2, pad pool), 7-byte words and length
    word of h1, the GF(2^64) mixing with k2 and the pad word 2 * seq + direction. The other
    direction's authenticator accepts the tag; one of the same direction (which verifies with
    the opposite pad word) does not."""
    expected = ref_tag(key, message, seq, direction)
    tag = WegmanCarterAuthenticator(key, direction).tag(message, seq)
    assert tag == expected, name
    WegmanCarterAuthenticator(key, 1 - direction).verify(message, seq, tag)
    with pytest.raises(AuthenticationError):
        WegmanCarterAuthenticator(key, direction).verify(message, seq, tag)


@pytest.mark.parametrize(
    ("key", "message", "seq", "direction", "tag_hex"), KNOWN_ANSWERS, ids=KNOWN_ANSWER_IDS
)
def test_known_answer_tags(
    key: bytes, message: bytes, seq: int, direction: int, tag_hex: str
) -> None:
    """Hard-coded tags: catch a change to the code and to the reference implementation alike."""
    assert ref_tag(key, message, seq, direction).hex() == tag_hex
    assert WegmanCarterAuthenticator(key, direction).tag(message, seq).hex() == tag_hex


@pytest.mark.parametrize(
    "mutant", [mutant_same_hash_key, mutant_no_gf64_mixing], ids=["k2=k1", "no-gf64-mixing"]
)
def test_the_named_mutations_change_every_tag(
    mutant: Callable[[bytes, bytes, int, int], bytes],
) -> None:
    """The two mutations of the issue give a different tag in every case above (a non-empty
    message: the empty one hashes to 0 whatever the keys), so a code mutated that way fails
    `test_tag_matches_the_documented_construction` and `test_known_answer_tags`."""
    for name, key, message, seq, direction in CASES:
        real = WegmanCarterAuthenticator(key, direction).tag(message, seq)
        if message:
            assert mutant(key, message, seq, direction) != real, name
    for key, message, seq, direction, tag_hex in KNOWN_ANSWERS:
        if message:
            assert mutant(key, message, seq, direction).hex() != tag_hex


class RecordingBus:
    """A stand-in for the message bus: records what is published, delivers nothing."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, int]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.published.append((topic, payload, qos))


def check_envelope_tag(key: bytes, data: bytes, direction: int) -> int:
    """Recompute the tag of a published envelope from the reference; return its seq. The tag
    covers everything before the tag-length byte (8) and the 8 tag bytes."""
    envelope = decode_envelope(data)
    assert data[-9] == 8 and envelope.tag == data[-8:]
    covered = data[:-9]
    assert covered == authenticated_bytes(data)
    assert envelope.tag == ref_tag(key, covered, envelope.seq, direction), envelope.spec.name
    return envelope.seq


@pytest.mark.parametrize("direction", [UP, DOWN], ids=["ground-sends-up", "payload-sends-down"])
async def test_the_channel_tags_each_envelope_with_the_pad_word_of_its_seq(
    tmp_path: Path, direction: int
) -> None:
    """QkdChannel.send tags `authenticated_bytes` of the envelope with the seq it carries and
    pad word 2 * seq + direction: seq 0, 1, 2, then 256 after a restart (the next reserved
    block). The receiving end's channel accepts each message."""
    key = KEY_RANDOM
    topics = (rig.UP, rig.DOWN)  # the topic each direction sends on
    nodes = (f"ogs-{rig.STATION}", "payload")
    send_topic, receive_topic = topics[direction], topics[1 - direction]
    store = KeyStore(tmp_path / "store")
    install_preshared_key(store, key)
    bus = RecordingBus()

    def channel(send_direction: int, state: KeyStore | None) -> QkdChannel:
        fake_bus: Any = bus  # NodeRuntime publishes through bus.publish only here
        runtime = NodeRuntime(fake_bus, rig.MISSION, nodes[send_direction], SimClock(0.0))
        topic_out, topic_in = topics[send_direction], topics[1 - send_direction]
        authenticator = WegmanCarterAuthenticator(key, send_direction)
        return QkdChannel(runtime, authenticator, topic_out, topic_in, state, pool_low_messages=0)

    sender = channel(direction, store)
    await sender.send("VERIFY_RESULT", plan_id=7, ok=True)
    await sender.send("ABORT", plan_id=7, reason="x" * 40)
    await sender.send("EC_DONE", plan_id=7, leak_ec_bits=123456, round_trips=9)
    restarted = channel(direction, store)
    await restarted.send("ABORT", plan_id=7, reason="after a restart")

    sent = [data for topic, data, _ in bus.published if topic == send_topic]
    assert len(sent) == 4 and not any(topic == receive_topic for topic, _, _ in bus.published)
    assert [check_envelope_tag(key, data, direction) for data in sent] == [0, 1, 2, 256]
    receiver = channel(1 - direction, None)
    for data in sent:
        assert await receiver.accept(data) is not None
    assert receiver.runtime.counters.qkd_rejected == 0


# ---- a residual error after error correction ------------------------------------------------

Reconcile = Callable[..., Awaitable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


def with_one_flipped_bit(reconcile: Reconcile) -> Reconcile:
    """Wrap a station reconciliation so its corrected key differs from the payload's in one
    bit: what a residual error error correction did not catch looks like."""

    async def wrapped(
        self: OgsSession, noisy: np.ndarray, qber: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        corrected, kept, framed = await reconcile(self, noisy, qber)
        corrected = corrected.copy()
        corrected[corrected.size // 2] ^= 1
        return corrected, kept, framed

    return wrapped


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` passes (False)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.01)
    return condition()


@pytest.mark.parametrize("method", ["ldpc", "cascade"])
async def test_a_residual_error_aborts_the_pass_with_no_key_at_either_end(
    ldpc_pass: Callable[..., Awaitable[rig.Pass]],
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    """Pins verification between error correction and privacy amplification: the keys differ
    in one bit, so the station's verification fails, it tells the payload (VERIFY_RESULT not
    ok), no PA seed is sent, and neither key store holds a key. Every message of the exchange
    carries the tag of the documented construction with the daemons' pre-shared key, pad
    word 2 * seq + 0 up (station) and 2 * seq + 1 down (payload)."""
    name = f"_reconcile_{method}"
    monkeypatch.setattr(OgsSession, name, with_one_flipped_bit(getattr(OgsSession, name)))
    block = rig.make_block(900_000, qber_x=0.011, qber_z=0.011, seed=21)
    p = await ldpc_pass(block, params=jinan1_params(method))
    await p.sift(block)
    await p.ogs.post_process()
    # the payload ends at VERIFY_RESULT; a payload that went on anyway is caught below by
    # its key store, not by a timeout here
    payload_finished = await wait_until(lambda: p.payload_session.finished, 5.0)

    # the security property first: no key at either end
    assert p.ogs_store.key_ids() == [], "the station kept a key that failed verification"
    assert p.payload_store.key_ids() == [], "the payload kept a key that failed verification"
    assert p.payload.links[rig.STATION].keystore.key_ids() == []
    result, outcome = p.ogs.result, p.payload_session.outcome
    assert result.ec_method == method
    assert result.abort_reason is not None and "verification" in result.abort_reason
    assert result.key_id is None and result.pa_output_bits == 0
    assert payload_finished
    assert outcome.abort_reason is not None and "verification" in outcome.abort_reason
    assert not outcome.confirmed and outcome.key_id is None
    up, down = p.bus.names(rig.UP), p.bus.names(rig.DOWN)
    assert "VERIFY" in down and up.count("VERIFY_RESULT") == 1
    assert "PA_SEED" not in down and "KEY_STORED" not in up and "KEY_CONFIRMED" not in down
    verify_result = [d for t, d in p.bus.published if t == rig.UP][up.index("VERIFY_RESULT")]
    assert decode_envelope(verify_result).fields["ok"] is False

    if method == "ldpc":  # the daemons' tags on the wire (once: the Cascade pass is bigger)
        key = preshared_auth_key(5, 4096)  # the rig's pre-shared key
        for direction, topic in ((UP, rig.UP), (DOWN, rig.DOWN)):
            wire = [d for t, d in p.bus.published if t == topic]
            seqs = [check_envelope_tag(key, data, direction) for data in wire]
            assert seqs == list(range(len(wire)))
