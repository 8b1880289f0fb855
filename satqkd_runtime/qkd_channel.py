"""The authenticated classical channel between one payload and one station.

Every QKD protocol message is tagged with a Wegman-Carter one-time-pad word, carries a
sequence number per direction, and is accepted only once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from satqkd_core import dictionary as dct
from satqkd_core.authentication import WegmanCarterAuthenticator
from satqkd_core.codec import (
    CodecError,
    Envelope,
    authenticated_bytes,
    decode_envelope,
    encode_envelope,
)
from satqkd_core.errors import AuthenticationError
from satqkd_runtime.keystore import KeyStore, KeyStoreError
from satqkd_runtime.node import NodeRuntime


class QkdChannel:
    """The authenticated classical channel between one payload and one station.

    Sequence numbers are per direction and only go up: the pad word for (direction, seq) is
    used once, and a received message is accepted only if its seq is above every seq accepted
    before, so a re-delivery or a replay is dropped and counted. With a `state_store` the two
    counters survive a daemon restart (otherwise a restart would reuse pad words).

    Send sequence numbers are reserved in durable blocks (one fsync per `SEQ_RESERVATION`
    messages): after a crash the channel resumes at the end of the reserved block, skipping at
    most one block of pad words and never reusing one. The receive watermark is written on
    every message without waiting for the disk.
    """

    STATE_NAME = "auth-sequence"
    SEQ_RESERVATION = 256

    def __init__(
        self,
        runtime: NodeRuntime,
        authenticator: WegmanCarterAuthenticator,
        send_topic: str,
        receive_topic: str,
        state_store: KeyStore | None = None,
    ) -> None:
        self.runtime = runtime
        self.authenticator = authenticator
        self.send_topic = send_topic
        self.receive_topic = receive_topic
        self._store = state_store
        self._next_seq = 0
        self._highest_received = -1
        if state_store is not None:
            try:
                state = json.loads(state_store.load_secret(self.STATE_NAME))
                self._next_seq = int(state["next_send_seq"])
                self._highest_received = int(state["highest_received_seq"])
            except KeyStoreError:
                pass
        self._reserved_until = self._next_seq
        self.sent_messages = 0
        self.sent_bytes = 0
        self.received_bytes = 0

    @property
    def next_send_seq(self) -> int:
        """Get: the sequence number the next message will carry."""
        return self._next_seq

    @property
    def pad_words_remaining(self) -> int:
        """Get: messages this end can still send before the pre-shared pool runs out."""
        return max(self.authenticator.max_sequence() - self._next_seq + 1, 0)

    def _save_state(self, durable: bool) -> None:
        if self._store is not None:
            # a restart resumes sending at the end of the reserved block
            state = {
                "next_send_seq": self._reserved_until,
                "highest_received_seq": self._highest_received,
            }
            self._store.store_secret(self.STATE_NAME, json.dumps(state).encode(), durable)

    async def send(self, name: str, **fields: Any) -> None:
        """Encode, authenticate and publish one QKD protocol message."""
        spec = dct.DICTIONARY[name]
        seq = self._next_seq
        self._next_seq += 1
        if seq >= self._reserved_until:
            # on disk before sending: a crash must not let this pad word be used twice
            self._reserved_until = seq + self.SEQ_RESERVATION
            self._save_state(durable=True)
        unsigned = encode_envelope(spec, seq, fields)
        tag = self.authenticator.tag(authenticated_bytes(unsigned), seq)
        data = encode_envelope(spec, seq, fields, tag=tag)
        self.sent_messages += 1
        self.sent_bytes += len(data)
        await self.runtime.bus.publish(self.send_topic, data, qos=spec.qos)

    async def accept(self, payload: bytes) -> Envelope | None:
        """Decode and verify a received message; None (counted, reported) unless it is new and
        authentic."""
        counters = self.runtime.counters
        self.received_bytes += len(payload)
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
        try:
            self.authenticator.verify(authenticated_bytes(payload), envelope.seq, envelope.tag)
        except AuthenticationError as exc:
            counters.qkd_rejected += 1
            await self.runtime.emit_event(
                "AUTH_FAILURE", f"{envelope.spec.name} seq {envelope.seq}: {exc}"
            )
            return None
        if envelope.seq <= self._highest_received:
            counters.qkd_duplicates += 1
            await self.runtime.emit_event(
                "DUPLICATE_MESSAGE", f"{envelope.spec.name} seq {envelope.seq} dropped"
            )
            return None
        self._highest_received = envelope.seq
        self._save_state(durable=False)
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
