"""`satqkd sim pass` for a BBM92 mission (protocol.family bbm92, docs/bbm92.md, decision 0035).

The same three roles as the BB84 pass (satqkd.simulation): the control centre sends the signed
pass plan over the bus; the physics makes pairs frame by frame (sim_backends.pairs: the pair
source, the payload's own four detectors, the downlink photon through the frame's link budget,
the station's detectors, noise, both clocks) and feeds the payload's on-board tagger and the
station's tagger; the recorder keeps what the daemons publish. The payload and station daemons
are the real ones (satqkd_payload.bbm92_session, satqkd_ogs.bbm92_session); the only path
between them is the broker.

The payload's clock is off by the scenario's `clock_offset_ps` plus a time-of-day error drawn
from the seed within half the mission's `time_sync.offset_uncertainty_s` (the daemons must find
it by correlation), and runs `clock_drift_ppb` fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivers.interfaces import TagBuffer
from satqkd.assembly import assemble_node
from satqkd.config import ConfigError, Scenario, station_path
from satqkd.instruments_config import BenchConfig
from satqkd.pass_physics import (
    PLAN_LEAD_S,
    choose_pass,
    detector_model,
    link_timeline,
    qkd_frames,
    station_geometry,
)
from satqkd.report_builder import build_report
from satqkd.sim_link import link_report
from satqkd.wiring import ogs_settings, preshared_auth_key, protocol_parameters
from satqkd_core import rng
from satqkd_core.bbm92 import Bbm92Parameters
from satqkd_core.ephemeris import topocentric
from satqkd_core.errors import ProtocolError
from satqkd_core.light_time import LightTimeModel
from satqkd_ogs.daemon import OgsDaemon
from satqkd_payload.daemon import PayloadDaemon
from satqkd_payload.settings import PayloadSettings
from satqkd_runtime.clock import SimClock
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import PRESHARED_KEY_SECRET, install_preshared_key
from satqkd_runtime.telecommand_auth import (
    TelecommandVerifier,
    install_telecommand_key,
)
from sim_backends.channel import DetectorModel
from sim_backends.entropy import SeededEntropySource
from sim_backends.pairs import PairSourceModel, PassSegment, generate_pair_tags

__all__ = [
    "Bbm92Physics",
    "bbm92_parameters",
    "plan_bbm92_pass",
    "run_bbm92_pass",
]

_TIMING_BLOCK_S = 10.0


@dataclass
class Bbm92Physics:
    """Geometry, link and pairs of one BBM92 pass, frame by frame (the attributes the report's
    truth reads have the names `satqkd.pass_physics.PassPhysics` gives them)."""

    tle: tuple[str, str]
    window: Any  # sim_backends.orbit.PassWindow
    qkd_start_unix_s: int
    qkd_stop_unix_s: int
    frame_s: float
    clock_start_unix_s: float
    segments: list[PassSegment]
    frame_polarisation_error: np.ndarray
    frame_total_loss_db: np.ndarray
    frame_pointing_loss_db: np.ndarray
    frame_elevation_deg: np.ndarray
    acquisition_allowance_s: float
    transmitter_pointing_rms_urad: float
    source: PairSourceModel
    payload_detectors: DetectorModel
    ogs_detectors: DetectorModel
    payload_clock_offset_ps: float
    payload_clock_drift: float
    intercept_resend_fraction: float
    frame_seed_key: int
    ogs_tagger_resolution_ps: int
    frame_range_m: np.ndarray = field(default_factory=lambda: np.zeros(0))  # at frame middles
    light_time: LightTimeModel | None = None  # the true range, for a modelled classical link
    payload_pointing: Any = None

    @property
    def n_frames(self) -> int:
        """Get: number of QKD frames."""
        return len(self.segments)

    def tags_for_frame(
        self, k: int, payload_epoch_unix_s: float, ogs_epoch_unix_s: float
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], int]:
        """Get: (payload channel, timestamp), (station channel, timestamp) on each tagger's
        own epoch for the pairs emitted in frame k, and the pairs emitted."""
        t0 = self.qkd_start_unix_s + k * self.frame_s
        source = PairSourceModel(
            self.source.pair_rate_hz,
            self.source.payload_collection,
            float(self.frame_polarisation_error[k]),
        )
        clock_error_ps = self.payload_clock_offset_ps + self.payload_clock_drift * (
            (t0 - self.qkd_start_unix_s) * 1e12
        )
        seed = int(rng.random_u64(self.frame_seed_key, np.array([k], dtype=np.int64))[0] >> 1)
        tags = generate_pair_tags(
            source, self.payload_detectors, self.ogs_detectors, self.segments[k],
            clock_error_ps, self.payload_clock_drift, seed, self.intercept_resend_fraction,
            self.ogs_tagger_resolution_ps,
        )  # fmt: skip
        payload_ps = tags.payload.timestamp_ps + np.int64(round((t0 - payload_epoch_unix_s) * 1e12))
        ogs_ps = tags.ogs.timestamp_ps + np.int64(round((t0 - ogs_epoch_unix_s) * 1e12))
        return (
            (tags.payload.channel, payload_ps),
            (tags.ogs.channel, ogs_ps),
            tags.pairs_emitted,
        )


def _segments(
    scenario: Scenario, tle: tuple[str, str], starts: np.ndarray, frame_s: float, link: Any
) -> list[PassSegment]:
    """Each frame's range polynomial (exact at both ends) and its link transmittance."""
    station = station_geometry(scenario)
    at_start = topocentric(tle[0], tle[1], station, starts)
    at_end = topocentric(tle[0], tle[1], station, starts + frame_s)
    acceleration = (
        2.0 * (at_end.range_m - at_start.range_m - at_start.range_rate_m_s * frame_s) / frame_s**2
    )
    return [
        PassSegment(
            frame_s,
            float(at_start.range_m[k]),
            float(at_start.range_rate_m_s[k]),
            float(acceleration[k]),
            float(link.budget.transmittance[k]),
            float(link.budget.background_counts_per_s[k]),
        )
        for k in range(starts.size)
    ]


