"""A pass across two hosts: the payload daemon in one network namespace, the station daemon,
its time tagger (the TT/1 emulator running free on dark counts) and Mosquitto in another,
joined by a veth link; the link is cut (`ip link set down`) mid-pass and restored.

A short cut (10 s, under the MQTT keep-alive) is ridden out by TCP, but the payload hears
nothing from its station for 5 s; a long cut (45 s) is seen by the payload through the
keep-alive too. Either way it safes its source (ground-link watchdog: its station silent while
it emits) and ends the pass keyless (when the station starts post-processing, or when an answer
cannot be sent within a publish's wait); the station ends it keyless too.
Either way: no key at either end, housekeeping from both after the cut, and both take the
next plan.

Needs root (network namespaces); skipped with the reason otherwise. Slow (real time).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from satqkd_runtime.bus import MessageBus
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.plan_registry import PlanRegistry
from tests.conftest import find_mosquitto
from tests.reliability.standalone_pair import (
    MISSION_FILE,
    STATION_FILE,
    DaemonPair,
    key_files,
    load_plan,
    observe,
    plan_fields,
    until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

GROUND_IP, PAYLOAD_IP = "10.213.0.1", "10.213.0.2"  # the space-ground link
OBSERVER_IP, GROUND_OBSERVED_IP = "10.214.0.2", "10.214.0.1"  # the test's view of the ground
BROKER_PORT, TAGGER_PORT = 1883, 47000


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=20)


def _namespaces_refused() -> str | None:
    """Get: why this machine cannot make network namespaces (None: it can)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on this machine"
    if find_mosquitto() is None:
        return "mosquitto not installed"
    probe = f"sqprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or str(exc)
        return f"`ip netns add` refused ({detail!r}): needs root or CAP_SYS_ADMIN"
    _ip("netns", "del", probe)
    return None


@pytest.fixture
def two_hosts() -> Iterator[dict[str, str]]:
    """Namespaces `pay` and `gnd` joined by veth (the link), and `gnd` reachable from here."""
    refused = _namespaces_refused()
    if refused is not None:
        pytest.skip(refused)
    tag = uuid.uuid4().hex[:6]
    hosts = {"pay": f"sqpay{tag}", "gnd": f"sqgnd{tag}", "link": f"sqp{tag}"}
    observer_end = f"sqo{tag}"
    try:
        for ns in (hosts["pay"], hosts["gnd"]):
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", netns=ns)
        _ip("link", "add", hosts["link"], "type", "veth", "peer", "name", f"sqg{tag}")
        _ip("link", "set", hosts["link"], "netns", hosts["pay"])
        _ip("link", "set", f"sqg{tag}", "netns", hosts["gnd"])
        _ip("addr", "add", f"{PAYLOAD_IP}/24", "dev", hosts["link"], netns=hosts["pay"])
        _ip("addr", "add", f"{GROUND_IP}/24", "dev", f"sqg{tag}", netns=hosts["gnd"])
        _ip("link", "add", observer_end, "type", "veth", "peer", "name", f"sqr{tag}")
        _ip("link", "set", f"sqr{tag}", "netns", hosts["gnd"])
        _ip("addr", "add", f"{OBSERVER_IP}/24", "dev", observer_end)
        _ip("addr", "add", f"{GROUND_OBSERVED_IP}/24", "dev", f"sqr{tag}", netns=hosts["gnd"])
        for ns, dev in ((hosts["pay"], hosts["link"]), (hosts["gnd"], f"sqg{tag}")):
            _ip("link", "set", dev, "up", netns=ns)
        _ip("link", "set", f"sqr{tag}", "up", netns=hosts["gnd"])
        _ip("link", "set", observer_end, "up")
        yield hosts
    finally:
        for ns in (hosts["pay"], hosts["gnd"]):  # their veth ends go with them
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", observer_end], capture_output=True, timeout=20)


