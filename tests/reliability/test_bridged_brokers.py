"""A pass over a ground network of bridged brokers, one per host, with a bridge cut mid-pass.

Four network namespaces, each with its own Mosquitto configured by `satqkd broker config`
(TLS, client certificates, the ACL) and joined by the bridges it writes (`--bridge-to`,
`--bridge-as`): the space segment (`sat`: the payload daemon) bridges to the first ground
station (`gsa`: the Xinglong station daemon), which bridges to the control centre (`occ`); a
second ground station (`gsb`: a Stellenbosch station daemon, idle) bridges to the control
centre too.
The test process is the control centre's console (veth into `occ`) and the Xinglong station's
time tagger (a TT/1 emulator fed by the physics of a real pass, veth into `gsa`).

Mid-pass, while the station tags, the space-ground link (the veth under the sat -> gsa bridge)
is set down and, after a while, up again. A short cut (8 s, inside the bridge's keep-alive)
is ridden out by TCP; a long one (40 s) outlasts the keep-alive: the brokers drop the bridge,
queue what is published meanwhile (persistent bridge sessions, QoS 1) and deliver it when the
bridge is back. Either way both ends end the pass in the same stated state: the same key
(same key ids and digests) or none at either end, nothing pending or open, and housekeeping
from every node reaches the control centre through the bridges afterwards.

Needs root (network namespaces); skipped with the reason otherwise. Slow (real time).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from satqkd.broker_security import write_broker_config, write_certificates
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.bus_tls import BusTls
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.plan_registry import PlanRegistry
from tests.conftest import find_mosquitto
from tests.reliability.physics_feed import SEED, PhysicsFeed, mission_file
from tests.reliability.standalone_pair import (
    MISSION,
    REPO,
    STATION,
    DaemonPair,
    load_plan,
    observe,
    until,
)
from tests.reliability.test_namespaces import _in, _ip, _namespaces_refused

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

PORT = 8883
SECOND_STATION = "stellenbosch"
STATIONS = [STATION, SECOND_STATION]
BRIDGES = ["sat", "gsa", "gsb"]
# (namespace a, its address, namespace b, its address): the links; "root" is the test process
LINKS = [
    ("sat", "10.215.1.2", "gsa", "10.215.1.1"),  # the space-ground link
    ("gsa", "10.215.2.2", "occ", "10.215.2.1"),
    ("gsb", "10.215.3.2", "occ", "10.215.3.1"),
    ("root", "10.215.4.2", "occ", "10.215.4.1"),  # the control centre's console
    ("root", "10.215.5.2", "gsa", "10.215.5.1"),  # the Xinglong station's time tagger
]
UPSTREAM = {"sat": ("10.215.1.1", "sat"), "gsa": ("10.215.2.1", "gsa"),
            "gsb": ("10.215.3.1", "gsb")}  # fmt: skip
OCC_URL = f"mqtts://10.215.4.1:{PORT}"
TAGGER_HOST = "10.215.5.2"
PLAN_ID = 71


@pytest.fixture
def network() -> Iterator[dict[str, str]]:
    """The namespaces (by role) and the veth names (by link index), up and addressed."""
    refused = _namespaces_refused()
    if refused is not None:
        pytest.skip(refused)
    tag = uuid.uuid4().hex[:5]
    names = {role: f"sq{role}{tag}" for role in ("sat", "gsa", "gsb", "occ")}
    root_ends: list[str] = []
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", netns=ns)
        for k, (a, addr_a, b, addr_b) in enumerate(LINKS):
            end_a, end_b = f"sq{k}a{tag}", f"sq{k}b{tag}"
            _ip("link", "add", end_a, "type", "veth", "peer", "name", end_b)
            for end, role, address in ((end_a, a, addr_a), (end_b, b, addr_b)):
                ns = names.get(role)
                if ns is None:
                    root_ends.append(end)
                else:
                    _ip("link", "set", end, "netns", ns)
                _ip("addr", "add", f"{address}/24", "dev", end, netns=ns)
                _ip("link", "set", end, "up", netns=ns)
            names[f"link{k}"] = end_a
        yield names
    finally:
        for role in ("sat", "gsa", "gsb", "occ"):  # their veth ends go with them
            subprocess.run(["ip", "netns", "del", names[role]], capture_output=True, timeout=20)
        for end in root_ends:
            subprocess.run(["ip", "link", "del", end], capture_output=True, timeout=20)


def _broker_files(root: Path) -> tuple[Path, dict[str, Path]]:
    """Get: the certificates' directory and each host's mosquitto.conf, as `satqkd broker`
    writes them (one CA; each broker's certificate names every broker address)."""
    certs = root / "certs"
    hosts = [address for _, _, _, address in LINKS]
    write_certificates(certs, MISSION, STATIONS, hosts=hosts, bridges=BRIDGES)
    confs = {}
    for role in ("sat", "gsa", "gsb", "occ"):
        upstream = UPSTREAM.get(role)
        conf, _acl = write_broker_config(
            root / role, MISSION, STATIONS, port=PORT, certs_dir=certs, bridges=BRIDGES,
            bridge_to=None if upstream is None else f"{upstream[0]}:{PORT}",
            bridge_as=None if upstream is None else upstream[1],
        )  # fmt: skip
        log = root / f"broker-{role}.log"
        extra = ["user root", f"log_dest file {log}", "log_type all", "persistence false"]
        conf.write_text(conf.read_text() + "\n".join(extra) + "\n")
        confs[role] = conf
    return certs, confs


def _tls(certs: Path, identity: str) -> list[str]:
    return ["--tls-ca", str(certs / "ca.crt"), "--tls-cert", str(certs / f"{identity}.crt"),
            "--tls-key", str(certs / f"{identity}.key")]  # fmt: skip


def _store(pair: DaemonPair, which: str) -> KeyStore:
    return KeyStore(pair.payload_keys / STATION if which == "payload" else pair.ogs_keys)


@pytest.mark.parametrize("cut_s", [8.0, 40.0], ids=["short-cut", "long-cut"])
async def test_a_pass_over_bridged_brokers_with_the_space_bridge_cut(
    cut_s: float, network: dict[str, str], tmp_path: Path
) -> None:
    certs, confs = _broker_files(tmp_path)
    mosquitto = str(find_mosquitto())
    others: list[subprocess.Popen[bytes]] = []
    for role, conf in confs.items():
        others.append(_in(network[role], [mosquitto, "-c", str(conf)], tmp_path / f"{role}.out"))
    async with PhysicsFeed("cascade", tagger_host=TAGGER_HOST) as feed:
        local = f"mqtts://127.0.0.1:{PORT}"
        pair = DaemonPair(tmp_path, local, mission_file=mission_file(feed.scenario))
        pair.install_keys()
        pair.netns = {"payload": network["sat"], "station": network["gsa"]}
        seeded = ["--insecure-seeded-entropy", "--seed"]
        pair.extra_args = {
            "payload": [*seeded, str(SEED), *_tls(certs, "payload")],
            "station": [
                "--instruments", str(feed.bench(tmp_path)), *seeded, str(SEED + 1),
                *_tls(certs, f"ogs-{STATION}"),
                "--tls-reports-cert", str(certs / f"recorder-{STATION}.crt"),
                "--tls-reports-key", str(certs / f"recorder-{STATION}.key"),
            ],
        }  # fmt: skip
        # the second station: its daemon idles at its own site, on its own broker
        second = tmp_path / "second-station-keys"
        second_cmd = [
            sys.executable, "-m", "satqkd.cli", "ogs", "run",
            str(REPO / "configs" / "stations" / "stellenbosch.yaml"),
            "--mission", str(pair.mission_file), "--keys", str(second), "--broker", local,
            "--reports", str(tmp_path / "second-station-reports"), "--housekeeping-period-s", "0.5",
            *_tls(certs, f"ogs-{SECOND_STATION}"),
            "--tls-reports-cert", str(certs / f"recorder-{SECOND_STATION}.crt"),
            "--tls-reports-key", str(certs / f"recorder-{SECOND_STATION}.key"),
        ]  # fmt: skip
        _install_station_keys(pair, second)
        tls = BusTls(certs / "ca.crt", certs / "occ.crt", certs / "occ.key")
        try:
            await asyncio.sleep(1.0)  # the brokers listen, the bridges connect
            others.append(_in(network["gsb"], second_cmd, tmp_path / "second-station.log"))
            for which in ("payload", "station"):
                pair.start(which)
            async with MessageBus(OCC_URL, "occ", tls=tls, connect_timeout_s=20.0) as occ:
                watcher = asyncio.create_task(observe(occ, pair))
                feeding: asyncio.Task[None] | None = None
                try:
                    feeding = await _fly(pair, occ, feed, network["link0"], network["sat"], cut_s)
                finally:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                    if feeding is not None:
                        feeding.cancel()
                        await asyncio.gather(feeding, return_exceptions=True)
        except BaseException:
            for name in (
                "payload",
                "station",
                "second-station",
                "broker-sat",
                "broker-gsa",
                "broker-occ",
            ):
                with contextlib.suppress(OSError):
                    text = (tmp_path / f"{name}.log").read_text()
                    print(f"--- {name} ---\n{text[-3000:]}")
            raise
        finally:
            pair.stop_all()
            for process in others:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)


