"""Tests for satqkd_core.ldpc_reconciliation: blind LDPC sender (payload) against receiver."""

from __future__ import annotations

import numpy as np
import pytest

from satqkd_core.bits import binary_entropy
from satqkd_core.cascade import reconciliation_efficiency as cascade_efficiency
from satqkd_core.errors import InputError, ProtocolError
from satqkd_core.ldpc import LdpcCode, mother_codes, plan_frames
from satqkd_core.ldpc_construction import MotherCodeSpec, build_code
from satqkd_core.ldpc_reconciliation import (
    MESSAGE_VERSION,
    LdpcReceiver,
    LdpcSender,
    reconciliation_efficiency,
)

_SPECS = (
    MotherCodeSpec(
        "test_r50", 1, 1200, 0.5, {2: 0.25, 3: 0.45, 8: 0.3}, {7: 0.5, 8: 0.5}, 0.12, 5, "test"
    ),
    MotherCodeSpec(
        "test_r75", 2, 1200, 0.75, {2: 0.12, 3: 0.5, 8: 0.38}, {15: 0.5, 16: 0.5}, 0.08, 6, "test"
    ),
)


@pytest.fixture(scope="module")
def codes() -> tuple[LdpcCode, ...]:
    return tuple(build_code(spec) for spec in _SPECS)


def _keys(n: int, qber: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 2, n).astype(np.uint8)
    noisy = reference ^ (rng.random(n) < qber).astype(np.uint8)
    return reference, noisy


def _exchange(sender: LdpcSender, receiver: LdpcReceiver, log: list[dict] | None = None) -> None:
    first = sender.first_message()
    if log is not None:
        log.append(first)
    receiver.apply_first(first)
    while (request := receiver.next_request()) is not None:
        reply = sender.reply(request)
        if log is not None:
            log.extend([request, reply])
        receiver.apply_reply(reply)


def _assert_flat(message: dict) -> None:
    for key, value in message.items():
        assert isinstance(key, str)
        if isinstance(value, np.ndarray):
            assert value.ndim == 1 and value.dtype in (np.uint8, np.uint32, np.int64), key
        else:
            assert isinstance(value, int | float | bytes) and not isinstance(value, bool), key


@pytest.mark.parametrize("qber", [0.02, 0.06])
def test_both_ends_agree_on_kept_bits_and_leak(codes: tuple[LdpcCode, ...], qber: float) -> None:
    reference, noisy = _keys(9000, qber, seed=int(qber * 1000))
    sender = LdpcSender(reference, qber, seed=77, codes=codes, fill_seed=3)
    receiver = LdpcReceiver(noisy, qber, seed=77, codes=codes)
    log: list[dict] = []
    _exchange(sender, receiver, log)
    assert receiver.done and sender.done
    assert sender.leak_bits == receiver.leak_bits > 0
    assert np.array_equal(sender.frame_ok, receiver.frame_ok)
    kept = receiver.kept_mask()
    assert np.array_equal(kept, sender.kept_mask())
    assert np.array_equal(receiver.corrected_key[kept], reference[kept])
    assert receiver.frame_ok.mean() >= 0.75  # short test codes: most frames decode
    for message in log:
        _assert_flat(message)
        assert message["version"] == MESSAGE_VERSION
    # exact leak: syndromes minus punctured symbols, plus every revealed value
    plan = sender.plan
    revealed = sum(int(m["revealed_bits"]) for m in log if "revealed_bits" in m)
    assert sender.leak_bits == sender.frames * (plan.code.m - plan.punctured) + revealed
    framed = sender.frames * plan.frame_key_bits
    efficiency = reconciliation_efficiency(sender.leak_bits, framed, qber)
    assert 1.0 < efficiency < 1.6
    assert receiver.round_trips == sum(1 for m in log if "revealed_bits" in m)


def test_tail_and_failed_frames_are_discarded_at_both_ends(codes: tuple[LdpcCode, ...]) -> None:
    # the receiver's key is far noisier than the estimate: some frames cannot decode
    reference, _ = _keys(7000, 0.0, seed=1)
    rng = np.random.default_rng(9)
    noisy = reference ^ (rng.random(7000) < 0.045).astype(np.uint8)
    sender = LdpcSender(reference, 0.02, seed=5, codes=codes, fill_seed=1)
    receiver = LdpcReceiver(noisy, 0.02, seed=5, codes=codes)
    _exchange(sender, receiver)
    k = sender.plan.frame_key_bits
    assert sender.frames == 7000 // k
    kept = receiver.kept_mask()
    assert np.array_equal(kept, sender.kept_mask())
    assert kept.sum() == receiver.frame_ok.sum() * k  # the tail is never kept
    assert not receiver.frame_ok.all()  # the overload made some frame fail
    assert np.array_equal(receiver.corrected_key[kept], reference[kept])
    assert sender.leak_bits == receiver.leak_bits  # failed frames still count


