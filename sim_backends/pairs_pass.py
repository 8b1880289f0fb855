"""One BBM92 downlink window end to end, in process (the daemons run the same core stages over
the bus: satqkd_payload/bbm92_session.py, satqkd_ogs/bbm92_session.py; this window stays for
the figures only the simulation's truth gives, and for tampering tests): simulated pairs, the
station's compressed timing up, coincidence finding on the payload, sifting, the test-basis
error estimate, Cascade, verification, the Tomamichel et al. (2012) key length and Toeplitz
privacy amplification, every classical message Wegman-Carter authenticated.

Roles: the payload (high-count side) holds the reference key and answers Cascade's parity
queries, like the BB84 payload; the station (low-count side) corrects. Public random values
(Cascade's permutation seed, the verification hash key, the Toeplitz seed) and the pre-shared
authentication key come from the scenario seed here; the daemons draw them from their entropy
sources (docs/bbm92.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from satqkd_core import rng
from satqkd_core.authentication import (
    DIRECTION_DOWN,
    DIRECTION_UP,
    WegmanCarterAuthenticator,
    preshared_key_bytes,
)
from satqkd_core.bbm92 import (
    Bbm92Sifted,
    block_coincidences,
    check_test_sample,
    pack_bits,
    sift_coincidences,
    unpack_bits,
)
from satqkd_core.bbm92_finite_key import Bbm92KeyLength, bbm92_key_length
from satqkd_core.cascade import CascadeCorrector, CascadeResponder
from satqkd_core.coincidence import ClockRelation
from satqkd_core.light_time import SPEED_OF_LIGHT_M_S, LightTimeModel
from satqkd_core.privacy_amplification import toeplitz_hash, toeplitz_seed_bits
from satqkd_core.timing_compression import (
    CompressedTiming,
    decode_timing,
    encode_timing,
    timing_entropy_bits,
)
from satqkd_core.verification import (
    random_verification_hash_key,
    verification_hash_key_words,
    verification_tag,
    verification_tag_bits,
)
from sim_backends.channel import DetectorModel
from sim_backends.pairs import PairSourceModel, PairTags, PassSegment, generate_pair_tags

__all__ = ["Bbm92Window", "Bbm92WindowResult", "run_bbm92_window", "station_timeline"]

_MESSAGES_PER_DIRECTION = 4096  # Cascade's round trips dominate (~100-250 per block)
_CASCADE_PASSES = 16


@dataclass(frozen=True)
class Bbm92Window:
    """What one window needs: the physics, the clocks, the station's prediction, the protocol."""

    source: PairSourceModel
    payload_detectors: DetectorModel
    ogs_detectors: DetectorModel
    segment: PassSegment
    clock_offset_ps: float = 37.3e9  # payload clock minus true time
    clock_drift: float = 0.7e-6
    # the station's predicted range is off by e0 + e1 t + e2 t^2 (m): an ephemeris error
    ephemeris_error_m: tuple[float, float, float] = (20.0, 0.3, 0.05)
    max_offset_ps: float = 1e11  # +-100 ms of clock offset uncertainty
    max_drift: float = 1e-6
    window_ps: float = 1000.0
    timing_resolution_ps: int = 125
    qber_tolerance: float = 0.06
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    intercept_resend_fraction: float = 0.0


@dataclass
class Bbm92WindowResult:
    """What the window gave: the outcome, the figures, and both ends' keys (equal when kept)."""

    outcome: str  # "key", "no key" (the bound gives 0 bits) or "aborted"
    reason: str
    relation: ClockRelation | None = None
    coincidences: int = 0
    true_coincidences_found: int = 0
    true_coincidences_available: int = 0
    accidental_coincidences: int = 0
    n_key_bits: int = 0
    k_test_bits: int = 0
    qber_test: float = math.nan
    qber_key: float = math.nan
    leak_ec_bits: int = 0
    key_length: Bbm92KeyLength | None = None
    uplink_timing_bytes: int = 0
    timing_entropy_bytes: float = 0.0
    authenticated_messages: int = 0
    payload_key: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    ogs_key: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))


Tamper = Callable[[int, int, bytes], bytes]


