"""The station daemon's settings, declared once: defaults and allowed ranges.

`AtpSettings` is the station profile's `atp` section and `DetectorSettings` the control part of
its `detectors` section (the app's configuration adds what only the simulation reads);
`OgsSettings` adds what the daemon takes from the mission and its own timings. Control laws and
rates: docs/atp.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, InstanceOf, field_validator
from pydantic.dataclasses import dataclass

from satqkd_core.ephemeris import Station, StationTrack
from satqkd_core.pass_decisions import ProtocolParameters
from satqkd_core.sync import DEFAULT_DRIFT_CHANGE_PPB_PER_S
from satqkd_runtime.settings import SETTINGS_CONFIG, HousekeepingPeriod, Seconds

__all__ = ["MAX_CASCADE_DISTURBANCE", "AtpSettings", "DetectorSettings", "OgsSettings"]

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
# Cascade's max_disturbance (satqkd_core.cascade) allowed in a mission: at 2.0 f is already
# ~1.16 at Q = 2 % (as blind LDPC's), so more would only leak more than LDPC
MAX_CASCADE_DISTURBANCE = 2.0


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class AtpSettings:
    """Acquisition, tracking and pointing of the station (its profile's `atp` section)."""

    # acquisition: a spiral scan of the uncertainty cone with the beacon sensor's field of view
    initial_pointing_uncertainty_urad: Annotated[float, Field(gt=0.0, le=1e5)] = 1000.0
    acquisition_field_of_view_urad: Annotated[float, Field(gt=0.0, le=1e5)] = 500.0
    spiral_scan_rate_urad_per_s: Annotated[float, Field(gt=0.0, le=1e6)] = 2000.0
    # the daemon's loop through its drivers, one beacon read and mirror command per period
    fine_loop_rate_hz: Annotated[float, Field(ge=0.5, le=1000.0)] = 10.0
    prepare_lead_s: Annotated[float, Field(ge=0.0, le=600.0)] = 20.0
    # fine steering: PI law of the mirror (stable for 0 < integral gain < 2), offload to the mount
    fsm_integral_gain: Annotated[float, Field(gt=0.0, lt=2.0)] = 0.5
    fsm_proportional_gain: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    fsm_travel_fraction: Fraction = 0.95
    offload_threshold_fraction: Fraction = 0.5
    offload_time_constant_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0
    offload_settle_s: Annotated[float, Field(ge=0.0, le=60.0)] = 3.0
    # the mount: program track towards the prediction, or the spot without a mirror
    gimbal_position_gain_per_s: Annotated[float, Field(gt=0.0, le=100.0)] = 2.0
    gimbal_max_rate_deg_s: Annotated[float, Field(gt=0.0, le=100.0)] = 10.0
    gimbal_spot_gain_per_s: Annotated[float, Field(gt=0.0, le=100.0)] = 0.5
    slew_tolerance_deg: Annotated[float, Field(gt=0.0, le=10.0)] = 0.05
    track_lost_after_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0
    park_az_deg: Annotated[float, Field(ge=-360.0, le=360.0)] = 0.0
    park_el_deg: Annotated[float, Field(ge=-10.0, le=90.0)] = 90.0
    # a failed instrument is retried after instrument_retry_s, doubling up to the maximum
    instrument_retry_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0
    instrument_retry_max_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 30.0
    telemetry_period_s: Annotated[float, Field(ge=0.1, le=60.0)] = 1.0
    # the station's calibration file (satqkd atp calibrate; relative to the station file),
    # and its content once loaded (satqkd_ogs.calibration.StationCalibration; never in YAML)
    calibration: str | None = None
    calibration_data: Annotated[Any, Field(exclude=True, repr=False)] = None

    @field_validator("calibration_data")
    @classmethod
    def _loaded_calibration_only(cls, value: Any) -> Any:
        if value is not None and not hasattr(value, "mount_target"):
            raise ValueError("is filled from the file atp.calibration names, not given itself")
        return value

    @property
    def loop_period_s(self) -> float:
        """Get: the ATP loop period in seconds."""
        return 1.0 / self.fine_loop_rate_hz


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class DetectorSettings:
    """How the daemon runs the detectors (the control part of the profile's `detectors`).

    Every channel is biased at bias_v once all are colder than max_temperature_c (cooled Si
    SPADs / InGaAs APDs run at -20 to -40 C); a detector still warmer at QKD start makes the
    station refuse the pass. Temperatures are polled every poll_s.
    """

    bias_v: Annotated[float, Field(ge=0.0, le=500.0)] = 60.0
    max_temperature_c: Annotated[float, Field(ge=-100.0, le=50.0)] = -20.0
    poll_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class OgsSettings:
    """What the station daemon needs from the station and mission profiles, and its timings."""

    mission: str
    station: str
    location: InstanceOf[Station] | InstanceOf[StationTrack]
    protocol: InstanceOf[ProtocolParameters]
    sync_window_ps: float
    cascade_passes: int
    # Cascade's max_disturbance: overlap of concurrent searches (fewer round trips, more leak)
    cascade_max_disturbance: Annotated[
        float, Field(ge=0.0, le=MAX_CASCADE_DISTURBANCE, allow_inf_nan=False)
    ] = 0.0
    reply_timeout_s: Seconds = 60.0
    tag_read_timeout_s: Seconds = 120.0
    tagger_lead_s: Annotated[float, Field(ge=0.0, le=60.0)] = 1.0
    housekeeping_period_s: HousekeepingPeriod = 10.0
    atp: AtpSettings = AtpSettings()
    detectors: DetectorSettings = DetectorSettings()
    # how fast the payload clock rate may change (satqkd_core.sync_tracking), ppb/s
    sync_drift_change_ppb_per_s: Annotated[float, Field(ge=0.0, le=10.0)] = (
        DEFAULT_DRIFT_CHANGE_PPB_PER_S
    )

    @property
    def node(self) -> str:
        """Get: this station's node name on the bus."""
        return f"ogs-{self.station}"