def test_a_key_shorter_than_one_frame_keeps_nothing(codes: tuple[LdpcCode, ...]) -> None:
    reference, noisy = _keys(200, 0.03, seed=2)
    sender = LdpcSender(reference, 0.03, seed=1, codes=codes)
    receiver = LdpcReceiver(noisy, 0.03, seed=1, codes=codes)
    _exchange(sender, receiver)
    assert sender.frames == 0 and sender.leak_bits == receiver.leak_bits == 0
    assert not receiver.kept_mask().any() and not sender.kept_mask().any()
    assert receiver.round_trips == 0


def test_shipped_codes_reconcile_one_frame() -> None:
    qber = 0.05
    plan = plan_frames(qber, mother_codes())
    reference, noisy = _keys(plan.frame_key_bits + 100, qber, seed=3)
    sender = LdpcSender(reference, qber, seed=2, fill_seed=4)
    receiver = LdpcReceiver(noisy, qber, seed=2)
    _exchange(sender, receiver)
    assert receiver.frame_ok.tolist() == [True]
    kept = receiver.kept_mask()
    assert kept.sum() == plan.frame_key_bits
    assert np.array_equal(receiver.corrected_key[kept], reference[kept])
    efficiency = receiver.leak_bits / (plan.frame_key_bits * binary_entropy(qber))
    assert efficiency < 1.3


def test_efficiency_is_cascades() -> None:
    assert reconciliation_efficiency is cascade_efficiency


def test_messages_are_deterministic_for_fixed_seeds(codes: tuple[LdpcCode, ...]) -> None:
    reference, _ = _keys(5000, 0.03, seed=4)
    one = LdpcSender(reference, 0.03, seed=8, codes=codes, fill_seed=2).first_message()
    two = LdpcSender(reference, 0.03, seed=8, codes=codes, fill_seed=2).first_message()
    assert one.keys() == two.keys()
    for key in one:
        assert np.array_equal(one[key], two[key])
    # other private fill: other syndromes, same public layout
    three = LdpcSender(reference, 0.03, seed=8, codes=codes, fill_seed=3).first_message()
    assert three["positions_seed"] == one["positions_seed"]
    if one["punctured"]:
        assert not np.array_equal(three["syndromes"], one["syndromes"])


def test_redelivered_messages_are_idempotent(codes: tuple[LdpcCode, ...]) -> None:
    reference, noisy = _keys(6000, 0.04, seed=6)
    sender = LdpcSender(reference, 0.04, seed=3, codes=codes, fill_seed=5)
    receiver = LdpcReceiver(noisy, 0.04, seed=3, codes=codes)
    receiver.apply_first(sender.first_message())
    request = receiver.next_request()
    assert request is not None
    reply = sender.reply(request)
    leak = sender.leak_bits
    again = sender.reply(request)
    assert again is reply and sender.leak_bits == leak
    receiver.apply_reply(reply)
    trips = receiver.round_trips
    receiver.apply_reply(reply)  # duplicate of the reply already applied: ignored
    assert receiver.round_trips == trips
    while (request := receiver.next_request()) is not None:
        receiver.apply_reply(sender.reply(request))
    assert sender.leak_bits == receiver.leak_bits


