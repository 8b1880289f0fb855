"""PI-GCS-style piezo tip/tilt driver behind the `FastSteeringMirror` interface.

Wire protocol (PI General Command Set, as on E-727/E-712 controllers, over serial or TCP):

- Each command ends with LF. Axes are named by identifiers (default ``A`` = tip, ``B`` =
  tilt); one command may address several: ``MOV A 0.125 B -0.250``.
- Queries (``POS?``, ``ONT?``, ``SVO?``, ``TMN?``, ``TMX?``, ``MOV?``) answer one line per
  axis, ``A=0.125000``; every line but the last ends with a space before its LF.
- Commands that set something answer nothing; the driver then asks ``ERR?`` (as PI's own
  libraries do) and a non-zero code is the instrument's rejection.
- Positions are in the controller's axis unit; `axis_unit_urad` converts (1000 for a
  controller configured in mrad, as for S-33x tip/tilt platforms).

Commands used: ``*IDN?``, ``ERR?``, ``SVO``/``SVO?``, ``MOV``/``MOV?``, ``MVR``, ``POS?``,
``ONT?``, ``TMN?``, ``TMX?``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from pydantic import Field

from drivers.commands import (
    CommandInstrument,
    control,
    measurement,
    parse_float,
    parse_int,
    setting,
    strict_discrete_set,
    strict_range,
)
from drivers.interfaces import DeviceError, FastSteeringMirror, MirrorRange
from drivers.options import DriverOptions
from drivers.transport import Transport
from satqkd_core.errors import InputError

# PI GCS error codes a tip/tilt controller reports (GCS error code table)
GCS_ERRORS = {
    1: "parameter syntax error",
    2: "unknown command",
    5: "move attempted with servo off",
    7: "position out of limits",
    10: "controller was stopped by command",
    15: "invalid axis identifier",
}
_WIRE_RANGE = (-1e6, 1e6)
#: widest travel span (max - min) in microradians a tip/tilt mirror can plausibly report
MAX_TRAVEL_SPAN_URAD = 1e5


def _axis_value(reply: str) -> str:
    """Get: the value part of a one-axis GCS reply line ``A=value``."""
    axis, sep, value = reply.partition("=")
    if not sep or not axis.strip() or not value.strip():
        raise ValueError(f"expected AXIS=value, got {reply!r}")
    return value.strip()


def _axis_float(reply: str) -> float:
    return parse_float(_axis_value(reply))


def _axis_bool(reply: str) -> bool:
    return {"0": False, "1": True}[_axis_value(reply)]


class PiGcsMirror(CommandInstrument, FastSteeringMirror):
    """Control a piezo tip/tilt mirror through a PI GCS controller (serial or TCP port 50000)."""

    identity_pattern: ClassVar[str] = r"(?i)physik instrumente"

    identification = measurement("*IDN?", "Get the controller identification string.")
    error_code = measurement(
        "ERR?", "Get the oldest error code and clear it (0: none).", get_process=parse_int
    )
    servo = control(
        "SVO? {axis}",
        "SVO {axis} {}",
        "Control the position servo of one axis (True: closed loop).",
        validator=strict_discrete_set,
        values=(True, False),
        set_process=int,
        get_process=_axis_bool,
    )
    target = control(
        "MOV? {axis}",
        "MOV {axis} {:.6f}",
        "Control the target position of one axis, in the controller's axis unit.",
        validator=strict_range,
        values=_WIRE_RANGE,
        get_process=_axis_float,
        units="axis unit",
    )
    step = setting(
        "MVR {axis} {:.6f}",
        "Set a relative move of one axis, in the controller's axis unit.",
        validator=strict_range,
        values=_WIRE_RANGE,
        units="axis unit",
    )
    readback = measurement(
        "POS? {axis}",
        "Measure the sensor position of one axis, in the controller's axis unit.",
        get_process=_axis_float,
        units="axis unit",
    )
    axis_on_target = measurement(
        "ONT? {axis}", "Measure whether one axis has settled on target.", get_process=_axis_bool
    )
    travel_min = measurement(
        "TMN? {axis}", "Get the lower travel limit of one axis.", get_process=_axis_float
    )
    travel_max = measurement(
        "TMX? {axis}", "Get the upper travel limit of one axis.", get_process=_axis_float
    )

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        axes: tuple[str, str] = ("A", "B"),
        axis_unit_urad: float = 1000.0,
        **driver_options: Any,
    ) -> None:
        super().__init__(name, transport, **driver_options)
        if len(axes) != 2 or len(set(axes)) != 2 or not all(a.isalnum() for a in axes):
            raise InputError(f"axes must be two distinct identifiers, got {axes!r}")
        if not axis_unit_urad > 0:
            raise InputError(f"axis_unit_urad must be > 0, got {axis_unit_urad!r}")
        self.axes = (str(axes[0]), str(axes[1]))
        self.axis_unit_urad = float(axis_unit_urad)
        self._range: MirrorRange | None = None

    # --- framing -------------------------------------------------------------------------------

    async def _transact(self, command: str, expect_reply: bool) -> str:
        await self.transport.write(command.encode("ascii") + b"\n")
        if not expect_reply:
            await self._check_error(command)
            return ""
        lines = []
        while True:
            line = await self._read_line(b"\n", command)
            if not line.endswith(" "):
                lines.append(line)
                return "\n".join(lines)
            lines.append(line[:-1])  # a trailing space announces another line

    async def _check_error(self, command: str) -> None:
        await self.transport.write(b"ERR?\n")
        reply = await self._read_line(b"\n", "ERR?")
        try:
            code = int(reply.strip())
        except ValueError:
            raise self.garbled("ERR?", reply, "not an error code") from None
        if code != 0:
            meaning = GCS_ERRORS.get(code, "see the controller manual")
            raise self.instrument_error(command, f"GCS error {code} ({meaning})")

    async def _handshake(self) -> str:
        identity = self._check_identity(await self._roundtrip("*IDN?", expect_reply=True))
        await self._roundtrip("ERR?", expect_reply=True)  # clear an error left by a previous user
        low = self._parse_axes("TMN?", await self._roundtrip(self._query("TMN?"), True))
        high = self._parse_axes("TMX?", await self._roundtrip(self._query("TMX?"), True))
        tip, tilt = self.axes
        for axis in self.axes:
            self._check_travel(axis, low[axis], high[axis])
        self._range = MirrorRange(
            low[tip] * self.axis_unit_urad,
            high[tip] * self.axis_unit_urad,
            low[tilt] * self.axis_unit_urad,
            high[tilt] * self.axis_unit_urad,
        )
        return identity.strip()

    def _check_travel(self, axis: str, low: float, high: float) -> None:
        """Refuse (DeviceError, counted) a travel range no tip/tilt mirror can have."""
        low_urad, high_urad = low * self.axis_unit_urad, high * self.axis_unit_urad
        span_urad = high_urad - low_urad
        if (
            math.isfinite(low_urad)
            and math.isfinite(high_urad)
            and 0.0 < span_urad < MAX_TRAVEL_SPAN_URAD
        ):
            return
        self.counters.instrument_errors += 1
        raise DeviceError(
            f"{self._label()}: implausible travel range of axis {axis}: TMN? {low!r} .. "
            f"TMX? {high!r} ({low_urad:g} .. {high_urad:g} urad); expected finite limits with "
            f"min < max and a span under {MAX_TRAVEL_SPAN_URAD:g} urad"
        )

    async def _make_safe(self) -> None:
        # centre the mirror so the beam stays in the field of view; the servo stays closed
        if self._range is not None and await self.servo_enabled():
            await self.move_to(0.0, 0.0)

    async def _health(self) -> tuple[bool, dict[str, Any]]:
        tip, tilt = await self.position()
        servo = await self.servo_enabled()
        code = await self.error_code.get()
        detail = {"tip_urad": round(tip, 3), "tilt_urad": round(tilt, 3), "servo": servo}
        if code:
            detail["error_code"] = code
        return code == 0, detail

    # --- helpers -----------------------------------------------------------------------------

    def _query(self, command: str) -> str:
        return f"{command} {self.axes[0]} {self.axes[1]}"

    def _parse_axes(self, command: str, reply: str) -> dict[str, float]:
        values: dict[str, float] = {}
        try:
            for line in reply.split("\n"):
                axis, sep, value = line.partition("=")
                if not sep:
                    raise ValueError(f"line {line!r} is not AXIS=value")
                values[axis.strip()] = parse_float(value)
        except ValueError as exc:
            raise self.garbled(command, reply, str(exc)) from None
        if set(values) != set(self.axes):
            raise self.garbled(command, reply, f"expected axes {list(self.axes)}")
        return values

    def _checked_target(self, tip_urad: float, tilt_urad: float) -> tuple[float, float]:
        if self._range is None:
            raise InputError(f"{self.name}: not connected (travel range unknown)")
        travel = self._range
        strict_range(tip_urad, (travel.tip_min_urad, travel.tip_max_urad), f"{self.name} tip_urad")
        strict_range(
            tilt_urad, (travel.tilt_min_urad, travel.tilt_max_urad), f"{self.name} tilt_urad"
        )
        return tip_urad / self.axis_unit_urad, tilt_urad / self.axis_unit_urad

    # --- FastSteeringMirror interface ----------------------------------------------------------

    async def set_servo(self, enabled: bool) -> None:
        """Control: close (True) or open (False) the servo loop on both axes."""
        flag = int(bool(strict_discrete_set(enabled, (True, False), f"{self.name} servo")))
        await self.send(f"SVO {self.axes[0]} {flag} {self.axes[1]} {flag}")

    async def servo_enabled(self) -> bool:
        """Get: whether the servo loop is closed on both axes."""
        command = self._query("SVO?")
        values = self._parse_axes(command, await self.ask(command))
        return all(values[axis] == 1.0 for axis in self.axes)

    async def move_to(self, tip_urad: float, tilt_urad: float) -> None:
        """Control: command an absolute tip/tilt in microradians (both axes at once)."""
        tip, tilt = self._checked_target(tip_urad, tilt_urad)
        await self.send(f"MOV {self.axes[0]} {tip:.6f} {self.axes[1]} {tilt:.6f}")

    async def move_by(self, tip_step_urad: float, tilt_step_urad: float) -> None:
        """Control: command a relative step in microradians (not repeated after a reconnect)."""
        for what, value in (("tip_step_urad", tip_step_urad), ("tilt_step_urad", tilt_step_urad)):
            strict_range(value, (-1e7, 1e7), f"{self.name} {what}")
        tip, tilt = tip_step_urad / self.axis_unit_urad, tilt_step_urad / self.axis_unit_urad
        await self.send(f"MVR {self.axes[0]} {tip:.6f} {self.axes[1]} {tilt:.6f}", idempotent=False)

    async def position(self) -> tuple[float, float]:
        """Measure: the sensor readback (tip, tilt) in microradians."""
        command = self._query("POS?")
        values = self._parse_axes(command, await self.ask(command))
        return values[self.axes[0]] * self.axis_unit_urad, values[
            self.axes[1]
        ] * self.axis_unit_urad

    async def on_target(self) -> bool:
        """Measure: whether both axes have settled on their targets."""
        command = self._query("ONT?")
        values = self._parse_axes(command, await self.ask(command))
        return all(values[axis] == 1.0 for axis in self.axes)

    async def travel_range(self) -> MirrorRange:
        """Get: the travel range in microradians (read at connect)."""
        if self._range is None:
            raise InputError(f"{self.name}: not connected (travel range unknown)")
        return self._range


class PiGcsMirrorOptions(DriverOptions):
    """Options of `PiGcsMirror`: the controller's two axis identifiers and its axis unit."""

    axes: tuple[str, str] = ("A", "B")
    axis_unit_urad: Annotated[float, Field(gt=0.0)] = 1000.0
