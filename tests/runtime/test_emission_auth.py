"""The emission key of the payload and its controller: installed owner-only at both ends by
`satqkd keys emission`, counters kept durably, and every way it can be unusable is one line."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from firmware_shims.laser_interlock import InterlockSettings, LaserInterlock
from satqkd.cli import main
from satqkd_core.payload_icd import FunctionId
from satqkd_runtime.emission_auth import (
    EMISSION_KEY_SECRET,
    EmissionKeyError,
    EmissionSigner,
    EmissionWatermark,
    emission_request_tag,
    load_emission_key,
)


def _install(tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "keys", "emission", "--node-keys", str(tmp_path / "node"),
            "--controller-keys", str(tmp_path / "controller"), *extra,
        ]
    )  # fmt: skip


def test_the_command_installs_one_key_owner_only_at_both_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _install(tmp_path) == 0
    assert "emission key installed" in capsys.readouterr().out
    keys = [load_emission_key(tmp_path / d) for d in ("node", "controller")]
    assert keys[0] == keys[1] and len(keys[0]) == 32
    for directory in ("node", "controller"):
        path = tmp_path / directory / f"{EMISSION_KEY_SECRET}.secret"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # replacing it needs --force, which resets both counters
    EmissionSigner(tmp_path / "node").sign(1.0)
    assert _install(tmp_path) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "already hold(s) an emission key" in error and "--force" in error
    assert _install(tmp_path, "--force") == 0
    assert load_emission_key(tmp_path / "node") != keys[0]
    assert EmissionSigner(tmp_path / "node").counter == 0


def test_a_missing_or_damaged_key_or_counter_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(EmissionKeyError, match=r"no emission key for the payload node.*"
                       r"satqkd keys emission --node-keys") as missing:  # fmt: skip
        EmissionSigner(tmp_path)
    assert "\n" not in str(missing.value)
    assert _install(tmp_path) == 0
    (tmp_path / "controller" / f"{EMISSION_KEY_SECRET}.secret").write_text('{"format": 1}')
    with pytest.raises(EmissionKeyError, match=r"emission key file is damaged.*--force"):
        EmissionWatermark(tmp_path / "controller")
    (tmp_path / "node" / "emission-send-counter.secret").write_text("not json")
    with pytest.raises(EmissionKeyError, match=r"emission counter .* is damaged"):
        EmissionSigner(tmp_path / "node")


def test_a_counter_that_cannot_be_stored_is_not_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _install(tmp_path) == 0
    watermark = EmissionWatermark(tmp_path / "controller")
    interlock = LaserInterlock(InterlockSettings(), watermark=watermark)
    key = load_emission_key(tmp_path / "node")
    request = (100.0, 1, emission_request_tag(key, 100.0, 1))

    def full_disk(counter: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(watermark, "advance", full_disk)
    # a restart could otherwise accept the same request again: refused, and the laser latched off
    assert not interlock.check_request(FunctionId.SOURCE_ENABLE_SIGNED, request)
    assert interlock.unauthenticated_latched
    monkeypatch.undo()
    assert interlock.check_request(FunctionId.SOURCE_ENABLE_SIGNED, request)
    assert EmissionWatermark(tmp_path / "controller").highest == 1
