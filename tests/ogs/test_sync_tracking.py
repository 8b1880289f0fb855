"""The station keeps the clock offset line from frame to frame: OgsSession.process_buffer on the
tags of a pass whose payload oscillator runs 100 ppb fast."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from drivers.interfaces import TagBuffer
from firmware_shims.source_sequencer import SourceSequencer
from satqkd.config import Scenario, load_scenario
from satqkd.pass_physics import PassPhysics, plan_pass, station_geometry
from satqkd.wiring import protocol_parameters
from satqkd_core import rng
from satqkd_core.sync import assign_pulse_indices
from satqkd_ogs.session import OgsSession, PassPlan
from satqkd_runtime.keystore import KeyStore
from tests.seeded_entropy import seeded_entropy_now

REPO = Path(__file__).resolve().parents[2]
DRIFT_SCENARIO = REPO / "configs" / "scenarios" / "jinan1-xinglong-clock-drift.yaml"
N_FRAMES = 8
N_PLANNED_FRAMES = 23  # the plan's window: the late-lock test uses frames 20-22


class RecordingChannel:
    """Stands in for the classical channel: keeps what the session sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def send(self, name: str, **fields: object) -> None:
        self.sent.append((name, fields))


@pytest.fixture(scope="module")
def drifting_pass() -> tuple[Scenario, PassPhysics, SourceSequencer]:
    scenario = load_scenario(DRIFT_SCENARIO)
    # A few seconds near culmination, where the frames are full of tags.
    sim = scenario.scenario.simulation.model_copy(update={"qkd_start_after_aos_s": 190.0})
    scenario = scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"simulation": sim})}
    )
    source = scenario.mission.source
    sequencer = SourceSequencer(
        rng.derive_key(scenario.scenario.seed, "payload/qrng"),
        source.probabilities,
        source.basis_x_probability,
    )
    return scenario, plan_pass(scenario, max_duration_s=float(N_PLANNED_FRAMES)), sequencer


def _session(
    scenario: Scenario, physics: PassPhysics, tmp_path: Path, **options: float
) -> OgsSession:
    plan = PassPlan(
        plan_id=1,
        mission=scenario.mission.name,
        station=scenario.station.name,
        tle_line1=physics.tle[0],
        tle_line2=physics.tle[1],
        aos_unix_s=physics.window.aos_unix_s,
        los_unix_s=physics.window.los_unix_s,
        qkd_start_unix_s=physics.qkd_start_unix_s,
        qkd_stop_unix_s=physics.qkd_stop_unix_s,
        repetition_rate_hz=physics.source.repetition_rate_hz,
    )
    protocol = scenario.mission.protocol
    session = OgsSession(
        plan,
        station_geometry(scenario),
        RecordingChannel(),  # type: ignore[arg-type]
        KeyStore(tmp_path / "keys"),
        protocol_parameters(scenario.mission),
        entropy=seeded_entropy_now(1),
        sync_window_ps=protocol.sync_window_ps,
        cascade_passes=protocol.cascade_passes,
        reply_timeout_s=1.0,
        **options,
    )
    session.tagger_epoch_unix_s = physics.qkd_start_unix_s - 1.0
    return session


def _sifted_error_rate(
    sequencer: SourceSequencer, pulse_index: np.ndarray, basis: np.ndarray, bit: np.ndarray
) -> float:
    """Error rate of the detections whose basis matches the one the payload sent."""
    pattern = sequencer.pattern(pulse_index)
    match = basis == pattern.basis
    return float(np.mean(bit[match] != pattern.bit[match]))


async def test_each_frame_gets_its_own_pulse_indices_under_a_100_ppb_drift(
    drifting_pass: tuple[Scenario, PassPhysics, SourceSequencer], tmp_path: Path
) -> None:
    scenario, physics, sequencer = drifting_pass
    session = _session(scenario, physics, tmp_path)
    assert session.result.clock_drift_ppb is None
    epoch = session.tagger_epoch_unix_s
    for k in range(N_FRAMES):
        channel, ts = physics.detections_for_frame(k, sequencer.pattern, epoch)
        t0 = physics.qkd_start_unix_s + k * physics.frame_s
        await session.process_buffer(TagBuffer(channel, ts, t0, t0 + physics.frame_s))
    assert session.timing_state.locked
    assert session.timing_state.frames_measured == N_FRAMES
    assert session.result.clock_drift_ppb == pytest.approx(100.0, abs=0.05)
    assert session.result.assigned_fraction > 0.98
    for record in session.result.chunks:
        assert record.detections > 10_000
        error_rate = _sifted_error_rate(sequencer, record.pulse_index, record.basis, record.bit)
        assert error_rate < 0.03
    # One detection report per frame went to the payload.
    assert [name for name, _ in session.channel.sent] == ["DETECTION_REPORT"] * N_FRAMES
    # The offset walks 100 ns (ten periods) per frame, whole periods included.
    np.testing.assert_allclose(np.diff(session.result.clock_offsets_ps), -1e5, atol=50.0)

    # Without the tracked line, frame by frame, the last frame's indices are wrong: the offset
    # is far past half a period, so detections land on other pulses and the errors are ~50 %.
    channel, ts = physics.detections_for_frame(N_FRAMES - 1, sequencer.pattern, epoch)
    arrival_rel_s = epoch - session.light_time.grid_start_unix_s + ts * 1e-12
    qkd_start_ps = round((physics.qkd_start_unix_s - epoch) * 1e12)
    stateless = assign_pulse_indices(
        ts,
        session.light_time.delay_at_arrival_ps(arrival_rel_s),
        qkd_start_ps,
        float(session.plan.pulse_period_ps),
        session.sync_window_ps,
    )
    ok = stateless.in_window & (channel >= 1)
    detector = channel[ok].astype(np.uint8) - 1
    error_rate = _sifted_error_rate(
        sequencer, stateless.pulse_index[ok], detector >> 1, detector & 1
    )
    assert error_rate > 0.4


