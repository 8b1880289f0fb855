"""Attacks on the telecommand link of a running payload daemon over Mosquitto: an unsigned
SOURCE_ENABLE, a forged one, one signed with another node's key, a replayed capture and a
tampered capture are all refused and the source stays as the control centre left it;
`tc_auth_failures` grows and survives an authenticated RESET_COUNTERS, while an unsigned
RESET_COUNTERS resets nothing. Also the `satqkd keys telecommand` and `satqkd tc send` command
lines, and a node without a telecommand key refusing to start."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from firmware_shims.source_sequencer import SourceSequencer
from satqkd.cli import main
from satqkd.config import MissionConfig, load_model
from satqkd.wiring import payload_settings
from satqkd_core import dictionary as dct
from satqkd_core.codec import Envelope, decode_envelope, encode_envelope
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import RealClock
from satqkd_runtime.telecommand_auth import TRAILER_BYTES, TRAILER_FORMAT, TelecommandVerifier
from sim_backends.entropy import SeededEntropySource
from sim_backends.instruments import SimPulsedSource
from tests.tc_signing import OccSigner, install_tc_key

REPO = Path(__file__).resolve().parents[2]
MISSION = REPO / "configs" / "missions" / "jinan1.yaml"
TC_TOPIC = dct.telecommand_topic("jinan1", "payload")


@dataclasses.dataclass
class Node:
    """A payload daemon under attack, the control centre and the attacker's view of the bus."""

    daemon: PayloadDaemon
    source: SimPulsedSource
    occ: OccSigner
    occ_keys: Path
    attacker: MessageBus
    seen: list[Envelope]
    task: asyncio.Task[None]  # the daemon's run()

    def events(self, name: str) -> list[str]:
        return [
            e.fields["text"]
            for e in self.seen
            if e.spec.name == "EVENT" and dct.event_by_id(e.fields["event_id"]).name == name
        ]

    def acks(self, seq: int) -> list[dict]:
        acks = [e.fields for e in self.seen if e.spec.name == "TC_ACK"]
        return [ack for ack in acks if ack["command_seq"] == seq]

    def housekeeping(self) -> dict | None:
        packets = [e.fields for e in self.seen if e.spec.name == "HOUSEKEEPING"]
        return packets[-1] if packets else None

    async def until(self, condition: Callable[[], object], what: str) -> None:
        try:
            async with asyncio.timeout(15.0):
                while not condition():
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"timed out waiting: {what}") from None

    async def send(self, data: bytes) -> dict:
        """Publish a telecommand as the attacker (anyone on the broker) and get its TC_ACK."""
        seq = decode_envelope(data).seq
        count = len(self.acks(seq))
        await self.attacker.publish(TC_TOPIC, data)
        await self.until(lambda: len(self.acks(seq)) > count, f"TC_ACK of seq {seq}")
        return self.acks(seq)[-1]


