"""Downlink budget, one term per loss mechanism, per time step of a pass geometry.

All losses are in dB, positive = loss. The transmittance excludes detector efficiency (the
detector model applies it). Formulas: Gaussian-beam collection and pointing (PHYSICS.md; e.g.
Bourgoin et al., New J. Phys. 15, 023006 (2013), sec. 3), curved-atmosphere airmass of Kasten &
Young, Appl. Opt. 28, 4735 (1989), log-normal fading (Andrews & Phillips, Laser Beam
Propagation through Random Media, 2nd ed., ch. 8 and 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from satqkd_core.ephemeris import Geometry
from satqkd_core.errors import InputError
from sim_backends.atmosphere import (
    ATMOSPHERE_SEASONS,
    daylight_radiance_w_m2_sr_nm,
    downlink_long_term_spread,
    field_stop_coupling_of_seeing,
    slant_transmittance,
)
from sim_backends.cloud_climatology import OVERCAST_ZENITH_OPTICAL_DEPTH as _OVERCAST_TAU
from sim_backends.sky import coupling_into_field_stop

__all__ = [
    "ATMOSPHERE_MODELS",
    "DIVERGENCE_DEFINITIONS",
    "SKY_RADIANCE_W_M2_SR_NM",
    "TRUNCATIONS",
    "WEATHER_ZENITH_LOSS_MULTIPLIER",
    "Atmosphere",
    "Background",
    "LinkBudget",
    "ReceiverOptics",
    "TransmitterOptics",
    "airmass_kasten_young",
    "expected_station_coupling",
    "link_budget",
    "transmitted_fraction",
]

_PLANCK_J_S = 6.62607015e-34
_SPEED_OF_LIGHT_M_S = 299_792_458.0
_DETECTORS = 4  # passive BB84 receiver: the background is shared by four detectors

# Multipliers of the clear-sky zenith loss (dB). Clear: 0.5-1 dB at 800-850 nm (PHYSICS.md).
# Haze (visibility ~5 km instead of ~23 km) roughly triples the aerosol extinction of the
# boundary layer (Kim & Kruse visibility law, lambda = 850 nm); thin cirrus of optical depth
# ~0.5-1 adds 2-4 dB. These are engineering classes, not a radiative-transfer model.
WEATHER_ZENITH_LOSS_MULTIPLIER: dict[str, float] = {
    "clear": 1.0,
    "haze": 3.0,
    "thin_cloud": 6.0,
    "overcast": 1.0,  # clear air plus the overcast cloud below (either model)
}

# zenith_loss: one clear-sky zenith loss times the Kasten-Young airmass and the weather
# multiplier above; lowtran7: the shipped LOWTRAN7 table (sim_backends.atmosphere) at the
# source's wavelength, the station's altitude and a visibility (haze: at most 5 km, the
# meteorological range the haze class stands for), thin cloud as cirrus of optical depth 0.5
# (2.2 dB at zenith, inside the 2-4 dB of the class above) times the airmass.
ATMOSPHERE_MODELS = ("zenith_loss", "lowtran7")
HAZE_VISIBILITY_KM = 5.0
THIN_CLOUD_ZENITH_OPTICAL_DEPTH = 0.5
# overcast (a night drawn from the site's cloud climatology): sim_backends.cloud_climatology
OVERCAST_ZENITH_OPTICAL_DEPTH = _OVERCAST_TAU

# How a published divergence is read: the full angle of the 1/e^2 intensity cone, or the full
# width at half maximum of the far-field intensity (FWHM = sqrt(2 ln 2) x the 1/e^2 radius).
DIVERGENCE_DEFINITIONS = ("e2_full_angle", "fwhm_full_angle")

# Whether the transmitter's aperture clips its Gaussian beam. none (the default): the whole
# beam leaves the payload; clipped: only what falls on the clear annulus of the aperture does,
# exp(-2 b^2 / w^2) - exp(-2 a^2 / w^2) of the power for a waist radius w, aperture radius a
# and central obscuration radius b (Klein & Degnan, Appl. Opt. 13, 2134 (1974), the power
# term of their transmitter gain). The far-field spread stays the stated divergence (it is a
# design value, wider than diffraction for these apertures), so clipping is a power loss.
TRUNCATIONS = ("none", "clipped")

# Sky spectral radiance near 850 nm, W m^-2 sr^-1 nm^-1, from I-band sky surface brightness
# (zero point 1.13e-11 W m^-2 nm^-1, Bessell 1979): dark site ~19.9 mag/arcsec^2 (Patat,
# A&A 400, 1183 (2003), Paranal I band), full moon ~2.5 mag brighter (Krisciunas & Schaefer,
# PASP 103, 1033 (1991) scaled to the near infrared), suburban sky ~16 mag/arcsec^2.
SKY_RADIANCE_W_M2_SR_NM: dict[str, float] = {
    "dark_night": 5.3e-9,
    "moon": 5.3e-8,
    "city": 1.9e-7,
}


def _positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (value == 0.0 and not allow_zero):
        raise InputError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def _efficiency(value: object, name: str) -> float:
    value = _positive(value, name)
    if value > 1.0:
        raise InputError(f"{name} must be in (0, 1], got {value}")
    return value


@dataclass(frozen=True)
class TransmitterOptics:
    """Payload telescope: a Gaussian beam of waist radius aperture/2 (or waist_radius_m).

    divergence_urad is a FULL angle, read as divergence_definition says (the 1/e^2 intensity
    cone, or the FWHM of the far-field intensity); pointing_jitter_rms_urad is the per-axis
    rms of the pointing jitter faster than a budget step, averaged over each step.
    truncation (TRUNCATIONS) says whether the aperture clips the beam; with clipped, a central
    obscuration of obscuration_diameter_m blocks the beam's centre too (transmitted_fraction).
    """

    wavelength_nm: float
    aperture_diameter_m: float
    divergence_urad: float
    optics_efficiency: float
    divergence_definition: str = "e2_full_angle"
    pointing_jitter_rms_urad: float = 0.0
    truncation: str = "none"
    obscuration_diameter_m: float = 0.0
    waist_radius_m: float | None = None

    def __post_init__(self) -> None:
        _positive(self.wavelength_nm, "TransmitterOptics.wavelength_nm")
        _positive(self.aperture_diameter_m, "TransmitterOptics.aperture_diameter_m")
        _positive(self.divergence_urad, "TransmitterOptics.divergence_urad")
        _efficiency(self.optics_efficiency, "TransmitterOptics.optics_efficiency")
        if self.divergence_definition not in DIVERGENCE_DEFINITIONS:
            raise InputError(
                f"TransmitterOptics.divergence_definition must be one of "
                f"{list(DIVERGENCE_DEFINITIONS)}, got {self.divergence_definition!r}"
            )
        _positive(
            self.pointing_jitter_rms_urad,
            "TransmitterOptics.pointing_jitter_rms_urad",
            allow_zero=True,
        )
        if self.truncation not in TRUNCATIONS:
            raise InputError(
                f"TransmitterOptics.truncation must be one of {list(TRUNCATIONS)}, "
                f"got {self.truncation!r}"
            )
        obscuration = _positive(
            self.obscuration_diameter_m,
            "TransmitterOptics.obscuration_diameter_m",
            allow_zero=True,
        )
        if obscuration >= self.aperture_diameter_m:
            raise InputError(
                "TransmitterOptics.obscuration_diameter_m must be smaller than "
                f"aperture_diameter_m, got {obscuration} >= {self.aperture_diameter_m}"
            )
        if obscuration > 0.0 and self.truncation == "none":
            raise InputError(
                "TransmitterOptics.obscuration_diameter_m needs truncation 'clipped' (an "
                "unclipped beam does not meet the aperture)"
            )
        if self.waist_radius_m is not None:
            _positive(self.waist_radius_m, "TransmitterOptics.waist_radius_m")

    @property
    def waist_m(self) -> float:
        """Get the beam's 1/e^2 waist radius at the aperture (default: aperture radius)."""
        if self.waist_radius_m is not None:
            return float(self.waist_radius_m)
        return self.aperture_diameter_m / 2.0

    @property
    def far_field_half_angle_urad(self) -> float:
        """Get the 1/e^2 half-angle: the designed one, or diffraction lambda/(pi w0) if larger."""
        waist_m = self.waist_m
        diffraction_urad = self.wavelength_nm * 1e-9 / (math.pi * waist_m) * 1e6
        if self.divergence_definition == "fwhm_full_angle":
            designed = self.divergence_urad / math.sqrt(2.0 * math.log(2.0))
        else:
            designed = self.divergence_urad / 2.0
        return max(designed, diffraction_urad)


