"""The secure broker (docs/broker.md): Mosquitto as `satqkd broker config` sets it up (TLS only,
client certificates, CN = username = client id, the generated ACL), with the certificates of
`satqkd broker certs`, in front of a real payload daemon.

What it shows: a client without a valid certificate does not get in; a station's identity
cannot command the payload, even with a validly signed telecommand in hand (the broker drops
the publish: the payload neither executes nor counts it); the payload's identity cannot speak
for a station; daemons with their own certificates run as usual over mqtts://. Also: the files
that `satqkd broker certs|config` write, and the shipped example being what they write today.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from firmware_shims.source_sequencer import SourceSequencer
from satqkd.broker_security import (
    acl_grants,
    common_name,
    config_command,
    render_acl,
    render_mosquitto_conf,
    write_certificates,
)
from satqkd.cli import main as satqkd_main
from satqkd.config import MissionConfig, load_model
from satqkd.pass_recorder import PassRecorder
from satqkd.wiring import payload_settings
from satqkd_core import dictionary as dct
from satqkd_core.codec import CodecError, Envelope, decode_envelope, encode_envelope
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import RealClock
from sim_backends.instruments import SimPulsedSource
from tests.seeded_entropy import seeded_entropy
from tests.tc_signing import OccSigner, install_tc_key

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
STATION = REPO / "configs" / "stations" / "xinglong.yaml"
PAYLOAD_TC = dct.telecommand_topic("jinan1", "payload")
SecureMosquitto = Any  # tests/conftest.py's SecureMosquitto (conftest is not importable)

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]


def _keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Get: (payload key root, station key store, OCC keys): a pre-shared key between the
    payload and xinglong (`satqkd keys bootstrap`) and a telecommand key for each node."""
    payload_keys, ogs_keys, occ_keys = (tmp_path / n for n in ("payload", "ogs", "occ"))
    assert satqkd_main(["keys", "bootstrap", "--payload-keys", str(payload_keys),
                        "--ogs-keys", str(ogs_keys), "--station", "xinglong"]) == 0  # fmt: skip
    install_tc_key(ogs_keys, occ_keys, "ogs-xinglong")
    return payload_keys, ogs_keys, occ_keys


@dataclass
class Payload:
    """A payload daemon in-process on the secure broker, watched by the OCC's connection."""

    daemon: PayloadDaemon
    source: SimPulsedSource
    occ: MessageBus
    signer: OccSigner
    seen: list[tuple[str, Envelope]] = field(default_factory=list)

    async def wait_for(self, accept: Callable[[Envelope], bool], timeout_s: float = 5.0) -> Any:
        """Get: the fields of the first telemetry packet or event `accept` takes."""
        async with asyncio.timeout(timeout_s):
            while True:
                for _, envelope in self.seen:
                    if accept(envelope):
                        return envelope.fields
                await asyncio.sleep(0.01)

    async def command(self, name: str, **fields: Any) -> dict[str, Any]:
        """Control: send a signed telecommand as the OCC; get its TC_ACK."""
        seq, data = self.signer.signed("payload", name, **fields)
        await self.occ.publish(PAYLOAD_TC, data)
        return await self.wait_for(
            lambda e: e.spec.name == "TC_ACK" and e.fields["command_seq"] == seq
        )

    def acks_of(self, seqs: set[int]) -> list[dict[str, Any]]:
        """Get: the TC_ACKs seen of telecommands with these seqs."""
        acks = [e.fields for _, e in self.seen if e.spec.name == "TC_ACK"]
        return [a for a in acks if a["command_seq"] in seqs]


@pytest.fixture
async def payload(secure_mosquitto: SecureMosquitto, tmp_path: Path) -> AsyncIterator[Payload]:
    payload_keys, _, occ_keys = _keys(tmp_path)
    verifier = install_tc_key(payload_keys, occ_keys, "payload")
    mission = load_model(MissionConfig, MISSION)
    clock = RealClock()
    sequencer = SourceSequencer(99, tuple(mission.source.probabilities), 0.5)
    source = SimPulsedSource("source", sequencer.pattern, clock)
    await source.connect()
    settings = dataclasses.replace(payload_settings(mission), housekeeping_period_s=0.1)
    url = secure_mosquitto.url
    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(
            MessageBus(url, "satqkd-payload-jinan1", tls=secure_mosquitto.tls("payload"))
        )
        occ = await stack.enter_async_context(
            MessageBus(url, "occ-console", tls=secure_mosquitto.tls("occ"))
        )
        await occ.subscribe("satqkd/jinan1/payload/tm/#")
        await occ.subscribe("satqkd/jinan1/payload/evt")
        daemon = PayloadDaemon(
            settings, bus, clock, source, payload_keys, entropy=await seeded_entropy(7),
            sequencer=sequencer, tc_verifier=verifier,
        )  # fmt: skip
        rig = Payload(daemon, source, occ, OccSigner(occ_keys))

        async def collect() -> None:
            async for message in occ.messages():
                rig.seen.append((message.topic, decode_envelope(message.payload)))

        tasks = [asyncio.create_task(daemon.run()), asyncio.create_task(collect())]
        try:
            await rig.wait_for(lambda e: e.spec.name == "HOUSEKEEPING")
            yield rig
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await source.close()


