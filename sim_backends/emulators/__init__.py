"""Wire-level instrument emulators, chosen by name (`emulator://NAME` in instrument configs).

Each one serves its instrument's protocol on the kind of port the instrument has in the lab:
a pty for serial instruments (gimbal, beacon sensor, TDC1 time tagger, streaming QRNG), a
loopback TCP port for LAN ones (fast steering mirror controller, SCPI laser source and detector
bias supply); or, for the in-process path of a simulation, no port at all (`InMemoryTransport`).
"""

from __future__ import annotations

from collections.abc import Callable

from satqkd_runtime.clock import Clock
from sim_backends.emulators.base import FaultInjection, InMemoryTransport, LineEmulator
from sim_backends.emulators.beacon import QuadCellEmulator
from sim_backends.emulators.fsm import GcsMirrorEmulator
from sim_backends.emulators.gimbal import PtuEmulator
from sim_backends.emulators.qrng import QrngEmulator
from sim_backends.emulators.scpi import BiasSupplyEmulator, LaserSourceEmulator
from sim_backends.emulators.tdc1 import Tdc1Emulator

__all__ = [
    "EMULATORS",
    "PORT_KINDS",
    "BiasSupplyEmulator",
    "FaultInjection",
    "GcsMirrorEmulator",
    "InMemoryTransport",
    "LaserSourceEmulator",
    "LineEmulator",
    "PtuEmulator",
    "QrngEmulator",
    "QuadCellEmulator",
    "Tdc1Emulator",
    "start_emulator",
]

#: name -> (factory taking (clock, seed), port kind)
EMULATORS: dict[str, tuple[Callable[[Clock | None, int], LineEmulator], str]] = {
    "gimbal": (lambda clock, seed: PtuEmulator(clock, seed=seed), "pty"),
    "fsm": (lambda clock, seed: GcsMirrorEmulator(clock, seed=seed), "tcp"),
    "beacon": (lambda clock, seed: QuadCellEmulator(clock, seed=seed), "pty"),
    "laser": (lambda clock, seed: LaserSourceEmulator(clock, seed=seed), "tcp"),
    "detectors": (lambda clock, seed: BiasSupplyEmulator(clock, seed=seed), "tcp"),
    "tdc1": (lambda clock, seed: Tdc1Emulator(clock, seed=seed), "pty"),
    "qrng": (lambda clock, seed: QrngEmulator(clock, seed=seed), "pty"),
}


PORT_KINDS = ("pty", "tcp", "memory")


async def start_emulator(
    name: str, clock: Clock | None = None, seed: int = 0, port: str | None = None
) -> LineEmulator:
    """Control: create and start the named emulator on its kind of port (or `port`: pty, tcp,
    or memory, reached through `memory_transport()`); ValueError if unknown."""
    if name not in EMULATORS:
        raise ValueError(f"no emulator {name!r} (available: {', '.join(sorted(EMULATORS))})")
    factory, default_port = EMULATORS[name]
    port = default_port if port is None else port
    if port not in PORT_KINDS:
        raise ValueError(f"no port kind {port!r} (available: {', '.join(PORT_KINDS)})")
    emulator = factory(clock, seed)
    if port == "pty":
        await emulator.start_pty()
    elif port == "tcp":
        await emulator.start_tcp()
    else:
        await emulator.start_memory()
    return emulator