def plan_bbm92_pass(scenario: Scenario, max_duration_s: float | None = None) -> Bbm92Physics:
    """Everything about a BBM92 pass that does not depend on what the daemons do."""
    mission, sc = scenario.mission, scenario.scenario
    pair = mission.pair_source
    if mission.protocol.family != "bbm92" or pair is None:
        raise ConfigError(f"{scenario.path}: mission {mission.name} is not a BBM92 mission")
    tle, window = choose_pass(scenario)
    station = station_geometry(scenario)
    grid = np.arange(math.floor(window.aos_unix_s) - 60.0, math.ceil(window.los_unix_s) + 61.0)
    geometry = topocentric(tle[0], tle[1], station, grid)
    start, n_frames, acquisition_s = qkd_frames(
        scenario, grid, geometry.elevation_deg, window, max_duration_s
    )
    frame_s = mission.protocol.frame_s
    starts = start + frame_s * np.arange(n_frames)
    link = link_timeline(scenario, tle, window, starts + 0.5 * frame_s)
    # the payload's time of day is off by up to half the uncertainty the mission states
    draw = rng.random_u64(rng.derive_key(sc.seed, "bbm92/payload-clock"), np.array([0]))[0]
    uncertainty_ps = mission.time_sync.offset_uncertainty_s * 1e12
    time_of_day_ps = (float(draw) / 2.0**64 - 0.5) * uncertainty_ps
    ogs = detector_model(scenario)
    return Bbm92Physics(
        tle=tle,
        window=window,
        qkd_start_unix_s=int(start),
        qkd_stop_unix_s=int(start + n_frames * frame_s),
        frame_s=frame_s,
        clock_start_unix_s=float(math.floor(window.aos_unix_s - PLAN_LEAD_S)),
        segments=_segments(scenario, tle, starts, frame_s, link),
        frame_polarisation_error=np.asarray(link.polarisation_error, dtype=np.float64),
        frame_total_loss_db=np.asarray(link.budget.total_loss_db, dtype=np.float64),
        frame_pointing_loss_db=np.asarray(link.budget.pointing_loss_db, dtype=np.float64),
        frame_elevation_deg=np.asarray(link.geometry.elevation_deg, dtype=np.float64),
        acquisition_allowance_s=acquisition_s,
        transmitter_pointing_rms_urad=float(np.sqrt(np.mean(link.pointing_error_urad**2))),
        source=PairSourceModel(pair.pair_rate_hz, pair.payload_collection, pair.polarisation_error),
        # the profile gives no payload detector block: its four-detector receiver is modelled
        # with the station's detector figures and the source's passive basis split
        payload_detectors=DetectorModel(
            ogs.efficiency,
            ogs.dark_count_rate_hz,
            ogs.timing_jitter_ps,
            ogs.dead_time_ps,
            ogs.afterpulse_probability,
            pair.basis_x_probability,
        ),
        ogs_detectors=ogs,
        payload_clock_offset_ps=sc.simulation.clock_offset_ps + time_of_day_ps,
        payload_clock_drift=sc.simulation.clock_drift_ppb * 1e-9,
        intercept_resend_fraction=sc.attacks.intercept_resend_fraction,
        frame_seed_key=rng.derive_key(sc.seed, "bbm92/frames"),
        ogs_tagger_resolution_ps=scenario.station.tagger.resolution_ps,
        frame_range_m=np.asarray(link.geometry.range_m, dtype=np.float64),
        light_time=LightTimeModel(float(grid[0]), 1.0, geometry.range_m, geometry.range_rate_m_s),
    )