def test_protocol_errors_name_the_problem(codes: tuple[LdpcCode, ...]) -> None:
    reference, noisy = _keys(6000, 0.04, seed=7)
    sender = LdpcSender(reference, 0.04, seed=3, codes=codes, fill_seed=5)
    first = sender.first_message()
    receiver = LdpcReceiver(noisy, 0.04, seed=3, codes=codes)
    with pytest.raises(ProtocolError, match="first message"):
        receiver.next_request()
    with pytest.raises(ProtocolError, match="version"):
        receiver.apply_first({**first, "version": 99})
    with pytest.raises(ProtocolError, match="kind"):
        receiver.apply_first({**first, "kind": 3})
    with pytest.raises(ProtocolError, match="positions_seed"):
        LdpcReceiver(noisy, 0.04, seed=4, codes=codes).apply_first(first)
    with pytest.raises(ProtocolError, match="key_bits"):
        LdpcReceiver(noisy[:-1], 0.04, seed=3, codes=codes).apply_first(first)
    with pytest.raises(ProtocolError, match="digest"):
        LdpcReceiver(noisy, 0.04, seed=3, codes=codes).apply_first({**first, "code_digest": 1})
    with pytest.raises(ProtocolError, match="unknown code_id"):
        LdpcReceiver(noisy, 0.04, seed=3, codes=codes).apply_first({**first, "code_id": 99})
    with pytest.raises(ProtocolError, match="syndromes"):
        LdpcReceiver(noisy, 0.04, seed=3, codes=codes).apply_first(
            {**first, "syndromes": first["syndromes"][:-1]}
        )
    with pytest.raises(ProtocolError, match="frame shape"):
        LdpcReceiver(noisy, 0.04, seed=3, codes=codes).apply_first(
            {**first, "shortened": first["shortened"] + 1}
        )
    with pytest.raises(ProtocolError, match="field 'frames'"):
        LdpcReceiver(noisy, 0.04, seed=3, codes=codes).apply_first(
            {k: v for k, v in first.items() if k != "frames"}
        )
    receiver.apply_first(first)
    with pytest.raises(ProtocolError, match="already applied"):
        receiver.apply_first(first)
    request = receiver.next_request()
    assert request is not None and request["kind"] == 2  # a reveal request: tamper with it
    with pytest.raises(ProtocolError, match="round"):
        sender.reply({**request, "round": 5})
    with pytest.raises(ProtocolError, match="counts"):
        sender.reply({**request, "counts": request["counts"] + np.uint32(10**6)})
    with pytest.raises(ProtocolError, match="frames"):
        sender.reply({**request, "frames": request["frames"][::-1].copy()})
    reply = sender.reply(request)
    with pytest.raises(ProtocolError, match="revealed_bits"):
        receiver.apply_reply({**reply, "revealed_bits": reply["revealed_bits"] + 1})
    with pytest.raises(ProtocolError, match="round"):
        receiver.apply_reply({**reply, "round": reply["round"] + 3})
    with pytest.raises(ProtocolError, match="dict"):
        sender.reply([1, 2])  # type: ignore[arg-type]


def test_constructor_validation(codes: tuple[LdpcCode, ...]) -> None:
    key = np.zeros(100, dtype=np.uint8)
    with pytest.raises(InputError, match="reference_key"):
        LdpcSender(np.array([0, 2], dtype=np.uint8), 0.02, seed=1, codes=codes)
    with pytest.raises(InputError, match="qber_estimate"):
        LdpcSender(key, 0.7, seed=1, codes=codes)
    with pytest.raises(InputError, match="seed"):
        LdpcSender(key, 0.02, seed=-1, codes=codes)
    with pytest.raises(InputError, match="distinct code_id"):
        LdpcSender(key, 0.02, seed=1, codes=(codes[0], codes[0]))
    with pytest.raises(InputError, match="noisy_key"):
        LdpcReceiver(key.astype(np.float64), 0.02, seed=1, codes=codes)
    with pytest.raises(InputError, match="qber"):
        LdpcReceiver(key, 0.0, seed=1, codes=codes)


def test_outcome_does_not_depend_on_the_private_fill(codes: tuple[LdpcCode, ...]) -> None:
    # sum-product is symmetric under flipping a punctured symbol with its checks' syndrome
    # bits, so which frames decode, and after how many reveals, is the same for any fill
    reference, noisy = _keys(8000, 0.035, seed=11)
    outcomes = []
    for fill in (1, 2, None):
        sender = LdpcSender(reference, 0.035, seed=9, codes=codes, fill_seed=fill)
        receiver = LdpcReceiver(noisy, 0.035, seed=9, codes=codes)
        _exchange(sender, receiver)
        kept = receiver.kept_mask()
        assert np.array_equal(receiver.corrected_key[kept], reference[kept])
        outcomes.append((receiver.frame_ok.tolist(), receiver.leak_bits, receiver.round_trips))
    assert outcomes[0] == outcomes[1] == outcomes[2]
