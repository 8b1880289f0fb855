"""The station's calibration file (`calibration.yaml`): what `satqkd atp calibrate` writes and
the station daemon applies, one section per routine, each optional.

    schema: satqkd.station-calibration/1
    pointing_model: {terms_urad: {IA: .., IE: .., CA: .., NPAE: .., AN: .., AW: .., TF: .., RF: ..}}
    fsm: {gain_matrix: [[gxx, gxy], [gyx, gyy]], bandwidth_hz: .., settling_time_s: ..}
    boresight: {offset_urad: [x, y]}
    beacon_sensor: {gain: [gx, gy], offset_urad: [x, y], cubic: [cx, cy], field_urad: R,
                    linear_range_urad: ..}
    tracking: {bandwidth_hz: .., loop_rate_hz: .., integral_gain: ..}

What the daemon does with each (satqkd_ogs.mount, satqkd_ogs.fine_steering): the mount terms
of the pointing model move every program-track target to the encoder position that puts the
true line of sight on it; the beacon sensor's reading is turned back into a sky angle; a sky
command for the mirror goes through the inverse gain matrix; fine steering nulls the spot at the
boresight offset instead of the sensor's zero, which centres the quantum receiver's field stop.
`tracking` is a record of the measured loop (nothing to apply).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from satqkd_core.errors import InputError
from satqkd_ogs.calibration.pointing_model import MOUNT_TERMS, TERMS, PointingModel
from satqkd_ogs.settings import AtpSettings

__all__ = [
    "SCHEMA",
    "StationCalibration",
    "load_calibration",
    "merge_section",
    "with_station_calibration",
]

SCHEMA = "satqkd.station-calibration/1"
_MAX_FILE_BYTES = 1 << 20
Finite = Annotated[float, Field(allow_inf_nan=False)]
Pair = tuple[Finite, Finite]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class PointingModelSection(_Section):
    terms_urad: dict[str, Finite]

    def model_post_init(self, _: Any) -> None:
        unknown = sorted(set(self.terms_urad) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown terms {unknown} (terms: {', '.join(TERMS)})")


class MirrorSection(_Section):
    gain_matrix: tuple[Pair, Pair]

    def model_post_init(self, _: Any) -> None:
        if abs(np.linalg.det(np.array(self.gain_matrix))) < 1e-3:
            raise ValueError("gain_matrix is singular: the mirror could not steer both axes")


class BoresightSection(_Section):
    offset_urad: Pair


class BeaconSensorSection(_Section):
    gain: tuple[
        Annotated[float, Field(gt=0.05, le=20.0)], Annotated[float, Field(gt=0.05, le=20.0)]
    ]
    offset_urad: Pair = (0.0, 0.0)
    cubic: tuple[Annotated[float, Field(ge=-0.3, le=0.3)], Annotated[float, Field(ge=-0.3, le=0.3)]]
    field_urad: Annotated[float, Field(gt=0.0)]


class StationCalibration(BaseModel):
    """A station's calibration file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["satqkd.station-calibration/1"] = Field(SCHEMA, alias="schema")
    station: str | None = None
    pointing_model: PointingModelSection | None = None
    fsm: MirrorSection | None = None
    boresight: BoresightSection | None = None
    beacon_sensor: BeaconSensorSection | None = None
    tracking: _Section | None = None

    @property
    def pointing(self) -> PointingModel | None:
        """Get: the fitted pointing model, if any."""
        if self.pointing_model is None:
            return None
        return PointingModel(dict(self.pointing_model.terms_urad))

    def mount_target(self, az_deg: float, el_deg: float) -> tuple[float, float]:
        """Get: the encoder (az, el) that points the true line of sight at (az, el) (the
        mount's own terms; unchanged without a pointing model)."""
        model = self.pointing
        return (
            (az_deg, el_deg) if model is None else model.encoder_target(az_deg, el_deg, MOUNT_TERMS)
        )

    def sensor_to_sky(self, x_urad: float, y_urad: float) -> tuple[float, float]:
        """Get: a beacon sensor reading turned into the spot's sky angle from the cell's
        centre (unchanged without a sensor calibration)."""
        if (sensor := self.beacon_sensor) is None:
            return x_urad, y_urad
        x, y = (
            _invert_cubic(
                reading - sensor.offset_urad[axis],
                sensor.gain[axis],
                sensor.cubic[axis],
                sensor.field_urad,
            )
            for axis, reading in enumerate((x_urad, y_urad))
        )
        return x, y

    def spot_on_sky(self, x_urad: float, y_urad: float) -> tuple[float, float]:
        """Get: a beacon sensor reading turned into the spot's sky angle relative to the
        boresight offset (the point fine steering nulls)."""
        x, y = self.sensor_to_sky(x_urad, y_urad)
        if self.boresight is not None:
            x -= self.boresight.offset_urad[0]
            y -= self.boresight.offset_urad[1]
        return x, y

    def mirror_command(self, x_urad: float, y_urad: float) -> tuple[float, float]:
        """Get: the mirror's (tip, tilt) command that moves the line of sight by (x, y) on the
        sky (the inverse gain matrix; unchanged without one)."""
        if self.fsm is None:
            return x_urad, y_urad
        tip, tilt = np.linalg.solve(np.array(self.fsm.gain_matrix), np.array([x_urad, y_urad]))
        return float(tip), float(tilt)


def with_station_calibration(atp: AtpSettings, station_file: Path) -> AtpSettings:
    """Get: ATP settings with the calibration file they name (relative to the station file)
    loaded into `calibration_data`; the settings themselves if they name none. InputError
    naming the station file, the key and the problem."""
    if atp.calibration is None:
        return atp
    path = Path(station_file).parent / atp.calibration
    try:
        loaded = load_calibration(path)
    except InputError as exc:
        raise InputError(f"{station_file}: atp.calibration: {exc}") from None
    return dataclasses.replace(atp, calibration_data=loaded)


def _invert_cubic(reading: float, gain: float, cubic: float, field_urad: float) -> float:
    """The x with gain * x * (1 + cubic (x/R)^2) = reading (Newton from the linear guess;
    monotonic inside the field for |cubic| <= 0.3)."""
    x = reading / gain
    for _ in range(6):
        u = x / field_urad
        value = gain * x * (1.0 + cubic * u * u) - reading
        slope = gain * (1.0 + 3.0 * cubic * u * u)
        if slope <= 0.0:
            break
        x -= value / slope
    return x


def load_calibration(path: str | Path) -> StationCalibration:
    """Get: a calibration file, validated; InputError naming the file and key on a problem."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: calibration file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise InputError(f"{path}: larger than {_MAX_FILE_BYTES} bytes: not a calibration file")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of calibration sections")
    try:
        return StationCalibration.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise InputError(f"{path}: {where}: {error['msg']}") from None


def merge_section(path: Path, name: str, section: dict[str, Any]) -> dict[str, Any]:
    """Control: write one routine's section into the calibration file at `path`, keeping the
    other sections of an existing valid file; returns the whole file's content."""
    content: dict[str, Any] = {"schema": SCHEMA}
    if path.is_file():
        existing = load_calibration(path)
        content.update(existing.model_dump(by_alias=True, exclude_none=True, mode="json"))
    content[name] = section
    StationCalibration.model_validate(content)  # what is written always loads
    path.write_text(yaml.safe_dump(_plain(content), sort_keys=False))
    return content


def _plain(value: Any) -> Any:
    """YAML-safe plain values (tuples as lists, numpy scalars as floats)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
