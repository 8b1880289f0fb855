"""Sifting: basis comparison, per-basis per-intensity tallies, and intensity label packing.

Labels follow docs/internals.md: basis 0 = X (key), 1 = Z (test); intensity 0 = signal (mu_1),
1 = decoy (mu_2), 2 = vacuum (mu_3); bits are uint8 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core.errors import InputError

N_BASES = 2
N_INTENSITIES = 3


def _as_label_array(values: object, name: str, n_labels: int) -> np.ndarray:
    """Return a 1-D uint8 view of values, checking the dtype and that every value < n_labels."""
    if not isinstance(values, np.ndarray) or values.ndim != 1:
        raise InputError(f"{name}: must be a 1-D numpy array of uint8")
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    elif values.dtype != np.uint8:
        raise InputError(f"{name}: must have dtype uint8, got {values.dtype}")
    if values.size and int(values.max()) >= n_labels:
        bad = int(np.flatnonzero(values >= n_labels)[0])
        allowed = "0 or 1" if n_labels == 2 else f"0..{n_labels - 1}"
        raise InputError(f"{name}: values must be {allowed}, got {values[bad]} at index {bad}")
    return np.ascontiguousarray(values)


def _check_same_length(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.size != b.size:
        raise InputError(f"{b_name}: length {b.size} does not match {a_name} length {a.size}")


def sift_mask(payload_basis: np.ndarray, ogs_basis: np.ndarray) -> np.ndarray:
    """Return a bool mask of detections where the payload and OGS bases agree."""
    payload_basis = _as_label_array(payload_basis, "payload_basis", N_BASES)
    ogs_basis = _as_label_array(ogs_basis, "ogs_basis", N_BASES)
    _check_same_length(payload_basis, "payload_basis", ogs_basis, "ogs_basis")
    mask: np.ndarray = payload_basis == ogs_basis
    return mask


@dataclass(frozen=True)
class SiftedDetections:
    """One block sifted: the kept detections in order, and their tallies."""

    keep: np.ndarray  # bool per detection: payload and OGS bases agree
    basis: np.ndarray  # uint8 basis of each kept detection
    intensity: np.ndarray  # uint8 intensity label of each kept detection
    payload_bits: np.ndarray  # uint8 payload bit of each kept detection
    ogs_bits: np.ndarray | None  # uint8 OGS bit of each kept detection (None when not given)
    detections: np.ndarray  # int64[2, 3] kept detections, rows basis, columns intensity
    errors: np.ndarray  # int64[2, 3] kept detections whose bits differ (zero without ogs_bits)


@numba.njit(cache=True, nogil=True)
def _sift_kernel(
    payload_basis: np.ndarray,
    ogs_basis: np.ndarray,
    intensity: np.ndarray,
    payload_bits: np.ndarray,
    ogs_bits: np.ndarray,
    has_ogs_bits: bool,
    keep: np.ndarray,
    kept_basis: np.ndarray,
    kept_intensity: np.ndarray,
    kept_payload_bits: np.ndarray,
    kept_ogs_bits: np.ndarray,
    tally: np.ndarray,
) -> int:
    """One pass: keep flags, the kept detections compacted in order into the kept_* arrays
    (each at least as long as the input), and tally[2 (b * 3 + k) + error] += 1 per kept
    detection; return the number kept."""
    kept = 0
    for i in range(payload_basis.size):
        b = np.int64(payload_basis[i])
        same = np.int64(b == ogs_basis[i])
        keep[i] = same
        # Written unconditionally, advanced only when kept: no branch on the random basis.
        kept_basis[kept] = b
        kept_intensity[kept] = intensity[i]
        kept_payload_bits[kept] = payload_bits[i]
        error = np.int64(0)
        if has_ogs_bits:
            kept_ogs_bits[kept] = ogs_bits[i]
            error = np.int64(payload_bits[i] ^ ogs_bits[i])
        tally[2 * (3 * b + np.int64(intensity[i])) + error] += same
        kept += int(same)
    return kept


def _sift_kernel_reference(
    payload_basis: np.ndarray,
    ogs_basis: np.ndarray,
    intensity: np.ndarray,
    payload_bits: np.ndarray,
    ogs_bits: np.ndarray,
    has_ogs_bits: bool,
    keep: np.ndarray,
    kept_basis: np.ndarray,
    kept_intensity: np.ndarray,
    kept_payload_bits: np.ndarray,
    kept_ogs_bits: np.ndarray,
    tally: np.ndarray,
) -> int:
    """Plain-Python reference for _sift_kernel."""
    kept = 0
    for i in range(len(payload_basis)):
        keep[i] = payload_basis[i] == ogs_basis[i]
        if not keep[i]:
            continue
        kept_basis[kept] = payload_basis[i]
        kept_intensity[kept] = intensity[i]
        kept_payload_bits[kept] = payload_bits[i]
        error = 0
        if has_ogs_bits:
            kept_ogs_bits[kept] = ogs_bits[i]
            error = int(payload_bits[i] != ogs_bits[i])
        tally[2 * (3 * int(payload_basis[i]) + int(intensity[i])) + error] += 1
        kept += 1
    return kept


def sift_detections(
    payload_basis: np.ndarray,
    ogs_basis: np.ndarray,
    intensity: np.ndarray,
    payload_bits: np.ndarray,
    ogs_bits: np.ndarray | None = None,
) -> SiftedDetections:
    """Keep the detections whose bases agree and tally them by basis and intensity, in one pass.

    Gives what sift_mask, compressing each array by the mask, count_by_basis_intensity and
    count_bit_errors give together; errors are counted only when ogs_bits is given.
    """
    payload_basis = _as_label_array(payload_basis, "payload_basis", N_BASES)
    ogs_basis = _as_label_array(ogs_basis, "ogs_basis", N_BASES)
    intensity = _as_label_array(intensity, "intensity", N_INTENSITIES)
    payload_bits = _as_label_array(payload_bits, "payload_bits", 2)
    _check_same_length(payload_basis, "payload_basis", ogs_basis, "ogs_basis")
    _check_same_length(payload_basis, "payload_basis", intensity, "intensity")
    _check_same_length(payload_basis, "payload_basis", payload_bits, "payload_bits")
    has_ogs_bits = ogs_bits is not None
    if ogs_bits is not None:
        ogs_bits = _as_label_array(ogs_bits, "ogs_bits", 2)
        _check_same_length(payload_basis, "payload_basis", ogs_bits, "ogs_bits")
    n = payload_basis.size
    keep = np.empty(n, dtype=np.bool_)
    # Outputs as long as the input, trimmed to the kept count afterwards (views, no copy).
    kept = np.empty((4 if has_ogs_bits else 3, n), dtype=np.uint8)
    tally = np.zeros(2 * N_BASES * N_INTENSITIES, dtype=np.int64)
    n_kept = _sift_kernel(
        payload_basis, ogs_basis, intensity, payload_bits,
        ogs_bits if ogs_bits is not None else payload_bits, has_ogs_bits,
        keep, kept[0], kept[1], kept[2], kept[3 if has_ogs_bits else 2], tally,
    )  # fmt: skip
    by_cell = tally.reshape(N_BASES, N_INTENSITIES, 2)
    return SiftedDetections(
        keep=keep,
        basis=kept[0, :n_kept],
        intensity=kept[1, :n_kept],
        payload_bits=kept[2, :n_kept],
        ogs_bits=kept[3, :n_kept] if has_ogs_bits else None,
        detections=by_cell.sum(axis=2),
        errors=by_cell[:, :, 1].copy(),
    )


@numba.njit(cache=True, nogil=True)
def _count_by_basis_intensity_kernel(
    basis: np.ndarray, intensity: np.ndarray, errors: np.ndarray, has_errors: bool
) -> tuple[np.ndarray, np.ndarray]:
    detections = np.zeros((2, 3), dtype=np.int64)
    error_counts = np.zeros((2, 3), dtype=np.int64)
    for i in range(basis.size):
        b = basis[i]
        k = intensity[i]
        detections[b, k] += 1
        if has_errors:
            error_counts[b, k] += errors[i]
    return detections, error_counts


def _count_by_basis_intensity_kernel_reference(
    basis: np.ndarray, intensity: np.ndarray, errors: np.ndarray, has_errors: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Plain-Python reference for _count_by_basis_intensity_kernel."""
    detections = np.zeros((2, 3), dtype=np.int64)
    error_counts = np.zeros((2, 3), dtype=np.int64)
    for i in range(len(basis)):
        detections[int(basis[i]), int(intensity[i])] += 1
        if has_errors:
            error_counts[int(basis[i]), int(intensity[i])] += int(errors[i])
    return detections, error_counts


