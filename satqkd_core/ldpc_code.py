"""LDPC mother codes: the container (`LdpcCode`) and the codes shipped with the package.

A code is its parity-check matrix H (m x n) by rows and by columns, with its untainted puncturing
order and the per-frame need measured for blind reconciliation. The shipped codes live in
`satqkd_core/data/ldpc/` (built by `python -m satqkd_core.ldpc_construction --write`); each
carries a digest of H and its order, which both ends compare before a frame is decoded.

Rate adaptation (Elkouss, Martinez-Mateo, Martin, "Information reconciliation for QKD", QIC 11,
226 (2011), eqs. 3-6): of the n symbols of a frame, p are punctured (filled by the sender with
private random bits that the receiver treats as erased), s are shortened (value 0, known to
both) and k = n - p - s carry key bits. The modulated rate is R = (k' - s) / (n - p - s) with
k' = n - m, so the syndrome tells about the key at most (1 - R) k = m - p bits, provided the
punctured columns of H are independent. Punctured symbols follow an untainted puncturing order
(Elkouss, Martinez-Mateo, Martin, IEEE Wireless Commun. Lett. 1, 585 (2012)): no check holds
two of them, so their columns have disjoint supports and full rank. Shortened symbols sit at
random positions (public seed). `satqkd_core.ldpc_frames` chooses the code and (k, s, p)
for a QBER and lays out the frames.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import numpy as np

from satqkd_core.bits import as_count
from satqkd_core.errors import InputError

__all__ = [
    "LdpcCode",
    "available_codes",
    "code_by_id",
    "load_code",
    "mother_codes",
]

_DATA_PACKAGE = "satqkd_core.data.ldpc"


@dataclass(frozen=True, eq=False)
class LdpcCode:
    """A binary LDPC mother code with its untainted puncturing order.

    `check_ptr`/`check_vars` hold H by rows (CSR), `var_ptr`/`var_checks` by columns (CSC,
    each column's checks ascending); `puncture_order` lists the symbols that may be punctured,
    best first (a frame with p punctured symbols uses the first p), no two sharing a check;
    `digest` identifies the matrix and the order (both ends compare it).
    `typical_efficiency` and `efficiency_spread` describe the per-frame need measured for
    this code in blind reconciliation (mean and spread of the efficiency at which frames
    decode); they set the blind window's end (`window_end_efficiency`).
    """

    name: str
    code_id: int
    n: int
    m: int
    design_rate: float
    check_ptr: np.ndarray = field(repr=False)
    check_vars: np.ndarray = field(repr=False)
    var_ptr: np.ndarray = field(repr=False)
    var_checks: np.ndarray = field(repr=False)
    puncture_order: np.ndarray = field(repr=False)
    digest: int
    typical_efficiency: float = 1.15
    efficiency_spread: float = 0.04

    @property
    def rate(self) -> float:
        """Get the mother code's rate 1 - m / n."""
        return 1.0 - self.m / self.n

    @property
    def edges(self) -> int:
        """Get the number of ones in H."""
        return int(self.check_vars.size)

    @property
    def rate_adaptive_symbols(self) -> int:
        """Get the largest number of symbols a frame may puncture (untainted ones)."""
        return int(self.puncture_order.size)

    @classmethod
    def from_var_checks(
        cls,
        *,
        name: str,
        code_id: int,
        m: int,
        var_degrees: np.ndarray,
        var_checks: np.ndarray,
        puncture_order: np.ndarray,
        design_rate: float,
        typical_efficiency: float = 1.15,
        efficiency_spread: float = 0.04,
    ) -> LdpcCode:
        """Build a code from its columns (degree of each variable, then their checks)."""
        degrees = np.asarray(var_degrees)
        checks = np.asarray(var_checks)
        order = np.asarray(puncture_order)
        if not isinstance(name, str) or not name:
            raise InputError("name must be a non-empty string")
        code_id = as_count(code_id, "code_id")
        m = as_count(m, "m", minimum=1)
        for label, arr in (
            ("var_degrees", degrees),
            ("var_checks", checks),
            ("puncture_order", order),
        ):
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise InputError(f"{label} must be a 1-D integer array")
        n = int(degrees.size)
        if n < 2 or m >= n:
            raise InputError(f"need 1 <= m < n, got n={n}, m={m}")
        if degrees.size and int(degrees.min()) < 1:
            raise InputError("var_degrees must all be >= 1")
        var_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(degrees, out=var_ptr[1:])
        if int(var_ptr[-1]) != checks.size:
            raise InputError(
                f"var_checks holds {checks.size} entries, degrees sum to {var_ptr[-1]}"
            )
        if checks.size and (int(checks.min()) < 0 or int(checks.max()) >= m):
            raise InputError(f"var_checks must lie in 0..{m - 1}")
        columns = np.repeat(np.arange(n, dtype=np.int32), degrees)
        # canonical form: each column's checks ascending (the digest and the files rely on it)
        var_checks32 = np.ascontiguousarray(checks[np.lexsort((checks, columns))], dtype=np.int32)
        pairs = var_checks32.astype(np.int64) * n + columns
        if np.unique(pairs).size != pairs.size:
            raise InputError("var_checks connects some variable to the same check twice")
        by_row = np.argsort(var_checks32, kind="stable")
        check_vars = np.ascontiguousarray(columns[by_row], dtype=np.int32)
        check_ptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(var_checks32, minlength=m), out=check_ptr[1:])
        if int(np.diff(check_ptr).min()) < 1:
            raise InputError("every check must involve at least one variable")
        order32 = np.ascontiguousarray(order, dtype=np.int32)
        if order32.size and (int(order32.min()) < 0 or int(order32.max()) >= n):
            raise InputError(f"puncture_order must lie in 0..{n - 1}")
        if np.unique(order32).size != order32.size:
            raise InputError("puncture_order repeats a position")
        if order32.size >= n:
            raise InputError("puncture_order must leave at least one unpunctured symbol")
        digest = _code_digest(n, m, degrees.astype(np.int64), var_checks32, order32)
        return cls(
            name=name,
            code_id=code_id,
            n=n,
            m=m,
            design_rate=float(design_rate),
            check_ptr=check_ptr,
            check_vars=check_vars,
            var_ptr=var_ptr,
            var_checks=var_checks32,
            puncture_order=order32,
            digest=digest,
            typical_efficiency=_positive_float(typical_efficiency, "typical_efficiency"),
            efficiency_spread=_positive_float(efficiency_spread, "efficiency_spread"),
        )

    def var_degrees(self) -> np.ndarray:
        """Get the degree of every variable (column weight of H)."""
        return np.diff(self.var_ptr)

    def check_degrees(self) -> np.ndarray:
        """Get the degree of every check (row weight of H)."""
        return np.diff(self.check_ptr)

    def save(self, path: str) -> None:
        """Write the code to an .npz file: degrees, column-wise check deltas, metadata.

        Checks are stored per column as the first index then differences (ascending, so small),
        split into byte planes, which deflate ~20 % better than the raw indices.
        """
        deltas = self.var_checks.astype(np.int64)
        starts = self.var_ptr[:-1][np.diff(self.var_ptr) > 0]
        deltas[1:] -= self.var_checks[:-1]
        deltas[starts] = self.var_checks[starts]
        width = 2 if self.m <= 1 << 16 else 4
        planes = np.stack([(deltas >> (8 * b)) & 0xFF for b in reversed(range(width))])
        np.savez_compressed(
            path,
            name=np.array(self.name),
            code_id=np.int64(self.code_id),
            m=np.int64(self.m),
            design_rate=np.float64(self.design_rate),
            var_degrees=self.var_degrees().astype(np.uint8),
            check_delta_planes=planes.astype(np.uint8),
            puncture_order=self.puncture_order.astype(np.int32),
            digest=np.uint64(self.digest),
            typical_efficiency=np.float64(self.typical_efficiency),
            efficiency_spread=np.float64(self.efficiency_spread),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LdpcCode:
        """Read a code written by `save`, checking its digest."""
        with np.load(path, allow_pickle=False) as data:
            degrees = data["var_degrees"].astype(np.int64)
            planes = data["check_delta_planes"].astype(np.int64)
            deltas = np.zeros(planes.shape[1], dtype=np.int64)
            for plane in planes:
                deltas = (deltas << 8) | plane
            # undo the differences column by column: cumulative sums restarted at each column
            starts = np.concatenate([[0], np.cumsum(degrees)[:-1]])
            totals = np.cumsum(deltas)
            offsets = np.repeat(totals[starts] - deltas[starts], degrees)
            code = cls.from_var_checks(
                name=str(data["name"]),
                code_id=int(data["code_id"]),
                m=int(data["m"]),
                var_degrees=degrees,
                var_checks=totals - offsets,
                puncture_order=data["puncture_order"].astype(np.int64),
                design_rate=float(data["design_rate"]),
                typical_efficiency=float(data["typical_efficiency"]),
                efficiency_spread=float(data["efficiency_spread"]),
            )
            stored = int(data["digest"])
        if stored != code.digest:
            raise InputError(f"code file {path} is corrupt: digest {stored:#x} != {code.digest:#x}")
        return code


def _positive_float(value: object, name: str) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not number > 0.0 or not math.isfinite(number):
        raise InputError(f"{name} must be a positive finite number, got {value}")
    return number


def _code_digest(
    n: int, m: int, degrees: np.ndarray, var_checks: np.ndarray, order: np.ndarray
) -> int:
    """63-bit BLAKE2b digest of the code: both ends compare it before using a code."""
    hasher = hashlib.blake2b(digest_size=8, person=b"satqkd.ldpc.v1")
    hasher.update(np.array([n, m], dtype="<i8").tobytes())
    hasher.update(degrees.astype("<i8").tobytes())
    hasher.update(var_checks.astype("<i4").tobytes())
    hasher.update(order.astype("<i4").tobytes())
    return int.from_bytes(hasher.digest(), "little") & ((1 << 63) - 1)


@cache
def available_codes() -> tuple[str, ...]:
    """Get the names of the shipped mother codes (files satqkd_core/data/ldpc/*.npz)."""
    folder = resources.files(_DATA_PACKAGE)
    names = sorted(p.name[: -len(".npz")] for p in folder.iterdir() if p.name.endswith(".npz"))
    return tuple(names)


@cache
def load_code(name: str) -> LdpcCode:
    """Load a shipped mother code by name (cached)."""
    if name not in available_codes():
        raise InputError(f"no LDPC code named {name!r}; available: {', '.join(available_codes())}")
    with resources.as_file(resources.files(_DATA_PACKAGE) / f"{name}.npz") as path:
        return LdpcCode.load(path)


def mother_codes() -> tuple[LdpcCode, ...]:
    """Get every shipped mother code, ordered by code_id."""
    return tuple(sorted((load_code(name) for name in available_codes()), key=lambda c: c.code_id))


def code_by_id(code_id: int, codes: tuple[LdpcCode, ...] | None = None) -> LdpcCode:
    """Get the code with this id among `codes` (default: the shipped ones)."""
    family = mother_codes() if codes is None else codes
    for code in family:
        if code.code_id == code_id:
            return code
    raise InputError(f"no LDPC code with code_id {code_id}")
