"""Instrument interfaces, transports and drivers, in one flat namespace.

    from drivers import Gimbal, PtuGimbal, open_transport

Interfaces (`Gimbal`, `FastSteeringMirror`, `BeaconSensor`, `PhotonDetector`, `PulsedSource`,
`TimeTagger`) are what daemons hold; the concrete drivers speak real command sets over a
`Transport` chosen by a resource string (serial://, tcp://, visa://, visa-sim://).
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
from drivers.payload_link import PayloadLink
from drivers.payload_link_source import InterlockedSource, PayloadLinkSource, SourceReport
from drivers.scpi import ScpiBiasSupply, ScpiInstrument, ScpiLaserSource
from drivers.time_tagger_tcp import TcpTimeTagger, VendorTaggerAdapter
from drivers.transport import (
    ScriptedTransport,
    SerialTransport,
    TcpTransport,
    Transport,
    VisaTransport,
    open_transport,
)

__all__ = [
    "BeaconSensor",
    "BeaconSpot",
    "CommandInstrument",
    "CommandProperty",
    "Device",
    "DeviceDisconnected",
    "DeviceError",
    "DeviceStatus",
    "DeviceTimeout",
    "DriverCounters",
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
    "ScpiBiasSupply",
    "ScpiInstrument",
    "ScpiLaserSource",
    "ScriptedTransport",
    "SerialTransport",
    "SourceReport",
    "TagBuffer",
    "TcpTimeTagger",
    "TcpTransport",
    "TimeTagger",
    "Transport",
    "VendorTaggerAdapter",
    "VisaTransport",
    "control",
    "declared_commands",
    "measurement",
    "open_transport",
    "setting",
    "strict_discrete_set",
    "strict_int_range",
    "strict_range",
]