async def test_frames_before_acquisition_are_reported_and_not_assigned(
    drifting_pass: tuple[Scenario, PassPhysics, SourceSequencer],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scenario, physics, sequencer = drifting_pass
    session = _session(scenario, physics, tmp_path)
    epoch = session.tagger_epoch_unix_s
    channel, ts = physics.detections_for_frame(0, sequencer.pattern, epoch)
    # A buffer of dark-like tags only: the signal's pulses scrambled in time.
    dark = np.sort(ts + np.random.default_rng(3).integers(0, 10_000, ts.size))
    start = physics.qkd_start_unix_s
    with caplog.at_level(logging.WARNING, logger="satqkd.ogs"):
        await session.process_buffer(TagBuffer(channel[:200], dark[:200], start, start + 1.0))
    assert "acquisition: no timing peak" in caplog.text
    assert session.result.chunks[0].detections == 0
    assert session.result.in_window_tags == 0 and session.result.tags == 200
    assert session.result.clock_drift_ppb is None and session.result.clock_offsets_ps == []
    assert session.timing_state.mode == "acquiring"
    assert session.result.sync_locked_after_s is None
    # The next frame carries the signal: acquired there, counted from QKD start.
    channel, ts = physics.detections_for_frame(1, sequencer.pattern, epoch)
    await session.process_buffer(TagBuffer(channel, ts, start + 1.0, start + 2.0))
    assert session.timing_state.last_frame == "acquired"
    assert session.result.sync_acquisition_attempts == 2
    assert session.result.sync_locked_after_s == pytest.approx(1.0)
    record = session.result.chunks[1]
    assert _sifted_error_rate(sequencer, record.pulse_index, record.basis, record.bit) < 0.03
    assert session.result.clock_drift_ppb == pytest.approx(100.0, abs=0.1)


async def test_a_pass_whose_first_20_s_are_dark_locks_later_and_sifts(
    drifting_pass: tuple[Scenario, PassPhysics, SourceSequencer], tmp_path: Path
) -> None:
    # The beacon not yet acquired: 20 frames of dark tags only, then the signal (payload 100 ppb
    # fast, so the offset has walked 2 us, 200 periods, by then). Acquisition is retried on
    # every frame and counts the whole periods back to pulse 0 from the later frames' line.
    scenario, physics, sequencer = drifting_pass
    session = _session(scenario, physics, tmp_path, sync_drift_change_ppb_per_s=0.001)
    epoch = session.tagger_epoch_unix_s
    dark = np.random.default_rng(4)
    for k in range(20):
        t0 = physics.qkd_start_unix_s + k * physics.frame_s
        start_ps = round((t0 - epoch) * 1e12)
        ts = np.sort(dark.integers(start_ps, start_ps + 10**12, 2_000))
        channel = dark.integers(1, 5, ts.size).astype(np.uint8)
        await session.process_buffer(TagBuffer(channel, ts, t0, t0 + physics.frame_s))
    assert session.timing_state.mode == "acquiring" and session.result.detections == 0
    for k in range(20, 20 + 3):
        channel, ts = physics.detections_for_frame(k, sequencer.pattern, epoch)
        t0 = physics.qkd_start_unix_s + k * physics.frame_s
        await session.process_buffer(TagBuffer(channel, ts, t0, t0 + physics.frame_s))
    assert session.timing_state.locked
    assert session.result.sync_locked_after_s == pytest.approx(20.0)
    assert session.result.sync_acquisition_attempts == 21
    assert session.result.clock_drift_ppb == pytest.approx(100.0, abs=0.1)
    for record in session.result.chunks[20:]:
        assert record.detections > 10_000
        error_rate = _sifted_error_rate(sequencer, record.pulse_index, record.basis, record.bit)
        assert error_rate < 0.03
