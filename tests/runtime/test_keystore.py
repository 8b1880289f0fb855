"""Keys are stored owner-only, never overwritten, and read back bit for bit."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import numpy as np
import pytest

from satqkd_runtime.key_management import KeyManagement
from satqkd_runtime.keystore import KeyStore, KeyStoreError


def test_store_load_confirm_and_permissions(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "ogs")
    key = np.random.default_rng(1).integers(0, 2, 1001, dtype=np.uint8)
    key_id = str(uuid.UUID(int=5, version=4))
    store.store(key_id, key, "payload", 3, 1000.0)
    assert np.array_equal(store.load(key_id), key)
    assert store.metadata(key_id).state == "pending"
    store.confirm(key_id)
    assert store.metadata(key_id).state == "confirmed"
    assert stat.S_IMODE((tmp_path / "ogs").stat().st_mode) == 0o700
    for path in (tmp_path / "ogs").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    meta_text = (tmp_path / "ogs" / f"{key_id}.json").read_text()
    assert "1001" in meta_text and len(meta_text) < 400  # metadata only, no key bits
    assert store.total_bits() == 1001 and store.key_ids() == [key_id]


def test_a_new_key_tree_is_owner_only_all_the_way_down(tmp_path: Path) -> None:
    """Directories a key store (or a key-management store) creates above itself are 0700
    too, so a fresh `keys/` tree does not list its stations and missions to other users;
    a parent that already existed keeps its mode."""
    tmp_path.chmod(0o755)
    KeyStore(tmp_path / "out" / "keys" / "missions" / "jinan1" / "xinglong")
    KeyManagement(tmp_path / "out" / "keys" / "payload" / "kms")
    for made in (
        "out",
        "out/keys",
        "out/keys/missions",
        "out/keys/missions/jinan1",
        "out/keys/missions/jinan1/xinglong",
        "out/keys/payload",
        "out/keys/payload/kms",
    ):
        assert stat.S_IMODE((tmp_path / made).stat().st_mode) == 0o700, made
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_refuses_overwrite_and_bad_ids(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key_id = str(uuid.UUID(int=7, version=4))
    store.store(key_id, np.ones(8, np.uint8), "x", 1, 0.0)
    with pytest.raises(KeyStoreError, match="already stored"):
        store.store(key_id, np.zeros(8, np.uint8), "x", 1, 0.0)
    with pytest.raises(KeyStoreError, match="not a UUID"):
        store.store("../../etc/passwd", np.zeros(8, np.uint8), "x", 1, 0.0)
    with pytest.raises(KeyStoreError, match="no secret"):
        store.load_secret("preshared-auth")


def test_digest_equal_for_equal_keys(tmp_path: Path) -> None:
    a, b = KeyStore(tmp_path / "a"), KeyStore(tmp_path / "b")
    key = np.random.default_rng(2).integers(0, 2, 77, dtype=np.uint8)
    key_id = str(uuid.UUID(int=9, version=4))
    a.store(key_id, key, "b", 1, 0.0)
    b.store(key_id, key, "a", 1, 5.0)
    a.confirm(key_id)
    b.confirm(key_id)
    assert a.digest() == b.digest()
    other = KeyStore(tmp_path / "c")
    flipped = key.copy()
    flipped[0] ^= 1
    other.store(key_id, flipped, "a", 1, 0.0)
    assert other.digest(state=None) != a.digest()
    other.confirm(key_id)
    assert other.digest() != a.digest()
