"""What the station's ATP did during one pass, sample by sample (no key material here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from drivers.interfaces import BeaconSpot

INSTRUMENT_NAMES = ("gimbal", "fsm", "beacon", "detectors")
MODES = (
    "waiting",  # before AOS, gimbal at the AOS direction (or none to move)
    "slewing",  # before AOS, gimbal on its way to the AOS direction
    "acquiring",  # spiral scan: no valid spot
    "tracking",  # mirror steered on the spot
    "gimbal-tracking",  # spot steers the gimbal (no mirror, or the mirror failed)
    "program-track",  # no spot reading (no beacon sensor, or it failed): prediction only
    "parked",  # after LOS or a stop
)
COLUMNS = (
    "unix_s",
    "mode",
    "spot_valid",
    "spot_x_urad",
    "spot_y_urad",
    "power_nw",
    "fsm_tip_urad",
    "fsm_tilt_urad",
    "gimbal_az_deg",
    "gimbal_el_deg",
    "predicted_az_deg",
    "predicted_el_deg",
)
_INITIAL_CAPACITY = 256


class AtpRecord:
    """Per loop sample of one pass: time, mode (index into MODES), spot, mirror command,
    gimbal read-back and pointing target (prediction plus offloaded offsets); NaN where an
    instrument gave nothing. Plus the pass's ATP figures, kept as they happen."""

    def __init__(self, plan_id: int, aos_unix_s: float) -> None:
        self.plan_id = plan_id
        self.aos_unix_s = aos_unix_s
        # one float64 column per sample in a growing block: no Python object per sample
        self._data = np.full((len(COLUMNS), _INITIAL_CAPACITY), np.nan)
        self._n = 0
        self.acquisition_time_s: float | None = None
        self.acquisitions = 0
        self.track_losses = 0
        self.offloads = 0
        self.gimbal_limit_skips = 0
        self.overruns = 0
        self.faults: dict[str, int] = dict.fromkeys(INSTRUMENT_NAMES, 0)
        self.detectors_refused: str | None = None
        self.finished = False

    def append(self, unix_s: float, mode: str, spot: BeaconSpot | None, **values: float) -> None:
        """Control: add one loop sample (columns not given stay NaN)."""
        if self._n == self._data.shape[1]:
            grown = np.full((len(COLUMNS), 2 * self._n), np.nan)
            grown[:, : self._n] = self._data
            self._data = grown
        column = self._data[:, self._n]
        column[0] = unix_s
        column[1] = MODES.index(mode)
        if spot is not None:
            column[2] = float(spot.valid)
            column[3:6] = (spot.x_urad, spot.y_urad, spot.power_nw)
        for name, value in values.items():
            column[COLUMNS.index(name)] = value
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def column(self, name: str) -> np.ndarray:
        """Get: one column of the samples (a copy)."""
        return self._data[COLUMNS.index(name), : self._n].copy()

    def modes(self) -> list[str]:
        """Get: the mode name of every sample."""
        return [MODES[int(code)] for code in self._data[1, : self._n]]

    def summary(self) -> dict[str, Any]:
        """Get: the pass's ATP figures as plain JSON values (spot figures after AOS only)."""
        after_aos = self.column("unix_s") >= self.aos_unix_s
        tracked = (self.column("spot_valid") == 1.0) & after_aos
        radius = np.hypot(self.column("spot_x_urad"), self.column("spot_y_urad"))[tracked]
        return {
            "samples": self._n,
            "acquisition_time_s": self.acquisition_time_s,
            "spot_valid_fraction": float(tracked.sum() / after_aos.sum())
            if after_aos.any()
            else 0.0,
            "spot_rms_urad": float(np.sqrt(np.mean(radius**2))) if radius.size else None,
            "acquisitions": self.acquisitions,
            "track_losses": self.track_losses,
            "offloads": self.offloads,
            "gimbal_limit_skips": self.gimbal_limit_skips,
            "overruns": self.overruns,
            "faults": dict(self.faults),
            "detectors_refused": self.detectors_refused,
            "finished": self.finished,
        }
