"""`satqkd ogs run --instruments BENCH` drives the bench's time tagger through its real driver:
the TT/1 tagger emulator serves on its own (`satqkd sim emulator tagger`, as an instrument on
the LAN would), the station connects to `tcp://127.0.0.1:PORT`, runs a pass against a payload
daemon and writes a report per pass that meets the report schema."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope
from satqkd_runtime.bus import MessageBus
from tests.conftest import free_tcp_port
from tests.tc_signing import OccSigner, install_tc_key

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
STATION = REPO / "configs" / "stations" / "xinglong.yaml"
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())
TLE = (
    "1 99999U          26335.00000000  .00000000  00000-0  00000+0 0    06",
    "2 99999  97.4018  47.3668 0000000   0.0000   0.0000 15.22444802    02",
)

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]


def _satqkd(*args: str) -> list[str]:
    return [sys.executable, "-m", "satqkd.cli", *args]


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stderr.read() if process.stderr else ""


async def test_ogs_run_drives_a_tagger_on_the_lan_and_writes_a_valid_report(
    mosquitto_url: str, tmp_path: Path
) -> None:
    port = free_tcp_port()
    tagger = subprocess.Popen(
        _satqkd("sim", "emulator", "tagger", "--port", str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    processes = [tagger]
    try:
        line = await asyncio.wait_for(asyncio.to_thread(tagger.stdout.readline), 60)  # type: ignore[union-attr]
        assert line.strip() == f"tagger emulator: tcp://127.0.0.1:{port}"
        bench = tmp_path / "lan-bench.yaml"
        bench.write_text(
            "name: lan-bench\ninstruments:\n"
            f"  tagger: {{driver: tcp_time_tagger, resource: 'tcp://127.0.0.1:{port}'}}\n"
        )
        payload_keys, ogs_keys, reports = tmp_path / "pk", tmp_path / "ok", tmp_path / "reports"
        boot = subprocess.run(
            _satqkd("keys", "bootstrap", "--payload-keys", str(payload_keys),
                    "--ogs-keys", str(ogs_keys), "--station", "xinglong"),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert boot.returncode == 0, boot.stderr
        occ_keys = tmp_path / "occ"  # the control centre signs the plans (decision 0016)
        install_tc_key(payload_keys, occ_keys, "payload")
        install_tc_key(ogs_keys, occ_keys, "ogs-xinglong")
        common = ["--broker", mosquitto_url, "--seed", "4", "--housekeeping-period-s", "0.5"]
        async with MessageBus(mosquitto_url, "occ-real-tagger") as occ:
            await occ.subscribe("satqkd/jinan1/+/tm/#")
            await occ.subscribe("satqkd/jinan1/+/evt")
            seen: list[tuple[str, str]] = []

            async def collect() -> None:
                async for message in occ.messages():
                    envelope = decode_envelope(message.payload)
                    node = message.topic.split("/")[2]
                    name = envelope.spec.name
                    if name == "EVENT":
                        name = dct.event_by_id(envelope.fields["event_id"]).name
                    seen.append((node, name))

            collector = asyncio.create_task(collect())
            processes.append(subprocess.Popen(
                _satqkd("payload", "run", str(MISSION), "--keys", str(payload_keys), *common),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))  # fmt: skip
            processes.append(subprocess.Popen(
                _satqkd("ogs", "run", str(STATION), "--mission", str(MISSION),
                        "--keys", str(ogs_keys), "--instruments", str(bench),
                        "--reports", str(reports), *common),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))  # fmt: skip
            async with asyncio.timeout(60):
                while {n for n, name in seen if name == "HOUSEKEEPING"} != {
                    "payload",
                    "ogs-xinglong",
                }:
                    await asyncio.sleep(0.05)
            start = float(int(time.time()) + 3)
            plan = {
                "plan_id": 31, "mission": "jinan1", "station": "xinglong",
                "tle_line1": TLE[0], "tle_line2": TLE[1],
                "aos_unix_s": start - 2, "los_unix_s": start + 6,
                "qkd_start_unix_s": start, "qkd_stop_unix_s": start + 2,
                "repetition_rate_hz": 1e8,
            }  # fmt: skip
            signer = OccSigner(occ_keys)
            for node in ("payload", "ogs-xinglong"):
                await occ.publish(
                    dct.telecommand_topic("jinan1", node),
                    signer.sign(node, "LOAD_PASS_PLAN", **plan),
                )
            report_path = reports / "31" / "report.json"
            deadline = time.monotonic() + 60
            while not report_path.is_file():
                events = [item for item in seen if item[1] != "HOUSEKEEPING"]
                assert time.monotonic() < deadline, f"no report; seen {events}"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a rewrite when the payload's summary arrives
            report = json.loads(report_path.read_text())
            collector.cancel()
        jsonschema.validate(report, SCHEMA)
        assert report["station"] == "xinglong" and report["plan_id"] == 31
        # the tagger streamed a buffer per 0.1 s over the 2 s window through the TT/1 driver;
        # dark counts alone lock no timing: the pass ran to its end and made no key
        progress = [item for item in seen if item == ("ogs-xinglong", "QKD_PROGRESS")]
        assert len(progress) >= 15
        assert ("ogs-xinglong", "PASS_ENDED") in seen
        assert report["quantum"]["pulses_sent"] == 200_000_000  # the payload's summary: 2 s
        assert report["key"]["secret_key_bits"] == 0 and report["key"]["abort_reason"]
        assert report["atp"]["model"] == "measured"  # no simulator truth on real hardware
        assert (reports / "31" / "telemetry.jsonl").is_file()
        # the station's frames from its telemetry alone: one per buffer, its span, and no
        # clock offset where dark counts locked no timing (unknown, never 0)
        frames = pd.read_parquet(reports / "31" / "frames.parquet")
        assert len(frames) >= 15 and list(frames["frame"]) == list(range(len(frames)))
        assert (frames["stop_unix_s"] - frames["start_unix_s"]).round(3).eq(0.1).all()
        assert frames["clock_offset_ps"].isna().all() and "x_sifted_signal" in frames
    finally:
        errors = [_stop(process) for process in reversed(processes)]
        assert all("Traceback" not in error for error in errors), errors
