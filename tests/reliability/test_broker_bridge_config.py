"""`satqkd broker config --bridge-to HOST:PORT --bridge-as NAME` (docs/broker.md, "Several
brokers"): two real Mosquittos on loopback, each configured by the generator (TLS, client
certificates, the ACL), the downstream one bridged to the upstream one. A daemon on one
broker hears the control centre on the other and is heard by it, both ways through the
bridge; a bridge the upstream's ACL does not admit carries nothing; mistakes on the command
line are one line, exit status 2. The pass over bridged brokers in network namespaces, with a
bridge cut mid-pass, is test_bridged_brokers.py (slow, root).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from satqkd.broker_security import write_broker_config, write_certificates
from satqkd.cli import main as satqkd_main
from satqkd_core import dictionary as dct
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.bus_tls import BusTls
from tests.conftest import find_mosquitto, free_tcp_port

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]

MISSION, STATION = "jinan1", "xinglong"
PAYLOAD_TC = dct.telecommand_topic(MISSION, "payload")
PAYLOAD_TM = f"satqkd/{MISSION}/payload/tm/housekeeping"


def _broker(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    text = conf.read_text() + f"user root\nlog_dest file {log}\n"
    conf.write_text(text)
    return subprocess.Popen([str(find_mosquitto()), "-c", str(conf)], stderr=subprocess.DEVNULL)


@pytest.fixture
def bridged(tmp_path: Path) -> Iterator[tuple[Path, int, int, Path]]:
    """(certificates, upstream port, downstream port, upstream log): the downstream broker
    bridged to the upstream one as bridge `site`, which the upstream's ACL admits."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    certs = tmp_path / "certs"
    write_certificates(certs, MISSION, [STATION], bridges=["site", "rogue"])
    up, down = free_tcp_port(), free_tcp_port()
    processes = []
    try:
        for name, port, bridges, to in (
            ("up", up, ["site"], None),
            ("down", down, [], f"127.0.0.1:{up}"),
        ):
            conf, _acl = write_broker_config(
                tmp_path / name, MISSION, [STATION], port=port, certs_dir=certs,
                bind="127.0.0.1", bridges=bridges, bridge_to=to,
                bridge_as=None if to is None else "site",
            )  # fmt: skip
            processes.append(_broker(conf, tmp_path / f"{name}.log"))
        yield certs, up, down, tmp_path / "up.log"
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def _tls(certs: Path, identity: str) -> BusTls:
    return BusTls(certs / "ca.crt", certs / f"{identity}.crt", certs / f"{identity}.key")


async def _first(bus: MessageBus, timeout_s: float) -> tuple[str, bytes] | None:
    try:
        async with asyncio.timeout(timeout_s):
            async for message in bus.messages():
                return message.topic, bytes(message.payload)
    except TimeoutError:
        return None
    return None


async def _until_bridged(up_log: Path, identity: str) -> None:
    """Wait until the upstream broker has let the bridge in (its log says so)."""
    for _ in range(500):
        if up_log.exists() and f"as {identity} " in up_log.read_text():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{identity} never connected to the upstream broker")


async def test_a_bridge_carries_the_mission_both_ways(
    bridged: tuple[Path, int, int, Path],
) -> None:
    certs, up, down, up_log = bridged
    await _until_bridged(up_log, "bridge-site")
    async with (
        MessageBus(f"mqtts://127.0.0.1:{up}", "occ", tls=_tls(certs, "occ")) as occ,
        MessageBus(f"mqtts://127.0.0.1:{down}", "payload", tls=_tls(certs, "payload")) as payload,
    ):
        await occ.subscribe(f"satqkd/{MISSION}/+/tm/#")
        await payload.subscribe(PAYLOAD_TC)
        await asyncio.sleep(0.3)  # the subscriptions reach the other broker over the bridge
        await occ.publish(PAYLOAD_TC, b"telecommand from the control centre")
        assert await _first(payload, 5.0) == (PAYLOAD_TC, b"telecommand from the control centre")
        await payload.publish(PAYLOAD_TM, b"housekeeping from the payload")
        assert await _first(occ, 5.0) == (PAYLOAD_TM, b"housekeeping from the payload")


async def test_a_bridge_the_upstream_acl_does_not_admit_carries_nothing(tmp_path: Path) -> None:
    """A broker bridged as `rogue` (a valid certificate of the CA) to an upstream whose ACL
    names only `site`: the upstream lets it connect (TLS) but grants it no topic."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    certs = tmp_path / "certs"
    write_certificates(certs, MISSION, [STATION], bridges=["site", "rogue"])
    up, down = free_tcp_port(), free_tcp_port()
    processes = []
    try:
        for name, port, bridges, to, as_ in (
            ("up", up, ["site"], None, None),
            ("down", down, ["rogue"], f"127.0.0.1:{up}", "rogue"),
        ):
            conf, _acl = write_broker_config(
                tmp_path / name, MISSION, [STATION], port=port, certs_dir=certs,
                bind="127.0.0.1", bridges=bridges, bridge_to=to, bridge_as=as_,
            )  # fmt: skip
            processes.append(_broker(conf, tmp_path / f"{name}.log"))
        await _until_bridged(tmp_path / "up.log", "bridge-rogue")
        async with (
            MessageBus(f"mqtts://127.0.0.1:{up}", "occ", tls=_tls(certs, "occ")) as occ,
            MessageBus(f"mqtts://127.0.0.1:{down}", "payload", tls=_tls(certs, "payload")) as pl,
        ):
            await occ.subscribe(f"satqkd/{MISSION}/+/tm/#")
            await pl.subscribe(PAYLOAD_TC)
            await asyncio.sleep(0.3)
            await occ.publish(PAYLOAD_TC, b"telecommand")
            await pl.publish(PAYLOAD_TM, b"housekeeping")
            assert await _first(pl, 0.5) is None
            assert await _first(occ, 0.2) is None
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--bridge-to", "10.0.0.1:8883"], "--bridge-to and --bridge-as: give both"),
        (["--bridge-as", "site"], "--bridge-to and --bridge-as: give both"),
        (["--bridge-to", "10.0.0.1:70000", "--bridge-as", "site"], "port in 1..65535"),
        (["--bridge-to", "bad host:1", "--bridge-as", "site"], "not a host name"),
        (["--bridge-to", "10.0.0.1:1", "--bridge-as", "Site_1"], "a bridge name is"),
        (["--bridge", "../x"], "a bridge name is"),
    ],
)
def test_a_bad_bridge_option_is_one_line(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["broker", "config", str(tmp_path / "out"), "--mission", MISSION]
    args += ["--station", STATION, "--certs", str(tmp_path), *options]
    assert satqkd_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("satqkd: ") and message in err, err
    assert not (tmp_path / "out").exists()
