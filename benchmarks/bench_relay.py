"""Trusted relay through the satellite (issue 14 step e, decision 0031): one relay with the real
payload and station daemons on an embedded broker (`satqkd.relay_run.run_relay`), from key
stores holding one confirmed key per link, as two passes leave them.

- wall time of the whole relay: three daemons started, the signed RELAY_KEYS, the payload's
  choice and erasure of both links' keys, two authenticated RELAY_XOR messages, both stations
  filing the relay key in their key management stores, the daemons stopped;
- the relay traffic: bytes of the two RELAY_XOR messages, and what they carry beyond the XOR.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["figures"]

STATIONS = ("xinglong", "stellenbosch")


def _link(payload: Path, station_keys: Path, station: str, bits: int) -> None:
    import numpy as np

    from satqkd_core.authentication import preshared_key_bytes
    from satqkd_runtime.keystore import KeyStore
    from satqkd_runtime.qkd_channel import install_preshared_key

    preshared = secrets.token_bytes(preshared_key_bytes(4096))
    ends = ((KeyStore(payload / station), f"ogs-{station}"), (KeyStore(station_keys), "payload"))
    key = np.unpackbits(np.frombuffer(secrets.token_bytes(bits // 8), dtype=np.uint8))
    key_id = str(uuid.uuid4())
    for store, peer in ends:
        install_preshared_key(store, preshared)
        store.store(key_id, key, peer, 1, time.time())
        store.confirm(key_id)


def figures(quick: bool) -> list[dict]:
    """Get the relay figures."""
    from satqkd.relay_run import RelayRequest, run_relay

    bits = (1 << 16) if quick else (1 << 20)
    with tempfile.TemporaryDirectory() as scratch:
        payload = Path(scratch) / "payload"
        stations = {s: Path(scratch) / f"ogs-{s}" for s in STATIONS}
        for station, directory in stations.items():
            _link(payload, directory, station, bits)
        started = time.perf_counter()
        result = asyncio.run(run_relay(payload, stations, RelayRequest(1, *STATIONS, bits)))
        wall_s = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(f"relay failed: {result.abort_reason}")
    params = {"bits": bits, "stations": list(STATIONS), "broker": "embedded"}
    return [
        {"name": "relay_wall_s", "value": wall_s, "unit": "s", "params": params},
        {"name": "relay_traffic_bytes", "value": result.relay_bytes, "unit": "byte",
         "params": params},
        {"name": "relay_traffic_overhead_bytes", "value": result.relay_bytes - 2 * bits // 8,
         "unit": "byte", "params": params},
    ]  # fmt: skip
