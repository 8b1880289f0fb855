"""The instrument registry: one table from a driver name to everything needed to build it.

A bench file (`configs/instruments/*.yaml`) names each instrument's `driver`; this table says
which class that is, which kind of instrument it is (the slot it fills in a node), which
options model validates its `options:` block, which wire-level emulator speaks its protocol
(`emulator://NAME` in simulation) and how to construct it from an opened transport. Adding a
driver of an existing kind touches the driver module (class and options model), its emulator,
its protocol test and one `register_driver` line below.

In-process simulated instruments, which have no wire protocol (a source answering from its
sequencer, a tagger fed by the channel simulation), register themselves from `sim_backends`
when the application imports it; nothing in a daemon does, so a daemon never sees them. A
host service with no transport (the OS CSPRNG, `os_entropy`) is also reached as in-process://
but registers here, flagged `host_service`: it is production equipment, not a simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.beacon import QuadCellBeacon, QuadCellBeaconOptions
from drivers.entropy_os import OsEntropySource
from drivers.entropy_qrng import SerialQrng, SerialQrngOptions
from drivers.fsm import PiGcsMirror, PiGcsMirrorOptions
from drivers.gimbal import PtuGimbal, PtuGimbalOptions
from drivers.interfaces import Device
from drivers.options import DriverOptions
from drivers.payload_link import PayloadLink
from drivers.payload_link_source import PayloadLinkSource, PayloadLinkSourceOptions
from drivers.scpi import (
    ScpiBiasSupply,
    ScpiBiasSupplyOptions,
    ScpiLaserSource,
    ScpiLaserSourceOptions,
)
from drivers.time_tagger_replay import ReplayTaggerOptions, ReplayTimeTagger
from drivers.time_tagger_tcp import TcpTimeTagger, TcpTimeTaggerOptions
from drivers.time_tagger_tdc1 import Tdc1TaggerOptions, Tdc1TimeTagger
from drivers.transport import Transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import Clock
from satqkd_runtime.emission_auth import EmissionSigner

#: the kinds of instrument a node drives, each one slot: the payload drives a source; a ground
#: station a time tagger, a gimbal, a fast-steering mirror, a beacon sensor and a detector bias
#: supply; both an entropy source (every secret and public random value they draw). A kind
#: added later is a new name here and a slot in the node that drives it. A BBM92 payload
#: drives a pair source and its own (on-board) time tagger instead of a pulsed source.
KINDS: tuple[str, ...] = (
    "source", "tagger", "gimbal", "fsm", "beacon", "detectors", "entropy",
    "pair_source", "onboard_tagger",
)  # fmt: skip
NODE_KINDS: Mapping[str, tuple[str, ...]] = {
    "payload": ("source", "entropy", "pair_source", "onboard_tagger"),
    "station": ("tagger", "gimbal", "fsm", "beacon", "detectors", "entropy"),
}


@dataclass(frozen=True)
class BuildContext:
    """What a node lends its drivers besides a transport: its clock and, for a source, the
    pulse pattern its sequencer draws (pulse index -> basis, bit, intensity); its key
    directory (`keys`: a payload_link_source signs requests to emit with the emission key
    there, and refuses to be built without one) and the key directory of a payload controller
    it emulates in-process (`controller_keys`: that controller enforces its laser interlock
    with the emission key there). None: not given (a bare driver sends unsigned requests)."""

    clock: Clock | None = None
    pattern: Callable[[np.ndarray], Any] | None = None
    keys: Path | None = None
    controller_keys: Path | None = None


@dataclass(frozen=True)
class BuildRequest:
    """What a builder gets: the instrument's name, its opened transport (None for in-process
    and recording-reading instruments), validated options, reply timeout, the node's context
    and the entry's resource string."""

    name: str
    transport: Transport | None
    options: DriverOptions
    timeout_s: float
    context: BuildContext
    resource: str = ""

    @property
    def kwargs(self) -> dict[str, Any]:
        """Get: the options as constructor keyword arguments (unset ones left out)."""
        return self.options.model_dump(exclude_none=True)


#: builds an unconnected driver from a request
Builder = Callable[[BuildRequest], Device]


