"""Detection report: compact uplink encoding of detected pulse indices and OGS bases.

Layout (version 1), all multi-byte integers little-endian:

    offset  size  field
    0       1     version (1)
    1       1     Golomb-Rice parameter k (0..62)
    2       4     count n of detections (uint32)
    6       8     first pulse index (uint64, < 2**63; 0 when n == 0)
    14      ceil(n/8)  OGS bases, 1 bit each (np.packbits, big bit order)
    ...     rest  Rice code of the n-1 gaps idx[i] - idx[i-1] - 1, zero-padded to a byte

A Rice codeword is q = v >> k one-bits, a zero bit, then the k low bits of v, most significant
first (Golomb, IEEE Trans. Inf. Theory 12, 399 (1966); Rice, JPL 79-22 (1979)). Gaps between
detections of a memoryless channel are geometric, for which Golomb-Rice codes are near-optimal
(Gallager and Van Voorhis, IEEE Trans. Inf. Theory 21, 228 (1975)).
"""

from __future__ import annotations

import math
import struct

import numba
import numpy as np

from satqkd_core.errors import InputError

REPORT_VERSION = 1
_HEADER = struct.Struct("<BBIQ")
HEADER_BYTES = _HEADER.size
_MAX_RICE_PARAMETER = 62
_MAX_COUNT = 2**32 - 1
_INT64_MAX = 2**63 - 1

# Kernel status codes, turned into InputError messages by the Python wrapper.
_OK = 0
_TRUNCATED = 1
_OVERFLOW = 2
_TRAILING = 3


def _expected_codeword_bits(log_theta: float, k: int) -> float:
    """Mean Rice codeword length for a geometric source P(v) = (1-theta) theta^v."""
    # E[v >> k] = sum_{j>=1} P(v >= j 2^k) = r / (1 - r) with r = theta^(2^k).
    exponent = (2.0**k) * log_theta
    one_minus_r = -math.expm1(exponent)
    if one_minus_r == 0.0:
        return math.inf  # k far too small for this mean: unary parts of unbounded length
    return k + 1.0 + math.exp(exponent) / one_minus_r


def rice_parameter_for_mean_gap(mean_value: float) -> int:
    """Return the Rice parameter k minimising the expected length for a geometric mean value."""
    if not (math.isfinite(mean_value) and mean_value >= 0.0):
        raise InputError(f"mean_value: must be a finite number >= 0, got {mean_value!r}")
    if mean_value == 0.0:
        return 0
    # ln(theta) with theta = mean / (1 + mean), computed without rounding theta to 1.
    log_theta = -math.log1p(1.0 / mean_value)
    costs = [_expected_codeword_bits(log_theta, k) for k in range(_MAX_RICE_PARAMETER + 1)]
    return int(np.argmin(costs))


@numba.njit(cache=True, nogil=True)
def _rice_stream_bits(pulse_index: np.ndarray, k: int) -> np.int64:
    total = np.int64(0)
    for i in range(1, pulse_index.size):
        v = pulse_index[i] - pulse_index[i - 1] - 1
        total += (v >> k) + k + 1
    return total


@numba.njit(cache=True, inline="always")
def _put_bits(
    out: np.ndarray, byte: int, pending: np.uint64, n_pending: int, value: np.uint64, length: int
) -> tuple[int, np.uint64, int]:
    """Append the `length` (<= 56) low bits of value, most significant first, after the
    n_pending (<= 7) bits held in `pending`; write out the whole bytes. Return the new state."""
    pending = (pending << np.uint64(length)) | value
    n_pending += length
    while n_pending >= 8:
        n_pending -= 8
        out[byte] = np.uint8((pending >> np.uint64(n_pending)) & np.uint64(0xFF))
        byte += 1
    pending &= (np.uint64(1) << np.uint64(n_pending)) - np.uint64(1)
    return byte, pending, n_pending


@numba.njit(cache=True, nogil=True)
def _rice_encode_kernel(pulse_index: np.ndarray, k: int, out: np.ndarray) -> np.int64:
    """Write the Rice code of the gaps into the zeroed buffer out; return the bits written."""
    # Bits gather in a 64-bit word and leave a byte at a time (not one memory update per bit).
    byte = 0
    pending = np.uint64(0)
    n_pending = 0
    ones = np.uint64((1 << 56) - 1)
    for i in range(1, pulse_index.size):
        v = pulse_index[i] - pulse_index[i - 1] - 1
        q = v >> k
        while q >= 56:
            byte, pending, n_pending = _put_bits(out, byte, pending, n_pending, ones, 56)
            q -= 56
        unary = (np.uint64(1) << np.uint64(q)) - np.uint64(1)
        byte, pending, n_pending = _put_bits(out, byte, pending, n_pending, unary, q)
        # The terminating zero, then the k low bits of v: k + 1 <= 63 bits, in two pieces.
        low = np.uint64(v) & ((np.uint64(1) << np.uint64(k)) - np.uint64(1))
        high_length = (k + 1) // 2
        low_length = k + 1 - high_length
        high = low >> np.uint64(low_length)
        rest = low & ((np.uint64(1) << np.uint64(low_length)) - np.uint64(1))
        byte, pending, n_pending = _put_bits(out, byte, pending, n_pending, high, high_length)
        byte, pending, n_pending = _put_bits(out, byte, pending, n_pending, rest, low_length)
    if n_pending:
        out[byte] = np.uint8(pending << np.uint64(8 - n_pending))
    return np.int64(byte) * 8 + n_pending


