"""The OCC daemon over Mosquitto: a station posts demand, the OCC plans it and sends signed
LOAD_PASS_PLAN telecommands that the real payload and station daemons (processes) accept; bad
demand is refused with a counted event; a pass summary is credited to the demand it served."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_core.ephemeris import Station
from satqkd_occ import CloudForecast, KeyTable, PlanSettings, Satellite, StationSite
from satqkd_occ.daemon import OccDaemon, OccSettings
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import RealClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key
from satqkd_runtime.telecommand_auth import TelecommandSigner
from sim_backends.orbit import sun_synchronous_tle
from tests.tc_signing import install_tc_key

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
STATION = REPO / "configs" / "stations" / "xinglong.yaml"

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]


def _settings(now: float) -> OccSettings:
    tle = sun_synchronous_tle(500.0, 22.5, now)
    return OccSettings(
        satellite=Satellite("jinan1", *tle),
        repetition_rate_hz=1e8,  # the jinan1 mission profile's
        sites=(
            StationSite("xinglong", Station(40.3958, 117.5775, 900.0), 10.0, -12.0),
            StationSite("graz", Station(47.0671, 15.4934, 493.0), 10.0, -12.0),  # no key table
        ),
        key_tables={("jinan1", "xinglong"): KeyTable((10.0, 90.0), (50_000, 400_000))},
        forecast=CloudForecast(),
        plan_settings=PlanSettings(time_limit_s=5.0),
        horizon_days=1.5,
        housekeeping_period_s=0.5,
    )


def _demand_envelope(demand_id: str, a: str, b: str, bits: int, deadline: float) -> bytes:
    fields = {"demand_id": demand_id, "endpoint_a": a, "endpoint_b": b, "bits": bits,
              "deadline_unix_s": deadline}  # fmt: skip
    return encode_envelope(dct.DICTIONARY["KEY_DEMAND"], 1, fields)


async def test_posted_demand_becomes_signed_plans_the_daemons_accept(mosquitto_url, tmp_path):
    payload_keys, ogs_keys, occ_keys = tmp_path / "p", tmp_path / "o", tmp_path / "occ"
    preshared = b"\x5a" * (16 * 4096)  # 4096 messages: above the pass reserve of 2048
    install_preshared_key(KeyStore(payload_keys / "xinglong"), preshared)
    install_preshared_key(KeyStore(ogs_keys), preshared)
    install_tc_key(payload_keys, occ_keys, "payload")
    install_tc_key(ogs_keys, occ_keys, "ogs-xinglong")
    common = ["--broker", mosquitto_url, "--seed", "5", "--housekeeping-period-s", "0.5"]
    commands = [
        [sys.executable, "-m", "satqkd.cli", "payload", "run", str(MISSION), "--keys",
         str(payload_keys), *common],
        [sys.executable, "-m", "satqkd.cli", "ogs", "run", str(STATION), "--mission", str(MISSION),
         "--keys", str(ogs_keys), *common],
    ]  # fmt: skip
    processes = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True) for c in commands]
    now = time.time()
    try:
        async with (
            MessageBus(mosquitto_url, "occ-test") as occ_bus,
            MessageBus(mosquitto_url, "station-test") as station_bus,
        ):
            await station_bus.subscribe("satqkd/jinan1/+/tm/housekeeping")
            await station_bus.subscribe("satqkd/jinan1/occ/#")
            up: set[str] = set()

            async def daemons_up() -> None:
                async for message in station_bus.messages():
                    if message.topic.endswith("/housekeeping"):
                        up.add(message.topic.split("/")[2])
                        if {"payload", "ogs-xinglong"} <= up:
                            return

            async def none_exited() -> None:
                while all(p.poll() is None for p in processes):
                    await asyncio.sleep(0.2)
                dead = next(p for p in processes if p.poll() is not None)
                raise AssertionError(f"a daemon exited: {dead.stderr.read()[-2000:]}")

            waits = {asyncio.create_task(daemons_up()), asyncio.create_task(none_exited())}
            done, pending = await asyncio.wait(waits, timeout=60, return_when="FIRST_COMPLETED")
            for task in pending:
                task.cancel()
            assert done, "the daemons did not publish housekeeping within 60 s"
            for task in done:
                task.result()  # a daemon that exited fails here, with its stderr
            signers: dict[str, TelecommandSigner] = {}

            def signer_for(node: str) -> TelecommandSigner:
                return signers.setdefault(node, TelecommandSigner.for_node(occ_keys, node))

            daemon = OccDaemon(_settings(now), occ_bus, RealClock(), signer_for)
            task = asyncio.create_task(daemon.run())
            await asyncio.wait_for(daemon.replanned.wait(), 30)
            assert not daemon.sent  # no demand, nothing sent
            topic = dct.telemetry_topic("jinan1", "ogs-xinglong", "KEY_DEMAND")
            # a station may not post demand between others, nor a past deadline
            await station_bus.publish(
                topic, _demand_envelope("bad", "graz", "jinan1", 10, now + 9e4)
            )
            await station_bus.publish(topic, _demand_envelope("old", "xinglong", "jinan1", 10, 1.0))
            await station_bus.publish(
                topic, _demand_envelope("x1", "xinglong", "jinan1", 40_000, now + 2 * 86400)
            )

            async def accepted_by_both() -> None:
                while not any(
                    s.accepted == {"payload": True, "ogs-xinglong": True}
                    for s in daemon.sent.values()
                ):
                    refused = [
                        s.accepted for s in daemon.sent.values() if False in s.accepted.values()
                    ]
                    assert not refused, refused
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(accepted_by_both(), 30)
            assert daemon.demands_rejected == 2 and set(daemon.demands) == {"x1"}
            # another station may not replace a demand that is not its own
            graz_topic = dct.telemetry_topic("jinan1", "ogs-graz", "KEY_DEMAND")
            await station_bus.publish(
                graz_topic, _demand_envelope("x1", "graz", "jinan1", 5, now + 9e4)
            )
            while daemon.demands_rejected < 3:
                await asyncio.sleep(0.05)
            assert daemon.demands["x1"].endpoints == ("xinglong", "jinan1")
            (sent,) = daemon.sent.values()
            assert sent.allocated_bits == {"x1": 40_000}
            assert sent.candidate.aos_unix_s > now and sent.seqs["payload"] >= 1

            # the station's summary is credited; the demand is then met
            assert await daemon._on_summary(
                {"plan_id": sent.plan_id, "station": "xinglong", "secret_key_bits": 45_000}
            )
            assert daemon.delivered(daemon.demands["x1"]) == 40_000
            daemon.stopped.set()
            await asyncio.wait_for(task, 10)

            seen = []

            async def occ_telemetry() -> None:
                async for message in station_bus.messages():
                    if message.topic.startswith("satqkd/jinan1/occ/"):
                        seen.append(decode_envelope(message.payload))
                        names = {e.spec.name for e in seen}
                        if {"HOUSEKEEPING", "DEMAND_STATUS", "EVENT"} <= names:
                            return

            await asyncio.wait_for(occ_telemetry(), 10)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
