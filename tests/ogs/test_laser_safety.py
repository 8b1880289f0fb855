"""The station's laser safety: on the real clock each condition switches the uplink laser off
within one ATP loop period; in the ATP loop (emulated mount, simulated clock) the laser follows
the pass and stops where the mount enters a keep-out cone."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import pytest

from satqkd_ogs.laser_safety import StationKeepOutCone, StationLaserSafety, StationLaserSettings
from tests.ogs.test_atp_controller import RISING, apparent_direction, bench, make_plan, run_pass

PERIOD_S = 0.1  # the station's default ATP loop, 10 Hz
BOUND_S = PERIOD_S + 0.1  # plus the laser's disable and scheduling slack on a shared CI box


class RecordingLaser:
    def __init__(self) -> None:
        self.on = False
        self.off_at: list[float] = []

    async def enable(self) -> None:
        self.on = True

    async def disable(self) -> None:
        self.on = False
        self.off_at.append(time.time())


@dataclass
class Conditions:
    pointing: tuple[float, float] | None = (180.0, 45.0)
    tracking: bool = True
    link: bool = True


async def _loop(safety: StationLaserSafety, c: Conditions, stop: asyncio.Event) -> None:
    """The ATP loop's part: one decision per period on the real clock."""
    start = time.time()
    k = 0
    while not stop.is_set():
        await safety.update(time.time(), c.pointing, c.tracking)
        k += 1
        await asyncio.sleep(max(0.0, start + k * PERIOD_S - time.time()))


async def _stops_within_a_period(change, settings: StationLaserSettings, reason: str) -> None:
    laser, c, stop = RecordingLaser(), Conditions(), asyncio.Event()
    safety = StationLaserSafety(laser, settings, lambda: c.link)
    task = asyncio.create_task(_loop(safety, c, stop))
    try:
        await asyncio.sleep(0.25)
        assert laser.on
        since = change(c)
        deadline = time.time() + 2.0
        while laser.on and time.time() < deadline:
            await asyncio.sleep(0.005)
        assert not laser.on and laser.off_at[-1] - since <= BOUND_S
        assert reason in safety.reasons
    finally:
        stop.set()
        await task


async def test_below_the_elevation_mask_the_laser_stops_within_a_period() -> None:
    def change(c: Conditions) -> float:
        c.pointing = (180.0, 9.5)
        return time.time()

    await _stops_within_a_period(change, StationLaserSettings(), "below elevation mask")


async def test_inside_a_keep_out_cone_the_laser_stops_within_a_period() -> None:
    cone = StationKeepOutCone(azimuth_deg=185.0, elevation_deg=45.0, half_angle_deg=2.0)

    def change(c: Conditions) -> float:
        c.pointing = (184.0, 45.5)
        return time.time()

    await _stops_within_a_period(
        change, StationLaserSettings(keep_out_cones=(cone,)), "keep-out cone"
    )


async def test_losing_track_stops_the_laser_within_a_period() -> None:
    def change(c: Conditions) -> float:
        c.tracking = False
        return time.time()

    await _stops_within_a_period(change, StationLaserSettings(), "tracking lost")


async def test_a_lost_ground_link_stops_the_laser_within_a_period_of_its_timeout() -> None:
    def change(c: Conditions) -> float:
        c.link = False
        return time.time() + 0.3

    await _stops_within_a_period(
        change, StationLaserSettings(link_timeout_s=0.3), "ground link lost"
    )


async def test_an_unauthenticated_request_stops_the_laser_at_once_until_an_authenticated_one() -> (
    None
):
    laser = RecordingLaser()
    safety = StationLaserSafety(laser, StationLaserSettings(), lambda: True)
    await safety.update(time.time(), (180.0, 45.0), True)
    assert laser.on
    since = time.time()
    assert not await safety.request_emission(time.time(), authenticated=False)
    assert not laser.on and laser.off_at[-1] - since < 0.05
    await safety.update(time.time(), (180.0, 45.0), True)
    assert not laser.on and "unauthenticated request" in safety.reasons  # latched
    assert await safety.request_emission(time.time(), authenticated=True)
    await safety.update(time.time(), (180.0, 45.0), True)
    assert laser.on


async def test_after_a_loss_the_search_may_resume_once_the_hold_has_passed() -> None:
    laser = RecordingLaser()
    safety = StationLaserSafety(laser, StationLaserSettings(reacquire_after_s=5.0), lambda: True)
    assert await safety.update(100.0, (180.0, 45.0), False) == ()  # before acquisition: search
    assert await safety.update(101.0, (180.0, 45.0), True) == ()
    assert await safety.update(102.0, (180.0, 45.0), False) == ("tracking lost",)
    assert await safety.update(106.9, (180.0, 45.0), False) == ("tracking lost",)
    assert await safety.update(107.0, (180.0, 45.0), False) == ()
    assert safety.reasons_now(107.1, None, False) == ("pointing unknown",)


@pytest.mark.timeout(60)
async def test_in_the_atp_loop_the_laser_follows_the_pass_and_stops_at_a_keep_out_cone() -> None:
    plan = make_plan(RISING, 20.0)
    entry = RISING + 12.0
    az, el = apparent_direction(entry)
    cone = StationKeepOutCone(azimuth_deg=az + 0.5, elevation_deg=el, half_angle_deg=0.5)
    laser = RecordingLaser()
    async with bench(RISING - 21.0, ("gimbal",)) as b:
        safety = StationLaserSafety(
            laser, StationLaserSettings(keep_out_cones=(cone,)), lambda: True
        )
        atp = b.controller(plan)
        atp.laser_safety = safety
        await run_pass(b, atp)

    switched = [(t, on, reasons) for t, on, reasons in safety.history]
    assert switched[0][1] is True and RISING <= switched[0][0] < RISING + 0.2  # from AOS
    off = next(item for item in switched if not item[1])
    assert "keep-out cone" in off[2]
    # the apparent track enters the cone's edge where the laser went off, within a period
    times = np.arange(RISING, RISING + 20.0, 0.02)
    inside = [cone.contains(*apparent_direction(t)) for t in times]
    first_inside = float(times[int(np.argmax(inside))])
    assert abs(off[0] - first_inside) <= 2 * PERIOD_S
    assert not laser.on and switched[-1][2] == ("ATP ended",)
