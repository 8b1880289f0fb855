"""A plan id is never used twice: the record of accepted ids survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from satqkd_runtime.keystore import KeyStore, KeyStoreError
from satqkd_runtime.plan_registry import KEEP, SECRET, PlanRegistry


def test_new_id_accepted_then_refused(tmp_path: Path) -> None:
    registry = PlanRegistry(KeyStore(tmp_path / "ks"))
    assert registry.refusal(5) is None and registry.ids() == []
    registry.record(5)
    assert registry.seen(5) and not registry.seen(6)
    assert registry.refusal(5) == "plan 5 was already loaded (before a restart?)"
    with pytest.raises(KeyStoreError, match="already loaded"):
        registry.record(5)


def test_record_survives_a_new_keystore_object(tmp_path: Path) -> None:
    """A restart: a new KeyStore on the same directory still refuses a seen id."""
    PlanRegistry(KeyStore(tmp_path / "ks")).record(11)
    PlanRegistry(KeyStore(tmp_path / "ks")).record(12)
    restarted = PlanRegistry(KeyStore(tmp_path / "ks"))
    assert restarted.ids() == [11, 12]
    assert restarted.refusal(11) is not None and restarted.refusal(13) is None
    secret = tmp_path / "ks" / f"{SECRET}.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    # keystore recovery at start leaves the record alone
    KeyStore(tmp_path / "ks").recover()
    assert PlanRegistry(KeyStore(tmp_path / "ks")).ids() == [11, 12]


def test_bounded_keeps_the_last_ids(tmp_path: Path) -> None:
    registry = PlanRegistry(KeyStore(tmp_path / "ks"), keep=3)
    for plan_id in range(10):
        registry.record(plan_id)
    assert registry.ids() == [7, 8, 9]
    assert not registry.seen(0) and registry.seen(9)


def test_default_bound(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "ks")
    ids = list(range(KEEP))
    store.store_secret(SECRET, json.dumps({"version": 1, "plan_ids": ids}).encode())
    registry = PlanRegistry(store)
    registry.record(KEEP)
    assert len(registry.ids()) == KEEP and registry.ids()[0] == 1 and registry.seen(KEEP)


def test_stations_are_separate(tmp_path: Path) -> None:
    PlanRegistry(KeyStore(tmp_path / "ogs-a")).record(1)
    assert PlanRegistry(KeyStore(tmp_path / "ogs-b")).refusal(1) is None


@pytest.mark.parametrize(
    "raw", [b"not json", b'{"version": 2, "plan_ids": []}', b'{"plan_ids": ["1"]}', b"\xff"]
)
def test_corrupt_record_refuses_every_plan(tmp_path: Path, raw: bytes) -> None:
    store = KeyStore(tmp_path / "ks")
    store.store_secret(SECRET, raw)
    registry = PlanRegistry(store)
    assert "unreadable" in (registry.refusal(1) or "")
    with pytest.raises(KeyStoreError, match="corrupt"):
        registry.record(1)


def test_open_plans_are_closed_or_abandoned_with_their_keys(tmp_path: Path) -> None:
    """A plan is open from its record until closed; one left open (a crash) is abandoned at
    the next start: every key it stored destroyed, pending or confirmed, others kept."""
    import numpy as np

    store = KeyStore(tmp_path / "ks")
    registry = PlanRegistry(store)
    registry.record(1)
    registry.record(2)
    assert registry.open_ids() == [1, 2]
    registry.close(1)
    registry.close(1)  # closing twice is harmless
    assert registry.open_ids() == [2] and registry.ids() == [1, 2]
    kept, pending, confirmed = (f"{n:08x}-0000-4000-8000-000000000000" for n in (1, 2, 3))
    store.store(kept, np.ones(128, np.uint8), "payload", 1, 0.0)
    store.confirm(kept)
    store.store(pending, np.ones(128, np.uint8), "payload", 2, 0.0)
    store.store(confirmed, np.ones(64, np.uint8), "payload", 2, 0.0)
    store.confirm(confirmed)
    restarted = PlanRegistry(KeyStore(tmp_path / "ks"))
    assert restarted.abandon_open() == [(2, [pending, confirmed])]
    assert store.key_ids(state=None) == [kept]
    assert restarted.open_ids() == [] and restarted.refusal(2) is not None


def test_corrupt_record_is_quarantined_and_a_new_one_begins(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "ks")
    store.store_secret(SECRET, b"{not json")
    registry = PlanRegistry(store)
    assert registry.recover() is not None  # one line for the daemon's event
    assert (tmp_path / "ks" / "quarantine" / f"{SECRET}.secret").read_bytes() == b"{not json"
    assert registry.refusal(1) is None and registry.ids() == []
    registry.record(1)
    assert registry.recover() is None and registry.open_ids() == [1]