def _packet(kind: int, body: bytes) -> bytes:
    """Get: an MQTT control packet: its type byte, remaining length (varint) and body."""
    length, size = b"", len(body)
    while True:
        size, digit = divmod(size, 128)
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            return bytes([kind]) + length + body


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _raw_client(port: int, context: ssl.SSLContext | None, publish: bool = True) -> bytes:
    """Get: what the broker answers a raw MQTT 3.1.1 client (TLS with `context`, or plain TCP
    if None) that sends CONNECT and, without waiting, PUBLISH of an unsigned SOURCE_ENABLE to
    the payload: b"" if the broker closed the connection instead of answering."""
    unsigned = encode_envelope(dct.DICTIONARY["SOURCE_ENABLE"], 1, {"enable": True})
    data = _packet(0x10, _string(b"MQTT") + b"\x04\x02\x00\x0f" + _string(b"intruder"))
    if publish:
        data += _packet(0x30, _string(PAYLOAD_TC.encode()) + unsigned)
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw:
        try:
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
            sock.sendall(data)
            return sock.recv(4)
        except (ssl.SSLError, ConnectionError):
            return b""


async def test_a_client_without_a_valid_certificate_is_not_let_in(
    payload: Payload, secure_mosquitto: SecureMosquitto, tmp_path: Path
) -> None:
    certs, port = secure_mosquitto.certs, secure_mosquitto.port
    valid = secure_mosquitto.tls("recorder-xinglong").ssl_context()
    accepted = b"\x20\x02\x00\x00"  # CONNACK, connection accepted
    assert await asyncio.to_thread(_raw_client, port, valid, False) == accepted  # the probe works
    ca_only = ssl.create_default_context(cafile=certs / "ca.crt")
    forged = tmp_path / "forged"
    write_certificates(forged, "jinan1", ["xinglong"])  # an 'occ' certificate of another CA
    with_forged = ssl.create_default_context(cafile=certs / "ca.crt")
    with_forged.load_cert_chain(forged / "occ.crt", forged / "occ.key")
    for what, context in (
        ("plain MQTT on the TLS port", None),
        ("TLS without a client certificate", ca_only),
        ("a certificate the broker's CA did not sign", with_forged),
    ):
        assert await asyncio.to_thread(_raw_client, port, context) == b"", what
    # the unsigned SOURCE_ENABLEs never arrived: neither executed nor counted as rejected
    assert (await payload.command("NOOP"))["accepted"]
    counters = payload.daemon.runtime.counters
    assert (counters.tc_accepted, counters.tc_rejected) == (1, 0)
    assert payload.source.history == []


async def test_a_station_cannot_command_the_payload(
    payload: Payload, secure_mosquitto: SecureMosquitto
) -> None:
    # what an intruder holding the station's certificate would send: the laser on and the
    # counters zeroed, validly signed (as if captured) and unsigned; under the OCC's client id
    attack = [payload.signer.signed("payload", "SOURCE_ENABLE", enable=True),
              payload.signer.signed("payload", "RESET_COUNTERS"),
              (0, encode_envelope(dct.DICTIONARY["RESET_COUNTERS"], 0, {}))]  # fmt: skip
    async with MessageBus(secure_mosquitto.url, "occ-console",
                          tls=secure_mosquitto.tls("ogs-xinglong")) as station:  # fmt: skip
        for _, data in attack:
            await station.publish(PAYLOAD_TC, data)
    ack = await payload.command("NOOP")  # reaches the payload after anything sent before it
    assert ack["accepted"], ack["reason"]
    assert not payload.source.enabled and payload.source.history == []
    counters = payload.daemon.runtime.counters
    assert (counters.tc_accepted, counters.tc_rejected) == (1, 0)
    assert payload.acks_of({seq for seq, _ in attack}) == []
    housekeeping = await payload.wait_for(
        lambda e: e.spec.name == "HOUSEKEEPING" and e.fields["tc_accepted"] == 1
    )
    assert housekeeping["tc_rejected"] == 0
    # the station's connection named itself 'occ-console' and took no one's session
    assert payload.occ.stats.disconnects == 0 and payload.daemon.bus.stats.disconnects == 0
    # the same command from the OCC does reach it
    assert (await payload.command("SOURCE_ENABLE", enable=True))["accepted"]
    assert payload.source.enabled


