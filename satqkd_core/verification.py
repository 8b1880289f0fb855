"""Error verification: polynomial universal hashing over the prime field GF(2^61 - 1).

After error correction both ends hash their key with the same random hash key; the payload
sends its tag and the ground compares. A key that still differs passes only if the hash
collides.

Hash family: polynomial evaluation over a prime field (den Boer, J. Computer Security 2 (1993);
the same construction as Bernstein's Poly1305, FSE 2005, over 2^61 - 1 here).
The data bytes are cut into L words of 7 bytes (big-endian, the last one zero-padded), so every
word is < 2^56 < p = 2^61 - 1; a final word holds the data length in bits, so that inputs of
different lengths (or differing only in padding) never share a word list. For a hash key k in
GF(p) the hash is the Horner evaluation

    h_k(w_1..w_L, len) = w_1 k^(L+1) + w_2 k^L + ... + w_L k^2 + len k   (mod p).

For two different inputs the difference h_k(x) - h_k(y) is a non-zero polynomial in k of
degree at most L + 1, so it has at most L + 1 roots: with k uniform in GF(p),
Pr[h_k(x) = h_k(y)] <= (L + 1) / p. With e independent keys the tag is the concatenation of the
e evaluations and Pr[collision] <= ((L + 1) / p)^e, which `verification_hash_key_words`
makes <= eps_cor. The bound needs the hash key to be drawn after the corrected key is fixed
(the ground's key must not depend on it), which the protocol order guarantees (internals.md,
step 5 follows step 4).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from satqkd_core.bits import as_bit_array, as_count
from satqkd_core.errors import InputError

__all__ = [
    "MERSENNE_PRIME_61",
    "WORD_BYTES",
    "poly_hash_words",
    "poly_hash_words_reference",
    "random_verification_hash_key",
    "verification_hash_key_words",
    "verification_tag",
    "verification_tag_bits",
    "verification_word_count",
]

MERSENNE_PRIME_61 = (1 << 61) - 1
WORD_BYTES = 7  # 56-bit words are always below the prime, so no word needs reducing
EVALUATION_BITS = 61  # each evaluation is an element of GF(p), p < 2^61
EVALUATION_BYTES = 8

_P = np.uint64(MERSENNE_PRIME_61)
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK29 = np.uint64((1 << 29) - 1)
_U0 = np.uint64(0)
_U3 = np.uint64(3)
_U8 = np.uint64(8)
_U29 = np.uint64(29)
_U32 = np.uint64(32)
_U61 = np.uint64(61)


@numba.njit(cache=True)
def _mulmod_p61(a: np.uint64, b: np.uint64) -> np.uint64:
    """Return a * b mod 2^61 - 1 for a, b < 2^61, using 64-bit words only."""
    # a = a_hi 2^32 + a_lo with a_hi < 2^29; 2^61 = 1 (mod p) folds every high part back.
    a_hi = a >> _U32
    a_lo = a & _MASK32
    b_hi = b >> _U32
    b_lo = b & _MASK32
    high = a_hi * b_hi  # weight 2^64 = 2^3 (mod p); < 2^58
    middle = a_hi * b_lo + a_lo * b_hi  # weight 2^32; < 2^62
    low = a_lo * b_lo  # weight 1; < 2^64
    total = (
        (high << _U3) + (middle >> _U29) + ((middle & _MASK29) << _U32) + (low & _P) + (low >> _U61)
    )  # < 3 * 2^61 + 2^34: no overflow
    total = (total & _P) + (total >> _U61)
    if total >= _P:
        total -= _P
    return total


@numba.njit(cache=True)
def poly_hash_words(data: np.ndarray, bit_length: np.uint64, hash_keys: np.ndarray) -> np.ndarray:
    """Kernel: polynomial hash of `data` (uint8) and its length word for each key (all < p)."""
    n_bytes = data.shape[0]
    n_words = (n_bytes + WORD_BYTES - 1) // WORD_BYTES
    out = np.empty(hash_keys.shape[0], dtype=np.uint64)
    for key_index in range(hash_keys.shape[0]):
        key = hash_keys[key_index]
        acc = _U0
        for word_index in range(n_words):
            word = _U0
            first = word_index * WORD_BYTES
            for offset in range(WORD_BYTES):
                word = word << _U8
                if first + offset < n_bytes:
                    word |= np.uint64(data[first + offset])
            acc += word  # < 2^61 + 2^56: one conditional subtraction reduces it
            if acc >= _P:
                acc -= _P
            acc = _mulmod_p61(acc, key)
        acc += bit_length
        if acc >= _P:
            acc -= _P
        out[key_index] = _mulmod_p61(acc, key)
    return out


def poly_hash_words_reference(
    data: np.ndarray, bit_length: int, hash_keys: np.ndarray
) -> np.ndarray:
    """Plain-Python reference of `poly_hash_words` with exact integer arithmetic."""
    raw = bytes(np.asarray(data, dtype=np.uint8))
    words = [
        int.from_bytes(raw[i : i + WORD_BYTES].ljust(WORD_BYTES, b"\0"), "big")
        for i in range(0, len(raw), WORD_BYTES)
    ]
    words.append(int(bit_length))
    result = []
    for key in (int(k) for k in hash_keys):
        acc = 0
        for word in words:
            acc = (acc + word) * key % MERSENNE_PRIME_61
        result.append(acc)
    return np.array(result, dtype=np.uint64)


def verification_word_count(key_bits: int) -> int:
    """Number of field words the hash reads for a key of `key_bits` bits (length word included)."""
    n = as_count(key_bits, "key_bits", minimum=1)
    n_bytes = (n + 7) // 8
    return (n_bytes + WORD_BYTES - 1) // WORD_BYTES + 1


def verification_hash_key_words(eps_cor: float, key_bits: int) -> int:
    """Number e of independent hash keys so that ((L + 1) / p)^e <= eps_cor for this key length."""
    eps = _validated_eps(eps_cor)
    degree = verification_word_count(key_bits)
    log2_single = math.log2(degree) - math.log2(MERSENNE_PRIME_61)  # log2 of (L+1)/p, < 0
    evaluations = max(1, math.ceil(math.log2(eps) / log2_single))
    # Guard the float ceiling: the bound must hold, not merely round to it.
    while evaluations * log2_single > math.log2(eps):
        evaluations += 1
    return evaluations


def verification_tag_bits(eps_cor: float, key_bits: int) -> int:
    """Bits of information the disclosed tag can carry (61 per evaluation), to count as leak."""
    return EVALUATION_BITS * verification_hash_key_words(eps_cor, key_bits)


def random_verification_hash_key(rng: np.random.Generator, words: int) -> np.ndarray:
    """Draw `words` hash keys uniformly from GF(2^61 - 1) (uint64) with the given generator."""
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    count = as_count(words, "words", minimum=1)
    return rng.integers(0, MERSENNE_PRIME_61, size=count, dtype=np.uint64)


def verification_tag(key: np.ndarray, hash_key: np.ndarray) -> bytes:
    """Tag of `key` (0/1 bits): 8 big-endian bytes per hash-key word, each word < 2^61 - 1.

    Hash-key words >= 2^61 - 1 are rejected with InputError rather than reduced: reducing a
    uniform 64-bit word mod p is not uniform, and the collision bound assumes uniform keys.
    """
    bits = as_bit_array(key, "key")
    keys = _validated_hash_key(hash_key)
    packed = np.packbits(bits, bitorder="big")  # pad bits are zero; the length word sets n
    evaluations = poly_hash_words(packed, np.uint64(bits.size), keys)
    return evaluations.astype(">u8").tobytes()


def _validated_eps(eps_cor: float) -> float:
    try:
        eps = float(eps_cor)
    except (TypeError, ValueError):
        raise InputError(f"eps_cor must be a number, got {eps_cor!r}") from None
    if not (0.0 < eps < 1.0):
        raise InputError(f"eps_cor must lie in (0, 1), got {eps_cor!r}")
    return eps


def _validated_hash_key(hash_key: object) -> np.ndarray:
    if not isinstance(hash_key, np.ndarray) or hash_key.ndim != 1:
        raise InputError("hash_key must be a 1-D numpy array of uint64 words")
    if hash_key.size == 0:
        raise InputError("hash_key must hold at least one word")
    if not np.issubdtype(hash_key.dtype, np.integer):
        raise InputError(f"hash_key must hold integers, got dtype {hash_key.dtype}")
    if np.issubdtype(hash_key.dtype, np.signedinteger) and hash_key.min() < 0:
        raise InputError("hash_key words must be non-negative")
    keys = np.ascontiguousarray(hash_key, dtype=np.uint64)
    if keys.max() >= _P:
        bad = int(np.flatnonzero(keys >= _P)[0])
        raise InputError(
            f"hash_key word {bad} is {int(keys[bad])}, not below 2^61 - 1 "
            "(draw keys uniformly in the field, e.g. random_verification_hash_key)"
        )
    return keys
