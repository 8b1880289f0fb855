"""The station's end of a pass is bounded: with a broker that never comes back, its pass task
still ends (session released, `pass_done` set, the plan closed) after `outage_give_up_s` of its
clock, and its housekeeping resumes once the broker is back. A corrupt plan record is
quarantined at start (an event) and plans are accepted again. Fakes (the bus and tagger of
tests/app/test_outage_ends_passes.py), a simulated clock; no broker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

from satqkd.config import MissionConfig, StationConfig, load_model
from satqkd.wiring import ogs_settings, preshared_auth_key
from satqkd_ogs.daemon import OgsDaemon
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.plan_registry import SECRET, PlanRegistry
from satqkd_runtime.qkd_channel import install_preshared_key
from satqkd_runtime.telecommand_auth import UnauthenticatedTelecommands
from tests.app.test_outage_ends_passes import (
    AOS,
    MISSION_FILE,
    PLAN_ID,
    STATION_FILE,
    FlakyBus,
    _OutageTagger,
    _plan,
    _telecommand,
)
from tests.daemon_pair import until
from tests.seeded_entropy import seeded_entropy


async def _station(tmp_path: Path, corrupt_record: bool = False):
    mission = load_model(MissionConfig, MISSION_FILE)
    station = load_model(StationConfig, STATION_FILE)
    settings = dataclasses.replace(
        ogs_settings(mission, station, STATION_FILE), housekeeping_period_s=5.0
    )
    store = KeyStore(tmp_path / "ogs")
    install_preshared_key(store, preshared_auth_key(5, 4096))
    if corrupt_record:
        store.store_secret(SECRET, b'{"version": 1, "plan_ids": [1, "x"]}')
    bus, clock = FlakyBus(), SimClock(AOS - 30.0)
    daemon: OgsDaemon | None = None
    tagger = _OutageTagger(bus, lambda: daemon)  # type: ignore[arg-type,return-value]
    daemon = OgsDaemon(
        settings, bus, clock, tagger, store, await seeded_entropy(3),  # type: ignore[arg-type]
        tc_verifier=UnauthenticatedTelecommands(),
    )  # fmt: skip
    return daemon, bus, clock, tagger, mission


async def test_station_gives_up_the_end_of_a_pass_when_the_broker_never_returns(
    tmp_path: Path,
) -> None:
    daemon, bus, clock, tagger, mission = await _station(tmp_path)
    served = asyncio.create_task(daemon.run())
    try:
        _telecommand(bus, "ogs-xinglong", 1, "LOAD_PASS_PLAN", **_plan(mission.name))
        await until(lambda: "TC_ACK" in bus.names("/tm/tc_ack"), "plan acknowledged")
        assert PlanRegistry(daemon.keystore).open_ids() == [PLAN_ID]
        await clock.advance_to(AOS + 10.0 - daemon.settings.tagger_lead_s)  # the broker goes
        await until(lambda: tagger.stops >= 1, "tagger stopped")
        ended = AOS + 10.0 + daemon.outage_give_up_s
        await clock.advance_to(ended - 10.0)
        await asyncio.sleep(0.05)
        assert not daemon.pass_done[PLAN_ID].is_set()  # still waiting for the broker
        await clock.advance_to(ended + 60.0)  # the ABORT, events and summary give up in turn
        for _ in range(3):
            await clock.advance_to(clock.now_unix_s() + daemon.outage_give_up_s + 1.0)
            await asyncio.sleep(0.05)
        await until(daemon.pass_done[PLAN_ID].is_set, "the pass task ended", 5.0)
        assert PLAN_ID not in daemon.sessions
        assert PlanRegistry(daemon.keystore).open_ids() == []  # a restart has nothing to undo
        assert daemon.keystore.key_ids(state=None) == []
        assert not bus.up.is_set() and not served.done()
        housekeeping = len(bus.names("/tm/housekeeping"))
        bus.up.set()  # back at last: housekeeping resumes
        await clock.advance_to(clock.now_unix_s() + 20.0)
        await until(lambda: len(bus.names("/tm/housekeeping")) > housekeeping, "housekeeping")
    finally:
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served


async def test_corrupt_plan_record_is_quarantined_at_start_and_plans_accepted(
    tmp_path: Path,
) -> None:
    daemon, bus, _clock, _tagger, mission = await _station(tmp_path, corrupt_record=True)
    served = asyncio.create_task(daemon.run())
    try:
        await until(lambda: "KEY_STORE_RECOVERED" in bus.events("ogs-xinglong"), "evented")
        assert (tmp_path / "ogs" / "quarantine" / f"{SECRET}.secret").is_file()
        _telecommand(bus, "ogs-xinglong", 1, "LOAD_PASS_PLAN", **_plan(mission.name))
        await until(lambda: "TC_ACK" in bus.names("/tm/tc_ack"), "plan acknowledged")
        assert bus.fields("/tm/tc_ack", "TC_ACK")[0]["accepted"]
    finally:
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served
