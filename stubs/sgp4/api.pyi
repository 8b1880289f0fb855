# Type stubs for sgp4.api, covering only what satqkd_core calls (sgp4 2.x ships no types).
# Checked against sgp4 2.27; mypy reads them through mypy_path in pyproject.toml.

import numpy as np

WGS72OLD: int
WGS72: int
WGS84: int
SGP4_ERRORS: dict[int, str]

class Satrec:
    @classmethod
    def twoline2rv(cls, line1: str, line2: str, whichconst: int = ...) -> Satrec: ...
    def sgp4(self, jd: float, fr: float) -> tuple[int, tuple[float, ...], tuple[float, ...]]: ...
    def sgp4_array(
        self, jd: np.ndarray, fr: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
