"""PTU-family pan-tilt driver (ASCII over serial) behind the `Gimbal` interface.

Wire protocol (FLIR/DirectedPerception PTU-D46/D48 style, terse feedback, echo disabled):

- Each command ends with LF, e.g. ``PP1200\\n``. Pan is azimuth, tilt is elevation.
- Every command is answered by one line ending CR LF: ``*`` (done), ``* <value>`` (a query's
  value) or ``! <message>`` (rejected). A unit that powered up with echo on first repeats the
  command on a line of its own; the handshake's ``ED`` turns that off.
- The controller may also send ``!P`` or ``!T`` on its own line at any time: the pan or tilt
  axis ran into a limit (in velocity mode). The driver records these as `limit_hits`.
- Positions and speeds are in controller counts; ``PR``/``TR`` give the resolution in arc
  seconds per count. The driver speaks degrees and checks the configured resolution against the
  controller's at connect.

Commands used: ``ED`` (echo off), ``FT`` (terse feedback), ``V`` (version: the identity),
``PR``/``TR``, ``PN``/``PX``/``TN``/``TX`` (limits), ``PP``/``TP`` (position), ``PS``/``TS``
(speed: slew speed in position mode, signed rate in velocity mode), ``PA``/``TA``
(acceleration), ``CI``/``CV`` (position / velocity control mode), ``H`` (halt).
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
    strict_int_range,
)
from drivers.interfaces import DeviceError, Gimbal, GimbalLimits
from drivers.options import DriverOptions
from drivers.transport import Transport
from satqkd_core.errors import InputError

ARCSEC_PER_DEG = 3600.0
_COUNT_RANGE = (-(2**23), 2**23 - 1)  # the controller's signed 24-bit position registers
_SPEED_RANGE = (-100_000, 100_000)
_ACCEL_RANGE = (1, 1_000_000)
_LIMIT_EVENTS = {"!P": "az", "!T": "el"}


class PtuGimbal(CommandInstrument, Gimbal):
    """Control a PTU-family pan-tilt unit over serial (pan = azimuth, tilt = elevation)."""

    identity_pattern: ClassVar[str] = r"(?i)pan-tilt"
    drain_before_command: ClassVar[bool] = True  # pick up unsolicited limit hits between commands

    pan_position = control(
        "PP",
        "PP{}",
        "Control the pan target position in counts (query: current position).",
        validator=strict_int_range,
        values=_COUNT_RANGE,
        get_process=parse_int,
        units="counts",
    )
    tilt_position = control(
        "TP",
        "TP{}",
        "Control the tilt target position in counts (query: current position).",
        validator=strict_int_range,
        values=_COUNT_RANGE,
        get_process=parse_int,
        units="counts",
    )
    pan_speed = control(
        "PS",
        "PS{}",
        "Control the pan speed in counts/s (signed rate in velocity mode).",
        validator=strict_int_range,
        values=_SPEED_RANGE,
        get_process=parse_int,
        units="counts/s",
    )
    tilt_speed = control(
        "TS",
        "TS{}",
        "Control the tilt speed in counts/s (signed rate in velocity mode).",
        validator=strict_int_range,
        values=_SPEED_RANGE,
        get_process=parse_int,
        units="counts/s",
    )
    pan_acceleration = control(
        "PA",
        "PA{}",
        "Control the pan acceleration in counts/s^2.",
        validator=strict_int_range,
        values=_ACCEL_RANGE,
        get_process=parse_int,
        units="counts/s^2",
    )
    tilt_acceleration = control(
        "TA",
        "TA{}",
        "Control the tilt acceleration in counts/s^2.",
        validator=strict_int_range,
        values=_ACCEL_RANGE,
        get_process=parse_int,
        units="counts/s^2",
    )
    pan_min = measurement(
        "PN", "Get the pan minimum position.", get_process=parse_int, units="counts"
    )
    pan_max = measurement(
        "PX", "Get the pan maximum position.", get_process=parse_int, units="counts"
    )
    tilt_min = measurement(
        "TN", "Get the tilt minimum position.", get_process=parse_int, units="counts"
    )
    tilt_max = measurement(
        "TX", "Get the tilt maximum position.", get_process=parse_int, units="counts"
    )
    pan_resolution = measurement(
        "PR", "Get the pan resolution.", get_process=parse_float, units="arcsec/count"
    )
    tilt_resolution = measurement(
        "TR", "Get the tilt resolution.", get_process=parse_float, units="arcsec/count"
    )
    version = measurement("V", "Get the controller's version banner (its identity).")
    control_mode = setting(
        "{}",
        "Set the control mode: 'position' (CI) or 'velocity' (CV).",
        map_values={"position": "CI", "velocity": "CV"},
    )

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        pan_resolution_arcsec: float | None = None,
        tilt_resolution_arcsec: float | None = None,
        **driver_options: Any,
    ) -> None:
        super().__init__(name, transport, **driver_options)
        for what, value in (
            ("pan_resolution_arcsec", pan_resolution_arcsec),
            ("tilt_resolution_arcsec", tilt_resolution_arcsec),
        ):
            if value is not None and not value > 0:
                raise InputError(f"{what} must be > 0 arc seconds per count, got {value!r}")
        self.configured_resolution_arcsec = (pan_resolution_arcsec, tilt_resolution_arcsec)
        self.resolution_arcsec = (pan_resolution_arcsec or 0.0, tilt_resolution_arcsec or 0.0)
        self._limits_counts: tuple[int, int, int, int] | None = None
        self._mode: str | None = None
        self._limit_hits: list[str] = []
        self._partial_event_line = ""

    # --- framing -------------------------------------------------------------------------------

    def _record_event_lines(self, text: str) -> str:
        """Record complete unsolicited lines in `text`; return what is left of a partial one."""
        *lines, rest = (self._partial_event_line + text).split("\r\n")
        for line in lines:
            if line in _LIMIT_EVENTS:
                self._limit_hits.append(_LIMIT_EVENTS[line])
            elif line:
                self.counters.stale_bytes_discarded += len(line) + 2
        return rest

    def _on_stale_input(self, data: bytes) -> None:
        self._partial_event_line = self._record_event_lines(data.decode("ascii", "replace"))

    async def _transact(self, command: str, expect_reply: bool) -> str:
        await self.transport.write(command.encode("ascii") + b"\n")
        while True:
            line = await self._read_line(b"\r\n", command)
            if self._partial_event_line:  # a drained fragment completes with this line
                line = self._partial_event_line + line
                self._partial_event_line = ""
            if line in _LIMIT_EVENTS:
                self._limit_hits.append(_LIMIT_EVENTS[line])
                continue
            if line == command:
                continue  # echo from a unit powered up with echo on (the handshake's ED stops it)
            break
        if line.startswith("! "):
            raise self.instrument_error(command, line[2:])
        if line == "*" and not expect_reply:
            return ""
        if line.startswith("* ") and expect_reply and line[2:].strip():
            return line[2:].strip()
        raise self.garbled(command, line, "expected '*'" + (" and a value" if expect_reply else ""))

    async def _handshake(self) -> str:
        self._mode = None
        for command in ("ED", "FT"):
            await self._roundtrip(command, expect_reply=False)
        identity = self._check_identity(await self._roundtrip("V", expect_reply=True))
        resolution = []
        for command, configured in zip(
            ("PR", "TR"), self.configured_resolution_arcsec, strict=True
        ):
            reply = await self._roundtrip(command, expect_reply=True)
            try:
                reported = parse_float(reply)
            except ValueError:
                raise self.garbled(command, reply, "not a resolution") from None
            if not (math.isfinite(reported) and reported > 0):
                self.counters.instrument_errors += 1
                raise DeviceError(
                    f"{self._label()}: implausible resolution {reported!r} arcsec/count "
                    f"({command}); expected a finite value > 0"
                )
            if configured is not None and abs(reported - configured) > 1e-6 * configured:
                raise DeviceError(
                    f"{self._label()}: configured resolution {configured:g} arcsec/count differs "
                    f"from the controller's {reported:g} ({command})"
                )
            resolution.append(reported)
        self.resolution_arcsec = (resolution[0], resolution[1])
        limits = []
        for command in ("PN", "PX", "TN", "TX"):
            reply = await self._roundtrip(command, expect_reply=True)
            try:
                limits.append(parse_int(reply))
            except ValueError:
                raise self.garbled(command, reply, "not a position") from None
        self._limits_counts = self._checked_limits(limits[0], limits[1], limits[2], limits[3])
        return identity

    def _checked_limits(
        self, pan_min: int, pan_max: int, tilt_min: int, tilt_max: int
    ) -> tuple[int, int, int, int]:
        """Get the limits in counts if each axis has min < max; DeviceError (counted) if not."""
        for axis, low, high in (("pan", pan_min, pan_max), ("tilt", tilt_min, tilt_max)):
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                self.counters.instrument_errors += 1
                raise DeviceError(
                    f"{self._label()}: implausible {axis} limits {low!r} .. {high!r} counts; "
                    "expected finite limits with min < max"
                )
        return pan_min, pan_max, tilt_min, tilt_max

    async def _make_safe(self) -> None:
        await self.send("H")

    async def _health(self) -> tuple[bool, dict[str, Any]]:
        az_deg, el_deg = await self.position()
        limits = self._limits_from_counts()
        inside = limits.contains(az_deg, el_deg)
        detail: dict[str, Any] = {"az_deg": round(az_deg, 4), "el_deg": round(el_deg, 4)}
        if self._mode is not None:
            detail["mode"] = self._mode
        detail["limit_hits"] = len(self._limit_hits)
        return inside, detail

    # --- unit conversion ---------------------------------------------------------------------

    def _deg_to_counts(self, angle_deg: float, axis: int) -> int:
        return round(angle_deg * ARCSEC_PER_DEG / self.resolution_arcsec[axis])

    def _counts_to_deg(self, counts: float, axis: int) -> float:
        return counts * self.resolution_arcsec[axis] / ARCSEC_PER_DEG

    def _limits_from_counts(self) -> GimbalLimits:
        if self._limits_counts is None:
            raise DeviceError(f"{self._label()}: not connected (limits unknown)")
        pan_min, pan_max, tilt_min, tilt_max = self._limits_counts
        return GimbalLimits(
            self._counts_to_deg(pan_min, 0),
            self._counts_to_deg(pan_max, 0),
            self._counts_to_deg(tilt_min, 1),
            self._counts_to_deg(tilt_max, 1),
        )

    async def _ensure_mode(self, mode: str) -> None:
        if self._mode != mode:
            await self.control_mode.set(mode)
            self._mode = mode

    # --- Gimbal interface ----------------------------------------------------------------------

    async def move_to(self, az_deg: float, el_deg: float) -> None:
        """Control: slew to an absolute pointing (position mode); InputError outside limits."""
        limits = self._limits_from_counts()
        if not limits.contains(az_deg, el_deg):
            raise InputError(
                f"{self.name}: pointing az={az_deg!r} el={el_deg!r} deg is outside {limits}"
            )
        await self._ensure_mode("position")
        await self.pan_position.set(self._deg_to_counts(az_deg, 0))
        await self.tilt_position.set(self._deg_to_counts(el_deg, 1))

    async def set_rate(self, az_rate_deg_s: float, el_rate_deg_s: float) -> None:
        """Control: move at constant signed rates in degrees per second (velocity mode)."""
        await self._ensure_mode("velocity")
        await self.pan_speed.set(self._deg_to_counts(az_rate_deg_s, 0))
        await self.tilt_speed.set(self._deg_to_counts(el_rate_deg_s, 1))

    async def set_slew(self, max_rate_deg_s: float, acceleration_deg_s2: float) -> None:
        """Set: slew speed (position mode) and acceleration on both axes."""
        if not max_rate_deg_s > 0 or not acceleration_deg_s2 > 0:
            raise InputError(
                f"{self.name}: slew rate and acceleration must be > 0, got "
                f"{max_rate_deg_s!r} deg/s and {acceleration_deg_s2!r} deg/s^2"
            )
        await self._ensure_mode("position")
        for axis, speed, accel in (
            (0, self.pan_speed, self.pan_acceleration),
            (1, self.tilt_speed, self.tilt_acceleration),
        ):
            await speed.set(max(1, self._deg_to_counts(max_rate_deg_s, axis)))
            await accel.set(max(1, self._deg_to_counts(acceleration_deg_s2, axis)))

    async def halt(self) -> None:
        """Control: stop both axes."""
        await self.send("H")

    async def position(self) -> tuple[float, float]:
        """Measure: the current (azimuth, elevation) in degrees."""
        pan = await self.pan_position.get()
        tilt = await self.tilt_position.get()
        return self._counts_to_deg(pan, 0), self._counts_to_deg(tilt, 1)

    async def rate(self) -> tuple[float, float]:
        """Get: the commanded (azimuth, elevation) speeds in degrees per second."""
        pan = await self.pan_speed.get()
        tilt = await self.tilt_speed.get()
        return self._counts_to_deg(pan, 0), self._counts_to_deg(tilt, 1)

    async def limits(self) -> GimbalLimits:
        """Get: the travel limits, read from the controller."""
        counts = (
            await self.pan_min.get(),
            await self.pan_max.get(),
            await self.tilt_min.get(),
            await self.tilt_max.get(),
        )
        self._limits_counts = self._checked_limits(*counts)
        return self._limits_from_counts()

    async def poll_events(self) -> tuple[str, ...]:
        """Measure: read pending unsolicited lines; return all limit hits since connect."""
        async with self._lock:
            await self._drain()
        return self.limit_hits

    @property
    def limit_hits(self) -> tuple[str, ...]:
        """Get: the axes ('az' or 'el') that ran into a limit, oldest first."""
        return tuple(self._limit_hits)


class PtuGimbalOptions(DriverOptions):
    """Options of `PtuGimbal`: the controller's resolution as it prints it for PR / TR (arc
    seconds per count); connect refuses a controller reporting another."""

    pan_resolution_arcsec: Annotated[float, Field(gt=0.0)] | None = None
    tilt_resolution_arcsec: Annotated[float, Field(gt=0.0)] | None = None
