"""Trusted relay through the satellite with the real daemons: equal keys at both stations,
consumption at all three nodes, delivery once through ETSI GS QKD 014 (docs/relay.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from satqkd.relay_run import RelayRequest, run_relay
from satqkd_ogs.key_delivery.models import KeyRequest
from satqkd_ogs.key_delivery.service import DeliveryRefused, DeliverySettings, KeyDelivery
from satqkd_payload.key_lifecycle import discard_confirmed_key
from satqkd_payload.session import PayloadPassOutcome
from satqkd_runtime.key_management import KeyManagement, key_id_for
from satqkd_runtime.keystore import KeyStore
from tests.app.relay_stores import add_shared_key, install_link, two_links

A, B = "xinglong", "stellenbosch"


async def test_relay_after_a_real_pass_gives_both_stations_the_pass_key(
    short_clear_pass: tuple[Path, dict], tmp_path: Path
) -> None:
    out, report = short_clear_pass
    assert report["key"]["secret_key_bits"] >= 4096
    keys = tmp_path / "keys"
    shutil.copytree(out / "keys", keys)  # the session's pass stays as it was
    payload, station_a = keys / "payload", keys / f"ogs-{A}"
    station_b = keys / f"ogs-{B}"
    install_link(payload, station_b, B)
    add_shared_key(payload, station_b, B, 8192)
    (pass_key,) = KeyStore(station_a).key_ids("confirmed")
    key_a = np.packbits(KeyStore(station_a).load(pass_key), bitorder="big").tobytes()

    result = await run_relay(payload, {A: station_a, B: station_b}, RelayRequest(7, A, B, 4096))

    assert result.ok, result.abort_reason
    # B recovered A's first 4096 bits of the pass key: both hold it, under the same ids
    assert result.sha256 == {A: hashlib.sha256(key_a[:512]).hexdigest()} | {
        B: hashlib.sha256(key_a[:512]).hexdigest()
    }
    assert len(result.key_ids) == 16
    for directory in (station_a, station_b):
        with KeyManagement(directory / "kms") as kms:
            assert [kms.state_of(k) for k in result.key_ids] == ["available"] * 16
            relay_block = next(b for b in kms.blocks() if b.origin == "relay")
            assert relay_block.block_id == result.relay_block_id
            assert relay_block.size_bits == 4096
    # the XOR broadcast (one authenticated copy to each station) is the relay's traffic
    assert 2 * 512 < result.relay_bytes < 2 * 512 + 1200
    # consumed at all three: the payload keeps no copy of the pass key, A's used keys erased
    assert pass_key not in KeyStore(payload / A).key_ids()
    used = [key_id_for(pass_key, 256, i) for i in range(16)]
    for directory in (payload / A, station_a):
        with KeyManagement(directory / "kms") as kms:
            assert {kms.state_of(k) for k in used} == {"consumed"}
            assert kms.state_of(key_id_for(pass_key, 256, 16)) == "available"


async def test_relay_keys_are_delivered_once_through_etsi_014_at_the_two_stations(
    tmp_path: Path,
) -> None:
    stores = two_links(tmp_path)
    stations = stores["stations"]
    result = await run_relay(stores["payload"], stations, RelayRequest(1, A, B, 1024))
    assert result.ok, result.abort_reason
    assert result.relay_bytes == 558  # the figure docs/relay.md gives
    kms_a, kms_b = KeyManagement(stations[A] / "kms"), KeyManagement(stations[B] / "kms")
    saes = frozenset({"alice", "bob", "carol"})
    kme_a = KeyDelivery(kms_a, DeliverySettings(f"kme-{A}", f"ogs-{B}", saes))
    kme_b = KeyDelivery(kms_b, DeliverySettings(f"kme-{B}", f"ogs-{A}", saes))
    try:
        taken = kme_a.enc_keys("alice", "bob", KeyRequest(number=4)).keys
        assert [k.key_ID for k in taken] == list(result.key_ids)
        # A's KME tells B's which ids alice took for bob (the key ids are the same at both)
        kms_b.address_to_pair([k.key_ID for k in taken], "alice", "bob")
        with pytest.raises(DeliveryRefused):  # an SAE the keys are not addressed to
            kme_b.dec_keys("carol", "alice", [taken[0].key_ID])
        fetched = kme_b.dec_keys("bob", "alice", [k.key_ID for k in taken]).keys
        assert [k.key for k in fetched] == [k.key for k in taken]
        relay_key = b"".join(base64.b64decode(k.key) for k in taken)
        assert hashlib.sha256(relay_key).hexdigest() == result.sha256[A] == result.sha256[B]
        assert relay_key == stores["keys"][A][1][:128]  # A's own key, B's recovered one
        with pytest.raises(DeliveryRefused):  # delivered once
            kme_b.dec_keys("bob", "alice", [taken[0].key_ID])
        with pytest.raises(DeliveryRefused) as no_more:
            kme_a.enc_keys("alice", "bob", KeyRequest(number=1))
        assert no_more.value.status == 503
    finally:
        kms_a.close()
        kms_b.close()


def test_keys_relay_command_writes_the_outcome_and_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from satqkd.cli import main

    stores = two_links(tmp_path)
    payload, stations = stores["payload"], stores["stations"]
    common = ["keys", "relay", "--payload-keys", str(payload), "--out", str(tmp_path / "out")]
    both = ["--station", f"{A}={stations[A]}", "--station", f"{B}={stations[B]}"]
    assert main([*common, *both, "--bits", "2048"]) == 0
    document = json.loads((tmp_path / "out" / "relay.json").read_text())
    assert document["ok"] and document["relay_id"] == 1
    assert document["sha256"][A] == hashlib.sha256(stores["keys"][A][1][:256]).hexdigest()
    assert document["sha256"][B] == document["sha256"][A]
    written = (tmp_path / "out" / "relay.json").read_text()
    for _, key in stores["keys"].values():  # ids, counts and digests only
        assert key[:16].hex() not in written
    capsys.readouterr()
    assert main([*common, *both, "--bits", "300"]) == 2
    assert capsys.readouterr().err == "satqkd: bits 300 is not a multiple of the key size 256\n"
    assert main([*common, "--station", f"{A}={stations[A]}", "--bits", "256"]) == 2
    assert "give exactly two" in capsys.readouterr().err
    # the next relay id; too few keys left on A's link: refused by the payload, status 1
    assert main([*common, *both, "--bits", "4096"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("satqkd: relay 2 not completed: payload: relay refused: link with A")
    assert "Traceback" not in err
    # the station gives the pass up late (it holds no key): what is left of the moved key goes
    key_a = stores["keys"][A][0]
    outcome = PayloadPassOutcome(key_id=key_a, confirmed=True)
    assert discard_confirmed_key(KeyStore(payload / A), outcome, "aborted late")
    assert outcome.discarded
    with KeyManagement(payload / A / "kms") as kms:
        assert kms.available_indices(key_a) == []