@dataclass(frozen=True)
class ReceiverOptics:
    """Ground telescope and receiver; field_of_view_urad is a full angle."""

    aperture_diameter_m: float
    optics_efficiency: float
    field_of_view_urad: float
    central_obscuration_diameter_m: float = 0.0
    filter_bandwidth_nm: float = 1.0

    def __post_init__(self) -> None:
        _positive(self.aperture_diameter_m, "ReceiverOptics.aperture_diameter_m")
        _efficiency(self.optics_efficiency, "ReceiverOptics.optics_efficiency")
        _positive(self.field_of_view_urad, "ReceiverOptics.field_of_view_urad")
        _positive(self.filter_bandwidth_nm, "ReceiverOptics.filter_bandwidth_nm")
        obscuration = _positive(
            self.central_obscuration_diameter_m,
            "ReceiverOptics.central_obscuration_diameter_m",
            allow_zero=True,
        )
        if obscuration >= self.aperture_diameter_m:
            raise InputError(
                "ReceiverOptics.central_obscuration_diameter_m must be smaller than "
                f"aperture_diameter_m, got {obscuration} >= {self.aperture_diameter_m}"
            )


@dataclass(frozen=True)
class Atmosphere:
    """Clear-sky transmission model, weather class, an optional passing cloud, fading, seeing.

    model zenith_loss uses zenith_loss_db; lowtran7 uses visibility_km, season and
    ground_altitude_m (ATMOSPHERE_MODELS). seeing_arcsec (zenith, 500 nm), when given, adds
    the seeing-limited spot's coupling through the receiver's field stop and the downlink
    beam's turbulence spreading and wander (sim_backends.atmosphere).

    scintillation_index_zenith is the variance of the normalised power collected in one
    budget time step (aperture- and time-averaged), scaled to other elevations by
    airmass^(11/6), the zenith-angle law of the downlink Rytov variance (Andrews & Phillips,
    ch. 12), capped at 1 (saturation).
    """

    zenith_loss_db: float = 0.8
    weather: str = "clear"
    cloud_start_unix_s: float | None = None
    cloud_stop_unix_s: float | None = None
    cloud_extra_loss_db: float = 0.0
    scintillation_index_zenith: float = 0.0
    model: str = "zenith_loss"
    visibility_km: float = 23.0
    season: str = "midlatitude_winter"
    ground_altitude_m: float = 0.0
    seeing_arcsec: float | None = None

    def __post_init__(self) -> None:
        _positive(self.zenith_loss_db, "Atmosphere.zenith_loss_db", allow_zero=True)
        if self.model not in ATMOSPHERE_MODELS:
            raise InputError(
                f"Atmosphere.model must be one of {list(ATMOSPHERE_MODELS)}, got {self.model!r}"
            )
        if self.season not in ATMOSPHERE_SEASONS:
            raise InputError(
                f"Atmosphere.season must be one of {list(ATMOSPHERE_SEASONS)}, got {self.season!r}"
            )
        _positive(self.visibility_km, "Atmosphere.visibility_km")
        if self.seeing_arcsec is not None:
            _positive(self.seeing_arcsec, "Atmosphere.seeing_arcsec")
        if self.weather not in WEATHER_ZENITH_LOSS_MULTIPLIER:
            raise InputError(
                f"Atmosphere.weather must be one of {sorted(WEATHER_ZENITH_LOSS_MULTIPLIER)}, "
                f"got {self.weather!r}"
            )
        _positive(self.cloud_extra_loss_db, "Atmosphere.cloud_extra_loss_db", allow_zero=True)
        _positive(
            self.scintillation_index_zenith,
            "Atmosphere.scintillation_index_zenith",
            allow_zero=True,
        )
        if (self.cloud_start_unix_s is None) != (self.cloud_stop_unix_s is None):
            raise InputError(
                "Atmosphere.cloud_start_unix_s and cloud_stop_unix_s must be given together"
            )
        if self.cloud_start_unix_s is not None and not (
            float(self.cloud_stop_unix_s) > float(self.cloud_start_unix_s)
        ):
            raise InputError("Atmosphere.cloud_stop_unix_s must be after cloud_start_unix_s")


