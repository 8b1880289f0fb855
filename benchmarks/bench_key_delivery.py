"""Key management and ETSI GS QKD 014 delivery (issue 14, decision 0025).

- carving: a 1 Mbit confirmed key entering the SQLite store as a block, carved into 256-bit keys
  in one transaction;
- hand-over: one key through the store, to its master (enc_keys) and then its slave (dec_keys):
  two durable commits (WAL, synchronous=FULL) and a WAL checkpoint;
- the same over the API: a master SAE's `POST enc_keys` and the slave's `POST dec_keys` over
  HTTPS with client certificates (httpx on a kept-alive connection, uvicorn in a thread).
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path

__all__ = ["figures"]

KEY_BITS = 256
BLOCK_BITS = 1 << 20


def _store(directory: Path, blocks: int):
    from satqkd_runtime.key_management import KeyManagement

    kms = KeyManagement(directory, key_size_bits=KEY_BITS)
    started = time.perf_counter()
    for _ in range(blocks):
        kms.add_block(
            str(uuid.uuid4()), os.urandom(BLOCK_BITS // 8), BLOCK_BITS, peer="payload",
            origin="import",
        )  # fmt: skip
    return kms, time.perf_counter() - started


def _api_pairs_per_s(root: Path, kms, pairs: int) -> float:
    import httpx

    from satqkd.kms_cli import write_kms_certificates
    from satqkd_ogs.key_delivery import DeliverySettings, KmeServer, create_app, server_config

    certs = root / "certs"
    write_kms_certificates(certs, "bench", ["alice", "bob"], hosts=[], days=1, force=False)
    settings = DeliverySettings("kme-bench", "payload", frozenset({"alice", "bob"}))
    with socket_port() as port:
        pass
    config = server_config(
        create_app(kms, settings), host="127.0.0.1", port=port, ca_file=certs / "ca.crt",
        cert_file=certs / "kme-bench.crt", key_file=certs / "kme-bench.key",
    )  # fmt: skip
    server = KmeServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the KME did not start")
        time.sleep(0.01)

    def client(sae: str) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        context.load_cert_chain(str(certs / f"{sae}.crt"), str(certs / f"{sae}.key"))
        return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context)

    try:
        with client("alice") as alice, client("bob") as bob:
            started = time.perf_counter()
            for _ in range(pairs):
                keys = alice.post("/api/v1/keys/bob/enc_keys", json={"number": 1}).json()["keys"]
                ids = {"key_IDs": [{"key_ID": keys[0]["key_ID"]}]}
                assert bob.post("/api/v1/keys/alice/dec_keys", json=ids).status_code == 200
            return pairs / (time.perf_counter() - started)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class socket_port:
    """A free TCP port on 127.0.0.1 (closed again when the block ends)."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return int(self._socket.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._socket.close()


def figures(quick: bool) -> list[dict]:
    """Get the key management and key delivery figures."""
    blocks, handovers, pairs = (2, 50, 50) if quick else (8, 400, 400)
    params = {"key_bits": KEY_BITS, "block_bits": BLOCK_BITS}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        kms, seconds = _store(root / "kms", blocks)
        carved = blocks * BLOCK_BITS // KEY_BITS
        started = time.perf_counter()
        for _ in range(handovers):
            (key,) = kms.deliver_to_master("payload", "alice", "bob", 1)
            kms.deliver_to_slave("alice", "bob", [key.key_id])
        handover_s = time.perf_counter() - started
        api = _api_pairs_per_s(root, kms, pairs)
        kms.close()
    return [
        {"name": "kms_keys_carved_per_s", "value": carved / seconds, "unit": "keys/s",
         "params": {**params, "blocks": blocks}},
        {"name": "kms_handovers_per_s", "value": handovers / handover_s, "unit": "keys/s",
         "params": {**params, "keys": handovers}},
        {"name": "etsi014_key_pairs_per_s", "value": api, "unit": "keys/s",
         "params": {**params, "keys": pairs, "transport": "HTTPS, client certificates"}},
    ]  # fmt: skip
