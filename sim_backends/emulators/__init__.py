"""Wire-level instrument emulators, chosen by name (`emulator://NAME` in instrument configs).

Each one serves its instrument's protocol on the kind of port the instrument has in the lab:
a pty for serial instruments (gimbal, beacon sensor), a loopback TCP port for LAN ones (fast
steering mirror controller, SCPI laser source and detector bias supply).
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.clock import Clock
from sim_backends.emulators.base import FaultInjection, LineEmulator
from sim_backends.emulators.beacon import QuadCellEmulator
from sim_backends.emulators.fsm import GcsMirrorEmulator
from sim_backends.emulators.gimbal import PtuEmulator
from sim_backends.emulators.scpi import BiasSupplyEmulator, LaserSourceEmulator

__all__ = [
    "EMULATORS",
    "BiasSupplyEmulator",
    "FaultInjection",
    "GcsMirrorEmulator",
    "LaserSourceEmulator",
    "LineEmulator",
    "PtuEmulator",
    "QuadCellEmulator",
    "start_emulator",
]

#: name -> (factory taking (clock, seed), port kind)
EMULATORS: dict[str, tuple[Callable[[Clock | None, int], LineEmulator], str]] = {
    "gimbal": (lambda clock, seed: PtuEmulator(clock, seed=seed), "pty"),
    "fsm": (lambda clock, seed: GcsMirrorEmulator(clock, seed=seed), "tcp"),
    "beacon": (lambda clock, seed: QuadCellEmulator(clock, seed=seed), "pty"),
    "laser": (lambda clock, seed: LaserSourceEmulator(clock, seed=seed), "tcp"),
    "detectors": (lambda clock, seed: BiasSupplyEmulator(clock, seed=seed), "tcp"),
}


async def start_emulator(name: str, clock: Clock | None = None, seed: int = 0) -> LineEmulator:
    """Control: create and start the named emulator on its kind of port; ValueError if unknown."""
    if name not in EMULATORS:
        raise ValueError(f"no emulator {name!r} (available: {', '.join(sorted(EMULATORS))})")
    factory, port = EMULATORS[name]
    emulator = factory(clock, seed)
    if port == "pty":
        await emulator.start_pty()
    else:
        await emulator.start_tcp()
    return emulator
