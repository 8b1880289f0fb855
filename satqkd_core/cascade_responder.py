"""The payload's end of Cascade (`satqkd_core.cascade`): `CascadeResponder` answers the
station's parity queries on the reference key, and `TwoWayLeak` is what both ends count alike.

Leakage in both directions (Tupkary & Lütkenhaus, "Using Cascade in quantum key
distribution", arXiv:2307.00576): the payload's answers disclose `leak_bits` reference
parities, and the station's queries disclose its own parities too (a range is bisected
exactly when the station's parity of it differs from the reference), so `total_leak_bits`
adds `station_parity_bits`; both ends compute the same figures from the queries alone.
"""

from __future__ import annotations

import numpy as np

from satqkd_core.bits import as_bit_array, as_count
from satqkd_core.cascade_kernels import answer_rows, permuted_prefix_parities
from satqkd_core.cascade_messages import decode_query
from satqkd_core.cascade_permutations import (
    DEFAULT_PASSES,
    LazyPasses,
    fill_permutation,
    masked_parity,
    materialize_two_block_pass,
    pack_bits,
)
from satqkd_core.errors import ProtocolError

__all__ = ["CascadeResponder", "TwoWayLeak", "station_parity_bits"]


class TwoWayLeak:
    """What both ends of Cascade count alike: the answered rows (`leak_bits`) and, from them,
    what the exchange disclosed in both directions."""

    leak_bits: int
    _passes: int

    @property
    def station_parity_bits(self) -> int:
        """Get: the station's parities its queries disclosed (`station_parity_bits`)."""
        return station_parity_bits(self.leak_bits, self._passes)

    @property
    def total_leak_bits(self) -> int:
        """Get: parities disclosed in both directions, the leak the key length is charged."""
        return self.leak_bits + self.station_parity_bits


class CascadeResponder(TwoWayLeak):
    """Payload side: answers parity queries on the reference key and counts what it discloses."""

    def __init__(self, reference_key: np.ndarray, seed: int, passes: int = DEFAULT_PASSES) -> None:
        key = as_bit_array(reference_key, "reference_key")
        self._passes = as_count(passes, "passes", minimum=1)
        self._n = key.size
        self._key = key
        self._lazy = LazyPasses(key.size, as_count(seed, "seed"), self._passes)
        # rows of two-block passes are filled when first needed (zero pages until then)
        self._prefix = np.zeros((self._passes, key.size + 1), dtype=np.uint8)
        self._perm = np.empty((1, key.size), dtype=np.int32)  # one pass at a time
        packed = pack_bits(key) if self._lazy.lazy.any() else key
        self._first_block_parity = np.zeros(self._passes, dtype=np.uint8)
        for p in range(self._passes):
            if self._lazy.lazy[p]:
                self._first_block_parity[p] = masked_parity(packed, self._lazy.members, p)
            else:
                fill_permutation(self._perm[0], seed, p)
                self._prefix[p] = permuted_prefix_parities(key, self._perm)[0]
        self.leak_bits = 0

    def reply(self, query: np.ndarray) -> np.ndarray:
        """Parities (uint8) of the queried ranges; raises ProtocolError naming a bad row."""
        return self._answer(self._validated_query(query))

    def reply_message(self, query: bytes) -> np.ndarray:
        """Parities (uint8, in wire order) of a query in its wire form
        (`satqkd_core.cascade_messages`); ProtocolError naming what is malformed."""
        # decoded rows obey every rule of `_validated_query` (ranges checked by the decoder)
        return self._answer(decode_query(query, self._n, self._passes))

    def _answer(self, rows: np.ndarray) -> np.ndarray:
        lazy = self._lazy
        parities, unbuilt = answer_rows(
            self._prefix, rows, lazy.lazy, lazy.half, self._first_block_parity
        )
        if unbuilt.size:  # a pass first bisected: build its order, then answer again
            for p in unbuilt.tolist():
                self._build_pass(p)
            parities, _ = answer_rows(
                self._prefix, rows, lazy.lazy, lazy.half, self._first_block_parity
            )
        self.leak_bits += rows.shape[0]
        return parities

    def _build_pass(self, p: int) -> None:
        lazy = self._lazy
        materialize_two_block_pass(self._perm[0], lazy.members, p, lazy.half, lazy.order_keys[p])
        self._prefix[p] = permuted_prefix_parities(self._key, self._perm)[0]
        lazy.lazy[p] = 0

    def _validated_query(self, query: object) -> np.ndarray:
        if not isinstance(query, np.ndarray):
            raise ProtocolError(f"query must be a numpy array, got {type(query).__name__}")
        if query.ndim != 2 or query.shape[1] != 3:
            raise ProtocolError(f"query must have shape (k, 3), got {query.shape}")
        if query.shape[0] == 0:
            raise ProtocolError("query holds no rows")
        if not np.issubdtype(query.dtype, np.integer):
            raise ProtocolError(f"query must hold integers, got dtype {query.dtype}")
        rows = query.astype(np.int64)
        p, start, stop = rows[:, 0], rows[:, 1], rows[:, 2]
        checks = (
            ((p < 0) | (p >= self._passes), f"pass index outside 0..{self._passes - 1}"),
            ((start < 0) | (start >= self._n), f"start outside 0..{self._n - 1}"),
            ((stop <= start) | (stop > self._n), f"stop not in start+1..{self._n}"),
        )
        for bad, what in checks:
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ProtocolError(f"query row {row} {tuple(rows[row].tolist())}: {what}")
        return np.ascontiguousarray(rows)


def station_parity_bits(answered: int, passes: int) -> int:
    """The station's disclosed parities: every answered range, plus the last top-level block
    of each pass after the first (its reference parity is inferred, never asked, but whether
    the station bisects it tells the station's parity)."""
    return answered + (passes - 1) if answered else 0
