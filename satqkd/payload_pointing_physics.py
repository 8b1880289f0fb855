"""The payload's own pointing over a simulated pass: what its beam error does to each frame.

The payload end of the link (decision 0020): the platform's line-of-sight disturbance
(sim_backends.platform_disturbance: attitude knowledge error, micro-vibration) is rejected by
the fine-tracking loop the payload controller runs (firmware_shims.fine_tracking, the same code
the controller shim steps in its own time), and the quantum beam is led by the point-ahead the
payload computes from its pass prediction (satqkd_payload.pointing). The beam's error against
where the station will be is then, per loop sample,

    beam error = tracking residual + (applied point-ahead - true point-ahead)

(or + the whole true point-ahead when none is applied), and the frame's transmitter pointing
efficiency is the mean of exp(-2 |e|^2 / theta^2) over the frame's samples, theta the beam's
1/e^2 half-angle (PHYSICS.md: sample the pointing error in time). The link budget takes it as
the frame's effective pointing error theta sqrt(-ln(mean) / 2), so its pointing loss is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from firmware_shims.fine_tracking import FineTracking, FineTrackingSettings
from satqkd.config import PayloadPointingConfig, Scenario
from satqkd_core import rng
from satqkd_core.ephemeris import Station, StationTrack, topocentric
from satqkd_payload.pointing import PointAheadPlan
from sim_backends.link import TransmitterOptics
from sim_backends.platform_disturbance import PlatformDisturbance, PointingScene

__all__ = [
    "ATP_LEAD_S",
    "PayloadPointingTruth",
    "disturbance_of",
    "fine_tracking_settings_of",
    "simulate_payload_pointing",
]

# the payload's ATP window opens this long before QKD start (its acquisition starts then)
ATP_LEAD_S = 20.0
_TRUTH_GRID_S = 0.5  # the true point-ahead: central differences on this grid, then linear
_MIN_EFFICIENCY = 1e-30  # a frame whose beam missed entirely (JSON has no inf)


@dataclass(frozen=True)
class PayloadPointingTruth:
    """The payload end's figures of one pass, and its per-frame effective pointing error."""

    frame_effective_error_urad: np.ndarray
    fine_loop: bool
    point_ahead_applied: bool
    acquisition_time_s: float | None  # from the ATP window's start; None: never locked
    tracking_residual_rms_urad: float  # line of sight against the uplink beacon, QKD window
    beam_error_rms_urad: float  # the quantum beam against where the station will be
    disturbance_rms_urad: float  # the platform's, QKD window, per-pass bias removed
    micro_vibration_rms_urad: float  # its micro-vibration part (tones and broadband)
    locked_fraction: float
    lock_losses: int
    point_ahead_mean_urad: float
    point_ahead_max_urad: float
    point_ahead_error_rms_urad: float

    @property
    def rejection_ratio(self) -> float:
        """Get micro-vibration rms over tracking residual rms, as Micius reports it (inf for a
        zero residual)."""
        if self.tracking_residual_rms_urad == 0.0:
            return math.inf
        return self.micro_vibration_rms_urad / self.tracking_residual_rms_urad

    def report(self) -> dict[str, object]:
        """Get the report's `atp.payload_tracking` object."""
        return {
            "fine_loop": self.fine_loop,
            "point_ahead_applied": self.point_ahead_applied,
            "acquisition_time_s": (
                None if self.acquisition_time_s is None else round(self.acquisition_time_s, 4)
            ),
            "tracking_residual_rms_urad": round(self.tracking_residual_rms_urad, 4),
            "beam_error_rms_urad": round(self.beam_error_rms_urad, 4),
            "disturbance_rms_urad": round(self.disturbance_rms_urad, 4),
            "micro_vibration_rms_urad": round(self.micro_vibration_rms_urad, 4),
            "rejection_ratio": round(min(self.rejection_ratio, 1e9), 2),
            "locked_fraction": round(self.locked_fraction, 4),
            "lock_losses": self.lock_losses,
            "point_ahead_mean_urad": round(self.point_ahead_mean_urad, 3),
            "point_ahead_max_urad": round(self.point_ahead_max_urad, 3),
            "point_ahead_error_rms_urad": round(self.point_ahead_error_rms_urad, 4),
        }


def fine_tracking_settings_of(config: PayloadPointingConfig) -> FineTrackingSettings:
    """Get the controller loop's settings from the mission's `transmitter.pointing`."""
    return FineTrackingSettings(
        sample_rate_hz=config.loop_rate_hz,
        bandwidth_hz=config.fine_bandwidth_hz,
        coarse_bandwidth_hz=config.coarse_bandwidth_hz,
        sensor_noise_urad=config.sensor_noise_urad,
        field_of_view_urad=config.sensor_field_of_view_urad,
        fsm_travel_urad=config.fsm_travel_urad,
        fine_loop=config.fine_loop,
    )


