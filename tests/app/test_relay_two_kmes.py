"""After a trusted relay, each station's own KME (`satqkd kms serve --peer-kme`, a process
each) serves the relay key: an application at Xinglong seals a file with a key from enc_keys
at Xinglong's KME, one at Stellenbosch opens it with the key fetched by id from dec_keys at
Stellenbosch's KME (examples/etsi014, docs/key-delivery.md "Two KMEs")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from satqkd.cli import main
from satqkd.kms_cli import write_kms_certificates
from satqkd.relay_run import RelayRequest, run_relay
from satqkd_runtime.key_management import KeyManagement, key_id_for
from tests.app.relay_stores import two_links
from tests.conftest import free_tcp_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "etsi014"
A, B = "xinglong", "stellenbosch"
SAE = {A: "alice", B: "bob"}


def _serve(station: str, keys: Path, certs: Path, port: int, peer_port: int) -> subprocess.Popen:
    other = B if station == A else A
    return subprocess.Popen(
        [
            sys.executable, "-m", "satqkd.cli", "kms", "serve",
            "--station", str(REPO / "configs" / "stations" / f"{station}.yaml"),
            "--keys", str(keys), "--certs", str(certs / station), "--sae", SAE[station],
            "--peer", f"ogs-{other}", "--peer-sae", SAE[other],
            "--peer-kme", f"https://127.0.0.1:{peer_port}",
            "--peer-kme-certs", str(certs / other / f"peer-kme-{station}"),
            "--port", str(port),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip


def _sae(app: str, certs: Path, station: str, url: str, *args: str) -> subprocess.CompletedProcess:
    folder, sae = certs / station, SAE[station]
    return subprocess.run(
        [
            sys.executable, str(EXAMPLE / app), "--kme", url, "--ca", str(folder / "ca.crt"),
            "--cert", str(folder / f"{sae}.crt"), "--key", str(folder / f"{sae}.key"), *args,
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.slow  # two `kms serve` processes and a relay: ~6-14 s; tests/ogs/test_kme_sync.py
# runs the same example against two in-process KMEs in the default run
async def test_two_applications_share_a_file_through_the_two_stations_kmes(
    tmp_path: Path,
) -> None:
    stores = two_links(tmp_path)
    stations = stores["stations"]
    result = await run_relay(stores["payload"], stations, RelayRequest(1, A, B, 2048))
    assert result.ok, result.abort_reason
    certs = tmp_path / "certs"
    for station in (A, B):
        other = B if station == A else A
        write_kms_certificates(
            certs / station, station, [SAE[station]], hosts=[], days=1, force=False,
            peer_kmes=[other],
        )  # fmt: skip
    ports = {A: free_tcp_port(), B: free_tcp_port()}
    servers = {s: _serve(s, stations[s], certs, ports[s], ports[B if s == A else A]) for s in ports}
    try:
        for server in servers.values():
            assert server.stdout is not None
            ready = server.stdout.readline()
            assert "serving ETSI GS QKD 014" in ready, server.stderr.read() if server.stderr else ""
        plain, sealed = tmp_path / "plain.bin", tmp_path / "sealed.json"
        plain.write_bytes(os.urandom(3000))
        url = {s: f"https://127.0.0.1:{p}" for s, p in ports.items()}
        sent = _sae(
            "sae_encrypt.py", certs, A, url[A], "--slave", "bob", "--in", str(plain),
            "--out", str(sealed),
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        # the key is a relay key of Xinglong's share (kme-stellenbosch sorts first: even
        # indices are Stellenbosch's, so Xinglong's masters start at index 1)
        assert key_id_for(result.relay_block_id, 256, 1) in sealed.read_text()
        opened = tmp_path / "opened.bin"
        got = _sae("sae_decrypt.py", certs, B, url[B], "--in", str(sealed), "--out", str(opened))
        assert got.returncode == 0, got.stderr
        assert opened.read_bytes() == plain.read_bytes()
        again = _sae(
            "sae_decrypt.py", certs, B, url[B], "--in", str(sealed),
            "--out", str(tmp_path / "again.bin"),
        )  # fmt: skip
        assert again.returncode != 0 and "already delivered" in again.stderr
    finally:
        for server in servers.values():
            server.send_signal(signal.SIGTERM)
        for server in servers.values():
            server.wait(timeout=20)
    said = {s: server.stdout.read() if server.stdout else "" for s, server in servers.items()}
    assert all(server.returncode == 0 for server in servers.values()), said
    for counted in ("'keys_to_master': 1", "'sync_sent_address': 1"):
        assert counted in said[A], said[A]
    for counted in ("'sync_applied_address': 1", "'keys_to_slave': 1"):
        assert counted in said[B], said[B]
    key_id = key_id_for(result.relay_block_id, 256, 1)
    for station, state in ((A, "delivered"), (B, "consumed")):
        with KeyManagement(stations[station] / "kms") as kms:
            assert kms.state_of(key_id) == state


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--peer", "payload"], "another station"),
        (["--peer", "ogs-graz", "--peer-sae", "bob"], "--peer-kme-certs: give"),
        (["--peer", "ogs-graz"], "--peer-sae: name"),
        (["--peer", "ogs-graz", "--peer-sae", "alice"], "one KME, not both"),
        (["--peer", "ogs-graz", "--peer-sae", "bob", "--peer-kme-certs", "OWN"], "own CA"),
    ],
)
def test_two_kme_options_that_do_not_fit_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    write_kms_certificates(tmp_path / "c", A, ["alice"], hosts=[], days=1, force=False)
    (tmp_path / "keys").mkdir()
    status = main(
        [
            "kms", "serve", "--station", str(REPO / "configs" / "stations" / f"{A}.yaml"),
            "--keys", str(tmp_path / "keys"), "--certs", str(tmp_path / "c"), "--sae", "alice",
            "--peer-kme", "https://127.0.0.1:1",
            *[str(tmp_path / "c") if arg == "OWN" else arg for arg in extra],
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and words in err, err
