"""Wegman-Carter authentication of classical messages with one-time-pad words from a key pool.

Key layout. The pre-shared key (and every later extension of the pool from fresh QKD key) is a
byte string: bytes 0..7 and 8..15 are the two hash-key words k1, k2 (big-endian, reduced mod
p = 2^61 - 1); the rest is the pad pool, 8 bytes (big-endian) per word. The message with
sequence number `seq` sent in direction d (0 = ground -> payload "up", 1 = payload -> ground
"down") uses pool word 2 * seq + d, once.

Tag (8 bytes). h1 = polynomial hash of the message bytes under k1 over GF(p) (the kernel of
`satqkd_core.verification`, length word included); the 61-bit value h1 is then mixed into 64
bits by a multiplication in GF(2^64): g = k2 * h1 (polynomial basis, modulus
x^64 + x^4 + x^3 + x + 1); tag = g XOR pad.

Why the GF(2^64) step: the one-time pad is applied by XOR, so the hash must be almost
XOR-universal (Wegman and Carter, JCSS 22, 265 (1981); Krawczyk, CRYPTO 1994). The GF(p)
polynomial hash is almost universal (collisions) but not XOR-universal; composing an
eps1-almost-universal hash with an eps2-XOR-universal one gives an (eps1 + eps2)-XOR-universal
hash, since Pr[H(m) ^ H(m') = delta] <= Pr[h1(m) = h1(m')] + max over x != y of
Pr[k2 x ^ k2 y = delta], and k2 x ^ k2 y = k2 (x ^ y) by distributivity.

Forgery probability. k1 and k2 are 64-bit words reduced mod p, so each value of a key has
probability at most 9 / 2^64 (2^64 = 8p + 8). For a message of L words of 7 bytes:
  eps1 <= (L + 1) * 9 / 2^64   (a non-zero polynomial of degree <= L + 1 has <= L + 1 roots),
  eps2 <= 9 / 2^64             (k2 (x ^ y) = delta has exactly one solution k2 in GF(2^64)).
Each pad word is uniform and used once, so a tag reveals nothing about (k1, k2), and an
attacker who has seen any number of authenticated messages substitutes a message (or forges
one for an unused seq) with probability at most eps = 9 (L + 2) / 2^64 per attempt, e.g.
< 8e-17 for a 1 kB message; q attempts succeed with probability at most q * eps. With pad
words taken from QKD key that is eps_sec-secret, add eps_sec (composability).

The sender never uses a pad word for two different messages: tagging a second, different
message with the same seq raises AuthenticationError (re-tagging the same message is allowed
and gives the same tag). The sender remembers the last ISSUED_KEPT tags it issued (a daemon
tags messages for years: remembering all would grow without bound); a seq older than those
is refused outright, so no pad word is ever used twice.
"""

from __future__ import annotations

import hmac

import numpy as np

from satqkd_core.bits import as_count
from satqkd_core.errors import AuthenticationError, InputError
from satqkd_core.verification import MERSENNE_PRIME_61, poly_hash_words

__all__ = [
    "HASH_KEY_BYTES",
    "ISSUED_KEPT",
    "TAG_BYTES",
    "WegmanCarterAuthenticator",
    "gf2_64_multiply",
    "preshared_key_bytes",
]

TAG_BYTES = 8
ISSUED_KEPT = 4096  # tags the sender remembers (for re-tagging the same message); older: refused
HASH_KEY_BYTES = 16  # two 64-bit words, k1 (GF(p) polynomial hash) and k2 (GF(2^64) mixing)
PAD_WORD_BYTES = 8
DIRECTION_UP = 0  # ground -> payload
DIRECTION_DOWN = 1  # payload -> ground

_GF64_REDUCTION = 0x1B  # x^64 = x^4 + x^3 + x + 1 in GF(2)[x] / (x^64 + x^4 + x^3 + x + 1)
_MASK64 = (1 << 64) - 1


def gf2_64_multiply(a: int, b: int) -> int:
    """Product of two 64-bit words in GF(2^64) = GF(2)[x] / (x^64 + x^4 + x^3 + x + 1)."""
    product = 0
    for bit in range(64):
        if (b >> bit) & 1:
            product ^= a
        # a <- a * x, folding the x^64 term back with the reduction polynomial
        carry = a >> 63
        a = (a << 1) & _MASK64
        if carry:
            a ^= _GF64_REDUCTION
    return product


def preshared_key_bytes(messages_per_direction: int) -> int:
    """Pre-shared key length that authenticates `messages_per_direction` messages each way."""
    count = as_count(messages_per_direction, "messages_per_direction")
    return HASH_KEY_BYTES + 2 * PAD_WORD_BYTES * count


