"""`satqkd tm watch|record|report` over a real Mosquitto, with the telemetry of a simulated
pass (the session's short clear pass), and `satqkd tc send NODE COMMAND` on the line."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import aiomqtt
import pytest

from satqkd.cli import main
from satqkd.telemetry_archive import envelope_of, read_archive
from satqkd_runtime.bus import MessageBus, parse_mqtt_url


def _publish(url: str, records: list[dict], *, retain: bool = False) -> None:
    """Publish recorded messages (their bytes) in order, as the daemons did."""

    async def send() -> None:
        if retain:  # a retained message reaches a subscriber whenever it subscribes
            host, port = parse_mqtt_url(url)
            async with aiomqtt.Client(host, port) as client:
                for record in records:
                    await client.publish(record["topic"], envelope_of(record), qos=1, retain=True)
            return
        async with MessageBus(url, "test-publisher", persistent_session=False) as bus:
            for record in records:
                await bus.publish(record["topic"], envelope_of(record))

    asyncio.run(send())


class Command(threading.Thread):
    """`satqkd ARGS` in a thread (its exit status in .status)."""

    def __init__(self, *args: str) -> None:
        super().__init__(daemon=True)
        self.args = list(args)
        self.status: int | None = None

    def run(self) -> None:
        self.status = main(self.args)


@pytest.fixture
def pass_records(short_clear_pass: tuple[Path, dict]) -> list[dict]:
    return read_archive(short_clear_pass[0] / "telemetry.jsonl")


def _first(records: list[dict], name: str, node: str) -> dict:
    return next(r for r in records if r["name"] == name and r["node"] == node)


def test_watch_prints_decoded_telemetry_and_events(
    mosquitto_url: str, pass_records: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:
    housekeeping = _first(pass_records, "HOUSEKEEPING", "payload")
    started = next(r for r in pass_records if r.get("event") == "NODE_STARTED")
    _publish(mosquitto_url, [housekeeping, started], retain=True)

    assert main(["tm", "watch", "--broker", mosquitto_url, "--count", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    hk = next(line for line in lines if "HOUSEKEEPING" in line)
    # a person reads the node, the packet and every field by name, not an envelope's bytes
    assert " payload HOUSEKEEPING node=payload mode=idle " in hk
    assert "key_bits_stored=0" in hk and "auth_words_remaining=65536" in hk
    event = next(line for line in lines if "NODE_STARTED" in line)
    assert event.endswith(f"ACTIVITY_HI NODE_STARTED: {started['fields']['text']}")

    # --events: events only; --json: the decoded record; NODE: that node only
    args = ["tm", "watch", "payload", "--events", "--json", "--broker", mosquitto_url]
    assert main([*args, "--count", "1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["name"], record["event"], record["node"]) == ("EVENT", "NODE_STARTED", "payload")
    assert record["fields"]["text"] == started["fields"]["text"]
    assert main(["tm", "watch", "ogs-xinglong", "--broker", mosquitto_url,
                 "--duration-s", "0.5"]) == 0  # fmt: skip
    assert capsys.readouterr().out == ""  # the payload's messages are not the station's


def test_record_archives_the_stream_and_the_report_is_built_from_it(
    mosquitto_url: str,
    pass_records: list[dict],
    short_clear_pass: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = tmp_path / "pass.tm.jsonl"
    probe = _first(pass_records, "HOUSEKEEPING", "ogs-xinglong")
    _publish(mosquitto_url, [probe], retain=True)
    count = 1 + len(pass_records)
    recorder = Command("tm", "record", "--out", str(archive), "--broker", mosquitto_url,
                       "--mission", "jinan1", "--count", str(count))  # fmt: skip
    recorder.start()
    deadline = time.monotonic() + 20
    while not (archive.exists() and archive.read_text()):  # subscribed: the probe is in
        assert time.monotonic() < deadline and recorder.is_alive()
        time.sleep(0.05)
    _publish(mosquitto_url, pass_records)
    recorder.join(60)
    assert recorder.status == 0
    assert f"recorded {count} message(s) to {archive}" in capsys.readouterr().err

    archived = read_archive(archive)[1:]
    assert [r["name"] for r in archived] == [r["name"] for r in pass_records]
    assert all(
        r["envelope"] == envelope_of(p).hex() for r, p in zip(archived, pass_records, strict=True)
    )
    times = [r["received_unix_s"] for r in archived]
    assert times == sorted(times) and time.time() - 60 < times[0] <= times[-1] <= time.time()

    # the report builder replays the archive: the same figures as the pass's own report
    out = tmp_path / "report"
    assert main(["tm", "report", str(archive), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    expected = short_clear_pass[1]
    assert report["key"]["secret_key_bits"] == expected["key"]["secret_key_bits"] > 0
    for figure in ("pulses_sent", "detections", "sifted_bits", "qber_by_basis", "by_intensity"):
        assert report["quantum"][figure] == expected["quantum"][figure], figure
    assert report["pass"]["max_elevation_deg"] == expected["pass"]["max_elevation_deg"]
    assert f"{expected['key']['secret_key_bits']} key bits" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["tm", "watch", "ground", "--broker", "mqtt://127.0.0.1:9"], "node: must be 'payload'"),
        (["tm", "watch", "--mission", "Jinan 1", "--broker", "mqtt://127.0.0.1:9"], "mission"),
        (["tm", "watch", "--packet", "KEYS", "--broker", "mqtt://127.0.0.1:9"],
         "--packet KEYS: not a telemetry packet; packets: TC_ACK, HOUSEKEEPING"),
        (["tm", "watch", "--count", "0", "--broker", "mqtt://127.0.0.1:9"], "--count"),
        (["tm", "watch", "--tls-ca", "ca.crt", "--broker", "mqtt://127.0.0.1:9"],
         "--tls-ca: TLS options need an mqtts:// --broker"),
        (["tm", "report", "missing.jsonl", "--out", "x"], "missing.jsonl: cannot read"),
        (["tm", "report", "README.md", "--out", "x"], "README.md:1: not JSON"),
        (["tc", "send", "payload", "--broker", "mqtt://127.0.0.1:9", "--mission", "jinan1",
          "--occ-keys", "k"], "give the node and the command: tc send NODE COMMAND"),
    ],
)  # fmt: skip
def test_tm_mistakes_are_one_line(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(arguments)
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error and message in error, error


def test_tc_send_takes_the_node_before_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # NODE COMMAND field=value, as the contract writes it: parsed, validated, then the key
    args = ["tc", "send", "--broker", "mqtt://127.0.0.1:9", "--mission", "jinan1",
            "--occ-keys", str(tmp_path)]  # fmt: skip
    assert main([*args, "ogs-xinglong", "SOURCE_ENABLE", "enable=true"]) == 2
    assert "SOURCE_ENABLE is a payload command" in capsys.readouterr().err
    assert main([*args, "payload", "NOOP"]) == 2
    assert "no telecommand key for payload" in capsys.readouterr().err


def test_watch_over_tls_reads_with_a_readers_certificate_only(
    secure_mosquitto, pass_records: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:
    certs = secure_mosquitto.certs
    housekeeping = _first(pass_records, "HOUSEKEEPING", "payload")

    def tls(identity: str) -> list[str]:
        return ["--tls-ca", str(certs / "ca.crt"), "--tls-cert", str(certs / f"{identity}.crt"),
                "--tls-key", str(certs / f"{identity}.key")]  # fmt: skip

    watch = ["tm", "watch", "--broker", secure_mosquitto.url, "--mission", "jinan1"]
    watcher = Command(*watch, *tls("recorder-xinglong"), "--count", "1")
    watcher.start()

    async def publish_as_payload() -> None:  # until the watcher has it (it may subscribe late)
        payload_tls = secure_mosquitto.tls("payload")
        async with MessageBus(secure_mosquitto.url, "payload", tls=payload_tls) as bus:
            while watcher.is_alive():
                await bus.publish(housekeeping["topic"], envelope_of(housekeeping))
                await asyncio.sleep(0.1)

    asyncio.run(asyncio.wait_for(publish_as_payload(), 30))
    assert watcher.status == 0
    assert " payload HOUSEKEEPING node=payload " in capsys.readouterr().out

    # a daemon's certificate may not read the others' telemetry: refused before connecting
    assert main([*watch, *tls("payload"), "--count", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "issued to 'payload', which may not read telemetry" in error and "\n" not in error
