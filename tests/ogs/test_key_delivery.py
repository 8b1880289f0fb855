"""The ETSI GS QKD 014 key delivery API over real HTTPS with client certificates (httpx), with
the standard's request and response examples (ETSI GS QKD 014 V1.1.1, clauses 5 and 6)."""

from __future__ import annotations

import base64
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from satqkd.kms_cli import openapi_text, write_kms_certificates
from satqkd_ogs.key_delivery import DeliverySettings, create_app, server_config
from satqkd_runtime.key_management import KeyManagement
from tests.conftest import free_tcp_port

REPO = Path(__file__).resolve().parents[2]
SERVED = ("alice", "bob", "carol")
BLOCK_KEYS = 12  # keys of 256 bits in the one block the KME holds

# clause 6.1, the Status example: the fields (values are the KME's own)
STATUS_FIELDS = {
    "source_KME_ID",
    "target_KME_ID",
    "master_SAE_ID",
    "slave_SAE_ID",
    "key_size",
    "stored_key_count",
    "max_key_count",
    "max_key_per_request",
    "max_key_size",
    "min_key_size",
    "max_SAE_ID_count",
}
# clause 6.2, the Key request example
KEY_REQUEST_EXAMPLE = {
    "number": 3,
    "size": 1024,
    "additional_slave_SAE_IDs": ["ABCDEFG", "HIJKLMN"],
    "extension_mandatory": [{"abc_route_type": "direct"}, {"abc_transfer_method": "qkd"}],
    "extension_optional": [{"abc_max_age": 30000}],
}
# clause 6.4, the Key IDs example
KEY_IDS_EXAMPLE = {
    "key_IDs": [
        {"key_ID": "bc490419-7d60-487f-adc1-4ddcc177c139"},
        {"key_ID": "0a782fb5-3434-48fe-aa4d-14f41d46cf92"},
    ]
}