@dataclass(frozen=True)
class Background:
    """Sky background: a radiance class, or an explicit radiance in W m^-2 sr^-1 nm^-1."""

    sky_class: str = "dark_night"
    radiance_w_m2_sr_nm: float | None = None

    def __post_init__(self) -> None:
        if self.radiance_w_m2_sr_nm is None and self.sky_class not in SKY_RADIANCE_W_M2_SR_NM:
            raise InputError(
                f"Background.sky_class must be one of {sorted(SKY_RADIANCE_W_M2_SR_NM)}, "
                f"got {self.sky_class!r}"
            )
        if self.radiance_w_m2_sr_nm is not None:
            _positive(self.radiance_w_m2_sr_nm, "Background.radiance_w_m2_sr_nm", allow_zero=True)

    @property
    def radiance(self) -> float:
        """Get the sky spectral radiance in W m^-2 sr^-1 nm^-1."""
        if self.radiance_w_m2_sr_nm is not None:
            return float(self.radiance_w_m2_sr_nm)
        return SKY_RADIANCE_W_M2_SR_NM[self.sky_class]


@dataclass(frozen=True)
class LinkBudget:
    """Per-time-step loss terms (dB, positive = loss) and the resulting transmittance.

    background_counts_per_s is the rate of background photons reaching each of the four
    detectors (before detector efficiency, like transmittance). Below the horizon the
    atmospheric loss is +inf and the transmittance 0.
    """

    unix_s: np.ndarray
    geometric_loss_db: np.ndarray
    pointing_loss_db: np.ndarray
    atmospheric_loss_db: np.ndarray
    scintillation_loss_db: np.ndarray
    transmitter_optics_loss_db: np.ndarray
    receiver_optics_loss_db: np.ndarray
    total_loss_db: np.ndarray
    transmittance: np.ndarray
    background_counts_per_s: np.ndarray
    # the seeing-limited spot's loss at the receiver's field stop (0 without seeing)
    field_stop_loss_db: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # of geometric_loss_db, what turbulence spreading and wander of the beam add
    turbulence_spread_loss_db: np.ndarray = field(default_factory=lambda: np.zeros(0))


