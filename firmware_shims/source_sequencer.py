"""The payload source sequencer: random words -> (basis, bit, intensity) for any pulse index.

The FPGA sequencer of a decoy-state BB84 source turns one random word per pulse into the
polarisation state and the intensity class of that pulse. Every pass has its own 256-bit
pattern key, drawn from the payload's entropy source when the pass plan is loaded and erased
when the pass ends, so no two passes share a pattern bit. The word of pulse n is half of an
AES-256 block in counter mode:

    block(b) = AES-256_k(b as a 128-bit big-endian integer),   b = n // 2
    word(n)  = bytes 8 * (n % 2) .. 8 * (n % 2) + 7 of block(n // 2), big-endian

so any pulse can be looked up in any order (a 600 s pass at 100 MHz has 6e10 pulses and only
the detected ones are ever asked for) and the payload and the simulator agree on every pulse.
The pattern is therefore computationally secure (AES-256 as a pseudorandom function keyed with
256 fresh bits per pass), not information-theoretic: docs/security.md says what that means.

Word layout (bit 63 is the most significant): bits 32..63 choose the intensity against integer
thresholds, bits 1..31 choose the basis, bit 0 is the key bit. Thresholds are integers, so the
vectorised path and its per-pulse reference agree exactly on every platform.

Recorded passes (the mission's `source.pattern: recorded`) have no key: every pulse's byte is
drawn from the entropy source and recorded as drawn (firmware_shims.recorded_pattern), which
makes the pattern information-theoretic. Record byte layout: bit 0 the key bit, bits 1..3 the
basis (X below 8 * basis_x_probability), bits 4..7 the intensity (signal below 16 * p_signal,
decoy below 16 * (p_signal + p_decoy), else vacuum); so the mode needs intensity probabilities
in multiples of 1/16 and a basis probability in multiples of 1/8 (Micius, Jinan-1: 1/2, 1/4,
1/4 and 1/2), which `record_thresholds` checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from firmware_shims.recorded_pattern import RecordedPattern
from satqkd_core.errors import InputError

__all__ = [
    "PATTERN_KEY_BYTES",
    "PulsePattern",
    "RecordThresholds",
    "SourceSequencer",
    "pattern_words",
    "pattern_words_reference",
    "record_thresholds",
    "record_to_pattern",
    "record_to_pattern_reference",
    "sequence_pulses",
    "sequence_pulses_reference",
]

PATTERN_KEY_BYTES = 32  # AES-256
_INTENSITY_SCALE = 1 << 32
_BASIS_SCALE = 1 << 31
_BASIS_MASK = np.uint64(0x7FFFFFFF)
_MAX_INDEX = (1 << 63) - 1
_RECORD_INTENSITY_LEVELS = 16  # bits 4..7 of a record byte
_RECORD_BASIS_LEVELS = 8  # bits 1..3


@dataclass(frozen=True)
class PulsePattern:
    """Basis (0 = X key, 1 = Z test), bit and intensity label (0 signal, 1 decoy, 2 vacuum)."""

    basis: np.ndarray
    bit: np.ndarray
    intensity: np.ndarray


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != PATTERN_KEY_BYTES:
        raise InputError(f"pattern key must be {PATTERN_KEY_BYTES} bytes")
    return bytes(key)


def pattern_words(key: bytes, pulse_index: np.ndarray) -> np.ndarray:
    """Get the 64-bit word of each pulse (int64 >= 0, validated by the caller)."""
    key = _check_key(key)
    index = np.asarray(pulse_index, dtype=np.int64)
    counters = np.zeros((index.shape[0], 2), dtype=">u8")
    counters[:, 1] = index >> 1
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    blocks = encryptor.update(counters.tobytes()) + encryptor.finalize()
    halves = np.frombuffer(blocks, dtype=">u8").reshape(-1, 2)
    return halves[np.arange(index.shape[0]), index & 1].astype(np.uint64)


def pattern_words_reference(key: bytes, pulse_index: np.ndarray) -> np.ndarray:
    """Get the same words one pulse at a time with Python integers (reference)."""
    key = _check_key(key)
    words = []
    for n in (int(i) for i in pulse_index):
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        block = encryptor.update((n >> 1).to_bytes(16, "big")) + encryptor.finalize()
        half = block[8 * (n & 1) : 8 * (n & 1) + 8]
        words.append(int.from_bytes(half, "big"))
    return np.array(words, dtype=np.uint64)


def sequence_pulses(
    words: np.ndarray, signal_threshold: int, decoy_threshold: int, basis_x_threshold: int
) -> PulsePattern:
    """Get basis, bit and intensity of each pulse from its word."""
    top = words >> np.uint64(32)
    intensity = (top >= np.uint64(signal_threshold)).astype(np.uint8)
    intensity += (top >= np.uint64(decoy_threshold)).astype(np.uint8)
    basis = (((words >> np.uint64(1)) & _BASIS_MASK) >= np.uint64(basis_x_threshold)).astype(
        np.uint8
    )
    bit = (words & np.uint64(1)).astype(np.uint8)
    return PulsePattern(basis=basis, bit=bit, intensity=intensity)


def sequence_pulses_reference(
    words: np.ndarray, signal_threshold: int, decoy_threshold: int, basis_x_threshold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Get (basis, bit, intensity) with Python integers (reference for sequence_pulses)."""
    n = len(words)
    basis = np.zeros(n, dtype=np.uint8)
    bit = np.zeros(n, dtype=np.uint8)
    intensity = np.zeros(n, dtype=np.uint8)
    for i, word in enumerate(int(w) for w in words):
        top = word >> 32
        intensity[i] = 0 if top < signal_threshold else (1 if top < decoy_threshold else 2)
        basis[i] = 0 if ((word >> 1) & 0x7FFFFFFF) < basis_x_threshold else 1
        bit[i] = word & 1
    return basis, bit, intensity


