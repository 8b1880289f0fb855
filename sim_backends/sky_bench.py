"""The truth behind an emulated calibration bench (`satqkd atp calibrate` with emulators): what
the station's mount, steering mirror, beacon sensor and detectors see when they are pointed at
the sky rather than at a satellite.

The hidden truths a calibration must recover live here and in the emulators: the mount's
pointing-model error (sim_backends.sky.MountModel, TPOINT-style terms), the mirror's optical
gain matrix and its response time (GcsMirrorEmulator), the beacon sensor's gain, offset and
non-linearity (QuadCellEmulator's SensorResponse), the quantum receiver's field-stop centre
relative to the beacon sensor's null (the boresight offset) and the refraction of the real
atmosphere (Bennett's formula at the truth's temperature and pressure, which the routine's
prediction does not know exactly).

Targets: a fixed bench source (a distant lamp or collimated laser seen through the telescope:
beacon and quantum wavelengths from one point) and the catalogue stars, whose apparent
directions the application hands in as a function of time (sim_backends never imports the
daemons, which own the catalogue). The beacon sensor sees the target nearest its null inside
its field; the detectors count the bench source's light that passes the receiver's field stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from satqkd_core.errors import InputError
from sim_backends.emulators.scpi import BiasSupplyEmulator
from sim_backends.sky import MountModel, MountReadout, coupling_into_field_stop, mirror_basis

__all__ = ["BenchSource", "CalibrationSky", "LitBiasSupply", "StarField"]

#: clock time -> (n, 3) east-north-up unit vectors of the catalogue stars as the sky shows them
StarDirections = Callable[[float], np.ndarray]
_STAR_GRID_S = 1.0


class MirrorLineOfSight(Protocol):
    """The steering mirror as the truth reads it."""

    def line_of_sight_urad(self, axis_unit_urad: float) -> tuple[float, float]:
        """Measure: the sky (x, y) by which the mirror moves the line of sight now."""
        ...


@dataclass(frozen=True)
class BenchSource:
    """A fixed source on the bench's horizon (a lamp or collimated laser on a distant mast)."""

    az_deg: float
    el_deg: float
    power_nw: float = 40.0

    def direction(self) -> np.ndarray:
        """Get: the source's east-north-up unit vector."""
        az, el = math.radians(self.az_deg), math.radians(self.el_deg)
        return np.array([math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)])


class StarField:
    """Catalogue stars' directions on a 1 s grid, interpolated (stars move 73 urad/s at most;
    the chord of 1 s of that arc is 1e-9 rad off the arc)."""

    def __init__(self, directions: StarDirections, power_nw: float, min_el_deg: float) -> None:
        self.directions = directions
        self.power_nw = power_nw
        self.min_sin_el = math.sin(math.radians(min_el_deg))
        self._cache: dict[int, np.ndarray] = {}

    def at(self, unix_s: float) -> np.ndarray:
        """Get: (n, 3) directions at an instant (stars below the minimum elevation dropped)."""
        k = math.floor(unix_s / _STAR_GRID_S)
        f = unix_s / _STAR_GRID_S - k
        a, b = self._grid(k), self._grid(k + 1)
        v = a * (1.0 - f) + b * f
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v[v[:, 2] >= self.min_sin_el]

    def _grid(self, k: int) -> np.ndarray:
        if k not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[k] = np.asarray(self.directions(k * _STAR_GRID_S), dtype=np.float64)
        return self._cache[k]


