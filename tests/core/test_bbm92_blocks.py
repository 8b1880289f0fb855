"""Coincidences block by block (satqkd_core.bbm92.block_coincidences, the payload daemon's step):
the first block finds the clock relation by correlation, the next goes on tracking from where
the first left off, and together they find the pairs one window over both would; the wire form
of bits round-trips and refuses a wrong length."""

from __future__ import annotations

import numpy as np
import pytest

from satqkd_core.bbm92 import block_coincidences, pack_bits, unpack_bits
from satqkd_core.errors import InputError
from sim_backends.channel import DetectorModel
from sim_backends.pairs import PairSourceModel, PassSegment, generate_pair_tags

BLOCK_PS = 2_000_000_000_000  # 2 s of the station's timeline
SEGMENT = PassSegment(4.0, 800e3, -5000.0, 10.0, 0.05, 5e3)


@pytest.fixture(scope="module")
def tags():
    # 4 s of a pass 800 km away, range falling at 5 km/s and bending at 10 m/s^2; the payload
    # clock 37 ms off and 0.7 ppm fast
    return generate_pair_tags(
        PairSourceModel(pair_rate_hz=3e5, payload_collection=0.5, polarisation_error=0.015),
        DetectorModel((0.6,) * 4, 100.0, 40.0, 50_000.0, 0.0, 0.5),
        DetectorModel((0.5,) * 4, 200.0, 50.0, 50_000.0, 0.0, 0.5),
        SEGMENT,
        37.3e9,
        0.7e-6,
        seed=5,
    )


def _true_pairs(tags, index_a: np.ndarray, index_b: np.ndarray, b_ids: np.ndarray) -> int:
    return int(
        np.count_nonzero((tags.payload.pair_id[index_a] == b_ids[index_b]) & (b_ids[index_b] >= 0))
    )


def test_the_second_block_tracks_on_from_the_first(tags) -> None:
    a_ps = tags.payload.timestamp_ps
    # the station's timeline: its arrivals less the light time (the segment's, exactly here)
    arrival = tags.ogs.timestamp_ps
    emitted = arrival - SEGMENT.delay_ps(np.array([0.0]))[0]
    b_ps = arrival - np.rint(SEGMENT.delay_ps(emitted * 1e-12)).astype(np.int64)
    order = np.argsort(b_ps, kind="stable")
    b_ps, b_ids = b_ps[order], tags.ogs.pair_id[order]
    cut = int(np.searchsorted(b_ps, b_ps[0] + BLOCK_PS))
    window = 1000.0
    first, relation = block_coincidences(a_ps, b_ps[:cut], None, 1e11, 1e-6, window)
    assert first is not None and relation.found
    # the second block: only the payload's tags around it, and no new correlation
    lo, hi = np.searchsorted(a_ps, [b_ps[cut] - 1.1e11, b_ps[-1] + 1.1e11])
    second, carried = block_coincidences(a_ps[lo:hi], b_ps[cut:], relation, 1e11, 1e-6, window)
    assert second is not None
    assert carried.reference_ps > relation.reference_ps
    whole, _ = block_coincidences(a_ps, b_ps, None, 1e11, 1e-6, window)
    assert whole is not None
    found = _true_pairs(tags, first.index_a, first.index_b, b_ids[:cut]) + _true_pairs(
        tags, second.index_a + lo, second.index_b, b_ids[cut:]
    )
    assert found >= 0.999 * _true_pairs(tags, whole.index_a, whole.index_b, b_ids)
    assert found > 1000


def test_packed_bits_round_trip_and_a_wrong_length_is_refused() -> None:
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1], dtype=np.uint8)
    np.testing.assert_array_equal(unpack_bits(pack_bits(bits), bits.size), bits)
    with pytest.raises(InputError, match="2 bytes for 17 bits"):
        unpack_bits(pack_bits(bits), 17)
