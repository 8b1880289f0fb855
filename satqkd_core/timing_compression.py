"""Compressed timing and basis of the low-count side, the only BBM92 data that crosses the link
before sifting.

Timestamps are cut to ticks of `resolution_ps` (125 ps by default, well inside a 1 ns window)
and sent as the first tick and the gaps between successive ticks. Detection times of a Poisson
stream have geometrically distributed gaps, for which a Golomb code is optimal (Gallager and
van Voorhis, IEEE Trans. Inf. Theory 21, 228 (1975)); with a power-of-two parameter 2^k it is
a Rice code (Rice, JPL Publication 79-22 (1979)): the quotient gap >> k in unary, then the k
low bits. The encoder picks the k that gives the fewest bits for the block. A quotient of
`ESCAPE_QUOTIENT` or more (a long gap, e.g. a cloud) is sent as that many ones followed by the
Elias gamma code of quotient - ESCAPE_QUOTIENT + 1, so no gap costs more than ~2 log2 bits.
S-Fifteen's qcrypto `chopper` sends the low-count side's timing the same way in spirit (a
variable-length difference code); this format is our own. Basis information is one bit per tag
(0 = X, 1 = Z), packed; the detected bit value never crosses the link.

`timing_entropy_bits` is the yardstick: n times the entropy of a geometric distribution with the
block's mean gap, the entropy of Poisson arrivals and the largest entropy any gap distribution of
that mean can have.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core.errors import InputError

__all__ = [
    "ESCAPE_QUOTIENT",
    "CompressedTiming",
    "decode_timing",
    "encode_timing",
    "rice_code_bits",
    "rice_decode",
    "rice_decode_reference",
    "rice_encode",
    "rice_encode_reference",
    "timing_entropy_bits",
]

ESCAPE_QUOTIENT = 32
MAX_RICE_K = 56
_MAGIC = b"BTC1"
_HEADER = struct.Struct(">4sQIqBQ")  # magic, count, resolution_ps, first tick, k, timing bytes
_MAX_COUNT = 1 << 40


@numba.njit(cache=True, nogil=True)
def _put_bits(out: np.ndarray, position: int, value: np.uint64, n_bits: int) -> int:
    """Write the n_bits low bits of value, most significant first, at bit position; return end."""
    for i in range(n_bits - 1, -1, -1):
        if (value >> np.uint64(i)) & np.uint64(1):
            out[position >> 3] |= np.uint8(0x80 >> (position & 7))
        position += 1
    return position


@numba.njit(cache=True, nogil=True)
def rice_encode(gaps: np.ndarray, k: int, out: np.ndarray) -> int:
    """Write the Rice(k) codes of gaps (uint64) into out (zeroed uint8); return the bits used
    (out must hold them: see `rice_code_bits`)."""
    position = 0
    for i in range(gaps.shape[0]):
        gap = gaps[i]
        quotient = gap >> np.uint64(k)
        if quotient < np.uint64(ESCAPE_QUOTIENT):
            ones = int(quotient)
            for _ in range(ones):
                out[position >> 3] |= np.uint8(0x80 >> (position & 7))
                position += 1
            position += 1  # the terminating zero
        else:
            for _ in range(ESCAPE_QUOTIENT):
                out[position >> 3] |= np.uint8(0x80 >> (position & 7))
                position += 1
            value = quotient - np.uint64(ESCAPE_QUOTIENT) + np.uint64(1)
            width = 0
            while (value >> np.uint64(width + 1)) > np.uint64(0):
                width += 1
            position += width  # Elias gamma: width zeros, then value in width + 1 bits
            position = _put_bits(out, position, value, width + 1)
        if k > 0:
            position = _put_bits(
                out, position, gap & ((np.uint64(1) << np.uint64(k)) - np.uint64(1)), k
            )
    return position


def rice_encode_reference(gaps: np.ndarray, k: int) -> tuple[bytes, int]:
    """Plain-Python reference of `rice_encode`: (bytes, bits used)."""
    bits: list[str] = []
    for gap in (int(g) for g in gaps):
        quotient = gap >> k
        if quotient < ESCAPE_QUOTIENT:
            bits.append("1" * quotient + "0")
        else:
            value = quotient - ESCAPE_QUOTIENT + 1
            binary = format(value, "b")
            bits.append("1" * ESCAPE_QUOTIENT + "0" * (len(binary) - 1) + binary)
        if k:
            bits.append(format(gap & ((1 << k) - 1), f"0{k}b"))
    text = "".join(bits)
    padded = text + "0" * (-len(text) % 8)
    data = bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))
    return data, len(text)


@numba.njit(cache=True, nogil=True)
def _get_bit(data: np.ndarray, position: int) -> int:
    return (int(data[position >> 3]) >> (7 - (position & 7))) & 1


@numba.njit(cache=True, nogil=True)
def rice_decode(data: np.ndarray, n_bits: int, k: int, out: np.ndarray) -> int:
    """Decode out.size Rice(k) codes from the first n_bits of data; return the bits consumed,
    or -1 if the data end early or a code is malformed."""
    position = 0
    for i in range(out.shape[0]):
        quotient = np.uint64(0)
        while True:
            if position >= n_bits:
                return -1
            bit = _get_bit(data, position)
            position += 1
            if bit == 0:
                break
            quotient += np.uint64(1)
            if quotient == np.uint64(ESCAPE_QUOTIENT):
                break
        if quotient == np.uint64(ESCAPE_QUOTIENT):
            width = 0
            while True:
                if position >= n_bits:
                    return -1
                if _get_bit(data, position) == 1:
                    break
                width += 1
                position += 1
                if width > 63 - k:
                    return -1
            if position + width + 1 > n_bits:
                return -1
            value = np.uint64(0)
            for _ in range(width + 1):
                value = (value << np.uint64(1)) | np.uint64(_get_bit(data, position))
                position += 1
            quotient = value + np.uint64(ESCAPE_QUOTIENT) - np.uint64(1)
        if position + k > n_bits:
            return -1
        low = np.uint64(0)
        for _ in range(k):
            low = (low << np.uint64(1)) | np.uint64(_get_bit(data, position))
            position += 1
        out[i] = (quotient << np.uint64(k)) | low
    return position


def rice_decode_reference(data: bytes, n_bits: int, k: int, count: int) -> list[int] | None:
    """Plain-Python reference of `rice_decode`: the gaps, or None on malformed data."""
    text = "".join(format(byte, "08b") for byte in data)[:n_bits]
    position, gaps = 0, []
    for _ in range(count):
        quotient = 0
        while quotient < ESCAPE_QUOTIENT:
            if position >= len(text):
                return None
            position += 1
            if text[position - 1] == "0":
                break
            quotient += 1
        if quotient == ESCAPE_QUOTIENT:
            zeros = 0
            while position < len(text) and text[position] == "0":
                zeros += 1
                position += 1
                if zeros > 63 - k:
                    return None
            if position + zeros + 1 > len(text):
                return None
            quotient = int(text[position : position + zeros + 1], 2) + ESCAPE_QUOTIENT - 1
            position += zeros + 1
        if position + k > len(text):
            return None
        low = int(text[position : position + k], 2) if k else 0
        position += k
        gaps.append((quotient << k) | low)
    return gaps


def rice_code_bits(gaps: np.ndarray, k: int) -> int:
    """Get the bits `rice_encode` uses for these gaps with parameter k."""
    quotient = (gaps >> np.uint64(k)).astype(np.int64) if gaps.size else np.zeros(0, np.int64)
    short = quotient < ESCAPE_QUOTIENT
    total = int(quotient[short].sum()) + int(short.sum()) * (1 + k)
    long_values = quotient[~short] - ESCAPE_QUOTIENT + 1
    if long_values.size:
        widths = np.floor(np.log2(long_values.astype(np.float64))).astype(np.int64)
        total += int((ESCAPE_QUOTIENT + 2 * widths + 1 + k).sum())
    return total


@dataclass(frozen=True)
class CompressedTiming:
    """One block of the low-count side's tags as it crosses the link."""

    count: int
    resolution_ps: int
    first_tick: int
    rice_k: int
    timing: bytes
    timing_bits: int
    basis: bytes

    def to_bytes(self) -> bytes:
        """Get the wire form: header, Rice-coded gaps, packed basis bits."""
        header = _HEADER.pack(
            _MAGIC, self.count, self.resolution_ps, self.first_tick, self.rice_k, self.timing_bits
        )
        return header + self.timing + self.basis

    @classmethod
    def from_bytes(cls, data: bytes) -> CompressedTiming:
        """Parse the wire form, checking every length (InputError names what is wrong)."""
        if not isinstance(data, (bytes, bytearray)) or len(data) < _HEADER.size:
            raise InputError("compressed timing: shorter than its header")
        magic, count, resolution, first, k, n_bits = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise InputError(f"compressed timing: bad magic {magic!r}")
        if count > _MAX_COUNT or k > MAX_RICE_K or resolution == 0:
            raise InputError("compressed timing: count, rice_k or resolution out of range")
        timing_bytes = (n_bits + 7) // 8
        basis_bytes = (count + 7) // 8
        if len(data) != _HEADER.size + timing_bytes + basis_bytes:
            raise InputError(
                f"compressed timing: {len(data)} bytes, the header announces "
                f"{_HEADER.size + timing_bytes + basis_bytes}"
            )
        timing = bytes(data[_HEADER.size : _HEADER.size + timing_bytes])
        basis = bytes(data[_HEADER.size + timing_bytes :])
        return cls(count, resolution, first, k, timing, n_bits, basis)


