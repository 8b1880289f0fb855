"""From validated configuration to what each daemon is constructed with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from satqkd.config import ConfigError, MissionConfig, Scenario, StationConfig
from satqkd_core import rng
from satqkd_core.authentication import preshared_key_bytes
from satqkd_core.ephemeris import Station, StationTrack
from satqkd_core.errors import InputError
from satqkd_core.pass_decisions import ProtocolParameters
from satqkd_ogs.atp import AtpSettings
from satqkd_ogs.daemon import OgsSettings
from satqkd_payload.daemon import PayloadSettings
from sim_backends.station_track import read_station_track_csv, station_track_from_rows

if TYPE_CHECKING:
    from satqkd.pass_physics import PassPhysics


def protocol_parameters(mission: MissionConfig) -> ProtocolParameters:
    """Public protocol parameters of a mission."""
    p = mission.protocol
    return ProtocolParameters(
        intensities=tuple(mission.source.intensities),
        probabilities=tuple(mission.source.probabilities),
        eps_sec=p.eps_sec,
        eps_cor=p.eps_cor,
        qber_abort_threshold=p.qber_abort_threshold,
        ec_efficiency_estimate=p.ec_efficiency_estimate,
        reconciliation=p.reconciliation,
        ldpc_eps_frame=p.ldpc_eps_frame,
    )


def station_position(station: StationConfig, station_file: Path) -> Station | StationTrack:
    """Where the station is for the ephemeris: its fixed location, or its track if it moves
    (a CSV beside the station file, or points given inline)."""
    track = station.track
    if track is None:
        loc = station.location
        return Station(loc.latitude_deg, loc.longitude_deg, loc.altitude_m)
    try:
        if track.csv is not None:
            return read_station_track_csv(station_file.parent / track.csv)
        return station_track_from_rows(
            (p.unix_s, p.latitude_deg, p.longitude_deg, p.altitude_m) for p in track.points or []
        )
    except InputError as exc:
        raise ConfigError(f"{station_file}: track: {exc}") from None


def payload_settings(
    mission: MissionConfig,
    *,
    ground_link_timeout_s: float | None = None,
    controller_keep_alive_s: float | None = None,
) -> PayloadSettings:
    """Settings of the payload daemon (link timings: PayloadSettings' defaults unless given)."""
    timings = {
        name: value
        for name, value in (
            ("ground_link_timeout_s", ground_link_timeout_s),
            ("controller_keep_alive_s", controller_keep_alive_s),
        )
        if value is not None
    }
    return PayloadSettings(
        mission=mission.name,
        protocol=protocol_parameters(mission),
        repetition_rate_hz=mission.source.repetition_rate_hz,
        **timings,
    )


def ogs_settings(mission: MissionConfig, station: StationConfig, station_file: Path) -> OgsSettings:
    """Settings of the station daemon for one mission."""
    return OgsSettings(
        mission=mission.name,
        station=station.name,
        location=station_position(station, station_file),
        protocol=protocol_parameters(mission),
        sync_window_ps=mission.protocol.sync_window_ps,
        cascade_passes=mission.protocol.cascade_passes,
        atp=station_atp_settings(station),
    )


def station_atp_settings(station: StationConfig) -> AtpSettings:
    """The station daemon's ATP and detector settings from the profile's atp/detectors."""
    atp, detectors = station.atp, station.detectors
    return AtpSettings(
        fine_loop_rate_hz=atp.fine_loop_rate_hz,
        prepare_lead_s=atp.prepare_lead_s,
        fsm_integral_gain=atp.fsm_integral_gain,
        fsm_proportional_gain=atp.fsm_proportional_gain,
        offload_threshold_fraction=atp.offload_threshold_fraction,
        gimbal_position_gain_per_s=atp.gimbal_position_gain_per_s,
        gimbal_max_rate_deg_s=atp.gimbal_max_rate_deg_s,
        acquisition_field_of_view_urad=atp.acquisition_field_of_view_urad,
        spiral_scan_rate_urad_per_s=atp.spiral_scan_rate_urad_per_s,
        initial_pointing_uncertainty_urad=atp.initial_pointing_uncertainty_urad,
        track_lost_after_s=atp.track_lost_after_s,
        park_az_deg=atp.park_az_deg,
        park_el_deg=atp.park_el_deg,
        instrument_retry_s=atp.instrument_retry_s,
        telemetry_period_s=atp.telemetry_period_s,
        detector_bias_v=detectors.bias_v,
        detector_max_temperature_c=detectors.max_temperature_c,
    )


def preshared_auth_key(seed: int, messages_per_direction: int) -> bytes:
    """The bootstrap authentication key both ends are installed with before launch.

    In simulation it is drawn from the scenario seed (so runs are reproducible); on a real
    mission it is loaded into the payload on the ground and into the station's key store.
    """
    n_bytes = preshared_key_bytes(messages_per_direction)
    words = rng.random_u64(
        rng.derive_key(seed, "preshared-auth"), np.arange((n_bytes + 7) // 8, dtype=np.int64)
    )
    return words.astype(">u8").tobytes()[:n_bytes]


def pass_plan_fields(plan_id: int, scenario: Scenario, physics: PassPhysics) -> dict[str, Any]:
    """The LOAD_PASS_PLAN telecommand the control centre sends to both ends."""
    return {
        "plan_id": plan_id,
        "mission": scenario.mission.name,
        "station": scenario.station.name,
        "tle_line1": physics.tle[0],
        "tle_line2": physics.tle[1],
        "aos_unix_s": physics.window.aos_unix_s,
        "los_unix_s": physics.window.los_unix_s,
        "qkd_start_unix_s": float(physics.qkd_start_unix_s),
        "qkd_stop_unix_s": float(physics.qkd_stop_unix_s),
        "repetition_rate_hz": scenario.mission.source.repetition_rate_hz,
    }
