"""Decisions both ends of a pass take from the same public data, so they always agree:
decoy statistics from the exchanged counts, whether to continue before error correction, and
the words used when no key can be produced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

from satqkd_core import finite_key as fk
from satqkd_core.errors import InputError, ProtocolError

RECONCILIATION_METHODS: tuple[str, ...] = ("cascade", "ldpc")


@dataclass(frozen=True)
class ProtocolParameters:
    """Public protocol parameters both ends agree on (from the mission profile)."""

    intensities: tuple[float, float, float]
    probabilities: tuple[float, float, float]
    eps_sec: float
    eps_cor: float
    qber_abort_threshold: float
    ec_efficiency_estimate: float
    # error correction: "cascade" (interactive) or "ldpc" (rate-adaptive blind, decision 0004)
    reconciliation: str = "cascade"
    # LDPC: target probability that a frame fails to decode and is dropped at both ends
    ldpc_eps_frame: float = 1e-3

    def __post_init__(self) -> None:
        if self.reconciliation not in RECONCILIATION_METHODS:
            raise InputError(
                f"reconciliation must be one of {', '.join(RECONCILIATION_METHODS)}, "
                f"got {self.reconciliation!r}"
            )
        if not 0.0 < self.ldpc_eps_frame < 0.5:
            raise InputError(f"ldpc_eps_frame must lie in (0, 0.5), got {self.ldpc_eps_frame}")


def _int_triple(values: Iterable[Any]) -> tuple[int, int, int]:
    # The length is not checked here: DecoyStatistics rejects anything but three counts.
    return cast("tuple[int, int, int]", tuple(int(v) for v in values))


def statistics_from_counts(params: ProtocolParameters, f: Mapping[str, Any]) -> fk.DecoyStatistics:
    """Decoy statistics from a PE_COUNTS message (X errors are unknown before correction)."""
    try:
        return fk.DecoyStatistics(
            intensities=params.intensities,
            probabilities=params.probabilities,
            x_detections=_int_triple(f["x_detections"]),
            x_errors=(0, 0, 0),
            z_detections=_int_triple(f["z_detections"]),
            z_errors=_int_triple(f["z_errors"]),
        )
    except InputError as exc:
        raise ProtocolError(f"PE_COUNTS: {exc}") from None


def kept_statistics(stats: fk.DecoyStatistics, kept_x_intensity: np.ndarray) -> fk.DecoyStatistics:
    """Decoy statistics restricted to the key bits error correction kept (LDPC drops the tail
    and failed frames): the finite-key bound is taken on the X detections that enter privacy
    amplification, counted per intensity from their public labels (decision 0011)."""
    labels = np.asarray(kept_x_intensity)
    if labels.ndim != 1 or (labels.size and (labels.dtype.kind not in "iu" or labels.max() > 2)):
        raise InputError("kept_x_intensity must be a 1-D array of intensity labels 0, 1, 2")
    counts = np.bincount(labels.astype(np.int64), minlength=3)
    return replace(stats, x_detections=(int(counts[0]), int(counts[1]), int(counts[2])))


def z_basis_qber(stats: fk.DecoyStatistics) -> float:
    """Observed test-basis error rate over all intensities."""
    n = sum(stats.z_detections)
    return sum(stats.z_errors) / n if n else 0.0


def feasibility_abort_reason(params: ProtocolParameters, stats: fk.DecoyStatistics) -> str | None:
    """The reason to stop before error correction, or None if a key looks possible.

    Both ends evaluate this on the same public counts, so they reach the same decision.
    """
    n_x = sum(stats.x_detections)
    n_z = sum(stats.z_detections)
    if n_x == 0 or n_z == 0:
        return f"no sifted detections (x {n_x}, z {n_z})"
    qber = z_basis_qber(stats)
    if qber > params.qber_abort_threshold:
        return f"qber {qber:.3f} above {params.qber_abort_threshold:.2f} threshold"
    leak = fk.estimate_leak_ec_bits(n_x, max(qber, 1e-4), params.ec_efficiency_estimate)
    result = fk.finite_key_length(stats, params.eps_sec, params.eps_cor, leak)
    if result.key_length_bits <= 0:
        return no_key_reason(result, leak)
    return None


def no_key_reason(result: fk.FiniteKeyResult, leak_bits: int) -> str:
    """Words for a finite-key bound that leaves nothing."""
    return (
        f"finite-key bound leaves no key: s_x1 {result.s_x1:.0f}, phi_x {result.phi_x:.3f}, "
        f"leak {leak_bits} bits"
    )
