"""Confirmed keys of a node's key store enter its key management store as blocks.

A key enters once (its key-store id is the block id, the same at both ends of the link) and
only when confirmed: a pending key may still be discarded by the protocol. The key store keeps
its copy: the pass reports compute their digests from it.
"""

from __future__ import annotations

import numpy as np

from satqkd_runtime.key_management import KeyManagement
from satqkd_runtime.keystore import KeyStore, KeyStoreError


def import_confirmed_keys(
    store: KeyStore,
    kms: KeyManagement,
    *,
    eps_sec: float | None = None,
    eps_cor: float | None = None,
) -> list[str]:
    """Control: enter every confirmed key of `store` not yet in `kms` (origin `pass`, the pass's
    plan id and peer, the epsilons given); the ids of the blocks entered. A key that vanished or
    turned inconsistent meanwhile is skipped (the key store's recovery deals with it)."""
    entered = []
    for key_id in store.key_ids(state="confirmed"):
        if kms.has_block(key_id):
            continue
        try:
            meta = store.metadata(key_id)
            bits = store.load(key_id)
        except KeyStoreError:
            continue
        material = np.packbits(bits, bitorder="big").tobytes()
        if kms.add_block(
            key_id,
            material,
            meta.key_bits,
            peer=meta.peer,
            origin="pass",
            plan_id=meta.plan_id,
            eps_sec=eps_sec,
            eps_cor=eps_cor,
            created_unix_s=meta.created_unix_s,
        ):
            entered.append(key_id)
    return entered