def bbm92_parameters(scenario: Scenario) -> Bbm92Parameters:
    """Get: what both ends agree on for a BBM92 mission's passes (its profile)."""
    mission = scenario.mission
    sync = mission.time_sync
    return Bbm92Parameters(
        qber_tolerance=mission.protocol.qber_tolerance,
        coincidence_window_ps=sync.coincidence_window_ps,
        max_offset_ps=sync.offset_uncertainty_s * 1e12,
        max_drift=sync.max_drift_ppm * 1e-6,
        timing_block_s=_TIMING_BLOCK_S,
    )


async def run_bbm92_pass(
    scenario: Scenario,
    out_dir: Path,
    broker_url: str | None = None,
    progress: Callable[[float, str], None] | None = None,
    max_duration_s: float | None = None,
    instruments: str | None = None,
    benches: dict[str, BenchConfig] | None = None,
    *,
    key_root: Path | None = None,
    ogs_keys: Path | None = None,
    station_missions: Any = None,
) -> Any:
    """Run one BBM92 pass (the arguments of `satqkd.simulation.run_pass`); returns its
    PassRun, report included."""
    from satqkd import simulation as sim

    if mission_refusal := _unsupported(scenario):
        raise sim.SimulationError(mission_refusal)
    wall_start = time.perf_counter()
    seed = scenario.scenario.seed
    physics = plan_bbm92_pass(scenario, max_duration_s)
    mission, station = scenario.mission, scenario.station
    key_root = key_root if key_root is not None else out_dir / "keys"
    payload_keys = key_root / "payload"
    ogs_keys = ogs_keys if ogs_keys is not None else key_root / f"ogs-{station.name}"
    preshared = preshared_auth_key(seed, scenario.scenario.simulation.preshared_auth_messages)
    payload_store, ogs_store = KeyStore(payload_keys / station.name), KeyStore(ogs_keys)
    kept = payload_store.has_secret(PRESHARED_KEY_SECRET) and ogs_store.has_secret(
        PRESHARED_KEY_SECRET
    )
    if station_missions is None or not kept:  # a night keeps each mission's channel state
        install_preshared_key(payload_store, preshared)
        install_preshared_key(ogs_store, preshared)
    occ_keys = key_root / "occ"
    install_telecommand_key(payload_keys, occ_keys, "payload", force=True)
    install_telecommand_key(ogs_keys, occ_keys, f"ogs-{station.name}", force=True)
    clock = SimClock(physics.clock_start_unix_s)
    payload_entropy = SeededEntropySource(
        "payload-entropy", rng.derive_key(seed, "payload/entropy")
    )
    ogs_entropy = SeededEntropySource("ogs-entropy", rng.derive_key(seed, "ogs/entropy"))
    for entropy in (payload_entropy, ogs_entropy):
        await entropy.connect()
    if benches is None:
        benches = sim.scenario_benches(scenario, instruments)
    params = bbm92_parameters(scenario)
    protocol = protocol_parameters(mission)
    # the plan's repetition_rate_hz carries a CW source's pair rate, its mean spacing rounded
    # to whole picoseconds as the plan rules ask of every rate (satqkd_core.pass_plan)
    pair_rate = 1e12 / round(1e12 / mission.pair_source.pair_rate_hz)  # type: ignore[union-attr]

    async with contextlib.AsyncExitStack() as stack:
        payload_node = await assemble_node(benches["payload"], "payload", clock=clock, stack=stack)
        station_node = await assemble_node(benches["station"], "station", clock=clock, stack=stack)
        pair_source = payload_node.devices.get("pair_source")
        onboard = payload_node.devices.get("onboard_tagger")
        tagger = station_node.tagger
        for what, device in (("pair_source", pair_source), ("onboard_tagger", onboard)):
            if device is None:
                raise sim.SimulationError(f"{benches['payload'].origin}: no {what} for BBM92")
        if tagger is None or not hasattr(tagger, "feed") or not hasattr(onboard, "feed"):
            raise sim.SimulationError(
                "a simulated BBM92 pass needs in-process taggers at both ends (sim_time_tagger, "
                "sim_onboard_time_tagger) for the pair simulation to feed"
            )
        buses = await sim.open_pass_buses(stack, broker_url, seed, scenario, physics, clock)
        payload_bus, ogs_bus, link, recorder = buses.payload, buses.ogs, buses.link, buses.recorder
        payload = PayloadDaemon(
            PayloadSettings(mission=mission.name, protocol=protocol, repetition_rate_hz=pair_rate),
            payload_bus,
            clock,
            pair_source,  # type: ignore[arg-type]
            payload_keys,
            payload_entropy,
            _NoPattern(),  # type: ignore[arg-type]
            tc_verifier=TelecommandVerifier.load(payload_keys, "payload"),
            bbm92=params,
            onboard_tagger=onboard,  # type: ignore[arg-type]
        )
        ogs = OgsDaemon(
            ogs_settings(mission, station, station_path(scenario)),
            ogs_bus,
            clock,
            tagger,
            ogs_store,
            ogs_entropy,
            tc_verifier=TelecommandVerifier.load(ogs_keys, f"ogs-{station.name}"),
            missions=station_missions,
            bbm92={mission.name: params},
        )
        plan_id = 1 + (seed % 1_000_000)
        plan = {
            "plan_id": plan_id,
            "mission": mission.name,
            "station": station.name,
            "tle_line1": physics.tle[0],
            "tle_line2": physics.tle[1],
            "aos_unix_s": physics.window.aos_unix_s,
            "los_unix_s": physics.window.los_unix_s,
            "qkd_start_unix_s": float(physics.qkd_start_unix_s),
            "qkd_stop_unix_s": float(physics.qkd_stop_unix_s),
            "repetition_rate_hz": pair_rate,  # a CW pair source: its pair rate
        }
        await sim.start_daemons_with_plan(stack, buses, payload, ogs, occ_keys, station.name, plan)

        pairs = await _drive(physics, clock, pair_source, onboard, tagger, ogs, plan_id, progress)
        if progress is not None:
            progress(1.0, "LOS: test sample, error correction, verification, privacy amplification")
        los_wall = time.perf_counter()
        await clock.advance_to(physics.window.los_unix_s)
        await sim._wait_for_end(payload, ogs, plan_id, station.name, timeout_s=300.0)
        key_ready = time.perf_counter() - los_wall
        await sim._await_summaries(recorder, payload, plan_id, station.name)
        bus_bytes = {
            "uplink": ogs.channel.sent_bytes,
            "downlink": payload.links[station.name].channel.sent_bytes,
        }
    run = sim.PassRun(
        scenario=scenario,
        physics=physics,  # type: ignore[arg-type]
        payload=payload,
        ogs=ogs,
        plan_id=plan_id,
        key_root=key_root,
        wall_s=time.perf_counter() - wall_start,
        key_ready_after_los_s=key_ready,
        pulses_sent=pairs,
        bus_bytes=bus_bytes,
        station=None,
        benches={node: bench.origin for node, bench in benches.items()},
        instrument_paths={
            "pair_source": payload_node.paths.get("pair_source", "none"),
            "onboard_tagger": payload_node.paths.get("onboard_tagger", "none"),
            "tagger": station_node.paths.get("tagger", "none"),
        },
        recorded=recorder.records,
        classical_link=link_report(link, physics.window.los_unix_s),
    )
    if hasattr(run, "ogs_keys"):
        run.ogs_keys = ogs_keys
    sim._add_report(run)
    # the truth of the payload clock is the physics' (the scenario's offset plus its draw)
    run.truth = dataclasses.replace(run.truth, clock_offset_ps=physics.payload_clock_offset_ps)
    run.report = build_report(
        run.recorded, plan_id=run.plan_id, truth=run.truth, key_digests=run.key_digests
    )
    return run


