"""A broker outage or a silent peer never freezes a pass.

The station: a publish that gives up (the broker away longer than a publish waits) while
tagging ends the pass keyless with a reason naming the outage, stops the tagger, drops a
pending key, tells the payload (ABORT) and publishes the pass summary once the broker is back;
its housekeeping resumes after the outage. The payload: a session whose station has gone
silent is abandoned after `session_timeout_s` on the daemon's clock, leaving no key.

Fakes only (an in-memory bus that refuses publishes while "down", a scripted tagger and
source, a SimClock): no broker, a few seconds of runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from drivers.interfaces import PulsePatternRecord
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import MissionConfig, StationConfig, load_model
from satqkd.wiring import ogs_settings, payload_settings, preshared_auth_key
from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope, encode_envelope
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import install_preshared_key
from satqkd_runtime.telecommand_auth import UnauthenticatedTelecommands
from tests.daemon_pair import until
from tests.seeded_entropy import seeded_entropy

REPO = Path(__file__).resolve().parents[2]
MISSION_FILE = REPO / "configs" / "missions" / "jinan1.yaml"
STATION_FILE = REPO / "configs" / "stations" / "xinglong.yaml"
TLE1 = "1 99999U          26335.00000000  .00000000  00000-0  00000+0 0    06"
TLE2 = "2 99999  97.4018  47.3668 0000000   0.0000   0.0000 15.22444802    02"
AOS = 1796134847.0
PLAN_ID = 7
PAYLOAD_KEY = "0b9d3f8e-5a6c-4e21-8f47-2d1c0a9b8e7f"

pytestmark = pytest.mark.timeout(60)


@dataclasses.dataclass
class _Message:
    topic: str
    payload: bytes


class FlakyBus:
    """An in-memory MessageBus whose broker can be taken away: while down, every publish gives
    up with ConnectionError (as a real one does after its publish timeout)."""

    url = "flaky://"

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.inbox: asyncio.Queue[_Message] = asyncio.Queue()
        self.up = asyncio.Event()
        self.up.set()
        self.refused = 0

    async def wait_connected(self) -> None:
        await self.up.wait()

    async def wait_disconnected(self) -> None:
        await asyncio.Event().wait()  # the payload's ground-link watch: not exercised here

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        await asyncio.sleep(0)
        if not self.up.is_set():
            self.refused += 1
            raise ConnectionError(f"publish on {self.url}: broker away longer than 30 s")
        self.published.append((topic, payload))

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        return None

    async def messages(self) -> AsyncIterator[_Message]:
        while True:
            yield await self.inbox.get()

    def names(self, suffix: str) -> list[str]:
        return [decode_envelope(p).spec.name for t, p in self.published if t.endswith(suffix)]

    def fields(self, suffix: str, name: str) -> list[dict]:
        decoded = [decode_envelope(p) for t, p in self.published if t.endswith(suffix)]
        return [e.fields for e in decoded if e.spec.name == name]

    def events(self, node: str) -> list[str]:
        return [
            dct.event_by_id(f["event_id"]).name for f in self.fields(f"/{node}/evt", "EVENT") if f
        ]


def _plan(mission: str) -> dict:
    return {
        "plan_id": PLAN_ID, "mission": mission, "station": "xinglong",
        "tle_line1": TLE1, "tle_line2": TLE2, "aos_unix_s": AOS, "los_unix_s": AOS + 60.0,
        "qkd_start_unix_s": AOS + 10.0, "qkd_stop_unix_s": AOS + 40.0,
        "repetition_rate_hz": 1e8,
    }  # fmt: skip


def _telecommand(bus: FlakyBus, node: str, seq: int, name: str, **fields) -> None:
    data = encode_envelope(dct.DICTIONARY[name], seq, fields)
    bus.inbox.put_nowait(_Message(dct.telecommand_topic("jinan1", node), data))


class _OutageTagger:
    """A tagger whose start coincides with the broker going away; it also leaves a pending
    (unconfirmed) key in the station's store, which the outage must discard."""

    name = "tagger"

    def __init__(self, bus: FlakyBus, daemon: Callable[[], OgsDaemon]) -> None:
        self.bus, self.daemon = bus, daemon
        self.running = False
        self.stops = 0
        self.pending_key = "6f1c7a52-0c4e-4d5b-9a3e-1f2b3c4d5e6f"

    async def start(self) -> float:
        daemon = self.daemon()
        session = daemon.sessions[PLAN_ID]
        daemon.keystore.store(self.pending_key, np.zeros(256, np.uint8), "xinglong", PLAN_ID, AOS)
        session._stored_key_id = self.pending_key
        self.running = True
        self.bus.up.clear()  # the broker goes away as tagging starts
        return daemon.clock.now_unix_s()

    async def read(self, timeout_s: float):
        await asyncio.Event().wait()  # never reached: PASS_STARTED already fails

    async def stop(self) -> None:
        self.running = False
        self.stops += 1


