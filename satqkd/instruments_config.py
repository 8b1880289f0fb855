"""Instrument resource maps (configs/instruments/*.yaml): which driver talks to which port.

A file names each instrument, its driver and its resource string; the resource picks the
transport (``serial://``, ``tcp://``, ``visa://``, ``visa-sim://``) or an in-process emulator
(``emulator://NAME``). Mistakes become a one-line :class:`ConfigError` naming the file and the
key, as for mission and station profiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from drivers.beacon import QuadCellBeacon
from drivers.commands import CommandInstrument
from drivers.fsm import PiGcsMirror
from drivers.gimbal import PtuGimbal
from drivers.scpi import ScpiBiasSupply, ScpiLaserSource
from drivers.transport import open_transport
from satqkd.config import NAME_PATTERN, ConfigError, _describe_error, _Model, load_yaml_mapping
from sim_backends.emulators import EMULATORS

EMULATOR_SCHEME = "emulator://"
Positive = Annotated[float, Field(gt=0.0)]


# --- per-driver options --------------------------------------------------------------------


class GimbalOptions(_Model):
    pan_resolution_arcsec: Positive | None = None
    tilt_resolution_arcsec: Positive | None = None


class MirrorOptions(_Model):
    axes: tuple[str, str] = ("A", "B")
    axis_unit_urad: Positive = 1000.0


class BeaconOptions(_Model):
    max_sensor_temperature_c: Annotated[float, Field(ge=-50.0, le=150.0)] = 60.0


class LaserOptions(_Model):
    identity_pattern: str | None = None


class BiasSupplyOptions(_Model):
    identity_pattern: str | None = None
    channel_count: Annotated[int, Field(ge=1, le=16)] = 4
    max_bias_v: Annotated[float, Field(ge=0.0, le=500.0)] = 80.0
    max_temperature_c: Annotated[float, Field(ge=-100.0, le=100.0)] = 30.0


# --- entries -------------------------------------------------------------------------------------


class _Entry(_Model):
    """What every instrument entry has: a resource string and timeouts."""

    driver_class: ClassVar[type[CommandInstrument]]
    emulator: ClassVar[str]
    resource: str
    timeout_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0
    connect_timeout_s: Annotated[float, Field(gt=0.0, le=120.0)] = 5.0

    @field_validator("resource")
    @classmethod
    def _resource_string(cls, value: str) -> str:
        if value.startswith(EMULATOR_SCHEME):
            name = value[len(EMULATOR_SCHEME) :]
            if name not in EMULATORS:
                raise ValueError(
                    f"no emulator {name!r} (available: {', '.join(sorted(EMULATORS))})"
                )
            return value
        open_transport(value)  # ValueError naming the string if it does not parse
        return value

    @model_validator(mode="after")
    def _emulator_matches_driver(self) -> _Entry:
        if self.resource.startswith(EMULATOR_SCHEME):
            name = self.resource[len(EMULATOR_SCHEME) :]
            if name != self.emulator:
                raise ValueError(
                    f"resource {self.resource} speaks another protocol than this driver "
                    f"(use {EMULATOR_SCHEME}{self.emulator})"
                )
        return self

    def driver_options(self) -> dict[str, Any]:
        """Get: constructor keyword arguments from the options block."""
        options = getattr(self, "options", None)
        return {} if options is None else options.model_dump(exclude_none=True)


class GimbalEntry(_Entry):
    driver_class = PtuGimbal
    emulator = "gimbal"
    driver: Literal["ptu_gimbal"]
    options: GimbalOptions = GimbalOptions()


class MirrorEntry(_Entry):
    driver_class = PiGcsMirror
    emulator = "fsm"
    driver: Literal["pi_gcs_mirror"]
    options: MirrorOptions = MirrorOptions()


class BeaconEntry(_Entry):
    driver_class = QuadCellBeacon
    emulator = "beacon"
    driver: Literal["quad_cell_beacon"]
    options: BeaconOptions = BeaconOptions()


class LaserEntry(_Entry):
    driver_class = ScpiLaserSource
    emulator = "laser"
    driver: Literal["scpi_laser_source"]
    options: LaserOptions = LaserOptions()


class BiasSupplyEntry(_Entry):
    driver_class = ScpiBiasSupply
    emulator = "detectors"
    driver: Literal["scpi_bias_supply"]
    options: BiasSupplyOptions = BiasSupplyOptions()


InstrumentEntry = Annotated[
    GimbalEntry | MirrorEntry | BeaconEntry | LaserEntry | BiasSupplyEntry,
    Field(discriminator="driver"),
]
_ENTRIES: dict[str, type[_Entry]] = {
    "ptu_gimbal": GimbalEntry,
    "pi_gcs_mirror": MirrorEntry,
    "quad_cell_beacon": BeaconEntry,
    "scpi_laser_source": LaserEntry,
    "scpi_bias_supply": BiasSupplyEntry,
}
DRIVER_NAMES = tuple(_ENTRIES)
InstrumentName = Annotated[str, Field(pattern=NAME_PATTERN)]


class InstrumentsConfig(_Model):
    """A bench: named instruments, each with its driver and resource."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    instruments: Annotated[dict[InstrumentName, InstrumentEntry], Field(min_length=1)]


# --- loading and building --------------------------------------------------------------------


def _without_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the discriminator value in the path: instruments.gimbal.ptu_gimbal.options
    if len(loc) > 2 and loc[0] == "instruments" and loc[2] in DRIVER_NAMES:
        return loc[:2] + loc[3:]
    return loc


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    loc = _without_union_tags(tuple(error["loc"]))
    path = ".".join(str(part) for part in loc)
    kind = error["type"]
    if kind == "union_tag_invalid":
        return f"{path}.driver: unknown driver (available: {', '.join(DRIVER_NAMES)})"
    if kind == "union_tag_not_found":
        return f"{path}.driver: required key is missing (one of: {', '.join(DRIVER_NAMES)})"
    if kind == "extra_forbidden" and len(loc) >= 3 and loc[0] == "instruments":
        entry = data.get("instruments", {}).get(loc[1], {})
        model: Any = _ENTRIES.get(entry.get("driver") if isinstance(entry, dict) else None)
        for part in loc[2:-1]:
            field = model.model_fields.get(str(part)) if model is not None else None
            model = field.annotation if field is not None else None
        if model is not None:
            allowed = ", ".join(name for name in model.model_fields if name != "driver")
            return f"{path}: unknown key (allowed here: {allowed})"
    return _describe_error({**error, "loc": loc}, InstrumentsConfig)


def validate_instruments(data: dict[str, Any], source: str) -> InstrumentsConfig:
    """Get: a validated bench; ConfigError naming `source`, the key path and the rule."""
    try:
        return InstrumentsConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(dict(errors[0]), data)}{more}") from None


def load_instruments_config(path: str | Path) -> InstrumentsConfig:
    """Get: the bench described by a YAML file; ConfigError on any problem."""
    path = Path(path)
    return validate_instruments(load_yaml_mapping(path), str(path))


def build_instrument(
    name: str, entry: GimbalEntry | MirrorEntry | BeaconEntry | LaserEntry | BiasSupplyEntry,
    resource: str | None = None,
) -> CommandInstrument:  # fmt: skip
    """Get: an unconnected driver for an entry (`resource` overrides it: a started emulator)."""
    transport = open_transport(resource or entry.resource)
    return entry.driver_class(name, transport, timeout_s=entry.timeout_s, **entry.driver_options())
