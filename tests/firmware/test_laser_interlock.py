"""The payload controller's laser interlock, on the real clock and a real pty: each condition
stops the quantum source and the beacon within the stated bound (one tick after the condition
arises, plus the hardware's disable; at once for an unauthenticated request)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from drivers.payload_link import PayloadLink, TelecommandError
from drivers.transport import SerialTransport
from firmware_shims.fine_tracking import FineTracking, FineTrackingSettings
from firmware_shims.laser_interlock import (
    BeamGeometry,
    InterlockSettings,
    KeepOutCone,
    LaserInterlock,
    emission_request_tag,
)
from firmware_shims.payload_controller import PayloadController
from satqkd_core.payload_icd import DisableReason, FunctionId, InterlockReason, pack_function
from satqkd_runtime.clock import RealClock
from sim_backends.platform_disturbance import PlatformDisturbance, PointingScene

pytestmark = pytest.mark.timeout(60)  # real clock and a pty: a stall fails, never hangs

TICK_S = 0.05
# one tick after the condition, the hardware's disable, and scheduling slack on a shared CI box
BOUND_S = TICK_S + 0.15
KEY = bytes(range(32))


class RecordingLaser:
    """A source or beacon that records when it was told to stop emitting (wall clock)."""

    def __init__(self) -> None:
        self.enabled = False
        self.disabled_at: list[float] = []

    async def configure(self, repetition_rate_hz: float) -> None:
        pass

    async def enable(self, first_pulse_unix_s: float | None = None) -> None:
        self.enabled = True

    async def disable(self) -> None:
        if self.enabled:
            self.disabled_at.append(time.time())
        self.enabled = False


@dataclass
class Sky:
    """The beam's geometry as the test moves it."""

    azimuth_deg: float = 120.0
    elevation_deg: float = 45.0
    known: bool = True

    def __call__(self, now: float) -> BeamGeometry | None:
        if not self.known:
            return None
        return BeamGeometry(self.azimuth_deg, self.elevation_deg)


@dataclass
class Bench:
    controller: PayloadController
    link: PayloadLink
    source: RecordingLaser
    beacon: RecordingLaser
    sky: Sky
    counter: int = 0

    async def emit(self) -> None:
        """Load a plan whose window is open now and start both lasers (signed request)."""
        now = time.time()
        await self.link.load_pass_plan(1, 7, now + 0.05, now + 60.0, 1e8)
        self.counter += 1
        first = now + 0.1
        tag = emission_request_tag(KEY, first, self.counter)
        data = pack_function(FunctionId.SOURCE_ENABLE_SIGNED, first, self.counter, tag)
        await self.link.send_telecommand(8, 1, data, label="SOURCE_ENABLE_SIGNED")
        await asyncio.sleep(2 * TICK_S)
        assert self.controller.source_enabled and self.source.enabled
        assert self.controller.beacon_enabled and self.beacon.enabled


def _scene() -> PointingScene:
    """The platform as the mission has it, with the uplink beacon in view for two minutes."""
    start = time.time() - 0.5
    disturbance = PlatformDisturbance(attitude_knowledge_error_3sigma_urad=300.0)
    return PointingScene.generate(disturbance, 3, start, 120.0, 2000.0, 0.2)


@contextlib.asynccontextmanager
async def _bench(
    *,
    cones: tuple[KeepOutCone, ...] = (),
    link_timeout_s: float = 30.0,
    key: bytes | None = KEY,
) -> AsyncIterator[Bench]:
    settings = FineTrackingSettings(sample_rate_hz=2000.0, bandwidth_hz=100.0, lost_after_s=0.05)
    source, beacon, sky = RecordingLaser(), RecordingLaser(), Sky()
    controller = PayloadController(
        RealClock(),
        link_timeout_s=600.0,
        tick_s=TICK_S,
        housekeeping_interval_s=60.0,
        source_hardware=source,
        interlock=LaserInterlock(InterlockSettings(10.0, cones, link_timeout_s), key),
        fine_tracking=FineTracking(settings, _scene()),
        beam_geometry=sky,
        beacon_hardware=beacon,
    )
    async with controller:
        assert controller.port_path is not None
        link = PayloadLink("payload-link", SerialTransport(controller.port_path, 115200))
        await link.connect(timeout_s=2.0)
        try:
            yield Bench(controller, link, source, beacon, sky)
        finally:
            await link.close()


def _assert_stopped_within(bench: Bench, since: float, bound_s: float, reason: int) -> None:
    assert not bench.controller.source_enabled and not bench.controller.beacon_enabled
    assert bench.source.disabled_at and bench.beacon.disabled_at
    assert bench.source.disabled_at[0] - since <= bound_s
    assert bench.beacon.disabled_at[0] - since <= bound_s
    assert bench.controller.disable_reason is DisableReason.LASER_INTERLOCK
    assert bench.controller.interlock is not None
    assert bench.controller.interlock.reasons & reason


async def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while not condition() and time.time() < deadline:
        await asyncio.sleep(0.005)


async def test_losing_the_uplink_beacon_stops_both_lasers_within_a_tick() -> None:
    async with _bench() as bench:
        await bench.emit()
        tracking = bench.controller.fine_tracking
        assert tracking is not None and tracking.locked
        lost_at = time.time() + 0.3
        scene = tracking.scene
        scene.beacon_visible[scene.sample_index(lost_at) :] = False  # type: ignore[attr-defined]
        await _wait_for(lambda: bool(bench.source.disabled_at), 3.0)
        # tracking counts as lost lost_after_s (0.05 s) after the beacon's last sample
        _assert_stopped_within(bench, lost_at + 0.05, BOUND_S, InterlockReason.TRACKING_LOST)
        assert bench.source.disabled_at[0] >= lost_at  # not before the beacon went


