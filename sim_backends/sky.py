"""The truth a station's pointing closes on: where the satellite's beacon really is, where the
mount and the steering mirror really point, and what that does to the quantum signal.

Everything here is the simulation's "nature", unknown to the station daemon:

- the apparent direction of the satellite from the station at reception time t: the satellite
  where it was when the light left it, at t - range/c (light time; the one-way aberration the
  ground sees, v_perp / c ~ 25 urad for LEO, observed directly by Kuzkov et al., "Direct
  measurements of laser light aberration from the ARTEMIS geostationary satellite", 2016). The
  station's own rotation with the Earth changes this by omega_earth * range / c ~ 0.2 urad,
  neglected. Refraction is not modelled (truth and prediction share the vacuum geometry);
- the mount's pointing-model error: encoder zero points of both axes and a tilt of the azimuth
  axis (the IA, IE, AN/AW terms of P. T. Wallace's TPOINT model, TPOINT manual sec. 2.1),
  applied rigorously as a rotation, drawn once from the scenario seed;
- atmospheric tip/tilt (angle of arrival): a stationary Gaussian process per axis whose power
  spectrum is flat below a corner frequency and falls as f^-11/3 above it, the high-frequency
  slope of G-tilt (Tyler, JOSA A 11, 358 (1994)), with variance growing with airmass (r0^-5/3
  is proportional to sec z; Fried, JOSA 56, 1372 (1966));
- the spot on the beacon sensor and the residual at the quantum receiver's field stop, in the
  sign conventions of the ATP contract: +x = the target is further in azimuth (times cos el)
  than the line of sight, +y = higher in elevation; the mirror's tip moves the line of sight
  by +x, its tilt by +y, 1 urad on the sky per urad of command;
- the coupling of the received spot (a Gaussian of the seeing-limited width) through a circular
  field stop of the receiver's field of view, offset by the residual: the encircled energy of an
  offset 2-D Gaussian, 1 - Q1(r / sigma, R / sigma) with Marcum's Q function (e.g. Simon,
  "Probability distributions involving Gaussian random variables", 2002, sec. 4.2), integrated
  across the stop with erf for the inner axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numba
import numpy as np

from satqkd_core.ephemeris import Station, StationTrack, topocentric
from satqkd_core.errors import InputError

__all__ = [
    "ApparentTarget",
    "MountModel",
    "SkySamples",
    "StationSky",
    "TipTiltSeries",
    "coupling_into_field_stop",
    "field_stop_coupling",
    "field_stop_coupling_reference",
    "mirror_basis",
    "sky_offset_urad",
]

_SPEED_OF_LIGHT_M_S = 299_792_458.0
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SIMPSON_INTERVALS = 200  # over at most 20 sigma of the spot
_GAUSS_REACH_SIGMA = 10.0  # exp(-50): nothing of the spot lies further out
_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _number(value: object, name: str, *, positive: bool = False, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    if positive and (value < 0.0 or (value == 0.0 and not allow_zero)):
        raise InputError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


# --- field-stop coupling -------------------------------------------------------------------------


@numba.njit(cache=True)
def _encircled(a: float, b: float) -> float:
    """P(|z + (a, 0)| <= b) for z a standard 2-D normal. Across the stop at u = b sin(t) the
    inner integral over the other axis is erf(b cos(t) / sqrt 2), so
    P = integral over t of phi(b sin t - a) erf(b cos t / sqrt 2) b cos t dt, a smooth
    integrand, by Simpson's rule where phi is not negligible."""
    if b <= 0.0:
        return 0.0
    low = max(-1.0, (a - _GAUSS_REACH_SIGMA) / b)
    high = min(1.0, (a + _GAUSS_REACH_SIGMA) / b)
    if high <= low:
        return 0.0
    t_low, t_high = math.asin(low), math.asin(high)
    n = _SIMPSON_INTERVALS
    h = (t_high - t_low) / n
    total = 0.0
    for k in range(n + 1):
        t = t_low + k * h
        across = b * math.cos(t)
        value = math.exp(-0.5 * (b * math.sin(t) - a) ** 2) * math.erf(across / _SQRT2) * across
        weight = 1.0 if k == 0 or k == n else (4.0 if k % 2 == 1 else 2.0)
        total += weight * value
    return min(1.0, total * h / 3.0 / _SQRT_2PI)