@dataclass(frozen=True)
class DriverSpec:
    """One row of the registry."""

    name: str
    kind: str
    driver_class: type[Device]
    options: type[DriverOptions]
    build: Builder
    #: the wire-level emulator that speaks this driver's protocol (None: none exists)
    emulator: str | None = None
    #: True for simulated instruments with no wire protocol (reached only as in-process://)
    in_process_only: bool = False
    #: True for instruments that replay a recording (reached only as file://PATH)
    reads_file: bool = False
    summary: str = ""
    #: True for an in-process driver of something the host itself provides (the OS CSPRNG),
    #: not a simulation: no transport, yet allowed in production daemons
    host_service: bool = False


DRIVERS: dict[str, DriverSpec] = {}


def register_driver(spec: DriverSpec) -> DriverSpec:
    """Control: add a driver to the registry; ValueError for an unknown kind or a name taken
    by another class (registering the same row again is harmless)."""
    if spec.kind not in KINDS:
        raise ValueError(f"driver {spec.name}: unknown kind {spec.kind!r} (kinds: {KINDS})")
    known = DRIVERS.get(spec.name)
    if known is not None and known.driver_class is not spec.driver_class:
        raise ValueError(f"driver name {spec.name!r} is taken by {known.driver_class.__name__}")
    DRIVERS[spec.name] = spec
    return spec


def driver_spec(name: str) -> DriverSpec:
    """Get: the registry row of a driver; InputError listing the known names."""
    try:
        return DRIVERS[name]
    except KeyError:
        raise InputError(
            f"unknown driver {name!r} (available: {', '.join(sorted(DRIVERS))})"
        ) from None


def build_driver(
    name: str,
    driver: str,
    transport: Transport | None,
    options: DriverOptions | Mapping[str, Any] | None = None,
    *,
    timeout_s: float = 1.0,
    context: BuildContext | None = None,
    resource: str = "",
) -> Device:
    """Get: an unconnected instrument of a registered driver; InputError for an unknown driver
    or options its model refuses."""
    spec = driver_spec(driver)
    if not isinstance(options, spec.options):
        try:
            options = spec.options.model_validate(dict(options or {}))
        except ValueError as exc:
            raise InputError(f"{name}: options of {driver}: {exc}") from None
    if transport is None and not (spec.in_process_only or spec.reads_file):
        raise InputError(f"{name}: driver {driver} needs a transport")
    request = BuildRequest(name, transport, options, timeout_s, context or BuildContext(), resource)
    return spec.build(request)


def _command_instrument(cls: type[Any]) -> Builder:
    """The builder of a `CommandInstrument`: (name, transport, timeout_s=, **options)."""
    return lambda r: cls(r.name, r.transport, timeout_s=r.timeout_s, **r.kwargs)  # type: ignore[no-any-return]


def _laser_source(r: BuildRequest) -> Device:
    pattern = r.context.pattern
    return ScpiLaserSource(r.name, r.transport, timeout_s=r.timeout_s, pattern=pattern, **r.kwargs)


def _tcp_tagger(r: BuildRequest) -> Device:
    assert r.transport is not None
    return TcpTimeTagger(r.name, r.transport, **r.kwargs)


def _payload_link_source(r: BuildRequest) -> Device:
    options, clock = r.options, r.context.clock
    if clock is None:
        raise InputError(f"{r.name}: payload_link_source needs the node's clock")
    assert r.transport is not None and isinstance(options, PayloadLinkSourceOptions)
    link_options: dict[str, Any] = {"source_id": options.source_id}
    if options.apid is not None:
        link_options["apid"] = options.apid
    if r.context.keys is not None:  # EmissionKeyError (one line) if no key is installed
        link_options["emission_signer"] = EmissionSigner(r.context.keys)
    link = PayloadLink(
        f"{r.name}-link", r.transport, reply_timeout_s=options.reply_timeout_s, **link_options
    )
    return PayloadLinkSource(
        r.name,
        link,
        clock,
        pattern=r.context.pattern,
        keep_alive_interval_s=options.keep_alive_interval_s,
        missed_pings_before_reconnect=options.missed_pings_before_reconnect,
        reconnect_min_s=options.reconnect_min_s,
        reconnect_max_s=options.reconnect_max_s,
    )


