"""ATP calibration routines of the station, driven through the instruments' drivers, with their
fits and the calibration file the daemon applies (docs/atp-calibration.md).

Public names: `ROUTINES` (routine name -> coroutine), `CalibrationBench`, `RoutineSettings`,
`RoutineResult`, `CalibrationError`, `StationCalibration`, `load_calibration`,
`write_outputs`, `PointingModel`, `bright_stars`, `apparent_star_directions`.
"""

from __future__ import annotations

from satqkd_ogs.calibration.bench import (
    CalibrationBench,
    CalibrationError,
    Fitted,
    RoutineResult,
    RoutineSettings,
)
from satqkd_ogs.calibration.calibration_file import (
    StationCalibration,
    load_calibration,
    merge_section,
    with_station_calibration,
)
from satqkd_ogs.calibration.outputs import write_outputs
from satqkd_ogs.calibration.pointing_model import PointingModel, fit_pointing_model
from satqkd_ogs.calibration.routine_mirror import fsm_response, tracking_bandwidth
from satqkd_ogs.calibration.routine_pointing import gimbal_pointing_model
from satqkd_ogs.calibration.routine_sensor import beacon_sensor_gain, boresight
from satqkd_ogs.calibration.stars import apparent_star_directions, bright_stars

__all__ = [
    "ROUTINES",
    "CalibrationBench",
    "CalibrationError",
    "Fitted",
    "PointingModel",
    "RoutineResult",
    "RoutineSettings",
    "StationCalibration",
    "apparent_star_directions",
    "bright_stars",
    "fit_pointing_model",
    "load_calibration",
    "merge_section",
    "with_station_calibration",
    "write_outputs",
]

#: routine name -> coroutine function (bench, settings[, station])
ROUTINES = {
    "fsm-response": fsm_response,
    "gimbal-pointing-model": gimbal_pointing_model,
    "boresight": boresight,
    "beacon-sensor-gain": beacon_sensor_gain,
    "tracking-bandwidth": tracking_bandwidth,
}
