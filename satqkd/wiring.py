"""From validated mission and station profiles to what each daemon is built and commanded with.

The daemons declare their settings (satqkd_payload.settings, satqkd_ogs.settings); the profile
sections that set them extend those classes (satqkd.config), so nothing is copied field by
field here: this module only combines a mission with a station.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from satqkd.config import MissionConfig, MissionProfileConfig, Scenario, StationConfig
from satqkd.pass_physics import PassPhysics
from satqkd.station_site import station_position
from satqkd_core import rng
from satqkd_core.authentication import preshared_key_bytes
from satqkd_core.pass_decisions import ProtocolParameters
from satqkd_ogs.settings import AtpSettings, DetectorSettings, OgsSettings
from satqkd_payload.settings import PayloadSettings

__all__ = [
    "ogs_settings",
    "pass_plan_fields",
    "payload_settings",
    "preshared_auth_key",
    "protocol_parameters",
    "station_position",
]

S = TypeVar("S", AtpSettings, DetectorSettings)


def protocol_parameters(mission: MissionConfig | MissionProfileConfig) -> ProtocolParameters:
    """Public protocol parameters of a mission (a BBM92 one has no decoy states: one
    intensity label, its pair source's; qber_abort_threshold is its qber_tolerance)."""
    p = mission.protocol
    if mission.source is None:  # BBM92 (satqkd.sim_bbm92, docs/bbm92.md)
        return ProtocolParameters(
            intensities=(1.0, 0.0, 0.0),
            probabilities=(1.0, 0.0, 0.0),
            eps_sec=p.eps_sec,
            eps_cor=p.eps_cor,
            qber_abort_threshold=p.qber_tolerance,
            ec_efficiency_estimate=p.ec_efficiency_estimate,
            reconciliation=p.reconciliation,
        )
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


def payload_settings(mission: MissionConfig) -> PayloadSettings:
    """Settings of the payload daemon for a mission (its own timings at their defaults)."""
    return PayloadSettings(
        mission=mission.name,
        protocol=protocol_parameters(mission),
        repetition_rate_hz=mission.source.repetition_rate_hz,
        pattern_mode=mission.source.pattern,
        clock_offset_uncertainty_ps=mission.time_sync.clock_offset_uncertainty_ps,
    )


def ogs_settings(
    mission: MissionConfig | MissionProfileConfig, station: StationConfig, station_file: Path
) -> OgsSettings:
    """Settings of the station daemon for one mission."""
    return OgsSettings(
        mission=mission.name,
        station=station.name,
        location=station_position(station, station_file),
        protocol=protocol_parameters(mission),
        sync_window_ps=mission.protocol.sync_window_ps,
        cascade_passes=mission.protocol.cascade_passes,
        cascade_max_disturbance=mission.protocol.cascade_max_disturbance,
        sync_drift_change_ppb_per_s=mission.time_sync.drift_change_ppb_per_s,
        atp=_calibrated(_daemon_part(AtpSettings, station.atp), station_file),
        detectors=_daemon_part(DetectorSettings, station.detectors),
    )


def _calibrated(atp: AtpSettings, station_file: Path) -> AtpSettings:
    """The ATP settings with the station's calibration file (atp.calibration) loaded."""
    from satqkd.config import ConfigError
    from satqkd_core.errors import InputError
    from satqkd_ogs.calibration import with_station_calibration

    try:
        return with_station_calibration(atp, station_file)
    except InputError as exc:
        raise ConfigError(str(exc)) from None


def _daemon_part(settings: type[S], section: S) -> S:
    """The daemon's own settings out of a profile section that extends them (the section's
    other keys are for the simulation)."""
    return settings(**{name: getattr(section, name) for name in settings.__pydantic_fields__})


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
