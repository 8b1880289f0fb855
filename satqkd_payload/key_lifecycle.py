"""The payload's keys and pad pools over their life: one pattern key (or recorded pattern) per
pass, keys the station never confirmed, and refilling a link's authentication pool from new key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from drivers.interfaces import EntropySource
from satqkd_payload.relay import discard_moved_key
from satqkd_payload.session import PayloadPassOutcome
from satqkd_runtime.keystore import KeyStore, KeyStoreError, erase_file
from satqkd_runtime.qkd_channel import QkdChannel

log = logging.getLogger("satqkd.payload")

PATTERN_KEY_BYTES = 32  # a pass's pattern key: AES-256 (the sequencer's counter mode)
PATTERN_DIR = "patterns"  # under the key root: recorded patterns, one file per loaded pass
RECORD_CHUNK_BYTES = 16 << 20  # bytes per entropy read while a pattern is recorded
# a record must leave this much free on its disk (keys, key store metadata, logs)
RECORD_HEADROOM_BYTES = 64 << 20
_OVERWRITE_BELOW_BYTES = 64 << 20  # as the sequencer's erase (firmware_shims.recorded_pattern)


class PatternSequencer(Protocol):
    """The payload computer's pulse sequencer (firmware_shims.source_sequencer on the bench and
    in simulation): one pattern key or recorded pattern per pass, the active pass emitted,
    records read by plan."""

    def load_pass(self, plan_id: int, key: bytes) -> None: ...

    def load_recorded_pass(self, plan_id: int, path: Path) -> None: ...

    def check_recorded_mode(self) -> Any: ...

    def activate(self, plan_id: int) -> None: ...

    def forget(self, plan_id: int) -> None: ...

    def has_pass(self, plan_id: int) -> bool: ...

    def pattern_of(self, plan_id: int, pulse_index: np.ndarray) -> Any: ...


# The pool is kept at REFILL_TARGET_MESSAGES per direction while keys allow: a new key refills
# what the pool lacks of the target (what this pass and any keyless pass before it spent) plus
# REFILL_MARGIN_MESSAGES (the pass's messages after PA_SEED: PA_SEED, KEY_STORED, KEY_CONFIRMED,
# with room to spare), in whole messages (a pad word each way). The pool comes before the key:
# a dry pool ends every later pass on that link until a new pre-shared key is installed at both
# ends, so a key refills up to all its bits but one message (the key stored keeps >= 1 bit).
# A pass whose key is shorter than its pad words (128 bits per message each way) cannot pay
# for itself: it slows the pool's fall, and the pool's figure says so (docs/security.md).
REFILL_TARGET_MESSAGES = 4096
REFILL_MARGIN_MESSAGES = 8
_BITS_PER_MESSAGE = 128  # one 64-bit pad word for each direction


def auth_refill_bits(channel: QkdChannel, output_bits: int) -> int:
    """Get: how many leading bits of a new `output_bits`-bit key refill the channel's pool:
    the messages it lacks of the target plus the margin, whole messages, fewer than
    `output_bits` (0 while the pool holds the target and the margin)."""
    lacking = REFILL_TARGET_MESSAGES + REFILL_MARGIN_MESSAGES - channel.pool_messages_left
    if lacking <= 0:
        return 0
    affordable = (max(output_bits, 0) - 1) // _BITS_PER_MESSAGE
    return max(min(lacking, affordable), 0) * _BITS_PER_MESSAGE


def discard_confirmed_key(store: KeyStore, outcome: PayloadPassOutcome, reason: str) -> bool:
    """Control: delete the key a finished pass stored, because the station (which has none)
    gave the pass up after all; False if there is none left to delete."""
    if not outcome.key_id or outcome.discarded:
        return False
    try:
        store.discard(outcome.key_id)
    except KeyStoreError:  # moved into key management for a relay (satqkd_payload.relay)
        if not discard_moved_key(store.directory, outcome.key_id):
            return False
    outcome.discarded, outcome.confirmed = True, False
    outcome.abort_reason = reason or "aborted by the station after the key"
    return True


class PatternRecordError(Exception):
    """A pass's pattern could not be recorded (no disk space, a write failed): one line."""


def pattern_record_path(key_root: Path, station: str, plan_id: int) -> Path:
    """Get: where a pass's recorded pattern lives (`<key_root>/patterns/`, one file)."""
    return Path(key_root) / PATTERN_DIR / f"{station}-{int(plan_id)}.pattern"


def erase_pattern_record(path: Path) -> None:
    """Control: delete a record file, overwritten with zeros first if under 64 MiB (a larger
    one is only unlinked: docs/security.md); no error if it is gone."""
    erase_file(path, _OVERWRITE_BELOW_BYTES)


def discard_leftover_records(key_root: Path) -> list[Path]:
    """Control: delete the recorded patterns a previous run left (it crashed or was killed
    during a pass): anyone reading the disk would learn a past pass's pattern. Get them."""
    leftovers = sorted((Path(key_root) / PATTERN_DIR).glob("*.pattern"))
    for path in leftovers:
        erase_pattern_record(path)
        log.warning("payload: deleted the pattern record %s left by a previous run", path)
    return leftovers


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def record_pattern(
    entropy: EntropySource,
    path: Path,
    total_pulses: int,
    purpose: str,
    chunk_bytes: int = RECORD_CHUNK_BYTES,
) -> None:
    """Control: draw `total_pulses` bytes from the entropy source in chunks of `chunk_bytes`
    (purpose `purpose`), writing each to `path` as it is drawn, in a worker thread while the
    next is drawn (directory 0700, file 0600, fsync at the end). PatternRecordError if the
    disk lacks the space or a write fails, EntropyFailure if the source fails; on any failure
    the half-written file is deleted."""
    if total_pulses < 1:
        raise PatternRecordError(f"a pass of {total_pulses} pulses has no pattern to record")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        free = shutil.disk_usage(path.parent).free
    except OSError as exc:
        raise PatternRecordError(f"cannot use {path.parent}: {exc.strerror}") from None
    if free < total_pulses + RECORD_HEADROOM_BYTES:
        raise PatternRecordError(
            f"needs {total_pulses} bytes (+{RECORD_HEADROOM_BYTES >> 20} MiB headroom), "
            f"only {free} free on {path.parent}"
        )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise PatternRecordError(f"cannot create {path}: {exc.strerror}") from None
    writing: asyncio.Future[None] | None = None  # chunk k is written while k + 1 is drawn
    try:
        try:
            for start in range(0, total_pulses, chunk_bytes):
                data = await entropy.read(min(chunk_bytes, total_pulses - start), purpose)
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(_write_all, fd, data))
            if writing is not None:
                await writing
            await asyncio.to_thread(os.fsync, fd)
        finally:
            if writing is not None:  # never close the file under a writer
                await asyncio.wait({writing})
                if not writing.cancelled():
                    writing.exception()  # retrieved: the failure that matters is raised
            os.close(fd)
    except OSError as exc:
        erase_pattern_record(path)
        raise PatternRecordError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        erase_pattern_record(path)
        raise