async def test_a_beam_below_the_elevation_mask_stops_both_lasers_within_a_tick() -> None:
    async with _bench() as bench:
        await bench.emit()
        since = time.time()
        bench.sky.elevation_deg = 9.0
        await _wait_for(lambda: bool(bench.source.disabled_at), 2.0)
        _assert_stopped_within(bench, since, BOUND_S, InterlockReason.BELOW_ELEVATION_MASK)


async def test_a_beam_entering_a_keep_out_cone_stops_both_lasers_within_a_tick() -> None:
    cone = KeepOutCone(azimuth_deg=130.0, elevation_deg=45.0, half_angle_deg=3.0)
    async with _bench(cones=(cone,)) as bench:
        await bench.emit()  # 120 deg azimuth: 7 deg from the cone's centre
        since = time.time()
        bench.sky.azimuth_deg = 128.0
        await _wait_for(lambda: bool(bench.source.disabled_at), 2.0)
        _assert_stopped_within(bench, since, BOUND_S, InterlockReason.KEEP_OUT_CONE)


async def test_an_unknown_beam_direction_stops_both_lasers() -> None:
    async with _bench() as bench:
        await bench.emit()
        since = time.time()
        bench.sky.known = False
        await _wait_for(lambda: bool(bench.source.disabled_at), 2.0)
        _assert_stopped_within(bench, since, BOUND_S, InterlockReason.NO_GEOMETRY)


async def test_a_silent_ground_link_stops_both_lasers_within_a_tick_of_its_timeout() -> None:
    async with _bench(link_timeout_s=0.4) as bench:
        await bench.emit()
        last_tc = bench.controller._last_valid_tc_unix_s
        await _wait_for(lambda: bool(bench.source.disabled_at), 2.0)
        _assert_stopped_within(bench, last_tc + 0.4, BOUND_S, InterlockReason.LINK_LOST)
        assert bench.source.disabled_at[0] >= last_tc + 0.4


async def test_an_unsigned_request_to_emit_is_refused_and_stops_emission_at_once() -> None:
    async with _bench() as bench:
        await bench.emit()
        since = time.time()
        with pytest.raises(TelecommandError, match="unauthenticated emission request"):
            await bench.link.enable_source(time.time() + 0.1)  # plain SOURCE_ENABLE
        _assert_stopped_within(bench, since, 0.1, InterlockReason.UNAUTHENTICATED_REQUEST)
        events = [name for _, name, _ in bench.controller.events]
        assert "UNAUTHENTICATED_EMISSION_REQUEST" in events
        assert "LASER_INTERLOCK_TRIPPED" in events


async def test_a_replayed_or_forged_tag_is_refused_and_latches_the_interlock() -> None:
    async with _bench() as bench:
        await bench.emit()
        first = time.time() + 0.1
        replay = pack_function(
            FunctionId.SOURCE_ENABLE_SIGNED, first, bench.counter, emission_request_tag(
                KEY, first, bench.counter
            )
        )  # fmt: skip
        with pytest.raises(TelecommandError, match="unauthenticated"):
            await bench.link.send_telecommand(8, 1, replay)
        assert not bench.source.enabled
        forged = pack_function(FunctionId.SOURCE_ENABLE_SIGNED, first, 99, bytes(16))
        with pytest.raises(TelecommandError, match="unauthenticated"):
            await bench.link.send_telecommand(8, 1, forged)
        assert not bench.controller.source_enabled
        # latched: the beacon stays off until an authenticated request clears it
        await asyncio.sleep(3 * TICK_S)
        assert not bench.controller.beacon_enabled
        assert bench.controller.interlock is not None
        assert bench.controller.interlock.unauthenticated_requests == 2


async def test_housekeeping_reports_tracking_and_the_interlock() -> None:
    async with _bench() as bench:
        await bench.emit()
        await asyncio.sleep(0.2)
        report = await bench.link.request_housekeeping()
        values = report.values
        assert values["tracking_locked"] == 1 and values["beacon_enabled"] == 1
        assert values["interlock_reasons"] == 0
        assert 0.0 < values["fine_residual_rms_urad"] < 5.0
        bench.sky.elevation_deg = 5.0
        await asyncio.sleep(3 * TICK_S)
        values = (await bench.link.request_housekeeping()).values
        assert values["interlock_reasons"] & InterlockReason.BELOW_ELEVATION_MASK
        assert values["beacon_enabled"] == 0 and values["source_enabled"] == 0


async def test_emission_is_refused_while_the_interlock_forbids_it() -> None:
    async with _bench() as bench:
        bench.sky.elevation_deg = 5.0
        now = time.time()
        await bench.link.load_pass_plan(1, 7, now + 0.05, now + 60.0, 1e8)
        tag = emission_request_tag(KEY, now + 0.1, 1)
        data = pack_function(FunctionId.SOURCE_ENABLE_SIGNED, now + 0.1, 1, tag)
        with pytest.raises(TelecommandError, match="laser interlock"):
            await bench.link.send_telecommand(8, 1, data)
        assert not bench.source.enabled and not bench.beacon.enabled


def test_keep_out_cone_uses_the_great_circle_separation() -> None:
    cone = KeepOutCone(azimuth_deg=0.0, elevation_deg=80.0, half_angle_deg=15.0)
    assert cone.contains(180.0, 86.0)  # 180 deg apart in azimuth, 14 deg across the zenith
    assert not cone.contains(0.0, 64.0)  # 16 deg below its centre
    assert not cone.contains(90.0, 70.0)