@pytest.fixture
async def node(mosquitto_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    key_root, occ_keys = tmp_path / "payload-keys", tmp_path / "occ-keys"
    # installed through the command line, as an operator would
    assert main(["keys", "telecommand", "--node", "payload", "--node-keys", str(key_root),
                 "--occ-keys", str(occ_keys)]) == 0  # fmt: skip
    clock = RealClock()
    mission = load_model(MissionConfig, MISSION)
    sequencer = SourceSequencer(None, mission.source.probabilities, 0.5)
    source = SimPulsedSource("source", sequencer.pattern, clock)
    await source.connect()
    entropy = SeededEntropySource("entropy", 7)
    await entropy.connect()
    settings = dataclasses.replace(payload_settings(mission), housekeeping_period_s=0.1)
    async with (
        MessageBus(mosquitto_url, "payload-under-attack") as bus,
        MessageBus(mosquitto_url, "anyone-on-the-broker") as attacker,
    ):
        await attacker.subscribe("satqkd/jinan1/payload/#")
        daemon = PayloadDaemon(
            settings, bus, clock, source, key_root, entropy=entropy, sequencer=sequencer,
            tc_verifier=TelecommandVerifier.load(key_root, "payload"),
        )  # fmt: skip
        seen: list[Envelope] = []

        async def collect() -> None:
            async for message in attacker.messages():
                if not message.topic.endswith("/tc"):
                    seen.append(decode_envelope(message.payload))

        tasks = [asyncio.create_task(daemon.run()), asyncio.create_task(collect())]
        node = Node(daemon, source, OccSigner(occ_keys), occ_keys, attacker, seen, tasks[0])
        try:
            await node.until(lambda: node.events("NODE_STARTED"), "the daemon starts")
            yield node
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _forged(seq: int, enable: bool, mac: bytes, key_id: int = 1) -> bytes:
    spec = dct.DICTIONARY["SOURCE_ENABLE"]
    trailer = bytes((TRAILER_FORMAT,)) + key_id.to_bytes(2, "big") + mac
    return encode_envelope(spec, seq, {"enable": enable}, tag=trailer)


@pytest.mark.mosquitto
@pytest.mark.timeout(120)
async def test_unsigned_forged_and_replayed_telecommands_are_refused(
    node: Node, tmp_path: Path
) -> None:
    source = node.source
    # 1. no trailer, a made-up MAC, and a MAC under a key the payload does not hold
    unsigned = encode_envelope(dct.DICTIONARY["SOURCE_ENABLE"], 1, {"enable": True})
    stranger = OccSigner(tmp_path / "stranger-occ")
    install_tc_key(tmp_path / "stranger-node", tmp_path / "stranger-occ", "payload")
    attempts = {
        "no security trailer": unsigned,
        "bad MAC": _forged(2, True, secrets.token_bytes(16)),
        "bad MAC (key id 1)": stranger.sign("payload", "SOURCE_ENABLE", enable=True),
    }
    for what, data in attempts.items():
        ack = await node.send(data)
        assert not ack["accepted"] and what in ack["reason"], ack
    assert not source.enabled and source.history == []
    assert node.daemon.runtime.counters.tc_auth_failures == 3

    # 2. the control centre enables, then disables, the source: the attacker captures both
    enable = node.occ.sign("payload", "SOURCE_ENABLE", enable=True)
    assert (await node.send(enable))["accepted"]
    assert source.enabled
    disable = node.occ.sign("payload", "SOURCE_ENABLE", enable=False)
    assert (await node.send(disable))["accepted"]
    assert not source.enabled

    # 3. a replay of the captured enable, and the captured disable turned into an enable
    replay = await node.send(enable)
    assert not replay["accepted"] and "not above the last accepted seq" in replay["reason"]
    tampered = bytearray(disable)
    tampered[-TRAILER_BYTES - 2] ^= 0x01  # the body's one byte: enable False -> True
    assert decode_envelope(bytes(tampered)).fields["enable"] is True
    assert "bad MAC" in (await node.send(bytes(tampered)))["reason"]
    assert not source.enabled
    assert [on for _, on in source.history] == [True, False]  # the control centre's two only

    # 4. an unsigned RESET_COUNTERS resets nothing
    failures = node.daemon.runtime.counters.tc_auth_failures
    assert failures == 5
    counters = node.daemon.runtime.counters
    assert counters.tc_accepted == 2
    bogus = encode_envelope(dct.DICTIONARY["RESET_COUNTERS"], 99, {})
    assert not (await node.send(bogus))["accepted"]
    assert counters.tc_accepted == 2 and counters.tc_auth_failures == failures + 1

    # 5. an authenticated RESET_COUNTERS (through `satqkd tc send`) keeps the security counter
    status = await asyncio.to_thread(
        main,
        ["tc", "send", "--broker", node.attacker.url, "--mission", "jinan1", "--node", "payload",
         "--occ-keys", str(node.occ_keys), "RESET_COUNTERS"],
    )  # fmt: skip
    assert status == 0
    assert counters.tc_accepted == 1 and counters.tc_rejected == 0
    assert counters.tc_auth_failures == failures + 1
    await node.until(
        lambda: (
            (hk := node.housekeeping()) is not None
            and (hk["tc_accepted"], hk["tc_auth_failures"]) == (1, failures + 1)
        ),
        "housekeeping after the reset",
    )

    # every refusal was reported by a TC_AUTH_FAILURE event saying what failed, no key in it
    texts = node.events("TC_AUTH_FAILURE")
    assert len(texts) == failures + 1
    assert any("SOURCE_ENABLE seq 1 refused" in t and "no security trailer" in t for t in texts)
    key_hex = node.occ.signer("payload").key.key.hex()
    assert not any(key_hex in t for t in texts) and not node.events("TC_REJECTED")


@pytest.mark.mosquitto
@pytest.mark.timeout(120)
async def test_tc_send_prints_the_nodes_answer(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["tc", "send", "--broker", node.attacker.url, "--mission", "jinan1",
              "--node", "payload", "--occ-keys", str(node.occ_keys)]  # fmt: skip
    assert await asyncio.to_thread(main, [*common, "source_enable", "enable=on"]) == 0
    assert capsys.readouterr().out.strip() == "SOURCE_ENABLE (seq 1) to payload: accepted"
    assert node.source.enabled
    plan = ["plan_id=3", "mission=jinan1", "station=atlantis", "tle_line1=1", "tle_line2=2",
            "aos_unix_s=4e9", "los_unix_s=4.1e9", "qkd_start_unix_s=4e9",
            "qkd_stop_unix_s=4.05e9", "repetition_rate_hz=1e8"]  # fmt: skip
    assert await asyncio.to_thread(main, [*common, "LOAD_PASS_PLAN", *plan]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("LOAD_PASS_PLAN (seq 2) to payload: rejected: ") and "atlantis" in out
    assert await asyncio.to_thread(main, [*common, "SHUTDOWN"]) == 0
    await asyncio.wait_for(node.task, 15.0)  # the daemon stops (run() returns)
    assert not node.source.enabled  # and ends with its source safe


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["SOURCE_ENABLE", "enabel=true"],
            "SOURCE_ENABLE has no field 'enabel'; SOURCE_ENABLE fields: enable (bool)",
        ),
        (["SOURCE_ENABLE", "enable=maybe"], "SOURCE_ENABLE.enable: 'maybe' is not a bool"),
        (["SOURCE_ENABLE"], "SOURCE_ENABLE: missing enable; SOURCE_ENABLE fields: enable (bool)"),
        (["ABORT_PASS", "plan_id=-1", "reason=x"], "ABORT_PASS.plan_id: expected u32"),
        (["LAUNCH"], "'LAUNCH' is not a telecommand; telecommands: NOOP, RESET_COUNTERS"),
        (["NOOP", "x"], "'x' is not field=value"),
        (["--node", "ogs-xinglong", "SOURCE_ENABLE", "enable=1"], "a payload command"),
        (["--node", "ground", "NOOP"], "node: must be 'payload' or 'ogs-<station>'"),
        (["NOOP"], "no telecommand key for payload (run 'satqkd keys telecommand"),
        (["--tls-ca", "ca.crt", "NOOP"], "--tls-ca: TLS options need an mqtts:// --broker"),
        (["--broker", "mqtts://127.0.0.1:9", "NOOP"], "MQTT over TLS needs --tls-ca"),
    ],
)
def test_tc_send_mistakes_are_one_line(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = ["--node", "payload"] if "--node" not in arguments else []
    status = main(["tc", "send", "--broker", "mqtt://127.0.0.1:9", "--mission", "jinan1",
                   "--occ-keys", str(tmp_path), *node, *arguments])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error and message in error, error


def test_keys_telecommand_refuses_to_overwrite_and_a_node_without_a_key_does_not_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install = ["keys", "telecommand", "--node", "ogs-xinglong", "--node-keys",
               str(tmp_path / "ogs"), "--occ-keys", str(tmp_path / "occ")]  # fmt: skip
    assert main(install) == 0
    assert "key id 1, AES-256-CMAC" in capsys.readouterr().out
    assert main(install) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "already hold(s) a telecommand key" in error
    assert "give --force" in error
    assert main([*install, "--force"]) == 0
    assert "key id 2" in capsys.readouterr().out
    assert main(["keys", "telecommand", "--node", "earth", "--node-keys", "a",
                 "--occ-keys", "b"]) == 2  # fmt: skip
    assert "node: must be 'payload'" in capsys.readouterr().err

    status = main(["payload", "run", str(MISSION), "--broker", "mqtt://127.0.0.1:9",
                   "--keys", str(tmp_path / "bare")])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error
    assert "no telecommand key for payload" in error
    assert f"satqkd keys telecommand --node payload --node-keys {tmp_path / 'bare'}" in error
