"""Entangled photon pairs for BBM92: the payload's pair source, its own detectors, the downlink
channel per photon, the station's detectors, noise, and the two ends' clocks.

Source: a continuous-wave pumped SPDC source emits pairs as a Poisson process in time (the
coherence time of a pair, ~ps, is far below detector jitter, so the number of pairs in any
coincidence window is Poisson: multi-pair emission then shows up as accidental coincidences
between photons of different pairs). A pulsed source (statistics "thermal") emits at its
pulses' instants, the pairs of a pulse thermal (negative binomial over the source's modes,
g2 = 1 + 1 / modes): more multi-pair pulses than Poisson at the same mean.

Each pair is in |Phi+> = (|HH> + |VV>)/sqrt(2): the payload measures its photon on its own
passive four-detector receiver (basis by a beam splitter, bit uniform), which projects the
downlink photon onto the same basis state; a payload photon lost before its detectors leaves
the downlink photon maximally mixed, drawn the same way. The downlink photon survives the
channel with the segment's transmittance and is routed at the station by the same passive
receiver model as BB84 (`sim_backends.clicks.fill_route`, polarisation error as the probability
of the orthogonal outcome), each detector with its efficiency. Intercept-resend: Eve measures a
fraction of the downlink photons in a random basis and resends what she found.

Noise: dark counts per detector on both sides and background light at the station, Poisson and
uniform in time; dead time and afterpulses on every physical click (`sim_backends.channel.
apply_dead_time`); Gaussian timing jitter per detector; the station tagger's bin.

Clocks: the station's tags are on true time (UTC) with the light time of the segment
(range r0 + v t + a t^2 / 2 from the emission instant t); the payload's tags are on its own
clock, t (1 + drift) + offset. Every random choice flows from the seed.

Tagger channels 1..4 are (X,0), (X,1), (Z,0), (Z,1) on both sides: channel = 1 + 2 basis + bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core import rng
from satqkd_core.errors import InputError
from satqkd_core.light_time import SPEED_OF_LIGHT_M_S
from sim_backends.channel import AFTERPULSE_TIME_CONSTANT_PS, DetectorModel, apply_dead_time
from sim_backends.clicks import fill_route, route_reference
from sim_backends.tagger import quantise_timestamps

__all__ = [
    "DRAWS_PER_PAIR",
    "PAIR_STATISTICS",
    "PairSourceModel",
    "PairTags",
    "PassSegment",
    "TagStream",
    "generate_pair_tags",
    "pair_detections",
    "pair_detections_reference",
    "pair_emission_times",
    "thermal_pair_distribution",
]

DRAWS_PER_PAIR = 8  # counter words reserved per pair (slots used: 0-6)
_CHUNK_PAIRS = 1 << 21
_MAX_PAIRS = 1 << 32


PAIR_STATISTICS = ("poisson", "thermal")


@dataclass(frozen=True)
class PairSourceModel:
    """The payload's pair source and the coupling of its own photon to its detectors.

    statistics "poisson": a CW-pumped source, pairs a Poisson process at pair_rate_hz.
    statistics "thermal": a pulsed source at repetition_rate_hz, the number of pairs of each
    pulse thermal over `thermal_modes` modes (negative binomial, mean mu = pair rate /
    repetition rate, g2 = 1 + 1 / modes: 2 for one mode), all emitted at the pulse's instant.
    """

    pair_rate_hz: float
    payload_collection: float  # probability the payload's photon reaches its receiver
    polarisation_error: float  # probability of the orthogonal outcome at the station
    statistics: str = "poisson"
    repetition_rate_hz: float = 0.0  # pulsed ("thermal") only
    thermal_modes: float = 1.0  # pulsed ("thermal") only: effective Schmidt modes

    def __post_init__(self) -> None:
        _check_range(self.pair_rate_hz, "PairSourceModel.pair_rate_hz", 1.0, 1e10)
        _check_range(self.payload_collection, "PairSourceModel.payload_collection", 0.0, 1.0)
        _check_range(self.polarisation_error, "PairSourceModel.polarisation_error", 0.0, 0.5)
        if self.statistics not in PAIR_STATISTICS:
            raise InputError(
                f"PairSourceModel.statistics must be one of {', '.join(PAIR_STATISTICS)}, "
                f"got {self.statistics!r}"
            )
        if self.statistics == "thermal":
            rate = _check_range(
                self.repetition_rate_hz, "PairSourceModel.repetition_rate_hz", 1e3, 1e10
            )
            _check_range(self.thermal_modes, "PairSourceModel.thermal_modes", 1.0, 1e6)
            if self.pair_rate_hz > 10.0 * rate:
                raise InputError(
                    f"PairSourceModel: {self.pair_rate_hz / rate:g} pairs per pulse; a thermal "
                    "source is simulated up to 10"
                )

    @property
    def pairs_per_pulse(self) -> float:
        """Get the mean number of pairs per pulse (pulsed sources; 0 for a CW source)."""
        if self.statistics != "thermal":
            return 0.0
        return self.pair_rate_hz / self.repetition_rate_hz


@dataclass(frozen=True)
class PassSegment:
    """A stretch of a pass: geometry (range polynomial), link transmittance and background."""

    duration_s: float
    range_m: float
    range_rate_m_s: float
    range_acceleration_m_s2: float
    transmittance: float  # downlink photon to the station's receiver input
    background_counts_per_s: float  # background photons at each station detector's input

    def __post_init__(self) -> None:
        _check_range(self.duration_s, "PassSegment.duration_s", 1e-3, 3600.0)
        _check_range(self.range_m, "PassSegment.range_m", 1e5, 1e8)
        _check_range(self.range_rate_m_s, "PassSegment.range_rate_m_s", -2e4, 2e4)
        _check_range(self.range_acceleration_m_s2, "PassSegment.range_acceleration_m_s2", -1e3, 1e3)
        _check_range(self.transmittance, "PassSegment.transmittance", 0.0, 1.0)
        _check_range(self.background_counts_per_s, "PassSegment.background_counts_per_s", 0, 1e9)

    def range_at_m(self, t_s: np.ndarray) -> np.ndarray:
        """Get the range (m) at seconds from the segment start."""
        t = np.asarray(t_s, dtype=np.float64)
        r: np.ndarray = (
            self.range_m + self.range_rate_m_s * t + 0.5 * self.range_acceleration_m_s2 * t * t
        )
        return r

    def delay_ps(self, emission_s: np.ndarray) -> np.ndarray:
        """Get the one-way light time (ps) of photons emitted at seconds from the start."""
        delay: np.ndarray = self.range_at_m(emission_s) / SPEED_OF_LIGHT_M_S * 1e12
        return delay


@dataclass(frozen=True)
class TagStream:
    """One side's tags in time order; pair_id is the emitting pair, -1 for noise."""

    timestamp_ps: np.ndarray
    channel: np.ndarray
    pair_id: np.ndarray

    @property
    def basis(self) -> np.ndarray:
        """Get the basis (0 = X, 1 = Z) of every tag."""
        basis: np.ndarray = ((self.channel - 1) >> 1).astype(np.uint8)
        return basis

    @property
    def bit(self) -> np.ndarray:
        """Get the bit of every tag."""
        bit: np.ndarray = ((self.channel - 1) & 1).astype(np.uint8)
        return bit