def _in(netns: str, command: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, *command],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("cut_s", [10.0, 45.0], ids=["short-cut", "long-cut"])
async def test_pass_across_two_namespaces_with_a_link_cut(
    cut_s: float, two_hosts: dict[str, str], tmp_path: Path
) -> None:
    gnd, pay = two_hosts["gnd"], two_hosts["pay"]
    conf = tmp_path / "mosquitto.conf"
    lines = [f"listener {BROKER_PORT} 0.0.0.0", "allow_anonymous true", "set_tcp_nodelay true"]
    conf.write_text("\n".join([*lines, "persistence false", "user root", ""]))
    bench = tmp_path / "station-bench.yaml"
    bench.write_text(
        "name: netns-station\ndescription: the TT/1 emulator running free, in the ground host\n"
        f"instruments:\n  tagger:\n    driver: tcp_time_tagger\n"
        f"    resource: tcp://127.0.0.1:{TAGGER_PORT}\n"
    )
    pair = DaemonPair(tmp_path, f"mqtt://{GROUND_IP}:{BROKER_PORT}")
    pair.install_keys()
    python = [sys.executable, "-m", "satqkd.cli"]
    common = ["--broker", pair.broker_url, "--housekeeping-period-s", "0.5"]
    processes = [
        _in(gnd, [str(find_mosquitto()), "-c", str(conf)], tmp_path / "broker.log"),
        _in(gnd, [*python, "sim", "emulator", "tagger", "--serve-on", "tcp", "--port",
                  str(TAGGER_PORT), "--dark-count-rate-hz", "300"], tmp_path / "tagger.log"),
    ]  # fmt: skip
    try:
        await asyncio.sleep(1.0)
        station_cmd = ["ogs", "run", str(STATION_FILE), "--mission", str(MISSION_FILE)]
        station_cmd += ["--keys", str(pair.ogs_keys), "--instruments", str(bench)]
        station_cmd += ["--reports", str(tmp_path / "reports")]  # not ./runs of the work tree
        payload_cmd = ["payload", "run", str(MISSION_FILE), "--keys", str(pair.payload_keys)]
        processes.append(_in(gnd, [*python, *station_cmd, *common], tmp_path / "station.log"))
        processes.append(_in(pay, [*python, *payload_cmd, *common], tmp_path / "payload.log"))
        observed = f"mqtt://{GROUND_OBSERVED_IP}:{BROKER_PORT}"
        async with MessageBus(observed, "occ-netns", connect_timeout_s=20.0) as occ:
            watcher = asyncio.create_task(observe(occ, pair))
            try:
                await _fly_with_cut(pair, occ, pay, two_hosts["link"], cut_s)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
    except BaseException:
        for name in ("station", "payload", "tagger", "broker"):
            with contextlib.suppress(OSError):
                print(f"--- {name} ---\n{(tmp_path / f'{name}.log').read_text()[-2500:]}")
        raise
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


async def _fly_with_cut(
    pair: DaemonPair, occ: MessageBus, pay: str, link: str, cut_s: float
) -> None:
    for which in ("payload", "station"):
        await until(lambda w=which: pair.where(w, "HOUSEKEEPING"), f"{which} up", 60)
    window_s = cut_s + 25.0
    plan = plan_fields(41, 4.0)
    plan["qkd_stop_unix_s"] = plan["qkd_start_unix_s"] + window_s
    plan["los_unix_s"] = plan["qkd_stop_unix_s"] + 5.0
    await load_plan(occ, pair, plan)
    for which in ("payload", "station"):
        await until(lambda w=which: pair.where(w, "PASS_STARTED"), f"{which} starts", 20)
    await asyncio.sleep(3.0)
    _ip("link", "set", link, "down", netns=pay)  # the space-ground link is cut
    cut_at = time.monotonic()
    await asyncio.sleep(cut_s)
    _ip("link", "set", link, "up", netns=pay)
    restored_at = time.monotonic()

    # both ends end the pass, keyless, each saying why
    ended = {}
    for which in ("payload", "station"):
        found = await until(
            lambda w=which: pair.where(w, "BLOCK_ABORTED", cut_at), f"{which} ends", window_s + 90
        )
        ended[which] = found[0]
    texts = {w: str(e.envelope.fields["text"]) for w, e in ended.items()}
    if cut_s > 5.0:  # the payload's station silent 5 s: its source was safed, the pass cut short
        safed = await until(lambda: pair.where("payload", "SOURCE_SAFE_STATE", cut_at), "safe", 30)
        assert "ground link lost" in str(safed[0].envelope.fields["text"])
        # the payload ends it for the cut: emission interrupted, or an answer it could not
        # send within a publish's wait (whichever comes first); the station on that ABORT or
        # by its own rule on what it tagged (dark counts only). Keyless either way.
        assert any(
            why in texts["payload"] for why in ("source emission interrupted", "not reachable")
        ), texts
    else:  # ridden out: ended by the same rule at both ends (dark counts give no key)
        assert texts["payload"].split(": ", 1)[1] == texts["station"].split(": ", 1)[1], texts
    for which in ("payload", "station"):
        store = KeyStore(pair.payload_keys / "xinglong" if which == "payload" else pair.ogs_keys)
        # closed once its session is released (just after the pass's end is reported)
        await until(lambda s=store: PlanRegistry(s).open_ids() == [], "plan closed", 10)
        assert key_files(store.directory) == []
        last = max(e.wall_s for e in pair.where(which, "BLOCK_ABORTED", cut_at))
        await until(lambda w=which, t=last: pair.where(w, "HOUSEKEEPING", t), "housekeeping", 10)
    await load_plan(occ, pair, plan_fields(42, 60.0))  # the next plan is taken at both ends
    print(
        f"\nlink cut {cut_s:g} s: payload ended {ended['payload'].wall_s - restored_at:+.1f} s, "
        f"station {ended['station'].wall_s - restored_at:+.1f} s after the link came back "
        f"(QKD window {window_s:g} s): {texts}"
    )
