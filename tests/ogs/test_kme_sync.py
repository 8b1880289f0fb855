"""Two KMEs over the same relay block, over real HTTPS with client certificates: a master at
Graz takes keys with enc_keys, the slave at Xinglong fetches them by id with dec_keys once;
the notice between the KMEs is authenticated and applied once (forged and replayed refused)."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from satqkd.kms_cli import write_kms_certificates
from satqkd_ogs.key_delivery import DeliverySettings, create_app, server_config
from satqkd_ogs.key_delivery.kme_sync import NOTICES_PATH, KmeSync, PeerKme
from satqkd_ogs.key_delivery.service import DeliveryRefused
from satqkd_runtime.key_management import key_id_for
from satqkd_runtime.key_management_sync import PairedKeyManagement
from tests.conftest import free_tcp_port

REPO = Path(__file__).resolve().parents[2]
BLOCK = str(uuid.uuid5(uuid.NAMESPACE_URL, "relay-7"))
KEYS = 16
MATERIAL = bytes((13 * i + 1) % 256 for i in range(32 * KEYS))
SAES = {"graz": ["alice", "erin"], "xinglong": ["bob", "carol"]}
OTHER = {"graz": "xinglong", "xinglong": "graz"}


@dataclass
class Node:
    station: str
    url: str
    certs: Path
    kms: PairedKeyManagement
    sync: KmeSync

    def client(self, sae: str, certs: Path | None = None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        where = certs or self.certs
        context.load_cert_chain(str(where / f"{sae}.crt"), str(where / f"{sae}.key"))
        return httpx.Client(base_url=self.url, verify=context, timeout=10.0)

    def as_peer(self) -> httpx.Client:
        """A client showing the certificate of the other KME (issued by this KME's CA)."""
        folder = self.certs / f"peer-kme-{OTHER[self.station]}"
        return self.client(f"kme-{OTHER[self.station]}", folder)


def _peer(root: Path, station: str, port: int) -> PeerKme:
    """The other station's KME as `station`'s KME sees it."""
    other = OTHER[station]
    folder = root / other / f"peer-kme-{station}"
    return PeerKme(
        f"kme-{other}",
        f"https://127.0.0.1:{port}",
        folder / "ca.crt",
        folder / f"kme-{station}.crt",
        folder / f"kme-{station}.key",
    )


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    root = tmp_path_factory.mktemp("two-kmes")
    ports = {station: free_tcp_port() for station in SAES}
    for station, saes in SAES.items():
        write_kms_certificates(
            root / station, station, saes, hosts=[], days=2, force=False, peer_kmes=[OTHER[station]]
        )
    built, servers = {}, []
    for station, saes in SAES.items():
        other = OTHER[station]
        kms = PairedKeyManagement(
            root / station / "kms", 256, peer=f"ogs-{other}", own_kme=f"kme-{station}",
            peer_kme=f"kme-{other}",
        )  # fmt: skip
        kms.add_block(BLOCK, MATERIAL, 256 * KEYS, peer=f"ogs-{other}", origin="relay")
        settings = DeliverySettings(
            f"kme-{station}",
            f"ogs-{other}",
            frozenset(saes),
            peer_kme_id=f"kme-{other}",
            peer_sae_ids=frozenset(SAES[other]),
        )
        app = create_app(kms, settings, _peer(root, station, ports[other]))
        server = uvicorn.Server(
            server_config(
                app,
                host="127.0.0.1",
                port=ports[station],
                ca_file=root / station / "ca.crt",
                cert_file=root / station / f"kme-{station}.crt",
                key_file=root / station / f"kme-{station}.key",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        url = f"https://127.0.0.1:{ports[station]}"
        built[station] = Node(station, url, root / station, kms, app.state.sync)
    deadline = time.monotonic() + 20
    while not all(server.started for server, _ in servers):
        assert time.monotonic() < deadline, "a KME did not start"
        time.sleep(0.02)
    yield built
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)
    for node in built.values():
        node.kms.close()


def _ids(keys: list[dict]) -> dict:
    return {"key_IDs": [{"key_ID": key["key_ID"]} for key in keys]}


def test_master_at_one_kme_and_slave_at_the_other_get_the_same_keys_once(
    nodes: dict[str, Node],
) -> None:
    graz, xinglong = nodes["graz"], nodes["xinglong"]
    with graz.client("alice") as alice, xinglong.client("bob") as bob:
        status = alice.get("/api/v1/keys/bob/status").json()
        assert (status["source_KME_ID"], status["target_KME_ID"]) == ("kme-graz", "kme-xinglong")
        before = status["stored_key_count"]
        assert before <= KEYS // 2  # graz's share of the block: the even indices
        answer = alice.post("/api/v1/keys/bob/enc_keys", json={"number": 3})
        assert answer.status_code == 200, answer.text
        keys = answer.json()["keys"]
        assert alice.get("/api/v1/keys/bob/status").json()["stored_key_count"] == before - 3
        # answered only once xinglong applied the notice: bob can fetch them at once
        fetched = bob.post("/api/v1/keys/alice/dec_keys", json=_ids(keys))
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["keys"] == keys
        again = bob.get("/api/v1/keys/alice/dec_keys", params={"key_ID": keys[0]["key_ID"]})
        assert again.status_code == 400  # consumed at xinglong
        # graz's masters never see a key xinglong's masters got, and the reverse
        with xinglong.client("carol") as carol:
            theirs = carol.post("/api/v1/keys/erin/enc_keys", json={"number": 3})
        assert theirs.status_code == 200
        assert not {k["key_ID"] for k in theirs.json()["keys"]} & {k["key_ID"] for k in keys}
        assert not {k["key"] for k in theirs.json()["keys"]} & {k["key"] for k in keys}
    for key in keys:  # graz keeps the master's keys delivered, xinglong erased them
        assert graz.kms.state_of(key["key_ID"]) == "delivered"
        assert xinglong.kms.state_of(key["key_ID"]) == "consumed"
        assert len(base64.b64decode(key["key"])) == 32
    assert graz.kms.pending_notices() == []


def _example(app: str, node: Node, sae: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable, str(REPO / "examples" / "etsi014" / app), "--kme", node.url,
            "--ca", str(node.certs / "ca.crt"), "--cert", str(node.certs / f"{sae}.crt"),
            "--key", str(node.certs / f"{sae}.key"), *args,
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_example_applications_share_a_file_through_the_two_kmes(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    plain, sealed, opened = tmp_path / "plain.bin", tmp_path / "sealed.json", tmp_path / "out"
    plain.write_bytes(os.urandom(4000))
    args = ("--slave", "bob", "--in", str(plain), "--out", str(sealed))
    sent = _example("sae_encrypt.py", nodes["graz"], "alice", *args)
    assert sent.returncode == 0, sent.stderr
    got = _example(
        "sae_decrypt.py", nodes["xinglong"], "bob", "--in", str(sealed), "--out", str(opened)
    )
    assert got.returncode == 0, got.stderr
    assert opened.read_bytes() == plain.read_bytes()


def test_the_slave_kme_refuses_ids_its_peer_did_not_deliver(nodes: dict[str, Node]) -> None:
    xinglong = nodes["xinglong"]
    never_taken = key_id_for(BLOCK, 256, KEYS - 2)  # graz's share, not handed out
    its_own = key_id_for(BLOCK, 256, KEYS - 1)  # xinglong's share
    with xinglong.client("bob") as bob:
        for key_id in (never_taken, its_own):
            answer = bob.get("/api/v1/keys/alice/dec_keys", params={"key_ID": key_id})
            assert answer.status_code == 400
            assert set(answer.json()) <= {"message", "details"}
    assert xinglong.kms.state_of(never_taken) == xinglong.kms.state_of(its_own) == "available"


def test_forged_and_replayed_notices_are_refused(nodes: dict[str, Node]) -> None:
    graz, xinglong = nodes["graz"], nodes["xinglong"]
    target = key_id_for(BLOCK, 256, KEYS - 4)  # graz's share, never handed out
    notice = {
        "source_KME_ID": "kme-graz",
        "target_KME_ID": "kme-xinglong",
        "seq": 10_000,
        "action": "address",
        "master_SAE_ID": "alice",
        "slave_SAE_ID": "bob",
        "key_IDs": [target],
    }
    # an SAE of xinglong (a valid certificate of its CA, but not the peer KME's) forges one
    with xinglong.client("bob") as bob:
        assert bob.post(NOTICES_PATH, json=notice).status_code == 401
    # a certificate of graz's CA (alice's) fails the handshake at xinglong
    with pytest.raises(httpx.HTTPError), xinglong.client("alice", graz.certs) as alice:
        alice.post(NOTICES_PATH, json=notice)
    with xinglong.as_peer() as peer:
        # the peer's own certificate may not claim keys of xinglong's share
        mine = {**notice, "key_IDs": [key_id_for(BLOCK, 256, KEYS - 3)]}
        assert peer.post(NOTICES_PATH, json=mine).status_code == 400
        # nor address a notice to another KME
        elsewhere = {**notice, "target_KME_ID": "kme-stellenbosch"}
        assert peer.post(NOTICES_PATH, json=elsewhere).status_code == 400
        assert xinglong.kms.state_of(target) == "available"
        # a notice the peer really sent, replayed: refused, nothing changes
        with graz.client("alice") as alice:
            taken = alice.post("/api/v1/keys/bob/enc_keys", json={"number": 1}).json()["keys"]
        applied = xinglong.kms.applied_through()
        replay = {**notice, "seq": applied, "key_IDs": [taken[0]["key_ID"]]}
        answer = peer.post(NOTICES_PATH, json={**replay, "action": "void"})
        assert answer.status_code == 409
        assert answer.json()["details"] == [{"applied_through": applied}]
    assert xinglong.kms.state_of(taken[0]["key_ID"]) == "delivered"  # not erased by the replay
    assert xinglong.kms.state_of(target) == "available"
    assert xinglong.sync.counters["refused_not_peer"] >= 1
    assert xinglong.sync.counters["refused_replayed"] >= 1


def test_an_unreachable_peer_gets_the_master_nothing_and_the_keys_erased_at_both(
    nodes: dict[str, Node],
) -> None:
    graz, xinglong = nodes["graz"], nodes["xinglong"]
    dead = PeerKme(**{**graz.sync.peer.__dict__, "url": f"https://127.0.0.1:{free_tcp_port()}"})
    cut_off = KmeSync(graz.kms, dead, Counter(), timeout_s=2.0)
    keys = graz.kms.deliver_to_master("ogs-xinglong", "alice", "bob", 1)
    from satqkd_ogs.key_delivery.models import Key, KeyContainer

    container = KeyContainer(keys=[Key(key_ID=keys[0].key_id, key="")])
    with pytest.raises(DeliveryRefused) as refused:
        asyncio.run(cut_off.confirm("alice", "bob", container))
    assert refused.value.status == 503
    key_id = keys[0].key_id
    assert graz.kms.state_of(key_id) == "consumed"  # erased at graz
    assert [n.action for n in graz.kms.pending_notices()] == ["address", "void"]
    assert asyncio.run(graz.sync.push())  # the peer is back: both notices, in order
    assert graz.kms.pending_notices() == []
    assert xinglong.kms.state_of(key_id) == "consumed"