@numba.njit(cache=True)
def field_stop_coupling(
    offset_urad: np.ndarray, stop_radius_urad: float, spot_sigma_urad: float
) -> np.ndarray:
    """Get the fraction of a Gaussian spot (per-axis sigma) inside a circular stop, per offset."""
    out = np.empty(offset_urad.shape[0])
    for i in range(offset_urad.shape[0]):
        out[i] = _encircled(offset_urad[i] / spot_sigma_urad, stop_radius_urad / spot_sigma_urad)
    return out


def field_stop_coupling_reference(
    offset_urad: np.ndarray, stop_radius_urad: float, spot_sigma_urad: float
) -> np.ndarray:
    """Get the same fractions as field_stop_coupling in plain Python."""
    out = []
    b = stop_radius_urad / spot_sigma_urad
    for offset in offset_urad:
        a = float(offset) / spot_sigma_urad
        low, high = max(-1.0, (a - _GAUSS_REACH_SIGMA) / b), min(1.0, (a + _GAUSS_REACH_SIGMA) / b)
        if high <= low:
            out.append(0.0)
            continue
        t_low, t_high = math.asin(low), math.asin(high)
        h = (t_high - t_low) / _SIMPSON_INTERVALS
        values = []
        for k in range(_SIMPSON_INTERVALS + 1):
            t = t_low + k * h
            across = b * math.cos(t)
            phi = math.exp(-0.5 * (b * math.sin(t) - a) ** 2)
            values.append(phi * math.erf(across / math.sqrt(2.0)) * across)
        simpson = values[0] + values[-1] + 4.0 * sum(values[1:-1:2]) + 2.0 * sum(values[2:-1:2])
        out.append(min(1.0, simpson * h / 3.0 / math.sqrt(2.0 * math.pi)))
    return np.array(out, dtype=np.float64)


def coupling_into_field_stop(
    offset_urad: np.ndarray, field_of_view_urad: float, spot_fwhm_urad: float
) -> np.ndarray:
    """Get the fraction of the received spot (Gaussian of the given FWHM) that passes a field
    stop of the given full-angle field of view, for each residual pointing offset (urad)."""
    offsets = np.ascontiguousarray(np.asarray(offset_urad, dtype=np.float64))
    if offsets.ndim != 1:
        raise InputError(f"offset_urad must be a 1-D array, got shape {offsets.shape}")
    if offsets.size and (not np.all(np.isfinite(offsets)) or np.any(offsets < 0.0)):
        raise InputError("offset_urad must be finite and >= 0 (offset magnitudes)")
    fov = _number(field_of_view_urad, "field_of_view_urad", positive=True, allow_zero=False)
    fwhm = _number(spot_fwhm_urad, "spot_fwhm_urad", positive=True, allow_zero=False)
    return field_stop_coupling(offsets, fov / 2.0, fwhm / _FWHM_PER_SIGMA)


def _airmass(elevation_deg: float) -> float:
    """Relative airmass, Kasten & Young, Appl. Opt. 28, 4735 (1989) eq. 3 (as sim_backends.link)."""
    h = elevation_deg
    return 1.0 / (math.sin(math.radians(h)) + 0.50572 * (h + 6.07995) ** -1.6364)


# --- directions --------------------------------------------------------------------------------


# Directions are (east, north, up) tuples of floats: evaluated a few hundred thousand times in
# a pass, one at a time, where small numpy arrays would cost more than the arithmetic.
Vector = tuple[float, float, float]


def _enu(az_rad: float, el_rad: float) -> Vector:
    cos_el = math.cos(el_rad)
    return cos_el * math.sin(az_rad), cos_el * math.cos(az_rad), math.sin(el_rad)


