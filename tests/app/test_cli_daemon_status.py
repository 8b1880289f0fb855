"""`satqkd ogs run` / `payload run` say, without -v, that they are up and when each pass
starts and ends (issue 12)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from satqkd import cli, daemons

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
STATION = REPO / "configs" / "stations" / "xinglong.yaml"


@pytest.mark.mosquitto
@pytest.mark.timeout(90)
def test_station_daemon_says_it_is_up_without_verbose(mosquitto_url: str, tmp_path: Path):
    payload_keys, ogs_keys, occ_keys = tmp_path / "p", tmp_path / "o", tmp_path / "occ"
    boot = ["keys", "bootstrap", "--payload-keys", str(payload_keys), "--ogs-keys", str(ogs_keys)]
    assert cli.main([*boot, "--station", "xinglong"]) == 0
    tc = ["keys", "telecommand", "--node", "ogs-xinglong", "--node-keys", str(ogs_keys)]
    assert cli.main([*tc, "--occ-keys", str(occ_keys)]) == 0
    command = [
        sys.executable, "-m", "satqkd.cli", "ogs", "run", str(STATION), "--mission",
        str(MISSION), "--keys", str(ogs_keys), "--broker", mosquitto_url, "--reports",
        str(tmp_path / "reports"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and "station xinglong up" not in line:
            line = process.stderr.readline()
            assert line or process.poll() is None, "daemon ended before saying it was up"
        assert "station xinglong up for jinan1" in line and mosquitto_url in line
        assert "keys in" in line and "tagger" in line
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_one_status_line_when_a_pass_starts_and_when_it_ends(caplog, monkeypatch) -> None:
    result = SimpleNamespace(finished=False, detections=0, key_bits=0, abort_reason=None)
    station = SimpleNamespace(sessions={}, results={})
    monkeypatch.setattr(daemons, "STATUS_PERIOD_S", 0.01)
    caplog.set_level(logging.INFO, logger="satqkd.status")
    watcher = asyncio.create_task(daemons._watch_station_passes(station))
    try:
        station.sessions[8] = object()
        await asyncio.sleep(0.05)
        del station.sessions[8]
        result.finished, result.detections, result.key_bits = True, 1234, 98336
        station.results[8] = result
        await asyncio.sleep(0.05)
        station.results[9] = SimpleNamespace(
            finished=True, detections=5, key_bits=0, abort_reason="qber 0.251 above 0.11 threshold"
        )
        await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "satqkd.status"]
    assert lines == [
        "pass 8 started (plan loaded, tracking until LOS)",
        "pass 8 ended: 1234 detections, 98336 key bits stored",
        "pass 9 ended: 5 detections, no key (qber 0.251 above 0.11 threshold)",
    ]


async def test_status_watchers_remember_no_more_than_the_daemons_do(caplog, monkeypatch) -> None:
    """A daemon running for months: 200 passes come and go through histories the daemons bound
    (16 results at the station, 64 outcomes at the payload); each pass is announced once, and
    the watchers' own memory of what they announced stays within those bounds."""
    monkeypatch.setattr(daemons, "STATUS_PERIOD_S", 0.0)
    caplog.set_level(logging.INFO, logger="satqkd.status")
    station = SimpleNamespace(sessions={}, results={})
    payload = SimpleNamespace(emissions={}, ended={})
    watchers = [
        asyncio.create_task(daemons._watch_station_passes(station)),
        asyncio.create_task(daemons._watch_payload_passes(payload)),
    ]
    try:
        for plan_id in range(1, 201):
            station.sessions[plan_id] = object()
            payload.emissions[("xinglong", plan_id)] = object()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            del station.sessions[plan_id], payload.emissions[("xinglong", plan_id)]
            station.results[plan_id] = SimpleNamespace(
                finished=True, detections=10, key_bits=plan_id, abort_reason=None
            )
            payload.ended[("xinglong", plan_id)] = SimpleNamespace(
                key_bits=plan_id, abort_reason=None
            )
            while len(station.results) > 16:
                del station.results[next(iter(station.results))]
            while len(payload.ended) > 64:
                del payload.ended[next(iter(payload.ended))]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        remembered = [
            len(w.get_coro().cr_frame.f_locals[name])
            for w in watchers
            for name in ("started", "ended")
        ]
    finally:
        for watcher in watchers:
            watcher.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "satqkd.status"]
    assert len(lines) == 4 * 200 and len(set(lines)) == 4 * 200  # each pass: start, end, twice
    assert "pass 200 for xinglong ended: 200 key bits stored" in lines
    assert max(remembered[:2]) <= 16 and max(remembered[2:]) <= 64, remembered