class WegmanCarterAuthenticator:
    """Tags messages we send and verifies messages we receive, one pad word per message."""

    def __init__(self, preshared_key: bytes, send_direction: int) -> None:
        key = _as_key_bytes(preshared_key, "preshared_key")
        if len(key) < HASH_KEY_BYTES:
            raise InputError(
                f"preshared_key must hold at least {HASH_KEY_BYTES} bytes (the hash key), "
                f"got {len(key)}"
            )
        if send_direction not in (DIRECTION_UP, DIRECTION_DOWN) or isinstance(send_direction, bool):
            raise InputError(
                f"send_direction must be 0 (ground, sends up) or 1 (payload, sends down), "
                f"got {send_direction!r}"
            )
        self._send_direction = int(send_direction)
        k1 = int.from_bytes(key[0:8], "big") % MERSENNE_PRIME_61
        self._poly_key = np.array([k1], dtype=np.uint64)
        self._mix_key = int.from_bytes(key[8:16], "big") % MERSENNE_PRIME_61
        self._pool = np.empty(0, dtype=np.uint64)
        self._append_pool(key[HASH_KEY_BYTES:], "preshared_key")
        self._issued: dict[int, int] = {}  # seq -> mixed hash of the message tagged with it
        self._forgotten_below = 0  # seqs below this were issued and forgotten: never re-tagged

    def tag(self, message: bytes, seq: int) -> bytes:
        """Tag for a message we send with sequence number `seq`."""
        data = _as_key_bytes(message, "message")
        sequence = as_count(seq, "seq")
        mixed = self._mixed_hash(data)
        previous = self._issued.get(sequence)
        if previous is not None and previous != mixed:
            raise AuthenticationError(
                f"pad word for seq {sequence} already used for a different message"
            )
        if previous is None and sequence < self._forgotten_below:
            raise AuthenticationError(
                f"seq {sequence} is older than the last {ISSUED_KEPT} tags issued: its pad word "
                "may have been used; not tagged"
            )
        pad = self._pad_word(sequence, self._send_direction)
        self._issued[sequence] = mixed
        while len(self._issued) > ISSUED_KEPT:  # forget the lowest seq (and everything below)
            oldest = next(iter(self._issued))  # seqs are issued in increasing order
            del self._issued[oldest]
            self._forgotten_below = max(self._forgotten_below, oldest + 1)
        return (mixed ^ pad).to_bytes(TAG_BYTES, "big")

    def verify(self, message: bytes, seq: int, tag: bytes) -> None:
        """Check the tag of a message we received; raise AuthenticationError if it fails."""
        data = _as_key_bytes(message, "message")
        sequence = as_count(seq, "seq")
        if not isinstance(tag, bytes | bytearray | memoryview) or len(tag) != TAG_BYTES:
            raise AuthenticationError(f"tag must be {TAG_BYTES} bytes for seq {sequence}")
        pad = self._pad_word(sequence, 1 - self._send_direction)
        expected = (self._mixed_hash(data) ^ pad).to_bytes(TAG_BYTES, "big")
        if not hmac.compare_digest(expected, bytes(tag)):
            raise AuthenticationError(f"tag does not verify for seq {sequence}")

    def max_sequence(self) -> int:
        """Highest seq whose pad words (both directions) the pool holds; -1 when none."""
        return self._pool.size // 2 - 1

    def extend_pool(self, key_bytes: bytes) -> None:
        """Append fresh key (a multiple of 8 bytes) to the pad pool; seq numbering continues."""
        self._append_pool(_as_key_bytes(key_bytes, "key_bytes"), "key_bytes")

    def _append_pool(self, key: bytes, name: str) -> None:
        if len(key) % PAD_WORD_BYTES:
            raise InputError(
                f"{name} pad part must be a multiple of {PAD_WORD_BYTES} bytes, "
                f"got {len(key)} bytes"
            )
        words = np.frombuffer(key, dtype=">u8").astype(np.uint64)
        self._pool = np.concatenate([self._pool, words])

    def _pad_word(self, seq: int, direction: int) -> int:
        index = 2 * seq + direction
        if index >= self._pool.size:
            raise AuthenticationError(f"authentication pool exhausted at seq {seq}")
        return int(self._pool[index])

    def _mixed_hash(self, data: bytes) -> int:
        message = np.frombuffer(data, dtype=np.uint8)
        polynomial = poly_hash_words(message, np.uint64(8 * len(data)), self._poly_key)
        return gf2_64_multiply(self._mix_key, int(polynomial[0]))


def _as_key_bytes(value: object, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InputError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)