def _dot(a: Vector, b: Vector) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def mirror_basis(direction: Vector) -> tuple[Vector, Vector]:
    """Get the unit vectors of increasing azimuth (x) and elevation (y) at a direction (ENU)."""
    east, north, up = (float(c) for c in direction)
    horizontal = math.hypot(east, north)
    if horizontal < 1e-12:  # the zenith: azimuth undefined, take north as its zero
        return (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    sin_az, cos_az = east / horizontal, north / horizontal
    return (cos_az, -sin_az, 0.0), (-up * sin_az, -up * cos_az, horizontal)


def sky_offset_urad(target: Vector, boresight: Vector) -> tuple[float, float]:
    """Get a target's (x, y) angles around a boresight in urad: +x towards increasing azimuth,
    +y towards increasing elevation (azimuthal equidistant: the exact separation at any
    distance, the gnomonic tangent-plane value to 1e-8 inside a field of view)."""
    e_az, e_el = mirror_basis(boresight)
    across_x, across_y = _dot(target, e_az), _dot(target, e_el)
    across = math.hypot(across_x, across_y)
    if across == 0.0:
        return 0.0, 0.0
    scale = math.atan2(across, _dot(target, boresight)) / across * 1e6
    return across_x * scale, across_y * scale


@dataclass(frozen=True)
class MountModel:
    """A mount's pointing-model error: encoder zero points and a tilt of the azimuth axis
    towards an azimuth (TPOINT's IA, IE and AN/AW, applied as rotations)."""

    az_zero_urad: float = 0.0
    el_zero_urad: float = 0.0
    axis_tilt_urad: float = 0.0
    axis_tilt_towards_az_deg: float = 0.0
    # collimation (CA), elevation axis not at right angles to the azimuth axis (NPAE), tube
    # flexure (TF): the azimuth moves by CA / cos E and NPAE tan E, the elevation by TF cos E
    collimation_urad: float = 0.0
    non_perpendicularity_urad: float = 0.0
    tube_flexure_urad: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "az_zero_urad",
            "el_zero_urad",
            "axis_tilt_towards_az_deg",
            "collimation_urad",
            "non_perpendicularity_urad",
            "tube_flexure_urad",
        ):
            _number(getattr(self, name), f"MountModel.{name}")
        _number(self.axis_tilt_urad, "MountModel.axis_tilt_urad", positive=True)

    @classmethod
    def from_seed(cls, seed: int, zero_point_rms_urad: float, axis_tilt_urad: float) -> MountModel:
        """Get a mount drawn from a seed: Gaussian zero points, a tilt towards a random azimuth."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"seed must be an integer, got {seed!r}")
        rms = _number(zero_point_rms_urad, "zero_point_rms_urad", positive=True)
        tilt = _number(axis_tilt_urad, "axis_tilt_urad", positive=True)
        draw = np.random.default_rng(int(seed))
        az_zero, el_zero = draw.normal(0.0, rms, size=2) if rms > 0 else (0.0, 0.0)
        return cls(float(az_zero), float(el_zero), tilt, float(draw.uniform(0.0, 360.0)))

    def tpoint_terms_urad(self) -> dict[str, float]:
        """Get: this mount's terms in the convention of satqkd_ogs.calibration.pointing_model
        (true line of sight minus encoder; the tilt towards azimuth phi is AN = -tilt cos phi,
        AW = -tilt sin phi), what a fitted pointing model should recover."""
        towards = math.radians(self.axis_tilt_towards_az_deg)
        return {
            "IA": self.az_zero_urad,
            "IE": self.el_zero_urad,
            "CA": self.collimation_urad,
            "NPAE": self.non_perpendicularity_urad,
            "AN": -self.axis_tilt_urad * math.cos(towards),
            "AW": -self.axis_tilt_urad * math.sin(towards),
            "TF": self.tube_flexure_urad,
        }

    def boresight(self, az_deg: float, el_deg: float) -> Vector:
        """Get the true direction (ENU unit vector) of a mount whose encoders read (az, el)."""
        el_rad = math.radians(el_deg)
        az_urad = self.az_zero_urad
        el_urad = self.el_zero_urad
        if self.collimation_urad or self.non_perpendicularity_urad or self.tube_flexure_urad:
            cos_el = max(math.cos(el_rad), 1e-3)
            az_urad += (
                self.collimation_urad + self.non_perpendicularity_urad * math.sin(el_rad)
            ) / cos_el
            el_urad += self.tube_flexure_urad * math.cos(el_rad)
        v = _enu(math.radians(az_deg) + az_urad * 1e-6, el_rad + el_urad * 1e-6)
        theta = self.axis_tilt_urad * 1e-6
        if theta == 0.0:
            return v
        # the azimuth axis leans by theta towards axis_tilt_towards_az: a rotation about the
        # horizontal axis k at right angles to that azimuth (Rodrigues' formula; k x up points
        # towards the azimuth)
        towards = math.radians(self.axis_tilt_towards_az_deg)
        kx, ky = -math.cos(towards), math.sin(towards)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        k_dot_v = kx * v[0] + ky * v[1]
        cross = (ky * v[2], -kx * v[2], kx * v[1] - ky * v[0])
        return (
            v[0] * cos_t + cross[0] * sin_t + kx * k_dot_v * (1.0 - cos_t),
            v[1] * cos_t + cross[1] * sin_t + ky * k_dot_v * (1.0 - cos_t),
            v[2] * cos_t + cross[2] * sin_t,
        )


@dataclass(frozen=True)
class ApparentTarget:
    """The satellite's apparent direction from the station on a fine time grid (ENU unit
    vectors at reception times, light time included), interpolated in between."""

    start_unix_s: float
    step_s: float
    directions: np.ndarray  # (n, 3)
    elevation_deg: np.ndarray  # (n,) apparent elevation
    range_m: np.ndarray  # (n,)

    @classmethod
    def from_tle(
        cls,
        tle: tuple[str, str],
        station: Station | StationTrack,
        start_unix_s: float,
        stop_unix_s: float,
        step_s: float = 0.02,
    ) -> ApparentTarget:
        """Get the apparent direction over [start, stop]; the satellite is taken where it was
        range/c before each reception instant (one fixed-point step: error ~ 1e-5 of it)."""
        start = _number(start_unix_s, "start_unix_s")
        stop = _number(stop_unix_s, "stop_unix_s")
        step = _number(step_s, "step_s", positive=True, allow_zero=False)
        if not stop > start:
            raise InputError(f"stop_unix_s must be after start_unix_s, got {start} .. {stop}")
        n = math.ceil((stop - start) / step) + 2
        received = start + step * np.arange(n)
        geometric = topocentric(tle[0], tle[1], station, received)
        emitted = received - geometric.range_m / _SPEED_OF_LIGHT_M_S
        apparent = topocentric(tle[0], tle[1], station, emitted)
        az = np.radians(apparent.azimuth_deg)
        el = np.radians(apparent.elevation_deg)
        directions = np.stack([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)], 1)
        return cls(start, step, directions, apparent.elevation_deg.copy(), apparent.range_m.copy())

    def _index(self, unix_s: float) -> tuple[int, float]:
        position = (unix_s - self.start_unix_s) / self.step_s
        last = self.directions.shape[0] - 1
        if not 0.0 <= position <= last:
            raise InputError(
                f"unix_s {unix_s} is outside the target grid "
                f"{self.start_unix_s} .. {self.start_unix_s + last * self.step_s}"
            )
        k = min(int(position), last - 1)
        return k, position - k

    def direction(self, unix_s: float) -> Vector:
        """Get the apparent direction at a reception instant (linear between grid points, then
        normalised: < 0.02 urad for 0.02 s steps at LEO angular rates)."""
        k, f = self._index(unix_s)
        a, b = self.directions[k], self.directions[k + 1]
        g = 1.0 - f
        x, y, z = (
            float(a[0]) * g + float(b[0]) * f,
            float(a[1]) * g + float(b[1]) * f,
            float(a[2]) * g + float(b[2]) * f,
        )
        norm = math.sqrt(x * x + y * y + z * z)
        return x / norm, y / norm, z / norm

    def elevation_at(self, unix_s: float) -> float:
        """Get the apparent elevation (deg) at a reception instant (linear interpolation)."""
        k, f = self._index(unix_s)
        return float(self.elevation_deg[k] * (1.0 - f) + self.elevation_deg[k + 1] * f)


@dataclass(frozen=True)
class TipTiltSeries:
    """Atmospheric angle of arrival per axis, unit variance at zenith, on a regular grid."""

    start_unix_s: float
    step_s: float
    xy: np.ndarray  # (2, n)

    @classmethod
    def generate(
        cls, seed: int, start_unix_s: float, duration_s: float, corner_hz: float, step_s: float
    ) -> TipTiltSeries:
        """Get a seeded series by Fourier synthesis of the spectrum (1 + (f/fc)^2)^(-11/6),
        scaled to unit expected variance (per axis, independent axes)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"seed must be an integer, got {seed!r}")
        duration = _number(duration_s, "duration_s", positive=True, allow_zero=False)
        corner = _number(corner_hz, "corner_hz", positive=True, allow_zero=False)
        step = _number(step_s, "step_s", positive=True, allow_zero=False)
        if corner >= 0.5 / step:
            raise InputError(f"corner_hz {corner} must be below the grid's Nyquist {0.5 / step}")
        n = math.ceil(duration / step) + 2
        n_fft = 1 << max(1, (n - 1).bit_length())
        f = np.fft.rfftfreq(n_fft, step)
        amplitude = (1.0 + (f / corner) ** 2) ** (-11.0 / 12.0)
        amplitude[0] = 0.0  # zero mean: a constant offset is the mount model's business
        # variance of irfft of circular normal coefficients with E|C_k|^2 = A_k^2
        variance = (2.0 * np.sum(amplitude[1:-1] ** 2) + amplitude[-1] ** 2) / n_fft**2
        draw = np.random.default_rng(int(seed))
        xy = np.empty((2, n))
        for axis in range(2):
            coefficients = amplitude * (
                draw.standard_normal(f.size) + 1j * draw.standard_normal(f.size)
            )
            coefficients /= math.sqrt(2.0)
            coefficients[-1] = amplitude[-1] * draw.standard_normal()  # Nyquist term is real
            xy[axis] = np.fft.irfft(coefficients, n_fft)[:n] / math.sqrt(variance)
        return cls(float(start_unix_s), step, xy)

    def at(self, unix_s: float) -> tuple[float, float]:
        """Get (x, y) at an instant (linear interpolation; held at the ends of the grid)."""
        position = (unix_s - self.start_unix_s) / self.step_s
        last = self.xy.shape[1] - 1
        position = min(max(position, 0.0), float(last))
        k = min(int(position), last - 1)
        f = position - k
        x = self.xy[0, k] * (1.0 - f) + self.xy[0, k + 1] * f
        y = self.xy[1, k] * (1.0 - f) + self.xy[1, k + 1] * f
        return float(x), float(y)