def airmass_kasten_young(elevation_deg: np.ndarray) -> np.ndarray:
    """Get the relative optical airmass at elevation (deg >= 0), Kasten & Young (1989) eq. 3."""
    h = np.asarray(elevation_deg, dtype=np.float64)
    return 1.0 / (np.sin(np.radians(h)) + 0.50572 * (h + 6.07995) ** -1.6364)


def expected_station_coupling(
    elevation_deg: np.ndarray,
    tip_tilt_rms_urad_zenith: float,
    loop_integral_gain: float,
    field_of_view_urad: float,
    spot_fwhm_urad: float,
) -> np.ndarray:
    """Get the station's expected field-stop coupling from its fine-tracking residual.

    The residual is the atmospheric tip/tilt (per-axis rms tip_tilt_rms_urad_zenith at zenith,
    x sqrt(airmass): sim_backends.sky) left by the station's fine loop, an integral law of gain
    g with one sample of latency (satqkd_ogs.pointing: y[k+1] = y[k] + g (tilt[k] - y[k])). The
    loop runs far slower than the tilt's spectral corner (10 Hz against ~50 Hz), so the tilt
    decorrelates between its updates: the mirror follows none of it and adds its own
    g / (2 - g) of the tilt variance, a per-axis residual variance of 2 / (2 - g) times the
    tilt's (g = 0: no mirror, the tilt alone). Averaged over a Gaussian residual of per-axis
    rms s, an offset Gaussian spot's coupling through the stop is the centred coupling of a
    spot widened to FWHM^2 + (2.3548 s)^2: coupling_into_field_stop, the function the pass
    averages over its sampled residuals per frame. Elevations below the horizon give 1.
    """
    elevation = np.asarray(elevation_deg, dtype=np.float64)
    if elevation.ndim != 1 or not np.all(np.isfinite(elevation)):
        raise InputError("elevation_deg must be a 1-D array of finite values")
    rms = _positive(tip_tilt_rms_urad_zenith, "tip_tilt_rms_urad_zenith", allow_zero=True)
    if (
        isinstance(loop_integral_gain, bool)
        or not isinstance(loop_integral_gain, (int, float, np.integer, np.floating))
        or not 0.0 <= loop_integral_gain < 2.0
    ):
        raise InputError(f"loop_integral_gain must be in [0, 2), got {loop_integral_gain!r}")
    _positive(field_of_view_urad, "field_of_view_urad")
    fwhm = _positive(spot_fwhm_urad, "spot_fwhm_urad")
    airmass = airmass_kasten_young(np.clip(elevation, 0.0, 90.0))
    residual_var = rms**2 * airmass * 2.0 / (2.0 - float(loop_integral_gain))
    widened = np.sqrt(fwhm**2 + (2.0 * math.sqrt(2.0 * math.log(2.0))) ** 2 * residual_var)
    zero = np.zeros(1)
    coupling = np.array(
        [coupling_into_field_stop(zero, field_of_view_urad, float(w))[0] for w in widened]
    )
    return np.where(elevation >= 0.0, coupling, 1.0)


