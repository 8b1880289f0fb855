"""What every calibration routine shares: the station's instruments on the bench, the routine's
settings, its result, and the moves every routine makes (mount moves that settle, averaged
beacon spots, nulling the bench source with the mount).

Every instrument is reached through its driver interface (drivers.interfaces), so the same
routine runs against the wire-level emulators and against the real mount, mirror, sensor and
detectors. Time comes from the injected clock: `sleep_until` of a simulated bench moves time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers.interfaces import BeaconSensor, FastSteeringMirror, Gimbal, PhotonDetector
from satqkd_ogs.calibration.calibration_file import StationCalibration
from satqkd_ogs.pointing import URAD_PER_DEG, SpiralScan, sky_offset_to_mount_deg
from satqkd_ogs.settings import AtpSettings
from satqkd_runtime.clock import Clock

__all__ = [
    "CalibrationBench",
    "CalibrationError",
    "Fitted",
    "RoutineResult",
    "RoutineSettings",
]


class CalibrationError(RuntimeError):
    """A routine cannot go on (missing instrument, no source in view, a fit that fails); the
    message is one line for the user."""


@dataclass(frozen=True)
class RoutineSettings:
    """How a routine drives the bench (defaults suit a telescope mount and a piezo mirror)."""

    #: where the bench source is, in encoder degrees (None: wherever the mount points now)
    source_az_deg: float | None = None
    source_el_deg: float | None = None
    settle_s: float = 0.5  # after a mount move of a few urad
    spot_reads: int = 8  # averaged per point
    spot_period_s: float = 0.01
    # pointing model: stars, their elevation range, the refraction model's atmosphere
    stars: int = 24
    min_el_deg: float = 20.0
    max_el_deg: float = 80.0
    temperature_c: float = 10.0
    pressure_mbar: float | None = None  # None: the standard atmosphere at the station's height
    # mirror: step amplitude, sampling of the step response and of the sweep
    mirror_step_urad: float = 40.0
    mirror_sample_s: float = 2.5e-4
    sweep_hz: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
    sweep_cycles: int = 3
    # tracking bandwidth: disturbance amplitude and frequencies as fractions of the loop rate
    disturbance_urad: float = 10.0
    disturbance_fractions: tuple[float, ...] = (0.03, 0.06, 0.1, 0.16, 0.25, 0.4)
    # boresight scan: half width and step of the mirror grid (urad on the sky)
    scan_half_width_urad: float = 60.0
    scan_step_urad: float = 10.0
    count_dwell_s: float = 1.0


@dataclass
class Fitted:
    """One fitted value with its standard uncertainty."""

    value: float
    uncertainty: float
    unit: str

    def as_dict(self) -> dict[str, float | str]:
        """Get: the JSON form."""
        return {"value": self.value, "uncertainty": self.uncertainty, "unit": self.unit}


@dataclass
class RoutineResult:
    """What a routine found: the calibration file's section, the fitted values, residuals, the
    measurements used, and the plots to draw from them."""

    routine: str
    section_name: str
    section: dict[str, Any]
    fitted: dict[str, Fitted]
    residual_rms: dict[str, float]
    measurements: dict[str, Any]
    plots: dict[str, Callable[[Any], None]] = field(default_factory=dict)


@dataclass
class CalibrationBench:
    """The station's instruments a routine drives (each may be absent) and its clock."""

    clock: Clock
    gimbal: Gimbal | None = None
    fsm: FastSteeringMirror | None = None
    beacon: BeaconSensor | None = None
    detectors: PhotonDetector | None = None
    atp: AtpSettings = field(default_factory=AtpSettings)
    #: the station's calibration so far (another routine's results), if any
    prior: StationCalibration | None = None
    detector_channels: int = 4
    detector_bias_v: float = 60.0
    detector_max_temperature_c: float = -20.0

    def require(self, routine: str, *names: str) -> None:
        """Control: stop with one line if an instrument the routine needs is not on the bench."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise CalibrationError(
                f"{routine} needs the bench's {' and '.join(missing)} (add it to the bench file)"
            )

    async def detectors_on(self) -> None:
        """Control: bias and gate every detector channel, once all are cold enough."""
        assert self.detectors is not None
        for channel in range(1, self.detector_channels + 1):
            temperature = await self.detectors.temperature(channel)
            if temperature > self.detector_max_temperature_c:
                raise CalibrationError(
                    f"detector channel {channel} at {temperature:.1f} C, above the "
                    f"{self.detector_max_temperature_c:g} C limit: let the coolers settle"
                )
        for channel in range(1, self.detector_channels + 1):
            await self.detectors.set_bias(channel, self.detector_bias_v)
            await self.detectors.set_gate(channel, True)

    async def detectors_off(self) -> None:
        """Control: gates off, then bias to zero (always tried)."""
        assert self.detectors is not None
        for channel in range(1, self.detector_channels + 1):
            await self.detectors.set_gate(channel, False)
            await self.detectors.set_bias(channel, 0.0)

    async def wait(self, seconds: float) -> None:
        """Control: let `seconds` of clock time pass."""
        await self.clock.sleep_until(self.clock.now_unix_s() + seconds)

    async def spot(self, reads: int, period_s: float) -> tuple[float, float, int]:
        """Measure: the mean (x, y) of the valid spots among `reads` reads, and how many were
        valid (0: the mean is nan)."""
        assert self.beacon is not None
        xs, ys = [], []
        for k in range(reads):
            if k:
                await self.wait(period_s)
            spot = await self.beacon.read_spot()
            if spot.valid:
                xs.append(spot.x_urad)
                ys.append(spot.y_urad)
        if not xs:
            return math.nan, math.nan, 0
        return float(np.mean(xs)), float(np.mean(ys)), len(xs)

    async def centre_mirror(self) -> None:
        """Control: close the mirror's servo and centre it (if the bench has one)."""
        if self.fsm is not None:
            await self.fsm.set_servo(True)
            await self.fsm.move_to(0.0, 0.0)

    async def move_mount(
        self, az_deg: float, el_deg: float, settle_s: float
    ) -> tuple[float, float]:
        """Control: move the mount, wait until it reads the target (within 1e-4 deg, up to
        120 s), then `settle_s` more; returns the encoder position read."""
        assert self.gimbal is not None
        await self.gimbal.move_to(az_deg, el_deg)
        deadline = self.clock.now_unix_s() + 120.0
        while True:
            position = await self.gimbal.position()
            if max(abs(position[0] - az_deg), abs(position[1] - el_deg)) <= 1e-4:
                break
            if self.clock.now_unix_s() > deadline:
                raise CalibrationError(
                    f"the mount did not reach az {az_deg:.4f} el {el_deg:.4f} deg in 120 s"
                )
            await self.wait(0.1)
        await self.wait(settle_s)
        return await self.gimbal.position()

    async def find_source(self, settings: RoutineSettings, *, null: bool) -> tuple[float, float]:
        """Control: point the mount at the bench source (slew to where it is said to be, spiral
        for it if the sensor does not see it), then, if `null`, centre it on the beacon sensor
        by moving the mount; returns the mount's encoder position."""
        assert self.gimbal is not None and self.beacon is not None
        await self.centre_mirror()
        if settings.source_az_deg is not None and settings.source_el_deg is not None:
            az, el = await self.move_mount(
                settings.source_az_deg, settings.source_el_deg, settings.settle_s
            )
        else:
            az, el = await self.gimbal.position()
        x, y, n = await self.spot(settings.spot_reads, settings.spot_period_s)
        spiral = SpiralScan(
            self.atp.acquisition_field_of_view_urad,
            self.atp.spiral_scan_rate_urad_per_s,
            1.0,
            self.atp.initial_pointing_uncertainty_urad,
        )
        sample, base = 1, (az, el)
        while n == 0:
            if sample >= spiral.samples_per_cycle:
                raise CalibrationError(
                    "no source in the beacon sensor's field within "
                    f"{self.atp.initial_pointing_uncertainty_urad:.0f} urad: point the mount at "
                    "the calibration source (or give its az/el) and try again"
                )
            dx, dy = spiral.offset(sample)
            daz, del_ = sky_offset_to_mount_deg(dx, dy, base[1])
            az, el = await self.move_mount(base[0] + daz, base[1] + del_, settings.settle_s)
            x, y, n = await self.spot(settings.spot_reads, settings.spot_period_s)
            sample += 1
        if not null:
            return az, el
        for _ in range(8):
            if math.hypot(x, y) < 2.0:
                break
            daz, del_ = sky_offset_to_mount_deg(x, y, el)
            az, el = await self.move_mount(az + daz, el + del_, settings.settle_s)
            x, y, n = await self.spot(settings.spot_reads, settings.spot_period_s)
            if n == 0:
                raise CalibrationError("the source left the beacon sensor's field while nulling")
        return az, el


def sky_step_deg(x_urad: float, y_urad: float, el_deg: float) -> tuple[float, float]:
    """Get: the mount move (deg) for a sky step (urad) at an elevation."""
    return sky_offset_to_mount_deg(x_urad, y_urad, el_deg)


def mount_sky_offset_urad(
    az_deg: float, el_deg: float, ref_az_deg: float, ref_el_deg: float
) -> tuple[float, float]:
    """Get: the sky (x, y) in urad from one encoder position to another (small angles)."""
    daz = (az_deg - ref_az_deg + 180.0) % 360.0 - 180.0
    return daz * math.cos(math.radians(ref_el_deg)) * URAD_PER_DEG, (
        el_deg - ref_el_deg
    ) * URAD_PER_DEG
