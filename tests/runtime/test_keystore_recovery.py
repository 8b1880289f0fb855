"""The key store stays consistent across crashes and keeps serving past a corrupt entry.

A crash is simulated by writing the files it would leave behind at each point of `store`,
`confirm` and `discard`; `recover` must then leave a store whose every entry is a whole key
with its metadata (or nothing), and must never put key bits in what it reports.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from satqkd_runtime import keystore as keystore_module
from satqkd_runtime.keystore import KeyStore, KeyStoreError, RecoveryReport

BITS = 1001


def _id(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


def _key(seed: int, bits: int = BITS) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, bits, dtype=np.uint8)


def _packed(key: np.ndarray) -> bytes:
    return np.packbits(key, bitorder="big").tobytes()


def _meta(key_id: str, state: str, bits: int = BITS) -> bytes:
    return json.dumps(
        {
            "key_id": key_id,
            "key_bits": bits,
            "peer": "payload",
            "plan_id": 7,
            "created_unix_s": 50.0,
            "state": state,
        },
        indent=1,
    ).encode()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def _assert_consistent(store: KeyStore) -> None:
    """Every file of the store is a whole key with its metadata, or a secret; nothing left over."""
    names = {p.name for p in store.directory.iterdir() if p.name != "quarantine"}
    for name in names:
        assert not name.endswith(".tmp"), name
        stem, suffix = name.rsplit(".", 1)
        assert suffix in ("key", "json", "secret"), name
        if suffix in ("key", "json"):
            assert {f"{stem}.key", f"{stem}.json"} <= names, name
    for key_id in store.key_ids(state=None):
        meta = store.metadata(key_id)
        assert store.load(key_id).size == meta.key_bits
    assert store.skipped() == {}
    assert store.recover() == RecoveryReport(), "a second recovery found something to do"


# each crash point: (what the crash leaves on disk, expected state of the key after recovery
# (None: gone), the report's field naming it)
CrashLeaves = Callable[[Path, str, bytes], None]


def _store_key_tmp_partial(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.key.tmp", packed[: len(packed) // 2])


def _store_key_tmp_whole(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.key.tmp", packed)


def _store_key_without_json(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.key", packed)


def _store_key_and_json_tmp(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.key", packed)
    _write(d / f"{k}.json.tmp", _meta(k, "pending"))


def _store_json_tmp_partial(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.key", packed)
    _write(d / f"{k}.json.tmp", _meta(k, "pending")[:20])


def _store_done(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.key", packed)
    _write(d / f"{k}.json", _meta(k, "pending"))


def _confirm_json_tmp(d: Path, k: str, packed: bytes) -> None:
    _store_done(d, k, packed)
    _write(d / f"{k}.json.tmp", _meta(k, "confirmed"))


def _confirm_json_tmp_partial(d: Path, k: str, packed: bytes) -> None:
    _store_done(d, k, packed)
    _write(d / f"{k}.json.tmp", _meta(k, "confirmed")[:30])


def _confirm_done(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.key", packed)
    _write(d / f"{k}.json", _meta(k, "confirmed"))


def _discard_key_unlinked(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.json", _meta(k, "confirmed"))


def _discard_zeroed_not_unlinked(d: Path, k: str, packed: bytes) -> None:
    _write(d / f"{k}.key", bytes(len(packed)))
    _write(d / f"{k}.json", _meta(k, "confirmed"))


CRASHES: list[tuple[str, CrashLeaves, str | None, str | None]] = [
    ("store: part of .key.tmp", _store_key_tmp_partial, None, "removed_tmp"),
    ("store: whole .key.tmp, not renamed", _store_key_tmp_whole, None, "removed_tmp"),
    ("store: .key, no metadata", _store_key_without_json, None, "destroyed_orphan_keys"),
    ("store: .key and .json.tmp", _store_key_and_json_tmp, None, "destroyed_orphan_keys"),
    ("store: .key and part of .json.tmp", _store_json_tmp_partial, None, "removed_tmp"),
    ("store: done, not confirmed", _store_done, "pending", None),
    ("confirm: .json.tmp not renamed", _confirm_json_tmp, "pending", "removed_tmp"),
    ("confirm: part of .json.tmp", _confirm_json_tmp_partial, "pending", "removed_tmp"),
    ("confirm: done", _confirm_done, "confirmed", None),
    ("discard: .key unlinked, .json not", _discard_key_unlinked, None, "removed_orphan_metadata"),
    ("discard: zeroed, not unlinked", _discard_zeroed_not_unlinked, None, "quarantined"),
]


@pytest.mark.parametrize(
    ("leaves", "state_after", "reported_in"),
    [c[1:] for c in CRASHES],
    ids=[c[0] for c in CRASHES],
)
def test_recover_after_each_crash_point_leaves_a_consistent_store(
    tmp_path: Path, leaves: CrashLeaves, state_after: str | None, reported_in: str | None
) -> None:
    store = KeyStore(tmp_path / "ogs")
    good_id = _id(1)
    good = _key(1)
    store.store(good_id, good, "payload", 6, 10.0)
    store.confirm(good_id)
    crashed = _id(2)
    key = _key(2)
    leaves(store.directory, crashed, _packed(key))

    # before recovery the readers already serve the good key and do not raise
    assert good_id in store.key_ids()
    # (a discard cut short after zeroing looks whole to the readers; only `recover`, which
    # reads the key files, tells it from a key)
    confirmed_before = state_after == "confirmed" or leaves is _discard_zeroed_not_unlinked
    assert store.total_bits() == BITS + (BITS if confirmed_before else 0)

    report = store.recover()
    _assert_consistent(store)
    assert np.array_equal(store.load(good_id), good)
    if state_after is None:
        assert crashed not in store.key_ids(state=None)
        with pytest.raises(KeyStoreError):
            store.load(crashed)
    else:
        assert store.metadata(crashed).state == state_after
        assert np.array_equal(store.load(crashed), key)
    if reported_in is None:
        assert report == RecoveryReport()
    else:
        assert report.changed
        named = getattr(report, reported_in)
        assert any(crashed in (n if isinstance(n, str) else n[0]) for n in named), report
    _assert_no_key_material(report, [good, key])
    # the daemon then discards what is still pending: only confirmed keys survive
    store.discard_pending()
    expected = [good_id] + ([crashed] if state_after == "confirmed" else [])
    assert sorted(store.key_ids(state=None)) == sorted(expected)


def _assert_no_key_material(report: RecoveryReport, keys: list[np.ndarray]) -> None:
    text = repr(report) + "\n".join(report.messages()) + json.dumps(report.counts())
    for key in keys:
        packed = _packed(key)
        assert packed.hex() not in text
        assert packed[:8].hex() not in text
        assert "".join(map(str, key[:64])) not in text
        assert str(list(key[:16])) not in text


CORRUPTIONS: list[tuple[str, Callable[[str], bytes], int]] = [
    ("not JSON", lambda k: b"{not json", BITS),
    ("empty", lambda k: b"", BITS),
    ("binary garbage", lambda k: bytes(range(200, 256)), BITS),
    ("JSON list", lambda k: b"[1, 2]", BITS),
    ("missing field", lambda k: json.dumps({"key_id": k, "key_bits": BITS}).encode(), BITS),
    (
        "extra field",
        lambda k: json.dumps({**json.loads(_meta(k, "confirmed")), "x": 1}).encode(),
        BITS,
    ),
    (
        "key_bits not int",
        lambda k: json.dumps({**json.loads(_meta(k, "confirmed")), "key_bits": "1001"}).encode(),
        BITS,
    ),
    ("unknown state", lambda k: _meta(k, "half-confirmed"), BITS),
    ("another key id", lambda k: _meta(_id(99), "confirmed"), BITS),
    ("key file size differs from key_bits", lambda k: _meta(k, "confirmed", bits=5000), BITS),
]


@pytest.mark.parametrize(
    ("make_meta", "bits"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_corrupt_metadata_is_skipped_then_quarantined_and_other_keys_still_served(
    tmp_path: Path, make_meta: Callable[[str], bytes], bits: int
) -> None:
    store = KeyStore(tmp_path / "payload")
    keys = {_id(n): _key(n) for n in (1, 2, 3)}
    for n, (key_id, key) in enumerate(keys.items()):
        store.store(key_id, key, "ogs", n, float(n))
        store.confirm(key_id)
    bad = _id(2)
    bad_key_bytes = (store.directory / f"{bad}.key").read_bytes()
    bad_meta = make_meta(bad)
    _write(store.directory / f"{bad}.json", bad_meta)
    good = [_id(1), _id(3)]

    # readers skip the corrupt entry instead of raising: housekeeping keeps running
    assert store.key_ids() == good
    assert store.key_ids(state=None) == good
    assert store.total_bits() == 2 * BITS
    assert store.discard_pending() == []
    assert bad in store.skipped()
    with pytest.raises(KeyStoreError):
        store.load(bad)
    reference = KeyStore(tmp_path / "reference")
    for key_id in good:
        reference.store(key_id, keys[key_id], "ogs", 0, 0.0)
        reference.confirm(key_id)
    assert store.digest() == reference.digest()

    report = store.recover()
    assert [k for k, _ in report.quarantined] == [bad]
    assert report.counts()["quarantined"] == 1
    _assert_no_key_material(report, list(keys.values()))
    quarantine = store.directory / "quarantine"
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o700
    # moved, never deleted, byte for byte
    assert (quarantine / f"{bad}.key").read_bytes() == bad_key_bytes
    assert (quarantine / f"{bad}.json").read_bytes() == bad_meta
    assert not (store.directory / f"{bad}.key").exists()
    _assert_consistent(store)
    assert store.key_ids() == good
    for key_id in good:
        assert np.array_equal(store.load(key_id), keys[key_id])
    assert store.digest() == reference.digest()


def test_quarantine_keeps_both_copies_of_a_twice_corrupted_id(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key_id = _id(4)
    for attempt in (b"{first", b"{second"):
        _write(tmp_path / f"{key_id}.key", _packed(_key(4)))
        _write(tmp_path / f"{key_id}.json", attempt)
        assert [k for k, _ in store.recover().quarantined] == [key_id]
    kept = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert kept == [f"{key_id}.json", f"{key_id}.json.1", f"{key_id}.key", f"{key_id}.key.1"]


def test_total_bits_and_digest_count_confirmed_keys_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    empty = store.digest()
    confirmed, pending = _id(1), _id(2)
    store.store(confirmed, _key(1), "p", 1, 1.0)
    store.store(pending, _key(2, 500), "p", 2, 2.0)
    assert store.total_bits() == 0 and store.digest() == empty
    store.confirm(confirmed)
    assert store.total_bits() == BITS
    assert store.total_bits(state="pending") == 500
    assert store.total_bits(state=None) == BITS + 500
    assert store.key_ids(state="confirmed") == [confirmed]
    assert store.key_ids(state="pending") == [pending]
    assert store.key_ids() == [confirmed, pending]
    # the other end holds the confirmed key only: the two digests agree
    other = KeyStore(tmp_path / "other")
    other.store(confirmed, _key(1), "o", 1, 9.0)
    other.confirm(confirmed)
    assert store.digest() == other.digest()
    assert store.digest(state=None) != other.digest(state=None)
    with pytest.raises(KeyStoreError, match="state"):
        store.total_bits(state="lost")


def test_recover_zeroes_key_bits_before_removing_and_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path)
    orphan, tmp_only = _id(5), _id(6)
    _write(tmp_path / f"{orphan}.key", _packed(_key(5)))
    _write(tmp_path / f"{tmp_only}.key.tmp", _packed(_key(6)))
    _write(tmp_path / "preshared-auth.secret.tmp", b"secret bytes")
    seen: dict[str, bytes] = {}
    real_unlink = os.unlink
    fsynced: list[str] = []
    real_fsync_directory = keystore_module.fsync_directory

    def unlink(path: object, **kwargs: object) -> None:
        seen[Path(str(path)).name] = Path(str(path)).read_bytes()
        real_unlink(path, **kwargs)  # type: ignore[arg-type]

    def fsync_directory(directory: Path) -> None:
        fsynced.append(str(directory))
        real_fsync_directory(directory)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(keystore_module, "fsync_directory", fsync_directory)
    report = store.recover()
    assert seen[f"{orphan}.key"] == bytes(len(_packed(_key(5))))
    assert seen[f"{tmp_only}.key.tmp"] == bytes(len(_packed(_key(6))))
    assert seen["preshared-auth.secret.tmp"] == bytes(12)
    assert report.destroyed_orphan_keys == (orphan,)
    assert set(report.removed_tmp) == {f"{tmp_only}.key.tmp", "preshared-auth.secret.tmp"}
    assert fsynced and fsynced[-1] == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_recover_leaves_secrets_and_foreign_files_alone(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.store_secret("preshared-auth", b"\x01" * 32)
    _write(tmp_path / "notes.json", b"{}")
    key_id = _id(8)
    store.store(key_id, _key(8), "p", 1, 0.0)
    report = store.recover()
    assert not report.changed
    assert report.ignored == ("notes.json",)
    assert store.load_secret("preshared-auth") == b"\x01" * 32
    assert store.key_ids() == [key_id]
    assert (tmp_path / "notes.json").exists()


def test_report_messages_name_ids_and_reasons_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key = _key(9)
    _write(tmp_path / f"{_id(9)}.key", _packed(key))
    _write(tmp_path / f"{_id(10)}.key", _packed(_key(10)))
    _write(tmp_path / f"{_id(10)}.json", b"garbage")
    report = store.recover()
    assert report.counts() == {
        "removed_tmp": 0,
        "destroyed_orphan_keys": 1,
        "removed_orphan_metadata": 0,
        "quarantined": 1,
        "ignored": 0,
    }
    messages = report.messages()
    assert len(messages) == 2
    assert any(_id(9) in m and "destroyed" in m for m in messages)
    assert any(_id(10) in m and "not valid JSON" in m for m in messages)
    _assert_no_key_material(report, [key, _key(10)])
