"""Each daemon runs on its own against a real Mosquitto broker: it is commanded (signed
telecommands, decision 0016), reports telemetry and events, rejects bad input with counted
events, and shuts down on command."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_runtime.bus import MessageBus
from tests.tc_signing import OccSigner

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
STATION = REPO / "configs" / "stations" / "xinglong.yaml"

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]


def _satqkd(*args: str) -> list[str]:
    return [sys.executable, "-m", "satqkd.cli", *args]


async def _collect(bus: MessageBus, until, timeout_s: float = 30.0) -> list:
    seen = []

    async def loop() -> None:
        async for message in bus.messages():
            if message.topic.endswith("/tc"):
                continue  # our own telecommands (some deliberately garbage)
            seen.append((message.topic, decode_envelope(message.payload)))
            if until(seen):
                return

    await asyncio.wait_for(loop(), timeout_s)
    return seen


def _plan(station: str) -> dict:
    return {
        "plan_id": 4,
        "mission": "jinan1",
        "station": station,
        "tle_line1": "1 99999U          26335.00000000  .00000000  00000-0  00000-0 0    05",
        "tle_line2": "2 99999  97.4000 100.0000 0001000   0.0000   0.0000 15.21000000    09",
        "aos_unix_s": 4.0e9,
        "los_unix_s": 4.0e9 + 600,
        "qkd_start_unix_s": 4.0e9 + 10,
        "qkd_stop_unix_s": 4.0e9 + 500,
        "repetition_rate_hz": 1e8,
    }


@pytest.mark.parametrize("node", ["ogs-xinglong", "payload"])
async def test_daemon_alone_is_commanded_and_counts_bad_input(
    node: str, mosquitto_url: str, tmp_path: Path
) -> None:
    payload_keys, ogs_keys = tmp_path / "payload-keys", tmp_path / "ogs-keys"
    boot = subprocess.run(
        _satqkd(
            "keys",
            "bootstrap",
            "--payload-keys",
            str(payload_keys),
            "--ogs-keys",
            str(ogs_keys),
            "--station",
            "xinglong",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert boot.returncode == 0, boot.stderr
    occ_keys = tmp_path / "occ-keys"
    node_keys = payload_keys if node == "payload" else ogs_keys
    install = subprocess.run(
        _satqkd("keys", "telecommand", "--node", node, "--node-keys", str(node_keys),
                "--occ-keys", str(occ_keys)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    signer = OccSigner(occ_keys)
    if node == "payload":
        cmd = _satqkd("payload", "run", str(MISSION), "--keys", str(payload_keys))
        qkd_in = dct.qkd_topic("jinan1", "xinglong", "up")
    else:
        cmd = _satqkd(
            "ogs", "run", str(STATION), "--mission", str(MISSION), "--keys", str(ogs_keys)
        )
        qkd_in = dct.qkd_topic("jinan1", "xinglong", "down")
    cmd += ["--broker", mosquitto_url, "--seed", "5", "--housekeeping-period-s", "0.2"]
    tc_topic = dct.telecommand_topic("jinan1", node)
    async with MessageBus(mosquitto_url, f"occ-test-{node}") as occ:
        await occ.subscribe(f"satqkd/jinan1/{node}/#")
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # the daemon is up once its first housekeeping packet arrives
            await _collect(occ, lambda seen: any(e.spec.name == "HOUSEKEEPING" for _, e in seen))
            await occ.publish(tc_topic, signer.sign(node, "NOOP"))  # seq 1
            await occ.publish(tc_topic, b"\x00garbage")  # not authenticated: a security count
            await occ.publish(tc_topic, signer.sign(node, "LOAD_PASS_PLAN", **_plan("atlantis")))
            forged = encode_envelope(
                dct.DICTIONARY["ABORT"], 0, {"plan_id": 1, "reason": "x"}, tag=b"\x00" * 8
            )
            await occ.publish(qkd_in, forged)
            await occ.publish(qkd_in, b"SQ\x01")

            wanted_events = {
                "TC_REJECTED",
                "TC_AUTH_FAILURE",
                "AUTH_FAILURE",
                "QKD_MESSAGE_REJECTED",
            }

            def event_names(seen: list) -> set[str]:
                return {
                    dct.event_by_id(e.fields["event_id"]).name
                    for _, e in seen
                    if e.spec.name == "EVENT"
                }

            def done(seen: list) -> bool:
                # telemetry and events are separate topics, with no order between them
                hk = [e.fields for _, e in seen if e.spec.name == "HOUSEKEEPING"]
                counted = bool(hk) and (
                    hk[-1]["tc_rejected"],
                    hk[-1]["tc_auth_failures"],
                    hk[-1]["qkd_rejected"],
                ) == (1, 1, 2)
                return counted and wanted_events <= event_names(seen)

            seen = await _collect(occ, done)
            acks = [e.fields for _, e in seen if e.spec.name == "TC_ACK"]
            assert {(a["command_seq"], a["accepted"]) for a in acks} >= {(1, True), (2, False)}
            rejected_plan = next(a for a in acks if a["command_seq"] == 2)
            assert "atlantis" in rejected_plan["reason"]
            assert wanted_events <= event_names(seen)
            hk = [e.fields for _, e in seen if e.spec.name == "HOUSEKEEPING"][-1]
            assert hk["tc_accepted"] == 1 and hk["node"] == node
            await occ.publish(tc_topic, signer.sign(node, "SHUTDOWN"))
            returncode = await asyncio.to_thread(process.wait, 30)
            assert returncode == 0, process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_daemon_without_preshared_key_fails_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        _satqkd(
            "ogs",
            "run",
            str(STATION),
            "--mission",
            str(MISSION),
            "--keys",
            str(tmp_path),
            "--broker",
            "mqtt://127.0.0.1:9",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no pre-shared authentication key" in result.stderr