def _tdc1_tagger(r: BuildRequest) -> Device:
    assert r.transport is not None
    return Tdc1TimeTagger(
        r.name, r.transport, timeout_s=r.timeout_s, clock=r.context.clock, **r.kwargs
    )


def _serial_qrng(r: BuildRequest) -> Device:
    assert r.transport is not None
    return SerialQrng(r.name, r.transport, timeout_s=r.timeout_s, **r.kwargs)


FILE_SCHEME = "file://"


def _replay_tagger(r: BuildRequest) -> Device:
    if not r.resource.startswith(FILE_SCHEME) or len(r.resource) == len(FILE_SCHEME):
        raise InputError(f"{r.name}: replay_time_tagger reads a recording: resource file://PATH")
    path = r.resource[len(FILE_SCHEME) :]
    return ReplayTimeTagger(r.name, path=path, clock=r.context.clock, **r.kwargs)


# --- the table ---------------------------------------------------------------------------------

register_driver(
    DriverSpec(
        "ptu_gimbal",
        "gimbal",
        PtuGimbal,
        PtuGimbalOptions,
        _command_instrument(PtuGimbal),
        "gimbal",
        summary="pan/tilt mount or telescope mount speaking the PTU command set (serial)",
    )
)
register_driver(
    DriverSpec(
        "pi_gcs_mirror",
        "fsm",
        PiGcsMirror,
        PiGcsMirrorOptions,
        _command_instrument(PiGcsMirror),
        "fsm",
        summary="fast-steering mirror on a PI GCS controller (TCP or serial)",
    )
)
register_driver(
    DriverSpec(
        "quad_cell_beacon",
        "beacon",
        QuadCellBeacon,
        QuadCellBeaconOptions,
        _command_instrument(QuadCellBeacon),
        "beacon",
        summary="quad-cell beacon position sensor (NMEA-style serial lines)",
    )
)
register_driver(
    DriverSpec(
        "scpi_laser_source",
        "source",
        ScpiLaserSource,
        ScpiLaserSourceOptions,
        _laser_source,
        "laser",
        summary="pulsed laser source controller speaking SCPI (VISA, TCP)",
    )
)
register_driver(
    DriverSpec(
        "payload_link_source",
        "source",
        PayloadLinkSource,
        PayloadLinkSourceOptions,
        _payload_link_source,
        "payload-controller",
        summary="the payload's source through its controller, PUS telecommands over CCSDS (serial)",
    )
)
register_driver(
    DriverSpec(
        "scpi_bias_supply",
        "detectors",
        ScpiBiasSupply,
        ScpiBiasSupplyOptions,
        _command_instrument(ScpiBiasSupply),
        "detectors",
        summary="single-photon detector bias supply and gate controller speaking SCPI",
    )
)
register_driver(
    DriverSpec(
        "tcp_time_tagger",
        "tagger",
        TcpTimeTagger,
        TcpTimeTaggerOptions,
        _tcp_tagger,
        "tagger",
        summary="time tagger speaking the TT/1 protocol over TCP (docs/tagger-protocol.md)",
    )
)
register_driver(
    DriverSpec(
        "tdc1_time_tagger",
        "tagger",
        Tdc1TimeTagger,
        Tdc1TaggerOptions,
        _tdc1_tagger,
        "tdc1",
        summary="S-Fifteen Instruments TDC1 time-stamp unit on USB serial (2 ns resolution)",
    )
)
register_driver(
    DriverSpec(
        "replay_time_tagger",
        "tagger",
        ReplayTimeTagger,
        ReplayTaggerOptions,
        _replay_tagger,
        reads_file=True,
        summary="replays a recorded acquisition from a PicoQuant PTU (T2) file: file://PATH",
    )
)
register_driver(
    DriverSpec(
        "os_entropy",
        "entropy",
        OsEntropySource,
        DriverOptions,
        lambda r: OsEntropySource(r.name),
        in_process_only=True,
        host_service=True,
        summary="the operating system's CSPRNG (os.urandom): in-process://os_entropy",
    )
)
register_driver(
    DriverSpec(
        "serial_qrng",
        "entropy",
        SerialQrng,
        SerialQrngOptions,
        _serial_qrng,
        "qrng",
        summary="QRNG streaming raw bytes (USB serial or TCP), SP 800-90B health tests, "
        "SHA-256 conditioned",
    )
)
