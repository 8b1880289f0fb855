"""What every entropy source shares: checking a draw request, counting bytes by purpose, and
refusing a seeded (simulation) source where secrets are made.

An `EntropySource` (drivers.interfaces) delivers every secret and every public random value a
node draws. The real ones (`drivers.entropy_os.OsEntropySource`, the operating system's CSPRNG;
`drivers.entropy_qrng.SerialQrng`, a streaming QRNG) and the deterministic simulation source
(`sim_backends.entropy.SeededEntropySource`) validate requests and count what they deliver the
same way, through the helpers below.
"""

from __future__ import annotations

from drivers.interfaces import EntropySource
from satqkd_core.errors import InputError

__all__ = [
    "MAX_DRAW_BYTES",
    "DrawCounter",
    "InsecureEntropyError",
    "check_draw",
    "purpose_prefix",
    "refuse_seeded_in_production",
]

#: the largest single draw (1 GiB): a larger request is a caller's mistake, not a key
MAX_DRAW_BYTES = 1 << 30


class InsecureEntropyError(InputError):
    """A seeded (predictable) entropy source was given where secrets are made."""


def purpose_prefix(purpose: str) -> str:
    """Get: the text before the first '/' of a purpose ("pattern-key/plan 17" -> "pattern-key");
    InputError for a purpose that is not a non-empty string starting with a name."""
    if not isinstance(purpose, str) or not purpose.strip():
        raise InputError(f"purpose must be a non-empty string, got {purpose!r}")
    prefix = purpose.split("/", 1)[0]
    if not prefix.strip():
        raise InputError(f"purpose must start with a name before any '/', got {purpose!r}")
    return prefix


def check_draw(n_bytes: int, purpose: str) -> str:
    """Get: the purpose prefix of a valid draw request; InputError naming what is wrong with
    `n_bytes` (an int in 0..MAX_DRAW_BYTES) or `purpose`."""
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, int):
        raise InputError(f"n_bytes must be an int, got {type(n_bytes).__name__}")
    if not 0 <= n_bytes <= MAX_DRAW_BYTES:
        raise InputError(f"n_bytes must be in 0..{MAX_DRAW_BYTES}, got {n_bytes}")
    return purpose_prefix(purpose)


class DrawCounter:
    """Bytes delivered so far, by purpose prefix (what `EntropySource.drawn_bytes` reports)."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, int] = {}

    def record(self, prefix: str, n_bytes: int) -> None:
        """Control: count `n_bytes` delivered for a purpose prefix."""
        self._by_prefix[prefix] = self._by_prefix.get(prefix, 0) + n_bytes

    @property
    def by_prefix(self) -> dict[str, int]:
        """Get: a copy of the counts, by purpose prefix."""
        return dict(self._by_prefix)

    @property
    def total(self) -> int:
        """Get: all bytes delivered."""
        return sum(self._by_prefix.values())


def refuse_seeded_in_production(source: EntropySource, allow_insecure: bool) -> None:
    """Control: raise InsecureEntropyError if `source` is seeded (its output is predictable)
    and the caller did not explicitly allow it (a test, a simulated pass)."""
    if source.seeded and not allow_insecure:
        raise InsecureEntropyError(
            f"{source.name} is a seeded simulation source: its output is predictable; "
            "give --insecure-seeded-entropy only for tests"
        )
