"""A BBM92 downlink window end to end (sim_backends.pairs_pass): equal keys at both ends with a
key length from the Tomamichel et al. bound, and an intercept-resend attack that aborts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from satqkd_core.authentication import DIRECTION_UP
from satqkd_core.errors import AuthenticationError
from sim_backends.channel import DetectorModel
from sim_backends.pairs import PairSourceModel, PassSegment
from sim_backends.pairs_pass import Bbm92Window, run_bbm92_window

WINDOW = Bbm92Window(
    source=PairSourceModel(pair_rate_hz=5e5, payload_collection=0.5, polarisation_error=0.015),
    payload_detectors=DetectorModel((0.6,) * 4, 100.0, 40.0, 50_000.0, 0.0, 0.5),
    ogs_detectors=DetectorModel((0.5,) * 4, 200.0, 50.0, 50_000.0, 0.0, 0.5),
    # 10 s of a pass 800 km away, range falling at 5 km/s and bending at 10 m/s^2
    segment=PassSegment(10.0, 800e3, -5000.0, 10.0, 0.05, 5e3),
)


@pytest.fixture(scope="module")
def honest():
    return run_bbm92_window(WINDOW, seed=11)


def test_a_window_ends_with_equal_keys_of_the_bounds_length(honest):
    assert honest.outcome == "key", honest.reason
    assert honest.relation is not None and honest.relation.found
    assert honest.key_length is not None
    assert honest.payload_key.size == honest.key_length.key_length_bits > 500
    np.testing.assert_array_equal(honest.payload_key, honest.ogs_key)
    assert 0.005 < honest.qber_test < 0.03
    # every classical message was authenticated: timing, reply, test, Cascade rounds, tags, seed
    assert honest.authenticated_messages > 10


def test_coincidences_found_through_the_window(honest):
    assert honest.true_coincidences_found >= 0.999 * honest.true_coincidences_available
    # accidentals ~ singles product x 1 ns: 1.5e5/s x 1.3e4/s x 1e-9 s x 10 s = 20
    assert honest.accidental_coincidences < 20 + 5 * np.sqrt(20)


def test_only_compressed_timing_crosses_the_link(honest):
    assert honest.uplink_timing_bytes <= 1.10 * honest.timing_entropy_bytes


def test_intercept_resend_attack_aborts_without_a_key():
    # 4 s are enough to fail the test sample; the honest window above passes with the same physics
    segment = dataclasses.replace(WINDOW.segment, duration_s=4.0)
    attacked = run_bbm92_window(
        dataclasses.replace(WINDOW, segment=segment, intercept_resend_fraction=1.0), seed=11
    )
    assert attacked.outcome == "aborted"
    assert "test error rate" in attacked.reason
    assert attacked.qber_test > 0.2
    assert attacked.payload_key.size == attacked.ogs_key.size == 0


def test_a_changed_message_on_the_link_is_refused():
    """A man in the middle moves the station's first tag by one tick: authentication refuses it."""

    def shift_first_tick(direction: int, seq: int, message: bytes) -> bytes:
        if (direction, seq) != (DIRECTION_UP, 0):
            return message
        header = bytearray(message)
        header[24] ^= 1  # a bit of the first tick (after magic, count and resolution)
        return bytes(header)

    short = dataclasses.replace(WINDOW, segment=dataclasses.replace(WINDOW.segment, duration_s=1.0))
    with pytest.raises(AuthenticationError, match="seq 0"):
        run_bbm92_window(short, seed=11, tamper=shift_first_tick)
