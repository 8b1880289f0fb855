"""The recorded pulse pattern (mission `source.pattern: recorded`): every pulse's byte drawn
from the entropy source at plan load and kept on disk for the pass only.

A short simulated pass runs to its end on the recorded pattern with both ends agreeing on
every sifted count; the payload draws exactly one byte per pulse and no pattern key, and the
record is gone afterwards. At the daemon: the record is what the entropy source gave, in a
0700 directory and a 0600 file; a plan whose record would not fit on the disk, or whose draw
fails, is refused with its reason and leaves no file; a crashed run's records are deleted at
start; a mission whose probabilities are not whole sixteenths (intensity) and eighths (basis)
is refused when its daemon is set up, and its profile when it is loaded.
"""

from __future__ import annotations

import asyncio
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.interfaces import EntropyFailure
from firmware_shims.source_sequencer import SourceSequencer, record_thresholds, record_to_pattern
from satqkd.config import ConfigError, MissionConfig, load_model, load_scenario, validate_model
from satqkd.simulation import run_pass
from satqkd.wiring import payload_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope
from satqkd_core.errors import InputError
from satqkd_payload import key_lifecycle
from satqkd_payload import session as payload_session
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key
from sim_backends.entropy import SeededEntropySource, seeded_draw
from sim_backends.instruments import SimPulsedSource
from tests.ogs.test_ldpc_session import LoopbackBus, PayloadBus
from tests.seeded_entropy import seeded_entropy
from tests.tc_signing import OccSigner, install_tc_key

ROOT = Path(__file__).resolve().parents[2]
CLEAR = ROOT / "configs/scenarios/jinan1-xinglong-clear.yaml"
MISSION = ROOT / "configs/missions/jinan1.yaml"
START_AFTER_AOS_S = 190.0  # near culmination, as test_key_length_end_to_end.py
QKD_S = 2.0  # 2e8 pulses at 1e8 Hz: a 200 MB record
T0 = 1_796_083_200.0
TLE = (
    "1 99999U 26001A   26335.00000000  .00000000  00000-0  00000-0 0  9990",
    "2 99999  97.4000  30.0000 0001000   0.0000   0.0000 15.20000000    09",
)


def _recorded(mission: MissionConfig, **source: Any) -> MissionConfig:
    """The mission with `source.pattern: recorded` (and any other source fields given)."""
    return mission.model_copy(
        update={"source": mission.source.model_copy(update={"pattern": "recorded", **source})}
    )


# ---- a short simulated pass -----------------------------------------------------------------


