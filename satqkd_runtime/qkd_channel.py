"""The authenticated classical channel between one payload and one station.

Every QKD protocol message is tagged with a Wegman-Carter one-time-pad word
(`satqkd_core.authentication`), carries a sequence number per direction, and is accepted only
once. With a key store (`state_store`) the channel survives crashes; its state is three
owner-only secrets of the store, each written durably (the file and its directory fsynced):

- `preshared-auth`: the pre-shared key (hash keys and the initial pad pool), installed together
  with the initial state by `install_preshared_key` (`satqkd keys bootstrap`) at both ends.
- `auth-sequence` (JSON): the end of the reserved block of send sequence numbers, the receive
  watermark (highest seq accepted), the failed tag checks (the length of each message) and
  whether AUTH_POOL_LOW was reported. A store holding the key but not this state is refused
  (KeyStoreError): starting again at seq 0 would reuse pad words.
- `auth-pool-extensions` (JSON): the pool refills in the order applied (key id and bytes).

The rules:

- Send. Sequence numbers are reserved in blocks of `SEQ_RESERVATION`, on disk before the first
  of them is tagged; a restart resumes at the end of the reserved block. A crash at any instant
  never reuses a pad word and skips at most one block of them.
- Receive. A message is accepted if its tag verifies and its seq is above the watermark; the
  new watermark is on disk before `accept` returns the message, so after a crash a replay is
  refused (a crash between that write and the processing loses the one message: it is never
  processed twice). The write blocks the event loop for one fsync per accepted message.
- Failure cap. A failed tag check is a forgery attempt that succeeds with probability at most
  9 (L + 2) / 2^64 (`forgery_probability`; L = 7-byte words of the message). Failures are
  counted on disk before they are reported; at `failure_cap` the channel refuses every message
  it receives (each counted as rejected; AUTH_FAILURE_LIMIT when the cap is reached and once
  after each restart) and every send (AuthenticationError), until the key is replaced at both
  ends (`satqkd keys bootstrap --force`). `forgery_probability_spent()` sums the bounds of the
  failures, for the epsilon budget. A message whose seq lies beyond the pool is rejected without
  a tag comparison and not counted.
- Pool low. AUTH_POOL_LOW is emitted once when the messages this end can still send drop below
  `pool_low_messages` (default 2048: a whole pass sends about 1,190 each way, a crash skips up to
  256, so the warning leaves a full pass after a worst-case crash, time to refill or re-key);
  a refill that lifts them back to the threshold re-arms it for the next crossing.
- Pass reserve. `pass_refusal()` names why a pass may not start (LOAD_PASS_PLAN refused at both
  ends, with the pool figure) while `pool_messages_left` (the fewer of either direction's
  messages left: this end's send seq and the peer's receive watermark) is below
  `pass_reserve_messages` (default 2048, the same worst case: one whole pass and one crash), so
  a pass never runs the pool dry half-way, even one that yields no key (it leaves what it did
  not spend; AUTH_POOL_LOW marks the crossing, and the next plan is refused with the figure).
- Refill. `extend_pool(key_id, key_bytes)` appends pad words from a QKD key both ends
  confirmed (those bits must never be used as key as well); the extension is on disk before
  the authenticator uses it, a key id is applied once, and a restarted channel applies every
  extension in order after the pre-shared key (the authenticator given to the constructor must
  hold the pre-shared key only), so two ends that applied the same extensions in the same order
  hold the same pool.

Without a store the same rules hold in memory only (tests, tools). Events and errors name key
ids, sequence numbers and counts, never key material.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from satqkd_core import dictionary as dct
from satqkd_core.authentication import DIRECTION_UP, WegmanCarterAuthenticator
from satqkd_core.bits import as_count
from satqkd_core.codec import (
    CodecError,
    Envelope,
    authenticated_bytes,
    decode_envelope,
    encode_envelope,
)
from satqkd_core.errors import AuthenticationError, InputError
from satqkd_core.verification import WORD_BYTES
from satqkd_runtime.keystore import KeyStore, KeyStoreError
from satqkd_runtime.node import NodeRuntime

__all__ = [
    "DEFAULT_FAILURE_CAP",
    "DEFAULT_PASS_RESERVE_MESSAGES",
    "DEFAULT_POOL_LOW_MESSAGES",
    "EXTENSIONS_SECRET",
    "PRESHARED_KEY_SECRET",
    "STATE_SECRET",
    "ChannelCounts",
    "QkdChannel",
    "forgery_probability",
    "install_preshared_key",
]

PRESHARED_KEY_SECRET = "preshared-auth"
STATE_SECRET = "auth-sequence"
EXTENSIONS_SECRET = "auth-pool-extensions"
DEFAULT_FAILURE_CAP = 1000  # 1000 attempts on 1 kB messages: forgery probability < 1e-13
DEFAULT_POOL_LOW_MESSAGES = 2048  # > one pass (~1,190 messages each way) + one crash (256)
# a pass may start only with this many messages left in both directions: a whole pass sends
# about 1,190 each way (docs/security.md) and a crash skips up to 256
DEFAULT_PASS_RESERVE_MESSAGES = 2048
_PAD_WORD_BYTES = 8
_FIX = "run 'satqkd keys bootstrap --force' to install a new key at both ends"


def forgery_probability(message_bytes: int) -> float:
    """Get: the bound 9 (L + 2) / 2^64 on the success of one forgery attempt with a message of
    `message_bytes` authenticated bytes, L = its 7-byte words."""
    words = -(-as_count(message_bytes, "message_bytes") // WORD_BYTES)
    return 9 * (words + 2) / 2**64


@dataclass
class _ChannelState:
    """What `auth-sequence` holds (`next_send_seq` is the end of the reserved block)."""

    next_send_seq: int = 0
    highest_received_seq: int = -1
    failed_message_bytes: list[int] = field(default_factory=list)
    pool_low_reported: bool = False

    def encode(self) -> bytes:
        return json.dumps(
            {
                "next_send_seq": self.next_send_seq,
                "highest_received_seq": self.highest_received_seq,
                "auth_failures": len(self.failed_message_bytes),
                "failed_message_bytes": self.failed_message_bytes,
                "pool_low_reported": self.pool_low_reported,
            }
        ).encode()


def _load_state(store: KeyStore) -> _ChannelState:
    if not store.has_secret(STATE_SECRET):
        if store.has_secret(PRESHARED_KEY_SECRET):
            raise KeyStoreError(
                f"{store.directory}: pre-shared authentication key without its sequence state "
                f"({STATE_SECRET}), its pad words may be used already; {_FIX}"
            )
        return _ChannelState()
    try:
        data = json.loads(store.load_secret(STATE_SECRET))
        failed = [int(n) for n in data.get("failed_message_bytes", [])]
        state = _ChannelState(
            int(data["next_send_seq"]),
            int(data["highest_received_seq"]),
            failed,
            bool(data.get("pool_low_reported", False)),
        )
        consistent = (
            state.next_send_seq >= 0
            and state.highest_received_seq >= -1
            and int(data.get("auth_failures", len(failed))) == len(failed)
            and all(n >= 0 for n in failed)
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        consistent = False
    if not consistent:
        raise KeyStoreError(f"{store.directory}: {STATE_SECRET} is corrupt; {_FIX}")
    return state


def _load_extensions(store: KeyStore) -> list[tuple[str, bytes]]:
    if not store.has_secret(EXTENSIONS_SECRET):
        return []
    try:
        data = json.loads(store.load_secret(EXTENSIONS_SECRET))
        return [(str(e["key_id"]), bytes.fromhex(e["key"])) for e in data["extensions"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyStoreError(f"{store.directory}: {EXTENSIONS_SECRET} is corrupt; {_FIX}") from None


def _encode_extensions(extensions: list[tuple[str, bytes]]) -> bytes:
    listing = [{"key_id": key_id, "key": data.hex()} for key_id, data in extensions]
    return json.dumps({"extensions": listing}).encode()


def install_preshared_key(store: KeyStore, key: bytes) -> None:
    """Control: install a pre-shared authentication key in `store` with the initial channel
    state (send and receive from seq 0, no failures, no pool extension). Run it at both ends
    with the same key. InputError if the key does not have the layout of a pre-shared key.

    The old state is removed first and the new state written last, so a crash part-way leaves a
    store the channel refuses (run it again), never an old pool with a fresh sequence."""
    WegmanCarterAuthenticator(key, DIRECTION_UP)  # checks the layout (InputError)
    store.delete_secret(STATE_SECRET)
    store.delete_secret(EXTENSIONS_SECRET)
    store.store_secret(PRESHARED_KEY_SECRET, bytes(key))
    store.store_secret(STATE_SECRET, _ChannelState().encode())


class QkdChannel:
    """The authenticated classical channel between one payload and one station.

    Sequence numbers are per direction and only go up: the pad word for (direction, seq) is
    used once, and a received message is accepted only if its seq is above every seq accepted
    before, so a re-delivery or a replay is dropped and counted. The module docstring gives
    the crash-safety rules, the failure cap, the pool-low warning and the refill.
    """

    STATE_NAME = STATE_SECRET
    SEQ_RESERVATION = 256

    def __init__(
        self,
        runtime: NodeRuntime,
        authenticator: WegmanCarterAuthenticator,
        send_topic: str,
        receive_topic: str,
        state_store: KeyStore | None = None,
        *,
        failure_cap: int = DEFAULT_FAILURE_CAP,
        pool_low_messages: int = DEFAULT_POOL_LOW_MESSAGES,
        pass_reserve_messages: int = DEFAULT_PASS_RESERVE_MESSAGES,
    ) -> None:
        self.failure_cap = as_count(failure_cap, "failure_cap", minimum=1)
        self.pool_low_messages = as_count(pool_low_messages, "pool_low_messages")
        self.pass_reserve_messages = as_count(pass_reserve_messages, "pass_reserve_messages")
        self.passes_refused = 0  # LOAD_PASS_PLANs refused for want of pad words
        self.runtime = runtime
        self.authenticator = authenticator
        self.send_topic = send_topic
        self.receive_topic = receive_topic
        self._store = state_store
        self._state = _ChannelState() if state_store is None else _load_state(state_store)
        self._next_seq = self._state.next_send_seq
        self._limit_reported = False
        self._extensions: dict[str, bytes] = {}
        self._extension_order: list[tuple[str, bytes]] = []
        if state_store is not None:
            for key_id, data in _load_extensions(state_store):
                self._apply_extension(key_id, data)
        self.sent_messages = 0
        self.sent_bytes = 0
        self.received_bytes = 0

    @property
    def next_send_seq(self) -> int:
        """Get: the sequence number the next message will carry."""
        return self._next_seq

    @property
    def pad_words_remaining(self) -> int:
        """Get: messages this end can still send before the pool (pre-shared and refills)
        runs out."""
        return max(self.authenticator.max_sequence() - self._next_seq + 1, 0)

    @property
    def pool_messages_left(self) -> int:
        """Get: messages the pool can still authenticate in the direction that has fewer left
        (this end's sends, or the peer's beyond the highest seq accepted from it): what a pass
        may spend, both directions being refilled alike."""
        used = max(self._next_seq, self._state.highest_received_seq + 1)
        return max(self.authenticator.max_sequence() - used + 1, 0)

    def pass_refusal(self) -> str | None:
        """Get: why a pass may not start (the pool holds fewer messages than a pass may need;
        counted in `passes_refused`), None if it may."""
        left = self.pool_messages_left
        if left >= self.pass_reserve_messages:
            return None
        self.passes_refused += 1
        return (
            f"authentication pool too low for a pass: {left} messages left, a pass may need "
            f"{self.pass_reserve_messages}; refill it from QKD key or replace the key at both "
            "ends (satqkd keys bootstrap --force)"
        )

    @property
    def auth_failures(self) -> int:
        """Get: failed tag checks since the pre-shared key was installed (kept on disk)."""
        return len(self._state.failed_message_bytes)

    @property
    def failure_limit_reached(self) -> bool:
        """Get: whether failed tag checks reached `failure_cap` (the channel refuses all)."""
        return self.auth_failures >= self.failure_cap

    def forgery_probability_spent(self) -> float:
        """Get: the bound on the probability that one of the failed forgery attempts so far
        succeeded: the sum over failed tag checks of 9 (L + 2) / 2^64 (for the epsilon
        budget)."""
        return sum(forgery_probability(n) for n in self._state.failed_message_bytes)

    def pool_extension_ids(self) -> list[str]:
        """Get: ids of the keys that refilled the pool, in the order applied."""
        return [key_id for key_id, _ in self._extension_order]

    def extend_pool(self, key_id: str, key_bytes: bytes) -> bool:
        """Control: append pad words from a key both ends confirmed (a non-empty multiple of
        8 bytes) to the pool, on disk before use; False (nothing done) if `key_id` was applied
        already with the same bytes, InputError if with other bytes."""
        if not isinstance(key_id, str) or not key_id or len(key_id) > 128:
            raise InputError(f"key_id must be a non-empty string of <= 128 characters: {key_id!r}")
        if not isinstance(key_bytes, bytes | bytearray | memoryview):
            raise InputError(f"key_bytes must be bytes, got {type(key_bytes).__name__}")
        data = bytes(key_bytes)
        if not data or len(data) % _PAD_WORD_BYTES:
            raise InputError(
                f"key_bytes must be a non-empty multiple of {_PAD_WORD_BYTES} bytes, "
                f"got {len(data)} bytes"
            )
        previous = self._extensions.get(key_id)
        if previous is not None:
            if not hmac.compare_digest(previous, data):
                raise InputError(f"pool extension {key_id} was already applied with other bytes")
            return False
        if self._store is not None:
            # durable before the authenticator may use a word of it
            extensions = [*self._extension_order, (key_id, data)]
            self._store.store_secret(EXTENSIONS_SECRET, _encode_extensions(extensions))
        self._apply_extension(key_id, data)
        if self._state.pool_low_reported and self.pad_words_remaining >= self.pool_low_messages:
            self._state.pool_low_reported = False  # re-armed: warn at the next crossing
            self._save_state()
        return True

    def _apply_extension(self, key_id: str, data: bytes) -> None:
        if key_id in self._extensions:
            raise KeyStoreError(f"{EXTENSIONS_SECRET} lists key {key_id} twice; {_FIX}")
        self.authenticator.extend_pool(data)
        self._extensions[key_id] = data
        self._extension_order.append((key_id, data))

    def _save_state(self) -> None:
        if self._store is not None:
            self._store.store_secret(self.STATE_NAME, self._state.encode())

    async def send(self, name: str, **fields: Any) -> None:
        """Encode, authenticate and publish one QKD protocol message; AuthenticationError once
        the failure cap is reached or the pool is exhausted."""
        spec = dct.DICTIONARY[name]
        if self.failure_limit_reached:
            raise AuthenticationError(
                f"{self.auth_failures} failed tag checks reached the cap {self.failure_cap}: "
                "the key is spent, replace it at both ends (satqkd keys bootstrap --force)"
            )
        seq = self._next_seq
        if seq >= self._state.next_send_seq:
            # on disk before the pad word is used: a crash must not let it be used twice
            self._state.next_send_seq = seq + self.SEQ_RESERVATION
            try:
                self._save_state()
            except BaseException:
                self._state.next_send_seq = seq  # not reserved: the next send tries again
                raise
        self._next_seq = seq + 1
        unsigned = encode_envelope(spec, seq, fields)
        tag = self.authenticator.tag(authenticated_bytes(unsigned), seq)
        data = encode_envelope(spec, seq, fields, tag=tag)
        self.sent_messages += 1
        self.sent_bytes += len(data)
        await self.runtime.bus.publish(self.send_topic, data, qos=spec.qos)
        await self._check_pool_low()

    async def _check_pool_low(self) -> None:
        remaining = self.pad_words_remaining
        if self._state.pool_low_reported or remaining >= self.pool_low_messages:
            return
        self._state.pool_low_reported = True
        self._save_state()
        await self.runtime.emit_event(
            "AUTH_POOL_LOW",
            f"{remaining} messages left to authenticate (warning below "
            f"{self.pool_low_messages}): refill the pool from QKD key or replace the key",
        )

    async def _report_failure_limit(self) -> None:
        if not self._limit_reported:
            self._limit_reported = True
            await self.runtime.emit_event(
                "AUTH_FAILURE_LIMIT",
                f"{self.auth_failures} failed tag checks reached the cap {self.failure_cap}: "
                "QKD messages refused until the key is replaced at both ends "
                "(satqkd keys bootstrap --force)",
            )

    async def accept(self, payload: bytes) -> Envelope | None:
        """Decode and verify a received message; None (counted, reported) unless it is new and
        authentic. The new receive watermark is on disk before the envelope is returned."""
        counters = self.runtime.counters
        self.received_bytes += len(payload)
        if self.failure_limit_reached:
            counters.qkd_rejected += 1
            await self._report_failure_limit()
            return None
        try:
            envelope = decode_envelope(payload)
        except CodecError as exc:
            counters.qkd_rejected += 1
            await self.runtime.emit_event("QKD_MESSAGE_REJECTED", f"undecodable: {exc}")
            return None
        if envelope.spec.kind != "qkd":
            counters.qkd_rejected += 1
            await self.runtime.emit_event(
                "QKD_MESSAGE_REJECTED", f"{envelope.spec.name} is not a QKD protocol message"
            )
            return None
        message = authenticated_bytes(payload)
        try:
            self.authenticator.verify(message, envelope.seq, envelope.tag)
        except AuthenticationError as exc:
            counters.qkd_rejected += 1
            if envelope.seq <= self.authenticator.max_sequence():
                # a tag was compared: a forgery attempt, on disk before it is reported
                self._state.failed_message_bytes.append(len(message))
                self._save_state()
            await self.runtime.emit_event(
                "AUTH_FAILURE", f"{envelope.spec.name} seq {envelope.seq}: {exc}"
            )
            if self.failure_limit_reached:
                await self._report_failure_limit()
            return None
        if envelope.seq <= self._state.highest_received_seq:
            counters.qkd_duplicates += 1
            await self.runtime.emit_event(
                "DUPLICATE_MESSAGE", f"{envelope.spec.name} seq {envelope.seq} dropped"
            )
            return None
        previous = self._state.highest_received_seq
        self._state.highest_received_seq = envelope.seq
        try:
            self._save_state()  # durable: after a crash, a replay of this message is refused
        except BaseException:
            self._state.highest_received_seq = previous
            raise
        counters.qkd_accepted += 1
        return envelope


@dataclass(frozen=True)
class ChannelCounts:
    """The QKD channel's counters at one instant (for a pass: when its plan was loaded)."""

    sent_bytes: int
    sent_messages: int
    received_bytes: int
    rejected: int

    @classmethod
    def of(cls, channel: QkdChannel) -> ChannelCounts:
        """Get: the channel's counters now."""
        return cls(
            channel.sent_bytes,
            channel.sent_messages,
            channel.received_bytes,
            channel.runtime.counters.qkd_rejected,
        )

    def since(self, channel: QkdChannel) -> ChannelCounts:
        """Get: what the counters grew by since this snapshot (RESET_COUNTERS clamps at 0)."""
        now = ChannelCounts.of(channel)
        return ChannelCounts(
            max(now.sent_bytes - self.sent_bytes, 0),
            max(now.sent_messages - self.sent_messages, 0),
            max(now.received_bytes - self.received_bytes, 0),
            max(now.rejected - self.rejected, 0),
        )
