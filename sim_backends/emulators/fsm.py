"""Emulated PI GCS tip/tilt controller: the wire protocol of drivers/fsm.py, with dynamics.

With the servo closed each axis follows its target with a first-order response (time constant
`time_constant_s`, so a closed-loop bandwidth of 1 / (2 pi tau)), evaluated exactly from the
injected clock; `optical_gain` (a hidden truth for calibration) says how the axes move the
line of sight; ``ONT?`` turns true within
`settle_tolerance` of the target. With the servo open the mirror holds where it is and ``MOV``
is refused (GCS error 5). Optional sensor noise comes from a seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from satqkd_runtime.clock import Clock
from sim_backends.emulators.base import LineEmulator

IDENTITY = "(c)2024 Physik Instrumente (PI) GmbH & Co. KG, E-727, 0123456789, 13.21.00.09"


@dataclass
class _MirrorAxis:
    minimum: float
    maximum: float
    position: float = 0.0
    target: float = 0.0
    servo: bool = False


class GcsMirrorEmulator(LineEmulator):
    """A two-axis piezo tip/tilt controller answering PI GCS commands (TCP or pty)."""

    command_terminator = b"\n"
    baudrate = 115200

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        name: str = "fsm",
        axes: tuple[str, str] = ("A", "B"),
        travel: float = 2.5,
        time_constant_s: float = 0.002,
        settle_tolerance: float = 0.001,
        sensor_noise: float = 0.0,
        optical_gain: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 0.0), (0.0, 1.0)),
        seed: int = 0,
    ) -> None:
        super().__init__(name, clock, seed)
        self.axes = {axis: _MirrorAxis(-travel, travel) for axis in axes}
        #: hidden truth: line of sight on the sky (x, y) per unit of (tip, tilt) position, with
        #: each axis's own gain, cross-coupling and the mount's rotation against the sensor
        self.optical_gain = optical_gain
        self.time_constant_s = time_constant_s
        self.settle_tolerance = settle_tolerance
        self.sensor_noise = sensor_noise
        self.error_code = 0
        self.moves = 0  # accepted MOV/MVR commands
        self._updated_unix_s = self.clock.now_unix_s()

    def advance(self) -> None:
        """Control: move every servoed axis along its first-order response to the clock's now."""
        now = self.clock.now_unix_s()
        elapsed = max(0.0, now - self._updated_unix_s)
        self._updated_unix_s = now
        # exact solution of dx/dt = (target - x) / tau over a constant target
        decay = math.exp(-elapsed / self.time_constant_s)
        for axis in self.axes.values():
            if axis.servo:
                axis.position = axis.target + (axis.position - axis.target) * decay

    def respond(self, command: bytes) -> bytes | None:
        """Get: the reply to one GCS command, None for set commands."""
        self.advance()
        try:
            words = command.decode("ascii").split()
        except UnicodeDecodeError:
            self._fail(2)
            return None
        if not words:
            return None
        name, arguments = words[0].upper(), words[1:]
        if name == "*IDN?":
            return f"{IDENTITY}\n".encode("ascii")
        if name == "ERR?":
            code, self.error_code = self.error_code, 0
            return f"{code}\n".encode("ascii")
        if name.endswith("?"):
            return self._query(name, arguments)
        self._set(name, arguments)
        return None

    def _fail(self, code: int) -> None:
        if self.error_code == 0:  # GCS keeps the first error until it is read
            self.error_code = code

    def _query(self, name: str, arguments: list[str]) -> bytes | None:
        axes = arguments or list(self.axes)
        if any(axis not in self.axes for axis in axes):
            self._fail(15)
            return None
        readers = {
            "POS?": lambda a: f"{a.position + self._noise():.6f}",
            "MOV?": lambda a: f"{a.target:.6f}",
            "ONT?": lambda a: str(int(abs(a.position - a.target) <= self.settle_tolerance)),
            "SVO?": lambda a: str(int(a.servo)),
            "TMN?": lambda a: f"{a.minimum:.6f}",
            "TMX?": lambda a: f"{a.maximum:.6f}",
        }
        if name not in readers:
            self._fail(2)
            return None
        lines = [f"{axis}={readers[name](self.axes[axis])}" for axis in axes]
        return (" \n".join(lines) + "\n").encode("ascii")

    def _noise(self) -> float:
        return float(self._rng.normal(0.0, self.sensor_noise)) if self.sensor_noise else 0.0

    def _set(self, name: str, arguments: list[str]) -> None:
        if name not in ("MOV", "MVR", "SVO"):
            self._fail(2)
            return
        if not arguments or len(arguments) % 2:
            self._fail(1)
            return
        pairs = list(zip(arguments[::2], arguments[1::2], strict=True))
        try:
            values = [(axis, float(text)) for axis, text in pairs]
        except ValueError:
            self._fail(1)
            return
        if any(axis not in self.axes for axis, _ in values):
            self._fail(15)
            return
        if name == "SVO":
            for axis, value in values:
                self.axes[axis].servo = value != 0.0
                self.axes[axis].target = self.axes[axis].position
            return
        if any(not self.axes[axis].servo for axis, _ in values):
            self._fail(5)
            return
        targets = [
            (axis, value if name == "MOV" else self.axes[axis].target + value)
            for axis, value in values
        ]
        if any(not self.axes[a].minimum <= t <= self.axes[a].maximum for a, t in targets):
            self._fail(7)  # GCS refuses the whole command, no axis moves
            return
        for axis, target in targets:
            self.axes[axis].target = target
        self.moves += 1

    def line_of_sight_urad(self, axis_unit_urad: float) -> tuple[float, float]:
        """Measure: how far the mirror moves the line of sight now (sky x, y in urad): the
        optical gain matrix times the first two axes' true positions."""
        tip, tilt = self.positions()[:2]
        (a, b), (c, d) = self.optical_gain
        return (
            (a * tip + b * tilt) * axis_unit_urad,
            (c * tip + d * tilt) * axis_unit_urad,
        )

    def positions(self) -> tuple[float, ...]:
        """Measure: every axis's true position now (axis units, no sensor noise)."""
        self.advance()
        return tuple(axis.position for axis in self.axes.values())