def transmitted_fraction(tx: TransmitterOptics) -> float:
    """Get the fraction of the beam's power that leaves the transmitter (TRUNCATIONS).

    A Gaussian of 1/e^2 radius w through an annulus of radii b < a passes
    exp(-2 b^2 / w^2) - exp(-2 a^2 / w^2); unclipped, 1.
    """
    if not isinstance(tx, TransmitterOptics):
        raise InputError(f"tx must be a TransmitterOptics, got {type(tx).__name__}")
    if tx.truncation == "none":
        return 1.0
    w2 = tx.waist_m**2
    inner = (tx.obscuration_diameter_m / 2.0) ** 2
    outer = (tx.aperture_diameter_m / 2.0) ** 2
    return math.exp(-2.0 * inner / w2) - math.exp(-2.0 * outer / w2)


def _to_db(ratio: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(ratio)


def link_budget(
    geometry: Geometry,
    tx: TransmitterOptics,
    rx: ReceiverOptics,
    atmosphere: Atmosphere,
    background: Background,
    pointing_error_urad: np.ndarray,
    scintillation_seed: int | None,
    sun_elevation_deg: np.ndarray | None = None,
) -> LinkBudget:
    """Get each loss term and the transmittance of the downlink at every geometry instant.

    With sun_elevation_deg (one per instant), the daylight sky adds to the background while
    the Sun is up (sim_backends.atmosphere.daylight_radiance_w_m2_sr_nm).
    """
    if not isinstance(geometry, Geometry):
        raise InputError(f"geometry must be a Geometry, got {type(geometry).__name__}")
    for value, cls, name in (
        (tx, TransmitterOptics, "tx"),
        (rx, ReceiverOptics, "rx"),
        (atmosphere, Atmosphere, "atmosphere"),
        (background, Background, "background"),
    ):
        if not isinstance(value, cls):
            raise InputError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
    n = geometry.unix_s.shape[0]
    pointing = np.asarray(pointing_error_urad, dtype=np.float64)
    if pointing.ndim == 0:
        pointing = np.full(n, float(pointing))
    if pointing.shape != (n,):
        raise InputError(
            f"pointing_error_urad must be a scalar or have one entry per geometry instant ({n}), "
            f"got shape {pointing.shape}"
        )
    if n and (not np.all(np.isfinite(pointing)) or np.any(pointing < 0.0)):
        raise InputError("pointing_error_urad must be finite and >= 0")
    if scintillation_seed is not None and (
        isinstance(scintillation_seed, bool) or not isinstance(scintillation_seed, int)
    ):
        raise InputError(f"scintillation_seed must be an int or None, got {scintillation_seed!r}")

    # Geometric collection of a Gaussian beam by an annular aperture (after what the
    # transmitter's own aperture clips of it, with truncation clipped).
    half_angle_rad = tx.far_field_half_angle_urad * 1e-6
    waist_m = tx.waist_m
    beam_radius_m = np.sqrt(waist_m**2 + (half_angle_rad * geometry.range_m) ** 2)
    above_horizon = geometry.elevation_deg >= 0.0
    airmass = airmass_kasten_young(np.clip(geometry.elevation_deg, 0.0, 90.0))
    spread_db = np.zeros(n)
    if atmosphere.seeing_arcsec is not None and n:
        spread = downlink_long_term_spread(
            tx.wavelength_nm,
            atmosphere.seeing_arcsec,
            beam_radius_m,
            geometry.range_m,
            geometry.elevation_deg,
        )
        spread_db = _to_db(1.0 / spread)  # intensity on axis falls as 1 / (W_LT / W)^2
        beam_radius_m = beam_radius_m * np.sqrt(spread)
    outer = rx.aperture_diameter_m / 2.0
    inner = rx.central_obscuration_diameter_m / 2.0
    eta_geometric = np.exp(-2.0 * inner**2 / beam_radius_m**2) - np.exp(
        -2.0 * outer**2 / beam_radius_m**2
    )
    if tx.truncation != "none":
        eta_geometric = eta_geometric * transmitted_fraction(tx)
    geometric_db = _to_db(eta_geometric)

    # Pointing error of the transmitter against the far-field 1/e^2 half-angle: the step's
    # offset, averaged over a 2-D Gaussian jitter of rms sigma per axis:
    # <exp(-2|e + j|^2 / t^2)> = exp(-2 e^2 / (t^2 + 4 s^2)) / (1 + 4 s^2 / t^2).
    jitter_rad2 = 4.0 * (tx.pointing_jitter_rms_urad * 1e-6) ** 2
    pointing_db = _to_db(
        np.exp(-2.0 * (pointing * 1e-6) ** 2 / (half_angle_rad**2 + jitter_rad2))
        / (1.0 + jitter_rad2 / half_angle_rad**2)
    )

    if atmosphere.model == "lowtran7":
        visibility = atmosphere.visibility_km
        if atmosphere.weather == "haze":
            visibility = min(visibility, HAZE_VISIBILITY_KM)
        atmospheric_db = _to_db(
            slant_transmittance(
                tx.wavelength_nm,
                atmosphere.ground_altitude_m,
                visibility,
                atmosphere.season,
                np.maximum(geometry.elevation_deg, 0.0),
            )
        )
        if atmosphere.weather == "thin_cloud":
            atmospheric_db = atmospheric_db + airmass * _to_db(
                np.exp(-THIN_CLOUD_ZENITH_OPTICAL_DEPTH)
            )
    else:
        zenith_db = atmosphere.zenith_loss_db * WEATHER_ZENITH_LOSS_MULTIPLIER[atmosphere.weather]
        atmospheric_db = zenith_db * airmass
    if atmosphere.weather == "overcast":
        atmospheric_db = atmospheric_db + airmass * _to_db(np.exp(-OVERCAST_ZENITH_OPTICAL_DEPTH))
    if atmosphere.cloud_start_unix_s is not None:
        in_cloud = (geometry.unix_s >= atmosphere.cloud_start_unix_s) & (
            geometry.unix_s < atmosphere.cloud_stop_unix_s
        )
        atmospheric_db = atmospheric_db + np.where(in_cloud, atmosphere.cloud_extra_loss_db, 0.0)
    atmospheric_db = np.where(above_horizon, atmospheric_db, np.inf)

    scintillation_db = np.zeros(n)
    if scintillation_seed is not None and atmosphere.scintillation_index_zenith > 0.0:
        # Capped at 1: the scintillation index saturates near unity in strong turbulence
        # (Andrews & Phillips, ch. 9), which low elevations would otherwise overshoot.
        index = np.minimum(atmosphere.scintillation_index_zenith * airmass ** (11.0 / 6.0), 1.0)
        sigma2 = np.log1p(index)
        normal = np.random.default_rng(scintillation_seed).standard_normal(n)
        # Log-normal with unit mean: ln I ~ N(-sigma^2/2, sigma^2).
        fading = np.exp(-0.5 * sigma2 + np.sqrt(sigma2) * normal)
        scintillation_db = _to_db(fading)

    field_stop_db = np.zeros(n)
    if atmosphere.seeing_arcsec is not None and n:
        field_stop_db = _to_db(
            field_stop_coupling_of_seeing(
                tx.wavelength_nm,
                atmosphere.seeing_arcsec,
                airmass,
                rx.aperture_diameter_m,
                rx.field_of_view_urad,
            )
        )

    tx_db = np.full(n, _to_db(np.array(tx.optics_efficiency)).item())
    rx_db = np.full(n, _to_db(np.array(rx.optics_efficiency)).item())
    total_db = (
        geometric_db
        + pointing_db
        + atmospheric_db
        + scintillation_db
        + tx_db
        + rx_db
        + field_stop_db
    )
    transmittance = np.where(above_horizon, 10.0 ** (-total_db / 10.0), 0.0)

    # Background photons from the sky inside the field of view: L * Omega * A * dlambda *
    # eta_rx / (h nu), shared by the four detectors of the passive receiver.
    solid_angle_sr = math.pi * (rx.field_of_view_urad * 1e-6 / 2.0) ** 2
    area_m2 = math.pi * (outer**2 - inner**2)
    photon_energy_j = _PLANCK_J_S * _SPEED_OF_LIGHT_M_S / (tx.wavelength_nm * 1e-9)
    radiance = np.full(n, background.radiance)
    if sun_elevation_deg is not None:
        sun = np.asarray(sun_elevation_deg, dtype=np.float64)
        if sun.shape != (n,):
            raise InputError(f"sun_elevation_deg must have {n} entries, got shape {sun.shape}")
        radiance = radiance + daylight_radiance_w_m2_sr_nm(sun)
    background_rate = (
        radiance
        * solid_angle_sr
        * area_m2
        * rx.filter_bandwidth_nm
        * rx.optics_efficiency
        / photon_energy_j
        / _DETECTORS
    )
    return LinkBudget(
        unix_s=geometry.unix_s.copy(),
        geometric_loss_db=geometric_db,
        pointing_loss_db=pointing_db,
        atmospheric_loss_db=atmospheric_db,
        scintillation_loss_db=scintillation_db,
        transmitter_optics_loss_db=tx_db,
        receiver_optics_loss_db=rx_db,
        total_loss_db=total_db,
        transmittance=transmittance,
        background_counts_per_s=np.where(above_horizon, background_rate, 0.0),
        field_stop_loss_db=field_stop_db,
        turbulence_spread_loss_db=spread_db,
    )
