"""Small helpers for keys held as unpacked bit arrays (np.uint8 of 0/1)."""

from __future__ import annotations

import math
import operator

import numpy as np

from satqkd_core.errors import InputError

__all__ = ["as_bit_array", "as_count", "binary_entropy"]


def as_bit_array(value: object, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Return `value` as a contiguous 1-D np.uint8 array of 0/1, or raise InputError naming it."""
    if not isinstance(value, np.ndarray):
        raise InputError(f"{name} must be a numpy array of 0/1 bits, got {type(value).__name__}")
    if value.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {value.shape}")
    if value.dtype != np.bool_ and not np.issubdtype(value.dtype, np.integer):
        raise InputError(f"{name} must hold integer 0/1 bits, got dtype {value.dtype}")
    if value.size == 0 and not allow_empty:
        raise InputError(f"{name} must hold at least one bit")
    bits = np.ascontiguousarray(value, dtype=np.uint8)
    # A cast to uint8 would hide negative or large values: check on the original dtype.
    if value.dtype != np.bool_ and value.size and (value.min() < 0 or value.max() > 1):
        raise InputError(f"{name} must hold only 0 and 1, found values outside 0..1")
    return bits


def as_count(value: object, name: str, *, minimum: int = 0) -> int:
    """Return `value` as a Python int >= minimum, or raise InputError naming it."""
    if isinstance(value, bool | np.bool_):
        raise InputError(f"{name} must be an integer, got a bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(f"{name} must be an integer, got {type(value).__name__}") from None
    if number < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {number}")
    return number


def binary_entropy(probability: float) -> float:
    """Binary Shannon entropy h(p) in bits; h(0) = h(1) = 0."""
    p = float(probability)
    if not 0.0 <= p <= 1.0:
        raise InputError(f"probability must lie in [0, 1], got {probability}")
    if p in (0.0, 1.0):
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)