class _AuthenticatedLink:
    """Both ends' authenticators and the message counters of one window, in process."""

    def __init__(self, key: bytes, tamper: Tamper | None = None) -> None:
        self._ends = {
            DIRECTION_UP: (
                WegmanCarterAuthenticator(key, DIRECTION_UP),
                WegmanCarterAuthenticator(key, DIRECTION_DOWN),
            ),
            DIRECTION_DOWN: (
                WegmanCarterAuthenticator(key, DIRECTION_DOWN),
                WegmanCarterAuthenticator(key, DIRECTION_UP),
            ),
        }
        self._seq = {DIRECTION_UP: 0, DIRECTION_DOWN: 0}
        self._tamper = tamper
        self.messages = 0

    def send(self, direction: int, message: bytes) -> bytes:
        """Tag at the sender, verify at the receiver (AuthenticationError if it fails)."""
        sender, receiver = self._ends[direction]
        seq = self._seq[direction]
        tag = sender.tag(message, seq)
        if self._tamper is not None:  # a man in the middle rewrites what crosses
            message = self._tamper(direction, seq, message)
        receiver.verify(message, seq, tag)
        self._seq[direction] = seq + 1
        self.messages += 1
        return message


def station_timeline(window: Bbm92Window, ogs_ps: np.ndarray) -> np.ndarray:
    """The station's tags minus its predicted light time (ephemeris with its error)."""
    seg = window.segment
    grid = np.arange(0.0, seg.duration_s + 2.0, 1.0)
    e0, e1, e2 = window.ephemeris_error_m
    predicted_range = seg.range_at_m(grid) + e0 + e1 * grid + e2 * grid * grid
    predicted_rate = seg.range_rate_m_s + seg.range_acceleration_m_s2 * grid + e1 + 2 * e2 * grid
    model = LightTimeModel(0.0, 1.0, predicted_range, predicted_rate)
    arrival_s = np.clip(ogs_ps * 1e-12, seg.range_m / SPEED_OF_LIGHT_M_S, model.span_s)
    timeline: np.ndarray = np.rint(ogs_ps - model.delay_at_arrival_ps(arrival_s)).astype(np.int64)
    return timeline


def _truth(tags: PairTags, index_a: np.ndarray, index_b: np.ndarray) -> tuple[int, int, int]:
    """(true pairs found, true pairs both ends detected, accidental pairs found)."""
    id_a = tags.payload.pair_id[index_a]
    true = (id_a == tags.ogs.pair_id[index_b]) & (id_a >= 0)
    a_ids = tags.payload.pair_id[tags.payload.pair_id >= 0]
    b_ids = tags.ogs.pair_id[tags.ogs.pair_id >= 0]
    available = int(np.intersect1d(a_ids, b_ids, assume_unique=True).size)
    return int(true.sum()), available, int((~true).sum())