async def test_station_ends_a_pass_cleanly_through_a_long_broker_outage(tmp_path: Path) -> None:
    mission = load_model(MissionConfig, MISSION_FILE)
    station = load_model(StationConfig, STATION_FILE)
    settings = dataclasses.replace(
        ogs_settings(mission, station, STATION_FILE), housekeeping_period_s=5.0
    )
    clock = SimClock(AOS - 30.0)
    store = KeyStore(tmp_path / "ogs")
    install_preshared_key(store, preshared_auth_key(5, 4096))
    bus = FlakyBus()
    daemon: OgsDaemon | None = None
    tagger = _OutageTagger(bus, lambda: daemon)  # type: ignore[arg-type,return-value]
    daemon = OgsDaemon(
        settings,
        bus,  # type: ignore[arg-type]
        clock,
        tagger,  # type: ignore[arg-type]
        store,
        await seeded_entropy(3),
        tc_verifier=UnauthenticatedTelecommands(),
    )
    served = asyncio.create_task(daemon.run())
    try:
        _telecommand(bus, "ogs-xinglong", 1, "LOAD_PASS_PLAN", **_plan(mission.name))
        await until(lambda: "TC_ACK" in bus.names("/tm/tc_ack"), "plan acknowledged")
        assert bus.fields("/tm/tc_ack", "TC_ACK")[0]["accepted"]
        housekeeping_before = len(bus.names("/tm/housekeeping"))
        assert housekeeping_before >= 1

        # tagging starts, the broker goes; the outage lasts many publish timeouts
        await clock.advance_to(AOS + 10.0 - settings.tagger_lead_s)
        await until(lambda: tagger.stops >= 1, "tagger stopped")
        await clock.advance_to(AOS + 200.0)  # housekeeping fails several times meanwhile
        await asyncio.sleep(0.05)
        result = daemon.sessions[PLAN_ID].result
        assert result.finished
        assert result.abort_reason is not None and "broker outage" in result.abort_reason
        assert not tagger.running
        assert tagger.pending_key not in store.key_ids()  # discarded, never confirmed
        assert not daemon.pass_done[PLAN_ID].is_set()  # the summary waits for the broker
        assert bus.refused >= 3
        assert daemon.mode == "idle"
        assert not served.done()

        bus.up.set()  # the broker is back
        await asyncio.wait_for(daemon.pass_done[PLAN_ID].wait(), 5.0)
        summaries = bus.fields("/tm/ogs_pass_summary", "OGS_PASS_SUMMARY")
        assert len(summaries) == 1 and summaries[0]["plan_id"] == PLAN_ID
        aborts = bus.fields(dct.qkd_topic("jinan1", "xinglong", "up"), "ABORT")
        assert len(aborts) == 1 and "broker outage" in aborts[0]["reason"]
        assert "BLOCK_ABORTED" in bus.events("ogs-xinglong")
        assert daemon.results[PLAN_ID].abort_reason == result.abort_reason
        assert PLAN_ID not in daemon.sessions

        # housekeeping resumed after the long failure, and goes on with the clock
        await until(
            lambda: len(bus.names("/tm/housekeeping")) > housekeeping_before,
            "housekeeping after the outage",
        )
        resumed = len(bus.names("/tm/housekeeping"))
        await clock.advance_to(AOS + 230.0)
        await until(lambda: len(bus.names("/tm/housekeeping")) > resumed, "housekeeping goes on")
        assert not served.done()
    finally:
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served


