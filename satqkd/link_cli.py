"""`satqkd sim link CONFIG --out DIR`: the link of a scenario's pass, second by second, from
the physics alone (no daemons): every loss term, the transmittance, the background, the
polarisation frames and what the station should expect to count.

The summary covers the QKD window `sim pass` would use (the same plan: acquisition allowance,
`--start-after-aos-s`, `--max-duration-s`, frame by frame with the scenario's attacks) and
gives the key the station's post-processing should make of the expected counts.

Writes DIR/link.json (schema satqkd.link/1) and DIR/link.png.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from satqkd.config import ConfigError, Scenario, load_scenario
from satqkd.pass_physics import (
    NoPassError,
    PassPhysics,
    choose_pass,
    detector_model,
    link_timeline,
    plan_pass,
    source_model,
    station_geometry,
)
from satqkd.wiring import protocol_parameters
from satqkd_core import rng
from satqkd_core.ephemeris import StationTrack
from satqkd_core.errors import InputError
from sim_backends.channel import AttackModel
from sim_backends.expected import (
    ExpectedRates,
    expected_key,
    expected_rates,
    expected_statistics,
)
from sim_backends.link import expected_station_coupling

SCHEMA = "satqkd.link/1"
STEP_S = 1.0
INTENSITY_LABELS = ("signal", "decoy", "vacuum")
LOSS_TERMS = (
    "geometric_loss_db",
    "pointing_loss_db",
    "atmospheric_loss_db",
    "scintillation_loss_db",
    "transmitter_optics_loss_db",
    "receiver_optics_loss_db",
    "field_stop_loss_db",
)
EXIT_USAGE = 2


def _number(value: float, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _utc(unix_s: float) -> str:
    stamp = datetime.fromtimestamp(unix_s, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _station_coupling(scenario: Scenario, physics: PassPhysics) -> np.ndarray:
    """The station's expected field-stop coupling per frame from its fine-tracking residual,
    where `sim pass` has the station's pointing in the loop (a gimbal on its bench); else 1."""
    from satqkd.assembly import node_entries
    from satqkd.config import bench_path, station_path
    from satqkd.instruments_config import load_instruments_config
    from satqkd.wiring import ogs_settings

    bench = load_instruments_config(bench_path(scenario, "station"))
    slots = node_entries(bench, "station")
    if "gimbal" not in slots:
        return np.ones(physics.n_frames)
    gain = 0.0
    if "fsm" in slots:
        settings = ogs_settings(scenario.mission, scenario.station, station_path(scenario))
        gain = settings.atp.fsm_integral_gain
    sky = scenario.scenario.simulation.sky
    return expected_station_coupling(
        physics.frame_elevation_deg,
        sky.tip_tilt_rms_urad_zenith,
        gain,
        scenario.station.receiver.field_of_view_urad,
        sky.receiver_spot_fwhm_urad,
    )


def _window_summary(scenario: Scenario, physics: PassPhysics) -> dict[str, Any]:
    """Expected counts and key over the QKD frames `sim pass` would run (with the station's
    expected field-stop coupling from its tracking residual, which the pass samples)."""
    mission = scenario.mission
    source, detectors = source_model(scenario), detector_model(scenario)
    rates = expected_rates(
        source,
        detectors,
        physics.frame_transmittance * _station_coupling(scenario, physics),
        physics.frame_background_cps,
        mission.protocol.sync_window_ps,
        physics.frame_polarisation_error,
        physics.attack,
    )
    params = protocol_parameters(mission)
    every = np.ones(physics.n_frames, dtype=bool)
    stats = expected_statistics(rates, source, detectors, params, physics.frame_s, every)
    key = expected_key(
        stats,
        params,
        mission.protocol.cascade_passes,
        rng.derive_key(scenario.scenario.seed, "link/expected-reconciliation"),
    )
    detections = float(rates.detections_per_s.sum() * physics.frame_s)
    errors = float((rates.detections_per_s * rates.overall_qber).sum() * physics.frame_s)
    return {
        "qkd_start_after_aos_s": round(physics.qkd_start_unix_s - physics.window.aos_unix_s, 3),
        "qkd_window_s": float(physics.n_frames * physics.frame_s),
        "expected_detections": round(detections),
        "expected_sifted_bits": round(float(rates.sifted_bits_per_s.sum() * physics.frame_s)),
        "expected_qber": round(errors / detections, 6) if detections else 0.0,
        "expected_leak_ec_bits": key.leak_ec_bits,
        "expected_secret_key_bits": key.key_bits,
        "expected_no_key_reason": key.abort_reason,
    }