class Kme:
    """A running KME: its base URL, certificate directory and key management store."""

    def __init__(self, url: str, certs: Path, kms_dir: Path) -> None:
        self.url, self.certs, self.kms_dir = url, certs, kms_dir

    def client(self, sae: str | None, certs: Path | None = None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        if sae is not None:
            where = certs or self.certs
            context.load_cert_chain(str(where / f"{sae}.crt"), str(where / f"{sae}.key"))
        return httpx.Client(base_url=self.url, verify=context, timeout=10.0)


@pytest.fixture(scope="module")
def kme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kme]:
    root = tmp_path_factory.mktemp("kme")
    write_kms_certificates(
        root / "certs", "xinglong", [*SERVED, "dave"], hosts=[], days=2, force=False
    )
    write_kms_certificates(root / "foreign", "graz", ["alice"], hosts=[], days=2, force=False)
    kms = KeyManagement(root / "kms", key_size_bits=256)
    material = bytes((7 * i + 3) % 256 for i in range(32 * BLOCK_KEYS))
    kms.add_block(str(uuid.uuid4()), material, 256 * BLOCK_KEYS, peer="payload", origin="pass")
    settings = DeliverySettings("kme-xinglong", "payload", frozenset(SERVED))
    port = free_tcp_port()
    server = uvicorn.Server(
        server_config(
            create_app(kms, settings),
            host="127.0.0.1",
            port=port,
            ca_file=root / "certs" / "ca.crt",
            cert_file=root / "certs" / "kme-xinglong.crt",
            key_file=root / "certs" / "kme-xinglong.key",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the KME did not start"
        time.sleep(0.02)
    yield Kme(f"https://127.0.0.1:{port}", root / "certs", root / "kms")
    server.should_exit = True
    thread.join(timeout=10)
    kms.close()


def _available(kme: Kme) -> int:
    with KeyManagement(kme.kms_dir, key_size_bits=256) as view:
        return view.count("payload")


def test_status_has_the_standards_fields(kme: Kme) -> None:
    with kme.client("alice") as alice:
        answer = alice.get("/api/v1/keys/bob/status")
    assert answer.status_code == 200
    status = answer.json()
    assert set(status) == STATUS_FIELDS
    assert (status["master_SAE_ID"], status["slave_SAE_ID"]) == ("alice", "bob")
    assert status["key_size"] == status["min_key_size"] == status["max_key_size"] == 256
    assert status["stored_key_count"] == _available(kme)
    assert status["max_SAE_ID_count"] == 0


def test_master_gets_keys_and_only_its_slave_gets_them_once(kme: Kme) -> None:
    with kme.client("alice") as alice, kme.client("bob") as bob, kme.client("carol") as carol:
        refused = alice.post("/api/v1/keys/bob/enc_keys", json=KEY_REQUEST_EXAMPLE)
        assert refused.status_code == 400  # this KME supports neither extension nor multicast
        assert set(refused.json()) <= {"message", "details"}
        request = {k: KEY_REQUEST_EXAMPLE[k] for k in ("number", "extension_optional")}
        answer = alice.post("/api/v1/keys/bob/enc_keys", json={**request, "size": 256})
        assert answer.status_code == 200
        keys = answer.json()["keys"]
        assert len(keys) == 3
        for key in keys:
            assert set(key) == {"key_ID", "key"}
            uuid.UUID(key["key_ID"])
            assert len(base64.b64decode(key["key"], validate=True)) == 32
        ids = {"key_IDs": [{"key_ID": key["key_ID"]} for key in keys]}
        # another SAE of this KME, the master itself, a wrong master: all refused
        assert carol.post("/api/v1/keys/alice/dec_keys", json=ids).status_code == 400
        assert alice.post("/api/v1/keys/alice/dec_keys", json=ids).status_code == 400
        assert bob.post("/api/v1/keys/carol/dec_keys", json=ids).status_code == 400
        delivered = bob.post("/api/v1/keys/alice/dec_keys", json=ids)
        assert delivered.status_code == 200 and delivered.json()["keys"] == keys
        again = bob.post("/api/v1/keys/alice/dec_keys", json=ids)
        assert again.status_code == 400 and "already delivered" in again.json()["message"]
        unknown = bob.post("/api/v1/keys/alice/dec_keys", json=KEY_IDS_EXAMPLE)
        assert unknown.status_code == 400
        # GET forms (clause 5.3, 5.4); a new key each time, never one handed out before
        got = alice.get("/api/v1/keys/bob/enc_keys", params={"number": 2}).json()["keys"]
        assert {k["key_ID"] for k in got}.isdisjoint({k["key_ID"] for k in keys})
        by_id = bob.get("/api/v1/keys/alice/dec_keys", params={"key_ID": got[1]["key_ID"]})
        assert by_id.status_code == 200 and by_id.json()["keys"] == got[1:]


def test_callers_without_a_served_certificate_are_refused(kme: Kme) -> None:
    with kme.client(None) as anonymous:
        answer = anonymous.get("/api/v1/keys/bob/status")
    assert answer.status_code == 401 and "certificate" in answer.json()["message"]
    with kme.client("dave") as dave:  # the KME's CA issued it, but dave is not served
        assert dave.post("/api/v1/keys/bob/enc_keys", json={"number": 1}).status_code == 401
    foreign = kme.client("alice", certs=kme.certs.parent / "foreign")
    with foreign, pytest.raises(httpx.HTTPError):  # another CA: the handshake fails
        foreign.get("/api/v1/keys/bob/status")


@pytest.mark.parametrize(
    ("method", "path", "body", "words"),
    [
        ("post", "bob/enc_keys", {"number": 1, "size": 100}, "size 100"),
        ("post", "bob/enc_keys", {"number": 0}, "bad request format"),
        ("post", "bob/enc_keys", {"number": 129}, "max_key_per_request"),
        ("post", "bob/enc_keys", {"number": 1, "colour": "red"}, "bad request format"),
        ("post", "dave/enc_keys", {"number": 1}, "not an SAE"),
        ("get", "alice/status", None, "calling SAE itself"),
        ("post", "bob/dec_keys", {"key_IDs": [{"key_ID": "../etc"}]}, "not a UUID"),
        ("post", "bob/dec_keys", {"key_IDs": []}, "bad request format"),
    ],
)
def test_bad_requests_get_400_with_an_error_body(kme: Kme, method, path, body, words) -> None:
    before = _available(kme)
    with kme.client("alice") as alice:
        answer = alice.request(method.upper(), f"/api/v1/keys/{path}", json=body)
    assert answer.status_code == 400
    assert words in answer.json()["message"]
    assert _available(kme) == before


def test_not_enough_keys_is_503_and_hands_out_nothing(kme: Kme) -> None:
    before = _available(kme)
    with kme.client("carol") as carol:
        answer = carol.post("/api/v1/keys/bob/enc_keys", json={"number": before + 1})
    assert answer.status_code == 503 and "not enough keys" in answer.json()["message"]
    assert _available(kme) == before


def test_published_openapi_document_is_current() -> None:
    published = (REPO / "docs" / "etsi014-openapi.json").read_text()
    assert published == openapi_text(), "run: satqkd kms openapi --out docs/etsi014-openapi.json"


def test_a_pass_keys_enter_both_ends_as_the_same_keys(
    short_clear_pass: tuple[Path, dict], tmp_path: Path
) -> None:
    """The confirmed key of a simulated pass enters the station's and the payload's stores as
    the same block, carved into the same keys under the same ids (the seam for a KME at each
    end), and the station's copy is the key the report digests."""
    import hashlib

    from satqkd_runtime.key_management_import import import_confirmed_keys
    from satqkd_runtime.keystore import KeyStore

    out, report = short_clear_pass
    station = KeyStore(out / "keys" / "ogs-xinglong")
    payload = KeyStore(out / "keys" / "payload" / "xinglong")
    ends = [KeyManagement(tmp_path / name, key_size_bits=256) for name in ("ogs", "payload")]
    stores = (station, payload)
    entered = [import_confirmed_keys(store, kms) for store, kms in zip(stores, ends, strict=True)]
    assert entered[0] == entered[1] == station.key_ids() and entered[0]
    bits = report["key"]["secret_key_bits"]
    assert sum(b.size_bits for b in ends[0].blocks()) == bits
    number = ends[0].count("payload")
    assert number == bits // 256 > 0
    at_station = ends[0].deliver_to_master("payload", "alice", "bob", number)
    (station_name,) = ends[1].peers()  # the payload's blocks are shared with the station
    at_payload = ends[1].deliver_to_master(station_name, "carol", "dave", number)
    assert at_station == at_payload
    packed = b"".join(k.material for k in at_station)
    whole = b"".join((station.directory / f"{k}.key").read_bytes() for k in entered[0])
    assert whole.startswith(packed)
    assert hashlib.sha256(whole).hexdigest() == report["key"]["sha256_ogs"]
