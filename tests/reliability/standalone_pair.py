"""Test harness: the two daemons as real processes (`satqkd payload run`, `satqkd ogs run`) on
the real-time clock against one broker, an observer on the bus, and SIGKILL/restart of either.

Standalone daemons have no physics behind them: the station's simulated tagger delivers no tag
buffer, so a pass stays in its tagging phase until the read times out (120 s). That is the
window in which a test kills one daemon: before QKD start (plan loaded) or while tagging.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satqkd.wiring import preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core.codec import Envelope, decode_envelope
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key
from satqkd_runtime.telecommand_auth import install_telecommand_key
from tests.tc_signing import OccSigner

REPO = Path(__file__).resolve().parents[2]
MISSION_FILE = REPO / "configs" / "missions" / "jinan1.yaml"
STATION_FILE = REPO / "configs" / "stations" / "xinglong.yaml"
MISSION, STATION = "jinan1", "xinglong"
NODES = {"payload": "payload", "station": f"ogs-{STATION}"}
TLE1 = "1 99999U          26335.00000000  .00000000  00000-0  00000+0 0    06"
TLE2 = "2 99999  97.4018  47.3668 0000000   0.0000   0.0000 15.22444802    02"


@dataclass
class Seen:
    """One message the observer saw: wall time, node, decoded envelope."""

    wall_s: float
    node: str
    envelope: Envelope

    @property
    def event(self) -> str | None:
        """Get: the event's name (None if this is not an event)."""
        if self.envelope.spec.name != "EVENT":
            return None
        return dct.event_by_id(self.envelope.fields["event_id"]).name


@dataclass
class DaemonPair:
    """Both daemons' key directories, processes and what the observer saw."""

    root: Path
    broker_url: str
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    signer: OccSigner | None = None
    mission_file: Path = MISSION_FILE
    mission: str = MISSION  # the name in that file (the topics carry it)
    # more arguments of a daemon's command line (a bench, seeded entropy, TLS), by node
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    # the network namespace a daemon runs in (`ip netns exec`), by node; the broker url by node
    netns: dict[str, str] = field(default_factory=dict)
    broker_urls: dict[str, str] = field(default_factory=dict)

    @property
    def payload_keys(self) -> Path:
        return self.root / "payload-keys"

    @property
    def ogs_keys(self) -> Path:
        return self.root / "ogs-keys"

    def install_keys(self) -> None:
        """Pre-shared authentication key at both ends, a telecommand key per node."""
        preshared = preshared_auth_key(5, 4096)
        install_preshared_key(KeyStore(self.payload_keys / STATION), preshared)
        install_preshared_key(KeyStore(self.ogs_keys), preshared)
        for node, keys in (("payload", self.payload_keys), (NODES["station"], self.ogs_keys)):
            install_telecommand_key(keys, self.root / "occ-keys", node, force=True)
        self.signer = OccSigner(self.root / "occ-keys")

    def command(self, which: str, runner: tuple[str, ...] = ("-m", "satqkd.cli")) -> list[str]:
        """Get: the daemon's command line (`runner`: what Python runs, the satqkd CLI)."""
        broker = self.broker_urls.get(which, self.broker_url)
        common = ["--broker", broker, "--housekeeping-period-s", "0.2"]
        if which == "payload":
            args = ["payload", "run", str(self.mission_file), "--keys", str(self.payload_keys)]
        else:
            args = ["ogs", "run", str(STATION_FILE), "--mission", str(self.mission_file)]
            args += ["--keys", str(self.ogs_keys), "--reports", str(self.root / "reports")]
        command = [sys.executable, *runner, *args, *common, *self.extra_args.get(which, [])]
        if which in self.netns:  # `ip netns exec` execs the command: the pid is the daemon's
            command = ["ip", "netns", "exec", self.netns[which], *command]
        return command

    def start(self, which: str, runner: tuple[str, ...] = ("-m", "satqkd.cli")) -> float:
        """Control: start one daemon; get the wall time it was started."""
        with (self.root / f"{which}.log").open("a") as log:  # the child keeps its own copy
            self.processes[which] = subprocess.Popen(
                self.command(which, runner), stdout=log, stderr=subprocess.STDOUT, text=True,
                cwd=REPO,
            )  # fmt: skip
        return time.monotonic()

    def kill(self, which: str) -> None:
        """Control: SIGKILL one daemon (nothing of it runs after this) and reap it."""
        process = self.processes[which]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def where(self, which: str, name: str, after_s: float = 0.0, **fields: Any) -> list[Seen]:
        """Get: what `which` published named `name` (an event name or a message name)."""
        node = NODES[which]
        found = []
        for item in self.seen:
            if item.node != node or item.wall_s < after_s:
                continue
            if name not in (item.event, item.envelope.spec.name):
                continue
            if all(item.envelope.fields.get(k) == v for k, v in fields.items()):
                found.append(item)
        return found

    def log(self, which: str) -> str:
        return (self.root / f"{which}.log").read_text()


async def observe(bus: MessageBus, pair: DaemonPair) -> None:
    """Record every telemetry packet and event either daemon publishes."""
    await bus.subscribe(f"satqkd/{pair.mission}/+/tm/#")
    await bus.subscribe(f"satqkd/{pair.mission}/+/evt")
    async for message in bus.messages():
        node = message.topic.split("/")[2]
        pair.seen.append(Seen(time.monotonic(), node, decode_envelope(message.payload)))


async def until(condition: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """Wait for `condition()` to be truthy (get it); AssertionError naming `what` if not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting: {what}")


def plan_fields(plan_id: int, qkd_start_in_s: float) -> dict[str, Any]:
    """A plan whose QKD window starts `qkd_start_in_s` from now (wall clock)."""
    start = float(int(time.time()) + int(qkd_start_in_s) + 1)  # whole seconds, both ends
    return {
        "plan_id": plan_id, "mission": MISSION, "station": STATION,
        "tle_line1": TLE1, "tle_line2": TLE2,
        "aos_unix_s": start - 2.0, "los_unix_s": start + 300.0,
        "qkd_start_unix_s": start, "qkd_stop_unix_s": start + 290.0,
        "repetition_rate_hz": 1e8,
    }  # fmt: skip


async def load_plan(occ: MessageBus, pair: DaemonPair, plan: dict[str, Any]) -> None:
    """Control: send LOAD_PASS_PLAN to both daemons; wait until both accepted it."""
    assert pair.signer is not None
    seqs = {}
    for which, node in NODES.items():
        seqs[which], data = pair.signer.signed(node, "LOAD_PASS_PLAN", **plan)
        await occ.publish(dct.telecommand_topic(pair.mission, node), data)
    for which in NODES:
        acks = await until(
            lambda w=which: pair.where(w, "TC_ACK", command_seq=seqs[w]), f"{which} acks the plan"
        )
        assert acks[0].envelope.fields["accepted"], acks[0].envelope.fields["reason"]


def key_files(directory: Path) -> list[str]:
    """Get: names of the key and metadata files in a key directory (not quarantine/)."""
    return sorted(p.name for p in directory.glob("*") if p.suffix in (".key", ".json"))