class CalibrationSky:
    """What the station's instruments see on a calibration bench (see the module docstring)."""

    def __init__(
        self,
        mount_model: MountModel,
        *,
        source: BenchSource | None,
        stars: StarField | None,
        receiver_offset_urad: tuple[float, float],
        field_of_view_urad: float,
        spot_fwhm_urad: float,
        quantum_rate_cps: float,
        mirror_axis_unit_urad: float = 1000.0,
        sensor_field_urad: float = 300.0,
    ) -> None:
        if not (field_of_view_urad > 0 and spot_fwhm_urad > 0 and quantum_rate_cps >= 0):
            raise InputError("field of view and spot width must be > 0, the rate >= 0")
        self.mount_model = mount_model
        self.source = source
        self.stars = stars
        self.receiver_offset_urad = receiver_offset_urad
        self.field_of_view_urad = field_of_view_urad
        self.spot_fwhm_urad = spot_fwhm_urad
        self.quantum_rate_cps = quantum_rate_cps
        self.mirror_axis_unit_urad = mirror_axis_unit_urad
        self.sensor_field_urad = sensor_field_urad
        self.mount: MountReadout | None = None
        self.mirror: MirrorLineOfSight | None = None

    def attach(self, mount: MountReadout, mirror: MirrorLineOfSight | None) -> None:
        """Control: read the line of sight from these emulators."""
        self.mount, self.mirror = mount, mirror

    def _offsets(self, targets: np.ndarray) -> np.ndarray:
        """(n, 2) sky offsets (urad) of targets from the line of sight, mirror included."""
        if self.mount is None:
            raise InputError("CalibrationSky has no mount attached")
        boresight = np.asarray(self.mount_model.boresight(*self.mount.pointing_deg()))
        e_az, e_el = (np.asarray(v) for v in mirror_basis(tuple(boresight)))
        across = np.stack([targets @ e_az, targets @ e_el], axis=1)
        norm = np.hypot(across[:, 0], across[:, 1])
        angle = np.arctan2(norm, targets @ boresight)
        scale = np.where(norm > 0, angle / np.where(norm > 0, norm, 1.0), 0.0) * 1e6
        offsets = across * scale[:, None]
        if self.mirror is not None:
            offsets = offsets - np.asarray(
                self.mirror.line_of_sight_urad(self.mirror_axis_unit_urad)
            )
        return offsets

    def beacon_spot(self, unix_s: float) -> tuple[float, float, float]:
        """Get: the spot the beacon sensor sees (urad) and its power (nW): the target nearest
        the null within the sensor's field; nothing (power 0) if none is."""
        targets, powers = [], []
        if self.source is not None:
            targets.append(self.source.direction()[None, :])
            powers.append(np.array([self.source.power_nw]))
        if self.stars is not None:
            star_directions = self.stars.at(unix_s)
            targets.append(star_directions)
            powers.append(np.full(star_directions.shape[0], self.stars.power_nw))
        if not targets:
            return 0.0, 0.0, 0.0
        offsets = self._offsets(np.concatenate(targets))
        distance = np.hypot(offsets[:, 0], offsets[:, 1])
        nearest = int(np.argmin(distance))
        if distance[nearest] > self.sensor_field_urad:
            return 0.0, 0.0, 0.0
        return (
            float(offsets[nearest, 0]),
            float(offsets[nearest, 1]),
            float(np.concatenate(powers)[nearest]),
        )

    def quantum_rate(self, unix_s: float) -> float:
        """Get: the bench source's photon rate (counts/s) through the receiver's field stop."""
        if self.source is None:
            return 0.0
        x, y = self._offsets(self.source.direction()[None, :])[0]
        residual = math.hypot(x - self.receiver_offset_urad[0], y - self.receiver_offset_urad[1])
        coupling = coupling_into_field_stop(
            np.array([residual]), self.field_of_view_urad, self.spot_fwhm_urad
        )
        return self.quantum_rate_cps * float(coupling[0])


class LitBiasSupply(BiasSupplyEmulator):
    """The detectors' bias supply with light on its channels: each channel counts its share of
    the photon rate `light(now)` (split evenly, as behind the receiver's four-way analyser)."""

    def __init__(self, *args: object, light: Callable[[float], float], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.light = light

    def advance(self) -> None:
        """Control: cool the channels and set each one's photon rate from the light now."""
        super().advance()
        rate = self.light(self.clock.now_unix_s()) / max(1, self.channel_count)
        for channel in self.channels:
            channel.photon_rate_cps = rate
