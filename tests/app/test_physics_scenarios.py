"""Scenario physics: polarisation frames, oscillator drift, tagger bins, a moving station and a
photon-number-splitting eavesdropper, from the scenario files to what the station records."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_shims.source_sequencer import SourceSequencer
from satqkd import pass_physics
from satqkd.config import Scenario, load_scenario
from satqkd.link_cli import run_sim_link
from satqkd.pass_physics import PassPhysics, plan_pass, station_geometry
from satqkd.report import build_report
from satqkd.simulation import run_pass
from satqkd.wiring import protocol_parameters
from satqkd_core import finite_key as fk
from satqkd_core import rng
from satqkd_core.ephemeris import Station, StationTrack, topocentric
from satqkd_core.light_time import LightTimeModel
from satqkd_core.pass_decisions import feasibility_abort_reason
from satqkd_core.sync import assign_pulse_indices
from sim_backends.expected import expected_rates
from sim_backends.polarisation import combined_polarisation_error

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "configs" / "scenarios"


def _with_simulation(scenario: Scenario, **changes: object) -> Scenario:
    sim = scenario.scenario.simulation.model_copy(update=changes)
    return scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"simulation": sim})}
    )


def _sequencer(scenario: Scenario) -> SourceSequencer:
    source = scenario.mission.source
    return SourceSequencer(
        rng.derive_key(scenario.scenario.seed, "payload/qrng"),
        source.probabilities,
        source.basis_x_probability,
    )


@pytest.fixture(scope="module")
def clear() -> tuple[Scenario, PassPhysics]:
    scenario = load_scenario(SCENARIOS / "jinan1-xinglong-clear.yaml")
    return scenario, plan_pass(scenario)


def test_each_frame_carries_its_polarisation_misalignment(
    clear: tuple[Scenario, PassPhysics],
) -> None:
    scenario, physics = clear
    n = physics.n_frames
    for name in ("rotation_deg", "residual_deg", "error"):
        assert getattr(physics, f"frame_polarisation_{name}").shape == (n,)
    # The frames turn by ~170 deg over this 70 deg pass; Xinglong's plate leaves 1 deg rms.
    turned = np.ptp(np.unwrap(physics.frame_polarisation_rotation_deg, period=180.0))
    assert 120.0 < turned < 200.0
    residual = physics.frame_polarisation_residual_deg
    assert np.sqrt(np.mean(residual**2)) == pytest.approx(1.0, rel=0.15)
    np.testing.assert_allclose(
        physics.frame_polarisation_error,
        combined_polarisation_error(scenario.mission.source.polarisation_error, residual),
    )


def test_the_channel_of_each_frame_uses_that_frame_s_polarisation_error(
    clear: tuple[Scenario, PassPhysics], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, physics = clear
    seen = []
    original = pass_physics.generate_frame_detections

    def spy(pattern, first, n, source, *args):  # type: ignore[no-untyped-def]
        seen.append(source.polarisation_error)
        return original(pattern, first, 1000, source, *args)  # a short frame is enough

    monkeypatch.setattr(pass_physics, "generate_frame_detections", spy)
    for k in (0, 100, 300):
        physics.detections_for_frame(k, _sequencer(scenario).pattern, physics.qkd_start_unix_s)
    assert seen == [physics.frame_polarisation_error[k] for k in (0, 100, 300)]


def test_without_compensation_the_frames_ruin_the_qber() -> None:
    scenario = load_scenario(SCENARIOS / "jinan1-xinglong-clear.yaml")
    station = scenario.station.model_copy(
        update={"polarisation": scenario.station.polarisation.model_copy(
            update={"compensation": "none"})}
    )  # fmt: skip
    physics = plan_pass(scenario.model_copy(update={"station": station}))
    assert physics.frame_polarisation_residual_deg[0] == 0.0
    assert physics.frame_polarisation_error.max() > 0.25  # far past the 11 % abort threshold


def test_payload_clock_drift_moves_the_tags_by_drift_times_elapsed_time(
    clear: tuple[Scenario, PassPhysics],
) -> None:
    scenario, reference = clear
    drifting = plan_pass(_with_simulation(scenario, clock_drift_ppb=100.0))
    pattern = _sequencer(scenario).pattern
    epoch = reference.qkd_start_unix_s - 1.0
    k = 20
    _, ts_ref = reference.detections_for_frame(k, pattern, epoch)
    _, ts_drift = drifting.detections_for_frame(k, pattern, epoch)
    assert ts_drift.size == ts_ref.size
    # A payload 100 ppb fast emits frame 20 ~100 ns/s * 20.5 s = 2.05 us early (mid-frame).
    shift = np.median(ts_drift - ts_ref)
    assert shift == pytest.approx(-100e-9 * (k + 0.5) * 1e12, rel=0.01)
    # Within the frame the shift grows by 100 ns per second.
    first, last = ts_drift[:50] - ts_ref[:50], ts_drift[-50:] - ts_ref[-50:]
    assert np.median(last) - np.median(first) == pytest.approx(-100e-9 * 1e12, rel=0.02)


def _station_sync(
    physics: PassPhysics, light_time: LightTimeModel, k: int, epoch: float, scenario: Scenario
) -> tuple[float, float]:
    """(assigned fraction, residual rms ps) of frame k synchronised as the OGS session does."""
    _, ts = physics.detections_for_frame(k, _sequencer(scenario).pattern, epoch)
    arrival_rel_s = epoch - light_time.grid_start_unix_s + ts.astype(np.float64) * 1e-12
    predicted = light_time.delay_at_arrival_ps(arrival_rel_s)
    qkd_start_ps = round((physics.qkd_start_unix_s - epoch) * 1e12)
    period_ps = round(1e12 / physics.source.repetition_rate_hz)
    sync = assign_pulse_indices(
        ts, predicted, qkd_start_ps, float(period_ps), scenario.mission.protocol.sync_window_ps
    )
    return sync.assigned_fraction, sync.residual_rms_ps


def test_a_moving_station_keeps_sync_only_when_it_follows_its_own_track() -> None:
    scenario = load_scenario(SCENARIOS / "jinan1-ship-east-china-sea.yaml")
    track = station_geometry(scenario)
    assert isinstance(track, StationTrack)
    physics = plan_pass(scenario)
    assert physics.elevation_grid_unix_s[0] >= track.start_unix_s
    epoch = physics.qkd_start_unix_s - 1.0
    # Culmination is where the ship turns (13:42-13:43:40 UTC).
    k = int(np.argmax(physics.frame_elevation_deg))
    grid = physics.elevation_grid_unix_s
    tle = physics.tle
    # The station's own ephemeris from its track: what the OGS computes once given the track.
    geometry = topocentric(*tle, track, grid)
    own = LightTimeModel(float(grid[0]), 1.0, geometry.range_m, geometry.range_rate_m_s)
    fraction, rms = _station_sync(physics, own, k, epoch, scenario)
    assert fraction > 0.9 and rms < 180.0  # 150 ps jitter, 4 ps bins
    # Tags come in the tagger's 4 ps bins.
    _, ts = physics.detections_for_frame(k, _sequencer(scenario).pattern, epoch)
    assert np.all(ts % 4 == 0)
    # A station that takes itself for parked where it started loses the pulses entirely.
    parked = track.station_at(track.start_unix_s)
    geometry = topocentric(*tle, Station(parked.latitude_deg, parked.longitude_deg, 15.0), grid)
    fixed = LightTimeModel(float(grid[0]), 1.0, geometry.range_m, geometry.range_rate_m_s)
    fraction, _ = _station_sync(physics, fixed, k, epoch, scenario)
    assert fraction < 0.3


def _expected_statistics(
    scenario: Scenario, physics: PassPhysics
) -> tuple[np.ndarray, fk.DecoyStatistics]:
    """Honest expected detections per intensity and their decoy statistics, over the frames."""
    rates = expected_rates(
        physics.source,
        physics.detectors,
        physics.frame_transmittance,
        physics.frame_background_cps,
        scenario.mission.protocol.sync_window_ps,
        physics.frame_polarisation_error,
    )
    counts = rates.counts_per_s.sum(axis=0) * physics.frame_s
    errors = (rates.counts_per_s * rates.qber).sum(axis=0) * physics.frame_s
    quarter = lambda values: tuple(round(0.25 * float(v)) for v in values)  # noqa: E731
    stats = fk.DecoyStatistics(
        intensities=tuple(scenario.mission.source.intensities),
        probabilities=tuple(scenario.mission.source.probabilities),
        x_detections=quarter(counts),
        x_errors=(0, 0, 0),
        z_detections=quarter(counts),
        z_errors=quarter(errors),
    )
    return counts, stats


def test_photon_number_splitting_is_caught_by_the_decoy_states(tmp_path: Path) -> None:
    # One minute near culmination: long enough that the honest link yields a key.
    scenario = _with_simulation(
        load_scenario(SCENARIOS / "jinan1-xinglong-pns.yaml"), qkd_start_after_aos_s=190.0
    )
    honest = _with_simulation(
        load_scenario(SCENARIOS / "jinan1-xinglong-clear.yaml"), qkd_start_after_aos_s=190.0
    )
    honest_physics = plan_pass(honest, max_duration_s=60.0)
    honest_counts, honest_stats = _expected_statistics(honest, honest_physics)
    params = protocol_parameters(honest.mission)
    assert feasibility_abort_reason(params, honest_stats) is None  # the honest link: key

    run = asyncio.run(run_pass(scenario, tmp_path, None, None, 60.0))
    report = build_report(run)
    key = report["key"]
    assert key["secret_key_bits"] == 0
    assert key["abort_reason"].startswith("finite-key bound leaves no key")
    assert key["sha256_payload"] == key["sha256_ogs"]
    q = report["quantum"]
    # Eve hides in the count rate and in the QBER...
    assert q["detections"] == pytest.approx(honest_counts.sum(), rel=0.1)
    assert q["qber"] < 0.02
    # ...but not in the decoy yields: decoys are detected far less than an honest link's.
    by = {row["label"]: row["detections"] for row in q["by_intensity"]}
    assert by["decoy"] / by["signal"] < 0.5 * honest_counts[1] / honest_counts[0]
    # The bound on single-photon detections collapses (honestly it is ~all of the key basis);
    # no more key than that bound justifies can have been made, and none was.
    counts = fk.DecoyStatistics(
        intensities=tuple(scenario.mission.source.intensities),
        probabilities=tuple(scenario.mission.source.probabilities),
        x_detections=tuple(row["x_detections"] for row in q["by_intensity"]),
        x_errors=(0, 0, 0),
        z_detections=tuple(row["z_detections"] for row in q["by_intensity"]),
        z_errors=tuple(row["z_errors"] for row in q["by_intensity"]),
    )
    attacked = fk.finite_key_length(counts, params.eps_sec, params.eps_cor, 0)
    reference = fk.finite_key_length(honest_stats, params.eps_sec, params.eps_cor, 0)
    assert attacked.s_x1 < 0.5 * reference.s_x1
    assert not list((tmp_path / "keys").rglob("*.key"))


def test_validation_doc_reproduces(tmp_path: Path) -> None:
    """docs/validation.md: its script, run on fresh `sim link` output, prints its tables."""
    doc = (REPO / "docs" / "validation.md").read_text(encoding="utf-8")
    script = doc.split("### Script", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "validation_micius.py").write_text(script, encoding="utf-8")
    runs = []
    for name in ("micius-xinglong-clear", "micius-xinglong-2016"):
        assert run_sim_link(str(SCENARIOS / f"{name}.yaml"), str(tmp_path / name)) == 0
        runs.append(str(tmp_path / name))
    figure = tmp_path / "validation-micius.png"
    printed = subprocess.run(
        [sys.executable, str(tmp_path / "validation_micius.py"), *runs, str(figure)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    results = doc.split("## Results", 1)[1].split("## The gaps", 1)[0]
    doc_rows = [line for line in results.splitlines() if line.startswith("|")]
    assert [line for line in printed.splitlines() if line.startswith("|")] == doc_rows
    assert "14.5 urad" in printed and "14.5 µrad" in doc
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_source_intensity_fluctuation_reaches_the_channel() -> None:
    scenario = load_scenario(SCENARIOS / "jinan1-xinglong-clear.yaml")
    source = scenario.mission.source.model_copy(update={"intensity_fluctuation": 0.1})
    mission = scenario.mission.model_copy(update={"source": source})
    physics = plan_pass(scenario.model_copy(update={"mission": mission}), max_duration_s=2.0)
    assert physics.source.intensity_fluctuation == 0.1


def test_station_tracks_a_drifting_payload_clock_and_makes_a_key(tmp_path: Path) -> None:
    # 20 s near culmination of the 100 ppb scenario: the offset walks 2 us (200 pulse periods)
    # over the frames, so every frame's whole-period count must come from the tracked line.
    scenario = _with_simulation(
        load_scenario(SCENARIOS / "jinan1-xinglong-clock-drift.yaml"), qkd_start_after_aos_s=190.0
    )
    assert scenario.scenario.simulation.clock_drift_ppb == 100.0
    run = asyncio.run(run_pass(scenario, tmp_path, None, None, 20.0))
    report = build_report(run)
    key = report["key"]
    assert key["abort_reason"] is None
    assert key["secret_key_bits"] > 0
    assert key["sha256_payload"] == key["sha256_ogs"]
    assert report["quantum"]["qber"] < 0.03
    assert report["sync"]["assigned_fraction"] > 0.98
    result = run.ogs.results[run.plan_id]
    # every frame measured its clock offset (one entry per measured frame)
    assert len(result.clock_offsets_ps) == len(result.chunks) == 20
    assert result.clock_drift_ppb == pytest.approx(100.0, abs=0.05)
    # Offsets at the frame centres, whole periods (10 ns) included: 1234 ps at QKD start, then
    # 100 ns less per second.
    offsets = result.clock_offsets_ps
    assert offsets[0] == pytest.approx(1234.0 - 0.5e5, abs=2_000.0)
    assert offsets[-1] == pytest.approx(1234.0 - 19.5e5, abs=2_000.0)
    assert np.diff(offsets) == pytest.approx(np.full(19, -1e5), abs=50.0)
