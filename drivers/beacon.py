"""Quad-cell beacon sensor driver (ASCII over serial) behind the `BeaconSensor` interface.

Wire protocol (satqkd QC/1, designed for this project; 115200 baud 8N1 by default):

- A command is ASCII ending in CR: ``ID?``, ``CEN?``, ``EXP?``, ``EXP <us>``, ``STAT?``.
- Every reply is one line ``<body>*<hh>`` ending CR LF, where ``hh`` is the XOR of all body
  bytes as two upper-case hex digits (the NMEA 0183 checksum), so line noise is detected.
- Bodies: ``ID,<maker>,<model>,<serial>,<firmware>``;
  ``CEN,<frame>,<x urad>,<y urad>,<power nW>,<valid 0|1>`` (spot centroid relative to the
  boresight and its optical power; valid is 0 when no spot is in the linear range);
  ``EXP,<us>`` (integration time); ``STAT,<sensor temperature C>,<saturated 0|1>``;
  ``OK`` (a setting was accepted); ``ERR,<code>,<text>`` with code 1 unknown command,
  2 bad argument, 3 out of range.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from drivers.commands import CommandInstrument, control, measurement, parse_float, strict_range
from drivers.interfaces import BeaconSensor, BeaconSpot
from drivers.options import DriverOptions
from drivers.transport import Transport

_EXPOSURE_RANGE_US = (10.0, 100_000.0)


def nmea_checksum(body: bytes) -> int:
    """Get: the XOR of all bytes of a reply body (NMEA 0183 style)."""
    checksum = 0
    for byte in body:
        checksum ^= byte
    return checksum


def frame_reply(body: str) -> bytes:
    """Get: a reply line for `body`, with its checksum and CR LF."""
    encoded = body.encode("ascii")
    return encoded + f"*{nmea_checksum(encoded):02X}\r\n".encode("ascii")


def _fields(body: str, kind: str, count: int) -> list[str]:
    parts = body.split(",")
    if parts[0] != kind or len(parts) != count + 1:
        raise ValueError(f"expected {kind} with {count} field(s), got {body!r}")
    return parts[1:]


def _parse_exposure(body: str) -> float:
    return parse_float(_fields(body, "EXP", 1)[0])


def _parse_status(body: str) -> tuple[float, bool]:
    temperature, saturated = _fields(body, "STAT", 2)
    return parse_float(temperature), {"0": False, "1": True}[saturated]


class QuadCellBeacon(CommandInstrument, BeaconSensor):
    """Measure the beacon spot on a quad-cell sensor over serial (protocol QC/1 above)."""

    identity_pattern: ClassVar[str] = r"(?i)\bQC-\d+"

    exposure_us = control(
        "EXP?",
        "EXP {:.1f}",
        "Control the integration (exposure) time.",
        validator=strict_range,
        values=_EXPOSURE_RANGE_US,
        get_process=_parse_exposure,
        units="us",
    )
    sensor_status = measurement(
        "STAT?",
        "Measure the sensor temperature (C) and whether the cell is saturated.",
        get_process=_parse_status,
    )

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        max_sensor_temperature_c: float = 60.0,
        **driver_options: Any,
    ) -> None:
        super().__init__(name, transport, **driver_options)
        self.max_sensor_temperature_c = float(max_sensor_temperature_c)

    async def _transact(self, command: str, expect_reply: bool) -> str:
        await self.transport.write(command.encode("ascii") + b"\r")
        line = await self._read_line(b"\r\n", command)
        body, star, checksum = line.rpartition("*")
        try:
            valid = bool(star) and int(checksum, 16) == nmea_checksum(body.encode("ascii"))
        except ValueError:
            valid = False
        if not valid or len(checksum) != 2:
            raise self.garbled(command, line, "checksum does not match")
        if body.startswith("ERR,"):
            raise self.instrument_error(command, body[4:])
        if expect_reply:
            return body
        if body != "OK":
            raise self.garbled(command, line, "expected OK")
        return ""

    async def _handshake(self) -> str:
        body = await self._roundtrip("ID?", expect_reply=True)
        if not body.startswith("ID,"):
            raise self.garbled("ID?", body, "expected ID,...")
        return self._check_identity(body[3:])

    async def _make_safe(self) -> None:
        """Control: nothing to do: the sensor only receives light and holds no motion."""

    async def _health(self) -> tuple[bool, dict[str, Any]]:
        temperature_c, saturated = await self.sensor_status.get()
        spot = await self.read_spot()
        detail = {
            "sensor_temperature_c": temperature_c,
            "saturated": saturated,
            "spot_valid": spot.valid,
            "power_nw": spot.power_nw,
        }
        return not saturated and temperature_c <= self.max_sensor_temperature_c, detail

    async def read_spot(self) -> BeaconSpot:
        """Measure: the latest spot centroid (urad from boresight) and power (nW)."""
        body = await self.ask("CEN?")
        try:
            frame, x_urad, y_urad, power_nw, valid = _fields(body, "CEN", 5)
            return BeaconSpot(
                x_urad=parse_float(x_urad),
                y_urad=parse_float(y_urad),
                power_nw=parse_float(power_nw),
                valid={"0": False, "1": True}[valid],
                frame=int(frame),
            )
        except (ValueError, KeyError) as exc:
            raise self.garbled("CEN?", body, str(exc)) from None

    async def set_exposure(self, exposure_us: float) -> None:
        """Set: integration time in microseconds."""
        await self.exposure_us.set(exposure_us)

    async def exposure(self) -> float:
        """Get: integration time in microseconds."""
        return float(await self.exposure_us.get())


class QuadCellBeaconOptions(DriverOptions):
    """Options of `QuadCellBeacon`: the sensor temperature above which it is unhealthy."""

    max_sensor_temperature_c: Annotated[float, Field(ge=-50.0, le=150.0)] = 60.0