@dataclass(frozen=True)
class RecordThresholds:
    """Integer thresholds of a one-byte record: intensity value (bits 4..7, 0..15) below
    `signal` is signal, below `decoy` decoy, else vacuum; basis value (bits 1..3, 0..7) below
    `basis_x` is X."""

    signal: int
    decoy: int
    basis_x: int


def _levels(probability: float, levels: int) -> int | None:
    """The probability as a whole number of 1/levels, None if it is not one."""
    scaled = float(probability) * levels
    whole = round(scaled)
    return whole if math.isfinite(scaled) and abs(scaled - whole) <= 1e-9 else None


def record_thresholds(
    intensity_probabilities: Sequence[float], basis_x_probability: float
) -> RecordThresholds:
    """Get the record thresholds of the source's probabilities; InputError naming them unless
    the intensity probabilities are multiples of 1/16 and the basis probability of 1/8."""
    probabilities = [float(p) for p in intensity_probabilities]
    levels = [_levels(p, _RECORD_INTENSITY_LEVELS) for p in probabilities]
    basis = _levels(basis_x_probability, _RECORD_BASIS_LEVELS)
    whole = [level for level in levels if level is not None and level >= 0]
    if len(whole) != 3 or sum(whole) != _RECORD_INTENSITY_LEVELS or basis is None:
        raise InputError(
            "the recorded pattern (one byte per pulse) needs intensity probabilities in "
            "multiples of 1/16 and basis_x_probability in multiples of 1/8, got probabilities "
            f"{probabilities} and basis_x_probability {float(basis_x_probability)}"
        )
    return RecordThresholds(signal=whole[0], decoy=whole[0] + whole[1], basis_x=basis)


def _check_record(record: object) -> np.ndarray:
    if isinstance(record, bytes | bytearray | memoryview):
        return np.frombuffer(record, dtype=np.uint8)
    array = np.asarray(record)
    if array.ndim != 1 or (array.size and array.dtype != np.uint8):
        raise InputError(
            f"record must be a 1-D uint8 array, got shape {array.shape} dtype {array.dtype}"
        )
    return array.astype(np.uint8, copy=False)