@dataclass(frozen=True)
class PairTags:
    """Both sides' tags of one segment and how many pairs the source emitted."""

    payload: TagStream
    ogs: TagStream
    pairs_emitted: int


def _check_range(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise InputError(f"{name} must be in [{low:g}, {high:g}], got {number}")
    return number


@numba.njit(cache=True)
def pair_detections(
    key: np.uint64,
    first_pair: np.int64,
    payload_collection: float,
    payload_efficiency: np.ndarray,
    payload_x_probability: float,
    transmittance: float,
    ogs_efficiency: np.ndarray,
    ogs_x_probability: float,
    polarisation_error: float,
    intercept_resend_fraction: float,
    out_payload: np.ndarray,
    out_ogs: np.ndarray,
) -> None:
    """Set out_payload[j], out_ogs[j] to the detector (0-3) that pair first_pair + j clicks at
    each end, or -1; counter words (first_pair + j) * DRAWS_PER_PAIR + slot."""
    key2 = rng.second_round_key(key)
    route = np.empty(4, dtype=np.float64)
    u = np.empty(7, dtype=np.float64)
    # no detector clicks above these: a pair whose two detection draws lie above both is lost
    # at both ends, whatever its other draws (most pairs on a lossy link)
    payload_bound = payload_collection * payload_efficiency.max()
    ogs_bound = transmittance * ogs_efficiency.max()
    for j in range(out_payload.shape[0]):
        base = np.uint64(first_pair + j) * np.uint64(DRAWS_PER_PAIR)
        u[2] = rng.word_to_unit(rng.counter_word(key, key2, base + np.uint64(2)))
        u[6] = rng.word_to_unit(rng.counter_word(key, key2, base + np.uint64(6)))
        if u[2] >= payload_bound and u[6] >= ogs_bound:
            out_payload[j] = -1
            out_ogs[j] = -1
            continue
        for s in (0, 1, 3, 4, 5):
            u[s] = rng.word_to_unit(rng.counter_word(key, key2, base + np.uint64(s)))
        basis = np.int64(0) if u[0] < payload_x_probability else np.int64(1)
        bit = np.int64(0) if u[1] < 0.5 else np.int64(1)
        detector = 2 * basis + bit
        hit = u[2] < payload_collection * payload_efficiency[detector]
        out_payload[j] = detector if hit else -1
        if u[3] < intercept_resend_fraction:
            eve_basis = np.int64(0) if u[4] < 0.5 else np.int64(1)
            if eve_basis != basis:
                bit = np.int64(0) if u[5] < 0.5 else np.int64(1)
            basis = eve_basis
        fill_route(route, basis, bit, ogs_x_probability, polarisation_error)
        out_ogs[j] = -1
        cumulative = 0.0
        for d in range(4):
            cumulative += transmittance * ogs_efficiency[d] * route[d]
            if u[6] < cumulative:
                out_ogs[j] = d
                break


def pair_detections_reference(
    key: int,
    first_pair: int,
    payload_collection: float,
    payload_efficiency: np.ndarray,
    payload_x_probability: float,
    transmittance: float,
    ogs_efficiency: np.ndarray,
    ogs_x_probability: float,
    polarisation_error: float,
    intercept_resend_fraction: float,
    out_payload: np.ndarray,
    out_ogs: np.ndarray,
) -> None:
    """Plain-Python reference of `pair_detections`."""
    for j in range(len(out_payload)):
        base = (first_pair + j) * DRAWS_PER_PAIR
        u = [
            rng.word_to_unit_reference(rng.counter_word_reference(key, base + s)) for s in range(7)
        ]
        basis = 0 if u[0] < payload_x_probability else 1
        bit = 0 if u[1] < 0.5 else 1
        detector = 2 * basis + bit
        out_payload[j] = (
            detector if u[2] < payload_collection * payload_efficiency[detector] else -1
        )
        if u[3] < intercept_resend_fraction:
            eve_basis = 0 if u[4] < 0.5 else 1
            if eve_basis != basis:
                bit = 0 if u[5] < 0.5 else 1
            basis = eve_basis
        route = route_reference(basis, bit, ogs_x_probability, polarisation_error)
        out_ogs[j] = -1
        cumulative = 0.0
        for d in range(4):
            cumulative += transmittance * float(ogs_efficiency[d]) * route[d]
            if u[6] < cumulative:
                out_ogs[j] = d
                break


def _side_stream(
    times_ps: np.ndarray,
    detectors: np.ndarray,
    pair_ids: np.ndarray,
    detector_model: DetectorModel,
    noise_rate_per_detector_hz: np.ndarray,
    span_ps: tuple[float, float],
    seed: int,
    label: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add jitter and noise, apply dead time and afterpulses: (times float ps, detector, pair)."""
    generator = np.random.default_rng(rng.derive_key(seed, f"pairs.{label}.noise"))
    jittered = times_ps + detector_model.timing_jitter_ps * generator.standard_normal(times_ps.size)
    start, stop = span_ps
    counts = generator.poisson(noise_rate_per_detector_hz * (stop - start) * 1e-12)
    noise_d = np.repeat(np.arange(4, dtype=np.uint8), counts)
    noise_t = start + generator.random(noise_d.size) * (stop - start)
    all_t = np.concatenate([jittered, noise_t])
    all_d = np.concatenate([detectors.astype(np.uint8), noise_d])
    all_id = np.concatenate([pair_ids, np.full(noise_d.size, -1, dtype=np.int64)])
    order = np.argsort(all_t, kind="stable")
    all_t, all_d, all_id = all_t[order], all_d[order], all_id[order]
    live, ap_t, ap_d = apply_dead_time(
        np.uint64(rng.derive_key(seed, f"pairs.{label}.deadtime")),
        np.ascontiguousarray(all_t),
        np.ascontiguousarray(all_d),
        detector_model.dead_time_ps,
        detector_model.afterpulse_probability,
        AFTERPULSE_TIME_CONSTANT_PS,
        stop,
    )
    times = np.concatenate([all_t[live], ap_t])
    dets = np.concatenate([all_d[live], ap_d])
    ids = np.concatenate([all_id[live], np.full(ap_t.size, -1, dtype=np.int64)])
    order = np.argsort(times, kind="stable")
    return times[order], dets[order], ids[order]


def _joined(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        return np.empty(0), np.empty(0, dtype=np.int8), np.empty(0, dtype=np.int64)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def _poisson_chunks(source: PairSourceModel, duration_ps: float, seed: int) -> Iterator[np.ndarray]:
    """Yield the emission instants (ps, ascending) of a CW source, a Poisson process."""
    times_rng = np.random.default_rng(rng.derive_key(seed, "pairs.times"))
    mean_gap_ps = 1e12 / source.pair_rate_hz
    last_ps = 0.0
    while True:
        # exponential gaps, summed (sorted by construction)
        emission = last_ps + np.cumsum(times_rng.exponential(mean_gap_ps, _CHUNK_PAIRS))
        last_ps = float(emission[-1])
        yield emission[emission < duration_ps]
        if last_ps >= duration_ps:
            return


def thermal_pair_distribution(pairs_per_pulse: float, modes: float) -> np.ndarray:
    """Get P(n pairs in a pulse), n = 0, 1, ..., of a thermal source over `modes` modes: the
    negative binomial with mean pairs_per_pulse (g2 = 1 + 1 / modes), cut where the tail is
    below 1e-16."""
    mu, k = float(pairs_per_pulse), float(modes)
    log_p, log_q = math.log(k / (k + mu)), math.log(mu / (k + mu))
    pmf: list[float] = []
    total, n = 0.0, 0
    while total < 1.0 - 1e-16 and n < 10_000:
        log_pmf = math.lgamma(n + k) - math.lgamma(k) - math.lgamma(n + 1) + k * log_p + n * log_q
        pmf.append(math.exp(log_pmf))
        total += pmf[-1]
        n += 1
    return np.asarray(pmf, dtype=np.float64)


def _pulsed_chunks(source: PairSourceModel, duration_ps: float, seed: int) -> Iterator[np.ndarray]:
    """Yield the emission instants (ps, ascending, one per pair: a multi-pair pulse repeats its
    instant) of a pulsed source. The pulses that emit are drawn by geometric gaps (most are
    empty when pairs_per_pulse << 1), their pair numbers from the distribution given one."""
    generator = np.random.default_rng(rng.derive_key(seed, "pairs.pulses"))
    pmf = thermal_pair_distribution(source.pairs_per_pulse, source.thermal_modes)
    emitting = 1.0 - float(pmf[0])
    given_one = np.cumsum(pmf[1:]) / float(pmf[1:].sum())
    period_ps = 1e12 / source.repetition_rate_hz
    last_pulse = -1
    while True:
        pulses = last_pulse + np.cumsum(generator.geometric(emitting, _CHUNK_PAIRS))
        last_pulse = int(pulses[-1])
        counts = 1 + np.searchsorted(given_one, generator.random(_CHUNK_PAIRS), side="right")
        counts = np.minimum(counts, given_one.size)
        emission = np.repeat(pulses * period_ps, counts)
        yield emission[emission < duration_ps]
        if last_pulse * period_ps >= duration_ps:
            return


def _emission_chunks(
    source: PairSourceModel, duration_ps: float, seed: int
) -> Iterator[np.ndarray]:
    if source.statistics == "thermal":
        return _pulsed_chunks(source, duration_ps, seed)
    return _poisson_chunks(source, duration_ps, seed)


def pair_emission_times(source: PairSourceModel, duration_s: float, seed: int) -> np.ndarray:
    """Get the emission instants (ps from the start, ascending) of every pair the source emits
    in duration_s, as `generate_pair_tags` draws them from the same seed."""
    if not isinstance(source, PairSourceModel):
        raise InputError(f"source must be a PairSourceModel, got {type(source).__name__}")
    duration = _check_range(duration_s, "duration_s", 1e-6, 3600.0)
    if source.pair_rate_hz * duration > _MAX_PAIRS:
        raise InputError(f"{source.pair_rate_hz * duration:.3g} pairs; at most {_MAX_PAIRS}")
    return np.concatenate(list(_emission_chunks(source, duration * 1e12, int(seed))))


def generate_pair_tags(
    source: PairSourceModel,
    payload_detectors: DetectorModel,
    ogs_detectors: DetectorModel,
    segment: PassSegment,
    clock_offset_ps: float,
    clock_drift: float,
    seed: int,
    intercept_resend_fraction: float = 0.0,
    ogs_tagger_resolution_ps: int = 1,
) -> PairTags:
    """Get both ends' tags for one segment (payload: its clock; station: true time)."""
    for name, value, kind in (
        ("source", source, PairSourceModel),
        ("payload_detectors", payload_detectors, DetectorModel),
        ("ogs_detectors", ogs_detectors, DetectorModel),
        ("segment", segment, PassSegment),
    ):
        if not isinstance(value, kind):
            raise InputError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    offset = _check_range(clock_offset_ps, "clock_offset_ps", -1e13, 1e13)
    drift = _check_range(clock_drift, "clock_drift", -1e-4, 1e-4)
    eve = _check_range(intercept_resend_fraction, "intercept_resend_fraction", 0.0, 1.0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    duration_ps = segment.duration_s * 1e12
    expected = source.pair_rate_hz * segment.duration_s
    if expected > _MAX_PAIRS:
        raise InputError(f"{expected:.3g} pairs in the segment; at most {_MAX_PAIRS} are simulated")

    chunks = _emission_chunks(source, duration_ps, seed)
    key = np.uint64(rng.derive_key(seed, "pairs.detections"))
    payload_eff = np.asarray(payload_detectors.efficiency, dtype=np.float64)
    ogs_eff = np.asarray(ogs_detectors.efficiency, dtype=np.float64)
    kept_payload: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    kept_ogs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    first = 0
    for emission in chunks:
        count = emission.size
        on_payload = np.empty(count, dtype=np.int8)
        on_ogs = np.empty(count, dtype=np.int8)
        pair_detections(
            key, np.int64(first), source.payload_collection, payload_eff,
            payload_detectors.basis_x_probability, segment.transmittance, ogs_eff,
            ogs_detectors.basis_x_probability, source.polarisation_error, eve, on_payload, on_ogs,
        )  # fmt: skip
        ids = np.arange(first, first + count, dtype=np.int64)
        hit = on_payload >= 0
        kept_payload.append((emission[hit], on_payload[hit], ids[hit]))
        hit = on_ogs >= 0
        kept_ogs.append((emission[hit], on_ogs[hit], ids[hit]))
        first += count
    n_pairs = first
    p_t, p_d, p_id = _joined(kept_payload)
    o_t, o_d, o_id = _joined(kept_ogs)

    payload_noise = np.full(4, payload_detectors.dark_count_rate_hz)
    p_times, p_dets, p_ids = _side_stream(
        p_t, p_d, p_id, payload_detectors, payload_noise, (0.0, duration_ps), seed, "payload"
    )
    arrival = o_t + segment.delay_ps(o_t * 1e-12)
    ends = segment.delay_ps(np.array([0.0, segment.duration_s]))
    span = (float(ends[0]), duration_ps + float(ends[1]))
    ogs_noise = ogs_detectors.dark_count_rate_hz + segment.background_counts_per_s * ogs_eff
    o_times, o_dets, o_ids = _side_stream(
        arrival, o_d, o_id, ogs_detectors, ogs_noise, span, seed, "ogs"
    )
    payload_ps = np.rint(p_times * (1.0 + drift) + offset).astype(np.int64)
    ogs_ps = quantise_timestamps(np.rint(o_times).astype(np.int64), ogs_tagger_resolution_ps)
    return PairTags(
        payload=TagStream(payload_ps, (p_dets + 1).astype(np.uint8), p_ids),
        ogs=TagStream(ogs_ps, (o_dets + 1).astype(np.uint8), o_ids),
        pairs_emitted=n_pairs,
    )
