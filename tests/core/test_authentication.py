"""Tests for satqkd_core.authentication: Wegman-Carter tags with one-time-pad words."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.authentication import (
    ISSUED_KEPT,
    TAG_BYTES,
    WegmanCarterAuthenticator,
    gf2_64_multiply,
    preshared_key_bytes,
)
from satqkd_core.errors import AuthenticationError, InputError

UP, DOWN = 0, 1


def _shared_key(messages_per_direction: int = 16, seed: int = 7) -> bytes:
    size = preshared_key_bytes(messages_per_direction)
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _pair(
    messages_per_direction: int = 16,
) -> tuple[WegmanCarterAuthenticator, WegmanCarterAuthenticator]:
    key = _shared_key(messages_per_direction)
    return WegmanCarterAuthenticator(key, UP), WegmanCarterAuthenticator(key, DOWN)


def _gf2_64_multiply_naive(a: int, b: int) -> int:
    """Carry-less product to 128 bits, then polynomial long division by x^64 + x^4 + x^3 + x + 1."""
    product = 0
    for bit in range(64):
        if (b >> bit) & 1:
            product ^= a << bit
    modulus = (1 << 64) | 0x1B
    for degree in range(127, 63, -1):
        if (product >> degree) & 1:
            product ^= modulus << (degree - 64)
    return product


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, 2**64 - 1), b=st.integers(0, 2**64 - 1), c=st.integers(0, 2**64 - 1))
def test_gf2_64_multiply_is_field_multiplication(a: int, b: int, c: int) -> None:
    assert gf2_64_multiply(a, b) == _gf2_64_multiply_naive(a, b)
    assert gf2_64_multiply(a, b) == gf2_64_multiply(b, a)
    assert gf2_64_multiply(a, b ^ c) == gf2_64_multiply(a, b) ^ gf2_64_multiply(a, c)
    assert gf2_64_multiply(a, 1) == a


def test_gf2_64_reduction_constant() -> None:
    assert gf2_64_multiply(1 << 63, 2) == 0x1B  # x^63 * x = x^64 = x^4 + x^3 + x + 1


@settings(max_examples=100, deadline=None)
@given(message=st.binary(max_size=300), seq=st.integers(0, 15))
def test_good_tags_verify_both_ways(message: bytes, seq: int) -> None:
    ground, payload = _pair()
    payload.verify(message, seq, ground.tag(message, seq))
    ground.verify(message, seq, payload.tag(message, seq))


@settings(max_examples=150, deadline=None)
@given(message=st.binary(min_size=1, max_size=200), seq=st.integers(0, 15), data=st.data())
def test_any_flipped_message_bit_fails(message: bytes, seq: int, data: st.DataObject) -> None:
    ground, payload = _pair()
    tag = ground.tag(message, seq)
    bit = data.draw(st.integers(0, 8 * len(message) - 1))
    forged = bytearray(message)
    forged[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(AuthenticationError, match=f"seq {seq}"):
        payload.verify(bytes(forged), seq, tag)


@pytest.mark.parametrize("bit", range(8 * TAG_BYTES))
def test_any_flipped_tag_bit_fails(bit: int) -> None:
    ground, payload = _pair()
    message = b"EC_QUERY frame 3"
    tag = bytearray(ground.tag(message, 3))
    tag[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(AuthenticationError, match="does not verify"):
        payload.verify(message, 3, bytes(tag))


def test_appended_or_truncated_message_fails() -> None:
    ground, payload = _pair()
    tag = ground.tag(b"abc", 0)
    for other in (b"abc\x00", b"ab", b""):
        with pytest.raises(AuthenticationError):
            payload.verify(other, 0, tag)


@pytest.mark.parametrize("seq", [0, 1, 7, 14])
def test_tag_does_not_verify_at_next_seq(seq: int) -> None:
    ground, payload = _pair()
    message = b"PA_SEED block 12"
    tag = ground.tag(message, seq)
    with pytest.raises(AuthenticationError):
        payload.verify(message, seq + 1, tag)


def test_wrong_direction_fails() -> None:
    ground, payload = _pair()
    message = b"VERIFY_RESULT ok"
    up_tag = ground.tag(message, 4)
    # a reflected message: the ground's own up-link tag offered to the ground as a down-link one
    with pytest.raises(AuthenticationError):
        ground.verify(message, 4, up_tag)
    # the same message sent down by the payload carries a different tag
    assert payload.tag(message, 4) != up_tag


def test_same_seq_retag_gives_same_tag_but_other_message_is_refused() -> None:
    ground, _ = _pair()
    first = ground.tag(b"one", 2)
    assert ground.tag(b"one", 2) == first
    with pytest.raises(AuthenticationError, match="seq 2 already used"):
        ground.tag(b"two", 2)


def test_the_sender_remembers_a_bounded_number_of_tags_and_never_reuses_an_older_pad() -> None:
    """Issue 13 (memory flat over many passes): the sender keeps the last ISSUED_KEPT tags,
    not one per message for ever; a seq older than those cannot be tagged again at all (with
    the same message or another), so forgetting never lets a pad word be used twice."""
    n = ISSUED_KEPT + 10
    ground, payload = _pair(n)
    tags = [ground.tag(b"m%d" % seq, seq) for seq in range(n)]
    assert len(ground._issued) == ISSUED_KEPT  # bounded
    for seq in (0, 9):  # forgotten: refused, whichever message
        for message in (b"m%d" % seq, b"other"):
            with pytest.raises(AuthenticationError, match=f"seq {seq} is older than the last"):
                ground.tag(message, seq)
    assert ground.tag(b"m10", 10) == tags[10]  # still remembered: the same tag again
    with pytest.raises(AuthenticationError, match="seq 10 already used"):
        ground.tag(b"other", 10)
    payload.verify(b"m%d" % (n - 1), n - 1, tags[-1])


def test_pool_exhaustion_and_extension() -> None:
    ground, payload = _pair(messages_per_direction=3)
    assert ground.max_sequence() == 2
    payload.verify(b"m", 2, ground.tag(b"m", 2))
    with pytest.raises(AuthenticationError, match="authentication pool exhausted at seq 3"):
        ground.tag(b"m", 3)
    with pytest.raises(AuthenticationError, match="authentication pool exhausted at seq 3"):
        payload.verify(b"m", 3, bytes(TAG_BYTES))
    fresh = np.random.default_rng(99).integers(0, 256, 32, dtype=np.uint8).tobytes()
    ground.extend_pool(fresh)
    payload.extend_pool(fresh)
    assert ground.max_sequence() == 4
    payload.verify(b"next", 3, ground.tag(b"next", 3))
    ground.verify(b"reply", 4, payload.tag(b"reply", 4))


def test_different_hash_keys_give_different_tags() -> None:
    key = bytearray(_shared_key())
    a = WegmanCarterAuthenticator(bytes(key), UP)
    key[3] ^= 1  # hash key k1 differs, same pad words
    b = WegmanCarterAuthenticator(bytes(key), UP)
    assert a.tag(b"message", 0) != b.tag(b"message", 0)


def test_preshared_key_bytes() -> None:
    assert preshared_key_bytes(0) == 16
    assert preshared_key_bytes(1000) == 16 + 16000
    with pytest.raises(InputError, match="messages_per_direction"):
        preshared_key_bytes(-1)


@pytest.mark.parametrize(
    ("key", "direction", "match"),
    [
        (bytes(15), 0, "at least 16 bytes"),
        (bytes(20), 0, "multiple of 8"),
        (bytes(32), 2, "send_direction"),
        (bytes(32), True, "send_direction"),
        ("not bytes", 0, "preshared_key must be bytes"),
    ],
)
def test_bad_construction_rejected(key: object, direction: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        WegmanCarterAuthenticator(key, direction)  # type: ignore[arg-type]


def test_bad_arguments_rejected() -> None:
    ground, payload = _pair()
    with pytest.raises(InputError, match="seq"):
        ground.tag(b"m", -1)
    with pytest.raises(InputError, match="message must be bytes"):
        ground.tag("text", 0)  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError, match="tag must be 8 bytes"):
        payload.verify(b"m", 0, b"short")
    with pytest.raises(InputError, match="multiple of 8"):
        ground.extend_pool(bytes(7))
