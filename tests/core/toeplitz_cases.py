"""Inputs and an independent dense product shared by the Toeplitz-hashing tests (exact path and
FFT fallback)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


def toeplitz_inputs(seed: int, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Get a random n-bit key and the n + m - 1 seed bits of an m x n Toeplitz matrix."""
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 2, n).astype(np.uint8)
    toeplitz_seed = rng.integers(0, 2, n + m - 1).astype(np.uint8)
    return key, toeplitz_seed


def dense_product(key: np.ndarray, toeplitz_seed: np.ndarray, m: int) -> np.ndarray:
    """Get T x mod 2 with T[i, j] = seed[i - j + n - 1], built as a dense matrix."""
    n = key.size
    index = np.arange(m)[:, None] - np.arange(n)[None, :] + n - 1
    matrix = toeplitz_seed[index].astype(np.int64)
    return ((matrix @ key.astype(np.int64)) % 2).astype(np.uint8)


#: (n, m) with 1 <= m <= n <= 140
sizes = st.integers(1, 140).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n)))
