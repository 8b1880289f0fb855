"""Emulated PTU-family pan-tilt unit: the wire protocol of drivers/gimbal.py, with dynamics.

Each axis slews with a speed limit and an acceleration limit: towards a target in position
mode (CI), at a commanded signed rate in velocity mode (CV). An axis that reaches a travel
limit in velocity mode stops there and the controller sends ``!P`` or ``!T`` unprompted.
Time comes from the injected clock; the motion is integrated in steps of at most 1 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from satqkd_runtime.clock import Clock
from sim_backends.emulators.base import LineEmulator

_STEP_S = 1e-3
_IDENTITY = "Pan-Tilt Controller v3.4.3 (satqkd emulator)"
# verbose feedback (FV, the power-on mode) words query replies; FT (terse) gives the bare value
_VERBOSE = {
    "PP": "Current pan position",
    "TP": "Current tilt position",
    "PS": "Target pan speed",
    "TS": "Target tilt speed",
    "PA": "Pan acceleration",
    "TA": "Tilt acceleration",
    "PN": "Minimum pan position",
    "PX": "Maximum pan position",
    "TN": "Minimum tilt position",
    "TX": "Maximum tilt position",
    "PR": "Pan resolution",
    "TR": "Tilt resolution",
}


@dataclass
class _Axis:
    """One axis of the unit, in controller counts."""

    letter: str
    minimum: int
    maximum: int
    position: float = 0.0
    velocity: float = 0.0
    target: float = 0.0
    slew_speed: int = 1000
    rate_command: int = 0
    acceleration: int = 2000
    limit_hit: bool = False

    def step(self, dt: float, velocity_mode: bool) -> None:
        """Control: integrate the axis over `dt` seconds."""
        accel_step = self.acceleration * dt
        if velocity_mode:
            desired = float(self.rate_command)
        else:
            error = self.target - self.position
            if abs(error) < 0.5 and abs(self.velocity) <= accel_step:
                self.position, self.velocity = self.target, 0.0
                return
            # fastest speed from which the axis can still stop at the target
            stoppable = math.sqrt(2.0 * self.acceleration * abs(error))
            desired = math.copysign(min(self.slew_speed, stoppable), error)
        change = max(-accel_step, min(accel_step, desired - self.velocity))
        self.velocity += change
        self.position += self.velocity * dt
        if velocity_mode and not self.minimum <= self.position <= self.maximum:
            self.position = float(min(self.maximum, max(self.minimum, self.position)))
            self.velocity = 0.0
            self.rate_command = 0
            self.limit_hit = True

    def cruise(self, dt: float) -> None:
        """Control: move `dt` seconds at the present velocity (velocity mode, rate reached)."""
        self.position += self.velocity * dt
        if not self.minimum <= self.position <= self.maximum:
            self.position = float(min(self.maximum, max(self.minimum, self.position)))
            self.velocity = 0.0
            self.rate_command = 0
            self.limit_hit = True

    @property
    def at_rest(self) -> bool:
        """Get: whether nothing will change until the next command."""
        return self.velocity == 0.0 and self.position == self.target and self.rate_command == 0


class PtuEmulator(LineEmulator):
    """A pan-tilt unit speaking the PTU ASCII protocol on a pty (or TCP)."""

    command_terminator = b"\n"
    baudrate = 9600
    tick_period_s = 0.01

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        name: str = "gimbal",
        resolution_arcsec: float = 46.2857,
        pan_limits: tuple[int, int] = (-14000, 14000),
        tilt_limits: tuple[int, int] = (-700, 7000),
        max_speed: int = 20000,
        seed: int = 0,
    ) -> None:
        super().__init__(name, clock, seed)
        self.resolution_arcsec = resolution_arcsec
        self.max_speed = max_speed
        self.pan = _Axis("P", *pan_limits)
        self.tilt = _Axis("T", *tilt_limits)
        self.velocity_mode = False
        self.echo = True  # power-on state of the unit: echo on, verbose feedback
        self.terse = False
        self._updated_unix_s = self.clock.now_unix_s()

    # --- dynamics ------------------------------------------------------------------------------

    def advance(self) -> None:
        """Control: integrate both axes up to the clock's now and report limit hits."""
        now = self.clock.now_unix_s()
        elapsed = now - self._updated_unix_s
        self._updated_unix_s = now
        for axis in (self.pan, self.tilt):
            remaining = elapsed
            while remaining > 0 and not axis.at_rest:
                if self.velocity_mode and axis.velocity == axis.rate_command:
                    axis.cruise(remaining)  # at the commanded rate: exact in one step
                    break
                dt = min(_STEP_S, remaining)
                axis.step(dt, self.velocity_mode)
                remaining -= dt
            if axis.limit_hit:
                axis.limit_hit = False
                self.send_unsolicited(f"!{axis.letter}\r\n".encode("ascii"))

    async def tick(self) -> None:
        """Control: advance the dynamics (periodic, so limit hits are reported unprompted)."""
        self.advance()

    def pointing_deg(self) -> tuple[float, float]:
        """Measure: the axes' true (pan, tilt) angles now in degrees, from the encoder zero."""
        self.advance()
        scale = self.resolution_arcsec / 3600.0
        return self.pan.position * scale, self.tilt.position * scale

    # --- protocol ------------------------------------------------------------------------------

    def respond(self, command: bytes) -> bytes | None:
        """Get: the reply line to one command."""
        self.advance()
        try:
            text = command.decode("ascii").strip().upper()
        except UnicodeDecodeError:
            return b"! Illegal command\r\n"
        if not text:
            return None
        echo = f"{command.decode('ascii').strip()}\r\n" if self.echo else ""
        reply = self._execute(text)
        if not self.terse and reply.startswith("* ") and text in _VERBOSE:
            reply = f"* {_VERBOSE[text]} is {reply[2:]}"
        return f"{echo}{reply}\r\n".encode("ascii")

    def _execute(self, text: str) -> str:
        simple = {
            "ED": ("echo", False),
            "EE": ("echo", True),
            "FT": ("terse", True),
            "FV": ("terse", False),
        }
        if text in simple:
            attribute, value = simple[text]
            setattr(self, attribute, value)
            return "*"
        if text == "V":
            return f"* {_IDENTITY}"
        if text in ("CI", "CV"):
            self._set_mode(velocity=text == "CV")
            return "*"
        if text == "H":
            for axis in (self.pan, self.tilt):
                axis.target, axis.rate_command = axis.position, 0
            return "*"
        if len(text) >= 2 and text[0] in "PT":
            axis = self.pan if text[0] == "P" else self.tilt
            return self._axis_command(axis, text[1], text[2:])
        return "! Illegal command"

    def _set_mode(self, velocity: bool) -> None:
        self.velocity_mode = velocity
        for axis in (self.pan, self.tilt):
            axis.rate_command = 0
            axis.target = axis.position  # the axis decelerates to rest where it is

    def _axis_command(self, axis: _Axis, letter: str, argument: str) -> str:
        name = "Pan" if axis.letter == "P" else "Tilt"
        queries = {
            "P": lambda: round(axis.position),
            "S": lambda: axis.rate_command if self.velocity_mode else axis.slew_speed,
            "A": lambda: axis.acceleration,
            "N": lambda: axis.minimum,
            "X": lambda: axis.maximum,
            "R": lambda: f"{self.resolution_arcsec:.4f}",
        }
        if letter not in queries:
            return "! Illegal command"
        if argument == "":
            return f"* {queries[letter]()}"
        try:
            value = int(argument)
        except ValueError:
            return "! Illegal argument"
        if letter == "P":
            if self.velocity_mode:
                return "! Position commands need independent control mode (CI)"
            if not axis.minimum <= value <= axis.maximum:
                return f"! Maximum allowable {name} position exceeded"
            axis.target = float(value)
            return "*"
        if letter == "S":
            lowest = -self.max_speed if self.velocity_mode else 1
            if not lowest <= value <= self.max_speed:
                return f"! Illegal {name} speed"
            if self.velocity_mode:
                axis.rate_command = value
            else:
                axis.slew_speed = value
            return "*"
        if letter == "A":
            if value <= 0:
                return f"! Illegal {name} acceleration"
            axis.acceleration = value
            return "*"
        return "! Limits are read-only"
