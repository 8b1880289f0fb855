"""One way to assemble a node's instruments, real or simulated: `assemble_node`.

Every command that drives instruments builds them here from a bench file: `satqkd sim pass`
(both nodes of a simulated pass), `satqkd payload run`, `satqkd ogs run` and
`satqkd instruments check`. A node takes the bench entries of the kinds it drives (the payload a
source; a station a time tagger, gimbal, fast-steering mirror, beacon sensor and detector bias
supply; both an entropy source) and ignores the others, so one bench file may describe a whole
lab. Each entry's
resource decides the path: real hardware through a transport, a pyvisa-sim model, a wire-level
emulator on a port (`emulator://`) or in memory (`in-process://`), or an in-process simulated
instrument. The drivers are the same on every path.

Emulators are made by an `EmulatorFactory`: the default one starts each with its stock
behaviour; a simulated pass passes one that ties them to the scenario's truth (the sky the
mount points at, the detections the tagger streams).

Requests to emit are authenticated when the node lends its key directories
(`BuildContext.keys`, `controller_keys`): the payload_link_source signs each with the emission
key of the node's directory, and a payload controller emulated here holds the same key (from
its own directory) in its laser interlock, so it refuses a plain or forged SOURCE_ENABLE. A
missing key is one line naming the command that installs it (`satqkd keys emission`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.interfaces import Device, DeviceError, EntropySource, PulsedSource, TimeTagger
from drivers.registry import KINDS, NODE_KINDS, BuildContext, build_driver
from drivers.transport import Transport, open_transport
from firmware_shims.laser_interlock import InterlockSettings, LaserInterlock
from firmware_shims.payload_controller import PayloadController
from satqkd.instruments_config import BenchConfig, BenchEntry, simulated_target
from satqkd_core import rng
from satqkd_ogs.atp import StationInstruments
from satqkd_runtime.clock import Clock
from satqkd_runtime.emission_auth import EmissionWatermark
from sim_backends.emulators import EMULATORS, LineEmulator
from sim_backends.emulators.time_tagger import TimeTaggerEmulator
from sim_backends.instruments import SimPulsedSource

log = logging.getLogger("satqkd.assembly")

_CLOSE_TIMEOUT_S = 5.0
#: the port each stream-protocol emulator serves on (line emulators say theirs in EMULATORS)
_STREAM_EMULATOR_PORTS = {"tagger": "tcp", "payload-controller": "pty"}


class AssemblyError(ValueError):
    """A node's instruments could not be built or connected; one line for the user."""


class EmulatorFactory:
    """Makes the emulator behind a bench entry (`emulator://NAME`, `in-process://NAME`).

    The default emulators behave as their instruments do on a bench; a simulation subclasses
    this to tie them to its physics. `wrap_transport` lets a simulation observe what a driver
    sends to an instrument whose state it cannot read (a pyvisa-sim model)."""

    def __init__(self, clock: Clock | None, seed: int = 0) -> None:
        self.clock = clock
        self.seed = seed

    def create(self, entry_name: str, entry: BenchEntry, hardware: Device | None) -> Any:
        """Get: a new, unstarted emulator for the entry (`hardware`: the source a payload
        controller drives)."""
        target = simulated_target(entry.resource)
        assert target is not None
        name = target[1]
        if name == "tagger":
            return TimeTaggerEmulator(self.clock, n_channels=4)
        if name == "payload-controller":
            return PayloadController(self.clock, source_hardware=hardware)
        if name not in EMULATORS:
            raise ValueError(f"no emulator {name!r}")
        factory, _ = EMULATORS[name]
        return factory(self.clock, rng.derive_key(self.seed, f"emulator/{entry_name}"))

    def wrap_transport(self, entry_name: str, entry: BenchEntry, transport: Transport) -> Transport:
        """Get: the transport the driver is given (by default the one opened)."""
        return transport