def count_by_basis_intensity(
    basis: np.ndarray, intensity: np.ndarray, errors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Tally detections and bit errors: int64[2, 3] each, rows basis (0=X, 1=Z), cols intensity."""
    basis = _as_label_array(basis, "basis", N_BASES)
    intensity = _as_label_array(intensity, "intensity", N_INTENSITIES)
    _check_same_length(basis, "basis", intensity, "intensity")
    if errors is None:
        return _count_by_basis_intensity_kernel(basis, intensity, basis, False)
    errors = _as_label_array(errors, "errors", 2)
    _check_same_length(basis, "basis", errors, "errors")
    return _count_by_basis_intensity_kernel(basis, intensity, errors, True)


@numba.njit(cache=True, nogil=True)
def _count_bit_errors_kernel(a_bits: np.ndarray, b_bits: np.ndarray) -> np.int64:
    total = np.int64(0)
    for i in range(a_bits.size):
        total += a_bits[i] != b_bits[i]
    return total


def _count_bit_errors_kernel_reference(a_bits: np.ndarray, b_bits: np.ndarray) -> int:
    """Plain-Python reference for _count_bit_errors_kernel."""
    return sum(1 for a, b in zip(a_bits.tolist(), b_bits.tolist(), strict=True) if a != b)


def count_bit_errors(a_bits: np.ndarray, b_bits: np.ndarray) -> int:
    """Return the number of positions where two unpacked bit strings differ."""
    a_bits = _as_label_array(a_bits, "a_bits", 2)
    b_bits = _as_label_array(b_bits, "b_bits", 2)
    _check_same_length(a_bits, "a_bits", b_bits, "b_bits")
    return int(_count_bit_errors_kernel(a_bits, b_bits))


def pack_intensity_labels(labels: np.ndarray) -> bytes:
    """Pack intensity labels 0..2 at 2 bits each, first label in the high bits of byte 0."""
    labels = _as_label_array(labels, "labels", N_INTENSITIES)
    n = labels.size
    padded = np.zeros(4 * ((n + 3) // 4), dtype=np.uint8)
    padded[:n] = labels
    quads = padded.reshape(-1, 4)
    packed = (quads[:, 0] << 6) | (quads[:, 1] << 4) | (quads[:, 2] << 2) | quads[:, 3]
    return packed.astype(np.uint8).tobytes()


def unpack_intensity_labels(data: bytes, n: int) -> np.ndarray:
    """Unpack n intensity labels packed by pack_intensity_labels, checking values and padding."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"data: must be bytes, got {type(data).__name__}")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise InputError(f"n: must be a non-negative integer, got {n!r}")
    expected = (int(n) + 3) // 4
    if len(data) != expected:
        raise InputError(f"data: {n} labels need {expected} bytes, got {len(data)}")
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    quads = np.empty((raw.size, 4), dtype=np.uint8)
    for slot, shift in enumerate((6, 4, 2, 0)):
        quads[:, slot] = (raw >> shift) & 0b11
    flat = quads.reshape(-1)
    if flat.size and int(flat[:n].max(initial=0)) > 2:
        bad = int(np.flatnonzero(flat[:n] > 2)[0])
        raise InputError(f"data: label {bad} has value 3, which is not an intensity label")
    if np.any(flat[n:]):
        raise InputError("data: padding bits after the last label are not zero")
    return flat[:n].copy()
