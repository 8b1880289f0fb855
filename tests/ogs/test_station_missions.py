"""One station, several missions (satqkd_ogs.missions): plans of different missions are held
or refused with every reason, the station's profile switches per pass, keys are kept per
mission and peer; and the station daemon applies all of it to LOAD_PASS_PLAN."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from satqkd.config import MissionConfig, MissionProfileConfig, StationConfig, load_model
from satqkd.mission_compat import plan_refusal, station_missions, station_profile
from satqkd.wiring import ogs_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_core.station_schedule import PlannedPass
from satqkd_ogs.daemon import OgsDaemon
from satqkd_ogs.missions import PlanRefused, StationMissions, mission_key_root
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key
from sim_backends.orbit import sun_synchronous_tle
from tests.seeded_entropy import seeded_entropy

REPO = Path(__file__).resolve().parents[2]
STATION_FILE = REPO / "configs" / "stations" / "graz-interoperable.yaml"
MISSIONS = {
    name: load_model(MissionProfileConfig, REPO / "configs" / "missions" / f"{name}.yaml")
    for name in ("jinan1", "eagle1", "micius2020-bbm92")
}
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def station() -> StationConfig:
    return load_model(StationConfig, STATION_FILE)


@pytest.fixture
def guard(station: StationConfig) -> StationMissions:
    return station_missions(station, MISSIONS.values())


def test_the_interoperable_station_serves_all_three_missions(station: StationConfig) -> None:
    guard = station_missions(station, MISSIONS.values())
    assert guard.incompatible == {}
    assert set(guard.profiles) == set(MISSIONS)


def test_each_mission_gets_its_own_optics_channels_and_protocol(station: StationConfig) -> None:
    jinan = station_profile(station, MISSIONS["jinan1"])
    eagle = station_profile(station, MISSIONS["eagle1"])
    bbm92 = station_profile(station, MISSIONS["micius2020-bbm92"])
    assert (jinan.filter_centre_nm, jinan.filter_width_nm) == (850.0, 1.0)
    assert jinan.detector_channels == (0, 1, 2, 3)  # the 780-860 nm bank
    assert (eagle.filter_centre_nm, eagle.encoding) == (1550.0, "time-bin")
    assert eagle.detector_channels == (4, 5, 6, 7)  # the C-band bank
    assert (bbm92.family, bbm92.time_sync) == ("bbm92", "cross-correlation")
    assert (bbm92.filter_centre_nm, bbm92.filter_width_nm) == (810.0, 3.0)
    assert jinan.time_sync == eagle.time_sync == "pulsed-clock"


def test_overlapping_and_too_close_plans_are_refused_with_both_plans_named(
    guard: StationMissions,
) -> None:
    guard.hold(1, "jinan1", T0, T0 + 400)
    with pytest.raises(PlanRefused, match=r"plan 2 overlaps plan 1 \(jinan1"):
        guard.hold(2, "eagle1", T0 + 300, T0 + 700)
    # another mission needs slew (60 s) + reconfiguration (120 s): 100 s is too little
    with pytest.raises(PlanRefused, match=r"60 s slew \+ 120 s reconfiguration"):
        guard.hold(3, "eagle1", T0 + 500, T0 + 900)
    guard.hold(4, "jinan1", T0 + 500, T0 + 900)  # the same mission needs the slew only
    guard.hold(5, "eagle1", T0 + 1100, T0 + 1500)
    assert sorted(guard.held) == [1, 4, 5]
    # plans come in any order: one before a held plan still meets it
    with pytest.raises(PlanRefused, match=r"plan 6 overlaps plan 1 \(jinan1"):
        guard.hold(6, "micius2020-bbm92", T0 - 200, T0 + 10)
    # plans that ended before now (less the gaps) are forgotten; later ones are kept
    guard.hold(7, "jinan1", T0 + 3000, T0 + 3400, now_unix_s=T0 + 2000)
    assert sorted(guard.held) == [7]
    counters = guard.counters
    assert (counters.plans_held, counters.plans_refused, counters.refused_overlap_or_gap) == (
        4,
        3,
        3,
    )


def test_incompatible_and_unknown_missions_are_refused_with_the_reasons() -> None:
    xinglong = load_model(StationConfig, REPO / "configs" / "stations" / "xinglong.yaml")
    guard = station_missions(xinglong, MISSIONS.values())
    assert set(guard.profiles) == {"jinan1"}
    with pytest.raises(PlanRefused, match=r"cannot serve mission eagle1: quantum wavelength 1550"):
        guard.hold(1, "eagle1", T0, T0 + 400)
    with pytest.raises(PlanRefused, match=r"needs a clockless station"):
        guard.hold(2, "micius2020-bbm92", T0, T0 + 400)
    with pytest.raises(PlanRefused, match=r"no mission profile 'micius'"):
        guard.hold(3, "micius", T0, T0 + 400)
    assert guard.counters.refused_unknown_or_incompatible == 3
    assert guard.held == {}


def test_the_planning_tools_and_the_station_apply_one_rule(
    station: StationConfig, guard: StationMissions
) -> None:
    guard.hold(1, "jinan1", T0, T0 + 400)
    candidate = PlannedPass(2, "eagle1", T0 + 450, T0 + 800)
    expected = plan_refusal(station, MISSIONS, [PlannedPass(1, "jinan1", T0, T0 + 400)], candidate)
    assert expected is not None and guard.refusal(candidate) == expected


def test_the_profile_switches_only_when_the_mission_changes(guard: StationMissions) -> None:
    guard.hold(1, "jinan1", T0, T0 + 400)
    guard.hold(2, "jinan1", T0 + 500, T0 + 900)
    guard.hold(3, "micius2020-bbm92", T0 + 1100, T0 + 1500)
    assert guard.switch_time_unix_s(3) == T0 + 1100 - 120.0
    first = guard.switch_to(1)
    assert first is not None and first.startswith("plan 1: none -> jinan1: decoy-bb84")
    assert guard.switch_to(2) is None  # already set up for jinan1
    third = guard.switch_to(3)
    assert third is not None and "jinan1 -> micius2020-bbm92: bbm92, cross-correlation" in third
    assert guard.active is not None and guard.active.mission == "micius2020-bbm92"
    assert guard.counters.switches_by_mission == {"jinan1": 1, "micius2020-bbm92": 1}


def test_keys_are_kept_per_mission_and_peer_and_a_single_mission_layout_stays(
    tmp_path: Path,
) -> None:
    assert mission_key_root(tmp_path, "jinan1", "payload", single_mission=True) == tmp_path
    jinan = mission_key_root(tmp_path, "jinan1", "payload", single_mission=False)
    eagle = mission_key_root(tmp_path, "eagle1", "payload", single_mission=False)
    assert jinan == tmp_path / "missions" / "jinan1" / "payload" and jinan != eagle
    for bad in ("../jinan1", "Jinan1", "", "a/b"):
        with pytest.raises(ValueError, match="not a plain identifier"):
            mission_key_root(tmp_path, bad, "payload", single_mission=False)


# ---- the station daemon: LOAD_PASS_PLAN through the shared guard ---------------------------


class _Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def __call__(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.messages.append((topic, payload))

    def acks(self) -> list[dict]:
        return [decode_envelope(p).fields for t, p in self.messages if t.endswith("/tc_ack")]


async def _daemon(
    name: str, station: StationConfig, keys: Path, clock: SimClock, guard: StationMissions
) -> tuple[OgsDaemon, _Published]:
    mission = load_model(MissionConfig, REPO / "configs" / "missions" / f"{name}.yaml")
    store = KeyStore(mission_key_root(keys, name, "payload", single_mission=False))
    install_preshared_key(store, preshared_auth_key(3, 4096))
    bus = MessageBus("mqtt://127.0.0.1:9", f"unused-{name}")
    published = _Published()
    bus.publish = published  # type: ignore[method-assign]
    daemon = OgsDaemon(
        ogs_settings(mission, station, STATION_FILE), bus, clock, None,  # type: ignore[arg-type]
        store, await seeded_entropy(8), missions=guard,
    )  # fmt: skip
    return daemon, published


def _load_plan(plan_id: int, mission: str, aos: float, los: float, rate_hz: float):
    tle = sun_synchronous_tle(500.0, 22.5, T0)
    fields = {
        "plan_id": plan_id, "mission": mission, "station": "graz-interoperable",
        "tle_line1": tle[0], "tle_line2": tle[1], "aos_unix_s": aos, "los_unix_s": los,
        "qkd_start_unix_s": aos + 20.0, "qkd_stop_unix_s": los - 20.0,
        "repetition_rate_hz": rate_hz,
    }  # fmt: skip
    spec = dct.DICTIONARY["LOAD_PASS_PLAN"]
    return decode_envelope(encode_envelope(spec, plan_id, fields))


async def test_the_station_daemons_share_the_guard_refuse_and_switch(
    station: StationConfig, guard: StationMissions, tmp_path: Path
) -> None:
    clock = SimClock(T0)
    jinan, jinan_bus = await _daemon("jinan1", station, tmp_path, clock, guard)
    eagle, eagle_bus = await _daemon("eagle1", station, tmp_path, clock, guard)
    try:
        await jinan._execute(_load_plan(11, "jinan1", T0 + 600, T0 + 1000, 1e8))
        assert jinan_bus.acks()[-1]["accepted"] is True
        # eagle1 100 s after jinan1's LOS: less than slew + reconfiguration
        await eagle._execute(_load_plan(12, "eagle1", T0 + 1100, T0 + 1500, 1e9))
        ack = eagle_bus.acks()[-1]
        assert ack["accepted"] is False
        assert "plan 12 leaves 100 s between plan 11 (jinan1" in ack["reason"]
        assert eagle.runtime.counters.events["TC_REJECTED"] == 1
        assert 12 not in eagle.sessions and 12 not in guard.held
        await eagle._execute(_load_plan(13, "eagle1", T0 + 1200, T0 + 1600, 1e9))
        assert eagle_bus.acks()[-1]["accepted"] is True
        # the station sets up each plan's profile the reconfiguration gap before its AOS
        await clock.advance_to(T0 + 600 - 120.0)
        await asyncio.sleep(0.05)
        assert guard.active is not None and guard.active.mission == "jinan1"
        jinan.sessions[11].request_abort("test over", tell_payload=False)
        await clock.advance_to(T0 + 1200 - 120.0)
        await asyncio.sleep(0.05)
        assert guard.active.mission == "eagle1"
        assert guard.active.detector_channels == (4, 5, 6, 7)
        assert eagle.runtime.counters.events.get("PROFILE_SWITCHED") == 1
    finally:
        for daemon in (jinan, eagle):
            for task in list(daemon._tasks):
                task.cancel()
            await asyncio.gather(*daemon._tasks, return_exceptions=True)
