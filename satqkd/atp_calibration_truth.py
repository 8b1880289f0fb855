"""The hidden truths of an emulated calibration bench (`satqkd atp calibrate --truth FILE`) and
the emulator factory that builds the bench's mount, mirror, beacon sensor and detectors on them
(sim_backends.sky_bench.CalibrationSky). Example: configs/calibration/sim-truth.yaml.

The mount's pointing error is given term by term, or `mount_from_scenario: SCENARIO.yaml`
draws it from that scenario's seed exactly as `satqkd sim pass` does, so a model fitted here
is the one that pass's mount needs.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from drivers.interfaces import Device
from satqkd.assembly import EmulatorFactory, node_entries
from satqkd.config import (
    ConfigError,
    StationConfig,
    _Model,
    load_model,
    load_scenario,
    unix_seconds,
)
from satqkd.instruments_config import BenchConfig, BenchEntry
from satqkd.station_site import station_position
from satqkd_core import rng
from satqkd_core.ephemeris import Station
from satqkd_ogs.calibration import apparent_star_directions, bright_stars
from satqkd_ogs.settings import AtpSettings
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.beacon import QuadCellEmulator, SensorResponse
from sim_backends.emulators.fsm import GcsMirrorEmulator
from sim_backends.emulators.gimbal import PtuEmulator
from sim_backends.sky import MountModel
from sim_backends.sky_bench import BenchSource, CalibrationSky, LitBiasSupply, StarField

__all__ = ["CalibrationTruth", "TruthEmulators", "load_truth", "telescope_mount"]

Pair = tuple[float, float]


class MountTruth(_Model):
    az_zero_urad: float = 0.0
    el_zero_urad: float = 0.0
    axis_tilt_urad: Annotated[float, Field(ge=0.0)] = 0.0
    axis_tilt_towards_az_deg: float = 0.0
    collimation_urad: float = 0.0
    non_perpendicularity_urad: float = 0.0
    tube_flexure_urad: float = 0.0


class AtmosphereTruth(_Model):
    temperature_c: Annotated[float, Field(ge=-60.0, le=50.0)] = 10.0
    pressure_mbar: Annotated[float, Field(ge=0.0, le=1100.0)] | None = None


class MirrorTruth(_Model):
    gain_matrix: tuple[Pair, Pair] = ((1.0, 0.0), (0.0, 1.0))
    rotation_deg: Annotated[float, Field(ge=-45.0, le=45.0)] = 0.0
    time_constant_s: Annotated[float, Field(gt=0.0, le=1.0)] = 0.002
    sensor_noise_urad: Annotated[float, Field(ge=0.0)] = 0.05


class SensorTruth(_Model):
    gain: Pair = (1.0, 1.0)
    offset_urad: Pair = (0.0, 0.0)
    cubic: Pair = (0.0, 0.0)
    field_urad: Annotated[float, Field(gt=0.0)] | None = None  # None: the station's half FoV


class SourceTruth(_Model):
    az_deg: float = 150.0
    el_deg: Annotated[float, Field(ge=0.0, le=89.0)] = 25.0
    power_nw: Annotated[float, Field(gt=0.0)] = 40.0
    quantum_rate_cps: Annotated[float, Field(gt=0.0)] = 200_000.0


class CalibrationTruth(_Model):
    """What the calibration sky hides (see the module docstring)."""

    start_utc: datetime
    seed: Annotated[int, Field(ge=0)] = 0
    mount: MountTruth = MountTruth()
    mount_from_scenario: str | None = None
    atmosphere: AtmosphereTruth = AtmosphereTruth()
    fsm: MirrorTruth = MirrorTruth()
    beacon_sensor: SensorTruth = SensorTruth()
    boresight_urad: Pair = (0.0, 0.0)
    source: SourceTruth | None = SourceTruth()
    star_power_nw: Annotated[float, Field(gt=0.0)] = 40.0
    # resolved on load
    mount_model: Any = None
    station: Any = None
    field_of_view_urad: float = 100.0
    sensor_field_urad: float = 50.0
    dark_count_rate_hz: float = 25.0

    @property
    def start_unix_s(self) -> float:
        """Get: when the simulated bench's clock starts."""
        return unix_seconds(self.start_utc)

    def mirror_gain(self) -> tuple[Pair, Pair]:
        """Get: the mirror's effective gain matrix (the rotation times the axes' own)."""
        r = math.radians(self.fsm.rotation_deg)
        rotation = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
        g = rotation @ np.array(self.fsm.gain_matrix)
        return (float(g[0, 0]), float(g[0, 1])), (float(g[1, 0]), float(g[1, 1]))


def load_truth(
    path: Path, station: StationConfig | None, atp: AtpSettings, station_file: Path | None = None
) -> CalibrationTruth:
    """Get: a truth file, its mount resolved (a scenario's draw if it names one)."""
    truth = load_model(CalibrationTruth, path)
    mount = MountModel(**truth.mount.model_dump())
    location: Station = Station(40.3958, 117.5775, 900.0)
    if truth.mount_from_scenario is not None:
        scenario = load_scenario(path.parent / truth.mount_from_scenario)
        sky = scenario.scenario.simulation.sky
        mount = MountModel.from_seed(
            rng.derive_key(scenario.scenario.seed, "sky/mount"),
            sky.mount_zero_point_rms_urad,
            sky.mount_axis_tilt_urad,
        )
        station = station or scenario.station
    if station is not None:
        place = station_position(station, station_file or path)
        if isinstance(place, Station):
            location = place
    update: dict[str, Any] = {"mount_model": mount, "station": location}
    if station is not None:
        update["field_of_view_urad"] = station.receiver.field_of_view_urad
        update["dark_count_rate_hz"] = station.detectors.dark_count_rate_hz
    update["sensor_field_urad"] = (
        truth.beacon_sensor.field_urad or atp.acquisition_field_of_view_urad / 2.0
    )
    return truth.model_copy(update=update)