def disturbance_of(config: PayloadPointingConfig) -> PlatformDisturbance:
    """Get the platform disturbance from the mission's `transmitter.pointing`, its micro-
    vibration scaled to `micro_vibration_rms_urad`."""
    shape = PlatformDisturbance(
        attitude_knowledge_error_3sigma_urad=config.attitude_knowledge_error_3sigma_urad,
        attitude_drift_rms_urad=config.attitude_drift_rms_urad,
        broadband_corner_hz=config.broadband_corner_hz,
        tone_frequencies_hz=tuple(t.frequency_hz for t in config.tones),
        tone_amplitudes_urad=tuple(t.amplitude_urad for t in config.tones),
    )
    if config.micro_vibration_rms_urad == 0.0:
        return PlatformDisturbance(
            attitude_knowledge_error_3sigma_urad=config.attitude_knowledge_error_3sigma_urad,
            attitude_drift_rms_urad=config.attitude_drift_rms_urad,
            micro_vibration_scale=0.0,
        )
    return shape.scaled_to(config.micro_vibration_rms_urad)


def simulate_payload_pointing(
    scenario: Scenario,
    tle: tuple[str, str],
    station: Station | StationTrack,
    qkd_start_unix_s: float,
    frame_mid_unix_s: np.ndarray,
    frame_s: float,
    optics: TransmitterOptics,
) -> PayloadPointingTruth:
    """Get the payload end of one pass: run the controller's loop over the seeded scene from
    the ATP window's start to the last frame, lead the beam by the point-ahead, and average the
    pointing efficiency per frame."""
    config = scenario.mission.transmitter.pointing
    assert config is not None, "simulate_payload_pointing needs transmitter.pointing"
    settings = fine_tracking_settings_of(config)
    start = float(qkd_start_unix_s) - ATP_LEAD_S
    stop = float(frame_mid_unix_s[-1]) + frame_s / 2.0
    seed = rng.derive_key(scenario.scenario.seed, "payload/pointing")
    scene = PointingScene.generate(
        disturbance_of(config), seed, start, stop - start, settings.sample_rate_hz,
        settings.sensor_noise_urad,
    )  # fmt: skip
    loop = FineTracking(settings, scene)
    residual, locked = loop.advance_to(stop + 1.0 / settings.sample_rate_hz)
    t = scene.start_unix_s + np.arange(residual.shape[1]) / settings.sample_rate_hz

    applied, true = _point_ahead(tle, station, start, stop, config.point_ahead_grid_s, t)
    pa_error = (applied if config.point_ahead else 0.0) - true
    beam = residual + pa_error.T
    half_angle_urad = optics.far_field_half_angle_urad
    efficiency = np.exp(-2.0 * (beam[0] ** 2 + beam[1] ** 2) / half_angle_urad**2)

    edges = np.concatenate([frame_mid_unix_s - frame_s / 2.0, [frame_mid_unix_s[-1] + frame_s / 2]])
    index = np.searchsorted(edges, t, side="right") - 1
    in_frames = (index >= 0) & (index < frame_mid_unix_s.size)
    sums = np.bincount(index[in_frames], efficiency[in_frames], minlength=frame_mid_unix_s.size)
    counts = np.bincount(index[in_frames], minlength=frame_mid_unix_s.size)
    mean = np.maximum(sums / np.maximum(counts, 1), _MIN_EFFICIENCY)
    effective = half_angle_urad * np.sqrt(-np.log(mean) / 2.0)

    qkd = t >= qkd_start_unix_s
    platform = scene.disturbance_urad[:, qkd]
    platform = platform - platform.mean(axis=1)[:, None]
    acquired = None if loop.acquired_unix_s is None else loop.acquired_unix_s - start
    true_magnitude = np.hypot(true[qkd, 0], true[qkd, 1])
    return PayloadPointingTruth(
        frame_effective_error_urad=effective,
        fine_loop=config.fine_loop,
        point_ahead_applied=config.point_ahead,
        acquisition_time_s=acquired,
        tracking_residual_rms_urad=_rms(residual[:, qkd & locked]),
        beam_error_rms_urad=_rms(beam[:, qkd]),
        disturbance_rms_urad=_rms(platform),
        micro_vibration_rms_urad=scene.micro_vibration_rms_urad,
        locked_fraction=float(np.mean(locked[qkd])) if qkd.any() else 0.0,
        lock_losses=loop.lock_losses,
        point_ahead_mean_urad=float(np.mean(true_magnitude)) if qkd.any() else 0.0,
        point_ahead_max_urad=float(np.max(true_magnitude)) if qkd.any() else 0.0,
        point_ahead_error_rms_urad=_rms(pa_error[qkd].T),
    )


def _point_ahead(
    tle: tuple[str, str],
    station: Station | StationTrack,
    start: float,
    stop: float,
    plan_grid_s: float,
    t: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Get (applied, true) point-ahead (n, 2) at the samples: the payload's table on its coarse
    grid from the prediction, and the fine-grid evaluation as the truth."""

    def view(step: float) -> tuple[np.ndarray, ...]:
        grid = np.arange(start - step, stop + 2.0 * step, step)
        g = topocentric(tle[0], tle[1], station, grid)
        return grid, g.azimuth_deg, g.elevation_deg, g.range_m

    plan = PointAheadPlan.from_prediction(*view(plan_grid_s))
    truth = PointAheadPlan.from_prediction(*view(_TRUTH_GRID_S))
    return plan.at(t), truth.at(t)


def _rms(xy: np.ndarray) -> float:
    if xy.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.sum(np.asarray(xy) ** 2, axis=0))))
