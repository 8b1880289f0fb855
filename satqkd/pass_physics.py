"""The physics of one scenario's pass: which pass, its geometry frame by frame, the link
budget with the satellite transmitter's pointing residual, the polarisation frames, and the
detections the station's tagger sees in each frame.

This is the scenario's "nature": it knows the source's true pattern (photons carry it), the
true clock offset and oscillator drift between payload and station, and what an eavesdropper
does, which the daemons must discover themselves.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from firmware_shims.source_sequencer import PulsePattern
from satqkd.config import ConfigError, Scenario, SourceConfig, station_path, unix_seconds
from satqkd.station_site import station_position
from satqkd_core import rng
from satqkd_core.ephemeris import (
    Geometry,
    Station,
    StationTrack,
    polarisation_frame_rotation_deg,
    sun_elevation_deg,
    topocentric,
)
from satqkd_core.errors import InputError
from satqkd_core.light_time import LightTimeModel
from sim_backends.acquisition import SpiralAcquisition, acquisition_time_s
from sim_backends.channel import (
    AttackModel,
    DetectorModel,
    SourceModel,
    generate_frame_detections,
)
from sim_backends.cloud_climatology import draw_weather, site_climate
from sim_backends.link import (
    Atmosphere,
    Background,
    LinkBudget,
    ReceiverOptics,
    TransmitterOptics,
    link_budget,
)
from sim_backends.orbit import PassWindow, find_passes, load_sample_tle, sun_synchronous_tle
from sim_backends.polarisation import (
    PolarisationCompensation,
    combined_polarisation_error,
    residual_misalignment_deg,
)
from sim_backends.tagger import TaggerModel, quantise_timestamps
from sim_backends.transmitter_pointing import TransmitterPointing, pointing_residual_urad

if TYPE_CHECKING:
    from satqkd.payload_pointing_physics import PayloadPointingTruth

EPHEMERIS_STEP_S = 1.0
PLAN_LEAD_S = 30.0
_SPEED_OF_LIGHT_M_S = 299_792_458.0


class NoPassError(ConfigError):
    """The scenario's search window holds no pass that fits its criteria."""