# --- the station's sky -------------------------------------------------------------------------


class MountReadout(Protocol):
    """Where the mount's encoders are now (the gimbal emulator answers this)."""

    def pointing_deg(self) -> tuple[float, float]:
        """Measure: the axes' (az, el) encoder angles in degrees."""
        ...


class MirrorReadout(Protocol):
    """Where the steering mirror is now (the mirror emulator answers this)."""

    def positions(self) -> tuple[float, ...]:
        """Measure: the (tip, tilt, ...) axis positions in the controller's axis unit."""
        ...


class SkySamples:
    """Truth samples in growing arrays (no Python object per sample)."""

    COLUMNS = ("unix_s", "spot_x_urad", "spot_y_urad", "residual_urad", "beacon_power_nw")

    def __init__(self) -> None:
        self._data = np.zeros((len(self.COLUMNS), 1024))
        self._n = 0

    def append(self, *values: float) -> None:
        """Control: add one sample (values in COLUMNS order)."""
        if self._n == self._data.shape[1]:
            grown = np.zeros((self._data.shape[0], 2 * self._n))
            grown[:, : self._n] = self._data
            self._data = grown
        self._data[:, self._n] = values
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def column(self, name: str) -> np.ndarray:
        """Get: one column (a view of the samples so far)."""
        return self._data[self.COLUMNS.index(name), : self._n]


