"""The payload end of the link: point-ahead, the platform disturbance, and key following the
payload's tracking quality (decision 0020)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from satqkd.config import Scenario, load_scenario
from satqkd.pass_physics import PassPhysics, plan_pass, station_geometry
from satqkd.report_builder import AtpTruth, _atp
from satqkd_core import finite_key as fk
from satqkd_core.ephemeris import topocentric
from satqkd_core.errors import InputError
from satqkd_payload.pointing import PointAheadPlan, mutual_acquisition_time_s, point_ahead_urad
from sim_backends.expected import expected_rates
from sim_backends.platform_disturbance import PlatformDisturbance
from tests.conftest import REPORT_SCHEMA_PATH

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "configs" / "scenarios" / "jinan1-xinglong-payload-atp.yaml"


def _with_pointing(scenario: Scenario, **changes: object) -> Scenario:
    tx = scenario.mission.transmitter
    assert tx.pointing is not None
    pointing = tx.pointing.model_copy(update=changes)
    mission = scenario.mission.model_copy(
        update={"transmitter": tx.model_copy(update={"pointing": pointing})}
    )
    return scenario.model_copy(update={"mission": mission})


@functools.cache
def _physics(**changes: object) -> tuple[Scenario, PassPhysics]:
    scenario = load_scenario(SCENARIO)
    simulation = scenario.scenario.simulation.model_copy(update={"qkd_start_after_aos_s": 190.0})
    scenario = scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"simulation": simulation})}
    )
    scenario = _with_pointing(scenario, **changes)
    return scenario, plan_pass(scenario, max_duration_s=60.0)


def _expected_key_bits(scenario: Scenario, physics: PassPhysics) -> int:
    """The finite-key length the frames' expected counts support (Lim et al. 2014)."""
    rates = expected_rates(
        physics.source, physics.detectors, physics.frame_transmittance,
        physics.frame_background_cps, scenario.mission.protocol.sync_window_ps,
        physics.frame_polarisation_error,
    )  # fmt: skip
    counts = rates.counts_per_s.sum(axis=0) * physics.frame_s
    errors = (rates.counts_per_s * rates.qber).sum(axis=0) * physics.frame_s
    half = tuple(round(0.5 * float(v)) for v in counts)
    half_errors = tuple(round(0.5 * float(v)) for v in errors)
    stats = fk.DecoyStatistics(
        intensities=tuple(scenario.mission.source.intensities),
        probabilities=tuple(scenario.mission.source.probabilities),
        x_detections=half, x_errors=half_errors, z_detections=half, z_errors=half_errors,
    )  # fmt: skip
    p = scenario.mission.protocol
    qber = sum(half_errors) / max(sum(half), 1)
    leak = fk.estimate_leak_ec_bits(half[0] + half[1] + half[2], qber, p.ec_efficiency_estimate)
    return fk.finite_key_length(stats, p.eps_sec, p.eps_cor, leak).key_length_bits


def test_degraded_payload_tracking_gives_measurably_less_key_on_the_same_seed() -> None:
    scenario, nominal = _physics()
    degraded_scenario, degraded = _physics(fine_loop=False, micro_vibration_rms_urad=14.0)
    assert nominal.payload_pointing is not None and degraded.payload_pointing is not None
    assert nominal.payload_pointing.tracking_residual_rms_urad < 0.5
    assert degraded.payload_pointing.tracking_residual_rms_urad > 4.0
    assert np.mean(degraded.frame_pointing_loss_db) > np.mean(nominal.frame_pointing_loss_db) + 1
    good = _expected_key_bits(scenario, nominal)
    worse = _expected_key_bits(degraded_scenario, degraded)
    assert good > 0
    assert worse < 0.8 * good


def test_without_point_ahead_the_beam_misses_the_station() -> None:
    _, nominal = _physics()
    _, no_lead = _physics(point_ahead=False)
    assert no_lead.payload_pointing is not None and nominal.payload_pointing is not None
    # tens of urad at LEO, five times the beam's 10 urad half-angle
    assert 15.0 < no_lead.payload_pointing.point_ahead_mean_urad < 60.0
    assert nominal.payload_pointing.point_ahead_error_rms_urad < 0.5
    assert np.mean(no_lead.frame_pointing_loss_db) > 20.0
    assert np.mean(nominal.frame_pointing_loss_db) < 0.1


