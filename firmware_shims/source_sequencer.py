"""The payload source sequencer: QRNG words -> (basis, bit, intensity) for any pulse index.

The FPGA sequencer of a decoy-state BB84 source draws one random word per pulse and turns it
into the polarisation state and the intensity class of that pulse. Here the QRNG is emulated by
the counter-based generator of satqkd_core.rng keyed by a secret pattern key, so the pattern of
pulse n is a pure function of (key, n): no pass-long record has to be stored (a 600 s pass at
100 MHz has 6e10 pulses), and the payload and the simulator agree on every pulse.

Word layout (bit 63 is the most significant): bits 32..63 choose the intensity against integer
thresholds, bits 1..31 choose the basis, bit 0 is the key bit. Thresholds are integers, so the
kernel and its reference agree exactly and every platform gives the same pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core import rng
from satqkd_core.errors import InputError

__all__ = ["PulsePattern", "SourceSequencer", "sequence_pulses", "sequence_pulses_reference"]

_INTENSITY_SCALE = 1 << 32
_BASIS_SCALE = 1 << 31
_U32 = np.uint64(32)
_U1 = np.uint64(1)
_BASIS_MASK = np.uint64(0x7FFFFFFF)


@dataclass(frozen=True)
class PulsePattern:
    """Basis (0 = X key, 1 = Z test), bit and intensity label (0 signal, 1 decoy, 2 vacuum)."""

    basis: np.ndarray
    bit: np.ndarray
    intensity: np.ndarray


@numba.njit(cache=True)
def sequence_pulses(
    key: np.uint64,
    signal_threshold: np.uint64,
    decoy_threshold: np.uint64,
    basis_x_threshold: np.uint64,
    pulse_index: np.ndarray,
    basis: np.ndarray,
    bit: np.ndarray,
    intensity: np.ndarray,
) -> None:
    """Set basis, bit and intensity of each pulse from its QRNG word."""
    key2 = rng.second_round_key(key)
    for i in range(pulse_index.shape[0]):
        word = rng.counter_word(key, key2, np.uint64(pulse_index[i]))
        top = word >> _U32
        if top < signal_threshold:
            intensity[i] = 0
        elif top < decoy_threshold:
            intensity[i] = 1
        else:
            intensity[i] = 2
        basis[i] = 0 if ((word >> _U1) & _BASIS_MASK) < basis_x_threshold else 1
        bit[i] = np.uint8(word & _U1)


def sequence_pulses_reference(
    key: int,
    signal_threshold: int,
    decoy_threshold: int,
    basis_x_threshold: int,
    pulse_index: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Get (basis, bit, intensity) with Python integers (reference for sequence_pulses)."""
    n = len(pulse_index)
    basis = np.zeros(n, dtype=np.uint8)
    bit = np.zeros(n, dtype=np.uint8)
    intensity = np.zeros(n, dtype=np.uint8)
    for i, index in enumerate(pulse_index):
        word = rng.counter_word_reference(key, int(index))
        top = word >> 32
        intensity[i] = 0 if top < signal_threshold else (1 if top < decoy_threshold else 2)
        basis[i] = 0 if ((word >> 1) & 0x7FFFFFFF) < basis_x_threshold else 1
        bit[i] = word & 1
    return basis, bit, intensity


class SourceSequencer:
    """Pulse pattern of the payload's decoy-state BB84 source, reproducible from its key."""

    def __init__(
        self,
        pattern_key: int,
        intensity_probabilities: tuple[float, float, float],
        basis_x_probability: float,
    ) -> None:
        if isinstance(pattern_key, bool) or not isinstance(pattern_key, (int, np.integer)):
            raise InputError("pattern_key must be an integer in [0, 2**64)")
        if not 0 <= int(pattern_key) < 1 << 64:
            raise InputError(f"pattern_key must be in [0, 2**64), got {pattern_key}")
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
        self.pattern_key = int(pattern_key)
        self.intensity_probabilities = probabilities
        self.basis_x_probability = basis_x_probability
        # Integer thresholds: resolution 2^-32 (intensity) and 2^-31 (basis).
        self.signal_threshold = min(round(probabilities[0] * _INTENSITY_SCALE), _INTENSITY_SCALE)
        self.decoy_threshold = min(
            round((probabilities[0] + probabilities[1]) * _INTENSITY_SCALE), _INTENSITY_SCALE
        )
        self.basis_x_threshold = min(round(basis_x_probability * _BASIS_SCALE), _BASIS_SCALE)

    def pattern(self, pulse_index: np.ndarray) -> PulsePattern:
        """Get the pattern of the given pulses (int64 indices >= 0, any order, any batching)."""
        index = np.asarray(pulse_index)
        if index.ndim != 1:
            raise InputError(f"pulse_index must be a 1-D array, got shape {index.shape}")
        if index.size and not np.issubdtype(index.dtype, np.integer):
            raise InputError(f"pulse_index must hold integers, got dtype {index.dtype}")
        index = np.ascontiguousarray(index.astype(np.int64, copy=False))
        if index.size and int(index.min()) < 0:
            raise InputError(f"pulse_index must be >= 0, got minimum {int(index.min())}")
        n = index.shape[0]
        basis = np.empty(n, dtype=np.uint8)
        bit = np.empty(n, dtype=np.uint8)
        intensity = np.empty(n, dtype=np.uint8)
        sequence_pulses(
            np.uint64(self.pattern_key),
            np.uint64(self.signal_threshold),
            np.uint64(self.decoy_threshold),
            np.uint64(self.basis_x_threshold),
            index,
            basis,
            bit,
            intensity,
        )
        return PulsePattern(basis=basis, bit=bit, intensity=intensity)