def record_to_pattern(record: np.ndarray, thresholds: RecordThresholds) -> PulsePattern:
    """Get basis, bit and intensity of each pulse from its record byte (vectorised)."""
    data = _check_record(record)
    top = data >> np.uint8(4)
    intensity = (top >= thresholds.signal).astype(np.uint8)
    intensity += (top >= thresholds.decoy).astype(np.uint8)
    basis = (((data >> np.uint8(1)) & np.uint8(7)) >= thresholds.basis_x).astype(np.uint8)
    bit = (data & np.uint8(1)).astype(np.uint8)
    return PulsePattern(basis=basis, bit=bit, intensity=intensity)


def record_to_pattern_reference(
    record: np.ndarray, thresholds: RecordThresholds
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Get (basis, bit, intensity) one byte at a time with Python integers (reference)."""
    data = [int(b) for b in _check_record(record)]
    basis = np.zeros(len(data), dtype=np.uint8)
    bit = np.zeros(len(data), dtype=np.uint8)
    intensity = np.zeros(len(data), dtype=np.uint8)
    for i, byte in enumerate(data):
        level = byte >> 4
        intensity[i] = 0 if level < thresholds.signal else (1 if level < thresholds.decoy else 2)
        basis[i] = 0 if (byte >> 1) & 7 < thresholds.basis_x else 1
        bit[i] = byte & 1
    return basis, bit, intensity


def _check_index(pulse_index: object) -> np.ndarray:
    index = np.asarray(pulse_index)
    if index.ndim != 1:
        raise InputError(f"pulse_index must be a 1-D array, got shape {index.shape}")
    if index.size and not np.issubdtype(index.dtype, np.integer):
        raise InputError(f"pulse_index must hold integers, got dtype {index.dtype}")
    if index.size and index.dtype == np.uint64 and int(index.max()) > _MAX_INDEX:
        raise InputError("pulse_index must fit in int64")
    index = np.ascontiguousarray(index.astype(np.int64, copy=False))
    if index.size and int(index.min()) < 0:
        raise InputError(f"pulse_index must be >= 0, got minimum {int(index.min())}")
    return index


def _key_bytes(pattern_key: object) -> bytes:
    """A fixed key given as 32 bytes, or (simulation and tests) an integer in [0, 2**64)."""
    if isinstance(pattern_key, bytes | bytearray):
        return _check_key(pattern_key)
    if isinstance(pattern_key, bool) or not isinstance(pattern_key, int | np.integer):
        raise InputError("pattern_key must be 32 bytes, an integer in [0, 2**64) or None")
    if not 0 <= int(pattern_key) < 1 << 64:
        raise InputError(f"pattern_key must be in [0, 2**64), got {pattern_key}")
    return int(pattern_key).to_bytes(PATTERN_KEY_BYTES, "big")


class SourceSequencer:
    """Pulse patterns of the payload's decoy-state BB84 source, one key or record per pass.

    `load_pass(plan_id, key)` holds a pass's key, `load_recorded_pass(plan_id, path)` maps a
    pass's recorded pattern instead, `activate(plan_id)` makes it the pattern the source emits
    (what `pattern` answers), `pattern_of(plan_id, ...)` reads a pass's record,
    `forget(plan_id)` erases its key or its record file. A sequencer built with a fixed
    `pattern_key` (channel simulations and tests outside a daemon) starts with that pattern
    active as plan -1.
    """

    FIXED_PLAN = -1

    def __init__(
        self,
        pattern_key: bytes | int | None,
        intensity_probabilities: tuple[float, float, float],
        basis_x_probability: float,
    ) -> None:
        probabilities = tuple(float(p) for p in intensity_probabilities)
        if len(probabilities) != 3:
            raise InputError(
                "intensity_probabilities must have 3 entries (signal, decoy, vacuum), "
                f"got {len(probabilities)}"
            )
        if any(not math.isfinite(p) or p < 0.0 for p in probabilities):
            raise InputError(f"intensity_probabilities must be >= 0, got {probabilities}")
        if abs(sum(probabilities) - 1.0) > 1e-9:
            raise InputError(
                f"intensity_probabilities must sum to 1, got sum {sum(probabilities)!r}"
            )
        basis_x_probability = float(basis_x_probability)
        if not 0.0 <= basis_x_probability <= 1.0:
            raise InputError(f"basis_x_probability must be in [0, 1], got {basis_x_probability}")
        self.intensity_probabilities = probabilities
        self.basis_x_probability = basis_x_probability
        # Integer thresholds: resolution 2^-32 (intensity) and 2^-31 (basis).
        self.signal_threshold = min(round(probabilities[0] * _INTENSITY_SCALE), _INTENSITY_SCALE)
        self.decoy_threshold = min(
            round((probabilities[0] + probabilities[1]) * _INTENSITY_SCALE), _INTENSITY_SCALE
        )
        self.basis_x_threshold = min(round(basis_x_probability * _BASIS_SCALE), _BASIS_SCALE)
        self._keys: dict[int, bytearray] = {}
        self._records: dict[int, RecordedPattern] = {}
        self._record_thresholds: RecordThresholds | None = None
        self._active: int | None = None
        if pattern_key is not None:
            self.load_pass(self.FIXED_PLAN, _key_bytes(pattern_key))
            self.activate(self.FIXED_PLAN)

    def load_pass(self, plan_id: int, key: bytes) -> None:
        """Control: hold the pattern key of a pass (32 bytes from the entropy source)."""
        if self.has_pass(plan_id):
            raise InputError(f"plan {plan_id} already has a pattern key or record")
        self._keys[int(plan_id)] = bytearray(_check_key(key))

    def check_recorded_mode(self) -> RecordThresholds:
        """Get the record thresholds of this source's probabilities; InputError naming them
        if they cannot be drawn one byte per pulse (called when a daemon is set up)."""
        if self._record_thresholds is None:
            self._record_thresholds = record_thresholds(
                self.intensity_probabilities, self.basis_x_probability
            )
        return self._record_thresholds

    def load_recorded_pass(self, plan_id: int, path: Path) -> None:
        """Control: map a pass's record file (one entropy byte per pulse, its size the pass's
        pulse count) read-only as that pass's pattern; `forget` deletes the file."""
        self.check_recorded_mode()
        if self.has_pass(plan_id):
            raise InputError(f"plan {plan_id} already has a pattern key or record")
        self._records[int(plan_id)] = RecordedPattern(path)

    def activate(self, plan_id: int) -> None:
        """Control: the source emits this pass's pattern from now on."""
        if not self.has_pass(plan_id):
            raise InputError(f"no pattern key or record loaded for plan {plan_id}")
        self._active = int(plan_id)

    def forget(self, plan_id: int) -> None:
        """Control: overwrite and drop a pass's key, or close and delete its record file
        (overwritten first only if small: firmware_shims.recorded_pattern); its pattern can no
        longer be read."""
        key = self._keys.pop(int(plan_id), None)
        if key is not None:
            key[:] = bytes(len(key))
        record = self._records.pop(int(plan_id), None)
        if record is not None:
            record.erase()
        if self._active == int(plan_id):
            self._active = None

    @property
    def active_plan(self) -> int | None:
        """Get: the plan whose pattern the source emits, None when no pass is active."""
        return self._active

    def has_pass(self, plan_id: int) -> bool:
        """Get: whether a pass's key or record is held."""
        return int(plan_id) in self._keys or int(plan_id) in self._records

    def pattern(self, pulse_index: np.ndarray) -> PulsePattern:
        """Get the pattern the source is emitting (the active pass) for the given pulses."""
        if self._active is None:
            raise InputError("no pass is active: the sequencer has no pattern to emit")
        return self.pattern_of(self._active, pulse_index)

    def pattern_of(self, plan_id: int, pulse_index: np.ndarray) -> PulsePattern:
        """Get a pass's pattern of the given pulses (int64 >= 0, any order, any batching)."""
        record = self._records.get(int(plan_id))
        if record is not None:
            data = record.read(_check_index(pulse_index))
            return record_to_pattern(data, self.check_recorded_mode())
        key = self._keys.get(int(plan_id))
        if key is None:
            raise InputError(
                f"no pattern key or record for plan {plan_id} (never loaded, or forgotten)"
            )
        index = _check_index(pulse_index)
        words = pattern_words(bytes(key), index)
        return sequence_pulses(
            words, self.signal_threshold, self.decoy_threshold, self.basis_x_threshold
        )