def _install_station_keys(pair: DaemonPair, keys: Path) -> None:
    """The second station's pre-shared key (its own pool) and telecommand key."""
    from satqkd.wiring import preshared_auth_key
    from satqkd_runtime.qkd_channel import install_preshared_key
    from satqkd_runtime.telecommand_auth import install_telecommand_key

    install_preshared_key(KeyStore(keys), preshared_auth_key(6, 4096))
    install_telecommand_key(keys, pair.root / "occ-keys", f"ogs-{SECOND_STATION}", force=True)


async def _fly(
    pair: DaemonPair, occ: MessageBus, feed: PhysicsFeed, link: str, sat: str, cut_s: float
) -> asyncio.Task[None]:
    # every node's housekeeping reaches the control centre through the bridges
    for which in ("payload", "station"):
        await until(lambda w=which: pair.where(w, "HOUSEKEEPING"), f"{which} up via bridges", 60)
    await until(
        lambda: [s for s in pair.seen if s.node == f"ogs-{SECOND_STATION}"],
        "the second station up",
        60,
    )
    await load_plan(occ, pair, feed.plan(PLAN_ID, 8.0))
    payload = pair.processes["payload"]
    feeding = asyncio.create_task(feed.feed(PLAN_ID, lambda: payload.poll() is None))
    for which in ("payload", "station"):
        await until(lambda w=which: pair.where(w, "PASS_STARTED"), f"{which} starts", 30)
    await asyncio.sleep(5.0)  # tagging, sifting chunk by chunk
    _ip("link", "set", link, "down", netns=sat)  # the space-ground link is cut
    cut_into_window_s = time.time() - (feed.physics.qkd_start_unix_s + feed.shift_s)
    await asyncio.sleep(cut_s)
    _ip("link", "set", link, "up", netns=sat)
    restored_at = time.monotonic()

    # both ends end the pass, and agree
    summaries = {"payload": "PAYLOAD_PASS_SUMMARY", "station": "OGS_PASS_SUMMARY"}
    ended = {}
    for which, summary in summaries.items():
        found = await until(
            lambda w=which, s=summary: pair.where(w, s, plan_id=PLAN_ID), f"{which} ends", 150
        )
        ended[which] = found[0].wall_s
    stores = {which: _store(pair, which) for which in ("payload", "station")}
    for which, store in stores.items():
        await until(lambda s=store: PlanRegistry(s).open_ids() == [], f"{which} plan closed", 20)
        assert store.key_ids(state="pending") == []
    keys = {which: store.key_ids() for which, store in stores.items()}
    assert keys["payload"] == keys["station"], keys
    assert stores["payload"].digest() == stores["station"].digest()
    outcome = f"the same key at both ends ({keys['station']})" if keys["station"] else "no key"
    # and both still talk to the control centre through the restored bridge
    for which in ("payload", "station"):
        last = max(ended.values())
        await until(lambda w=which, t=last: pair.where(w, "HOUSEKEEPING", t), "housekeeping", 30)
    await load_plan(occ, pair, feed.plan(PLAN_ID + 1, 60.0))  # both take the next plan
    print(
        f"\nspace bridge cut {cut_s:g} s: {outcome}; payload ended "
        f"{ended['payload'] - restored_at:+.1f} s, station {ended['station'] - restored_at:+.1f} s "
        f"after the link came back; cut {cut_into_window_s:.1f} s into the "
        f"{feed.physics.n_frames * feed.physics.frame_s:g}-s QKD window"
    )
    return feeding