@dataclass
class NodeInstruments:
    """A node's connected instruments, by slot (kind), and what stands behind them."""

    node: str
    bench: str
    devices: dict[str, Device] = field(default_factory=dict)
    entry_names: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    #: bench entry name -> started emulator
    emulators: dict[str, Any] = field(default_factory=dict)
    #: bench entry name -> device that is not in a slot (a payload controller's source hardware)
    hardware: dict[str, Device] = field(default_factory=dict)

    @property
    def source(self) -> PulsedSource | None:
        """Get: the payload's source, if the bench has one."""
        device = self.devices.get("source")
        return device if isinstance(device, PulsedSource) else None

    @property
    def tagger(self) -> TimeTagger | None:
        """Get: the station's time tagger, if the bench has one."""
        device = self.devices.get("tagger")
        return device if isinstance(device, TimeTagger) else None

    @property
    def entropy(self) -> EntropySource | None:
        """Get: the node's entropy source, if the bench has one (a simulation wires its
        seeded source itself)."""
        device = self.devices.get("entropy")
        return device if isinstance(device, EntropySource) else None

    def emulator_of(self, slot: str) -> Any:
        """Get: the emulator behind a slot's instrument, or None."""
        name = self.entry_names.get(slot)
        return None if name is None else self.emulators.get(name)

    def station_instruments(self) -> StationInstruments:
        """Get: the station's ATP instruments and detectors, as the station daemon holds them."""
        return StationInstruments(
            gimbal=self.devices.get("gimbal"),  # type: ignore[arg-type]
            fsm=self.devices.get("fsm"),  # type: ignore[arg-type]
            beacon=self.devices.get("beacon"),  # type: ignore[arg-type]
            detectors=self.devices.get("detectors"),  # type: ignore[arg-type]
        )

    def station_paths(self) -> dict[str, str]:
        """Get: how each station ATP instrument and the detectors are reached ("none": absent)."""
        return {
            slot: self.paths.get(slot, "none") for slot in ("gimbal", "fsm", "beacon", "detectors")
        }


def node_entries(bench: BenchConfig, node: str) -> dict[str, str]:
    """Get: slot -> entry name of the bench entries this node drives (in the registry's order
    of kinds); AssemblyError if two entries fill one slot."""
    if node not in NODE_KINDS:
        raise AssemblyError(f"unknown node {node!r} (nodes: {', '.join(NODE_KINDS)})")
    behind_controllers = {
        target[2]["hardware"]
        for entry in bench.instruments.values()
        if (target := simulated_target(entry.resource)) is not None and "hardware" in target[2]
    }
    chosen: dict[str, str] = {}
    for name, entry in bench.instruments.items():
        if name in behind_controllers:
            continue
        if entry.kind not in NODE_KINDS[node]:
            log.info(
                "%s: %s (%s) is not a %s instrument; ignored", bench.name, name, entry.driver, node
            )
            continue
        if entry.kind in chosen:
            raise AssemblyError(
                f"{bench.origin}: {chosen[entry.kind]} and {name} are both a {entry.kind}; "
                f"a {node} drives one"
            )
        chosen[entry.kind] = name
    return {kind: chosen[kind] for kind in KINDS if kind in chosen}


async def assemble_node(
    bench: BenchConfig,
    node: str,
    *,
    clock: Clock | None,
    stack: contextlib.AsyncExitStack,
    context: BuildContext | None = None,
    emulators: EmulatorFactory | None = None,
    slots: Iterable[str] | None = None,
) -> NodeInstruments:
    """Get: the node's instruments of a bench, connected one after the other in the registry's
    order of kinds (emulators started first); each is made safe and closed, and its emulator
    stopped, when `stack` unwinds. `slots` limits the build to some kinds. AssemblyError (one
    line naming the bench and the instrument) if one cannot be built or does not connect."""
    context = context or BuildContext(clock=clock)
    factory = emulators or EmulatorFactory(clock)
    result = NodeInstruments(node, bench.origin)
    wanted = None if slots is None else set(slots)
    for slot, name in node_entries(bench, node).items():
        if wanted is not None and slot not in wanted:
            continue
        entry = bench.instruments[name]
        result.devices[slot] = await _open_entry(bench, name, context, factory, stack, result)
        result.entry_names[slot] = name
        result.paths[slot] = entry.path
    return result


async def _open_entry(
    bench: BenchConfig,
    name: str,
    context: BuildContext,
    factory: EmulatorFactory,
    stack: contextlib.AsyncExitStack,
    result: NodeInstruments,
) -> Device:
    entry = bench.instruments[name]
    device = await open_instrument(bench, name, context, factory, stack, result)
    try:
        await device.connect(timeout_s=entry.connect_timeout_s)
    except (DeviceError, OSError, TimeoutError) as exc:
        raise AssemblyError(f"{bench.origin}: instrument {name}: {exc}") from None
    stack.push_async_callback(_close_quietly, device)
    return device


