"""SCPI instruments over VISA: the laser source controller and the detector bias supply.

Both speak SCPI-1999 framing: commands and replies end with LF, a set command has no reply and
the driver confirms it with ``SYST:ERR?`` (``0,"No error"`` or ``<code>,"<message>"``). The
pyvisa-sim files beside this module (drivers/sim/laser_source.yaml, drivers/sim/bias_supply.yaml)
simulate both, each with a second device that answers wrongly so the error paths run too;
sim_backends/emulators/scpi.py serves the same command sets with dynamics on a TCP port.

Laser source controller (decoy-state weak-coherent-pulse source):
``*IDN?``, ``*RST``, ``*CLS``, ``SYST:ERR?``, ``SYST:INTL?`` (1: interlock closed, emission
allowed), ``OUTP:STAT 0|1``, ``PULS:FREQ <Hz>``, ``PULS:STAR <unix s>`` (UTC instant of pulse
0), ``SOUR:INT:SIGN|DEC|VAC <mean photon number>``; each setting also answers its query form.

Detector bias supply (one channel per single-photon detector, numbered from 1):
``SOUR<n>:VOLT <V>``, ``GATE<n>:STAT 0|1``, ``MEAS<n>:TEMP?`` (deg C), ``MEAS<n>:COUN?``
(counts per second).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from drivers.commands import (
    CommandInstrument,
    control,
    measurement,
    parse_float,
    parse_int,
    strict_discrete_set,
    strict_int_range,
    strict_range,
)
from drivers.interfaces import (
    DeviceError,
    PhotonDetector,
    PulsedSource,
    PulsePatternRecord,
)
from drivers.options import DriverOptions
from drivers.transport import Transport
from satqkd_core.errors import InputError

_ERROR_REPLY = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')

# the pyvisa-sim models beside this module; a resource picks one device of a file
SIM_DIRECTORY = Path(__file__).resolve().parent / "sim"
LASER_SOURCE_SIM_RESOURCE = (
    f"visa-sim://{SIM_DIRECTORY / 'laser_source.yaml'}#TCPIP0::127.0.0.1::5025::SOCKET"
)
_ON_OFF = {True: "1", False: "0"}


def _parse_bool(text: str) -> bool:
    return {"0": False, "1": True, "OFF": False, "ON": True}[text.strip().upper()]


class ScpiInstrument(CommandInstrument):
    """SCPI framing and error queue shared by the SCPI drivers."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        identity_pattern: str | None = None,
        **driver_options: Any,
    ) -> None:
        super().__init__(name, transport, **driver_options)
        if identity_pattern is not None:
            re.compile(identity_pattern)
            self.identity_pattern = identity_pattern

    async def _transact(self, command: str, expect_reply: bool) -> str:
        await self.transport.write(command.encode("ascii") + b"\n")
        if expect_reply:
            return (await self._read_line(b"\n", command)).strip()
        code, message = await self._read_error(command)
        if code != 0:
            raise self.instrument_error(command, f"SCPI error {code}, {message!r}")
        return ""

    async def _read_error(self, command: str) -> tuple[int, str]:
        await self.transport.write(b"SYST:ERR?\n")
        reply = await self._read_line(b"\n", "SYST:ERR?")
        match = _ERROR_REPLY.match(reply)
        if match is None:
            raise self.garbled("SYST:ERR?", reply, f"not an error-queue entry (after {command!r})")
        return int(match.group(1)), match.group(2)

    async def _handshake(self) -> str:
        identity = self._check_identity(await self._roundtrip("*IDN?", expect_reply=True))
        await self._roundtrip("*CLS", expect_reply=False)  # start with an empty error queue
        return identity

    async def reset(self) -> None:
        """Control: reset the instrument to its power-on settings (*RST)."""
        await self.send("*RST")

    async def _error_free(self) -> tuple[bool, dict[str, Any]]:
        reply = await self.ask("SYST:ERR?")
        match = _ERROR_REPLY.match(reply)
        if match is None:
            raise self.garbled("SYST:ERR?", reply, "not an error-queue entry")
        code, message = int(match.group(1)), match.group(2)
        if code == 0:
            return True, {}
        self.counters.instrument_errors += 1
        return False, {"error": f"SCPI error {code}, {message!r}"}


# --- laser source ------------------------------------------------------------------------------