async def test_the_payload_cannot_speak_for_a_station(secure_mosquitto: SecureMosquitto) -> None:
    url, tls = secure_mosquitto.url, secure_mosquitto.tls
    up = dct.qkd_topic("jinan1", "xinglong", "up")
    station_tm = dct.telemetry_topic("jinan1", "ogs-xinglong", "HOUSEKEEPING")
    station_tc = dct.telecommand_topic("jinan1", "ogs-xinglong")
    async with (
        MessageBus(url, "p", tls=tls("payload")) as sat,
        MessageBus(url, "s", tls=tls("ogs-xinglong")) as station,
        MessageBus(url, "r", tls=tls("recorder-xinglong")) as recorder,
    ):
        await sat.subscribe(up)  # the payload reads its uplink ...
        await recorder.subscribe("satqkd/jinan1/+/tm/#")
        await station.subscribe(station_tc)
        for topic in (up, station_tm, station_tc, dct.event_topic("jinan1", "ogs-xinglong")):
            await sat.publish(topic, b"forged by the payload")  # ... but cannot write it
        await station.publish(up, b"from the station")
        await station.publish(station_tm, b"from the station")
        for bus, topic in ((sat, up), (recorder, station_tm)):
            first = await asyncio.wait_for(anext(bus.messages()), 5.0)
            assert (first.topic, first.payload) == (topic, b"from the station")
        await asyncio.sleep(0.2)
        assert station.stats.received_messages == 0  # nor command the station


def test_the_acl_grants_what_the_recorders_subscribe_to() -> None:
    grants = {grant.identity: grant for grant in acl_grants("jinan1", ["xinglong"])}
    recorder_topics = PassRecorder(None, "jinan1").topics  # type: ignore[arg-type]
    assert set(recorder_topics) == set(grants["recorder-xinglong"].read)
    assert grants["recorder-xinglong"].write == ()
    assert set(grants["occ"].write) == {
        PAYLOAD_TC,
        "satqkd/jinan1/ogs-xinglong/tc",
        "satqkd/jinan1/occ/tm/+",
        "satqkd/jinan1/occ/evt",
    }
    assert set(grants["monitor"].read) == set(recorder_topics)
    assert grants["monitor"].write == ()
    others = [grant for name, grant in grants.items() if name != "occ"]
    assert not any(topic.endswith("/tc") for grant in others for topic in grant.write)


# ---- daemons as processes, over mqtts://


def _satqkd(*args: str) -> list[str]:
    return [sys.executable, "-m", "satqkd.cli", *args]


def _tls_options(certs: Path, identity: str, prefix: str = "--tls") -> list[str]:
    return [f"{prefix}-cert", str(certs / f"{identity}.crt"),
            f"{prefix}-key", str(certs / f"{identity}.key")]  # fmt: skip


async def test_daemons_with_their_own_certificates_run_over_mqtts(
    secure_mosquitto: SecureMosquitto, tmp_path: Path
) -> None:
    payload_keys, ogs_keys, occ_keys = _keys(tmp_path)
    install_tc_key(payload_keys, occ_keys, "payload")
    certs, url = secure_mosquitto.certs, secure_mosquitto.url
    common = ["--broker", url, "--tls-ca", str(certs / "ca.crt"), "--seed", "3",
              "--housekeeping-period-s", "0.2"]  # fmt: skip
    commands = {
        "payload": _satqkd("payload", "run", str(MISSION), "--keys", str(payload_keys), *common,
                           *_tls_options(certs, "payload")),
        "ogs-xinglong": _satqkd("ogs", "run", str(STATION), "--mission", str(MISSION),
                                "--keys", str(ogs_keys), "--reports", str(tmp_path / "reports"),
                                *common, *_tls_options(certs, "ogs-xinglong"),
                                *_tls_options(certs, "recorder-xinglong", "--tls-reports")),
    }  # fmt: skip
    signer = OccSigner(occ_keys)
    processes: dict[str, subprocess.Popen[str]] = {}
    async with MessageBus(url, "occ", tls=secure_mosquitto.tls("occ")) as occ:
        await occ.subscribe("satqkd/jinan1/+/tm/#")
        try:
            for node, command in commands.items():
                processes[node] = subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            sent: dict[str, int] = {}
            answered: dict[str, bool] = {}
            async with asyncio.timeout(30):
                async for message in occ.messages():
                    try:
                        envelope = decode_envelope(message.payload)
                    except CodecError:
                        continue
                    node = message.topic.split("/")[2]
                    if envelope.spec.name == "HOUSEKEEPING" and node not in sent:
                        sent[node], data = signer.signed(node, "NOOP")  # the node is up
                        await occ.publish(dct.telecommand_topic("jinan1", node), data)
                    elif envelope.spec.name == "TC_ACK" and envelope.fields[
                        "command_seq"
                    ] == sent.get(node):
                        answered[node] = envelope.fields["accepted"]
                    if len(answered) == len(commands):
                        break
            assert answered == {"payload": True, "ogs-xinglong": True}
            for node in commands:
                _, data = signer.signed(node, "SHUTDOWN")
                await occ.publish(dct.telecommand_topic("jinan1", node), data)
            for node, process in processes.items():
                assert await asyncio.to_thread(process.wait, 20) == 0, process.stderr
                stderr = process.stderr.read() if process.stderr else ""
                # the station's recorder has its own identity: no session taken back and forth
                assert "reconnected" not in stderr, f"{node}: {stderr}"
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()


