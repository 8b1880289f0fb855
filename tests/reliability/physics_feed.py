"""Test harness: a real pass's photons for real daemon processes. The test process runs the
channel physics of a clear Jinan-1/Xinglong pass and a TT/1 time-tagger emulator on a loopback
TCP port; the station daemon (`satqkd ogs run --instruments` a bench naming that port) reads
its tags from it, as from a tagger on a LAN; the payload daemon (`satqkd payload run`, its
simulated source) emits on the real clock.

The pass is replayed now: its plan's times are the physical pass's moved to the wall clock by
a whole number of seconds `shift_s`, and its TLE is the pass's own with the epoch moved by
`shift_s` and the right ascension of the node turned by the Earth's rotation over `shift_s`,
so that the station sees the same geometry (range, range rate, elevation) now as at the
physical pass (within a few metres: the TLE's epoch resolution). The physics knows the
source's pattern as nature does: the payload draws its per-pass pattern key from an entropy
source seeded with `--seed` (`--insecure-seeded-entropy`, tests only), and the feed draws the
same bytes (purpose `pattern-key/<station>/<plan>`, first draw).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sgp4.api import WGS72, Satrec
from sgp4.exporter import export_tle

from drivers.interfaces import TagBuffer
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import Scenario, load_scenario
from satqkd.pass_physics import PassPhysics, plan_pass
from satqkd.wiring import pass_plan_fields
from satqkd_payload.key_lifecycle import PATTERN_KEY_BYTES
from sim_backends.emulators.time_tagger import TimeTaggerEmulator
from sim_backends.entropy import seeded_draw

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = {
    "cascade": REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml",
    "ldpc": REPO / "configs" / "scenarios" / "jinan1-xinglong-ldpc.yaml",
}
SEED = 7
QKD_AFTER_AOS_S = 190  # near culmination of the seed-7 clear pass (tests/conftest.py's pass)
QKD_WINDOW_S = 30.0
SIDEREAL_DEG_PER_DAY = 360.98564736629  # the Earth's rotation against the stars (GMST rate)
_TLE_EPOCH_JD0 = 2433281.5  # 1949 Dec 31 00:00 UT: sgp4init's epoch origin


class WallClock:
    """The real clock, as the tagger emulator reads it."""

    def now_unix_s(self) -> float:
        return time.time()


def shifted_tle(line1: str, line2: str, shift_s: float) -> tuple[str, str]:
    """Get: the TLE of the same orbit `shift_s` later, seen from the turning Earth: the epoch
    moved by `shift_s`, the node turned by the Earth's rotation meanwhile."""
    sat = Satrec.twoline2rv(line1, line2, WGS72)
    moved = Satrec()
    epoch_days = sat.jdsatepoch + sat.jdsatepochF - _TLE_EPOCH_JD0 + shift_s / 86400.0
    node = sat.nodeo + math.radians(SIDEREAL_DEG_PER_DAY * shift_s / 86400.0)
    moved.sgp4init(
        WGS72, "i", sat.satnum, epoch_days, sat.bstar, sat.ndot, sat.nddot, sat.ecco,
        sat.argpo, sat.inclo, sat.mo, sat.no_kozai, node % (2.0 * math.pi),
    )  # fmt: skip
    return export_tle(moved)


def mission_file(scenario: Scenario) -> Path:
    """Get: the mission file the scenario names (the daemons read it)."""
    return REPO / "configs" / "missions" / f"{scenario.scenario.mission}.yaml"


@dataclass
class PhysicsFeed:
    """One pass's physics moved to now, and the TT/1 emulator it feeds (see the module)."""

    reconciliation: str  # "cascade" or "ldpc"
    payload_seed: int = SEED
    tagger_host: str = "127.0.0.1"  # the address the tagger emulator listens on
    scenario: Scenario = field(init=False)
    physics: PassPhysics = field(init=False)
    tagger: TimeTaggerEmulator = field(init=False)
    shift_s: float = 0.0
    fed_frames: int = 0
    signal_frames: int = 0

    def __post_init__(self) -> None:
        scenario = load_scenario(SCENARIOS[self.reconciliation], seed=SEED)
        sim = scenario.scenario.simulation.model_copy(
            update={"qkd_start_after_aos_s": QKD_AFTER_AOS_S}
        )
        self.scenario = scenario.model_copy(
            update={"scenario": scenario.scenario.model_copy(update={"simulation": sim})}
        )
        self.physics = plan_pass(self.scenario, max_duration_s=QKD_WINDOW_S)
        self.tagger = TimeTaggerEmulator(WallClock(), host=self.tagger_host)

    async def __aenter__(self) -> PhysicsFeed:
        await self.tagger.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.tagger.close()

    def bench(self, directory: Path) -> Path:
        """Control: write the station's bench (its tagger on the emulator's port); get it."""
        path = directory / "station-bench.yaml"
        path.write_text(
            "name: station-physics-feed\n"
            "description: the station's time tagger on the test's TT/1 emulator\n"
            "instruments:\n"
            "  tagger:\n"
            "    driver: tcp_time_tagger\n"
            f"    resource: {self.tagger.resource}\n"
        )
        return path

    def plan(self, plan_id: int, qkd_start_in_s: float) -> dict[str, Any]:
        """Get: LOAD_PASS_PLAN fields of the pass moved to start its QKD window
        `qkd_start_in_s` from now (a whole second, both ends)."""
        wall_start = float(int(time.time()) + int(qkd_start_in_s) + 1)
        self.shift_s = wall_start - float(self.physics.qkd_start_unix_s)
        plan = pass_plan_fields(plan_id, self.scenario, self.physics)
        for name in ("aos_unix_s", "los_unix_s", "qkd_start_unix_s", "qkd_stop_unix_s"):
            plan[name] = float(plan[name]) + self.shift_s
        # end of pass soon after the window (a standalone pass's end of tracking is LOS)
        plan["los_unix_s"] = plan["qkd_stop_unix_s"] + 5.0
        plan["tle_line1"], plan["tle_line2"] = shifted_tle(*self.physics.tle, self.shift_s)
        return plan

    def pattern(self, plan_id: int) -> SourceSequencer:
        """Get: the source's pattern of a plan, as the seeded payload draws its key."""
        station = self.scenario.station.name
        key = seeded_draw(
            self.payload_seed, f"pattern-key/{station}/{plan_id}", 0, PATTERN_KEY_BYTES
        )
        source = self.scenario.mission.source
        return SourceSequencer(key, source.probabilities, source.basis_x_probability)

    async def feed(self, plan_id: int, emitting: Callable[[], bool]) -> None:
        """Control: feed the window's frames to the tagger as the wall clock reaches each
        frame's end (signal and background while `emitting()`, nothing after: a dead
        payload's source emits nothing; a stopped tagger drops them)."""
        physics = self.physics
        sequencer = self.pattern(plan_id)
        await self.tagger.started.wait()
        assert self.tagger.epoch_unix_s is not None
        epoch_physics = self.tagger.epoch_unix_s - self.shift_s
        for k in range(physics.n_frames):
            t0 = physics.qkd_start_unix_s + self.shift_s + k * physics.frame_s
            await asyncio.sleep(max(0.0, t0 + physics.frame_s - time.time()))
            channel, stamps = np.zeros(0, np.uint8), np.zeros(0, np.int64)
            if emitting():
                channel, stamps = physics.detections_for_frame(k, sequencer.pattern, epoch_physics)
                self.signal_frames += 1
            await self.tagger.feed(TagBuffer(channel, stamps, t0, t0 + physics.frame_s))
            self.fed_frames += 1