@dataclass(frozen=True)
class BeaconLink:
    """The beacon power reaching the station's sensor over the pass (nW on a regular time
    grid), and when the satellite's beacon is on."""

    unix_s: np.ndarray
    power_nw: np.ndarray
    on_unix_s: float
    off_unix_s: float

    def __post_init__(self) -> None:
        times = np.asarray(self.unix_s, dtype=np.float64)
        if times.ndim != 1 or times.size < 2 or np.asarray(self.power_nw).shape != times.shape:
            raise InputError("BeaconLink needs >= 2 grid instants and one power per instant")
        steps = np.diff(times)
        if not np.all(steps > 0) or np.ptp(steps) > 1e-9 * steps[0]:
            raise InputError("BeaconLink.unix_s must be a regular increasing grid")
        if np.any(~np.isfinite(self.power_nw)) or np.any(np.asarray(self.power_nw) < 0.0):
            raise InputError("BeaconLink.power_nw must be finite and >= 0")

    def power_at(self, unix_s: float) -> float:
        """Get the beacon power at the sensor (nW): zero while the beacon is off or set."""
        if not self.on_unix_s <= unix_s <= self.off_unix_s:
            return 0.0
        position = (unix_s - float(self.unix_s[0])) / float(self.unix_s[1] - self.unix_s[0])
        last = self.unix_s.size - 1
        if not 0.0 <= position <= last:
            return 0.0
        k = min(int(position), last - 1)
        f = position - k
        return float(self.power_nw[k]) * (1.0 - f) + float(self.power_nw[k + 1]) * f