class TruthEmulators(EmulatorFactory):
    """The bench's emulators on the calibration sky: the mount, the mirror with its gain matrix
    and response time, the beacon sensor with its response, the detectors lit by the source."""

    def __init__(
        self,
        truth: CalibrationTruth,
        bench: BenchConfig,
        clock: SimClock,
        station: StationConfig | None,
    ) -> None:
        super().__init__(clock, truth.seed)
        self.truth, self.sim_clock = truth, clock
        entries = {
            slot: bench.instruments[name] for slot, name in node_entries(bench, "station").items()
        }
        if "gimbal" not in entries:
            raise ConfigError(f"{bench.origin}: an emulated calibration bench needs its gimbal")
        unit = 1000.0
        if "fsm" in entries:
            unit = entries["fsm"].driver_options().axis_unit_urad  # type: ignore[attr-defined]
        atmosphere = truth.atmosphere
        pressure = atmosphere.pressure_mbar or 1013.25 * math.exp(
            -truth.station.altitude_m / 8434.0
        )
        stars = bright_stars()

        def star_directions(unix_s: float) -> np.ndarray:
            return apparent_star_directions(
                stars,
                truth.station,
                unix_s,
                temperature_c=atmosphere.temperature_c,
                pressure_mbar=pressure,
            )

        source = truth.source
        self.sky = CalibrationSky(
            truth.mount_model,
            source=BenchSource(source.az_deg, source.el_deg, source.power_nw) if source else None,
            stars=StarField(star_directions, truth.star_power_nw, min_el_deg=5.0),
            receiver_offset_urad=truth.boresight_urad,
            field_of_view_urad=truth.field_of_view_urad,
            spot_fwhm_urad=5.0,
            quantum_rate_cps=source.quantum_rate_cps if source else 0.0,
            mirror_axis_unit_urad=unit,
            sensor_field_urad=truth.sensor_field_urad,
        )
        options = entries["gimbal"].driver_options()
        resolution = options.pan_resolution_arcsec or 0.36  # type: ignore[attr-defined]
        self.gimbal = telescope_mount(clock, resolution, self._seed("gimbal"))
        self.fsm = GcsMirrorEmulator(
            clock,
            optical_gain=truth.mirror_gain(),
            time_constant_s=truth.fsm.time_constant_s,
            sensor_noise=truth.fsm.sensor_noise_urad / unit,
            seed=self._seed("fsm"),
        )
        self.sky.attach(self.gimbal, self.fsm if "fsm" in entries else None)
        sensor = truth.beacon_sensor
        self.beacon = QuadCellEmulator(
            clock,
            sky=self.sky.beacon_spot,
            linear_range_urad=truth.sensor_field_urad,
            response=SensorResponse(sensor.gain, sensor.offset_urad, sensor.cubic),
            seed=self._seed("beacon"),
        )
        channels = 4
        if "detectors" in entries:
            channels = entries["detectors"].driver_options().channel_count  # type: ignore[attr-defined]
        self.detectors = LitBiasSupply(
            clock,
            channel_count=channels,
            ambient_c=-40.0,
            cooler_setpoint_c=-40.0,
            dark_rate_at_setpoint_cps=truth.dark_count_rate_hz,
            seed=self._seed("detectors"),
            light=self.sky.quantum_rate,
        )

    def _seed(self, name: str) -> int:
        return rng.derive_key(self.seed, f"calibration/{name}")

    def create(self, entry_name: str, entry: BenchEntry, hardware: Device | None) -> Any:
        """Get: the truth's emulator for a bench entry."""
        by_name = {
            "gimbal": self.gimbal,
            "fsm": self.fsm,
            "beacon": self.beacon,
            "detectors": self.detectors,
        }
        emulator = by_name.get(entry.spec.emulator or "")
        if emulator is None:
            return super().create(entry_name, entry, hardware)
        return emulator


def telescope_mount(clock: SimClock, resolution_arcsec: float, seed: int) -> PtuEmulator:
    """A telescope mount behind the PTU protocol: +-270 deg azimuth, -1..90 deg elevation,
    10 deg/s and 10 deg/s^2, parked at the zenith (as in a simulated pass)."""
    counts_per_deg = 3600.0 / resolution_arcsec
    gimbal = PtuEmulator(
        clock,
        resolution_arcsec=resolution_arcsec,
        pan_limits=(round(-270 * counts_per_deg), round(270 * counts_per_deg)),
        tilt_limits=(round(-1 * counts_per_deg), round(90 * counts_per_deg)),
        max_speed=round(10.0 * counts_per_deg),
        seed=seed,
    )
    for axis in (gimbal.pan, gimbal.tilt):
        axis.slew_speed = round(10.0 * counts_per_deg)
        axis.acceleration = round(10.0 * counts_per_deg)
    gimbal.tilt.position = gimbal.tilt.target = float(gimbal.tilt.maximum)
    gimbal.tick_period_s = 0.05
    return gimbal
