"""Bench files (configs/instruments/*.yaml): which driver talks to which port.

A bench names each instrument, its `driver` (a row of the instrument registry,
`drivers.registry`), its `resource` string and its `options`. The resource decides how the
instrument is reached:

- `serial://…`, `tcp://…`, `visa://…`: real hardware through that transport;
- `visa-sim://FILE.yaml#RESOURCE`: the driver over a pyvisa-sim model;
- `file://PATH`: a recorded acquisition, for a driver that replays one;
- `emulator://NAME`: the driver's wire-level emulator, started in-process on a pty or a loopback
  TCP port (`?port=pty|tcp` to choose); `in-process://NAME`: the same emulator behind an
  in-memory transport, or, for a simulated instrument with no wire protocol, that instrument,
  or a service of the host itself (`in-process://os_entropy`, the OS CSPRNG).

The payload controller's emulator owns the source hardware it drives: name the bench entry that
is that hardware with `emulator://payload-controller?hardware=ENTRY` (default: a simulated
source in-process). Mistakes become a one-line :class:`ConfigError` naming the file and key.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

import sim_backends.entropy  # registers the seeded simulation entropy source (sim_entropy)
import sim_backends.instruments  # registers the in-process simulated instruments
import sim_backends.pair_instruments  # noqa: F401  (registers the BBM92 payload's simulated ones)
from drivers.options import DriverOptions
from drivers.registry import DRIVERS, DriverSpec
from drivers.transport import open_transport
from satqkd.config import (
    NAME_PATTERN,
    ConfigError,
    _describe_error,
    _Model,
    join_problems,
    load_yaml_mapping,
)

EMULATOR_SCHEME = "emulator://"
FILE_SCHEME = "file://"
IN_PROCESS_SCHEME = "in-process://"
EMULATOR_PORTS = ("pty", "tcp")
InstrumentName = Annotated[str, Field(pattern=NAME_PATTERN)]


def simulated_target(resource: str) -> tuple[str, str, dict[str, str]] | None:
    """Get: (how, emulator name, query) of an `emulator://` or `in-process://` resource, where
    `how` is `emulator` or `in-process`; None for a transport resource."""
    for scheme, how in ((EMULATOR_SCHEME, "emulator"), (IN_PROCESS_SCHEME, "in-process")):
        if resource.startswith(scheme):
            parts = urlsplit(resource)
            return how, parts.netloc + parts.path, dict(parse_qsl(parts.query))
    return None


def resource_path(resource: str) -> str:
    """Get: how a resource reaches its instrument: in-process, emulator, visa-sim or hardware."""
    target = simulated_target(resource)
    if target is not None:
        return target[0]
    if resource.startswith(FILE_SCHEME):
        return "recording"
    return "visa-sim" if resource.startswith("visa-sim://") else "hardware"


class BenchEntry(_Model):
    """One instrument: its driver, its resource, timeouts and the driver's options."""

    driver: str
    resource: str
    timeout_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0
    connect_timeout_s: Annotated[float, Field(gt=0.0, le=120.0)] = 5.0
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value not in DRIVERS:
            raise ValueError(f"unknown driver (available: {', '.join(DRIVERS)})")
        return value

    @field_validator("resource")
    @classmethod
    def _resource_string(cls, value: str) -> str:
        target = simulated_target(value)
        if value.startswith(FILE_SCHEME):
            if len(value) == len(FILE_SCHEME):
                raise ValueError(f"{value!r}: a recording is file://PATH")
            return value
        if target is None:
            open_transport(value)  # ValueError naming the string if it does not parse
            return value
        how, _, query = target
        unknown = sorted(set(query) - {"port", "hardware"})
        if unknown:
            raise ValueError(f"{value!r}: unknown option(s) {unknown} (allowed: port, hardware)")
        if "port" in query and (how != "emulator" or query["port"] not in EMULATOR_PORTS):
            raise ValueError(f"{value!r}: port= is for emulator:// and one of {EMULATOR_PORTS}")
        return value

    @model_validator(mode="after")
    def _resource_fits_driver(self) -> BenchEntry:
        target = simulated_target(self.resource)
        spec = self.spec
        if spec.reads_file != self.resource.startswith(FILE_SCHEME):
            if spec.reads_file:
                raise ValueError(f"driver {self.driver} replays a recording: its resource is "
                                 f"{FILE_SCHEME}PATH")  # fmt: skip
            raise ValueError(f"driver {self.driver} does not read recordings ({FILE_SCHEME})")
        if target is None:
            if spec.host_service:
                raise ValueError(
                    f"driver {self.driver} is provided by the host and has no transport: its "
                    f"resource is {IN_PROCESS_SCHEME}{spec.name}"
                )
            if spec.in_process_only:
                raise ValueError(
                    f"driver {self.driver} is a simulated instrument: its resource is "
                    f"{IN_PROCESS_SCHEME}{spec.kind}"
                )
            return self
        how, name, query = target
        if spec.in_process_only:
            if how != "in-process":
                raise ValueError(
                    f"driver {self.driver} has no wire protocol: use {IN_PROCESS_SCHEME}{name}"
                )
            return self
        if spec.emulator is None:
            raise ValueError(f"driver {self.driver} has no emulator; give it a real resource")
        if name != spec.emulator:
            scheme = EMULATOR_SCHEME if how == "emulator" else IN_PROCESS_SCHEME
            raise ValueError(
                f"resource {self.resource} speaks another protocol than this driver "
                f"(use {scheme}{spec.emulator})"
            )
        if "hardware" in query and spec.emulator != "payload-controller":
            raise ValueError(f"resource {self.resource}: hardware= is for the payload controller")
        return self

    @property
    def spec(self) -> DriverSpec:
        """Get: the registry row of this entry's driver."""
        return DRIVERS[self.driver]

    @property
    def kind(self) -> str:
        """Get: the kind of instrument (the slot it fills in a node)."""
        return self.spec.kind

    @property
    def path(self) -> str:
        """Get: how the resource reaches the instrument (in-process, emulator, visa-sim,
        hardware)."""
        return resource_path(self.resource)

    def driver_options(self) -> DriverOptions:
        """Get: the validated options of this entry's driver."""
        return self.spec.options.model_validate(self.options)


