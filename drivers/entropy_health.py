"""Continuous health tests of NIST SP 800-90B on raw noise-source samples, and the SHA-256
conditioning that turns tested raw bytes into full-entropy output.

References (NIST SP 800-90B, "Recommendation for the Entropy Sources Used for Random Bit
Generation", January 2018):

- section 4.3 (health test requirements): start-up tests run over at least 1024 consecutive
  samples before any output; a failure of a continuous test stops the source's output;
- section 4.4.1, Repetition Count Test (RCT): fail when one sample value repeats C times in a
  row, C = 1 + ceil(-log2(alpha) / H), with H the assessed min-entropy per sample;
- section 4.4.2, Adaptive Proportion Test (APT): in consecutive non-overlapping windows of W
  samples (W = 1024 for binary samples, 512 otherwise), count how often the window's first
  sample value occurs in the window (itself included); fail when the count reaches
  C = 1 + CRITBINOM(W, 2^-H, 1 - alpha), the smallest k with P[Binomial(W, 2^-H) <= k] >=
  1 - alpha, plus one (Table 2 of the standard lists C for some H at alpha = 2^-20);
- section 3.1.5.1.1: SHA-256 is a vetted conditioning function.

alpha = 2^-20 is the standard's recommendation; `alpha_exponent` may lower it (fewer false
alarms on a fast source, slower detection). Full entropy (SP 800-90C): a vetted conditioning
function's n-bit output is counted as full entropy when its input carries at least n + 64 bits
of min-entropy, so each 32-byte (256-bit) output block is SHA-256 of ceil(320 / H) raw bytes.

Everything here is vectorised with numpy: a chunk of samples is tested with a handful of array
operations, never a Python step per sample; conditioning costs one SHA-256 call per 32 output
bytes.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache

import numpy as np

from drivers.interfaces import EntropyFailure
from satqkd_core.errors import InputError

__all__ = [
    "DEFAULT_ALPHA_EXPONENT",
    "OUTPUT_BLOCK_BYTES",
    "STARTUP_SAMPLES",
    "HealthTests",
    "apt_cutoff",
    "apt_window",
    "condition_sha256",
    "raw_bytes_per_block",
    "rct_cutoff",
]

DEFAULT_ALPHA_EXPONENT = 20
STARTUP_SAMPLES = 1024  # SP 800-90B 4.3: start-up tests over at least 1024 samples
OUTPUT_BLOCK_BYTES = 32  # one SHA-256 digest
EXTRA_ENTROPY_BITS = 64  # SP 800-90C: n + 64 bits in for n full-entropy bits out
_BINARY_WINDOW = 1024  # SP 800-90B 4.4.2
_NON_BINARY_WINDOW = 512


def _exact(h: float) -> Fraction:
    """The entropy figure as the decimal the user wrote (7.2 is 36/5, not a binary float)."""
    return Fraction(repr(float(h)))


def _check_h(h: float, binary: bool = False) -> float:
    limit = 1.0 if binary else 8.0
    if isinstance(h, bool) or not isinstance(h, int | float) or not math.isfinite(h):
        raise InputError(f"min-entropy per sample must be a number, got {h!r}")
    if not 0.0 < h <= limit:
        kind = "binary" if binary else "byte"
        raise InputError(f"min-entropy per {kind} sample must be in (0, {limit:g}], got {h!r}")
    return float(h)


def _check_alpha(alpha_exponent: int) -> int:
    if isinstance(alpha_exponent, bool) or not isinstance(alpha_exponent, int):
        raise InputError(f"alpha_exponent must be an int, got {alpha_exponent!r}")
    if not 20 <= alpha_exponent <= 40:
        raise InputError(f"alpha_exponent must be in 20..40, got {alpha_exponent}")
    return alpha_exponent


def rct_cutoff(h: float, alpha_exponent: int = DEFAULT_ALPHA_EXPONENT) -> int:
    """Get: the Repetition Count Test cutoff C = 1 + ceil(-log2(alpha) / H) (SP 800-90B 4.4.1)."""
    h = _check_h(h)
    return 1 + math.ceil(Fraction(_check_alpha(alpha_exponent)) / _exact(h))


def apt_window(binary: bool) -> int:
    """Get: the Adaptive Proportion Test window W: 1024 for binary samples, 512 otherwise
    (SP 800-90B 4.4.2)."""
    return _BINARY_WINDOW if binary else _NON_BINARY_WINDOW


@lru_cache(maxsize=256)
def _apt_cutoff(h: float, binary: bool, alpha_exponent: int) -> int:
    window = apt_window(binary)
    with localcontext() as context:
        context.prec = 80  # the tail sum must resolve 2^-40 next to terms near 1
        p = Decimal(2) ** -(Decimal(repr(h)))
        q = 1 - p
        alpha = Decimal(2) ** -alpha_exponent
        # walk down from k = W: tail = P[X > k - 1] grows by P[X = k]; CRITBINOM is the
        # smallest k whose upper tail P[X > k] is still <= alpha
        tail = Decimal(0)
        for k in range(window, -1, -1):
            tail += math.comb(window, k) * p**k * q ** (window - k)
            if tail > alpha:
                return 1 + k
    return 1  # unreachable: the whole distribution sums to 1 > alpha


def apt_cutoff(
    h: float, *, binary: bool = False, alpha_exponent: int = DEFAULT_ALPHA_EXPONENT
) -> int:
    """Get: the Adaptive Proportion Test cutoff C = 1 + CRITBINOM(W, 2^-H, 1 - alpha) for
    window W (SP 800-90B 4.4.2), computed exactly (80-digit decimal binomial tail)."""
    return _apt_cutoff(_check_h(h, binary), bool(binary), _check_alpha(alpha_exponent))


def raw_bytes_per_block(h: float) -> int:
    """Get: raw bytes of min-entropy H per byte hashed into one 32-byte output block:
    ceil((256 + 64) / H), so the block is full entropy (SP 800-90C)."""
    bits = 8 * OUTPUT_BLOCK_BYTES + EXTRA_ENTROPY_BITS
    return math.ceil(Fraction(bits) / _exact(_check_h(h)))


def condition_sha256(raw: bytes | bytearray | memoryview, per_block: int) -> bytes:
    """Get: SHA-256 of each consecutive `per_block`-byte chunk of `raw`, concatenated (the
    vetted conditioning of SP 800-90B 3.1.5.1.1); `raw` must hold whole chunks."""
    if isinstance(per_block, bool) or not isinstance(per_block, int) or per_block < 1:
        raise InputError(f"per_block must be an int >= 1, got {per_block!r}")
    view = memoryview(raw).cast("B")
    if len(view) % per_block:
        raise InputError(f"raw holds {len(view)} bytes, not a multiple of {per_block}")
    sha256 = hashlib.sha256
    return b"".join(
        sha256(view[start : start + per_block]).digest() for start in range(0, len(view), per_block)
    )


class HealthTests:
    """The RCT and APT of SP 800-90B 4.4 run continuously over a stream of samples fed in
    chunks of any size, with the start-up test (section 4.3) over the first 1024 samples.

    `check(samples)` raises EntropyFailure naming the test that failed; from then on every
    `check` raises the same failure (the source stays failed until a new monitor is made,
    i.e. the driver reconnects). Chunk boundaries do not matter: runs and windows carry over.
    """

    def __init__(
        self,
        min_entropy_per_sample: float,
        *,
        binary: bool = False,
        alpha_exponent: int = DEFAULT_ALPHA_EXPONENT,
        label: str = "entropy source",
    ) -> None:
        self.h = _check_h(min_entropy_per_sample, binary)
        self.binary = bool(binary)
        self.alpha_exponent = _check_alpha(alpha_exponent)
        self.label = label
        self.rct_cutoff = rct_cutoff(self.h, self.alpha_exponent)
        self.apt_window = apt_window(self.binary)
        self.apt_cutoff = apt_cutoff(self.h, binary=self.binary, alpha_exponent=alpha_exponent)
        self.samples_tested = 0
        self.failure: EntropyFailure | None = None
        self._run_value = -1  # no sample seen yet: matches nothing
        self._run_length = 0
        self._window_value = -1
        self._window_seen = 0  # samples of the open window seen so far (0: none open)
        self._window_count = 0

    @property
    def started(self) -> bool:
        """Get: whether the start-up test (the first 1024 samples) has passed."""
        return self.failure is None and self.samples_tested >= STARTUP_SAMPLES

    def check(self, samples: np.ndarray | bytes | bytearray) -> None:
        """Measure: run both tests over the next samples (uint8 values; 0/1 when binary);
        EntropyFailure naming the test on a failure, now or earlier."""
        if self.failure is not None:
            raise self.failure
        x = np.frombuffer(samples, np.uint8) if isinstance(samples, bytes | bytearray) else samples
        x = np.ascontiguousarray(x, dtype=np.int16)  # int16: -1 (nothing yet) never matches
        if x.ndim != 1:
            raise InputError(f"samples must be 1-D, got shape {x.shape}")
        if self.binary and x.size and int(x.max()) > 1:
            raise InputError("binary samples must be 0 or 1")
        if not x.size:
            return
        phase = "start-up test: " if self.samples_tested < STARTUP_SAMPLES else ""
        self._repetition_count(x, phase)
        self._adaptive_proportion(x, phase)
        self.samples_tested += int(x.size)

    def _fail(self, message: str) -> None:
        self.failure = EntropyFailure(
            f"{self.label}: {message}; the source stays failed until it is reconnected"
        )
        raise self.failure

    def _repetition_count(self, x: np.ndarray, phase: str) -> None:
        """SP 800-90B 4.4.1 over a chunk, the run in progress carried in from the last one."""
        starts = np.flatnonzero(x[1:] != x[:-1]) + 1
        edges = np.concatenate(([0], starts, [x.size]))
        runs = np.diff(edges)
        if x[0] == self._run_value:
            runs[0] += self._run_length
        longest = int(runs.max())
        if longest >= self.rct_cutoff:
            at = int(np.argmax(runs >= self.rct_cutoff))
            value = int(x[edges[at]])
            self._fail(
                f"{phase}repetition count test (SP 800-90B 4.4.1) failed: value {value} "
                f"repeated {longest} times in a row (cutoff {self.rct_cutoff} for "
                f"H = {self.h:g} bits per sample)"
            )
        self._run_value = int(x[-1])
        self._run_length = int(runs[-1])

    def _adaptive_proportion(self, x: np.ndarray, phase: str) -> None:
        """SP 800-90B 4.4.2 over a chunk: finish the open window, test the whole windows in
        one array operation, open a window with the rest."""
        window, cutoff = self.apt_window, self.apt_cutoff
        worst = 0
        position = 0
        if self._window_seen:
            take = min(window - self._window_seen, x.size)
            self._window_count += int(np.count_nonzero(x[:take] == self._window_value))
            self._window_seen = (self._window_seen + take) % window
            worst, position = self._window_count, take
        whole = (x.size - position) // window
        if whole:
            windows = x[position : position + whole * window].reshape(whole, window)
            counts = np.count_nonzero(windows == windows[:, :1], axis=1)
            worst = max(worst, int(counts.max()))
            position += whole * window
        if position < x.size:
            rest = x[position:]
            self._window_value = int(rest[0])
            self._window_count = int(np.count_nonzero(rest == rest[0]))
            self._window_seen = int(rest.size)
            worst = max(worst, self._window_count)
        if worst >= cutoff:
            self._fail(
                f"{phase}adaptive proportion test (SP 800-90B 4.4.2) failed: one value "
                f"{worst} times in a window of {window} (cutoff {cutoff} for "
                f"H = {self.h:g} bits per sample)"
            )