class ScpiLaserSource(ScpiInstrument, PulsedSource):
    """Control a decoy-state laser source controller over SCPI; the pattern record comes from
    the sequencer (a callable, as for the simulated source)."""

    identity_pattern: ClassVar[str] = r"(?i)\bWCP-\d+"

    output = control(
        "OUTP:STAT?",
        "OUTP:STAT {}",
        "Control whether the source emits (1) or not (0).",
        validator=strict_discrete_set,
        values=(True, False),
        set_process=lambda value: _ON_OFF[value],
        get_process=_parse_bool,
    )
    interlock_closed = measurement(
        "SYST:INTL?", "Measure whether the safety interlock is closed.", get_process=_parse_bool
    )
    repetition_rate = control(
        "PULS:FREQ?",
        "PULS:FREQ {:.1f}",
        "Control the pulse repetition rate.",
        validator=strict_range,
        values=(1e3, 1e10),
        get_process=parse_float,
        units="Hz",
    )
    start_instant = control(
        "PULS:STAR?",
        "PULS:STAR {:.6f}",
        "Control the UTC instant of pulse 0.",
        validator=strict_range,
        values=(0.0, 4e9),
        get_process=parse_float,
        units="s since 1970",
    )
    signal_intensity = control(
        "SOUR:INT:SIGN?",
        "SOUR:INT:SIGN {:.4f}",
        "Control the signal state's mean photon number (mu_1).",
        validator=strict_range,
        values=(0.0, 10.0),
        get_process=parse_float,
        units="photons/pulse",
    )
    decoy_intensity = control(
        "SOUR:INT:DEC?",
        "SOUR:INT:DEC {:.4f}",
        "Control the decoy state's mean photon number (mu_2).",
        validator=strict_range,
        values=(0.0, 10.0),
        get_process=parse_float,
        units="photons/pulse",
    )
    vacuum_intensity = control(
        "SOUR:INT:VAC?",
        "SOUR:INT:VAC {:.4f}",
        "Control the vacuum state's mean photon number (mu_3).",
        validator=strict_range,
        values=(0.0, 10.0),
        get_process=parse_float,
        units="photons/pulse",
    )

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        pattern: Callable[[np.ndarray], Any] | None = None,
        **driver_options: Any,
    ) -> None:
        super().__init__(name, transport, **driver_options)
        self._pattern = pattern
        self._enabled = False

    async def _make_safe(self) -> None:
        await self.disable()

    async def _health(self) -> tuple[bool, dict[str, Any]]:
        detail = {
            "interlock_closed": await self.interlock_closed.get(),
            "emitting": await self.output.get(),
            "repetition_rate_hz": await self.repetition_rate.get(),
        }
        healthy, errors = await self._error_free()
        return healthy, detail | errors

    async def configure(self, repetition_rate_hz: float) -> None:
        """Set: the pulse repetition rate in Hz."""
        await self.repetition_rate.set(repetition_rate_hz)

    async def set_intensities(self, signal: float, decoy: float, vacuum: float) -> None:
        """Set: the three mean photon numbers (mu_1 > mu_2 + mu_3 >= 0, Lim et al. PRA 89,
        022307, 2014)."""
        if not (vacuum >= 0 and decoy >= 0 and signal > decoy + vacuum):
            raise InputError(
                f"{self.name}: intensities need mu_1 > mu_2 + mu_3 >= 0, "
                f"got {signal!r}, {decoy!r}, {vacuum!r}"
            )
        await self.signal_intensity.set(signal)
        await self.decoy_intensity.set(decoy)
        await self.vacuum_intensity.set(vacuum)

    async def intensities(self) -> tuple[float, float, float]:
        """Get: the (signal, decoy, vacuum) mean photon numbers."""
        return (
            await self.signal_intensity.get(),
            await self.decoy_intensity.get(),
            await self.vacuum_intensity.get(),
        )

    async def enable(self, first_pulse_unix_s: float) -> None:
        """Control: arm pulse 0 at `first_pulse_unix_s` and start emitting (interlock first)."""
        if not await self.interlock_closed.get():
            self.counters.instrument_errors += 1
            raise DeviceError(f"{self._label()}: interlock open: emission refused")
        await self.start_instant.set(first_pulse_unix_s)
        await self.output.set(True)
        self._enabled = True

    async def disable(self) -> None:
        """Control: stop emitting (the safe state)."""
        await self.output.set(False)
        self._enabled = False

    @property
    def enabled(self) -> bool:
        """Get: whether the driver last switched emission on."""
        return self._enabled

    async def read_pattern(self, pulse_index: np.ndarray) -> PulsePatternRecord:
        """Get: the sequencer's record (basis, bit, intensity) for the given pulse indices."""
        if self._pattern is None:
            raise DeviceError(
                f"{self._label()}: no sequencer pattern source is wired to this controller"
            )
        record = self._pattern(np.asarray(pulse_index, dtype=np.int64))
        return PulsePatternRecord(record.basis, record.bit, record.intensity)