def link_report(
    scenario: Scenario, max_duration_s: float | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The link.json content and the arrays the figure is drawn from."""
    tle, window = choose_pass(scenario)
    start, stop = math.ceil(window.aos_unix_s), math.floor(window.los_unix_s)
    station = station_geometry(scenario)
    if isinstance(station, StationTrack):
        start = max(start, math.ceil(station.start_unix_s))
        stop = min(stop, math.floor(station.stop_unix_s))
    times = np.arange(start, stop + STEP_S / 2, STEP_S, dtype=np.float64)
    link = link_timeline(scenario, tle, window, times)
    mission = scenario.mission
    rates: ExpectedRates = expected_rates(
        source_model(scenario),
        detector_model(scenario),
        link.budget.transmittance,
        link.budget.background_counts_per_s,
        mission.protocol.sync_window_ps,
        link.polarisation_error,
        AttackModel(
            intercept_resend_fraction=scenario.scenario.attacks.intercept_resend_fraction,
            photon_number_splitting=scenario.scenario.attacks.photon_number_splitting,
        ),
    )
    try:
        physics: PassPhysics | None = plan_pass(scenario, max_duration_s)
    except NoPassError:  # no QKD time left in this pass: the link alone
        physics = None
    if physics is not None:
        in_qkd = (times >= physics.qkd_start_unix_s) & (times < physics.qkd_stop_unix_s)
    else:
        in_qkd = np.zeros(times.size, dtype=bool)
    budget = link.budget
    steps = []
    for i in range(times.size):
        step: dict[str, Any] = {
            "unix_s": float(times[i]),
            "t_after_aos_s": round(float(times[i] - window.aos_unix_s), 3),
            "elevation_deg": _number(link.geometry.elevation_deg[i], 4),
            "azimuth_deg": _number(link.geometry.azimuth_deg[i], 4),
            "range_km": _number(link.geometry.range_m[i] / 1e3, 4),
            "range_rate_m_s": _number(link.geometry.range_rate_m_s[i], 3),
            "pointing_error_urad": _number(link.pointing_error_urad[i], 4),
        }
        for term in LOSS_TERMS:
            step[term] = _number(getattr(budget, term)[i], 4)
        step["turbulence_spread_loss_db"] = _number(budget.turbulence_spread_loss_db[i], 4)
        step["total_loss_db"] = _number(budget.total_loss_db[i], 4)
        step["transmittance"] = float(f"{budget.transmittance[i]:.6e}")
        step["background_counts_per_s"] = _number(budget.background_counts_per_s[i], 3)
        step["polarisation_rotation_deg"] = _number(link.polarisation_rotation_deg[i], 4)
        step["polarisation_residual_deg"] = _number(link.polarisation_residual_deg[i], 4)
        step["polarisation_error"] = _number(link.polarisation_error[i], 6)
        step["expected_counts_per_s"] = {
            label: _number(rates.counts_per_s[i, k], 3) for k, label in enumerate(INTENSITY_LABELS)
        }
        step["expected_qber"] = {
            label: _number(rates.qber[i, k], 6) for k, label in enumerate(INTENSITY_LABELS)
        }
        step["expected_detections_per_s"] = _number(rates.detections_per_s[i], 3)
        step["expected_sifted_bits_per_s"] = _number(rates.sifted_bits_per_s[i], 3)
        step["expected_overall_qber"] = _number(rates.overall_qber[i], 6)
        step["in_qkd_window"] = bool(in_qkd[i])
        steps.append(step)

    qkd = in_qkd
    window_summary = (
        _window_summary(scenario, physics)
        if physics is not None
        else {
            "qkd_start_after_aos_s": None,
            "qkd_window_s": 0.0,
            "expected_detections": 0,
            "expected_sifted_bits": 0,
            "expected_qber": 0.0,
            "expected_leak_ec_bits": 0,
            "expected_secret_key_bits": 0,
            "expected_no_key_reason": "no QKD time in this pass",
        }
    )
    report = {
        "schema": SCHEMA,
        "mission": mission.name,
        "station": scenario.station.name,
        "scenario": scenario.scenario.name,
        "seed": scenario.scenario.seed,
        "step_s": STEP_S,
        "pass": {
            "aos_utc": _utc(window.aos_unix_s),
            "los_utc": _utc(window.los_unix_s),
            "max_elevation_deg": round(float(window.max_elevation_deg), 4),
            "min_range_km": round(float(link.geometry.range_m.min()) / 1e3, 3),
            "mobile_station": isinstance(station, StationTrack),
        },
        "attacks": scenario.scenario.attacks.model_dump(),
        "summary": {
            **window_summary,
            "min_total_loss_db": _number(np.min(budget.total_loss_db[qkd]), 4)
            if qkd.any()
            else None,
            "max_abs_polarisation_rotation_change_deg_per_s": _number(
                np.max(np.abs(np.diff(np.unwrap(link.polarisation_rotation_deg, period=180.0))))
                / STEP_S
                if times.size > 1
                else 0.0,
                4,
            ),
        },
        "steps": steps,
    }
    arrays = {
        "t": times - window.aos_unix_s,
        "qkd": in_qkd,
        "counts": rates.counts_per_s,
        "qber": rates.overall_qber,
        "residual": link.polarisation_residual_deg,
        "rotation": link.polarisation_rotation_deg,
        **{term: getattr(budget, term) for term in (*LOSS_TERMS, "total_loss_db")},
    }
    return report, arrays


def write_link_plot(arrays: dict[str, np.ndarray], title: str, path: Path) -> None:
    """Loss terms, expected counts per intensity and expected QBER against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = arrays["t"]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax = axes[0]
    for term in LOSS_TERMS:
        ax.plot(t, arrays[term], label=term.removesuffix("_loss_db").replace("_", " "))
    ax.plot(t, arrays["total_loss_db"], "k", lw=2, label="total")
    ax.set(ylabel="loss (dB)", title=title)
    ax.legend(fontsize=7, ncol=4)
    ax = axes[1]
    for k, label in enumerate(INTENSITY_LABELS):
        ax.semilogy(t, np.maximum(arrays["counts"][:, k], 1e-3), label=label)
    ax.set(ylabel="expected detections per s")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(t, 100 * arrays["qber"], label="expected QBER")
    twin = ax.twinx()
    twin.plot(t, arrays["rotation"], "C2--", lw=0.8, label="frame rotation")
    twin.plot(t, arrays["residual"], "C3", lw=0.8, label="residual after compensation")
    twin.set(ylabel="polarisation angle (deg)", ylim=(-90, 90))
    ax.set(xlabel="time after AOS (s)", ylabel="QBER (%)")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    for axis in axes:
        if arrays["qkd"].any():
            axis.axvspan(t[arrays["qkd"]][0], t[arrays["qkd"]][-1], color="0.9", zorder=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_sim_link(
    config: str,
    out: str | None,
    *,
    seed: int | None = None,
    start_after_aos_s: float | None = None,
    max_duration_s: float | None = None,
) -> int:
    """Write link.json and link.png for a scenario's pass; 2 with one line on a bad config.

    seed, start_after_aos_s and max_duration_s as `sim pass` takes them."""
    from satqkd.api import with_start_after_aos

    try:
        if max_duration_s is not None and not max_duration_s > 0:
            raise ConfigError(f"--max-duration-s must be positive, got {max_duration_s}")
        scenario = with_start_after_aos(load_scenario(config, seed=seed), start_after_aos_s)
        if scenario.mission.protocol.family != "decoy-bb84":
            raise ConfigError(
                f"{config}: mission {scenario.mission.name} is "
                f"{scenario.mission.protocol.family} (entanglement-based): sim link predicts "
                "decoy-BB84 passes only (simulate it with satqkd sim pass)"
            )
        report, arrays = link_report(scenario, max_duration_s)
    except (ConfigError, InputError) as exc:
        print(f"satqkd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(out) if out else Path("runs") / f"link-{stamp}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"satqkd: cannot create output directory {out_dir}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    (out_dir / "link.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    title = f"{report['mission']} over {report['station']} ({report['scenario']})"
    write_link_plot(arrays, title, out_dir / "link.png")
    summary = report["summary"]
    print(
        f"{title}: max elevation {report['pass']['max_elevation_deg']:.1f} deg, "
        f"{summary['qkd_window_s']:.0f} s of QKD, expected {summary['expected_detections']} "
        f"detections, {summary['expected_sifted_bits']} sifted bits, QBER "
        f"{100 * summary['expected_qber']:.2f} %, {summary['expected_secret_key_bits']} secret "
        f"key bits. Link: {out_dir / 'link.json'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m satqkd.link_cli CONFIG [--out DIR]` (same as `satqkd sim link`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="satqkd sim link", description=__doc__)
    parser.add_argument("config", help="scenario YAML (configs/scenarios/...)")
    parser.add_argument("--out", default=None, help="output directory (default runs/link-<time>)")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--start-after-aos-s", type=float, default=None)
    parser.add_argument("--max-duration-s", type=float, default=None)
    args = parser.parse_args(argv)
    return run_sim_link(
        args.config,
        args.out,
        seed=args.seed,
        start_after_aos_s=args.start_after_aos_s,
        max_duration_s=args.max_duration_s,
    )


if __name__ == "__main__":
    sys.exit(main())
