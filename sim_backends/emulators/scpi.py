"""Emulated SCPI instruments (laser source controller, detector bias supply) on a TCP port.

They speak the command sets documented in drivers/scpi.py, keep a SCPI error queue
(``SYST:ERR?``), and add what pyvisa-sim cannot: dynamics. The laser source refuses to emit
while its interlock is open and stops at once if the interlock opens; each detector's
temperature settles towards its cooler set-point with a first-order response, and a gated
detector counts Poisson-distributed dark counts (doubling every `dark_doubling_k` kelvin) plus
whatever photon rate the simulation shines on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from satqkd_runtime.clock import Clock
from sim_backends.emulators.base import LineEmulator

NO_ERROR = (0, "No error")
UNDEFINED_HEADER = (-113, "Undefined header")
DATA_OUT_OF_RANGE = (-222, "Data out of range")
SETTINGS_CONFLICT = (-221, "Settings conflict")
DATA_TYPE_ERROR = (-104, "Data type error")


@dataclass
class _Setting:
    """A numeric setting with its accepted range and reply format."""

    value: float
    low: float
    high: float
    reply_format: str
    integer: bool = False
    on_change: Callable[[float], tuple[int, str] | None] | None = field(default=None, repr=False)


class ScpiEmulator(LineEmulator):
    """SCPI framing, error queue and numeric settings; subclasses add their headers."""

    command_terminator = b"\n"
    identity = "SATQKD-LAB,GENERIC,0,0"

    def __init__(self, name: str, clock: Clock | None = None, seed: int = 0) -> None:
        super().__init__(name, clock, seed)
        self.errors: list[tuple[int, str]] = []
        self.settings: dict[str, _Setting] = {}

    def _queue_error(self, error: tuple[int, str]) -> None:
        if len(self.errors) < 16:  # SCPI queues are finite; the last entry would be -350
            self.errors.append(error)

    def queries(self) -> dict[str, Callable[[], str]]:
        """Get: read-only query headers and their answers (subclasses extend)."""
        return {
            "*IDN?": lambda: self.identity,
            "SYST:ERR?": self._pop_error,
        }

    def commands(self) -> dict[str, Callable[[], None]]:
        """Get: argument-less command headers (subclasses extend)."""
        return {"*CLS": self.errors.clear, "*RST": self.reset}

    def reset(self) -> None:
        """Control: power-on settings (*RST)."""

    def _pop_error(self) -> str:
        code, message = self.errors.pop(0) if self.errors else NO_ERROR
        return f'{code},"{message}"'

    def respond(self, command: bytes) -> bytes | None:
        """Get: the reply to one SCPI command, None for commands without one."""
        self.advance()
        try:
            text = command.decode("ascii").strip()
        except UnicodeDecodeError:
            self._queue_error(UNDEFINED_HEADER)
            return None
        header, _, argument = text.partition(" ")
        header = header.upper()
        queries = self.queries()
        if header in queries and not argument:
            return f"{queries[header]()}\n".encode("ascii")
        commands = self.commands()
        if header in commands and not argument:
            commands[header]()
            return None
        if header.endswith("?") and header[:-1] in self.settings and not argument:
            setting = self.settings[header[:-1]]
            return f"{setting.reply_format.format(setting.value)}\n".encode("ascii")
        if header in self.settings and argument:
            self._set(self.settings[header], argument.strip())
            return None
        self._queue_error(UNDEFINED_HEADER)
        return None

    def _set(self, setting: _Setting, argument: str) -> None:
        words = {"ON": 1.0, "OFF": 0.0}
        try:
            value = words.get(argument.upper())
            value = float(argument) if value is None else value
        except ValueError:
            self._queue_error(DATA_TYPE_ERROR)
            return
        if not math.isfinite(value) or not setting.low <= value <= setting.high:
            self._queue_error(DATA_OUT_OF_RANGE)
            return
        if setting.integer and value != int(value):
            self._queue_error(DATA_TYPE_ERROR)
            return
        if setting.on_change is not None and (error := setting.on_change(value)) is not None:
            self._queue_error(error)
            return
        setting.value = value

    def advance(self) -> None:
        """Control: bring dynamics up to the clock's now (default: none)."""