def _unsupported(scenario: Scenario) -> str | None:
    """Get: why this simulation cannot run the scenario's BBM92 mission, None if it can."""
    variant = scenario.mission.protocol.variant
    if variant != "downlink":
        return f"BBM92 variant {variant!r}: only the one-station downlink is simulated"
    if scenario.mission.protocol.reconciliation != "cascade":
        return "BBM92 passes reconcile with Cascade (protocol.reconciliation: cascade)"
    if scenario.scenario.attacks.photon_number_splitting:
        return "photon-number splitting attacks a weak-coherent source, not a pair source"
    return None


class _NoPattern:
    """A BBM92 payload's sequencer: a pair source has no pulse pattern to load or read."""

    def has_pass(self, plan_id: int) -> bool:
        return False

    def forget(self, plan_id: int) -> None:
        return None

    def pattern_of(self, plan_id: int, pulse_index: np.ndarray) -> Any:
        raise ProtocolError("a BBM92 payload has no pulse pattern")


async def _drive(
    physics: Bbm92Physics,
    clock: SimClock,
    pair_source: Any,
    onboard: Any,
    tagger: Any,
    ogs: OgsDaemon,
    plan_id: int,
    progress: Callable[[float, str], None] | None,
) -> int:
    """Advance simulated time frame by frame; feed both taggers what the pairs give."""
    from satqkd import simulation as sim

    await clock.advance_to(physics.qkd_start_unix_s - 1.0)
    for started, who in ((tagger.started, "station"), (onboard.started, "payload's on-board")):
        await sim._await_event(started, f"the {who} time tagger did not start", 30.0)
    await clock.advance_to(physics.qkd_start_unix_s)
    await sim._await_condition(
        lambda: bool(pair_source.enabled), "the payload did not switch its pair source on", 30.0
    )
    payload_epoch, ogs_epoch = onboard.epoch_unix_s, tagger.epoch_unix_s
    pairs = 0
    for k in range(physics.n_frames):
        t0 = physics.qkd_start_unix_s + k * physics.frame_s
        t1 = t0 + physics.frame_s
        emitting = bool(pair_source.enabled)
        await clock.advance_to(t1)
        if emitting:
            (p_ch, p_ts), (o_ch, o_ts), emitted = await asyncio.to_thread(
                physics.tags_for_frame, k, payload_epoch, ogs_epoch
            )
            pairs += emitted
        else:
            p_ch = o_ch = np.zeros(0, np.uint8)
            p_ts = o_ts = np.zeros(0, np.int64)
        await onboard.feed(TagBuffer(p_ch, p_ts, t0, t1))
        await tagger.feed(TagBuffer(o_ch, o_ts, t0, t1))
        if progress is not None:
            session = ogs.sessions.get(plan_id)
            tags = session.result.tags if session is not None else 0
            progress((k + 1) / physics.n_frames, f"{tags} station tags")
    return pairs
