"""Key carried hop by hop over the key graph (seed scenarios II-IV, issue 14).

The key graph: every satellite-station link whose two ends hold key from flown passes (the
payload's key store `payload/<station>` and the station's `ogs-<station>`, one key root per
satellite), and every fibre link (its pools: sim_backends.fibre_network). A chain (`chains[]`
of the network scenario) is a path over that graph, e.g. jinan1 - xinglong - micius - graz.
When every hop's link holds the chain's bits of key (a satellite hop: key credited to it, the
OCC plans a pass per satellite hop as demand `<chain>:<satellite>-<station>`), the source end
draws a fresh key (from the scenario's seed: simulation), and each hop one-time-pads it with
its own link key (satqkd_core.hop_relay: the one implementation, also the fibre's); the link
keys are taken (consumed) at both ends of each hop from the nodes' key management
stores under the same ids. A hop that holds too little key refuses the whole chain before
anything is consumed, naming the hop. Both ends file the key (origin `relay`) in the chain's
stores `DIR/chains/<node>/`; intermediate nodes file nothing (trusted nodes).

Orchestrator only: the hops run here, on the nodes' stores, not as messages between the
payload and station daemons (docs/network.md, "Seed scenarios II-IV").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from satqkd_core import rng
from satqkd_core.hop_relay import HopRecord, check_hops, hops_of, link_of, relay_along

__all__ = ["ChainState", "LinkStores", "run_chain"]


@dataclass
class ChainState:
    """A chain demand as the run meets it."""

    chain_id: str
    path: tuple[str, ...]
    hops: list[tuple[str, str]]  # (satellite, station) per hop, in path order
    bits: int
    deadline_unix_s: float
    done: bool = False
    at_unix_s: float | None = None
    refused: str | None = None  # the latest refusal (the short hop) while not done
    hop_records: list[HopRecord] = field(default_factory=list)
    sha256_source: str | None = None
    sha256_target: str | None = None
    key_ids: list[str] = field(default_factory=list)


class LinkStores:
    """Opens the two ends of a satellite-station link: the payload's and the station's key
    management stores in the satellite's key root, with the confirmed pass keys entered."""

    def __init__(self, key_roots: dict[str, Path], key_size_bits: int) -> None:
        self.key_roots, self.key_size = key_roots, key_size_bits

    def ends(self, satellite: str, station: str) -> dict[str, Any]:
        """Get: {node name: KeyManagement} of the link's two ends (the caller closes them)."""
        from satqkd_runtime.key_management import KeyManagement
        from satqkd_runtime.key_management_import import import_confirmed_keys
        from satqkd_runtime.keystore import KeyStore

        keys = self.key_roots[satellite] / "keys"
        out = {}
        for node, directory in (
            (satellite, keys / "payload" / station),
            (station, keys / f"ogs-{station}"),
        ):
            kms = KeyManagement(directory / "kms", self.key_size)
            import_confirmed_keys(KeyStore(directory), kms)
            out[node] = kms
        return out


def _available_ids(ends: dict[str, Any], blocks: list[str], key_size: int) -> list[str]:
    """Key ids available at both ends in the credited blocks, in block order."""
    from satqkd_runtime.key_management import key_id_for

    ids = []
    for block in dict.fromkeys(blocks):
        indices = None
        for kms in ends.values():
            here = set(kms.available_indices(block)) if kms.has_block(block) else set()
            indices = here if indices is None else indices & here
        ids.extend(key_id_for(block, key_size, i) for i in sorted(indices or ()))
    return ids


def run_chain(
    chain: ChainState,
    credited: dict[tuple[str, str], list[str]],
    credited_bits: dict[tuple[str, str], int],
    stores: LinkStores,
    chain_root: Path,
    seed: int,
    now_unix_s: float,
    fibre: Any = None,
) -> bool:
    """Control: carry `chain.bits` of fresh key from the chain's first node to its last, hop by
    hop; `credited[link]` are the pass blocks credited to the hop, `credited_bits[link]` their
    bits. True if the key was filed at both ends; else `chain.refused` names the short hop."""
    from satqkd_runtime.key_management import KeyManagement

    size = stores.key_size
    opened = {link: stores.ends(*link) for link in chain.hops}
    try:
        ids = {
            link: _available_ids(opened[link], credited.get(link, []), size)[
                : credited_bits.get(link, 0) // size
            ]
            for link in chain.hops
        }
        available = {link_of(*link): len(ids[link]) * size for link in chain.hops}
        for sender, receiver in hops_of(chain.path):
            if link_of(sender, receiver) not in available:  # a fibre hop
                held = _fibre_bits(fibre, sender, receiver)
                available[link_of(sender, receiver)] = held
        refusal = check_hops(chain.path, chain.bits, available)
        if refusal is not None:
            chain.refused = refusal.reason
            return False
        number = chain.bits // size
        holder = f"chain:{chain.chain_id}"
        pads = []
        for sender, receiver in hops_of(chain.path):
            if not {sender, receiver} & set(stores.key_roots):
                pads.append(fibre.take_pad(sender, receiver, chain.bits, holder))
                continue
            link = (sender, receiver) if sender in stores.key_roots else (receiver, sender)
            taken = ids[link][:number]
            copies = {n: opened[link][n].take_available(taken, holder) for n in (sender, receiver)}
            pads.append(tuple(b"".join(k.material for k in copies[n]) for n in (sender, receiver)))
        draw = np.random.default_rng(rng.derive_key(seed, f"chain/{chain.chain_id}"))
        key = draw.bytes(chain.bits // 8)
        received, records = relay_along(key, chain.path, pads)
    finally:
        for ends in opened.values():
            for kms in ends.values():
                kms.close()
    if received != key:  # a link's two copies differ: never file a wrong key
        chain.refused = f"the link keys on {'-'.join(chain.path)} are out of step"
        return False
    source, target = chain.path[0], chain.path[-1]
    block_id = _chain_block_id(seed, chain.chain_id)
    for node, material, peer in ((source, key, target), (target, received, source)):
        with KeyManagement(chain_root / node, size) as kms:
            kms.add_block(
                block_id, material, chain.bits, peer=peer, origin="relay",
                created_unix_s=now_unix_s,
            )  # fmt: skip
    from satqkd_runtime.key_management import key_id_for

    chain.done, chain.at_unix_s, chain.refused = True, now_unix_s, None
    chain.hop_records = list(records)
    chain.sha256_source = hashlib.sha256(key).hexdigest()
    chain.sha256_target = hashlib.sha256(received).hexdigest()
    chain.key_ids = [key_id_for(block_id, size, i) for i in range(number)]
    return True


def _fibre_bits(fibre: Any, a: str, b: str) -> int:
    """Link key bits a fibre link holds now (0 without a fibre network or such a link)."""
    if fibre is None or link_of(a, b) not in fibre.links:
        return 0
    return int(fibre.pool_bits(a, b))


def _chain_block_id(seed: int, chain_id: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:satqkd:chain/{seed}/{chain_id}"))
