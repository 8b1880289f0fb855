"""Hop-by-hop key relay through a network of trusted nodes (a terrestrial fibre QKD network).

Adjacent nodes share a pairwise pool of link key (fed by their own fibre QKD link). A key
travels from a source node to a target node along a route; on each hop the sending node
one-time-pads the key with as many bits of that hop's link key, the receiving node removes
the pad with its copy, and both consume those link-key bits. Each hop's pool therefore gives
exactly the length of the key, and the ciphertext on the fibre tells an eavesdropper nothing.

Trust assumption: every intermediate node sees the key in the clear between removing one pad
and applying the next (a trusted node, as in every deployed trusted-node network); it keeps no
copy once it has sent the key on. Only the two ends hold it afterwards.

The pure parts are here: the route (fewest hops, ties broken by node names so every node
computes the same one), the check that every hop has enough link key (a refusal names the hop
and the shortfall), the one-time pad and the per-hop consumption ledger. The network model
that holds the pools is the simulation's (sim_backends/fibre_network.py).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from satqkd_core.errors import InputError

__all__ = [
    "HopRecord",
    "HopRefusal",
    "check_hops",
    "hops_of",
    "link_of",
    "one_time_pad",
    "relay_along",
    "route",
]

Link = tuple[str, str]


def link_of(a: str, b: str) -> Link:
    """Get: the link between two nodes, named the same whichever end asks (sorted names)."""
    if a == b:
        raise InputError(f"a link joins two different nodes, got {a!r} twice")
    return (a, b) if a < b else (b, a)


def route(links: Iterable[Link], source: str, target: str) -> tuple[str, ...]:
    """Get: the route from `source` to `target` with the fewest hops (ties: the
    alphabetically first neighbour at each step); InputError naming the ends if none exists."""
    neighbours: dict[str, set[str]] = {}
    for a, b in links:
        link_of(a, b)
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    for end in (source, target):
        if end not in neighbours:
            raise InputError(f"node {end!r} has no fibre link")
    if source == target:
        raise InputError(f"route from {source!r} to itself")
    came_from: dict[str, str] = {source: source}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if node == target:
            break
        for nxt in sorted(neighbours[node]):
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    if target not in came_from:
        raise InputError(f"no fibre route from {source!r} to {target!r}")
    path = [target]
    while path[-1] != source:
        path.append(came_from[path[-1]])
    return tuple(reversed(path))


def hops_of(path: Sequence[str]) -> list[tuple[str, str]]:
    """Get: the (sender, receiver) pairs of a route, in order."""
    if len(path) < 2:
        raise InputError(f"a route needs two or more nodes, got {list(path)!r}")
    return [(path[k], path[k + 1]) for k in range(len(path) - 1)]


@dataclass(frozen=True)
class HopRefusal:
    """Why a relay cannot run: the hop whose pool is short, what it holds and what it needs."""

    sender: str
    receiver: str
    available_bits: int
    needed_bits: int

    @property
    def reason(self) -> str:
        """Get: the refusal in one line."""
        return (
            f"not enough link key on hop {self.sender}-{self.receiver}: "
            f"{self.available_bits} bits available, {self.needed_bits} needed"
        )


def check_hops(
    path: Sequence[str], key_bits: int, available_bits: Mapping[Link, int]
) -> HopRefusal | None:
    """Get: None if every hop of `path` holds `key_bits` of link key (`available_bits` per
    link, `link_of` names), else the first hop that does not."""
    if isinstance(key_bits, bool) or not isinstance(key_bits, int) or key_bits < 1:
        raise InputError(f"key length must be a positive number of bits, got {key_bits!r}")
    for sender, receiver in hops_of(path):
        held = int(available_bits.get(link_of(sender, receiver), 0))
        if held < key_bits:
            return HopRefusal(sender, receiver, held, key_bits)
    return None


def one_time_pad(data: bytes, pad: bytes) -> bytes:
    """Get: `data` XOR `pad` (encrypts and decrypts); the pad must be exactly as long."""
    if len(pad) != len(data):
        raise InputError(f"a one-time pad must match the data: {len(pad)} != {len(data)} bytes")
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(len(data), "big")


@dataclass(frozen=True)
class HopRecord:
    """One hop of a relay as the fibre saw it: who sent, who received, the link-key bits it
    consumed and the SHA-256 of the ciphertext (public; never the key or the pad)."""

    sender: str
    receiver: str
    consumed_bits: int
    ciphertext_sha256: str


def relay_along(
    key: bytes, path: Sequence[str], pads: Sequence[tuple[bytes, bytes]]
) -> tuple[bytes, list[HopRecord]]:
    """Get: the key as the target recovers it and a record per hop. `pads[k]` is hop k's
    link key as (the sender's copy, the receiver's copy): the sender pads with its copy, the
    receiver removes the pad with its own (the two differ only if the pools are out of step,
    which the caller detects by comparing the result)."""
    hops = hops_of(path)
    if len(pads) != len(hops):
        raise InputError(f"{len(hops)} hops need {len(hops)} pads, got {len(pads)}")
    carried = key
    records = []
    for (sender, receiver), (sender_pad, receiver_pad) in zip(hops, pads, strict=True):
        ciphertext = one_time_pad(carried, sender_pad)  # the only thing on the fibre
        carried = one_time_pad(ciphertext, receiver_pad)
        records.append(
            HopRecord(sender, receiver, 8 * len(key), hashlib.sha256(ciphertext).hexdigest())
        )
    return carried, records
