"""The payload and the station agree on which plans are valid, and neither takes a plan id
twice, across a restart too (the daemons are built, not run: their plan checks are called)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import MissionConfig, StationConfig, load_model
from satqkd.wiring import ogs_settings, payload_settings, preshared_auth_key
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.plan_registry import PlanRegistry
from satqkd_runtime.qkd_channel import install_preshared_key
from sim_backends.instruments import SimPulsedSource
from tests.seeded_entropy import seeded_entropy

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
STATION_FILE = REPO / "configs" / "stations" / "xinglong.yaml"
T0 = 1_800_000_000.0
STATION = "xinglong"


def _plan(plan_id: int, rate_hz: float, **changes: float) -> dict:
    fields = {
        "plan_id": plan_id, "mission": "jinan1", "station": STATION,
        "tle_line1": "", "tle_line2": "", "aos_unix_s": T0 + 10.0, "los_unix_s": T0 + 400.0,
        "qkd_start_unix_s": T0 + 20.0, "qkd_stop_unix_s": T0 + 300.0,
        "repetition_rate_hz": rate_hz,
    }  # fmt: skip
    fields.update(changes)
    return fields


async def _payload(keys: Path, clock: SimClock) -> PayloadDaemon:
    mission = load_model(MissionConfig, MISSION)
    sequencer = SourceSequencer(99, tuple(mission.source.probabilities), 0.5)
    return PayloadDaemon(
        payload_settings(mission), MessageBus("mqtt://127.0.0.1:9", "unused"), clock,
        SimPulsedSource("laser", sequencer.pattern, clock), keys, await seeded_entropy(7),
        sequencer,
    )  # fmt: skip


async def _station(keys: Path, clock: SimClock) -> OgsDaemon:
    mission = load_model(MissionConfig, MISSION)
    settings = ogs_settings(mission, load_model(StationConfig, STATION_FILE), STATION_FILE)
    return OgsDaemon(
        settings, MessageBus("mqtt://127.0.0.1:9", "unused"), clock, None,  # type: ignore[arg-type]
        KeyStore(keys), await seeded_entropy(8),
    )  # fmt: skip


def _station_verdict(daemon: OgsDaemon, fields: dict) -> str | None:
    try:
        daemon._plan_from(fields)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    preshared = preshared_auth_key(3, 4096)
    install_preshared_key(KeyStore(tmp_path / "payload" / STATION), preshared)
    install_preshared_key(KeyStore(tmp_path / "ogs"), preshared)
    return tmp_path / "payload", tmp_path / "ogs"


@pytest.mark.parametrize(
    "changes",
    [
        {"qkd_start_unix_s": T0 + 20.5},  # not on a whole second (the probed finding)
        {"qkd_start_unix_s": T0 - 5.0, "aos_unix_s": T0 - 10.0},  # window already started
        {"qkd_stop_unix_s": math.nan},
        {"aos_unix_s": T0 + 30.0},
        {"qkd_stop_unix_s": T0 + 20.0 + 3601.0, "los_unix_s": T0 + 9000.0},
    ],
)
async def test_both_ends_refuse_the_same_plans(keys: tuple[Path, Path], changes: dict) -> None:
    clock = SimClock(T0)
    payload, station = await _payload(keys[0], clock), await _station(keys[1], clock)
    rate = payload.settings.repetition_rate_hz
    fields = _plan(3, rate, **changes)
    refused_by_payload = payload._check_plan(fields)
    assert refused_by_payload is not None
    assert refused_by_payload == _station_verdict(station, fields)


async def test_a_valid_plan_passes_both_ends(keys: tuple[Path, Path]) -> None:
    clock = SimClock(T0)
    payload, station = await _payload(keys[0], clock), await _station(keys[1], clock)
    fields = _plan(3, payload.settings.repetition_rate_hz)
    assert payload._check_plan(fields) is None and _station_verdict(station, fields) is None


async def test_a_restarted_node_refuses_a_plan_id_it_accepted(keys: tuple[Path, Path]) -> None:
    clock = SimClock(T0)
    payload = await _payload(keys[0], clock)
    fields = _plan(4, payload.settings.repetition_rate_hz)
    assert payload._check_plan(fields) is None
    PlanRegistry(payload.links[STATION].keystore).record(4)  # what acceptance does
    PlanRegistry(KeyStore(keys[1])).record(4)
    restarted_payload = await _payload(keys[0], clock)
    restarted_station = await _station(keys[1], clock)
    expected = "plan 4 was already loaded (before a restart?)"
    assert restarted_payload._check_plan(fields) == expected
    assert _station_verdict(restarted_station, fields) == expected
    assert restarted_payload._check_plan(_plan(5, payload.settings.repetition_rate_hz)) is None
