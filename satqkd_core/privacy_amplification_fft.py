"""Toeplitz hashing by float64 FFT convolution: the fallback for CPUs without carry-less multiply.

`privacy_amplification.toeplitz_hash` uses this path only when the numba target has no hardware
carry-less multiplication (see decision 0006); the result is the same exact product.

Method. sum_j s[i - j + n - 1] x[j] is entry i + n - 1 of the integer convolution s * x, so
y is a slice of that convolution mod 2. The convolution is computed with numpy's float64 FFT:
in one cyclic transform of fast length L >= n + m - 1 when n + m - 1 <= ONE_SHOT_MAX_LENGTH = 2^25,
else in blocks: output blocks and input chunks of B = FFT_BLOCK_BITS bits, each pair a B x B
Toeplitz product done as a cyclic convolution of length N = 2B, summed in the frequency domain
before one inverse transform per output block (blocks depend only on the difference of block
indices, so each seed segment is transformed once per group of output blocks). Memory stays
bounded by a few N-point arrays plus `SPECTRA_BUDGET_BYTES` of cached spectra, whatever n.

Rounding bound. For a cyclic convolution of real vectors a, b by a radix-2 FFT of length
N = 2^k in IEEE double precision (eps = 2^-53) with twiddle factors accurate to eps, Percival
(Math. Comp. 72 (2003) 387, the error bound for FFT convolution) gives, to first order,
    ||computed - exact||_inf <= ||a||_2 ||b||_2 * eps * (3k + sqrt(5) (3k + 1) + 3k)
                             <= ||a||_2 ||b||_2 * eps * (13 k + 3).
Here a, b are 0/1 vectors: in the blocked path ||x_c||_2 <= sqrt(B) and ||seed segment||_2 <=
sqrt(2B), and at most C = ceil(n / B) pair products are summed, so with B = 2^22, k = 23 and
n <= 1e8 (C <= 24) the error is <= 24 * sqrt(2) * 2^22 * 2^-53 * 302 < 5e-6; in the one-shot
path (n + m - 1 <= 2^25, k <= 25) it is <= 2^25 * 2^-53 * 328 < 2e-6. Both are far below the
0.5 that rounding to the nearest integer tolerates (pocketfft's mixed radices have constants of
the same order). As defence in depth every block's margin max |v - round(v)| is checked at run
time; a block whose margin reaches ROUNDING_MARGIN_LIMIT = 0.25 is recomputed on an exact path
(a number-theoretic transform modulo the prime 15 * 2^27 + 1, larger than any sum here).

Packing several bits into one float64 sample does not help here: the exact convolution sums
reach n (2^20 at 1e6 bits), so a sample of w bits would need digits of >= 20 bits each and
products of 2 * 20 * w bits, beyond the 53-bit mantissa for any w >= 2.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

__all__ = [
    "FFT_BLOCK_BITS",
    "NTT_PRIME",
    "ROUNDING_MARGIN_LIMIT",
    "ntt_cyclic_convolution",
    "ntt_cyclic_convolution_reference",
    "toeplitz_product_parity_fft",
]

FFT_BLOCK_BITS = 1 << 22
ONE_SHOT_MAX_LENGTH = 1 << 25  # one transform up to this length (~1 GB of float64 work arrays)
SPECTRA_BUDGET_BYTES = 640 * 2**20
_THREADED_LENGTHS = (1 << 16, 1 << 23)  # a second core for the seed's transform in this range
ROUNDING_MARGIN_LIMIT = 0.25
NTT_PRIME = 2013265921  # 15 * 2^27 + 1: cyclic lengths up to 2^27, sums up to 2e9 exact
NTT_PRIMITIVE_ROOT = 31


def toeplitz_product_parity_fft(
    key: np.ndarray,
    seed: np.ndarray,
    m: int,
    block_bits: int = FFT_BLOCK_BITS,
    one_shot_max: int = ONE_SHOT_MAX_LENGTH,
) -> np.ndarray:
    """Toeplitz product parities by FFT, one-shot or blocked (inputs already validated)."""
    if key.size + m - 1 <= one_shot_max:
        return _one_shot(key, seed, m)
    return _blocked(key, seed, m, block_bits)


def _one_shot(key: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    n = key.size
    length = _fast_length(n + m - 1)
    # cyclic length >= n + m - 1 leaves entries n-1 .. n+m-2 free of wrap-around
    if _THREADED_LENGTHS[0] <= length <= _THREADED_LENGTHS[1]:
        # numpy's FFT releases the GIL: transform the seed on a second core meanwhile
        with ThreadPoolExecutor(max_workers=1) as pool:
            seed_spectrum = pool.submit(_real_spectrum, seed, length)
            spectrum = _real_spectrum(key, length)
            spectrum *= seed_spectrum.result()
    else:
        spectrum = _real_spectrum(seed, length)
        spectrum *= _real_spectrum(key, length)
    values = np.fft.irfft(spectrum, length)[n - 1 : n - 1 + m]
    del spectrum
    parity = _rounded_parity(values)
    if parity is not None:
        return parity
    exact_length = _next_power_of_two(n + m - 1)
    a = np.zeros(exact_length, dtype=np.int64)
    b = np.zeros(exact_length, dtype=np.int64)
    a[:n] = key
    b[: seed.size] = seed
    return (ntt_cyclic_convolution(b, a)[n - 1 : n - 1 + m] & 1).astype(np.uint8)


def _real_spectrum(bits: np.ndarray, length: int) -> np.ndarray:
    return np.fft.rfft(bits.astype(np.float64), length)


def _blocked(key: np.ndarray, seed: np.ndarray, m: int, block_bits: int) -> np.ndarray:
    n = key.size
    size = 2 * block_bits
    n_in = -(-n // block_bits)
    n_out = -(-m // block_bits)
    spectrum_bytes = (block_bits + 1) * 16
    # accumulators and the sliding cache of seed-segment spectra share the budget
    group = max(1, min(n_out, SPECTRA_BUDGET_BYTES // (2 * spectrum_bytes) - 1))
    out = np.empty(m, dtype=np.uint8)
    product = np.empty(block_bits + 1, dtype=np.complex128)
    # the input chunk's transform runs on a second core while this one transforms seed segments
    with ThreadPoolExecutor(max_workers=1) as pool:
        for first in range(0, n_out, group):
            blocks = list(range(first, min(first + group, n_out)))
            sums = np.zeros((len(blocks), block_bits + 1), dtype=np.complex128)
            segment_cache: dict[int, np.ndarray] = {}
            for chunk in range(n_in):
                x_spectrum = pool.submit(_real_spectrum, _chunk(key, chunk, block_bits), size)
                needed = [r - chunk for r in blocks]
                for stale in [d for d in segment_cache if d not in needed]:
                    del segment_cache[stale]
                for d in needed:
                    if d not in segment_cache:
                        segment = _seed_segment(seed, d, n, block_bits)
                        segment_cache[d] = _real_spectrum(segment, size)
                spectrum = x_spectrum.result()
                for row, d in enumerate(needed):
                    np.multiply(segment_cache[d], spectrum, out=product)
                    sums[row] += product
                del spectrum
            segment_cache.clear()
            for row, r in enumerate(blocks):
                start = r * block_bits
                count = min(start + block_bits, m) - start
                values = np.fft.irfft(sums[row], size)[block_bits - 1 : block_bits - 1 + count]
                parity = _rounded_parity(values)
                if parity is None:
                    parity = _exact_block(key, seed, r, count, block_bits)
                out[start : start + count] = parity
            del sums
    return out


def _chunk(key: np.ndarray, chunk: int, block_bits: int) -> np.ndarray:
    return key[chunk * block_bits : (chunk + 1) * block_bits]


def _seed_segment(seed: np.ndarray, difference: int, n: int, block_bits: int) -> np.ndarray:
    """Seed bits g[t] = seed[base + t], t < 2B - 1, for output block r = chunk + difference."""
    # Output i = r B + u and input j = c B + v read seed[(r - c) B + n - 1 + u - v], and
    # u - v + B - 1 runs over 0 .. 2B - 2: base = (r - c) B + n - B.
    base = difference * block_bits + n - block_bits
    segment = np.zeros(2 * block_bits - 1, dtype=np.uint8)
    lo = max(base, 0)
    hi = min(base + 2 * block_bits - 1, seed.size)
    if hi > lo:
        segment[lo - base : hi - base] = seed[lo:hi]
    return segment


def _exact_block(
    key: np.ndarray, seed: np.ndarray, r: int, count: int, block_bits: int
) -> np.ndarray:
    """Output block r by exact modular convolutions (the fallback when a margin check fails)."""
    n = key.size
    size = _next_power_of_two(2 * block_bits - 1)  # any cyclic length >= 2B - 1 avoids wrap-around
    totals = np.zeros(count, dtype=np.int64)
    for chunk in range(-(-n // block_bits)):
        a = np.zeros(size, dtype=np.int64)
        x = key[chunk * block_bits : (chunk + 1) * block_bits]
        a[: x.size] = x
        b = np.zeros(size, dtype=np.int64)
        b[: 2 * block_bits - 1] = _seed_segment(seed, r - chunk, n, block_bits)
        totals += ntt_cyclic_convolution(b, a)[block_bits - 1 : block_bits - 1 + count]
    return (totals & 1).astype(np.uint8)


def _rounded_parity(values: np.ndarray) -> np.ndarray | None:
    """Parities of the nearest integers, or None if any value sits too far from an integer."""
    rounded = np.rint(values)
    if values.size and float(np.max(np.abs(values - rounded))) >= ROUNDING_MARGIN_LIMIT:
        return None
    parities: np.ndarray = (rounded.astype(np.int64) & 1).astype(np.uint8)
    return parities


def _fast_length(minimum: int) -> int:
    """Smallest 2^a 3^b 5^c >= minimum (lengths pocketfft transforms fastest)."""
    best = _next_power_of_two(minimum)
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < minimum:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def _next_power_of_two(minimum: int) -> int:
    return 1 << max(0, (minimum - 1).bit_length())


@numba.njit(cache=True)
def _power_mod(base: int, exponent: int, modulus: int) -> int:
    result = 1
    base %= modulus
    while exponent > 0:
        if exponent & 1:
            result = result * base % modulus
        base = base * base % modulus
        exponent >>= 1
    return result


@numba.njit(cache=True)
def _ntt_in_place(values: np.ndarray, inverse: bool) -> None:
    """Iterative radix-2 number-theoretic transform modulo NTT_PRIME (length a power of two)."""
    size = values.shape[0]
    j = 0
    for i in range(1, size):
        bit = size >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j ^= bit
        if i < j:
            values[i], values[j] = values[j], values[i]
    length = 2
    while length <= size:
        root = _power_mod(NTT_PRIMITIVE_ROOT, (NTT_PRIME - 1) // length, NTT_PRIME)
        if inverse:
            root = _power_mod(root, NTT_PRIME - 2, NTT_PRIME)
        half = length // 2
        twiddles = np.empty(half, dtype=np.int64)
        twiddles[0] = 1
        for t in range(1, half):
            twiddles[t] = twiddles[t - 1] * root % NTT_PRIME
        for start in range(0, size, length):
            for t in range(half):
                u = values[start + t]
                v = values[start + t + half] * twiddles[t] % NTT_PRIME
                total = u + v
                values[start + t] = total - NTT_PRIME if total >= NTT_PRIME else total
                difference = u - v
                values[start + t + half] = difference + NTT_PRIME if difference < 0 else difference
        length <<= 1
    if inverse:
        scale = _power_mod(size, NTT_PRIME - 2, NTT_PRIME)
        for i in range(size):
            values[i] = values[i] * scale % NTT_PRIME


@numba.njit(cache=True)
def ntt_cyclic_convolution(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kernel: exact cyclic convolution mod NTT_PRIME of equal-length int64 arrays (power of 2)."""
    fa = a % NTT_PRIME
    fb = b % NTT_PRIME
    _ntt_in_place(fa, False)
    _ntt_in_place(fb, False)
    for i in range(fa.shape[0]):
        fa[i] = fa[i] * fb[i] % NTT_PRIME
    _ntt_in_place(fa, True)
    return fa


def ntt_cyclic_convolution_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain O(N^2) cyclic convolution mod NTT_PRIME, for testing the kernel."""
    size = len(a)
    out = []
    for t in range(size):
        total = 0
        for j in range(size):
            total += int(a[j]) * int(b[(t - j) % size])
        out.append(total % NTT_PRIME)
    return np.array(out, dtype=np.int64)
