"""BBM92 sifting and parameter estimation on coincidences, on the stages BB84 uses.

Flow of one window (docs/bbm92.md): the station (low-count side) sends its compressed timing and
bases (`timing_compression`); the payload finds the coincidences (`coincidence`) and returns, for
each one, the index of the station's tag and the payload's basis. Both ends then keep the
coincidences measured in the same basis (`sifting.sift_detections`, the BB84 sifting kernel,
with one intensity label): X-basis bits form the raw key (n bits), Z-basis bits are the test
sample (k bits), all disclosed by one end to estimate the error rate. The block passes when the
test error rate is at most the tolerance agreed beforehand, and the key length then follows from
`bbm92_finite_key` (Tomamichel et al. 2012). Error correction, verification and privacy
amplification are BB84's (`cascade`, `verification`, `privacy_amplification`).

Basis labels are 0 = X (key), 1 = Z (test); for the |Phi+> source both ends' bits agree in both
bases when there are no errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from satqkd_core.coincidence import (
    ClockRelation,
    Coincidences,
    find_clock_relation,
    track_coincidences,
)
from satqkd_core.errors import InputError
from satqkd_core.sifting import count_bit_errors, sift_detections

__all__ = [
    "Bbm92Parameters",
    "Bbm92Sifted",
    "Bbm92TestResult",
    "block_coincidences",
    "check_test_sample",
    "pack_bits",
    "sift_coincidences",
    "unpack_bits",
]


@dataclass(frozen=True)
class Bbm92Parameters:
    """What both ends agree on for a BBM92 pass (the mission profile's protocol and
    time_sync blocks)."""

    qber_tolerance: float
    coincidence_window_ps: float
    max_offset_ps: float
    max_drift: float
    timing_block_s: float = 10.0
    timing_resolution_ps: int = 125
    tagger_lead_s: float = 1.0


@dataclass(frozen=True)
class Bbm92Sifted:
    """One end's sifted coincidences: raw key bits (X) and test bits (Z), in coincidence order."""

    key_bits: np.ndarray
    test_bits: np.ndarray


@dataclass(frozen=True)
class Bbm92TestResult:
    """The test sample's outcome against the agreed tolerance."""

    k_test_bits: int
    test_errors: int
    qber_test: float
    qber_tolerance: float
    passed: bool


def sift_coincidences(
    own_basis: np.ndarray, peer_basis: np.ndarray, own_bits: np.ndarray
) -> Bbm92Sifted:
    """Keep the coincidences where both ends measured in the same basis, split by basis."""
    labels = np.zeros(own_basis.size if isinstance(own_basis, np.ndarray) else 0, dtype=np.uint8)
    sifted = sift_detections(own_basis, peer_basis, labels, own_bits)
    key = sifted.basis == 0
    return Bbm92Sifted(key_bits=sifted.payload_bits[key], test_bits=sifted.payload_bits[~key])


def check_test_sample(
    own_test_bits: np.ndarray, peer_test_bits: np.ndarray, qber_tolerance: float
) -> Bbm92TestResult:
    """Compare the test bits; the block passes when errors / k <= qber_tolerance."""
    if isinstance(qber_tolerance, bool) or not isinstance(qber_tolerance, (int, float)):
        raise InputError(f"qber_tolerance: must be a number, got {qber_tolerance!r}")
    if not 0.0 <= float(qber_tolerance) < 0.5:
        raise InputError(f"qber_tolerance: must lie in [0, 0.5), got {qber_tolerance!r}")
    errors = count_bit_errors(own_test_bits, peer_test_bits)
    k = int(own_test_bits.size)
    qber = errors / k if k else 1.0
    return Bbm92TestResult(k, errors, qber, float(qber_tolerance), k > 0 and qber <= qber_tolerance)


def block_coincidences(
    a_ps: np.ndarray,
    b_ps: np.ndarray,
    previous: ClockRelation | None,
    max_offset_ps: float,
    max_drift: float,
    window_ps: float,
) -> tuple[Coincidences | None, ClockRelation]:
    """The coincidences of one block of a pass (the payload's step, `a` its own tags, `b` the
    station's with the light time removed) and the relation to track the next block from.

    The first block (`previous` None) finds the clock relation by correlation
    (`find_clock_relation`); later blocks go on tracking from where the previous one left
    off. (None, relation) when the first block holds no significant correlation peak."""
    relation = previous
    if relation is None:
        relation = find_clock_relation(a_ps, b_ps, max_offset_ps, max_drift)
        if not relation.found:
            return None, relation
    pairs = track_coincidences(a_ps, b_ps, relation, window_ps)
    return pairs, pairs.continued(relation)


def pack_bits(bits: np.ndarray) -> bytes:
    """Get: 0/1 values packed eight to a byte, first in the high bit (the wire form)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8), bitorder="big").tobytes()


def unpack_bits(data: bytes, count: int) -> np.ndarray:
    """Get: `count` 0/1 values from their packed wire form; InputError if it is too short or
    carries more than padding."""
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if raw.size != (count + 7) // 8:
        raise InputError(f"packed bits: {raw.size} bytes for {count} bits")
    return np.unpackbits(raw, bitorder="big")[:count].astype(np.uint8)
