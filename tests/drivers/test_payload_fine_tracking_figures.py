"""The payload controller's fine-tracking figures as the payload computer collects them from
its housekeeping (PayloadLinkSource over a real pty, simulated clock) for its pass summary:
the loop's residual and lock over a window, unknown (NaN) where no report has a figure."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from drivers.payload_link import PayloadLink
from drivers.payload_link_source import PayloadLinkSource
from drivers.transport import SerialTransport
from firmware_shims.fine_tracking import FineTracking, FineTrackingSettings
from firmware_shims.laser_interlock import InterlockSettings, LaserInterlock
from firmware_shims.payload_controller import PayloadController
from satqkd_runtime.clock import SimClock
from sim_backends.instruments import SimPulsedSource
from sim_backends.platform_disturbance import PlatformDisturbance, PointingScene

T0 = 1_700_000_000.0


async def _collect(fine_tracking: FineTracking | None, seconds: float) -> PayloadLinkSource:
    """Run a controller (housekeeping every second; its interlock steps the loop) for
    `seconds` of simulated time; get the payload computer's source driver after it read the
    controller's reports."""
    clock = SimClock(T0)
    laser = SimPulsedSource("laser", lambda index: np.zeros(len(index)), clock)
    async with PayloadController(
        clock, tick_s=0.1, housekeeping_interval_s=1.0, link_timeout_s=600.0,
        source_hardware=laser, fine_tracking=fine_tracking,
        interlock=LaserInterlock(InterlockSettings(10.0, (), 600.0), bytes(range(32))),
    ) as controller:  # fmt: skip
        assert controller.port_path is not None
        link = PayloadLink("payload-link", SerialTransport(controller.port_path, 115200))
        source = PayloadLinkSource("source", link, clock, keep_alive_interval_s=30.0)
        await source.connect(timeout_s=2.0)
        try:
            while clock.now_unix_s() < T0 + seconds:
                await clock.advance_to(clock.now_unix_s() + 0.1)
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.05)  # the last report crosses the line
        finally:
            await source.close()
    return source


async def test_the_loops_residual_and_lock_reach_the_payload_computer() -> None:
    settings = FineTrackingSettings(sample_rate_hz=2000.0, bandwidth_hz=100.0, lost_after_s=0.05)
    disturbance = PlatformDisturbance(attitude_knowledge_error_3sigma_urad=300.0)
    # the uplink beacon in view from 3 s on: before, the loop has nothing to lock on
    scene = PointingScene.generate(disturbance, 3, T0, 30.0, 2000.0, 0.2, (T0 + 3.0, T0 + 30.0))
    source = await _collect(FineTracking(settings, scene), 12.0)
    reports = list(source.fine_tracking_reports)
    assert len(reports) >= 10
    residual, locked = source.fine_tracking_over(T0 + 5.0, T0 + 12.0)
    # locked throughout, and the residual far below the platform's disturbance it rejected
    assert locked == 1.0
    assert 0.0 < residual < 0.1 * float(np.std(scene.disturbance_urad))
    early_residual, early_locked = source.fine_tracking_over(T0, T0 + 6.0)
    assert 0.0 < early_locked < 1.0  # not locked before the beacon appeared
    assert math.isfinite(early_residual)
    assert all(math.isnan(v) for v in source.fine_tracking_over(T0 + 100.0, T0 + 200.0))


async def test_a_controller_without_the_loop_gives_no_figure_not_zero() -> None:
    source = await _collect(None, 4.0)
    assert len(source.fine_tracking_reports) >= 3
    assert all(math.isnan(v) for v in source.fine_tracking_over(T0, T0 + 4.0))
