"""The modelled classical link: light time over the pass's range plus serialisation, in order."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from satqkd.config import ConfigError, load_scenario
from satqkd.sim_link import LinkTime, link_buses
from satqkd_core.light_time import SPEED_OF_LIGHT_M_S, LightTimeModel
from satqkd_runtime.bus_link import LinkedBus
from sim_backends.classical_link import ClassicalLinkModel, range_of_pass

RANGE_M = 1_000_000.0  # 1000 km: 3.336 ms of light time
LIGHT_S = RANGE_M / SPEED_OF_LIGHT_M_S


def _link(framing: int = 0) -> ClassicalLinkModel:
    return ClassicalLinkModel(
        lambda: RANGE_M, uplink_bps=1e6, downlink_bps=1e7, framing_bytes=framing
    )


def test_a_message_takes_its_serialisation_plus_the_light_time() -> None:
    link = _link()
    # 1250 bytes = 10 kbit: 10 ms at 1 Mbit/s up, 1 ms at 10 Mbit/s down
    assert link.schedule("uplink", 1250, 100.0) == pytest.approx(100.0 + 0.010 + LIGHT_S)
    assert link.schedule("downlink", 1250, 100.0) == pytest.approx(100.0 + 0.001 + LIGHT_S)


def test_messages_queue_behind_each_other_and_never_overtake() -> None:
    link = _link(framing=10)
    first = link.schedule("uplink", 12_490, 0.0)  # 100 kbit with framing: 0.1 s
    second = link.schedule("uplink", 115, 0.0)  # 1 kbit, handed at once: waits for the first
    assert first == pytest.approx(0.1 + LIGHT_S)
    assert second == pytest.approx(0.101 + LIGHT_S)
    later = link.schedule("uplink", 115, 5.0)  # the link is idle again by then
    assert later == pytest.approx(5.001 + LIGHT_S)
    # the other direction has its own queue
    assert link.schedule("downlink", 0, 0.0) == pytest.approx(80e-7 + LIGHT_S)


def test_a_shorter_range_never_lets_a_message_overtake() -> None:
    ranges = iter([3e6, 3e5])
    link = ClassicalLinkModel(lambda: next(ranges), 1e9, 1e9)
    first = link.schedule("downlink", 0, 0.0)
    second = link.schedule("downlink", 0, 0.0)
    assert second >= first


def test_summary_counts_each_direction_from_an_instant_on() -> None:
    link = _link()
    link.schedule("uplink", 1000, 0.0)
    link.schedule("uplink", 2000, 10.0)
    link.schedule("downlink", 500, 10.5)
    whole, after = link.summary(), link.summary(since_s=10.0)
    assert whole["uplink"]["messages"] == 2 and whole["uplink"]["bytes"] == 3000
    assert after["uplink"]["messages"] == 1 and after["uplink"]["bytes"] == 2000
    assert after["uplink"]["link_s"] == pytest.approx(0.016 + LIGHT_S)
    assert after["downlink"]["serialisation_s"] == pytest.approx(4000 / 1e7)
    assert after["downlink"]["light_time_max_s"] == pytest.approx(LIGHT_S)


def test_range_follows_the_pass_and_holds_its_ends_outside() -> None:
    ranges = np.array([2.0e6, 1.0e6, 1.5e6])
    model = LightTimeModel(1000.0, 10.0, ranges, np.array([-1e5, 0.0, 5e4]))
    now = [1010.0]
    range_m = range_of_pass(model, lambda: now[0])
    assert range_m() == pytest.approx(1.0e6)
    now[0] = 5000.0  # after LOS the link keeps the last range of the grid
    assert range_m() == pytest.approx(1.5e6)
    now[0] = 0.0
    assert range_m() == pytest.approx(2.0e6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"uplink_bps": 0.0}, "uplink_bps must be a positive"),
        ({"downlink_bps": float("nan")}, "downlink_bps must be a positive"),
        ({"framing_bytes": -1}, "framing_bytes must be >= 0"),
        ({"framing_bytes": 1.5}, "framing_bytes must be an integer"),
    ],
)
def test_bad_link_settings_are_named(kwargs: dict, match: str) -> None:
    arguments = {"range_m": lambda: RANGE_M, "uplink_bps": 1e6, "downlink_bps": 1e6}
    with pytest.raises(ValueError, match=match):
        ClassicalLinkModel(**{**arguments, **kwargs})


def test_bad_messages_are_named() -> None:
    link = _link()
    with pytest.raises(ValueError, match="direction must be one of"):
        link.schedule("sideways", 10, 0.0)
    with pytest.raises(ValueError, match="size_bytes"):
        link.schedule("uplink", -1, 0.0)
    with pytest.raises(ValueError, match="range must be positive"):
        ClassicalLinkModel(lambda: 0.0, 1e6, 1e6).schedule("uplink", 1, 0.0)


class _FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def now_unix_s(self) -> float:
        return self.now

    async def sleep_until(self, unix_s: float) -> None:
        while self.now < unix_s:
            await asyncio.sleep(0.01)


class _RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[float, str]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.published.append((asyncio.get_running_loop().time(), topic))


async def test_the_backlog_follows_simulated_time_not_the_hosts_speed() -> None:
    """A simulation racing ahead of real time hands the uplink 30 messages of 0.1 s each, one
    per simulated second, within a few milliseconds of wall time: none queues behind another
    (as on the real link), and each reaches the payload once the simulated clock has passed its
    delivery instant (the last, at LOS, after ~0.1 s on the event loop), all within 1 s of wall
    time, not up to 3 s later as a link timed on the host's clock would make it. After LOS
    (the simulated clock stands still) the payload's answer is handed when it is sent, the
    last message's delivery plus the wall time since (decision 0039), and waits for no
    backlog."""
    clock = _FakeClock(1000.0)
    link = _link()  # 1 Mbit/s up: 12,500 bytes take 0.1 s
    timing = LinkTime(link, clock)
    station_side, payload_side = _RecordingBus(), _RecordingBus()
    topic = "satqkd/m/qkd/s/up"
    loop = asyncio.get_running_loop()
    buses = [
        LinkedBus(
            bus,  # type: ignore[arg-type]
            timing.deliver_at(d),
            lambda t: "/qkd/" in t,
            timing.on_delivered(d),
            timing.wait_until(d),
        )
        for bus, d in ((station_side, "uplink"), (payload_side, "downlink"))
    ]
    up, down = buses
    async with up, down:
        started = loop.time()
        for k in range(30):
            clock.now = 1000.0 + k  # the last one at LOS: the clock stops there
            await up.publish(topic, bytes(12_500))
        while len(station_side.published) < 30:
            await asyncio.sleep(0.01)
        assert station_side.published[-1][0] - started < 1.0  # 3.0 s on a host-timed link
        await down.publish(topic, bytes(125))  # the payload's answer: 1 kbit down
        while not payload_side.published:
            await asyncio.sleep(0.01)
    uplink = link.messages("uplink")
    assert [m.start_s - m.handed_s for m in uplink] == [0.0] * 30  # no queue
    assert all(m.delivered_s - m.handed_s == pytest.approx(0.1 + LIGHT_S) for m in uplink)
    (answer,) = link.messages("downlink")
    # 1029.1033 > the clock, plus the ~0.01 s the test's polling took before it answered
    assert uplink[-1].delivered_s <= answer.handed_s < uplink[-1].delivered_s + 0.5
    assert link.summary(since_s=1029.0)["downlink"]["link_s"] == pytest.approx(1e-4 + LIGHT_S)


async def test_after_los_each_exchange_waits_its_own_link_time_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After LOS (the simulated clock stands still) a question and its answer each wait their
    own time on the link (serialisation plus light time), not the round trip since the previous
    delivery in their direction (decision 0039: before it, every exchange after LOS waited its
    round trip twice). The waits are the timeouts the link asks the event loop for."""
    waited: list[float] = []

    async def fake_wait(futures: set, timeout: float | None = None) -> tuple[set, set]:
        waited.append(float(timeout or 0.0))
        return set(), set(futures)

    monkeypatch.setattr("satqkd.sim_link.asyncio.wait", fake_wait)
    clock = _FakeClock(1000.0)  # LOS: the clock stands still from here on
    link = _link()  # 1250 bytes: 10 ms up (1 Mbit/s), 1 ms down (10 Mbit/s)
    timing = LinkTime(link, clock)
    for _ in range(3):  # three question/answer exchanges
        for direction in ("uplink", "downlink"):
            delivered = timing.deliver_at(direction)(1250, 0.0)
            await timing.wait_until(direction)(delivered)
            timing.on_delivered(direction)(True)
    own = [m.delivered_s - m.handed_s for d in ("uplink", "downlink") for m in link.messages(d)]
    assert sorted(waited) == pytest.approx(sorted(own), abs=1e-3)
    assert sum(waited) == pytest.approx(3 * (0.011 + 2 * LIGHT_S), abs=3e-3)  # 2x before 0039


