"""What every node (payload, ground station, operation control centre) runs on.

    from satqkd_runtime import MessageBus, NodeRuntime, QkdChannel, RealClock, KeyStore

- `bus`: `MessageBus`, the one wrapper around aiomqtt (reconnect, resubscribe, ordering).
- `node`: `NodeRuntime` (telecommand intake with counters, common commands, housekeeping,
  events).
- `qkd_channel`: `QkdChannel` (authenticated, sequence-numbered, idempotent QKD messages).
- `clock`: the injected clocks, `RealClock` (UTC) and `SimClock` (advanced by a scenario).
- `keystore`: owner-only key storage, pending until the peer confirms.

Nothing here knows about instruments or simulation physics; it imports only `satqkd_core`.
"""

from satqkd_runtime.bus import BusMessage, BusStats, MessageBus, parse_mqtt_url
from satqkd_runtime.clock import Clock, RealClock, SimClock, SimulationStalled
from satqkd_runtime.keystore import KeyMetadata, KeyStore, KeyStoreError
from satqkd_runtime.node import NodeCounters, NodeRuntime
from satqkd_runtime.qkd_channel import ChannelCounts, QkdChannel

__all__ = [
    "BusMessage",
    "BusStats",
    "ChannelCounts",
    "Clock",
    "KeyMetadata",
    "KeyStore",
    "KeyStoreError",
    "MessageBus",
    "NodeCounters",
    "NodeRuntime",
    "QkdChannel",
    "RealClock",
    "SimClock",
    "SimulationStalled",
    "parse_mqtt_url",
]