def test_a_daemon_given_the_wrong_tls_options_fails_in_one_line(
    secure_mosquitto: SecureMosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload_keys, ogs_keys, occ_keys = _keys(tmp_path)
    install_tc_key(payload_keys, occ_keys, "payload")
    certs, url = secure_mosquitto.certs, secure_mosquitto.url
    ca = ["--tls-ca", str(certs / "ca.crt")]
    payload = ["payload", "run", str(MISSION), "--keys", str(payload_keys)]
    ogs = ["ogs", "run", str(STATION), "--mission", str(MISSION), "--keys", str(ogs_keys)]
    cases = {
        "MQTT over TLS needs --tls-ca, --tls-cert, --tls-key": [*payload, "--broker", url],
        "TLS options need an mqtts:// --broker": [
            *payload, "--broker", "mqtt://127.0.0.1:1", *ca, *_tls_options(certs, "payload")
        ],
        "issued to 'occ', but this connection is 'payload'": [
            *payload, "--broker", url, *ca, *_tls_options(certs, "occ")
        ],
        "needs --tls-reports-cert, --tls-reports-key": [
            *ogs, "--broker", url, *ca, *_tls_options(certs, "ogs-xinglong")
        ],
        "issued to 'ogs-xinglong', but this connection is 'recorder-xinglong'": [
            *ogs, "--broker", url, *ca, *_tls_options(certs, "ogs-xinglong"),
            *_tls_options(certs, "ogs-xinglong", "--tls-reports"),
        ],
    }  # fmt: skip
    capsys.readouterr()
    for expected, args in cases.items():
        assert satqkd_main(args) == 2, expected
        errors = [line for line in capsys.readouterr().err.splitlines() if "WARNING" not in line]
        assert len(errors) == 1 and expected in errors[0], errors


# ---- `satqkd broker certs` and `satqkd broker config`


def test_broker_certs_writes_owner_only_keys_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    stations = ["--station", "xinglong", "--station", "nanshan"]
    hosts = ["--host", "broker.example.org", "--host", "10.1.2.3"]
    args = ["broker", "certs", str(out), "--mission", "jinan1", *stations, *hosts]
    assert satqkd_main(args) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    identities = ["payload", "ogs-xinglong", "recorder-xinglong", "ogs-nanshan",
                  "recorder-nanshan", "occ"]  # fmt: skip
    for stem in ["ca", "server", *identities]:
        assert stat.S_IMODE((out / f"{stem}.key").stat().st_mode) == 0o600
    for identity in identities:
        certificate = x509.load_pem_x509_certificate((out / f"{identity}.crt").read_bytes())
        assert common_name(certificate) == identity
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in names} == {
        "localhost", "127.0.0.1", "broker.example.org", "10.1.2.3"
    }  # fmt: skip
    ca_before = (out / "ca.crt").read_bytes()
    result = subprocess.run(_satqkd(*args), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "already exists: give --force" in result.stderr
    assert (out / "ca.crt").read_bytes() == ca_before
    assert satqkd_main([*args, "--force"]) == 0
    assert (out / "ca.crt").read_bytes() != ca_before


def test_the_shipped_broker_config_is_what_the_generator_writes_today() -> None:
    shipped = REPO / "configs" / "broker"
    options = {
        "port": 8883,
        "certs_dir": "/etc/mosquitto/satqkd/certs",
        "acl_file": "/etc/mosquitto/satqkd/acl",
    }
    command = config_command("configs/broker", "jinan1", ["xinglong"], **options)
    conf = (shipped / "mosquitto.conf").read_text()
    assert f"generated by `{command}`" in conf
    assert conf == render_mosquitto_conf("jinan1", ["xinglong"], command=command, **options)
    assert (shipped / "acl").read_text() == render_acl("jinan1", ["xinglong"], command)