def test_point_ahead_matches_the_ephemeris_transverse_velocity() -> None:
    scenario, physics = _physics()
    t = physics.frame_mid_unix_s
    g = topocentric(*physics.tle, station_geometry(scenario), t)
    lead = point_ahead_urad(t, g.azimuth_deg, g.elevation_deg, g.range_m)
    # the core's independent value: 2 |v_perp| / c from the inertial velocities
    np.testing.assert_allclose(np.hypot(lead[:, 0], lead[:, 1]), g.point_ahead_urad, rtol=0.03)
    # the payload's 1 s table, linear between entries, against a 0.1 s evaluation
    fine = np.arange(t[0], t[-1], 0.1)
    gf = topocentric(*physics.tle, station_geometry(scenario), fine)
    truth = point_ahead_urad(fine, gf.azimuth_deg, gf.elevation_deg, gf.range_m)
    plan = PointAheadPlan.from_prediction(t, g.azimuth_deg, g.elevation_deg, g.range_m)
    inner = slice(10, -10)  # away from the ends, where differences are one-sided
    assert np.max(np.abs(plan.at(fine[inner]) - truth[inner])) < 0.2
    with pytest.raises(InputError, match="outside the point-ahead plan"):
        plan.at(np.array([t[0] - 1.0]))


def test_the_platform_disturbance_has_its_rms_and_its_tones() -> None:
    platform = PlatformDisturbance().scaled_to(9.3)
    rate, n = 1000.0, 60_000
    d = platform.micro_vibration(3, rate, n)
    assert np.sqrt(np.mean(np.sum(d**2, axis=0))) == pytest.approx(9.3, rel=0.2)
    np.testing.assert_array_equal(d, platform.micro_vibration(3, rate, n))
    spectrum = np.abs(np.fft.rfft(d[0] - np.mean(d[0])))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    for tone in platform.tone_frequencies_hz:
        at = np.argmin(np.abs(f - tone))
        assert spectrum[at] > 10.0 * np.median(spectrum[(f > tone - 3) & (f < tone + 3)])


def test_mutual_acquisition_adds_the_payload_s_search_and_lock_to_the_station_s_scan() -> None:
    assert mutual_acquisition_time_s(0.0, 4.5, 0.01) == pytest.approx(4.51)
    with pytest.raises(InputError):
        mutual_acquisition_time_s(-1.0, 0.0, 0.0)


def test_the_report_shows_the_payload_end_beside_the_station_s() -> None:
    _, physics = _physics()
    assert physics.payload_pointing is not None
    truth = AtpTruth(
        model="statistical", acquisition_time_s=1.0, tracking_rms_urad=0.3,
        mean_pointing_loss_db=0.01, payload=physics.payload_pointing.report(),
    )  # fmt: skip

    class _Truth:
        atp = truth

    atp = _atp({"atp_spot_valid_fraction": 1.0}, _Truth())  # type: ignore[arg-type]
    payload = atp["payload_tracking"]
    assert payload["fine_loop"] is True and payload["rejection_ratio"] > 15.0
    schema = json.loads(REPORT_SCHEMA_PATH.read_text())["properties"]["atp"]
    jsonschema.validate(atp, schema)


@pytest.mark.slow
def test_a_pass_with_degraded_payload_tracking_makes_less_key(tmp_path: Path) -> None:
    """The whole pass, both daemons and the broker: the key follows the payload's tracking."""
    import asyncio

    from satqkd.report import build_report
    from satqkd.simulation import run_pass

    keys = {}
    for name, changes in (
        ("nominal", {}),
        ("degraded", {"fine_loop": False, "micro_vibration_rms_urad": 14.0}),
    ):
        scenario, _ = _physics(**changes)
        report = build_report(asyncio.run(run_pass(scenario, tmp_path / name, None, None, 60.0)))
        assert report["atp"]["payload_tracking"]["fine_loop"] is (name == "nominal")
        assert report["key"]["sha256_payload"] == report["key"]["sha256_ogs"]
        keys[name] = report["key"]["secret_key_bits"]
    assert keys["nominal"] > 0
    assert keys["degraded"] < 0.8 * keys["nominal"]


def test_a_loop_faster_than_its_sample_rate_allows_is_a_config_error(tmp_path: Path) -> None:
    from satqkd.config import ConfigError, MissionConfig, load_model

    text = (REPO / "configs" / "missions" / "jinan1-payload-atp.yaml").read_text()
    bad = tmp_path / "fast.yaml"
    bad.write_text(text.replace("fine_bandwidth_hz: 300.0", "fine_bandwidth_hz: 400.0"))
    with pytest.raises(ConfigError, match=r"fast.yaml.*transmitter.*fine_bandwidth_hz must be <="):
        load_model(MissionConfig, bad)