async def open_instrument(
    bench: BenchConfig,
    name: str,
    context: BuildContext,
    factory: EmulatorFactory,
    stack: contextlib.AsyncExitStack,
    result: NodeInstruments | None = None,
) -> Device:
    """Get: one bench entry's instrument, built but not connected, its emulator (if any)
    started and stopped when `stack` unwinds; AssemblyError naming the bench and instrument."""
    entry = bench.instruments[name]
    result = result if result is not None else NodeInstruments("bench", bench.name)
    try:
        transport = await _reach(bench, name, entry, context, factory, stack, result)
        return build_driver(
            name, entry.driver, transport, entry.driver_options(), timeout_s=entry.timeout_s,
            context=context, resource=entry.resource,
        )  # fmt: skip
    except AssemblyError:
        raise
    except (ValueError, OSError) as exc:
        raise AssemblyError(f"{bench.origin}: instrument {name}: {exc}") from None


async def _reach(
    bench: BenchConfig,
    name: str,
    entry: BenchEntry,
    context: BuildContext,
    factory: EmulatorFactory,
    stack: contextlib.AsyncExitStack,
    result: NodeInstruments,
) -> Transport | None:
    """Get: the transport to an entry's instrument, its emulator started if it has one (None
    for an in-process simulated instrument)."""
    if entry.spec.in_process_only or entry.spec.reads_file:
        return None
    target = simulated_target(entry.resource)
    if target is None:
        transport = open_transport(entry.resource)
    else:
        how, emulator_name, query = target
        hardware = None
        if emulator_name == "payload-controller":
            hardware = await _controller_hardware(
                bench, query.get("hardware"), context, factory, stack, result
            )
        emulator = factory.create(name, entry, hardware)
        if isinstance(emulator, PayloadController) and context.controller_keys is not None:
            _arm_interlock(emulator, context.controller_keys)
        result.emulators[name] = emulator
        port = query.get("port") or _default_port(emulator_name)
        transport = await _serve(emulator, emulator_name, how, port, stack)
    return factory.wrap_transport(name, entry, transport)


async def _controller_hardware(
    bench: BenchConfig,
    hardware_name: str | None,
    context: BuildContext,
    factory: EmulatorFactory,
    stack: contextlib.AsyncExitStack,
    result: NodeInstruments,
) -> Device:
    """The source the payload controller's emulator drives: the bench entry named, or a
    simulated source in-process."""
    if hardware_name is None:
        if context.clock is None or context.pattern is None:
            raise ValueError("the payload controller's simulated source needs a clock and pattern")
        device: Device = SimPulsedSource("source", context.pattern, context.clock)
        await device.connect()
        stack.push_async_callback(_close_quietly, device)
    else:
        device = await _open_entry(bench, hardware_name, context, factory, stack, result)
    result.hardware[hardware_name or "source"] = device
    return device


def _arm_interlock(controller: PayloadController, controller_keys: Path) -> None:
    """Give an emulated payload controller its laser interlock, holding the emission key of
    its key directory (EmissionKeyError, one line, if none is installed there)."""
    watermark = EmissionWatermark(controller_keys)
    settings = InterlockSettings(link_timeout_s=controller.link_timeout_s)
    controller.interlock = LaserInterlock(settings, watermark=watermark)


def _default_port(emulator_name: str) -> str:
    if emulator_name in _STREAM_EMULATOR_PORTS:
        return _STREAM_EMULATOR_PORTS[emulator_name]
    return EMULATORS[emulator_name][1]


async def _serve(
    emulator: Any, emulator_name: str, how: str, port: str, stack: contextlib.AsyncExitStack
) -> Transport:
    """Start an emulator on its kind of endpoint; the transport a driver opens to it."""
    if isinstance(emulator, LineEmulator):
        stack.push_async_callback(emulator.stop)
        if how == "in-process":
            await emulator.start_memory()
            return emulator.memory_transport()
        if port == "pty":
            await emulator.start_pty()
        else:
            await emulator.start_tcp()
        return open_transport(emulator.resource)
    if how == "in-process":
        raise ValueError(
            f"the {emulator_name} emulator serves a port only: use emulator://{emulator_name}"
        )
    served = _STREAM_EMULATOR_PORTS[emulator_name]
    if port != served:
        raise ValueError(f"the {emulator_name} emulator serves on a {served} only")
    await emulator.start()
    stack.push_async_callback(emulator.close)
    if isinstance(emulator, PayloadController):
        return open_transport(f"serial://{emulator.port_path}")
    return open_transport(emulator.resource)


async def _close_quietly(device: Device) -> None:
    """Control: make an instrument safe and close it; a dead link is logged, not raised."""
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):  # not wait_for (issue 13)
            await device.close()
    except (DeviceError, OSError, TimeoutError) as exc:
        log.warning("closing %s: %s", device.name, exc)
