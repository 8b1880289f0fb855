"""`satqkd keys bootstrap`: one pre-shared authentication key at both ends, owner-only; an
installed key is never replaced by accident (its one-time-pad words may already be spent)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from satqkd.cli import main
from satqkd_runtime.keystore import KeyStore


def _bootstrap(tmp: Path, *extra: str) -> int:
    return main(
        [
            "keys", "bootstrap", "--payload-keys", str(tmp / "payload"),
            "--ogs-keys", str(tmp / "ogs"), "--station", "xinglong", "--messages", "2048", *extra,
        ]
    )  # fmt: skip


def test_both_ends_get_the_same_owner_only_key(tmp_path: Path) -> None:
    assert _bootstrap(tmp_path) == 0
    payload, ogs = KeyStore(tmp_path / "payload" / "xinglong"), KeyStore(tmp_path / "ogs")
    assert payload.load_secret("preshared-auth") == ogs.load_secret("preshared-auth")
    for store in (payload, ogs):
        mode = stat.S_IMODE((store.directory / "preshared-auth.secret").stat().st_mode)
        assert mode == 0o600


def test_an_installed_key_is_replaced_only_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _bootstrap(tmp_path) == 0
    payload, ogs = KeyStore(tmp_path / "payload" / "xinglong"), KeyStore(tmp_path / "ogs")
    first = ogs.load_secret("preshared-auth")
    for store in (payload, ogs):  # both ends have used words of the pool
        store.store_secret("auth-sequence", b'{"next_send_seq": 512, "highest_received_seq": 9}')
    capsys.readouterr()

    assert _bootstrap(tmp_path) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already hold(s) a pre-shared authentication key" in error
    assert str(tmp_path / "ogs") in error and "--force" in error
    assert ogs.load_secret("preshared-auth") == first == payload.load_secret("preshared-auth")
    assert ogs.has_secret("auth-sequence") and payload.has_secret("auth-sequence")

    assert _bootstrap(tmp_path, "--force") == 0
    second = ogs.load_secret("preshared-auth")
    assert second != first and payload.load_secret("preshared-auth") == second
    # the new pool starts at its first word at both ends
    for store in (payload, ogs):
        state = json.loads(store.load_secret("auth-sequence"))
        assert state["next_send_seq"] == 0 and state["highest_received_seq"] == -1
        assert state["auth_failures"] == 0 and not store.has_secret("auth-pool-extensions")


def test_one_end_already_holding_a_key_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    KeyStore(tmp_path / "ogs").store_secret("preshared-auth", b"\x01" * 64)
    assert _bootstrap(tmp_path) == 2
    assert str(tmp_path / "ogs") in capsys.readouterr().err
    assert not KeyStore(tmp_path / "payload" / "xinglong").has_secret("preshared-auth")
