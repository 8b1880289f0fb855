"""`satqkd payload run --link RESOURCE`: the standalone payload daemon drives a payload
controller on a serial line (here the controller firmware on a pty, in real time)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_shims.laser_interlock import InterlockSettings, LaserInterlock
from firmware_shims.payload_controller import PayloadController
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.cli import main
from satqkd.daemons import open_payload_source, payload_bench
from satqkd.instruments_config import validate_instruments
from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope
from satqkd_core.payload_icd import DisableReason
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import RealClock
from satqkd_runtime.emission_auth import EmissionSigner, EmissionWatermark, install_emission_key
from sim_backends.instruments import SimPulsedSource
from tests.tc_signing import OccSigner, install_tc_key

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
TLE = (
    "1 99999U          26335.00000000  .00000000  00000-0  00000-0 0    05",
    "2 99999  97.4000 100.0000 0001000   0.0000   0.0000 15.21000000    09",
)


async def test_open_payload_source_reaches_the_controller() -> None:
    clock = RealClock()
    sequencer = SourceSequencer(1, (0.5, 0.25, 0.25), 0.5)
    async with PayloadController(clock) as controller:
        entry = {
            "driver": "payload_link_source",
            "resource": f"serial://{controller.port_path}",
            "options": {"keep_alive_interval_s": 0.5},
        }
        bench = validate_instruments({"name": "link", "instruments": {"source": entry}}, "test")
        async with contextlib.AsyncExitStack() as stack:
            source = await open_payload_source(bench, clock, sequencer, stack)
            await asyncio.sleep(1.2)  # the keep-alive pings meanwhile
            assert controller.counters.tc_accepted >= 3  # connect's ping + report + pings
            assert type(source).__name__ == "PayloadLinkSource"
    # --link is short for that bench; without a bench the source is simulated
    short = payload_bench(None, f"serial://{controller.port_path}")
    assert short is not None and short.instruments["source"].driver == "payload_link_source"
    async with contextlib.AsyncExitStack() as stack:
        simulated = await open_payload_source(None, clock, sequencer, stack)
        assert isinstance(simulated, SimPulsedSource)


def test_a_link_that_does_not_open_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install_tc_key(tmp_path, tmp_path / "occ", "payload")  # or it stops at the missing key
    run = [
        "payload", "run", str(MISSION), "--broker", "mqtt://127.0.0.1:9",
        "--keys", str(tmp_path), "--link", "serial:///dev/satqkd-no-such-port",
    ]  # fmt: skip
    # without an emission key the driver could not sign a request to emit: one line, the fix
    assert main(run) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "no emission key for the payload node" in error
    assert "satqkd keys emission --node-keys" in error
    install_emission_key(tmp_path, tmp_path / "controller")
    status = main(run)
    assert status != 0
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith("satqkd: --link serial:///dev/satqkd-no-such-port: ")
    assert "cannot open" in error
    status = main(
        [
            "payload", "run", str(MISSION), "--broker", "mqtt://127.0.0.1:9",
            "--keys", str(tmp_path), "--link", "carrier-pigeon://coop",
        ]
    )  # fmt: skip
    assert status != 0 and "unknown scheme 'carrier-pigeon'" in capsys.readouterr().err


@pytest.mark.mosquitto
@pytest.mark.timeout(90)
async def test_payload_run_drives_a_controller_through_a_pass(
    mosquitto_url: str, tmp_path: Path
) -> None:
    clock = RealClock()
    laser = SimPulsedSource("laser", lambda index: None, clock)
    keys = tmp_path / "payload-keys"
    boot = subprocess.run(
        [
            sys.executable, "-m", "satqkd.cli", "keys", "bootstrap", "--payload-keys", str(keys),
            "--ogs-keys", str(tmp_path / "ogs-keys"), "--station", "xinglong",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert boot.returncode == 0, boot.stderr
    signer = OccSigner(tmp_path / "occ")  # the control centre signs (decision 0016)
    install_tc_key(keys, tmp_path / "occ", "payload")
    controller_keys = tmp_path / "controller-keys"
    emission = subprocess.run(
        [
            sys.executable, "-m", "satqkd.cli", "keys", "emission", "--node-keys", str(keys),
            "--controller-keys", str(controller_keys),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert emission.returncode == 0, emission.stderr
    # the controller holds the emission key: it refuses a plain SOURCE_ENABLE
    interlock = LaserInterlock(
        InterlockSettings(link_timeout_s=5.0), watermark=EmissionWatermark(controller_keys)
    )
    async with (
        PayloadController(
            clock, link_timeout_s=5.0, source_hardware=laser, interlock=interlock
        ) as controller,
        MessageBus(mosquitto_url, "occ-link-test") as occ,
    ):
        await occ.subscribe("satqkd/jinan1/payload/#")
        seen: list[str] = []

        async def collect() -> None:
            async for message in occ.messages():
                envelope = decode_envelope(message.payload)
                if envelope.spec.name == "EVENT":
                    seen.append(dct.event_by_id(envelope.fields["event_id"]).name)
                elif envelope.spec.name == "TC_ACK":
                    seen.append(f"ack {envelope.fields['accepted']}")

        collector = asyncio.create_task(collect())
        process = subprocess.Popen(
            [
                sys.executable, "-m", "satqkd.cli", "payload", "run", str(MISSION),
                "--broker", mosquitto_url, "--keys", str(keys), "--seed", "3",
                "--link", f"serial://{controller.port_path}?baud=115200",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            async with asyncio.timeout(30):
                while "NODE_STARTED" not in seen:
                    await asyncio.sleep(0.02)
            start = float(int(time.time()) + 2)
            plan = {
                "plan_id": 21, "mission": "jinan1", "station": "xinglong",
                "tle_line1": TLE[0], "tle_line2": TLE[1],
                "aos_unix_s": start - 1, "los_unix_s": start + 10,
                "qkd_start_unix_s": start, "qkd_stop_unix_s": start + 1.5,
                "repetition_rate_hz": 1e8,
            }  # fmt: skip
            topic = dct.telecommand_topic("jinan1", "payload")
            await occ.publish(topic, signer.sign("payload", "LOAD_PASS_PLAN", **plan))
            async with asyncio.timeout(20):
                while "PASS_ENDED" not in seen:
                    await asyncio.sleep(0.02)
            assert seen.count("ack True") == 1
            assert controller.plan is not None and controller.plan.plan_id == 21
            enabled_at = [t for t, on, _ in controller.source_history if on]
            assert len(enabled_at) == 1 and start <= enabled_at[0] < start + 0.5
            assert laser.first_pulse_unix_s == start and not laser.enabled
            assert controller.disable_reason in (DisableReason.PLAN_ENDED, DisableReason.COMMANDED)
            # the daemon's driver signed the request with counter 1, and both ends kept it
            assert interlock.unauthenticated_requests == 0
            assert EmissionWatermark(controller_keys).highest == 1
            assert EmissionSigner(keys).counter == 1
            await occ.publish(topic, signer.sign("payload", "SHUTDOWN"))
            returncode = await asyncio.to_thread(process.wait, 30)
            assert returncode == 0, process.stderr.read() if process.stderr else ""
            assert controller.counters.watchdog_trips == 0
        finally:
            collector.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