# --- detector bias supply --------------------------------------------------------------------


class ScpiBiasSupply(ScpiInstrument, PhotonDetector):
    """Control the bias, gates and monitors of single-photon detectors over SCPI."""

    identity_pattern: ClassVar[str] = r"(?i)\bSPDB-\d+"

    bias_voltage = control(
        "SOUR{channel}:VOLT?",
        "SOUR{channel}:VOLT {:.3f}",
        "Control a channel's bias set-point.",
        validator=strict_range,
        values=(0.0, 500.0),
        get_process=parse_float,
        units="V",
    )
    gate_state = control(
        "GATE{channel}:STAT?",
        "GATE{channel}:STAT {}",
        "Control whether a channel's gate is armed.",
        validator=strict_discrete_set,
        values=(True, False),
        set_process=lambda value: _ON_OFF[value],
        get_process=_parse_bool,
    )
    detector_temperature = measurement(
        "MEAS{channel}:TEMP?",
        "Measure a channel's detector temperature.",
        get_process=parse_float,
        units="degC",
    )
    counts = measurement(
        "MEAS{channel}:COUN?",
        "Measure a channel's count rate.",
        get_process=parse_int,
        units="counts/s",
    )

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        channel_count: int = 4,
        max_bias_v: float = 80.0,
        max_temperature_c: float = 30.0,
        **driver_options: Any,
    ) -> None:
        super().__init__(name, transport, **driver_options)
        self.channel_count = strict_int_range(channel_count, (1, 16), f"{name} channel_count")
        self.max_bias_v = strict_range(max_bias_v, (0.0, 500.0), f"{name} max_bias_v")
        self.max_temperature_c = float(max_temperature_c)

    def _channel(self, channel: int) -> int:
        return strict_int_range(channel, (1, self.channel_count), f"{self.name} channel")

    async def _make_safe(self) -> None:
        for channel in range(1, self.channel_count + 1):
            await self.set_gate(channel, False)

    async def _health(self) -> tuple[bool, dict[str, Any]]:
        temperatures = [await self.temperature(ch) for ch in range(1, self.channel_count + 1)]
        gates = [await self.gate_enabled(ch) for ch in range(1, self.channel_count + 1)]
        warm = [ch + 1 for ch, t in enumerate(temperatures) if t > self.max_temperature_c]
        detail: dict[str, Any] = {"temperature_c": temperatures, "gates": gates}
        if warm:
            detail["too_warm_channels"] = warm
        healthy, errors = await self._error_free()
        return healthy and not warm, detail | errors

    async def set_bias(self, channel: int, bias_v: float) -> None:
        """Set: a channel's bias voltage (at most the configured `max_bias_v`)."""
        strict_range(bias_v, (0.0, self.max_bias_v), f"{self.name} bias_v")
        await self.bias_voltage.set(bias_v, channel=self._channel(channel))

    async def bias(self, channel: int) -> float:
        """Get: a channel's bias set-point in volts."""
        return float(await self.bias_voltage.get(channel=self._channel(channel)))

    async def set_gate(self, channel: int, enabled: bool) -> None:
        """Control: arm or disarm a channel's gate."""
        await self.gate_state.set(enabled, channel=self._channel(channel))

    async def gate_enabled(self, channel: int) -> bool:
        """Get: whether a channel's gate is armed."""
        return bool(await self.gate_state.get(channel=self._channel(channel)))

    async def temperature(self, channel: int) -> float:
        """Measure: a channel's detector temperature in degrees Celsius."""
        return float(await self.detector_temperature.get(channel=self._channel(channel)))

    async def count_rate(self, channel: int) -> float:
        """Measure: a channel's count rate in counts per second."""
        return float(await self.counts.get(channel=self._channel(channel)))


class ScpiLaserSourceOptions(DriverOptions):
    """Options of `ScpiLaserSource`: a regular expression the *IDN? reply must match."""

    identity_pattern: str | None = None


class ScpiBiasSupplyOptions(DriverOptions):
    """Options of `ScpiBiasSupply`: channels, the highest bias it may set (keep it below the
    detectors' breakdown margin) and the detector temperature above which it is unhealthy."""

    identity_pattern: str | None = None
    channel_count: Annotated[int, Field(ge=1, le=16)] = 4
    max_bias_v: Annotated[float, Field(ge=0.0, le=500.0)] = 80.0
    max_temperature_c: Annotated[float, Field(ge=-100.0, le=100.0)] = 30.0