def run_bbm92_window(
    window: Bbm92Window, seed: int, tamper: Tamper | None = None
) -> Bbm92WindowResult:
    """Run one window; the result says whether both ends hold the same key and how long.

    tamper(direction, seq, message) -> message, if given, rewrites every classical message in
    flight (an attacker on the link); a changed message raises AuthenticationError."""
    tags = generate_pair_tags(
        window.source, window.payload_detectors, window.ogs_detectors, window.segment,
        window.clock_offset_ps, window.clock_drift, seed, window.intercept_resend_fraction,
    )  # fmt: skip
    psk_words = np.arange(preshared_key_bytes(_MESSAGES_PER_DIRECTION) // 8, dtype=np.uint64)
    psk = rng.random_u64(rng.derive_key(seed, "bbm92.psk"), psk_words).astype(">u8").tobytes()
    link = _AuthenticatedLink(psk, tamper)
    result = Bbm92WindowResult(outcome="aborted", reason="")

    # station -> payload: compressed timing and bases of the low-count side
    b_ps = station_timeline(window, tags.ogs.timestamp_ps)
    ogs_basis = tags.ogs.basis
    uplink = link.send(
        DIRECTION_UP, encode_timing(b_ps, ogs_basis, window.timing_resolution_ps).to_bytes()
    )
    result.uplink_timing_bytes = len(uplink)
    result.timing_entropy_bytes = (
        timing_entropy_bits(b_ps, window.timing_resolution_ps) + b_ps.size
    ) / 8
    b_rx, basis_rx = decode_timing(CompressedTiming.from_bytes(uplink))

    # payload: coincidences (the daemons' step, one block here), then (station index, payload
    # basis) of each back down in BBM92_COINCIDENCES' wire form
    a_ps = tags.payload.timestamp_ps
    pairs, relation = block_coincidences(
        a_ps, b_rx, None, window.max_offset_ps, window.max_drift, window.window_ps
    )
    result.relation = relation
    if pairs is None:
        result.reason = f"no correlation peak (significance {relation.significance:.1f})"
        return _finish(result, link)
    result.coincidences = int(pairs.index_b.size)
    (result.true_coincidences_found, result.true_coincidences_available,
     result.accidental_coincidences) = _truth(tags, pairs.index_a, pairs.index_b)  # fmt: skip
    payload_basis = tags.payload.basis[pairs.index_a]
    n = int(pairs.index_b.size)
    reply = link.send(
        DIRECTION_DOWN, pairs.index_b.astype("<u4").tobytes() + pack_bits(payload_basis)
    )
    index_b = np.frombuffer(reply[: 4 * n], dtype="<u4").astype(np.int64)
    basis_from_payload = unpack_bits(reply[4 * n :], n)

    payload = sift_coincidences(payload_basis, basis_rx[index_b], tags.payload.bit[pairs.index_a])
    ogs = sift_coincidences(ogs_basis[index_b], basis_from_payload, tags.ogs.bit[index_b])
    return _postprocess(window, seed, link, result, payload, ogs)


def _postprocess(
    window: Bbm92Window,
    seed: int,
    link: _AuthenticatedLink,
    result: Bbm92WindowResult,
    payload: Bbm92Sifted,
    ogs: Bbm92Sifted,
) -> Bbm92WindowResult:
    """Test, Cascade, verification, key length and privacy amplification on sifted blocks."""
    result.n_key_bits, result.k_test_bits = int(payload.key_bits.size), int(payload.test_bits.size)
    # the station discloses its test bits; the payload estimates and says pass or abort
    k = int(ogs.test_bits.size)
    disclosed = unpack_bits(link.send(DIRECTION_UP, pack_bits(ogs.test_bits)), k)
    test = check_test_sample(payload.test_bits, disclosed, window.qber_tolerance)
    link.send(DIRECTION_DOWN, f"{test.test_errors}/{test.k_test_bits}".encode())
    result.qber_test = test.qber_test
    if not test.passed:
        result.reason = (
            f"test error rate {test.qber_test:.4f} above tolerance {window.qber_tolerance}"
        )
        return _finish(result, link)

    cascade_seed = rng.derive_key(seed, "bbm92.cascade") >> 1
    responder = CascadeResponder(payload.key_bits, cascade_seed, _CASCADE_PASSES)
    corrector = CascadeCorrector(
        ogs.key_bits, max(test.qber_test, 1e-3), cascade_seed, _CASCADE_PASSES
    )
    while (query := corrector.next_query()) is not None:
        sent = np.frombuffer(link.send(DIRECTION_UP, query.astype("<i8").tobytes()), dtype="<i8")
        answers = responder.reply(sent.reshape(-1, 3))
        corrector.apply_reply(
            np.frombuffer(link.send(DIRECTION_DOWN, answers.tobytes()), dtype=np.uint8)
        )
    result.qber_key = float(np.count_nonzero(ogs.key_bits != corrector.corrected_key)) / max(
        ogs.key_bits.size, 1
    )

    public = np.random.default_rng(rng.derive_key(seed, "bbm92.public"))
    n = payload.key_bits.size
    hash_key = random_verification_hash_key(public, verification_hash_key_words(window.eps_cor, n))
    tag = link.send(
        DIRECTION_DOWN,
        verification_tag(payload.key_bits, hash_key) + hash_key.astype(">u8").tobytes(),
    )
    if tag[: 8 * hash_key.size] != verification_tag(corrector.corrected_key, hash_key):
        result.reason = "verification: the corrected key's hash differs from the payload's"
        return _finish(result, link)

    result.leak_ec_bits = corrector.total_leak_bits + verification_tag_bits(window.eps_cor, n)
    length = bbm92_key_length(
        n,
        test.k_test_bits,
        window.qber_tolerance,
        result.leak_ec_bits,
        window.eps_sec,
        window.eps_cor,
    )
    result.key_length = length
    if length.key_length_bits == 0:
        result.outcome, result.reason = "no key", "the finite-key bound leaves no secret bits"
        return _finish(result, link)
    seed_bits = public.integers(0, 2, toeplitz_seed_bits(n, length.key_length_bits), dtype=np.uint8)
    link.send(DIRECTION_DOWN, np.packbits(seed_bits).tobytes())
    result.payload_key = toeplitz_hash(payload.key_bits, seed_bits, length.key_length_bits)
    result.ogs_key = toeplitz_hash(corrector.corrected_key, seed_bits, length.key_length_bits)
    result.outcome, result.reason = "key", "equal keys at both ends"
    return _finish(result, link)


def _finish(result: Bbm92WindowResult, link: _AuthenticatedLink) -> Bbm92WindowResult:
    result.authenticated_messages = link.messages
    return result
