"""Emulated quad-cell beacon sensor: protocol QC/1 of drivers/beacon.py on a pty (or TCP).

The spot follows `spot_path(t)` (urad from boresight as a function of the time since the
emulator was made; by default a slow 40 urad circle, like a residual tracking error) at the
fixed `power_nw`, or, when a `sky` is attached (a simulated pass: sim_backends/sky.py), wherever
the true beacon direction, the mount and the steering mirror put it, with the power the link
budget delivers. Centroid noise falls as the collected signal grows (photon-limited: sigma ~
1 / sqrt(power * exposure)). Outside the cell's linear range, or with no beacon power, the spot
is reported invalid. A long exposure on a bright beacon saturates the cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

from satqkd_runtime.clock import Clock
from sim_backends.emulators.base import LineEmulator

#: clock time (unix s) -> spot centroid x, y (urad) and beacon power (nW) on the cell
SkySpot = Callable[[float], tuple[float, float, float]]

IDENTITY = "SATQKD-LAB,QC-4,SN0031,1.2"


def frame_reply(body: str) -> bytes:
    """Get: a reply line: body, '*', XOR checksum in hex, CR LF (written apart from the driver,
    so a misreading of the format on either side fails the tests)."""
    encoded = body.encode("ascii")
    checksum = reduce(lambda acc, byte: acc ^ byte, encoded, 0)
    return b"%s*%02X\r\n" % (encoded, checksum)


@dataclass(frozen=True)
class SensorResponse:
    """What the cell reports for a spot at (x, y) urad (a hidden truth for calibration): per
    axis offset + gain * x * (1 + cubic * (x / R)^2), R the linear range. A quad cell's
    difference signal flattens towards the edge of its field (cubic < 0)."""

    gain: tuple[float, float] = (1.0, 1.0)
    offset_urad: tuple[float, float] = (0.0, 0.0)
    cubic: tuple[float, float] = (0.0, 0.0)

    def reading(self, x: float, y: float, linear_range_urad: float) -> tuple[float, float]:
        """Get: the reported (x, y) of a true spot position."""
        u, v = x / linear_range_urad, y / linear_range_urad
        return (
            self.offset_urad[0] + self.gain[0] * x * (1.0 + self.cubic[0] * u * u),
            self.offset_urad[1] + self.gain[1] * y * (1.0 + self.cubic[1] * v * v),
        )


def circle_path(radius_urad: float = 40.0, period_s: float = 20.0) -> Callable[[float], tuple]:
    """Get: a spot path circling the boresight."""

    def path(t_s: float) -> tuple[float, float]:
        phase = 2.0 * math.pi * t_s / period_s
        return radius_urad * math.cos(phase), radius_urad * math.sin(phase)

    return path


class QuadCellEmulator(LineEmulator):
    """A quad-cell beacon sensor with a moving, noisy spot."""

    command_terminator = b"\r"
    baudrate = 115200

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        name: str = "beacon",
        spot_path: Callable[[float], tuple[float, float]] | None = None,
        power_nw: float = 40.0,
        linear_range_urad: float = 300.0,
        frame_rate_hz: float = 1000.0,
        centroid_noise_urad_at_ref: float = 0.5,
        saturation_pj: float = 5000.0,
        min_signal_pj: float = 0.4,
        sky: SkySpot | None = None,
        response: SensorResponse | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(name, clock, seed)
        self.response = response or SensorResponse()
        self.spot_path = spot_path or circle_path()
        self.sky = sky
        self.spot_reads = 0
        self.power_nw = power_nw
        self.linear_range_urad = linear_range_urad
        self.frame_rate_hz = frame_rate_hz
        self.centroid_noise_urad_at_ref = centroid_noise_urad_at_ref
        self.saturation_pj = saturation_pj
        self.min_signal_pj = min_signal_pj  # below it the cell sees no spot above its noise
        self.exposure_us = 1000.0
        self.sensor_temperature_c = 31.5
        self._start_unix_s = self.clock.now_unix_s()

    def _collected_pj(self, power_nw: float | None = None) -> float:
        # 1 nW for 1 us is 1e-15 J = 1e-3 pJ
        power = self.power_nw if power_nw is None else power_nw
        return power * self.exposure_us * 1e-3

    def _spot_now(self) -> tuple[float, float, float]:
        now = self.clock.now_unix_s()
        if self.sky is not None:
            x, y, power = self.sky(now)
            self.power_nw = power  # STAT? judges saturation on the same power
            return x, y, power
        x, y = self.spot_path(now - self._start_unix_s)
        return x, y, self.power_nw

    def _centroid(self) -> str:
        self.spot_reads += 1
        elapsed = self.clock.now_unix_s() - self._start_unix_s
        frame = int(elapsed * self.frame_rate_hz)
        x, y, power_nw = self._spot_now()
        collected = self._collected_pj(power_nw)
        valid = (
            collected > 0.0
            and collected >= self.min_signal_pj
            and math.hypot(x, y) <= self.linear_range_urad
        )
        if valid:
            x, y = self.response.reading(x, y, self.linear_range_urad)
            # photon-limited centroid noise, referenced to 40 pJ per exposure
            sigma = self.centroid_noise_urad_at_ref * math.sqrt(40.0 / collected)
            x += float(self._rng.normal(0.0, sigma))
            y += float(self._rng.normal(0.0, sigma))
        else:
            x = y = 0.0
        return f"CEN,{frame},{x:.3f},{y:.3f},{power_nw:.3f},{int(valid)}"

    def respond(self, command: bytes) -> bytes | None:
        """Get: the checksummed reply to one command."""
        try:
            text = command.decode("ascii").strip().upper()
        except UnicodeDecodeError:
            return frame_reply("ERR,1,unknown command")
        if text == "ID?":
            return frame_reply(f"ID,{IDENTITY}")
        if text == "CEN?":
            return frame_reply(self._centroid())
        if text == "EXP?":
            return frame_reply(f"EXP,{self.exposure_us:.1f}")
        if text == "STAT?":
            saturated = self._collected_pj() > self.saturation_pj
            return frame_reply(f"STAT,{self.sensor_temperature_c:.1f},{int(saturated)}")
        if text.startswith("EXP "):
            try:
                value = float(text[4:])
            except ValueError:
                return frame_reply("ERR,2,bad argument")
            if not 10.0 <= value <= 100_000.0:
                return frame_reply("ERR,3,out of range")
            self.exposure_us = value
            return frame_reply("OK")
        return frame_reply("ERR,1,unknown command")
