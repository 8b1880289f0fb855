"""A terrestrial fibre QKD network of trusted nodes, in simulated time.

Every node keeps its keys in its own key management store (satqkd_runtime.key_management: one
SQLite database per node). Each fibre link between two adjacent nodes runs its own QKD at a
configured secret-key rate: over simulated time the link's pairwise pool grows at both ends by
the same blocks (same block ids, so the same key ids), up to the link's pool capacity (a full
pool takes no more key; what the link would have made meanwhile is not kept). The link keys are
drawn from the scenario's seed: a model of what the fibre QKD would give, not QKD itself.

Delivering a key from one node (a ground station) to another (a user node) follows
satqkd_core.hop_relay: the route with the fewest hops; refused with the reason if any hop's
pool is short (nothing is consumed then); else, per hop, the sender pads the key with link key
it takes from its pool, the receiver takes the same key ids from its pool and removes the pad.
Intermediate nodes hold the key only in memory while re-padding it (the trusted-node
assumption); only the target files it, as a block of origin `relay`.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from satqkd_core import rng
from satqkd_core.errors import InputError
from satqkd_core.hop_relay import HopRecord, check_hops, hops_of, link_of, relay_along, route
from satqkd_runtime.key_management import KeyManagement, KeyRefused

__all__ = ["FibreDelivery", "FibreLinkSpec", "FibreNetwork", "FibreRefused"]

_BLOCK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:satqkd:fibre-link-key")


class FibreRefused(RuntimeError):
    """A delivery the network cannot make (the message says which hop and why)."""


@dataclass(frozen=True)
class FibreLinkSpec:
    """A fibre QKD link between two adjacent nodes: its secret-key rate and pool size."""

    a: str
    b: str
    rate_bps: float
    pool_capacity_bits: int

    def __post_init__(self) -> None:
        link_of(self.a, self.b)
        if not (math.isfinite(self.rate_bps) and self.rate_bps >= 0.0):
            raise InputError(f"fibre link {self.a}-{self.b}: rate_bps must be >= 0")
        if self.pool_capacity_bits < 0:
            raise InputError(f"fibre link {self.a}-{self.b}: pool_capacity_bits must be >= 0")


@dataclass(frozen=True)
class FibreDelivery:
    """One key delivered across the network: route, per-hop records, the key's id and the
    SHA-256 of the key as the source sent it and as the target filed it."""

    key_id: str
    source: str
    target: str
    path: tuple[str, ...]
    bits: int
    hops: tuple[HopRecord, ...]
    sha256_source: str
    sha256_target: str


@dataclass
class _LinkState:
    spec: FibreLinkSpec
    fed_until_unix_s: float
    blocks: int = 0
    generator: np.random.Generator = field(default_factory=np.random.default_rng)


class FibreNetwork:
    """The nodes' key management stores and the link pools between them."""

    def __init__(
        self,
        links: Sequence[FibreLinkSpec],
        stores: Mapping[str, Path],
        *,
        seed: int,
        start_unix_s: float,
        key_size_bits: int = 256,
    ) -> None:
        nodes = sorted({n for spec in links for n in (spec.a, spec.b)})
        missing = [n for n in nodes if n not in stores]
        if missing:
            raise InputError(f"fibre nodes without a key store: {', '.join(missing)}")
        self.key_size_bits = key_size_bits
        self.kms = {node: KeyManagement(stores[node], key_size_bits) for node in nodes}
        self._links: dict[tuple[str, str], _LinkState] = {}
        for spec in links:
            name = link_of(spec.a, spec.b)
            if name in self._links:
                raise InputError(f"fibre link {name[0]}-{name[1]} is given twice")
            stream = rng.derive_key(seed, f"fibre/{name[0]}/{name[1]}")
            self._links[name] = _LinkState(
                spec, start_unix_s, generator=np.random.default_rng(stream)
            )
        self.now_unix_s = start_unix_s

    def close(self) -> None:
        """Control: close every node's store."""
        for kms in self.kms.values():
            kms.close()

    @property
    def links(self) -> list[tuple[str, str]]:
        """Get: every link, as `link_of` names it."""
        return sorted(self._links)

    def pool_bits(self, a: str, b: str) -> int:
        """Get: link key bits the link a-b can use now (the fewer of the two ends' pools)."""
        held = (self.kms[a].count(peer=b), self.kms[b].count(peer=a))
        return min(held) * self.key_size_bits

    def advance_to(self, now_unix_s: float) -> None:
        """Control: feed every link's pool with the key its QKD made since it was last fed,
        in whole keys, up to the pool's capacity."""
        if now_unix_s < self.now_unix_s:
            raise InputError("the fibre network's time only goes forward")
        size = self.key_size_bits
        for (a, b), state in self._links.items():
            rate = state.spec.rate_bps
            if rate <= 0.0:
                state.fed_until_unix_s = now_unix_s
                continue
            made = int((now_unix_s - state.fed_until_unix_s) * rate) // size
            room = max(state.spec.pool_capacity_bits - self.pool_bits(a, b), 0) // size
            keys = min(made, room)
            # time for whole keys only, so fractions carry over; a full pool idles
            state.fed_until_unix_s = (
                state.fed_until_unix_s + made * size / rate if keys == made else now_unix_s
            )
            if keys == 0:
                continue
            material = state.generator.bytes(keys * size // 8)
            block_id = str(uuid.uuid5(_BLOCK_NAMESPACE, f"{a}/{b}/{state.blocks}"))
            state.blocks += 1
            for node, peer in ((a, b), (b, a)):
                self.kms[node].add_block(
                    block_id, material, keys * size, peer=peer, origin="import",
                    created_unix_s=now_unix_s,
                )  # fmt: skip
        self.now_unix_s = now_unix_s

    def held_bits(self, node: str) -> int:
        """Get: bits of delivered key a node holds available (not its link keys)."""
        kms = self.kms[node]
        neighbours = {b if a == node else a for a, b in self._links if node in (a, b)}
        return sum(kms.count(peer=p) for p in kms.peers() if p not in neighbours) * (
            self.key_size_bits
        )

    def deliver(
        self, source: str, target: str, key_id: str, key: bytes, peer: str | None = None
    ) -> FibreDelivery:
        """Control: carry one key from `source` to `target` hop by hop and file it at the
        target (block `key_id`, origin `relay`, shared with `peer`, default `source`).
        FibreRefused (nothing consumed) when there is no route or a hop's pool is short."""
        if len(key) * 8 % self.key_size_bits:
            raise InputError(f"a delivered key is whole {self.key_size_bits}-bit keys")
        try:
            path = route(self._links, source, target)
        except InputError as exc:
            raise FibreRefused(str(exc)) from None
        bits = len(key) * 8
        available = {link: self.pool_bits(*link) for link in self._links}
        refusal = check_hops(path, bits, available)
        if refusal is not None:
            raise FibreRefused(refusal.reason)
        holder = f"fibre:{key_id}"
        pads = [
            self._take_pad(sender, receiver, bits, holder) for sender, receiver in hops_of(path)
        ]
        received, records = relay_along(key, path, pads)
        if received != key:  # the pools were out of step: never file a wrong key
            raise FibreRefused(f"key {key_id}: the link pools on {path} are out of step")
        self.kms[target].add_block(
            key_id,
            received,
            bits,
            peer=peer or source,
            origin="relay",
            created_unix_s=self.now_unix_s,
        )
        return FibreDelivery(
            key_id, source, target, path, bits, tuple(records),
            hashlib.sha256(key).hexdigest(), hashlib.sha256(received).hexdigest(),
        )  # fmt: skip

    def take_pad(self, sender: str, receiver: str, bits: int, holder: str) -> tuple[bytes, bytes]:
        """Control: link key for one hop of a relay that crosses this network (a chain of the
        key graph, satqkd.network_chain), consumed at both ends; get (sender's, receiver's)."""
        return self._take_pad(sender, receiver, bits, holder)

    def _take_pad(self, sender: str, receiver: str, bits: int, holder: str) -> tuple[bytes, bytes]:
        """Link key for one hop, taken (consumed) from both ends' pools under the same ids."""
        number = bits // self.key_size_bits
        ids = self.kms[sender].reserve(receiver, number, holder)
        try:
            theirs = self.kms[receiver].take_available(ids, holder)
        except KeyRefused as exc:
            self.kms[sender].release(ids, holder)
            raise FibreRefused(f"hop {sender}-{receiver}: {exc}") from None
        mine = self.kms[sender].consume_reserved(ids, holder)
        return b"".join(k.material for k in mine), b"".join(k.material for k in theirs)
