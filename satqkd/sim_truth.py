"""What only a simulated pass knows: the truth the report adds on top of the telemetry.

The daemons cannot see these (a real pass has no such figures): the clock offset and drift the
scenario set, the channel loss of the physics, the pointing the sky simulation knows the
station achieved, and the wire-level instruments' own counts of the commands they served.
"""

from __future__ import annotations

import numpy as np

from satqkd.config import Scenario
from satqkd.pass_physics import PassPhysics
from satqkd.report_builder import AtpTruth, SimulationTruth
from satqkd.sim_station import StationBench

# a frame whose signal missed the field stop entirely counts as this loss (JSON has no inf)
_MAX_COUPLING_LOSS_DB = 60.0


def atp_truth(physics: PassPhysics, station: StationBench | None) -> AtpTruth:
    """Get: with the station's instruments in the loop, the truth of its pointing
    (sim_backends.sky) and of the transmitter's; otherwise the statistical model's figures."""
    transmitter_db = np.asarray(physics.frame_pointing_loss_db, dtype=np.float64)
    mean_transmitter_db = float(np.mean(transmitter_db)) if transmitter_db.size else 0.0
    payload = physics.payload_pointing.report() if physics.payload_pointing is not None else {}
    if station is None or station.sky is None:
        return AtpTruth(
            model="statistical",
            acquisition_time_s=physics.acquisition_allowance_s,
            tracking_rms_urad=physics.transmitter_pointing_rms_urad,
            mean_pointing_loss_db=float(np.mean(transmitter_db)),
            payload=payload,
        )
    window = physics.window
    truth = station.sky.tracking_summary(window.aos_unix_s, window.los_unix_s)
    coupling = np.asarray(station.frame_coupling, dtype=np.float64)
    with np.errstate(divide="ignore"):
        station_db = np.minimum(-10.0 * np.log10(coupling), _MAX_COUPLING_LOSS_DB)
    mean_station_db = float(np.mean(station_db)) if station_db.size else 0.0
    return AtpTruth(
        model="instruments",
        acquisition_time_s=float(truth["acquisition_time_s"]),
        tracking_rms_urad=float(truth["tracking_rms_urad"]),
        mean_pointing_loss_db=mean_transmitter_db + mean_station_db,
        transmitter_pointing_loss_db=mean_transmitter_db,
        station_coupling_loss_db=mean_station_db,
        instruments=dict(station.paths),
        instrument_commands=station.counters(),
        station={
            "fine_residual_rms_urad": round(float(truth["fine_residual_rms_urad"]), 4),
            "acquired": bool(truth["acquired"]),
            "inside_field_of_view_fraction": round(
                float(truth["inside_field_of_view_fraction"]), 4
            ),
            "mean_coupling": round(float(np.mean(coupling)) if coupling.size else 1.0, 6),
            "min_frame_coupling": round(float(np.min(coupling)) if coupling.size else 1.0, 6),
        },
        payload=payload,
    )


def simulation_truth(
    scenario: Scenario,
    physics: PassPhysics,
    station: StationBench | None,
    *,
    wall_s: float,
    key_ready_after_los_s: float,
    benches: dict[str, str] | None = None,
    instruments: dict[str, str] | None = None,
) -> SimulationTruth:
    """Get: the truth of one simulated pass, for `satqkd.report_builder.build_report`."""
    simulation = scenario.scenario.simulation
    return SimulationTruth(
        scenario=scenario.scenario.name,
        seed=scenario.scenario.seed,
        clock_offset_ps=float(simulation.clock_offset_ps),
        clock_drift_ppb=float(simulation.clock_drift_ppb),
        mean_channel_loss_db=float(np.mean(physics.frame_total_loss_db)),
        atp=atp_truth(physics, station),
        wall_s=wall_s,
        simulated_s=physics.window.los_unix_s - physics.clock_start_unix_s,
        key_ready_after_los_s=key_ready_after_los_s,
        benches=dict(benches or {}),
        instruments=dict(instruments or {}),
    )