class StationSky:
    """The truth of one station's pointing, read from the mount and mirror emulators."""

    def __init__(
        self,
        target: ApparentTarget,
        mount_model: MountModel,
        tip_tilt: TipTiltSeries,
        tip_tilt_rms_urad_zenith: float,
        beacon: BeaconLink,
        field_of_view_urad: float,
        spot_fwhm_urad: float,
        receiver_offset_urad: tuple[float, float] = (0.0, 0.0),
        mirror_axis_unit_urad: float = 1000.0,
    ) -> None:
        self.target = target
        self.mount_model = mount_model
        self.tip_tilt = tip_tilt
        self.tip_tilt_rms_urad_zenith = _number(
            tip_tilt_rms_urad_zenith, "tip_tilt_rms_urad_zenith", positive=True
        )
        self.beacon = beacon
        self.field_of_view_urad = _number(
            field_of_view_urad, "field_of_view_urad", positive=True, allow_zero=False
        )
        self.spot_fwhm_urad = _number(
            spot_fwhm_urad, "spot_fwhm_urad", positive=True, allow_zero=False
        )
        self.receiver_offset_urad = (
            _number(receiver_offset_urad[0], "receiver_offset_urad[0]"),
            _number(receiver_offset_urad[1], "receiver_offset_urad[1]"),
        )
        self.mirror_axis_unit_urad = _number(
            mirror_axis_unit_urad, "mirror_axis_unit_urad", positive=True, allow_zero=False
        )
        self.mount: MountReadout | None = None
        self.mirror: MirrorReadout | None = None
        self.samples = SkySamples()

    def covers(self, unix_s: float) -> bool:
        """Get: whether the truth is known at an instant (inside the target's time grid)."""
        last = self.target.start_unix_s + self.target.step_s * (self.target.directions.shape[0] - 1)
        return self.target.start_unix_s <= unix_s <= last

    def attach(self, mount: MountReadout | None, mirror: MirrorReadout | None) -> None:
        """Control: read the line of sight from these emulators (None: absent instrument)."""
        self.mount, self.mirror = mount, mirror

    def spot_urad(self, unix_s: float) -> tuple[float, float]:
        """Get the true beacon spot (x, y) relative to the line of sight, noise-free."""
        if self.mount is None:
            raise InputError("StationSky has no mount attached: the line of sight is unknown")
        x, y = sky_offset_urad(
            self.target.direction(unix_s),
            self.mount_model.boresight(*self.mount.pointing_deg()),
        )
        if self.mirror is not None:
            tip, tilt = self.mirror.positions()[:2]
            x -= tip * self.mirror_axis_unit_urad
            y -= tilt * self.mirror_axis_unit_urad
        if self.tip_tilt_rms_urad_zenith > 0.0:
            elevation = max(self.target.elevation_at(unix_s), 0.0)
            scale = self.tip_tilt_rms_urad_zenith * math.sqrt(_airmass(elevation))
            ax, ay = self.tip_tilt.at(unix_s)
            x, y = x + scale * ax, y + scale * ay
        return x, y

    def beacon_spot(self, unix_s: float) -> tuple[float, float, float]:
        """Get what the beacon sensor sees: the true spot (urad) and the beacon power (nW);
        no power below the horizon, while the satellite's beacon is off, or outside the pass."""
        if not self.covers(unix_s):
            return 0.0, 0.0, 0.0
        x, y = self.spot_urad(unix_s)
        power = 0.0 if self.target.elevation_at(unix_s) < 0.0 else self.beacon.power_at(unix_s)
        return x, y, power

    def sample(self, unix_s: float) -> None:
        """Control: record the truth now (spot, residual at the quantum receiver, power)."""
        x, y, power = self.beacon_spot(unix_s)
        residual = math.hypot(x - self.receiver_offset_urad[0], y - self.receiver_offset_urad[1])
        self.samples.append(unix_s, x, y, residual, power)

    def coupling(self, residual_urad: np.ndarray) -> np.ndarray:
        """Get the field-stop coupling for residual offsets (urad)."""
        return coupling_into_field_stop(residual_urad, self.field_of_view_urad, self.spot_fwhm_urad)

    def mean_coupling(self, start_unix_s: float, stop_unix_s: float) -> float:
        """Get the coupling averaged over the samples in [start, stop) (1 if there are none:
        the sampler has not run, as when no mount is in the loop)."""
        t = self.samples.column("unix_s")
        lo, hi = np.searchsorted(t, [start_unix_s, stop_unix_s], side="left")
        if hi <= lo:
            return 1.0
        residual = np.ascontiguousarray(self.samples.column("residual_urad")[lo:hi])
        return float(np.mean(self.coupling(residual)))

    def tracking_summary(self, aos_unix_s: float, los_unix_s: float) -> dict[str, float | bool]:
        """Get the truth figures of the pass: acquisition (first instant after AOS from which
        the residual stays inside the field stop for a second), rms residual at the receiver
        and at the beacon sensor from then on, and the fraction of samples inside the stop;
        samples in [AOS, LOS) (at LOS the station makes safe: its park is no tracking)."""
        t = self.samples.column("unix_s")
        keep = (t >= aos_unix_s) & (t < los_unix_s)
        t = t[keep]
        residual = self.samples.column("residual_urad")[keep]
        spot = np.hypot(
            self.samples.column("spot_x_urad")[keep], self.samples.column("spot_y_urad")[keep]
        )
        inside = residual <= self.field_of_view_urad / 2.0
        acquired_at = _first_stable(t, inside, hold_s=1.0)
        if acquired_at is None:
            span = slice(0, t.size)
            acquisition_s = float(los_unix_s - aos_unix_s)
        else:
            span = slice(acquired_at, t.size)
            acquisition_s = float(t[acquired_at] - aos_unix_s)
        tracked = residual[span]
        return {
            "acquired": acquired_at is not None,
            "acquisition_time_s": acquisition_s,
            "tracking_rms_urad": float(np.sqrt(np.mean(tracked**2))) if tracked.size else 0.0,
            "fine_residual_rms_urad": (
                float(np.sqrt(np.mean(spot[span] ** 2))) if tracked.size else 0.0
            ),
            "inside_field_of_view_fraction": float(np.mean(inside)) if inside.size else 0.0,
        }


def _first_stable(t: np.ndarray, inside: np.ndarray, hold_s: float) -> int | None:
    """Get the index of the first sample from which `inside` holds for `hold_s` (or to the end
    of the samples), None if there is none."""
    outside_t = t[~inside]
    for index in np.flatnonzero(inside):
        later = np.searchsorted(outside_t, t[index], side="right")
        if later >= outside_t.size or outside_t[later] > t[index] + hold_s:
            return int(index)
    return None