@dataclass
class PassPhysics:
    """Geometry, link and channel of one pass, frame by frame."""

    tle: tuple[str, str]
    window: PassWindow
    qkd_start_unix_s: int
    qkd_stop_unix_s: int
    frame_s: float
    pulses_per_frame: int
    clock_start_unix_s: float
    light_time: LightTimeModel
    elevation_grid_unix_s: np.ndarray
    elevation_grid_deg: np.ndarray
    frame_mid_unix_s: np.ndarray
    frame_range_m: np.ndarray
    frame_transmittance: np.ndarray
    frame_background_cps: np.ndarray
    frame_total_loss_db: np.ndarray
    # the satellite transmitter's pointing loss per frame, and its residual's rms over the pass
    frame_pointing_loss_db: np.ndarray
    # QKD starts no earlier than AOS plus this allowance (sim_backends.acquisition)
    acquisition_allowance_s: float
    transmitter_pointing_rms_urad: float
    source: SourceModel
    detectors: DetectorModel
    attack: AttackModel
    clock_offset_ps: float
    frame_seed_key: int
    # polarisation frames per QKD frame: the geometric rotation, what compensation leaves of
    # it, and the source's error with that misalignment added (probability of a bit flip)
    frame_polarisation_rotation_deg: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(0)
    )
    frame_polarisation_residual_deg: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(0)
    )
    frame_polarisation_error: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    frame_elevation_deg: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    tagger: TaggerModel = dataclasses.field(default_factory=TaggerModel)
    clock_drift_ppb: float = 0.0
    # the payload's own pointing, when the mission models it (transmitter.pointing)
    payload_pointing: PayloadPointingTruth | None = None

    @property
    def n_frames(self) -> int:
        """Get: number of QKD frames."""
        return int(self.frame_mid_unix_s.size)

    def detections_for_frame(
        self,
        k: int,
        pattern: Callable[[np.ndarray], PulsePattern],
        tagger_epoch_unix_s: float,
        station_coupling: float = 1.0,
        live_channels: tuple[bool, ...] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tags (channel, timestamp_ps) the station's tagger records during frame k.

        With the station's instruments in the loop, `station_coupling` is the fraction of the
        received signal its pointing put through the receiver's field stop during the frame
        (sim_backends.sky) and `live_channels` says which detectors were gated and biased
        (tagger channel n is detector n); a dead channel records nothing, not even dark counts.
        """
        coupling = _check_fraction(station_coupling, "station_coupling")
        if live_channels is not None and len(live_channels) != 4:
            raise InputError(f"live_channels must have 4 entries, got {len(live_channels)}")
        period_ps = round(1e12 / self.source.repetition_rate_hz)
        first_pulse = k * self.pulses_per_frame
        qkd_start_ps = round((self.qkd_start_unix_s - tagger_epoch_unix_s) * 1e12)
        emission_start_ps = qkd_start_ps + first_pulse * period_ps
        # The payload oscillator runs (1 + drift) fast: its pulses, and so its frames, come
        # 1 / (1 + drift) as far apart as the station's clock expects.
        drift = self.clock_drift_ppb * 1e-9
        scale = 1.0 / (1.0 + drift)
        frame_offset_s = k * self.frame_s * scale
        frame_start_rel_s = (
            self.qkd_start_unix_s + frame_offset_s - self.light_time.grid_start_unix_s
        )
        delay0 = float(self.light_time.delay_at_emission_ps(np.array([frame_start_rel_s]))[0])
        rate = float(np.interp(frame_start_rel_s, *self._range_rate_grid()) / _SPEED_OF_LIGHT_M_S)
        source = self.source
        if self.frame_polarisation_error.size:
            source = dataclasses.replace(
                source, polarisation_error=float(self.frame_polarisation_error[k])
            )
        frame = generate_frame_detections(
            pattern,
            first_pulse,
            self.pulses_per_frame,
            source,
            self.detectors,
            float(self.frame_transmittance[k]) * coupling,
            float(self.frame_background_cps[k]),
            emission_start_ps,
            delay0,
            rate if drift == 0.0 else (1.0 + rate) * scale - 1.0,
            self.clock_offset_ps + (frame_offset_s - k * self.frame_s) * 1e12,
            int(rng.random_u64(self.frame_seed_key, np.array([k], dtype=np.int64))[0] >> 1),
            self.attack,
        )
        ts = frame.timestamp_ps.copy()
        signal = frame.truth_pulse_index >= 0
        if signal.any():
            # the channel model takes the delay as linear over the frame; light time curves
            # by up to ~100 ns over a second near culmination, so put the exact delay back in
            emitted_ps = (frame.truth_pulse_index[signal] - first_pulse) * (period_ps * scale)
            exact = self.light_time.delay_at_emission_ps(frame_start_rel_s + emitted_ps * 1e-12)
            linear = delay0 + rate * emitted_ps
            ts[signal] += np.rint(exact - linear).astype(np.int64)
        ts = quantise_timestamps(ts, self.tagger.resolution_ps)
        channel = frame.channel
        if live_channels is not None and not all(live_channels):
            live = np.asarray(live_channels, dtype=bool)[channel.astype(np.int64) - 1]
            channel, ts = channel[live], ts[live]
        order = np.argsort(ts, kind="stable")
        return channel[order], ts[order]

    def _range_rate_grid(self) -> tuple[np.ndarray, np.ndarray]:
        lt = self.light_time
        return lt.step_s * np.arange(lt.range_m.size), lt.range_rate_m_s


def _check_fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{name} must be in [0, 1], got {value}")
    return value


def station_geometry(scenario: Scenario) -> Station | StationTrack:
    """Where the station is for the ephemeris: its location, or its track if it moves."""
    return station_position(scenario.station, station_path(scenario))


def _tle_for(scenario: Scenario, search_start: float) -> tuple[str, str]:
    orbit = scenario.mission.orbit
    if orbit.tle is not None:
        return orbit.tle.line1, orbit.tle.line2
    if orbit.sample_tle is not None:
        return load_sample_tle(orbit.sample_tle)
    epoch = unix_seconds(orbit.epoch_utc) if orbit.epoch_utc else search_start
    return sun_synchronous_tle(orbit.altitude_km, orbit.ltan_hours, epoch)


def choose_pass(scenario: Scenario) -> tuple[tuple[str, str], PassWindow]:
    """The scenario's pass: the n-th one in the search window that meets its criteria."""
    search = scenario.scenario.search
    start = unix_seconds(search.start_utc)
    stop = start + search.days * 86400.0
    tle = _tle_for(scenario, start)
    station = station_geometry(scenario)
    if isinstance(station, StationTrack) and not (
        station.start_unix_s <= start and stop <= station.stop_unix_s
    ):
        raise ConfigError(
            f"{scenario.path}: search: window {start:.0f} .. {stop:.0f} (unix s) must lie "
            f"inside the station track {station.start_unix_s:.0f} .. {station.stop_unix_s:.0f}"
        )
    passes = find_passes(tle[0], tle[1], station, start, stop, scenario.station.min_elevation_deg)
    eligible = [
        p
        for p in passes
        if p.max_elevation_deg >= search.min_max_elevation_deg
        and (p.night or not search.night_only)
    ]
    if len(eligible) <= search.pass_index:
        raise NoPassError(
            f"{scenario.path}: search: {len(eligible)} {'night ' if search.night_only else ''}"
            f"pass(es) above {search.min_max_elevation_deg:g} deg in {search.days:g} days from "
            f"{search.start_utc.isoformat()} (of {len(passes)} passes); need pass_index "
            f"{search.pass_index}"
        )
    return tle, eligible[search.pass_index]


def weather_class(scenario: Scenario, window: PassWindow) -> str:
    """The weather class of the pass (sim_backends.link): the scenario's profile, or with
    `climatology` the class drawn with the seed from the station site's statistics for the
    scenario's month (default: the month, UTC, of the pass's AOS)."""
    weather = scenario.scenario.weather
    if weather.profile != "climatology":
        return weather.profile
    site = scenario.station.atmosphere.climate_site
    if site is None:
        raise ConfigError(
            f"{scenario.path}: weather: profile climatology needs the station's "
            f"atmosphere.climate_site ({scenario.station.name} has none)"
        )
    try:
        climate = site_climate(site)
    except InputError as exc:
        raise ConfigError(f"{scenario.path}: station {scenario.station.name}: {exc}") from None
    month = weather.month
    if month is None:
        month = datetime.fromtimestamp(window.aos_unix_s, tz=UTC).month
    key = rng.derive_key(scenario.scenario.seed, "weather/climatology")
    uniform = float(rng.uniform_from_u64(rng.random_u64(key, np.zeros(1, dtype=np.int64)))[0])
    return draw_weather(climate, month, uniform)


@dataclass(frozen=True)
class LinkTimeline:
    """The link at chosen instants: geometry, transmitter pointing residual, budget and
    polarisation frames."""

    geometry: Geometry
    pointing_error_urad: np.ndarray
    budget: LinkBudget
    polarisation_rotation_deg: np.ndarray
    polarisation_residual_deg: np.ndarray
    polarisation_error: np.ndarray


def transmitter_pointing_of(scenario: Scenario) -> TransmitterPointing:
    """The payload's pointing residual: the mission's rms, at the corner frequency the station
    profile gives (`atp.tracking_bandwidth_hz`, decision 0013)."""
    return TransmitterPointing(
        residual_rms_urad=scenario.mission.transmitter.pointing_residual_rms_urad,
        bandwidth_hz=scenario.station.atp.tracking_bandwidth_hz,
    )


def acquisition_allowance_s(scenario: Scenario) -> float:
    """The time the pass plan allows after AOS for the station to acquire the beacon: one
    spiral-scan time drawn for the station's acquisition settings (sim_backends.acquisition)."""
    atp = scenario.station.atp
    search = SpiralAcquisition(
        atp.initial_pointing_uncertainty_urad,
        atp.acquisition_field_of_view_urad,
        atp.spiral_scan_rate_urad_per_s,
    )
    return acquisition_time_s(search, rng.derive_key(scenario.scenario.seed, "atp/acq"))


def link_timeline(
    scenario: Scenario,
    tle: tuple[str, str],
    window: PassWindow,
    unix_s: np.ndarray,
    pointing_error_urad: np.ndarray | None = None,
) -> LinkTimeline:
    """The link budget, transmitter pointing residual and polarisation frames at the given
    instants (the transmitter's pointing error given, or drawn from the statistical model)."""
    mission, station_cfg, sc = scenario.mission, scenario.station, scenario.scenario
    station = station_geometry(scenario)
    geometry = topocentric(tle[0], tle[1], station, unix_s)
    if pointing_error_urad is not None:
        pointing = np.asarray(pointing_error_urad, dtype=np.float64)
    else:
        pointing = pointing_residual_urad(
            transmitter_pointing_of(scenario), unix_s, rng.derive_key(sc.seed, "atp/track")
        )
    tx_cfg, rx_cfg, atm_cfg = mission.transmitter, station_cfg.receiver, station_cfg.atmosphere
    cloud = sc.weather.cloud
    budget = link_budget(
        geometry,
        TransmitterOptics(
            mission.quantum_wavelength_nm,  # a BBM92 mission: the pair photon sent down
            tx_cfg.aperture_diameter_m,
            tx_cfg.divergence_urad,
            tx_cfg.optics_efficiency,
            tx_cfg.divergence_definition,
            tx_cfg.pointing_jitter_rms_urad,
            tx_cfg.truncation,
            tx_cfg.obscuration_diameter_m,
            tx_cfg.waist_radius_m,
        ),
        ReceiverOptics(
            rx_cfg.aperture_diameter_m,
            rx_cfg.optics_efficiency,
            rx_cfg.field_of_view_urad,
            rx_cfg.obscuration_diameter_m,
            rx_cfg.filter_bandwidth_nm,
        ),
        Atmosphere(
            zenith_loss_db=atm_cfg.zenith_loss_db,
            weather=weather_class(scenario, window),
            cloud_start_unix_s=window.aos_unix_s + cloud.start_s_after_aos if cloud else None,
            cloud_stop_unix_s=window.aos_unix_s + cloud.start_s_after_aos + cloud.duration_s
            if cloud
            else None,
            cloud_extra_loss_db=cloud.extra_loss_db if cloud else 0.0,
            scintillation_index_zenith=atm_cfg.scintillation_index,
            model=atm_cfg.model,
            visibility_km=atm_cfg.visibility_km,
            season=atm_cfg.season,
            ground_altitude_m=station_cfg.location.altitude_m,
            seeing_arcsec=atm_cfg.seeing_arcsec,
        ),
        Background(station_cfg.background.sky, station_cfg.background.radiance_w_m2_sr_nm),
        pointing,
        rng.derive_key(sc.seed, "scintillation"),
        sun_elevation_deg(station, unix_s),
    )
    rotation = polarisation_frame_rotation_deg(tle[0], tle[1], station, unix_s)
    pol = station_cfg.polarisation
    residual = residual_misalignment_deg(
        rotation,
        PolarisationCompensation(pol.compensation, pol.compensation_error_rms_deg),
        rng.derive_key(sc.seed, "polarisation/compensation"),
    )
    emitter = mission.source if mission.source is not None else mission.pair_source
    assert emitter is not None  # MissionProfileConfig requires one of them
    error = combined_polarisation_error(emitter.polarisation_error, residual)
    return LinkTimeline(geometry, pointing, budget, rotation, residual, error)


def require_decoy_bb84(scenario: Scenario) -> SourceConfig:
    """Get: the mission's weak-coherent source; ConfigError (one line) for a BBM92 mission,
    whose passes only `satqkd sim pass` simulates (satqkd.sim_bbm92)."""
    if scenario.mission.source is None:
        raise ConfigError(
            f"{scenario.path}: mission {scenario.mission.name!r} is entanglement-based "
            f"(protocol.family {scenario.mission.protocol.family}); this models decoy-state "
            "BB84 passes: run it with `satqkd sim pass` (docs/bbm92.md)"
        )
    return scenario.mission.source


def source_model(scenario: Scenario) -> SourceModel:
    """The payload's source as the channel model takes it."""
    src = require_decoy_bb84(scenario)
    return SourceModel(
        repetition_rate_hz=src.repetition_rate_hz,
        intensities=tuple(src.intensities),
        probabilities=tuple(src.probabilities),
        basis_x_probability=src.basis_x_probability,
        polarisation_error=src.polarisation_error,
        intensity_fluctuation=src.intensity_fluctuation,
    )


def detector_model(scenario: Scenario) -> DetectorModel:
    """The station's detectors as the channel model takes them."""
    det = scenario.station.detectors
    return DetectorModel(
        efficiency=tuple(det.efficiency),
        dark_count_rate_hz=det.dark_count_rate_hz,
        timing_jitter_ps=det.timing_jitter_ps,
        dead_time_ps=det.dead_time_ns * 1e3,
        afterpulse_probability=det.afterpulse_probability,
        basis_x_probability=det.basis_x_probability,
    )


def qkd_frames(
    scenario: Scenario,
    grid: np.ndarray,
    elevation_deg: np.ndarray,
    window: PassWindow,
    max_duration_s: float | None,
) -> tuple[int, int, float]:
    """Get: (first QKD second, number of frames, the acquisition allowance in s) of the pass,
    whatever the protocol family.

    QKD starts once the acquisition allowance has passed and the elevation is above the
    mission's mask (and not before `simulation.qkd_start_after_aos_s`), and stops at the mask,
    at LOS or after `max_duration_s`, on whole frames.
    """
    mission, sc = scenario.mission, scenario.scenario
    acquisition_s = acquisition_allowance_s(scenario)
    above = grid[elevation_deg >= mission.protocol.min_qkd_elevation_deg]
    if above.size == 0:
        raise NoPassError(f"{scenario.path}: pass never rises above the QKD elevation mask")
    start = max(math.ceil(above[0]), math.ceil(window.aos_unix_s + acquisition_s))
    if sc.simulation.qkd_start_after_aos_s is not None:
        start = max(start, math.ceil(window.aos_unix_s + sc.simulation.qkd_start_after_aos_s))
    stop = min(math.floor(above[-1]), math.floor(window.los_unix_s))
    frame_s = mission.protocol.frame_s
    if max_duration_s is not None:
        stop = min(stop, start + max(frame_s, max_duration_s))
    n_frames = int((stop - start) // frame_s)
    if n_frames < 1:
        raise NoPassError(
            f"{scenario.path}: no QKD time left after the acquisition allowance "
            f"({acquisition_s:.1f} s)"
        )
    return start, n_frames, acquisition_s


def plan_pass(scenario: Scenario, max_duration_s: float | None = None) -> PassPhysics:
    """Everything about the pass that does not depend on what the daemons do."""
    require_decoy_bb84(scenario)
    mission, sc = scenario.mission, scenario.scenario
    tle, window = choose_pass(scenario)
    station = station_geometry(scenario)
    grid_start = math.floor(window.aos_unix_s) - 60.0
    n_grid = math.ceil((window.los_unix_s + 60.0 - grid_start) / EPHEMERIS_STEP_S) + 1
    grid = grid_start + EPHEMERIS_STEP_S * np.arange(n_grid)
    if isinstance(station, StationTrack):
        # a moving station's grid must stay on its track (the track bounds the search window)
        grid = grid[(grid >= station.start_unix_s) & (grid <= station.stop_unix_s)]
    geometry = topocentric(tle[0], tle[1], station, grid)
    light_time = LightTimeModel(
        float(grid[0]), EPHEMERIS_STEP_S, geometry.range_m, geometry.range_rate_m_s
    )
    start, n_frames, acquisition_s = qkd_frames(
        scenario, grid, geometry.elevation_deg, window, max_duration_s
    )
    frame_s = mission.protocol.frame_s
    stop = start + n_frames * frame_s
    pulses_per_frame = mission.source.repetition_rate_hz * frame_s
    if abs(pulses_per_frame - round(pulses_per_frame)) > 1e-6:
        raise ConfigError(
            f"{scenario.path}: protocol.frame_s x source.repetition_rate_hz must be whole pulses"
        )
    frame_mid = start + frame_s * (np.arange(n_frames) + 0.5)
    payload_pointing = None
    if mission.transmitter.pointing is not None:
        payload_pointing = _payload_pointing(scenario, tle, station, start, frame_mid, frame_s)
    link = link_timeline(
        scenario,
        tle,
        window,
        frame_mid,
        None if payload_pointing is None else payload_pointing.frame_effective_error_urad,
    )
    attacks = sc.attacks
    return PassPhysics(
        tle=tle,
        window=window,
        qkd_start_unix_s=int(start),
        qkd_stop_unix_s=int(stop),
        frame_s=frame_s,
        pulses_per_frame=round(pulses_per_frame),
        clock_start_unix_s=float(math.floor(window.aos_unix_s - PLAN_LEAD_S)),
        light_time=light_time,
        elevation_grid_unix_s=grid,
        elevation_grid_deg=geometry.elevation_deg,
        frame_mid_unix_s=frame_mid,
        frame_range_m=link.geometry.range_m,
        frame_transmittance=link.budget.transmittance,
        frame_background_cps=link.budget.background_counts_per_s,
        frame_total_loss_db=link.budget.total_loss_db,
        frame_pointing_loss_db=link.budget.pointing_loss_db,
        acquisition_allowance_s=acquisition_s,
        transmitter_pointing_rms_urad=float(np.sqrt(np.mean(link.pointing_error_urad**2))),
        source=source_model(scenario),
        detectors=detector_model(scenario),
        attack=AttackModel(
            intercept_resend_fraction=attacks.intercept_resend_fraction,
            photon_number_splitting=attacks.photon_number_splitting,
        ),
        clock_offset_ps=sc.simulation.clock_offset_ps,
        frame_seed_key=rng.derive_key(sc.seed, "channel/frames"),
        frame_polarisation_rotation_deg=link.polarisation_rotation_deg,
        frame_polarisation_residual_deg=link.polarisation_residual_deg,
        frame_polarisation_error=link.polarisation_error,
        frame_elevation_deg=link.geometry.elevation_deg,
        tagger=TaggerModel(scenario.station.tagger.resolution_ps),
        clock_drift_ppb=sc.simulation.clock_drift_ppb,
        payload_pointing=payload_pointing,
    )


def _payload_pointing(
    scenario: Scenario,
    tle: tuple[str, str],
    station: Station | StationTrack,
    qkd_start_unix_s: float,
    frame_mid: np.ndarray,
    frame_s: float,
) -> PayloadPointingTruth:
    """The payload end of the link (satqkd.payload_pointing_physics; decision 0020)."""
    from satqkd.payload_pointing_physics import simulate_payload_pointing

    tx = scenario.mission.transmitter
    optics = TransmitterOptics(
        scenario.mission.source.wavelength_nm,
        tx.aperture_diameter_m,
        tx.divergence_urad,
        tx.optics_efficiency,
    )
    return simulate_payload_pointing(
        scenario, tle, station, qkd_start_unix_s, frame_mid, frame_s, optics
    )
