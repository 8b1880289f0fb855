"""Two KMEs over the same relay block (issue 14, decision 0037): one key through both, a master
SAE's `POST enc_keys` at KME A (answered after A's notice to KME B was applied: one more HTTPS
request, mutual TLS, and a durable commit at each end) and the slave's `POST dec_keys` at KME B;
httpx clients on kept-alive connections, the two uvicorn servers in threads of this process.
"""

from __future__ import annotations

import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path

__all__ = ["figures"]

KEY_BITS = 256
STATIONS = {"graz": ("alice", "xinglong"), "xinglong": ("bob", "graz")}  # station: (SAE, other)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(root: Path, keys: int) -> tuple[dict, list]:
    """Control: both KMEs serving a relay block of `keys` keys; their URLs and servers."""
    from satqkd.kms_cli import write_kms_certificates
    from satqkd_ogs.key_delivery import DeliverySettings, KmeServer, create_app, server_config
    from satqkd_ogs.key_delivery.kme_sync import PeerKme
    from satqkd_runtime.key_management_sync import PairedKeyManagement

    block, material = str(uuid.uuid4()), bytes(range(256)) * (keys * KEY_BITS // 8 // 256 + 1)
    ports = {station: _free_port() for station in STATIONS}
    for station, (sae, other) in STATIONS.items():
        write_kms_certificates(
            root / station, station, [sae], hosts=[], days=1, force=False, peer_kmes=[other]
        )
    urls, running = {}, []
    for station, (sae, other) in STATIONS.items():
        kms = PairedKeyManagement(
            root / station / "kms", KEY_BITS, peer=f"ogs-{other}", own_kme=f"kme-{station}",
            peer_kme=f"kme-{other}",
        )  # fmt: skip
        kms.add_block(
            block, material[: keys * KEY_BITS // 8], keys * KEY_BITS, peer=f"ogs-{other}",
            origin="relay",
        )  # fmt: skip
        folder = root / other / f"peer-kme-{station}"
        peer = PeerKme(
            f"kme-{other}", f"https://127.0.0.1:{ports[other]}", folder / "ca.crt",
            folder / f"kme-{station}.crt", folder / f"kme-{station}.key",
        )  # fmt: skip
        settings = DeliverySettings(
            f"kme-{station}", f"ogs-{other}", frozenset({sae}), peer_kme_id=f"kme-{other}",
            peer_sae_ids=frozenset({STATIONS[other][0]}),
        )  # fmt: skip
        server = KmeServer(
            server_config(
                create_app(kms, settings, peer), host="127.0.0.1", port=ports[station],
                ca_file=root / station / "ca.crt", cert_file=root / station / f"kme-{station}.crt",
                key_file=root / station / f"kme-{station}.key",
            )
        )  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread, kms))
        urls[station] = f"https://127.0.0.1:{ports[station]}"
    deadline = time.monotonic() + 30
    while not all(server.started for server, _, _ in running):
        if time.monotonic() > deadline:
            raise RuntimeError("a KME did not start")
        time.sleep(0.01)
    return urls, running


def _pairs_per_s(root: Path, pairs: int) -> float:
    import httpx

    urls, running = _start(root, 2 * pairs + 2)

    def client(station: str) -> httpx.Client:
        sae, folder = STATIONS[station][0], root / station
        context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
        context.load_cert_chain(str(folder / f"{sae}.crt"), str(folder / f"{sae}.key"))
        return httpx.Client(base_url=urls[station], verify=context)

    try:
        with client("graz") as alice, client("xinglong") as bob:
            started = time.perf_counter()
            for _ in range(pairs):
                answer = alice.post("/api/v1/keys/bob/enc_keys", json={"number": 1})
                ids = {"key_IDs": [{"key_ID": answer.json()["keys"][0]["key_ID"]}]}
                if bob.post("/api/v1/keys/alice/dec_keys", json=ids).status_code != 200:
                    raise RuntimeError("the slave did not get the master's key")
            return pairs / (time.perf_counter() - started)
    finally:
        for server, thread, kms in running:
            server.should_exit = True
            thread.join(timeout=10)
            kms.close()


def figures(quick: bool) -> list[dict]:
    """Get the two-KME key delivery figure."""
    pairs = 30 if quick else 300
    with tempfile.TemporaryDirectory() as scratch:
        rate = _pairs_per_s(Path(scratch), pairs)
    return [
        {"name": "etsi014_two_kme_key_pairs_per_s", "value": rate, "unit": "keys/s",
         "params": {"key_bits": KEY_BITS, "keys": pairs,
                    "transport": "HTTPS, client certificates; KME-to-KME notice per enc_keys"}},
    ]  # fmt: skip
