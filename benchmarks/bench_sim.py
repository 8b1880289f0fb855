"""Benchmarks of pass physics: event generation rate and whole-pass generation time."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from firmware_shims.source_sequencer import SourceSequencer
from satqkd_core.ephemeris import SPEED_OF_LIGHT_M_S, Station, topocentric
from satqkd_core.rng import derive_key
from sim_backends.channel import DetectorModel, SourceModel, generate_frame_detections
from sim_backends.link import (
    Atmosphere,
    Background,
    ReceiverOptics,
    TransmitterOptics,
    link_budget,
)
from sim_backends.orbit import find_passes, load_sample_tle
from sim_backends.transmitter_pointing import TransmitterPointing, pointing_residual_urad

__all__ = ["figures"]

# Jinan-1-like payload over Xinglong; the values and their sources are listed in the report of
# the pass-physics work package (docs and configs are written from it).
XINGLONG = Station(latitude_deg=40.3958, longitude_deg=117.5775, altitude_m=890.0)
TX = TransmitterOptics(
    wavelength_nm=850.0, aperture_diameter_m=0.1, divergence_urad=30.0, optics_efficiency=0.5
)
RX = ReceiverOptics(
    aperture_diameter_m=1.0,
    optics_efficiency=0.25,
    field_of_view_urad=100.0,
    central_obscuration_diameter_m=0.2,
    filter_bandwidth_nm=2.0,
)
DETECTORS = DetectorModel(
    efficiency=(0.5, 0.5, 0.5, 0.5),
    dark_count_rate_hz=25.0,
    timing_jitter_ps=150.0,
    dead_time_ps=22_000.0,
    afterpulse_probability=0.005,
    basis_x_probability=0.5,
)
POINTING = TransmitterPointing(residual_rms_urad=1.5, bandwidth_hz=50.0)
PASS_DURATION_S = 600.0
_SEARCH_START_UNIX_S = 1734220800.0  # 2024-12-15T00:00:00Z, the sample TLE epoch


def _source(repetition_rate_hz: float) -> SourceModel:
    return SourceModel(
        repetition_rate_hz=repetition_rate_hz,
        intensities=(0.8, 0.1, 0.0),
        probabilities=(0.5, 0.25, 0.25),
        basis_x_probability=0.5,
        polarisation_error=0.01,
        intensity_fluctuation=0.01,
    )


def _pass_timeline() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Get 1 s steps of a 600 s window centred on a > 40 deg night pass, with the link."""
    tle = load_sample_tle("jinan1_like")
    passes = find_passes(
        *tle, XINGLONG, _SEARCH_START_UNIX_S, _SEARCH_START_UNIX_S + 5 * 86400.0, 10.0
    )
    chosen = next(p for p in passes if p.night and p.max_elevation_deg > 40.0)
    unix_s = chosen.culmination_unix_s + np.arange(-PASS_DURATION_S / 2, PASS_DURATION_S / 2)
    geometry = topocentric(*tle, XINGLONG, unix_s)
    budget = link_budget(
        geometry,
        TX,
        RX,
        Atmosphere(zenith_loss_db=0.8, weather="clear"),
        Background("dark_night"),
        pointing_residual_urad(POINTING, unix_s, seed=1),
        scintillation_seed=None,
    )
    return (
        budget.transmittance,
        budget.background_counts_per_s,
        geometry.range_m / SPEED_OF_LIGHT_M_S * 1e12,
        geometry.range_rate_m_s / SPEED_OF_LIGHT_M_S,
        chosen.max_elevation_deg,
    )


def _generate_pass(repetition_rate_hz: float, stride: int) -> tuple[float, int, int]:
    """Generate every stride-th 1 s frame of the pass; get (wall s, detections, pulses)."""
    transmittance, background, delay_ps, delay_rate, _ = _pass_timeline()
    source = _source(repetition_rate_hz)
    sequencer = SourceSequencer(derive_key(7, "bench.pattern"), source.probabilities, 0.5)
    pulses_per_frame = int(repetition_rate_hz)
    period_ps = 1e12 / repetition_rate_hz
    detections = pulses = 0
    started = time.perf_counter()
    for frame in range(0, transmittance.shape[0], stride):
        first_pulse = frame * pulses_per_frame
        events = generate_frame_detections(
            sequencer.pattern,
            first_pulse,
            pulses_per_frame,
            source,
            DETECTORS,
            float(transmittance[frame]),
            float(background[frame]),
            round(first_pulse * period_ps),
            float(delay_ps[frame]),
            float(delay_rate[frame]),
            0.0,
            derive_key(7, f"bench.frame.{frame}"),
        )
        detections += events.channel.shape[0]
        pulses += pulses_per_frame
    return time.perf_counter() - started, detections, pulses


def _event_rate(repeats: int) -> tuple[float, int]:
    source = _source(1e8)
    sequencer = SourceSequencer(derive_key(7, "bench.pattern"), source.probabilities, 0.5)
    detections = 0
    started = time.perf_counter()
    for k in range(repeats):
        events = generate_frame_detections(
            sequencer.pattern, k * 10**8, 10**8, source, DETECTORS, 0.01, 20.0,
            k * 10**12, 2e9, 1e-5, 0.0, derive_key(7, f"bench.rate.{k}"),
        )  # fmt: skip
        detections += events.channel.shape[0]
    return detections / (time.perf_counter() - started), detections


def figures(quick: bool) -> list[dict]:
    """Get the pass-physics benchmark figures ({"name", "value", "unit", "params"})."""
    _generate_pass(1e8, stride=300)  # compile every kernel before timing
    rate, counted = _event_rate(2 if quick else 10)
    results = [
        {
            "name": "event_generation_detections_per_s",
            "value": rate,
            "unit": "1/s",
            "params": {"transmittance": 0.01, "repetition_rate_hz": 1e8, "detections": counted},
        }
    ]
    # Quick mode times every 5th frame across the whole pass and scales by 5.
    stride = 5 if quick else 1
    _, _, _, _, max_elevation = _pass_timeline()
    for name, repetition_rate_hz in (
        ("pass_generation_s_100mhz", 1e8),
        ("pass_generation_s_1ghz", 1e9),
    ):
        wall_s, detections, pulses = _generate_pass(repetition_rate_hz, stride)
        results.append(
            {
                "name": name,
                "value": wall_s * stride,
                "unit": "s",
                "params": {
                    "pass_duration_s": PASS_DURATION_S,
                    "repetition_rate_hz": repetition_rate_hz,
                    "max_elevation_deg": round(max_elevation, 2),
                    "sampled_fraction": 1.0 / stride,
                    "detections_generated": detections,
                    "pulses_covered": pulses,
                },
            }
        )
    return results


if __name__ == "__main__":
    for figure in figures(quick="--quick" in sys.argv):
        print(json.dumps(figure))