def _validated_basis(basis: object, n: int) -> np.ndarray:
    if not isinstance(basis, np.ndarray) or basis.ndim != 1 or basis.dtype != np.uint8:
        raise InputError("basis: must be a 1-D numpy array of uint8")
    if basis.size != n:
        raise InputError(f"basis: length {basis.size} does not match {n} timestamps")
    if n and int(basis.max()) > 1:
        raise InputError("basis: values must be 0 (X) or 1 (Z)")
    return basis


def encode_timing(
    timestamp_ps: np.ndarray, basis: np.ndarray, resolution_ps: int = 125
) -> CompressedTiming:
    """Compress sorted timestamps (int64 ps) and their bases (uint8 0/1) for the link."""
    if not isinstance(timestamp_ps, np.ndarray) or timestamp_ps.ndim != 1:
        raise InputError("timestamp_ps: must be a 1-D numpy array of int64")
    if timestamp_ps.dtype != np.int64:
        raise InputError(f"timestamp_ps: must have dtype int64, got {timestamp_ps.dtype}")
    n = int(timestamp_ps.size)
    if n == 0 or n > _MAX_COUNT:
        raise InputError(f"timestamp_ps: must hold 1..{_MAX_COUNT} tags, got {n}")
    if isinstance(resolution_ps, bool) or not isinstance(resolution_ps, int):
        raise InputError(f"resolution_ps: must be an integer, got {resolution_ps!r}")
    if not 1 <= resolution_ps <= 1_000_000:
        raise InputError(f"resolution_ps: must be in 1..1000000, got {resolution_ps}")
    basis = _validated_basis(basis, n)
    if np.any(timestamp_ps[1:] < timestamp_ps[:-1]):
        bad = int(np.flatnonzero(timestamp_ps[1:] < timestamp_ps[:-1])[0]) + 1
        raise InputError(f"timestamp_ps: must be sorted; tag {bad} is earlier than tag {bad - 1}")
    ticks = np.floor_divide(timestamp_ps, np.int64(resolution_ps))
    gaps = np.diff(ticks).astype(np.uint64)
    mean_gap = float(gaps.mean()) if gaps.size else 1.0
    guess = max(0, int(math.log2(max(mean_gap * math.log(2.0), 1.0))))
    candidates = range(max(0, guess - 2), min(MAX_RICE_K, guess + 3) + 1)
    k = min(candidates, key=lambda c: rice_code_bits(gaps, c))
    n_bits = rice_code_bits(gaps, k)
    out = np.zeros((n_bits + 7) // 8, dtype=np.uint8)
    written = rice_encode(gaps, k, out)
    if written != n_bits:  # the two counts are the same formula; a mismatch is a bug
        raise AssertionError(f"rice_encode wrote {written} bits, expected {n_bits}")
    packed = np.packbits(basis).tobytes()
    return CompressedTiming(n, resolution_ps, int(ticks[0]), k, out.tobytes(), n_bits, packed)


def decode_timing(message: CompressedTiming) -> tuple[np.ndarray, np.ndarray]:
    """Get (timestamps at the start of their tick, int64 ps; bases uint8) from a message."""
    if not isinstance(message, CompressedTiming):
        raise InputError(f"message: must be a CompressedTiming, got {type(message).__name__}")
    n = message.count
    if len(message.timing) != (message.timing_bits + 7) // 8 or len(message.basis) != (n + 7) // 8:
        raise InputError("compressed timing: payload lengths do not match the header")
    gaps = np.empty(max(n - 1, 0), dtype=np.uint64)
    data = np.frombuffer(message.timing, dtype=np.uint8)
    used = rice_decode(data, message.timing_bits, message.rice_k, gaps)
    if used < 0:
        raise InputError("compressed timing: the timing codes end early or are malformed")
    if used != message.timing_bits:
        raise InputError(f"compressed timing: {message.timing_bits - used} bits left over")
    span = float(gaps.astype(np.float64).sum()) + abs(float(message.first_tick))
    if span * message.resolution_ps >= 2.0**62:
        raise InputError("compressed timing: the tags span more than 2^62 ps")
    ticks = np.empty(n, dtype=np.int64)
    ticks[0] = message.first_tick
    np.cumsum(gaps.astype(np.int64), out=ticks[1:])
    ticks[1:] += message.first_tick
    basis = np.unpackbits(np.frombuffer(message.basis, dtype=np.uint8), count=n)
    return ticks * np.int64(message.resolution_ps), basis.astype(np.uint8)


def timing_entropy_bits(timestamp_ps: np.ndarray, resolution_ps: int = 125) -> float:
    """Get n times the entropy (bits) of a geometric gap distribution with the block's mean gap
    in ticks: the information in Poisson arrival times at that resolution."""
    if not isinstance(timestamp_ps, np.ndarray) or timestamp_ps.dtype != np.int64:
        raise InputError("timestamp_ps: must be a numpy array of int64")
    if timestamp_ps.size < 2:
        return 0.0
    ticks = np.floor_divide(timestamp_ps, np.int64(resolution_ps))
    m = float(np.diff(ticks).mean())
    if m <= 0.0:
        return 0.0
    # geometric on {0, 1, ...} with mean m: H = (1 + m) log2(1 + m) - m log2 m
    per_gap = (1.0 + m) * math.log2(1.0 + m) - m * math.log2(m)
    return per_gap * (timestamp_ps.size - 1)