async def test_a_modelled_link_needs_the_missions_rates(tmp_path: Path) -> None:
    """`simulation.classical_link: modelled` with a mission that gives no rates is refused in
    one line naming the scenario and the key; loopback leaves the buses as they are."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    root = tmp_path / "configs"
    for sub in ("missions", "stations", "scenarios"):
        shutil.copytree(configs / sub, root / sub)
    text = (root / "scenarios" / "jinan1-xinglong-clear-link.yaml").read_text()
    (root / "scenarios" / "no-rates.yaml").write_text(
        text.replace("mission: jinan1-link\n", "mission: micius\n")
    )
    payload_bus, ogs_bus = object(), object()
    async with contextlib.AsyncExitStack() as stack:
        scenario = load_scenario(root / "scenarios" / "no-rates.yaml")
        with pytest.raises(
            ConfigError, match=r"simulation\.classical_link: modelled, but mission 'micius'"
        ):
            await link_buses(scenario, None, None, payload_bus, ogs_bus, stack)  # type: ignore[arg-type]
        plain = load_scenario(root / "scenarios" / "jinan1-xinglong-clear.yaml")
        got = await link_buses(plain, None, None, payload_bus, ogs_bus, stack)  # type: ignore[arg-type]
        assert got == (payload_bus, ogs_bus, None)


@pytest.mark.slow
def test_a_pass_across_the_modelled_link_reports_it(tmp_path: Path) -> None:
    """End to end (slow: a 20 s pass near culmination): the QKD messages of a pass cross the
    modelled link, the report says what it carried and the key still matches at both ends."""
    import json

    from satqkd.cli import main
    from tests.conftest import report_schema_errors

    scenario = Path(__file__).resolve().parents[2] / "configs/scenarios"
    out = tmp_path / "pass"
    arguments = ["--seed", "7", "--start-after-aos-s", "190", "--max-duration-s", "20"]
    path = str(scenario / "jinan1-xinglong-clear-link.yaml")
    assert main(["sim", "pass", path, "--out", str(out), "--quiet", *arguments]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report_schema_errors(report) == []
    link = report["classical_channel"]["link"]
    assert link["uplink"]["rate_bps"] == 2e6 and link["downlink"]["rate_bps"] == 1e7
    assert link["uplink"]["bytes"] == report["classical_channel"]["uplink_bytes"]
    assert link["uplink"]["messages_after_los"] > 0 and link["link_s_after_los"] > 0
    # one-way light time of a LEO pass above 10 degrees of elevation: ~1.7 to ~6 ms
    assert 1.5 < link["light_time_min_ms"] <= link["light_time_max_ms"] < 7.0
    assert report["timing"]["key_ready_after_los_s"] >= link["link_s_after_los"] * 0.5
    assert report["key"]["secret_key_bits"] > 0
    assert report["key"]["sha256_payload"] == report["key"]["sha256_ogs"]
