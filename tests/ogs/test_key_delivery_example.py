"""The two-application example (examples/etsi014): `satqkd kms serve` in its own process serves a
station's confirmed keys; one application encrypts a file with a key from enc_keys, the other
fetches the same key by its id from dec_keys and decrypts it; the key is not handed out again."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from satqkd.cli import main
from satqkd.kms_cli import write_kms_certificates
from satqkd_runtime.key_management import KeyManagement
from satqkd_runtime.keystore import KeyStore
from tests.conftest import free_tcp_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "etsi014"
STATION = REPO / "configs" / "stations" / "xinglong.yaml"


def _station_keys(directory: Path) -> KeyStore:
    """Two confirmed keys of 1000 bits and a pending one."""
    store = KeyStore(directory)
    rng = np.random.default_rng(14)
    for plan in (1, 2, 3):
        key_id = str(uuid.UUID(int=plan, version=4))
        store.store(key_id, rng.integers(0, 2, 1000, dtype=np.uint8), "payload", plan, 0.0)
        if plan < 3:
            store.confirm(key_id)
    return store


def _available(url: str, certs: Path) -> int:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(certs / "alice.crt"), str(certs / "alice.key"))
    with httpx.Client(base_url=url, verify=context) as alice:
        return int(alice.get("/api/v1/keys/bob/status").json()["stored_key_count"])


def _sae(app: str, certs: Path, sae: str, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / app),
            "--kme",
            url,
            "--ca",
            str(certs / "ca.crt"),
            "--cert",
            str(certs / f"{sae}.crt"),
            "--key",
            str(certs / f"{sae}.key"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_two_applications_share_a_file_through_etsi014(tmp_path: Path) -> None:
    keys, certs = tmp_path / "ogs-keys", tmp_path / "certs"
    store = _station_keys(keys)
    write_kms_certificates(certs, "xinglong", ["alice", "bob"], hosts=[], days=1, force=False)
    port = free_tcp_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "satqkd.cli",
            "kms",
            "serve",
            "--station",
            str(STATION),
            "--keys",
            str(keys),
            "--certs",
            str(certs),
            "--sae",
            "alice",
            "--sae",
            "bob",
            "--port",
            str(port),
            "--mission",
            str(REPO / "configs/missions/jinan1.yaml"),
            "--import-interval-s",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        assert "serving ETSI GS QKD 014" in ready, server.stderr.read() if server.stderr else ""
        assert "2 blocks entered, 6 keys available" in ready  # 1000 bits: three 256-bit keys
        url = f"https://127.0.0.1:{port}"
        store.confirm(str(uuid.UUID(int=3, version=4)))  # confirmed while the KME runs
        deadline = time.monotonic() + 10
        while _available(url, certs) < 9:
            assert time.monotonic() < deadline, "a key confirmed later never entered"
            time.sleep(0.1)
        plain = tmp_path / "plain.bin"
        plain.write_bytes(os.urandom(5000))
        sealed = tmp_path / "sealed.json"
        sent = _sae(
            "sae_encrypt.py",
            certs,
            "alice",
            url,
            "--slave",
            "bob",
            "--in",
            str(plain),
            "--out",
            str(sealed),
        )
        assert sent.returncode == 0, sent.stderr
        assert plain.read_bytes()[:64].hex() not in sealed.read_text()
        opened = tmp_path / "opened.bin"
        got = _sae("sae_decrypt.py", certs, "bob", url, "--in", str(sealed), "--out", str(opened))
        assert got.returncode == 0, got.stderr
        assert opened.read_bytes() == plain.read_bytes()
        again = _sae(
            "sae_decrypt.py",
            certs,
            "bob",
            url,
            "--in",
            str(sealed),
            "--out",
            str(tmp_path / "again.bin"),
        )
        assert again.returncode != 0 and "already delivered" in again.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    assert server.returncode == 0
    stopped = server.stdout.read() if server.stdout else ""
    for counted in ("'keys_to_master': 1", "'keys_to_slave': 1", "'refused_key_refused': 1"):
        assert counted in stopped, stopped  # each hand-over and refusal is counted
    with KeyManagement(keys / "kms") as kms:
        key_id = json.loads(sealed.read_text())["key_ID"]
        assert kms.state_of(key_id) == "consumed"
        assert {b.eps_sec for b in kms.blocks()} == {1e-9}  # provenance from the mission


def test_serve_without_certificates_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "keys").mkdir()
    status = main(
        [
            "kms",
            "serve",
            "--station",
            str(STATION),
            "--keys",
            str(tmp_path / "keys"),
            "--certs",
            str(tmp_path / "none"),
            "--sae",
            "a",
            "--sae",
            "b",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "kms certs" in err
    assert main(["kms", "certs", str(tmp_path / "c"), "--station", "x", "--sae", "kme-a"]) == 2


@pytest.mark.parametrize("args", [["--sae", "only-one"], ["--sae", "a", "--sae", "a"]])
def test_serve_needs_two_saes(tmp_path: Path, capsys, args: list[str]) -> None:
    (tmp_path / "keys").mkdir()
    status = main(
        [
            "kms",
            "serve",
            "--station",
            str(STATION),
            "--keys",
            str(tmp_path / "keys"),
            "--certs",
            str(tmp_path),
            *args,
        ]
    )
    assert status == 2 and "at least two" in capsys.readouterr().err