def test_a_short_pass_runs_to_its_end_on_the_recorded_pattern(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 s of QKD is too short for a finite-size key, so the pass ends with the bound's abort;
    up to there both ends agree on every detection and sifted count (the payload sifts on the
    recorded bytes, the channel emitted them), and the record is gone once the pass is over."""
    scenario = load_scenario(CLEAR)
    simulation = scenario.scenario.simulation.model_copy(
        update={"qkd_start_after_aos_s": START_AFTER_AOS_S}
    )
    scenario = scenario.model_copy(
        update={
            "scenario": scenario.scenario.model_copy(update={"simulation": simulation}),
            "mission": _recorded(scenario.mission),
        }
    )
    payload_sifted: list[tuple[int, int]] = []  # (detections, kept) of every payload chunk
    original_mask = payload_session.sift_mask

    def counting_mask(basis: np.ndarray, ogs_basis: np.ndarray) -> np.ndarray:
        keep = original_mask(basis, ogs_basis)
        payload_sifted.append((int(keep.size), int(keep.sum())))
        return keep

    loaded: list[tuple[Path, int, int, int]] = []  # (path, size, file mode, directory mode)
    original_load = SourceSequencer.load_recorded_pass

    def spying_load(self: SourceSequencer, plan_id: int, path: Path) -> None:
        info = path.stat()
        mode = stat.S_IMODE(path.parent.stat().st_mode)
        loaded.append((path, info.st_size, stat.S_IMODE(info.st_mode), mode))
        original_load(self, plan_id, path)

    monkeypatch.setattr(payload_session, "sift_mask", counting_mask)
    monkeypatch.setattr(SourceSequencer, "load_recorded_pass", spying_load)

    run = asyncio.run(run_pass(scenario, tmp_path, None, None, max_duration_s=QKD_S))

    pulses = round(QKD_S * scenario.mission.source.repetition_rate_hz)
    assert run.pulses_sent == pulses == run.report["quantum"]["pulses_sent"]
    drawn = run.payload.entropy.drawn_bytes
    assert drawn["pattern-record"] == pulses and "pattern-key" not in drawn
    [(path, size, file_mode, dir_mode)] = loaded
    assert size == pulses and file_mode == 0o600 and dir_mode == 0o700
    assert path.parent == tmp_path / "keys" / "payload" / "patterns"
    assert not path.exists() and list(path.parent.iterdir()) == []
    # both ends sifted the same detections and kept the same ones
    result = run.ogs.results[run.plan_id]
    quantum = run.report["quantum"]
    assert sum(n for n, _ in payload_sifted) == result.detections == quantum["detections"] > 0
    station_sifted = sum(result.x_detections) + sum(result.z_detections)
    assert sum(kept for _, kept in payload_sifted) == station_sifted == quantum["sifted_bits"]
    assert quantum["qber"] < 0.03  # the emitted pattern is the one the payload sifts with
    # the pass ran to the finite-key bound at both ends (a count mismatch aborts before)
    key = run.report["key"]
    assert key["abort_reason"].startswith("finite-key bound leaves no key"), key
    assert run.payload.outcome(scenario.station.name, run.plan_id) is not None


# ---- the payload daemon -----------------------------------------------------------------------


async def _payload(
    tmp_path: Path, mission: MissionConfig | None = None
) -> tuple[PayloadDaemon, SourceSequencer, OccSigner, SeededEntropySource, LoopbackBus]:
    """A payload daemon in recorded mode on a loopback bus, with a station and a TC key."""
    mission = mission or _recorded(load_model(MissionConfig, MISSION))
    keys = tmp_path / "keys"
    install_preshared_key(KeyStore(keys / "xinglong"), preshared_auth_key(1, 5000))
    verifier = install_tc_key(keys, tmp_path / "occ", "payload")
    clock = SimClock(T0)
    source = mission.source
    sequencer = SourceSequencer(None, source.probabilities, source.basis_x_probability)
    laser = SimPulsedSource("laser", sequencer.pattern, clock)
    await laser.connect()
    entropy = await seeded_entropy(5)
    bus = LoopbackBus()
    daemon = PayloadDaemon(
        payload_settings(mission),
        PayloadBus(bus),  # type: ignore[arg-type]
        clock,
        laser,
        keys,
        entropy,
        sequencer,
        tc_verifier=verifier,
    )
    return daemon, sequencer, OccSigner(tmp_path / "occ"), entropy, bus


def _plan(plan_id: int, qkd_s: float, rate_hz: float) -> dict[str, Any]:
    start = T0 + 1000 * plan_id + 100
    return {
        "plan_id": plan_id, "mission": "jinan1", "station": "xinglong",
        "tle_line1": TLE[0], "tle_line2": TLE[1],
        "aos_unix_s": T0 + 1000 * plan_id, "los_unix_s": T0 + 1000 * plan_id + 600,
        "qkd_start_unix_s": start, "qkd_stop_unix_s": start + qkd_s,
        "repetition_rate_hz": rate_hz,
    }  # fmt: skip


async def _send_plan(daemon: PayloadDaemon, occ: OccSigner, plan: dict[str, Any]) -> None:
    await daemon._dispatch(
        daemon.runtime.telecommand_topic, occ.sign("payload", "LOAD_PASS_PLAN", **plan)
    )


def _last_ack(bus: LoopbackBus) -> dict[str, Any]:
    acks = [decode_envelope(p) for t, p in bus.published if t.endswith("/tm/tc_ack")]
    return acks[-1].fields


def _events(bus: LoopbackBus) -> list[str]:
    topic = dct.event_topic("jinan1", dct.PAYLOAD_NODE)
    fields = [decode_envelope(p).fields for t, p in bus.published if t == topic]
    return [dct.event_by_id(f["event_id"]).name for f in fields]


def _cancel(daemon: PayloadDaemon) -> None:
    for task in list(daemon._tasks):
        task.cancel()


def _pulses(plan: dict[str, Any]) -> int:
    return round((plan["qkd_stop_unix_s"] - plan["qkd_start_unix_s"]) * plan["repetition_rate_hz"])


async def test_a_recorded_plan_holds_the_drawn_bytes_until_the_pass_is_released(
    tmp_path: Path,
) -> None:
    daemon, sequencer, occ, entropy, bus = await _payload(tmp_path)
    plan = _plan(1, 0.4, daemon.settings.repetition_rate_hz)  # 4e7 pulses: three draws
    await _send_plan(daemon, occ, plan)
    assert _last_ack(bus)["accepted"], _last_ack(bus)
    pulses = _pulses(plan)
    path = key_lifecycle.pattern_record_path(daemon.key_root, "xinglong", 1)
    assert path == tmp_path / "keys" / "patterns" / "xinglong-1.pattern"
    assert path.stat().st_size == pulses
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert entropy.drawn_bytes == {"pattern-record": pulses}
    # the bytes on disk are the entropy source's draws as they came, in order
    purpose, chunk = "pattern-record/xinglong/1", key_lifecycle.RECORD_CHUNK_BYTES
    assert entropy.draws_of(purpose) == -(-pulses // chunk) == 3
    with path.open("rb") as handle:
        assert handle.read(chunk) == seeded_draw(5, purpose, 0, chunk)
        handle.seek(2 * chunk)
        assert handle.read() == seeded_draw(5, purpose, 2, pulses - 2 * chunk)
    # the session sifts on the record
    index = np.array([pulses - 1, 0, 12_345_678], dtype=np.int64)
    record = np.fromfile(path, dtype=np.uint8)[index]
    expected = record_to_pattern(record, record_thresholds((0.5, 0.25, 0.25), 0.5))
    pattern = daemon.session("xinglong", 1).pattern(index)  # type: ignore[union-attr]
    np.testing.assert_array_equal(pattern.basis, expected.basis)
    np.testing.assert_array_equal(pattern.bit, expected.bit)
    np.testing.assert_array_equal(pattern.intensity, expected.intensity)
    with pytest.raises(InputError, match=f"pulse index {pulses} is beyond"):
        sequencer.pattern_of(1, np.array([pulses]))
    await daemon._abort_sessions(1, "operator abort")
    assert not path.exists() and not sequencer.has_pass(1)
    _cancel(daemon)


async def test_a_plan_whose_record_would_not_fit_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, sequencer, occ, entropy, bus = await _payload(tmp_path)

    def small_disk(path: Any) -> Any:
        return shutil._ntuple_diskusage(10**11, 10**11 - 10**9, 10**9)  # type: ignore[attr-defined]

    monkeypatch.setattr(shutil, "disk_usage", small_disk)
    plan = _plan(2, 300.0, daemon.settings.repetition_rate_hz)  # 3e10 pulses: 30 GB
    await _send_plan(daemon, occ, plan)
    ack = _last_ack(bus)
    assert not ack["accepted"]
    assert ack["reason"].startswith("pattern record: needs 30000000000 bytes"), ack["reason"]
    assert "only 1000000000 free" in ack["reason"]
    assert daemon.session("xinglong", 2) is None and not sequencer.has_pass(2)
    assert entropy.drawn_bytes == {} and list((tmp_path / "keys" / "patterns").iterdir()) == []
    _cancel(daemon)


async def test_a_failed_draw_refuses_the_plan_and_deletes_the_half_written_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, sequencer, occ, entropy, bus = await _payload(tmp_path)
    original_read = entropy.read

    async def failing_read(n_bytes: int, purpose: str) -> bytes:
        if entropy.draws_of(purpose) == 1:
            raise EntropyFailure("qrng: adaptive proportion test failed")
        return await original_read(n_bytes, purpose)

    monkeypatch.setattr(entropy, "read", failing_read)
    await _send_plan(daemon, occ, _plan(3, 0.4, daemon.settings.repetition_rate_hz))
    ack = _last_ack(bus)
    assert not ack["accepted"] and ack["reason"].startswith("entropy source: qrng"), ack
    assert daemon.runtime.counters.events.get("ENTROPY_SOURCE_FAILURE") == 1
    assert not sequencer.has_pass(3) and daemon.session("xinglong", 3) is None
    assert list((tmp_path / "keys" / "patterns").iterdir()) == []

    def full_disk(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(entropy, "read", original_read)
    monkeypatch.setattr(key_lifecycle, "_write_all", full_disk)
    await _send_plan(daemon, occ, _plan(4, 0.01, daemon.settings.repetition_rate_hz))
    reason = _last_ack(bus)["reason"]
    assert reason.startswith("pattern record: cannot write") and "No space left" in reason
    assert list((tmp_path / "keys" / "patterns").iterdir()) == []
    assert not sequencer.has_pass(4)
    _cancel(daemon)


async def test_records_are_deleted_at_shutdown_and_leftovers_at_start(tmp_path: Path) -> None:
    leftover = tmp_path / "keys" / "patterns" / "xinglong-9.pattern"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\x5a" * 1000)  # a crashed run's pass
    daemon, sequencer, occ, _, bus = await _payload(tmp_path)
    assert not leftover.exists()
    assert "patterns" not in daemon.links  # the record directory is no station
    await _send_plan(daemon, occ, _plan(5, 0.01, daemon.settings.repetition_rate_hz))
    path = key_lifecycle.pattern_record_path(daemon.key_root, "xinglong", 5)
    assert path.exists()
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10.0):
        while "NODE_STARTED" not in _events(bus):
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not path.exists() and not sequencer.has_pass(5)


async def test_off_grid_probabilities_are_refused_when_the_daemon_is_set_up(
    tmp_path: Path,
) -> None:
    mission = _recorded(load_model(MissionConfig, MISSION), probabilities=(0.6, 0.2, 0.2))
    with pytest.raises(InputError, match=r"multiples of 1/16.*\[0\.6, 0\.2, 0\.2\]"):
        await _payload(tmp_path, mission)
    # an expanded-mode daemon takes any probabilities
    expanded = mission.model_copy(
        update={"source": mission.source.model_copy(update={"pattern": "expanded"})}
    )
    daemon, *_ = await _payload(tmp_path / "expanded", expanded)
    assert daemon.settings.pattern_mode == "expanded"


def test_the_mission_option_is_validated_and_carried_to_the_payload() -> None:
    data = load_model(MissionConfig, MISSION).model_dump(mode="json")
    assert payload_settings(MissionConfig.model_validate(data)).pattern_mode == "expanded"
    data["source"]["pattern"] = "recorded"
    assert payload_settings(validate_model(MissionConfig, data, "m.yaml")).pattern_mode == (
        "recorded"
    )
    data["source"]["pattern"] = "random"
    with pytest.raises(ConfigError, match=r"^m\.yaml: source\.pattern: .*'recorded'") as bad:
        validate_model(MissionConfig, data, "m.yaml")
    assert "\n" not in str(bad.value)
    data["source"].update(pattern="recorded", probabilities=[0.7, 0.2, 0.1])
    with pytest.raises(ConfigError, match=r"^m\.yaml: source: the recorded pattern") as bad:
        validate_model(MissionConfig, data, "m.yaml")
    assert "[0.7, 0.2, 0.1]" in str(bad.value) and "\n" not in str(bad.value)
