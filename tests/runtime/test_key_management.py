"""The key management store: blocks with provenance, keys in states, each handed out once,
owner-only, erased when consumed, and confirmed keys entering from the key store once."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import numpy as np
import pytest

from satqkd_runtime.key_management import (
    KeyManagement,
    KeyManagementError,
    KeyRefused,
    NotEnoughKeys,
    key_id_for,
)
from satqkd_runtime.key_management_import import import_confirmed_keys
from satqkd_runtime.keystore import KeyStore

BLOCK = str(uuid.UUID(int=1, version=4))
MATERIAL = bytes(range(1, 41))  # 320 bits: five 64-bit keys


def _kms(tmp_path: Path, name: str = "kms") -> KeyManagement:
    kms = KeyManagement(tmp_path / name, key_size_bits=64)
    kms.add_block(
        BLOCK, MATERIAL, 316, peer="payload", origin="pass", plan_id=7, eps_sec=1e-9, eps_cor=1e-15
    )
    return kms


def test_block_is_carved_into_keys_with_provenance_and_owner_only_files(tmp_path: Path) -> None:
    kms = _kms(tmp_path)
    assert kms.counts() == {"available": 4, "reserved": 0, "delivered": 0, "consumed": 0}
    (block,) = kms.blocks()
    assert (block.peer, block.origin, block.plan_id, block.eps_sec, block.eps_cor) == (
        "payload",
        "pass",
        7,
        1e-9,
        1e-15,
    )
    assert (block.size_bits, block.dropped_bits) == (316, 60)  # 4 x 64 bits, 60 left over
    assert not kms.add_block(BLOCK, MATERIAL, 316, peer="payload", origin="pass")  # once
    assert kms.count() == 4
    assert stat.S_IMODE((tmp_path / "kms").stat().st_mode) == 0o700
    files = list((tmp_path / "kms").iterdir())
    assert {p.name for p in files} >= {"keys.sqlite", "keys.sqlite-wal", "keys.sqlite-shm"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    kms.close()


def test_both_ends_carve_the_same_keys_under_the_same_ids(tmp_path: Path) -> None:
    station, payload = _kms(tmp_path, "station"), _kms(tmp_path, "payload")
    a = station.deliver_to_master("payload", "alice", "bob", 4)
    b = payload.deliver_to_master("payload", "carol", "dave", 4)
    assert a == b
    assert [k.key_id for k in a] == [key_id_for(BLOCK, 64, i) for i in range(4)]
    assert [k.material for k in a] == [MATERIAL[8 * i : 8 * i + 8] for i in range(4)]


def test_a_key_goes_once_to_its_master_and_once_to_its_slave_then_is_gone(tmp_path: Path) -> None:
    kms = _kms(tmp_path)
    first, second = kms.deliver_to_master("payload", "alice", "bob", 2)
    assert kms.state_of(first.key_id) == "delivered"
    again = kms.deliver_to_master("payload", "alice", "bob", 2)
    assert {k.key_id for k in again}.isdisjoint({first.key_id, second.key_id})
    with pytest.raises(NotEnoughKeys):  # nothing is handed out when too few are left
        kms.deliver_to_master("payload", "alice", "bob", 1)
    assert kms.counts()["available"] == 0
    # only the slave it was addressed to, by the master that obtained it
    for master, slave in (("alice", "carol"), ("carol", "bob"), ("bob", "alice")):
        with pytest.raises(KeyRefused):
            kms.deliver_to_slave(master, slave, [first.key_id])
    assert kms.deliver_to_slave("alice", "bob", [first.key_id]) == [first]
    assert kms.state_of(first.key_id) == "consumed"
    with pytest.raises(KeyRefused, match="already delivered"):
        kms.deliver_to_slave("alice", "bob", [first.key_id])
    with pytest.raises(KeyRefused):  # one refused id: nothing handed out
        kms.deliver_to_slave("alice", "bob", [second.key_id, first.key_id])
    assert kms.state_of(second.key_id) == "delivered"
    with pytest.raises(KeyRefused, match="twice"):
        kms.deliver_to_slave("alice", "bob", [second.key_id, second.key_id])


def test_consumed_key_bits_are_gone_from_every_file(tmp_path: Path) -> None:
    kms = KeyManagement(tmp_path / "kms", key_size_bits=256)
    secret = bytes(np.random.default_rng(5).integers(0, 256, 64, dtype=np.uint8))
    kms.add_block(BLOCK, secret, 512, peer="payload", origin="import")
    keys = kms.deliver_to_master("payload", "alice", "bob", 2)
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "kms").iterdir())
    assert keys[0].material in on_disk  # stored while it waits for its slave
    kms.deliver_to_slave("alice", "bob", [k.key_id for k in keys])
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "kms").iterdir())
    assert keys[0].material not in on_disk and keys[1].material not in on_disk
    kms.close()


def test_reserved_keys_serve_only_their_holder(tmp_path: Path) -> None:
    kms = _kms(tmp_path)
    held = kms.reserve("payload", 2, "relay-plan-4")
    assert kms.count(state="reserved") == 2 and kms.count() == 2
    with pytest.raises(KeyRefused):
        kms.consume_reserved(held, "relay-plan-5")
    assert kms.release(held[1:], "relay-plan-4") == 1
    (used,) = kms.consume_reserved(held[:1], "relay-plan-4")
    assert used.key_id == held[0] and kms.state_of(held[0]) == "consumed"
    with pytest.raises(NotEnoughKeys):
        kms.reserve("payload", 4, "relay-plan-6")
    assert kms.count() == 3


def test_bad_blocks_and_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyManagementError, match="multiple of 8"):
        KeyManagement(tmp_path / "a", key_size_bits=100)
    kms = KeyManagement(tmp_path / "b", key_size_bits=64)
    with pytest.raises(KeyManagementError, match="do not hold"):
        kms.add_block(BLOCK, b"\x00" * 3, 64, peer="payload", origin="pass")
    with pytest.raises(KeyManagementError, match="origin"):
        kms.add_block(BLOCK, b"\x00" * 8, 64, peer="payload", origin="magic")
    kms.close()
    with pytest.raises(KeyManagementError, match="carved into 64-bit keys, not 256"):
        KeyManagement(tmp_path / "b", key_size_bits=256)
    (tmp_path / "c").mkdir(mode=0o700)
    (tmp_path / "c" / "keys.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(KeyManagementError, match="not a usable key database"):
        KeyManagement(tmp_path / "c")


def test_confirmed_keys_of_the_key_store_enter_once(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "ogs")
    rng = np.random.default_rng(3)
    ids = [str(uuid.UUID(int=10 + i, version=4)) for i in range(3)]
    bits = [rng.integers(0, 2, 200, dtype=np.uint8) for _ in ids]
    for i, (key_id, key) in enumerate(zip(ids, bits, strict=True)):
        store.store(key_id, key, "payload", 20 + i, 100.0 + i)
    store.confirm(ids[0])
    store.confirm(ids[2])
    kms = KeyManagement(tmp_path / "ogs" / "kms", key_size_bits=64)
    assert import_confirmed_keys(store, kms, eps_sec=1e-9) == [ids[0], ids[2]]  # not pending
    assert import_confirmed_keys(store, kms) == []
    assert [(b.block_id, b.plan_id, b.eps_sec) for b in kms.blocks()] == [
        (ids[0], 20, 1e-9),
        (ids[2], 22, 1e-9),
    ]
    (key,) = kms.deliver_to_master("payload", "alice", "bob", 1)
    assert key.material == np.packbits(bits[0][:64], bitorder="big").tobytes()
    store.confirm(ids[1])
    assert import_confirmed_keys(store, kms) == [ids[1]]
    assert store.key_ids() == ids  # the key store keeps its copy (reports digest it)