class _Source:
    """A pulsed source that does what it is told (the pattern is the sequencer's)."""

    name = "source"

    def __init__(self) -> None:
        self.enabled = False

    async def configure(self, repetition_rate_hz: float) -> None:
        return None

    async def enable(self, first_pulse_unix_s: float) -> None:
        self.enabled = True

    async def disable(self) -> None:
        self.enabled = False

    async def read_pattern(self, pulse_index: np.ndarray) -> PulsePatternRecord:
        raise AssertionError("not read in this test")


async def test_payload_abandons_a_session_its_station_left_silent(tmp_path: Path) -> None:
    mission = load_model(MissionConfig, MISSION_FILE)
    timeout_s = 50.0
    settings = dataclasses.replace(
        payload_settings(mission), session_timeout_s=timeout_s, housekeeping_period_s=600.0
    )
    install_preshared_key(KeyStore(tmp_path / "payload" / "xinglong"), preshared_auth_key(5, 4096))
    clock = SimClock(AOS - 30.0)
    bus = FlakyBus()
    sequencer = SourceSequencer(None, mission.source.probabilities, 0.5)
    payload = PayloadDaemon(
        settings,
        bus,  # type: ignore[arg-type]
        clock,
        _Source(),  # type: ignore[arg-type]
        tmp_path / "payload",
        await seeded_entropy(4),
        sequencer,
        tc_verifier=UnauthenticatedTelecommands(),
    )
    served = asyncio.create_task(payload.run())
    plan = _plan(mission.name)
    end = max(plan["qkd_stop_unix_s"], plan["los_unix_s"])
    try:
        _telecommand(bus, "payload", 1, "LOAD_PASS_PLAN", **plan)
        await until(lambda: "TC_ACK" in bus.names("/tm/tc_ack"), "plan acknowledged")
        assert bus.fields("/tm/tc_ack", "TC_ACK")[0]["accepted"]
        session = payload.session("xinglong", PLAN_ID)
        assert session is not None
        # a key stored at PA_SEED, which the station (which aborted) will never confirm
        keystore = payload.links["xinglong"].keystore
        keystore.store(PAYLOAD_KEY, np.zeros(256, np.uint8), "xinglong", PLAN_ID, AOS)
        session.outcome.key_id = PAYLOAD_KEY
        session.pending_key_timeout_s = 1e6  # only the silence watchdog may end it here

        await clock.advance_to(end + timeout_s - 1.0)
        await asyncio.sleep(0.05)
        assert payload.session("xinglong", PLAN_ID) is session  # not yet: within the timeout

        await clock.advance_to(end + timeout_s + 1.0)
        await until(lambda: payload.session("xinglong", PLAN_ID) is None, "session released")
        outcome = payload.outcome("xinglong", PLAN_ID)
        assert outcome is not None and outcome.abort_reason is not None
        assert "silent" in outcome.abort_reason
        assert outcome.discarded and not outcome.confirmed
        assert keystore.key_ids() == []  # no key left at the payload
        aborts = bus.fields(dct.qkd_topic("jinan1", "xinglong", "down"), "ABORT")
        assert len(aborts) == 1 and "silent" in aborts[0]["reason"]
        assert "BLOCK_ABORTED" in bus.events("payload")
        assert len(bus.names("/tm/payload_pass_summary")) == 1
        assert not served.done()
    finally:
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served
