"""What error correction discloses, counted in both directions and for dropped frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from satqkd_core.cascade import CascadeCorrector, CascadeResponder
from satqkd_core.errors import InputError
from satqkd_core.ldpc import LdpcCode, mother_codes
from satqkd_core.ldpc_reconciliation import LdpcReceiver, LdpcSender, outcome_bits


def _keys(n: int, qber: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 2, n).astype(np.uint8)
    return reference, reference ^ (rng.random(n) < qber).astype(np.uint8)


@pytest.mark.parametrize(("qber", "passes"), [(0.02, 16), (0.05, 4), (0.01, 1)])
def test_cascade_charges_the_stations_parities_too(qber: float, passes: int) -> None:
    reference, noisy = _keys(20_000, qber, seed=3)
    corrector = CascadeCorrector(noisy, qber, seed=11, passes=passes)
    responder = CascadeResponder(reference, seed=11, passes=passes)
    rows = 0
    while (query := corrector.next_query()) is not None:
        rows += query.shape[0]
        corrector.apply_reply(responder.reply(query))
    # the payload's answers: one parity per row; the station's queries: its parity of every
    # answered range and of each later pass's inferred last block
    assert corrector.leak_bits == responder.leak_bits == rows
    assert corrector.station_parity_bits == responder.station_parity_bits == rows + passes - 1
    assert corrector.total_leak_bits == responder.total_leak_bits == 2 * rows + passes - 1


def test_cascade_with_nothing_asked_discloses_nothing() -> None:
    responder = CascadeResponder(np.zeros(64, np.uint8), seed=1, passes=4)
    assert responder.total_leak_bits == 0


@pytest.fixture(scope="module")
def codes() -> tuple[LdpcCode, ...]:
    return mother_codes()


def _run(sender: LdpcSender, receiver: LdpcReceiver) -> int:
    """Exchange everything; return the bits that crossed the link about the key (syndromes
    and revealed punctured values)."""
    for part in sender.first_messages():
        receiver.apply_first(part)
    wire_bits = sender.frames * sender.plan.code.m  # one m-bit syndrome per frame
    while (request := receiver.next_request()) is not None:
        reply = sender.reply(request)
        wire_bits += int(reply.get("revealed_bits", 0))
        receiver.apply_reply(reply)
    return wire_bits


def test_ldpc_fill_comes_from_the_given_entropy_and_the_leak_equals_the_disclosure(
    codes: tuple[LdpcCode, ...],
) -> None:
    reference, noisy = _keys(60_000, 0.03, seed=5)
    receiver = LdpcReceiver(noisy, 0.03, seed=21, codes=codes)
    start = receiver.start_request()
    needed = LdpcSender.fill_bits_needed(reference.size, start, codes=codes)
    fill = np.random.default_rng(8).bytes((needed + 7) // 8)
    sender = LdpcSender.from_start_request(reference, start, codes=codes, fill=fill)
    plan = sender.plan
    assert needed == sender.frames * plan.punctured > 0
    # the punctured symbols are the entropy's bits themselves, frame after frame
    drawn = np.unpackbits(np.frombuffer(fill, np.uint8), count=needed)
    np.testing.assert_array_equal(sender._punctured_values.ravel(), drawn)
    wire_bits = _run(sender, receiver)
    # syndromes and revealed values, less the private uniform bits the fill hides them with
    assert sender.leak_bits == receiver.leak_bits == wire_bits - needed
    failed = int(sender.frames - sender.frame_ok.sum())
    # each frame's outcome (decoded after 0..R reveal rounds, or given up): ceil(log2(R + 2))
    rounds = -(-plan.punctured // plan.reveal_step)
    assert outcome_bits(plan) == math.ceil(math.log2(rounds + 2)) >= 2
    charged = sender.leak_bits + failed * plan.frame_key_bits + sender.frames * outcome_bits(plan)
    assert sender.charged_leak_bits == receiver.charged_leak_bits == charged


def test_ldpc_refuses_too_little_fill(codes: tuple[LdpcCode, ...]) -> None:
    reference, noisy = _keys(60_000, 0.03, seed=5)
    start = LdpcReceiver(noisy, 0.03, seed=21, codes=codes).start_request()
    needed = LdpcSender.fill_bits_needed(reference.size, start, codes=codes)
    assert needed > 16
    with pytest.raises(InputError, match="fill holds"):
        LdpcSender.from_start_request(reference, start, codes=codes, fill=bytes(needed // 8 - 1))


def test_dropped_frames_are_charged_as_disclosed(codes: tuple[LdpcCode, ...]) -> None:
    # a key far noisier than the estimate: some frames fail and are dropped (two frames here;
    # each failing frame costs the decoder its whole iteration budget)
    reference, noisy = _keys(120_000, 0.0, seed=1)
    noisy = reference ^ (np.random.default_rng(9).random(120_000) < 0.045).astype(np.uint8)
    sender = LdpcSender(reference, 0.02, seed=5, codes=codes, fill=bytes(1 << 16))
    receiver = LdpcReceiver(noisy, 0.02, seed=5, codes=codes)
    _run(sender, receiver)
    failed = int(sender.frames - receiver.frame_ok.sum())
    assert failed > 0 and sender.frames >= 2
    k = sender.plan.frame_key_bits
    flags = sender.frames * outcome_bits(sender.plan)
    assert receiver.charged_leak_bits - receiver.leak_bits == failed * k + flags
    # statistics stay those of every frame (a selection fixed before any data was seen)
    framed = receiver.framed_mask()
    assert framed.sum() == sender.frames * k
    assert np.array_equal(framed, sender.framed_mask())
    assert (framed >= receiver.kept_mask()).all()
