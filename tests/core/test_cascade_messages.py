"""Compact EC_QUERY rows (satqkd_core.cascade_messages): round trips, the same Cascade
transcript, key and leak through the wire form, sizes, and strict decoding of bad bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satqkd_core.cascade import CascadeCorrector, CascadeResponder, cascade_block_sizes
from satqkd_core.cascade_messages import (
    decode_query,
    decode_query_reference,
    decode_varints,
    encode_planned_rows,
    encode_rows,
    encode_rows_reference,
    encode_top_level,
    encode_varints,
    top_level_rows,
)
from satqkd_core.errors import ProtocolError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def query_rows(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    n = draw(st.integers(1, 5_000_000))
    passes = draw(st.integers(1, 20))
    k = draw(st.integers(1, 40))
    rows = np.empty((k, 3), dtype=np.int64)
    for i in range(k):
        start = draw(st.integers(0, n - 1))
        rows[i] = (draw(st.integers(0, passes - 1)), start, draw(st.integers(start + 1, n)))
    return rows, n, passes


@SETTINGS
@given(case=query_rows())
def test_rows_decode_to_the_same_rows_in_wire_order(case: tuple[np.ndarray, int, int]) -> None:
    rows, n, passes = case
    data, order = encode_rows(rows)
    decoded = decode_query(data, n, passes)
    np.testing.assert_array_equal(decoded, rows[order])
    assert sorted(order.tolist()) == list(range(rows.shape[0]))
    # the wire order is (pass, start), ties as given: what makes the start gaps small
    assert order.tolist() == sorted(range(rows.shape[0]), key=lambda i: (*rows[i, :2], i))


@SETTINGS
@given(values=st.lists(st.integers(0, 2**63 - 1), max_size=50))
def test_varints_round_trip_and_are_leb128(values: list[int]) -> None:
    data = encode_varints(np.array(values, dtype=np.int64))
    assert decode_varints(data).tolist() == values
    # LEB128 by hand: 7 bits a byte, low group first, high bit on all but the last byte
    expected = bytearray()
    for v in values:
        while v >= 0x80:
            expected.append((v & 0x7F) | 0x80)
            v >>= 7
        expected.append(v)
    assert data == bytes(expected)


def test_the_first_round_is_rebuilt_from_the_block_sizes() -> None:
    n = 100_003
    corrector = CascadeCorrector(np.zeros(n, dtype=np.uint8), 0.02, 3)
    rows = corrector.next_query()
    data = corrector.next_query_message()
    assert len(data) <= 50 and rows.shape[0] > 900  # 24 bytes a row before
    np.testing.assert_array_equal(decode_query(data, n, 16), rows)
    np.testing.assert_array_equal(top_level_rows(n, cascade_block_sizes(n, 0.02, 16)), rows)


def _exchange(
    reference: np.ndarray, noisy: np.ndarray, qber: float, seed: int, wire: bool
) -> tuple[CascadeCorrector, CascadeResponder, int]:
    corrector = CascadeCorrector(noisy, qber, seed)
    responder = CascadeResponder(reference, seed)
    sent = 0
    while True:
        if wire:
            message = corrector.next_query_message()
            if message is None:
                break
            sent += len(message)
            corrector.apply_reply_message(responder.reply_message(message))
        else:
            query = corrector.next_query()
            if query is None:
                break
            sent += query.size * 8
            corrector.apply_reply(responder.reply(query))
    return corrector, responder, sent


@pytest.mark.parametrize(("n", "qber", "seed"), [(20_000, 0.05, 1), (300_000, 0.01, 2)])
def test_the_wire_form_gives_the_same_key_leak_and_round_trips(
    n: int, qber: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 2, n, dtype=np.uint8)
    noisy = reference ^ (rng.random(n) < qber).astype(np.uint8)
    arrays = _exchange(reference, noisy, qber, seed, wire=False)
    wire = _exchange(reference, noisy, qber, seed, wire=True)
    np.testing.assert_array_equal(wire[0].corrected_key, arrays[0].corrected_key)
    np.testing.assert_array_equal(wire[0].corrected_key, reference)
    for a, b in ((wire[0], arrays[0]), (wire[1], arrays[1])):
        assert (a.leak_bits, a.total_leak_bits) == (b.leak_bits, b.total_leak_bits)
    assert wire[0].round_trips == arrays[0].round_trips
    # bytes up: over 6x fewer than three int64 a row
    assert wire[2] * 6 < arrays[2], (wire[2], arrays[2])


def test_answers_in_wire_order_go_back_to_their_rows() -> None:
    rng = np.random.default_rng(5)
    reference = rng.integers(0, 2, 5000, dtype=np.uint8)
    noisy = reference ^ (rng.random(5000) < 0.05).astype(np.uint8)
    corrector = CascadeCorrector(noisy, 0.05, 9)
    responder = CascadeResponder(reference, 9)
    corrector.apply_reply_message(responder.reply_message(corrector.next_query_message()))
    rows = corrector.next_query()
    data, order = encode_rows(rows)
    assert not np.array_equal(order, np.arange(order.size))  # the order does change
    corrector.next_query_message()
    wire_answers = responder.reply_message(data)
    np.testing.assert_array_equal(wire_answers[np.argsort(order)], responder.reply(rows))
    with pytest.raises(ProtocolError, match="not taken by next_query_message"):
        corrector.apply_reply(wire_answers[np.argsort(order)])
        corrector.apply_reply_message(wire_answers)


N, PASSES = 10_000, 16
GOOD = encode_rows(np.array([[0, 64, 96], [3, 10, 20], [3, 900, 901]]))[0]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"", "query is empty"),
        (b"\x07\x01", "format 7 is unknown"),
        (GOOD[:-1] + b"\x80", "end inside a varint"),
        (GOOD + b"\x05", "need 6 values after the header, got 7"),
        (GOOD[:-1], "need 6 values after the header, got 5"),
        (b"\x02\x81\x00", r"overlong varint"),
        (b"\x02" + b"\xff" * 9 + b"\x01", "longer than 9 bytes"),
        (b"\x02\x00", r"0 passes given"),
        (b"\x02\x01\x10\x01\x00\x00", r"pass index outside 0\.\.15"),
        (b"\x02\x01\x00\x00", r"row count outside"),
        (b"\x02\x01\x00\x01" + encode_varints(np.array([N, 0])), "start gap or length outside"),
        (b"\x02\x01\x00\x01" + encode_varints(np.array([N - 1, 1])), "ends after the key"),
        (encode_top_level([64, 1024]), "must give 16 block sizes"),
        (encode_top_level([64] * 15 + [N + 1]), r"block sizes must lie in 1..10000"),
        (b"\x01\x10" + b"\x00" * 16, r"block sizes must lie in 1..10000"),
    ],
)
def test_malformed_queries_are_refused_with_a_reason(data: bytes, complaint: str) -> None:
    assert decode_query(GOOD, N, PASSES).shape == (3, 3)
    with pytest.raises(ProtocolError, match=complaint):
        decode_query(data, N, PASSES)
    responder = CascadeResponder(np.zeros(N, dtype=np.uint8), 1)
    with pytest.raises(ProtocolError, match=complaint):
        responder.reply_message(data)
    assert responder.leak_bits == 0  # nothing answered, nothing disclosed


def test_the_responder_decodes_against_its_own_key_and_passes() -> None:
    responder = CascadeResponder(np.zeros(100, dtype=np.uint8), 1, passes=4)
    with pytest.raises(ProtocolError, match=r"pass index outside 0\.\.3"):
        responder.reply_message(encode_rows(np.array([[5, 0, 10]]))[0])  # pass 5 of 4
    with pytest.raises(ProtocolError, match="ends after the key's 100 bits"):
        responder.reply_message(encode_rows(np.array([[1, 90, 101]]))[0])
    with pytest.raises(ProtocolError, match="must be bytes"):
        responder.reply_message(np.zeros(3, dtype=np.int64))  # type: ignore[arg-type]
    assert responder.leak_bits == 0


def _outcome(decode: object, data: bytes, n: int, passes: int) -> object:
    try:
        return decode(data, n, passes).tolist()  # type: ignore[operator]
    except ProtocolError as exc:
        return str(exc)


@SETTINGS
@given(case=query_rows(), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255))))
def test_the_kernels_match_their_references(
    case: tuple[np.ndarray, int, int], edits: list[tuple[int, int]]
) -> None:
    rows, n, passes = case
    data, order = encode_rows(rows)
    reference, reference_order = encode_rows_reference(rows)
    assert data == reference and np.array_equal(order, reference_order)
    planned, planned_order = encode_planned_rows(rows)  # the corrector's own rows, unchecked
    assert planned == data and np.array_equal(planned_order, order)
    # valid, then damaged bytes: the same rows or the same complaint
    damaged = bytearray(data)
    for position, value in edits:
        damaged[position % len(damaged)] = value
    for candidate in (data, bytes(damaged), bytes(damaged[: len(damaged) // 2])):
        assert _outcome(decode_query, candidate, n, passes) == _outcome(
            decode_query_reference, candidate, n, passes
        )
