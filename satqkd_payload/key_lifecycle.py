"""The payload's keys and pad pools over their life: one pattern key per pass, keys the station
never confirmed, and refilling a link's authentication pool from new key.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from satqkd_payload.session import PayloadPassOutcome
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import QkdChannel

PATTERN_KEY_BYTES = 32  # a pass's pattern key: AES-256 (the sequencer's counter mode)


class PatternSequencer(Protocol):
    """The payload computer's pulse sequencer (firmware_shims.source_sequencer on the bench and
    in simulation): one pattern key per pass, the active pass emitted, records read by plan."""

    def load_pass(self, plan_id: int, key: bytes) -> None: ...

    def activate(self, plan_id: int) -> None: ...

    def forget(self, plan_id: int) -> None: ...

    def has_pass(self, plan_id: int) -> bool: ...

    def pattern_of(self, plan_id: int, pulse_index: np.ndarray) -> Any: ...


# below this many messages left in the pool, a new key refills it with REFILL_MESSAGES more
REFILL_BELOW_MESSAGES = 4096
REFILL_MESSAGES = 8192
_BITS_PER_MESSAGE = 128  # one 64-bit pad word for each direction


def auth_refill_bits(channel: QkdChannel, output_bits: int) -> int:
    """Get: how many leading bits of a new `output_bits`-bit key refill the channel's pool
    (whole messages, at most half the key; 0 while the pool holds enough)."""
    if channel.pad_words_remaining >= REFILL_BELOW_MESSAGES:
        return 0
    messages = min(REFILL_MESSAGES, (output_bits // 2) // _BITS_PER_MESSAGE)
    return messages * _BITS_PER_MESSAGE


def discard_confirmed_key(store: KeyStore, outcome: PayloadPassOutcome, reason: str) -> bool:
    """Control: delete the key a finished pass stored, because the station (which has none)
    gave the pass up after all; False if there is none left to delete."""
    if not outcome.key_id or outcome.discarded:
        return False
    store.discard(outcome.key_id)
    outcome.discarded, outcome.confirmed = True, False
    outcome.abort_reason = reason or "aborted by the station after the key"
    return True
