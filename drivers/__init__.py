"""Instrument interfaces, transports and drivers, in one flat namespace.

    from drivers import Gimbal, PtuGimbal, open_transport

Interfaces (`Gimbal`, `FastSteeringMirror`, `BeaconSensor`, `PhotonDetector`, `PulsedSource`,
`TimeTagger`) are what daemons hold; the concrete drivers speak real command sets over a
`Transport` chosen by a resource string (serial://, tcp://, visa://, visa-sim://). The
instrument registry (`DRIVERS`, `driver_spec`, `build_driver`) names every driver with its kind,
options model and emulator; bench files are validated and built from it.
`VendorTaggerAdapter` loads its vendor SDK only when used, so importing this package never does.
"""

from drivers.beacon import QuadCellBeacon
from drivers.commands import (
    CommandInstrument,
    CommandProperty,
    DriverCounters,
    control,
    declared_commands,
    measurement,
    setting,
    strict_discrete_set,
    strict_int_range,
    strict_range,
)
from drivers.fsm import PiGcsMirror
from drivers.gimbal import PtuGimbal
from drivers.interfaces import (
    BeaconSensor,
    BeaconSpot,
    Device,
    DeviceDisconnected,
    DeviceError,
    DeviceStatus,
    DeviceTimeout,
    FastSteeringMirror,
    Gimbal,
    GimbalLimits,
    MirrorRange,
    PhotonDetector,
    PulsedSource,
    PulsePatternRecord,
    TagBuffer,
    TimeTagger,
)
from drivers.options import DriverOptions
from drivers.payload_link import PayloadLink
from drivers.payload_link_source import InterlockedSource, PayloadLinkSource, SourceReport
from drivers.registry import DRIVERS, KINDS, BuildContext, DriverSpec, build_driver, driver_spec
from drivers.scpi import ScpiBiasSupply, ScpiInstrument, ScpiLaserSource
from drivers.time_tagger_replay import ReplayFileError, ReplayTaggerOptions, ReplayTimeTagger
from drivers.time_tagger_tcp import TcpTimeTagger, VendorTaggerAdapter
from drivers.time_tagger_tdc1 import Tdc1TaggerOptions, Tdc1TimeTagger
from drivers.transport import (
    ScriptedTransport,
    SerialTransport,
    TcpTransport,
    Transport,
    VisaTransport,
    open_transport,
)

__all__ = [
    "DRIVERS",
    "KINDS",
    "BeaconSensor",
    "BeaconSpot",
    "BuildContext",
    "CommandInstrument",
    "CommandProperty",
    "Device",
    "DeviceDisconnected",
    "DeviceError",
    "DeviceStatus",
    "DeviceTimeout",
    "DriverCounters",
    "DriverOptions",
    "DriverSpec",
    "FastSteeringMirror",
    "Gimbal",
    "GimbalLimits",
    "InterlockedSource",
    "MirrorRange",
    "PayloadLink",
    "PayloadLinkSource",
    "PhotonDetector",
    "PiGcsMirror",
    "PtuGimbal",
    "PulsePatternRecord",
    "PulsedSource",
    "QuadCellBeacon",
    "ReplayFileError",
    "ReplayTaggerOptions",
    "ReplayTimeTagger",
    "ScpiBiasSupply",
    "ScpiInstrument",
    "ScpiLaserSource",
    "ScriptedTransport",
    "SerialTransport",
    "SourceReport",
    "TagBuffer",
    "TcpTimeTagger",
    "TcpTransport",
    "Tdc1TaggerOptions",
    "Tdc1TimeTagger",
    "TimeTagger",
    "Transport",
    "VendorTaggerAdapter",
    "VisaTransport",
    "build_driver",
    "control",
    "declared_commands",
    "driver_spec",
    "measurement",
    "open_transport",
    "setting",
    "strict_discrete_set",
    "strict_int_range",
    "strict_range",
]
