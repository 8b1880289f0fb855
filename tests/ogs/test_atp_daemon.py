"""The station daemon with instruments: a whole short pass with ATP in the loop (an instrument
failing mid-pass does not stop the key), a pass refused for warm detectors, and `satqkd ogs
run --instruments` opening a bench."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from pathlib import Path

import pytest

import satqkd.simulation as simulation
from drivers.interfaces import DeviceTimeout
from drivers.scpi import ScpiBiasSupply
from drivers.transport import open_transport
from satqkd.cli import main
from satqkd.config import (
    ConfigError,
    MissionConfig,
    StationConfig,
    load_model,
    load_scenario,
    load_yaml_mapping,
    validate_model,
)
from satqkd.daemons import open_station_instruments
from satqkd.wiring import ogs_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope
from satqkd_ogs.atp import StationInstruments
from satqkd_ogs.daemon import OgsDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key
from sim_backends.emulators.scpi import BiasSupplyEmulator
from tests.seeded_entropy import seeded_entropy
from tests.tc_signing import OccSigner, install_tc_key

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
STATION = REPO / "configs" / "stations" / "xinglong.yaml"
SIM_BENCH = REPO / "configs" / "instruments" / "sim-bench.yaml"
TLE1 = "1 99999U          26335.00000000  .00000000  00000-0  00000+0 0    06"
TLE2 = "2 99999  97.4018  47.3668 0000000   0.0000   0.0000 15.22444802    02"

pytestmark = pytest.mark.timeout(120)


def _short_scenario():
    scenario = load_scenario(CLEAR)
    sim = scenario.scenario.simulation.model_copy(update={"qkd_start_after_aos_s": 190.0})
    return scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"simulation": sim})}
    )


async def test_short_pass_with_station_instruments_makes_a_key_through_a_beacon_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemons: list[OgsDaemon] = []
    outage: dict[str, float] = {}

    def station_daemon(settings, *args, **kwargs) -> OgsDaemon:
        # 5 Hz keeps the test short; pre-cooled detectors are the norm before a pass
        atp = dataclasses.replace(settings.atp, fine_loop_rate_hz=5.0)
        detectors = dataclasses.replace(settings.detectors, max_temperature_c=30.0)
        daemon = OgsDaemon(
            dataclasses.replace(settings, atp=atp, detectors=detectors), *args, **kwargs
        )
        daemons.append(daemon)
        return daemon

    monkeypatch.setattr(simulation, "OgsDaemon", station_daemon)

    scenario = _short_scenario()
    started = asyncio.get_running_loop().time()

    async def run():
        return await simulation.run_pass(scenario, tmp_path, max_duration_s=40.0)

    # the beacon stops answering for 6 s of the QKD window (driver timeouts, as a dead link)
    task = asyncio.create_task(run())
    while not daemons or daemons[0].instruments.beacon is None:
        await asyncio.sleep(0.01)
        assert asyncio.get_running_loop().time() - started < 60
    ogs = daemons[0]
    beacon = ogs.instruments.beacon
    read_spot = beacon.read_spot

    async def failing_read_spot():
        now = ogs.clock.now_unix_s()
        if outage.get("start", math.inf) <= now < outage.get("stop", -math.inf):
            raise DeviceTimeout(f"{beacon.name}: no reply to 'CEN?' within 0.5 s")
        return await read_spot()

    beacon.read_spot = failing_read_spot  # type: ignore[method-assign]
    while not ogs.sessions:
        await asyncio.sleep(0.01)
    plan = next(iter(ogs.sessions.values())).plan
    outage["start"], outage["stop"] = plan.qkd_start_unix_s + 10.0, plan.qkd_start_unix_s + 16.0
    run_result = await asyncio.wait_for(task, 100.0)

    result = run_result.ogs.results[run_result.plan_id]
    assert result.abort_reason is None and result.key_id is not None and result.pa_output_bits > 0
    record = ogs.atp_records[run_result.plan_id]
    summary = record.summary()
    assert summary["finished"] and summary["acquisition_time_s"] is not None
    assert summary["faults"]["beacon"] >= 2
    assert ogs.instrument_faults["beacon"] == summary["faults"]["beacon"]
    counted = ogs.runtime.counters.events
    assert counted.get("ATP_INSTRUMENT_FAULT", 0) >= 2 and counted.get("KEY_STORED") == 1
    assert counted.get("ATP_INSTRUMENT_RECOVERED") == 1 and counted.get("DETECTORS_READY") == 1
    # the loop sampled the whole plan, prepare to LOS, at 5 Hz
    times = record.column("unix_s")
    assert times[0] == pytest.approx(plan.aos_unix_s - 20.0)
    assert times[-1] == pytest.approx(plan.los_unix_s, abs=0.2)
    assert len(record) == pytest.approx((plan.los_unix_s - plan.aos_unix_s + 20.0) * 5, abs=2)
    assert record.modes()[-1] == "tracking"


async def _ack(occ: MessageBus, seq: int) -> dict:
    async for message in occ.messages():
        if message.topic.endswith("/tm/tc_ack"):
            ack = decode_envelope(message.payload).fields
            if ack["command_seq"] == seq:
                return ack
    raise AssertionError("bus closed")


async def test_daemon_refuses_a_pass_its_warm_detectors_cannot_take(
    tmp_path: Path, embedded_broker_url: str
) -> None:
    mission = load_model(MissionConfig, MISSION)
    station = load_model(StationConfig, STATION)
    settings = ogs_settings(mission, station, STATION)
    aos = 1796134847.0
    clock = SimClock(aos - 30.0)
    store = KeyStore(tmp_path / "ogs")
    install_preshared_key(store, preshared_auth_key(5, 4096))
    supply = BiasSupplyEmulator(clock, cooling_time_constant_s=1e9, seed=1)
    await supply.start_tcp()
    detectors = ScpiBiasSupply("detectors", open_transport(supply.resource), timeout_s=0.5)
    await detectors.connect()
    plan = {
        "plan_id": 9, "mission": "jinan1", "station": "xinglong",
        "tle_line1": TLE1, "tle_line2": TLE2, "aos_unix_s": aos, "los_unix_s": aos + 60.0,
        "qkd_start_unix_s": aos + 10.0, "qkd_stop_unix_s": aos + 40.0,
        "repetition_rate_hz": 1e8,
    }  # fmt: skip
    tc_topic = dct.telecommand_topic("jinan1", "ogs-xinglong")
    verifier = install_tc_key(tmp_path / "ogs", tmp_path / "occ", "ogs-xinglong")
    signer = OccSigner(tmp_path / "occ")
    try:
        async with (
            MessageBus(embedded_broker_url, "ogs-test") as bus,
            MessageBus(embedded_broker_url, "occ-test") as occ,
        ):
            await occ.subscribe("satqkd/jinan1/ogs-xinglong/tm/tc_ack")
            daemon = OgsDaemon(
                settings,
                bus,
                clock,
                _NoTagger(),
                store,
                await seeded_entropy(7),
                StationInstruments(detectors=detectors),
                tc_verifier=verifier,
            )
            served = asyncio.create_task(daemon.run())
            await asyncio.sleep(0.1)
            await occ.publish(tc_topic, signer.sign("ogs-xinglong", "LOAD_PASS_PLAN", **plan))
            assert (await asyncio.wait_for(_ack(occ, 1), 10.0))["accepted"]
            await clock.advance_to(aos + 10.0)
            await asyncio.wait_for(daemon.pass_done[9].wait(), 10.0)
            reason = daemon.results[9].abort_reason
            # the daemon is still up: it answers a NOOP after the refusal
            await occ.publish(tc_topic, signer.sign("ogs-xinglong", "NOOP"))  # seq 2
            assert (await asyncio.wait_for(_ack(occ, 2), 10.0))["accepted"]
            await clock.advance_to(aos + 61.0)
            served.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await served
    finally:
        await detectors.close()
        await supply.stop()

    assert reason is not None
    assert reason.startswith("pass refused: detectors too warm: channel 1 at 22.0 C")
    assert reason.endswith("(limit -20 C)")
    assert daemon.runtime.counters.events.get("DETECTOR_FAULT") == 1
    assert daemon.runtime.counters.events.get("BLOCK_ABORTED") == 1
    assert "PASS_STARTED" not in daemon.runtime.counters.events
    assert daemon.atp_records[9].finished


class _NoTagger:
    """A tagger the refused pass must never start."""

    name = "tagger"

    async def start(self) -> float:
        raise AssertionError("the tagger was started for a refused pass")

    async def stop(self) -> None:
        return None


async def test_sim_bench_config_opens_the_station_instruments() -> None:
    clock = SimClock(1.8e9)
    async with contextlib.AsyncExitStack() as stack:
        node = await open_station_instruments(SIM_BENCH, clock, stack, seed=3)
        assert node.tagger is not None and node.paths["tagger"] == "emulator"
        instruments = node.station_instruments()
        assert instruments.present
        assert instruments.gimbal is not None and instruments.fsm is not None
        assert instruments.beacon is not None and instruments.detectors is not None
        limits = await instruments.gimbal.limits()
        assert limits.az_min_deg == pytest.approx(-180.0, abs=0.01)
        spot = await instruments.beacon.read_spot()
        assert spot.valid
        connected = [instruments.gimbal, instruments.fsm, instruments.beacon]
        assert all(device.connected for device in connected)  # type: ignore[attr-defined]
    assert not any(device.connected for device in connected)  # type: ignore[attr-defined]


async def test_bench_with_two_gimbals_or_a_dead_instrument_is_refused(tmp_path: Path) -> None:
    two = tmp_path / "two.yaml"
    two.write_text(
        "name: two\ninstruments:\n"
        "  left: {driver: ptu_gimbal, resource: 'emulator://gimbal'}\n"
        "  right: {driver: ptu_gimbal, resource: 'emulator://gimbal'}\n"
    )
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(ValueError, match="left and right are both a gimbal"):
            await open_station_instruments(two, SimClock(1.8e9), stack)
    dead = tmp_path / "dead.yaml"
    dead.write_text(
        "name: dead\ninstruments:\n"
        "  fsm: {driver: pi_gcs_mirror, resource: 'tcp://127.0.0.1:9', connect_timeout_s: 1}\n"
    )
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(ValueError, match=r"dead.yaml: instrument fsm: .*127\.0\.0\.1:9"):
            await open_station_instruments(dead, SimClock(1.8e9), stack)


def test_ogs_run_with_a_missing_instruments_config_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install_preshared_key(KeyStore(tmp_path), preshared_auth_key(1, 1000))
    status = main(
        [
            "ogs", "run", str(STATION), "--mission", str(MISSION), "--keys", str(tmp_path),
            "--broker", "mqtt://127.0.0.1:9", "--instruments", str(tmp_path / "none.yaml"),
        ]
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err == f"satqkd: {tmp_path / 'none.yaml'}: file not found"


def test_station_profile_atp_and_detector_keys_reach_the_daemon_settings() -> None:
    mission = load_model(MissionConfig, MISSION)
    data = load_yaml_mapping(STATION)
    data["atp"] = {**data["atp"], "fine_loop_rate_hz": 25.0, "fsm_integral_gain": 0.8}
    data["detectors"] = {**data["detectors"], "bias_v": 55.0, "max_temperature_c": -35.0}
    station = validate_model(StationConfig, data, "xinglong.yaml")
    settings = ogs_settings(mission, station, STATION)
    atp, detectors = settings.atp, settings.detectors
    assert (atp.fine_loop_rate_hz, atp.fsm_integral_gain) == (25.0, 0.8)
    assert (detectors.bias_v, detectors.max_temperature_c) == (55.0, -35.0)
    assert atp.acquisition_field_of_view_urad == 100.0  # the profile's existing key
    assert atp.prepare_lead_s == 20.0  # a default
    data["atp"]["fsm_integral_gain"] = 2.5  # the PI loop would be unstable
    with pytest.raises(ConfigError, match=r"xinglong.yaml: atp.fsm_integral_gain: .*less than 2"):
        validate_model(StationConfig, data, "xinglong.yaml")