class LaserSourceEmulator(ScpiEmulator):
    """The decoy-state source controller: output, interlock, rate, start instant, intensities."""

    identity = "SATQKD-LAB,WCP-850,SN00142,2.3.1 (emulator)"

    def __init__(self, clock: Clock | None = None, *, name: str = "laser", seed: int = 0) -> None:
        super().__init__(name, clock, seed)
        self._interlock_closed = True
        self.emission_log: list[tuple[float, bool]] = []
        self.reset()

    def reset(self) -> None:
        """Control: power-on settings: output off, 100 MHz, intensities 0.8/0.1/0.0."""
        self.settings = {
            "OUTP:STAT": _Setting(0, 0, 1, "{:.0f}", integer=True, on_change=self._switch),
            "PULS:FREQ": _Setting(100e6, 1e3, 1e10, "{:.1f}"),
            "PULS:STAR": _Setting(0.0, 0.0, 4e9, "{:.6f}"),
            "SOUR:INT:SIGN": _Setting(0.8, 0.0, 10.0, "{:.4f}"),
            "SOUR:INT:DEC": _Setting(0.1, 0.0, 10.0, "{:.4f}"),
            "SOUR:INT:VAC": _Setting(0.0, 0.0, 10.0, "{:.4f}"),
        }

    def queries(self) -> dict[str, Callable[[], str]]:
        """Get: read-only headers, including the interlock state."""
        return super().queries() | {"SYST:INTL?": lambda: str(int(self._interlock_closed))}

    def _switch(self, value: float) -> tuple[int, str] | None:
        if value and not self._interlock_closed:
            return SETTINGS_CONFLICT
        self.emission_log.append((self.clock.now_unix_s(), bool(value)))
        return None

    @property
    def emitting(self) -> bool:
        """Get: whether the source emits now."""
        return bool(self.settings["OUTP:STAT"].value)

    @property
    def interlock_closed(self) -> bool:
        """Get: the interlock state."""
        return self._interlock_closed

    @interlock_closed.setter
    def interlock_closed(self, closed: bool) -> None:
        """Set: the interlock state (opening it stops emission immediately, as hardware does)."""
        self._interlock_closed = bool(closed)
        if not closed and self.emitting:
            self.settings["OUTP:STAT"].value = 0
            self.emission_log.append((self.clock.now_unix_s(), False))


@dataclass
class _DetectorChannel:
    temperature_c: float
    photon_rate_cps: float = 0.0


class BiasSupplyEmulator(ScpiEmulator):
    """A bias and gate controller for cooled single-photon detectors."""

    identity = "SATQKD-LAB,SPDB-4,SN00077,1.4.0 (emulator)"

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        name: str = "detectors",
        channel_count: int = 4,
        ambient_c: float = 22.0,
        cooler_setpoint_c: float = -40.0,
        cooling_time_constant_s: float = 30.0,
        dark_rate_at_setpoint_cps: float = 100.0,
        dark_doubling_k: float = 6.0,
        seed: int = 0,
    ) -> None:
        super().__init__(name, clock, seed)
        self.channel_count = channel_count
        self.cooler_setpoint_c = cooler_setpoint_c
        self.cooling_time_constant_s = cooling_time_constant_s
        self.dark_rate_at_setpoint_cps = dark_rate_at_setpoint_cps
        self.dark_doubling_k = dark_doubling_k
        self.channels = [_DetectorChannel(ambient_c) for _ in range(channel_count)]
        self._updated_unix_s = self.clock.now_unix_s()
        self.reset()

    def reset(self) -> None:
        """Control: power-on settings: bias 0 V, gates off."""
        self.settings = {}
        for number in range(1, self.channel_count + 1):
            self.settings[f"SOUR{number}:VOLT"] = _Setting(0.0, 0.0, 500.0, "{:.3f}")
            self.settings[f"GATE{number}:STAT"] = _Setting(0, 0, 1, "{:.0f}", integer=True)

    def advance(self) -> None:
        """Control: let each detector's temperature relax towards the cooler set-point."""
        now = self.clock.now_unix_s()
        decay = math.exp(-max(0.0, now - self._updated_unix_s) / self.cooling_time_constant_s)
        self._updated_unix_s = now
        for channel in self.channels:
            offset = channel.temperature_c - self.cooler_setpoint_c
            channel.temperature_c = self.cooler_setpoint_c + offset * decay

    def channel_live(self, channel: int) -> bool:
        """Get: whether a channel detects photons now (gate armed and bias applied)."""
        return bool(self.settings[f"GATE{channel}:STAT"].value) and (
            self.settings[f"SOUR{channel}:VOLT"].value > 0.0
        )

    def dark_rate_cps(self, channel: int) -> float:
        """Get: a channel's dark count rate at its present temperature."""
        excess_k = self.channels[channel - 1].temperature_c - self.cooler_setpoint_c
        return self.dark_rate_at_setpoint_cps * 2.0 ** (excess_k / self.dark_doubling_k)

    def _counts(self, channel: int) -> str:
        if not self.settings[f"GATE{channel}:STAT"].value:
            return "0"
        rate = self.dark_rate_cps(channel) + self.channels[channel - 1].photon_rate_cps
        return str(int(self._rng.poisson(rate)))  # one second of counting

    def queries(self) -> dict[str, Callable[[], str]]:
        """Get: read-only headers: per-channel temperature and counts."""
        table = super().queries()
        for number in range(1, self.channel_count + 1):
            channel = self.channels[number - 1]
            table[f"MEAS{number}:TEMP?"] = lambda c=channel: f"{c.temperature_c:.2f}"
            table[f"MEAS{number}:COUN?"] = lambda n=number: self._counts(n)
        return table