class BenchConfig(_Model):
    """A bench: named instruments, each with its driver and resource."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    instruments: Annotated[dict[InstrumentName, BenchEntry], Field(min_length=1)]
    _origin: str = PrivateAttr(default="")

    @property
    def origin(self) -> str:
        """Get: where the bench came from (its file), for messages."""
        return self._origin or f"bench {self.name}"


def _entry_problems(entries: dict[str, BenchEntry], bench: BenchConfig | None) -> list[str]:
    """What pydantic cannot say per entry: each driver's options, and (for a bench that
    validated) that a payload controller's `hardware=` names another source entry of it."""
    problems: list[str] = []
    for name, entry in entries.items():
        target = simulated_target(entry.resource)
        hardware = target[2].get("hardware") if target else None
        if hardware is not None and bench is not None:
            other = bench.instruments.get(hardware)
            if other is None or other.kind != "source" or hardware == name:
                problems.append(
                    f"instruments.{name}.resource: hardware={hardware} must name another "
                    "source entry of this bench"
                )
        try:
            entry.driver_options()
        except ValidationError as exc:
            problems += [
                f"instruments.{name}.options.{_describe_error(dict(error), entry.spec.options)}"
                for error in exc.errors()
            ]
    return problems


def _valid_entries(data: dict[str, Any]) -> dict[str, BenchEntry]:
    """Get: the entries of a bench that failed validation which are valid on their own (so
    their options are checked in the same round)."""
    raw = data.get("instruments")
    entries: dict[str, BenchEntry] = {}
    for name, entry in raw.items() if isinstance(raw, dict) else ():
        with contextlib.suppress(ValidationError):
            entries[str(name)] = BenchEntry.model_validate(entry)
    return entries


def validate_instruments(data: dict[str, Any], source: str) -> BenchConfig:
    """Get: a validated bench; ConfigError naming `source` and every problem (key path and
    rule), all at once."""
    bench: BenchConfig | None = None
    problems: list[str] = []
    try:
        bench = BenchConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_error(dict(error), BenchConfig) for error in exc.errors()]
    problems += _entry_problems(bench.instruments if bench else _valid_entries(data), bench)
    if problems or bench is None:
        raise ConfigError(f"{source}: {join_problems(problems)}")
    bench._origin = source
    return bench


def load_instruments_config(path: str | Path) -> BenchConfig:
    """Get: the bench described by a YAML file; ConfigError on any problem."""
    path = Path(path)
    return validate_instruments(load_yaml_mapping(path), str(path))
