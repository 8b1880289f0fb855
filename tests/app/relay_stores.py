"""Key stores for relay tests: a payload's link with a station holding confirmed keys that both
ends share (built with the KeyStore API, as a pass leaves them)."""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

import numpy as np

from satqkd_core.authentication import preshared_key_bytes
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key


def install_link(payload_keys: Path, station_keys: Path, station: str) -> None:
    """Control: one pre-shared authentication key at the payload's store for `station` and at
    the station's store."""
    preshared = secrets.token_bytes(preshared_key_bytes(4096))
    install_preshared_key(KeyStore(payload_keys / station), preshared)
    install_preshared_key(KeyStore(station_keys), preshared)


def add_shared_key(
    payload_keys: Path, station_keys: Path, station: str, bits: int, *, confirmed: bool = True
) -> tuple[str, bytes]:
    """Control: store one fresh key at both ends of the link (confirmed, or pending at the
    payload); get its id and its bytes."""
    material = secrets.token_bytes(bits // 8)
    key_bits = np.unpackbits(np.frombuffer(material, dtype=np.uint8), bitorder="big")
    key_id = str(uuid.uuid4())
    ends = (
        (KeyStore(payload_keys / station), f"ogs-{station}"),
        (KeyStore(station_keys), "payload"),
    )
    for store, peer in ends:
        store.store(key_id, key_bits, peer, 7, time.time())
        if confirmed:
            store.confirm(key_id)
    return key_id, material


def two_links(root: Path, bits: int = 4096) -> dict:
    """Control: a payload with links to xinglong (A) and stellenbosch (B), one confirmed key
    of `bits` on each; get the paths, key ids and key bytes."""
    payload = root / "keys" / "payload"
    stations = {
        "xinglong": root / "keys" / "ogs-xinglong",
        "stellenbosch": root / "keys" / "ogs-stellenbosch",
    }
    keys = {}
    for station, directory in stations.items():
        install_link(payload, directory, station)
        keys[station] = add_shared_key(payload, directory, station, bits)
    return {"payload": payload, "stations": stations, "keys": keys}
