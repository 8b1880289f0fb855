"""Time-tagger effects on timestamps: the digital bin (resolution) of the tagger's clock.

A time-to-digital converter reports the bin an edge fell into, so a timestamp is the bin's
start: floor(t / bin) * bin (e.g. 1 ps bins of a Swabian Time Tagger X, 4 ps of a PicoQuant
MultiHarp 160). The quantisation error is uniform on [0, bin): mean bin/2, rms bin/sqrt(12).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError

__all__ = ["TaggerModel", "quantise_timestamps"]

_MAX_RESOLUTION_PS = 1_000_000


@dataclass(frozen=True)
class TaggerModel:
    """The station's time tagger: resolution_ps is the width of one digital bin."""

    resolution_ps: int = 1

    def __post_init__(self) -> None:
        value = self.resolution_ps
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"TaggerModel.resolution_ps must be an integer, got {value!r}")
        if not 1 <= int(value) <= _MAX_RESOLUTION_PS:
            raise InputError(
                f"TaggerModel.resolution_ps must be in [1, {_MAX_RESOLUTION_PS}], got {value}"
            )


def quantise_timestamps(timestamp_ps: np.ndarray, resolution_ps: int) -> np.ndarray:
    """Get timestamps floored to the start of their tagger bin (int64 ps)."""
    TaggerModel(resolution_ps)
    if not isinstance(timestamp_ps, np.ndarray) or timestamp_ps.dtype != np.int64:
        raise InputError("timestamp_ps must be a numpy array of int64")
    if timestamp_ps.ndim != 1:
        raise InputError(f"timestamp_ps must be 1-D, got shape {timestamp_ps.shape}")
    if resolution_ps == 1:
        return timestamp_ps.copy()
    # floor_divide rounds towards -inf, so negative times fall into the right bin too.
    return np.floor_divide(timestamp_ps, np.int64(resolution_ps)) * np.int64(resolution_ps)