def _rice_encode_kernel_reference(pulse_index: np.ndarray, k: int, out: np.ndarray) -> int:
    """Plain-Python reference for _rice_encode_kernel (builds a bit string, then packs it)."""
    bits: list[str] = []
    for i in range(1, len(pulse_index)):
        v = int(pulse_index[i]) - int(pulse_index[i - 1]) - 1
        bits.append("1" * (v >> k) + "0")
        if k:
            bits.append(format(v & ((1 << k) - 1), f"0{k}b"))
    stream = "".join(bits)
    for byte_i in range(0, len(stream), 8):
        chunk = stream[byte_i : byte_i + 8].ljust(8, "0")
        out[byte_i // 8] = int(chunk, 2)
    return len(stream)


@numba.njit(cache=True, nogil=True)
def _rice_decode_kernel(
    stream: np.ndarray, k: int, first_index: np.int64, out: np.ndarray
) -> tuple[int, np.int64]:
    """Decode out.size - 1 gaps after first_index into out; return (status, bit position)."""
    n_bits = np.int64(stream.size) * 8
    int64_max = np.int64(9223372036854775807)
    q_limit = int64_max >> k
    pos = np.int64(0)
    if out.size == 0:
        return _OK, pos
    out[0] = first_index
    for i in range(1, out.size):
        q = np.int64(0)
        while True:
            if pos >= n_bits:
                return _TRUNCATED, pos
            bit = (stream[pos >> 3] >> (7 - (pos & 7))) & 1
            pos += 1
            if bit == 0:
                break
            q += 1
            if q > q_limit:
                return _OVERFLOW, pos
        if pos + k > n_bits:
            return _TRUNCATED, pos
        r = np.int64(0)
        for _ in range(k):
            r = (r << 1) | ((stream[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
        v = (q << k) | r
        previous = out[i - 1]
        if v > int64_max - previous - 1:
            return _OVERFLOW, pos
        out[i] = previous + 1 + v
    # Only zero padding up to the next byte boundary may follow the last codeword.
    if n_bits - pos >= 8:
        return _TRAILING, pos
    for p in range(pos, n_bits):
        if (stream[p >> 3] >> (7 - (p & 7))) & 1:
            return _TRAILING, pos
    return _OK, pos


def _rice_decode_kernel_reference(
    stream: np.ndarray, k: int, first_index: int, out: np.ndarray
) -> tuple[int, int]:
    """Plain-Python reference for _rice_decode_kernel (works on a bit string)."""
    bits = "".join(format(int(b), "08b") for b in stream)
    pos = 0
    if len(out) == 0:
        return _OK, 0
    out[0] = first_index
    for i in range(1, len(out)):
        end = bits.find("0", pos)
        run = (end if end >= 0 else len(bits)) - pos
        if run > _INT64_MAX >> k:
            return _OVERFLOW, pos + (_INT64_MAX >> k) + 1
        if end < 0:
            return _TRUNCATED, len(bits)
        q = run
        pos = end + 1
        if pos + k > len(bits):
            return _TRUNCATED, pos
        r = int(bits[pos : pos + k], 2) if k else 0
        pos += k
        v = (q << k) | r
        if int(out[i - 1]) + 1 + v > _INT64_MAX:
            return _OVERFLOW, pos
        out[i] = int(out[i - 1]) + 1 + v
    if len(bits) - pos >= 8 or "1" in bits[pos:]:
        return _TRAILING, pos
    return _OK, pos


def _validate_report_inputs(pulse_index: object, basis: object) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pulse_index, np.ndarray) or pulse_index.ndim != 1:
        raise InputError("pulse_index: must be a 1-D numpy array of int64")
    if pulse_index.dtype != np.int64:
        raise InputError(f"pulse_index: must have dtype int64, got {pulse_index.dtype}")
    if not isinstance(basis, np.ndarray) or basis.ndim != 1:
        raise InputError("basis: must be a 1-D numpy array of uint8")
    if basis.dtype != np.uint8:
        raise InputError(f"basis: must have dtype uint8, got {basis.dtype}")
    if basis.size != pulse_index.size:
        raise InputError(
            f"basis: length {basis.size} does not match pulse_index length {pulse_index.size}"
        )
    if pulse_index.size > _MAX_COUNT:
        raise InputError(f"pulse_index: at most {_MAX_COUNT} detections per report")
    if pulse_index.size:
        if pulse_index[0] < 0:
            raise InputError(f"pulse_index: must be >= 0, got {pulse_index[0]} at index 0")
        steps = np.diff(pulse_index)
        if steps.size and steps.min() <= 0:
            bad = int(np.flatnonzero(steps <= 0)[0]) + 1
            raise InputError(
                f"pulse_index: must be strictly increasing, got {pulse_index[bad]} after "
                f"{pulse_index[bad - 1]} at index {bad}"
            )
        if basis.max() > 1:
            bad = int(np.flatnonzero(basis > 1)[0])
            raise InputError(f"basis: values must be 0 or 1, got {basis[bad]} at index {bad}")
    return np.ascontiguousarray(pulse_index), np.ascontiguousarray(basis)


def encode_detection_report(pulse_index: np.ndarray, basis: np.ndarray) -> bytes:
    """Encode strictly increasing pulse indices (Rice-coded gaps) and their OGS bases."""
    pulse_index, basis = _validate_report_inputs(pulse_index, basis)
    n = pulse_index.size
    if n == 0:
        return _HEADER.pack(REPORT_VERSION, 0, 0, 0)
    mean_value = (int(pulse_index[-1]) - int(pulse_index[0])) / (n - 1) - 1.0 if n > 1 else 0.0
    k = rice_parameter_for_mean_gap(mean_value)
    n_bits = int(_rice_stream_bits(pulse_index, k))
    stream = np.zeros((n_bits + 7) // 8, dtype=np.uint8)
    written = _rice_encode_kernel(pulse_index, k, stream)
    assert written == n_bits  # the two kernels count codeword lengths the same way
    header = _HEADER.pack(REPORT_VERSION, k, n, int(pulse_index[0]))
    return header + np.packbits(basis, bitorder="big").tobytes() + stream.tobytes()


_STATUS_MESSAGES = {
    _TRUNCATED: "data: truncated: the gap code ends before {n} indices were decoded",
    _OVERFLOW: "data: a decoded gap overflows the int64 pulse index range (at bit {pos})",
    _TRAILING: "data: unexpected data after the last gap codeword (at bit {pos})",
}


def decode_detection_report(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a detection report into (pulse_index int64[], basis uint8[])."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"data: must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise InputError(f"data: {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
    version, k, n, first_index = _HEADER.unpack_from(data)
    if version != REPORT_VERSION:
        raise InputError(f"data: unsupported report version {version} (expected {REPORT_VERSION})")
    if k > _MAX_RICE_PARAMETER:
        raise InputError(f"data: Rice parameter {k} exceeds {_MAX_RICE_PARAMETER}")
    if first_index > _INT64_MAX:
        raise InputError(f"data: first pulse index {first_index} exceeds the int64 range")
    basis_bytes = (n + 7) // 8
    body = len(data) - HEADER_BYTES - basis_bytes
    # Every gap codeword has at least k + 1 bits: check before allocating n-element arrays,
    # so a forged count cannot make the decoder allocate gigabytes.
    min_stream_bits = max(n - 1, 0) * (k + 1)
    if body < 0 or body * 8 < min_stream_bits:
        raise InputError(
            f"data: truncated: {n} detections need at least "
            f"{HEADER_BYTES + basis_bytes + (min_stream_bits + 7) // 8} bytes, got {len(data)}"
        )
    if n == 0:
        if first_index != 0 or body != 0:
            raise InputError("data: an empty report must have first index 0 and no body")
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint8)
    raw_bases = np.frombuffer(data, dtype=np.uint8, count=basis_bytes, offset=HEADER_BYTES)
    basis = np.unpackbits(raw_bases, count=n, bitorder="big")
    if n % 8 and raw_bases[-1] & ((1 << (8 - n % 8)) - 1):
        raise InputError("data: padding bits after the last basis bit are not zero")
    stream = np.frombuffer(data, dtype=np.uint8, offset=HEADER_BYTES + basis_bytes)
    pulse_index = np.empty(n, dtype=np.int64)
    status, pos = _rice_decode_kernel(stream, k, np.int64(first_index), pulse_index)
    if status != _OK:
        raise InputError(_STATUS_MESSAGES[int(status)].format(n=n, pos=int(pos)))
    return pulse_index, basis


def gap_entropy_bits(pulse_index: np.ndarray) -> float:
    """Return the entropy per detection of geometric gaps with the observed mean gap."""
    if not isinstance(pulse_index, np.ndarray) or pulse_index.ndim != 1:
        raise InputError("pulse_index: must be a 1-D numpy array of int64")
    if not np.issubdtype(pulse_index.dtype, np.integer):
        raise InputError(f"pulse_index: must have an integer dtype, got {pulse_index.dtype}")
    if pulse_index.size < 2:
        return 0.0
    mean_gap = (int(pulse_index[-1]) - int(pulse_index[0])) / (pulse_index.size - 1)
    if mean_gap < 1.0:
        raise InputError("pulse_index: must be strictly increasing (mean gap below 1)")
    if mean_gap == 1.0:
        return 0.0
    # Gaps g >= 1 with P(g) = p (1-p)^(g-1), p = 1/mean: H = h(p) / p bits.
    p = 1.0 / mean_gap
    return (-p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)) / p
