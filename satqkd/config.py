"""Mission, station and scenario configuration: YAML files validated on load.

A user's mistake in a config file becomes a :class:`ConfigError` whose one-line message
names the file, the key path and what is allowed; the command line prints that line and
exits non-zero, never a traceback.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from firmware_shims.source_sequencer import record_thresholds
from satqkd.safe_yaml import YamlInputError, load_text, read_bounded_text
from satqkd_ogs.settings import MAX_CASCADE_DISTURBANCE, AtpSettings, DetectorSettings
from satqkd_runtime.settings import SETTINGS_CONFIG

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message is one line."""


class _Model(BaseModel):
    # NaN and infinity are never a valid setting (a bound like ge=0 would let .inf through)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# integers must be written as integers: no `true` read as 1, no 3.0 read as 3
StrictCount = Field(strict=True)

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Intensity = Annotated[float, Field(ge=0.0, le=100.0)]


# --- mission profile -------------------------------------------------------------------------


class TleConfig(_Model):
    line1: str
    line2: str

    @field_validator("line1", "line2")
    @classmethod
    def _tle_line(cls, value: str) -> str:
        if len(value.strip()) != 69:
            raise ValueError(f"a TLE line has 69 characters, got {len(value.strip())}")
        return value.strip()


class OrbitConfig(_Model):
    altitude_km: Annotated[float, Field(ge=160.0, le=2000.0)] = 500.0
    ltan_hours: Annotated[float, Field(ge=0.0, lt=24.0)] = 22.5
    epoch_utc: datetime | None = None
    tle: TleConfig | None = None
    sample_tle: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> OrbitConfig:
        if self.tle is not None and self.sample_tle is not None:
            raise ValueError("give either tle or sample_tle, not both")
        return self


class SourceConfig(_Model):
    wavelength_nm: Annotated[float, Field(ge=400.0, le=1700.0)]
    repetition_rate_hz: Annotated[float, Field(ge=1e6, le=10e9)]
    # mean photon numbers per pulse: a weak-coherent source, not a laser at full power
    intensities: tuple[Intensity, Intensity, Intensity]
    probabilities: tuple[Fraction, Fraction, Fraction]
    basis_x_probability: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    polarisation_error: Annotated[float, Field(ge=0.0, le=0.5)] = 0.005
    intensity_fluctuation: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0
    # the pulse pattern (docs/security.md, Randomness): "expanded", a 256-bit AES key per pass
    # (computational); "recorded", one entropy byte per pulse drawn and kept on disk for the
    # pass (information-theoretic; probabilities in 1/16, the basis in 1/8)
    pattern: Literal["expanded", "recorded"] = "expanded"

    @model_validator(mode="after")
    def _decoy_ordering(self) -> SourceConfig:
        mu1, mu2, mu3 = self.intensities
        if not mu1 > mu2 + mu3:
            raise ValueError(
                f"intensities need mu_1 > mu_2 + mu_3 >= 0, got {list(self.intensities)}"
            )
        if not math.isclose(sum(self.probabilities), 1.0, abs_tol=1e-9):
            raise ValueError(f"probabilities must sum to 1, got {sum(self.probabilities):.6g}")
        period_ps = 1e12 / self.repetition_rate_hz
        if abs(period_ps - round(period_ps)) > 1e-6:
            raise ValueError(
                f"repetition_rate_hz must give a whole number of picoseconds per pulse, "
                f"got {self.repetition_rate_hz:g} Hz ({period_ps:g} ps)"
            )
        if self.pattern == "recorded":  # ValueError naming the probabilities
            record_thresholds(self.probabilities, self.basis_x_probability)
        return self


class ToneConfig(_Model):
    frequency_hz: Annotated[float, Field(gt=0.0, le=10000.0)]
    amplitude_urad: Annotated[float, Field(ge=0.0, le=1000.0)]


class PayloadPointingConfig(_Model):
    """The payload's own pointing (satqkd.payload_pointing_physics; decision 0020): platform
    disturbance, the fine-tracking loop in its controller, point-ahead."""

    fine_loop: bool = True
    point_ahead: bool = True
    loop_rate_hz: Annotated[float, Field(ge=100.0, le=100000.0)] = 5000.0
    fine_bandwidth_hz: Annotated[float, Field(gt=0.0, le=5000.0)] = 300.0
    coarse_bandwidth_hz: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    sensor_noise_urad: Annotated[float, Field(ge=0.0, le=100.0)] = 0.2
    sensor_field_of_view_urad: Annotated[float, Field(gt=0.0, le=100000.0)] = 4000.0
    fsm_travel_urad: Annotated[float, Field(gt=0.0, le=100000.0)] = 2000.0
    attitude_knowledge_error_3sigma_urad: Annotated[float, Field(ge=0.0, le=100000.0)] = 1000.0
    attitude_drift_rms_urad: Annotated[float, Field(ge=0.0, le=10000.0)] = 20.0
    micro_vibration_rms_urad: Annotated[float, Field(ge=0.0, le=1000.0)] = 9.3
    broadband_corner_hz: Annotated[float, Field(gt=0.0, le=1000.0)] = 0.2
    tones: tuple[ToneConfig, ...] = (
        ToneConfig(frequency_hz=12.0, amplitude_urad=1.5),
        ToneConfig(frequency_hz=27.0, amplitude_urad=1.0),
    )
    # the payload's point-ahead table: computed from the pass prediction on this grid
    point_ahead_grid_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0

    @model_validator(mode="after")
    def _loop_margin(self) -> PayloadPointingConfig:
        # a loop with one sample of latency keeps its phase margin up to loop_rate_hz / 16
        for name in ("fine_bandwidth_hz", "coarse_bandwidth_hz"):
            if getattr(self, name) > self.loop_rate_hz / 16.0:
                raise ValueError(
                    f"{name} must be <= loop_rate_hz / 16 ({self.loop_rate_hz / 16.0:g} Hz), "
                    f"got {getattr(self, name):g}"
                )
        return self


class TransmitterConfig(_Model):
    aperture_diameter_m: Annotated[float, Field(gt=0.0, le=2.0)]
    divergence_urad: Annotated[float, Field(gt=0.0, le=1000.0)]
    optics_efficiency: Fraction = 0.5
    pointing_residual_rms_urad: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    # how divergence_urad is read (sim_backends.link.DIVERGENCE_DEFINITIONS; docs/keyrate.md)
    divergence_definition: Literal["e2_full_angle", "fwhm_full_angle"] = "e2_full_angle"
    # per-axis rms of pointing jitter faster than a second, averaged into the pointing loss
    pointing_jitter_rms_urad: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    # whether the aperture clips the Gaussian beam (sim_backends.link.TRUNCATIONS), the central
    # obscuration that then blocks its centre, and the beam's 1/e^2 waist radius (default:
    # aperture radius); docs/validation.md "The model's terms and conventions"
    truncation: Literal["none", "clipped"] = "none"
    obscuration_diameter_m: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    waist_radius_m: Annotated[float, Field(gt=0.0, le=2.0)] | None = None
    # the payload's own pointing simulated (replaces the statistical residual above)
    pointing: PayloadPointingConfig | None = None


class ProtocolConfig(_Model):
    eps_sec: Annotated[float, Field(gt=0.0, lt=1e-3)] = 1e-9
    eps_cor: Annotated[float, Field(gt=0.0, lt=1e-3)] = 1e-15
    qber_abort_threshold: Annotated[float, Field(gt=0.0, le=0.5)] = 0.11
    cascade_passes: Annotated[int, StrictCount, Field(ge=1, le=32)] = 16
    # Cascade: how far concurrent searches of a round trip may overlap (expected errors of the
    # searches already chosen among a new one's bits; satqkd_core.cascade). 0: disjoint, the
    # fewest leaked bits; > 0 fewer round trips for a little more leak (docs/performance.md)
    cascade_max_disturbance: Annotated[float, Field(ge=0.0, le=MAX_CASCADE_DISTURBANCE)] = 0.0
    ec_efficiency_estimate: Annotated[float, Field(ge=1.0, le=2.0)] = 1.16
    sync_window_ps: Annotated[float, Field(gt=0.0, le=1e6)] = 1000.0
    frame_s: Annotated[float, Field(ge=0.01, le=10.0)] = 1.0
    min_qkd_elevation_deg: Annotated[float, Field(ge=0.0, le=90.0)] = 10.0
    # error correction: interactive Cascade (decision 0003) or blind rate-adaptive LDPC (0004)
    reconciliation: Literal["cascade", "ldpc"] = "cascade"
    # LDPC: probability that a frame fails to decode and is dropped (sets the blind window)
    ldpc_eps_frame: Annotated[float, Field(ge=1e-9, le=0.1)] = 1e-3
    # the protocol family (docs/missions.md): decoy-state BB84 with a weak-coherent source
    # (`source`), or entanglement-based BBM92 with a pair source (`pair_source`, decision 0027)
    family: Literal["decoy-bb84", "bbm92"] = "decoy-bb84"
    # downlink: one station (BBM92: the payload measures one photon of each pair on board);
    # dual-downlink (BBM92 only): both photons of a pair down to two stations
    variant: Literal["downlink", "dual-downlink"] = "downlink"
    # the finite-key bound: lim2014 (decoy BB84, satqkd_core.finite_key) or tomamichel2012
    # (BBM92, satqkd_core.bbm92_finite_key); None: the family's own
    finite_key_bound: Literal["lim2014", "tomamichel2012"] | None = None
    privacy_amplification: Literal["toeplitz"] = "toeplitz"
    # BBM92: the test-sample error rate tolerated, fixed before the window (the bound's Q_tol)
    qber_tolerance: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.06

    @model_validator(mode="after")
    def _bound_fits_family(self) -> ProtocolConfig:
        wanted = FINITE_KEY_BOUNDS[self.family]
        if self.finite_key_bound is not None and self.finite_key_bound != wanted:
            raise ValueError(
                f"finite_key_bound {self.finite_key_bound} is not a bound for family "
                f"{self.family} (use {wanted})"
            )
        if self.variant == "dual-downlink" and self.family != "bbm92":
            raise ValueError("variant dual-downlink needs family bbm92")
        return self


# the finite-key bound each protocol family is analysed with (docs/missions.md)
FINITE_KEY_BOUNDS = {"decoy-bb84": "lim2014", "bbm92": "tomamichel2012"}


class PairSourceConfig(_Model):
    """A BBM92 mission's on-board entangled pair source (continuous-wave SPDC)."""

    wavelength_nm: Annotated[float, Field(ge=400.0, le=1700.0)]  # the photon sent down
    # the photon the payload measures on board (None: degenerate, the same wavelength)
    payload_wavelength_nm: Annotated[float, Field(ge=400.0, le=1700.0)] | None = None
    pump_wavelength_nm: Annotated[float, Field(ge=200.0, le=1700.0)] | None = None
    pair_rate_hz: Annotated[float, Field(ge=1e2, le=1e10)]
    # probability that the payload's own photon reaches its receiver
    payload_collection: Fraction = 0.5
    polarisation_error: Annotated[float, Field(ge=0.0, le=0.5)] = 0.01
    basis_x_probability: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5


ENCODING_BASES = {"polarisation": ("HV", "DA", "RL"), "time-bin": ("time", "phase")}


class EncodingConfig(_Model):
    """How the qubits are carried: polarisation bases (HV, DA, RL) or time-bin (time, phase)."""

    kind: Literal["polarisation", "time-bin"] = "polarisation"
    bases: tuple[str, ...] = ("HV", "DA")

    @model_validator(mode="after")
    def _bases_of_kind(self) -> EncodingConfig:
        allowed = ENCODING_BASES[self.kind]
        unknown = [b for b in self.bases if b not in allowed]
        if unknown:
            raise ValueError(
                f"bases {unknown} are not {self.kind} bases (allowed: {', '.join(allowed)})"
            )
        if len(set(self.bases)) != len(self.bases) or len(self.bases) < 2:
            raise ValueError(f"bases needs at least 2 different bases, got {list(self.bases)}")
        return self


class TimeSyncConfig(_Model):
    """How the station finds the payload's photons in its time tags."""

    # pulsed-clock: pulses at the source's repetition rate from the plan's pulse-0 origin, each
    # detection given its pulse index (satqkd_core.sync); cross-correlation: no clock, the two
    # ends' time tags correlated (satqkd_core.coincidence)
    method: Literal["pulsed-clock", "cross-correlation"] = "pulsed-clock"
    # cross-correlation: the coincidence window, the clock offset uncertainty and drift bound
    coincidence_window_ps: Annotated[float, Field(gt=0.0, le=1e6)] = 1000.0
    offset_uncertainty_s: Annotated[float, Field(gt=0.0, le=10.0)] = 0.1
    max_drift_ppm: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    # pulsed-clock: how fast the payload clock's rate against the station's (oscillator and
    # ephemeris range-rate error together) may change, ppb/s; bounds coasting between frames and
    # caps the pass-geometry bound of a late acquisition's count back to pulse 0
    # (satqkd_core.sync_tracking.count_back_drift_change_ppb_per_s, decision 0030)
    drift_change_ppb_per_s: Annotated[float, Field(ge=0.0, le=10.0)] = 0.01
    # pulsed-clock: how well the station's clock knows the payload's (GPS-disciplined ground
    # clocks: tens of ns), ps; the sync finds the offset modulo one pulse period, and the
    # payload's on-board sifting resolves the whole periods within this (satqkd_core.pulse_shift)
    clock_offset_uncertainty_ps: Annotated[float, Field(ge=0.0, le=1e6)] = 20_000.0


class WavelengthsConfig(_Model):
    """The link's wavelengths besides the quantum one (which the source gives); None: none."""

    beacon_down_nm: Annotated[float, Field(ge=400.0, le=1700.0)] | None = None  # station tracks
    beacon_up_nm: Annotated[float, Field(ge=400.0, le=1700.0)] | None = None  # payload tracks
    # a separate timing laser the station must detect (None: timing from the quantum signal)
    sync_nm: Annotated[float, Field(ge=400.0, le=1700.0)] | None = None


class StationOpticsConfig(_Model):
    """What a station must provide to serve the mission (checked by `satqkd missions check`)."""

    filter_centre_nm: Annotated[float, Field(ge=400.0, le=1700.0)] | None = None  # None: quantum
    filter_width_nm: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0  # the widest filter allowed
    detector_channels_per_basis: Annotated[int, StrictCount, Field(ge=1, le=4)] = 2
    max_timing_jitter_ps: Annotated[float, Field(gt=0.0, le=1e5)] | None = None  # rms


class ClassicalLinkConfig(_Model):
    # the payload <-> station classical link a simulated pass models (range delay plus
    # serialisation, sim_backends.classical_link); uplink: station -> payload
    uplink_bps: Annotated[float, Field(gt=0.0, le=1e11)]
    downlink_bps: Annotated[float, Field(gt=0.0, le=1e11)]
    framing_bytes: Annotated[int, StrictCount, Field(ge=0, le=65536)] = 0
    # CCSDS spacecraft id of the mission's frames, and the medium the station must provide
    spacecraft_id: Annotated[int, StrictCount, Field(ge=0, le=1023)] | None = None
    medium: Literal["optical", "rf"] | None = None


class MissionProfileConfig(_Model):
    """Everything that differs between satellites (docs/missions.md): any protocol family.
    `MissionConfig` is the decoy-BB84 mission the pass simulation and daemons run today."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    orbit: OrbitConfig = OrbitConfig()
    source: SourceConfig | None = None
    pair_source: PairSourceConfig | None = None
    transmitter: TransmitterConfig
    protocol: ProtocolConfig = ProtocolConfig()
    # absent: payload and station talk over the broker alone (loopback in a simulation)
    classical_link: ClassicalLinkConfig | None = None
    encoding: EncodingConfig = EncodingConfig()
    time_sync: TimeSyncConfig = TimeSyncConfig()
    wavelengths: WavelengthsConfig = WavelengthsConfig()
    station_optics: StationOpticsConfig = StationOpticsConfig()

    @model_validator(mode="after")
    def _source_fits_family(self) -> MissionProfileConfig:
        family = self.protocol.family
        if family == "decoy-bb84" and (self.source is None or self.pair_source is not None):
            raise ValueError("protocol.family decoy-bb84 needs a source block and no pair_source")
        if family == "bbm92" and (self.pair_source is None or self.source is not None):
            raise ValueError("protocol.family bbm92 needs a pair_source block and no source")
        if family == "bbm92" and self.time_sync.method != "cross-correlation":
            raise ValueError(
                "protocol.family bbm92 has no pulse clock: time_sync.method "
                "must be cross-correlation"
            )
        return self

    @property
    def quantum_wavelength_nm(self) -> float:
        """The wavelength of the photons the station detects."""
        if self.pair_source is not None:
            return self.pair_source.wavelength_nm
        assert self.source is not None  # the validator above
        return self.source.wavelength_nm


class MissionConfig(MissionProfileConfig):
    """A decoy-state BB84 mission: the one the pass simulation and the daemons run."""

    source: SourceConfig


# --- ground station --------------------------------------------------------------------------


class LocationConfig(_Model):
    latitude_deg: Annotated[float, Field(ge=-90.0, le=90.0)]
    longitude_deg: Annotated[float, Field(ge=-180.0, le=180.0)]
    altitude_m: Annotated[float, Field(ge=-500.0, le=9000.0)] = 0.0


class ReceiverConfig(_Model):
    aperture_diameter_m: Annotated[float, Field(gt=0.0, le=10.0)]
    obscuration_diameter_m: Annotated[float, Field(ge=0.0, le=5.0)] = 0.0
    optics_efficiency: Fraction = 0.5
    field_of_view_urad: Annotated[float, Field(gt=0.0, le=10000.0)] = 100.0
    filter_bandwidth_nm: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0


@dataclass(frozen=True, kw_only=True, config=SETTINGS_CONFIG)
class DetectorConfig(DetectorSettings):
    """The station profile's `detectors`: how the daemon runs them (bias, temperature limit,
    satqkd_ogs.settings.DetectorSettings) and what they are, for the simulated channel."""

    efficiency: tuple[Fraction, Fraction, Fraction, Fraction]
    dark_count_rate_hz: Annotated[float, Field(ge=0.0, le=1e7)] = 100.0
    timing_jitter_ps: Annotated[float, Field(ge=0.0, le=1e5)] = 50.0
    dead_time_ns: Annotated[float, Field(ge=0.0, le=1e5)] = 50.0
    afterpulse_probability: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0
    basis_x_probability: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5


class AtmosphereConfig(_Model):
    # zenith_loss: zenith_loss_db x airmass; lowtran7: the shipped LOWTRAN7 table at the
    # source's wavelength, the station's altitude, visibility_km and season (sim_backends.link)
    model: Literal["zenith_loss", "lowtran7"] = "zenith_loss"
    zenith_loss_db: Annotated[float, Field(ge=0.0, le=30.0)] = 0.7
    visibility_km: Annotated[float, Field(ge=5.0, le=50.0)] = 23.0
    season: Literal["midlatitude_winter", "midlatitude_summer"] = "midlatitude_winter"
    scintillation_index: Annotated[float, Field(ge=0.0, le=2.0)] = 0.1
    # zenith seeing FWHM at 500 nm: adds the seeing spot's field-stop coupling and the beam's
    # turbulence spreading (sim_backends.atmosphere); None leaves both out
    seeing_arcsec: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    # the site of the monthly cloud statistics (sim_backends/data/cloud_climatology.csv) that
    # a scenario's `weather.profile: climatology` draws from
    climate_site: str | None = None


class BackgroundConfig(_Model):
    sky: Literal["dark_night", "moon", "city"] = "dark_night"
    radiance_w_m2_sr_nm: Annotated[float, Field(ge=0.0, le=1e-2)] | None = None


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class AtpConfig(AtpSettings):
    """The station profile's `atp`: the station daemon's ATP settings
    (satqkd_ogs.settings.AtpSettings) and one the simulation alone reads."""

    # corner frequency of the satellite transmitter's pointing residual on this station's
    # downlink (sim_backends.transmitter_pointing; decision 0013)
    tracking_bandwidth_hz: Annotated[float, Field(gt=0.0, le=10000.0)] = 100.0


class PolarisationConfig(_Model):
    # predicted: a half-wave plate follows the ephemeris-predicted frame rotation;
    # none: the frames are aligned once at QKD start and left alone.
    compensation: Literal["predicted", "none"] = "predicted"
    compensation_error_rms_deg: Annotated[float, Field(ge=0.0, le=90.0)] = 0.0


class TaggerConfig(_Model):
    resolution_ps: Annotated[int, StrictCount, Field(ge=1, le=1_000_000)] = 1


Wavelength = Annotated[float, Field(ge=200.0, le=2000.0)]


class BandConfig(_Model):
    """A wavelength range in nm (a detector's or a camera's usable band)."""

    low_nm: Wavelength
    high_nm: Wavelength

    @model_validator(mode="after")
    def _ordered(self) -> BandConfig:
        if not self.low_nm < self.high_nm:
            raise ValueError(f"low_nm must be below high_nm, got {self.low_nm:g}-{self.high_nm:g}")
        return self

    def covers(self, wavelength_nm: float) -> bool:
        """Get: whether the wavelength lies in the band (ends included)."""
        return self.low_nm <= wavelength_nm <= self.high_nm


class FilterConfig(_Model):
    """An interference filter the station can put in its quantum path (e.g. on a wheel)."""

    centre_nm: Wavelength
    width_nm: Annotated[float, Field(gt=0.0, le=100.0)]  # FWHM


class StationCapabilitiesConfig(_Model):
    """What the station's optics, detectors and tagger provide, against which a mission's
    needs are checked (satqkd.mission_compat; docs/missions.md)."""

    detector_bands: tuple[BandConfig, ...]  # where the quantum detectors are usable
    filters: tuple[FilterConfig, ...]
    encodings: tuple[Literal["polarisation", "time-bin"], ...] = ("polarisation",)
    bases: tuple[str, ...] = ("HV", "DA")  # the analyser's measurement bases
    detector_channels: Annotated[int, StrictCount, Field(ge=1, le=64)] = 4
    tagger_channels: Annotated[int, StrictCount, Field(ge=1, le=256)] = 8
    timing_detector_bands: tuple[BandConfig, ...] = ()  # a separate sync-laser receiver
    # finds the payload's photons by cross-correlating time tags, without a pulse clock
    clockless: bool = False
    beacon_camera_bands: tuple[BandConfig, ...] = ()
    beacon_lasers_nm: tuple[Wavelength, ...] = ()
    classical_media: tuple[Literal["optical", "rf"], ...] = ()
    # between two passes: the telescope's slew to the next AOS, and (when the mission changes)
    # the optics and tagger reconfiguration on top of it
    slew_gap_s: Annotated[float, Field(ge=0.0, le=3600.0)] = 60.0
    reconfiguration_gap_s: Annotated[float, Field(ge=0.0, le=3600.0)] = 120.0


class TrackPointConfig(_Model):
    unix_s: Annotated[float, Field(ge=0.0, le=4102444800.0)]
    latitude_deg: Annotated[float, Field(ge=-90.0, le=90.0)]
    longitude_deg: Annotated[float, Field(ge=-180.0, le=180.0)]
    altitude_m: Annotated[float, Field(ge=-500.0, le=9000.0)] = 0.0


class TrackConfig(_Model):
    """A moving station's positions: a CSV file (relative to the station file's folder, columns
    unix_s, latitude_deg, longitude_deg, altitude_m) or the points themselves."""

    csv: str | None = None
    points: list[TrackPointConfig] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TrackConfig:
        if (self.csv is None) == (self.points is None):
            raise ValueError("give exactly one of csv or points")
        if self.points is not None:
            if len(self.points) < 2:
                raise ValueError(f"points needs at least 2 entries, got {len(self.points)}")
            times = [p.unix_s for p in self.points]
            for k in range(1, len(times)):
                if not times[k] > times[k - 1]:
                    raise ValueError(f"points[{k}].unix_s must be after points[{k - 1}].unix_s")
        return self


class StationConfig(_Model):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    location: LocationConfig
    min_elevation_deg: Annotated[float, Field(ge=0.0, le=90.0)] = 10.0
    receiver: ReceiverConfig
    detectors: DetectorConfig
    atmosphere: AtmosphereConfig = AtmosphereConfig()
    background: BackgroundConfig = BackgroundConfig()
    atp: AtpConfig = AtpConfig()
    polarisation: PolarisationConfig = PolarisationConfig()
    tagger: TaggerConfig = TaggerConfig()
    track: TrackConfig | None = None
    # absent: `satqkd missions check` cannot tell which missions the station serves
    capabilities: StationCapabilitiesConfig | None = None


# --- scenario ----------------------------------------------------------------------------------


class PassSearchConfig(_Model):
    start_utc: datetime
    days: Annotated[float, Field(gt=0.0, le=30.0)] = 3.0
    min_max_elevation_deg: Annotated[float, Field(ge=0.0, le=90.0)] = 30.0
    night_only: bool = True
    pass_index: Annotated[int, StrictCount, Field(ge=0, le=1000)] = 0


class CloudConfig(_Model):
    start_s_after_aos: NonNegative
    duration_s: Positive
    extra_loss_db: Annotated[float, Field(ge=0.0, le=60.0)]


class WeatherConfig(_Model):
    # climatology: clear, thin cloud or overcast drawn with the seed from the station site's
    # monthly cloud statistics (atmosphere.climate_site; sim_backends.cloud_climatology)
    profile: Literal["clear", "haze", "thin_cloud", "climatology"] = "clear"
    cloud: CloudConfig | None = None
    # the calendar month whose statistics a climatology draw uses (default: the pass's month)
    month: Annotated[int, StrictCount, Field(ge=1, le=12)] | None = None


class AttackConfig(_Model):
    intercept_resend_fraction: Fraction = 0.0
    photon_number_splitting: bool = False

    @model_validator(mode="after")
    def _one_channel(self) -> AttackConfig:
        if self.photon_number_splitting and self.intercept_resend_fraction > 0.0:
            raise ValueError(
                "photon_number_splitting replaces the whole channel; "
                "set intercept_resend_fraction to 0"
            )
        return self


class SimBenchesConfig(_Model):
    """The bench file each node of a simulated pass drives its instruments from: a name in
    configs/instruments/ or a path relative to the scenario. The resource strings in a bench
    decide how each instrument is reached (in-process, wire-level emulator, pyvisa-sim), so a
    simulated pass assembles its nodes exactly as a lab does."""

    payload: str = "sim-payload"
    station: str = "sim-station"


class SkyTruthConfig(_Model):
    """What the station's pointing closes on in simulation (sim_backends/sky.py): the mount's
    pointing-model error, atmospheric tip/tilt, the received spot, the satellite's beacon."""

    mount_zero_point_rms_urad: Annotated[float, Field(ge=0.0, le=10_000.0)] = 150.0
    mount_axis_tilt_urad: Annotated[float, Field(ge=0.0, le=10_000.0)] = 60.0
    # angle-of-arrival rms per axis at zenith (grows with sqrt(airmass)): ~1.5 urad for a 1 m
    # aperture and r0 ~ 0.2 m at 850 nm (one-axis G-tilt variance 0.18 (D/r0)^(5/3) (lambda/D)^2)
    tip_tilt_rms_urad_zenith: Annotated[float, Field(ge=0.0, le=100.0)] = 1.5
    # corner of the tilt spectrum ~ v/D with the wind plus the slew's apparent wind
    tip_tilt_corner_hz: Annotated[float, Field(gt=0.0, le=200.0)] = 50.0
    # seeing-limited spot on the field stop (~ lambda / r0 at 850 nm)
    receiver_spot_fwhm_urad: Annotated[float, Field(gt=0.0, le=1000.0)] = 5.0
    # quantum receiver's field-stop centre relative to the beacon sensor's null (boresight)
    receiver_offset_urad: tuple[float, float] = (0.0, 0.0)
    beacon_power_mw: Annotated[float, Field(ge=0.0, le=1e5)] = 200.0
    beacon_divergence_urad: Annotated[float, Field(gt=0.0, le=1e5)] = 1200.0  # full angle
    beacon_wavelength_nm: Annotated[float, Field(ge=400.0, le=1700.0)] = 532.0
    beacon_on_after_aos_s: float = 0.0  # negative: on before AOS
    sample_rate_hz: Annotated[float, Field(ge=1.0, le=1000.0)] = 20.0


class SimulationConfig(_Model):
    clock_offset_ps: Annotated[float, Field(ge=-4000.0, le=4000.0)] = 1234.0
    preshared_auth_messages: Annotated[int, StrictCount, Field(ge=2048, le=10_000_000)] = 65536
    # payload oscillator frequency offset against the station's clock (+ = payload fast)
    clock_drift_ppb: Annotated[float, Field(ge=-10_000.0, le=10_000.0)] = 0.0
    # start QKD no earlier than this after AOS (e.g. a short test pass near culmination)
    qkd_start_after_aos_s: NonNegative | None = None
    benches: SimBenchesConfig = SimBenchesConfig()
    sky: SkyTruthConfig = SkyTruthConfig()
    # QKD messages over the broker alone, or across the mission's modelled classical link
    # (range delay and serialisation at its classical_link rates, satqkd.sim_link)
    classical_link: Literal["loopback", "modelled"] = "loopback"


class ScenarioConfig(_Model):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    mission: str
    station: str
    seed: Annotated[int, StrictCount, Field(ge=0, lt=2**63)] = 0
    search: PassSearchConfig
    weather: WeatherConfig = WeatherConfig()
    attacks: AttackConfig = AttackConfig()
    simulation: SimulationConfig = SimulationConfig()


# --- loading -------------------------------------------------------------------------------------


M = TypeVar("M", bound=BaseModel)


# pydantic reports an unknown or missing key of a model and of a (settings) dataclass by
# different names
_UNKNOWN_KEY = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
_MISSING_KEY = frozenset({"missing", "missing_argument", "missing_keyword_only_argument"})


def _describe_error(error: dict[str, Any], model: type[Any]) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind in _UNKNOWN_KEY:
        parent = _fields_at(model, error["loc"][:-1])
        allowed = ", ".join(parent) if parent is not None else "see docs"
        return f"{path}: unknown key (allowed here: {allowed})"
    if kind in _MISSING_KEY:
        return f"{path}: required key is missing"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {_short_repr(got)})"
    return f"{path}: {message}{shown}"


def _short_repr(value: Any, limit: int = 80) -> str:
    """repr() of a value a user wrote, cut to one short line (a value may be megabytes long)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields(annotation: Any) -> dict[str, Any] | None:
    """The fields of a pydantic model or pydantic dataclass, None for any other type."""
    fields = (
        getattr(annotation, "__pydantic_fields__", None) if isinstance(annotation, type) else None
    )
    return fields if isinstance(fields, dict) else None


def _fields_at(model: type[Any], loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The fields of the model or settings dataclass found at a key path below `model`."""
    current = _fields(model)
    for part in loc:
        field = current.get(str(part)) if current is not None else None
        if field is None:
            return None
        candidates = getattr(field.annotation, "__args__", (field.annotation,))
        current = next((f for c in candidates if (f := _fields(c)) is not None), None)
    return current


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; ConfigError on any failure."""
    try:
        text = read_bounded_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except YamlInputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        data = load_text(text)
    except YamlInputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def validate_model(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate a mapping against a model; ConfigError naming source, key path and rule."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_errors(exc.errors(), model)}") from None


MAX_LISTED_PROBLEMS = 20


def describe_errors(errors: list[Any], model: type[Any]) -> str:
    """Get: every problem pydantic found, each naming its key path, on one line ("N problems:
    a: ...; b: ..."; at most MAX_LISTED_PROBLEMS, then how many more)."""
    return join_problems([_describe_error(dict(error), model) for error in errors])


def join_problems(described: list[str]) -> str:
    """Get: problems already described (each naming its key path) on one line, as
    describe_errors gives them."""
    if len(described) == 1:
        return described[0]
    listed = "; ".join(described[:MAX_LISTED_PROBLEMS])
    more = len(described) - MAX_LISTED_PROBLEMS
    return f"{len(described)} problems: {listed}" + (f"; and {more} more" if more > 0 else "")


def load_model(model: type[M], path: Path) -> M:
    """Load and validate one YAML file."""
    return validate_model(model, load_yaml_mapping(path), str(path))


def _is_configs_root(folder: Path) -> bool:
    return (folder / "missions").is_dir() and (folder / "stations").is_dir()


def example_configs_root() -> Path | None:
    """Get: the example configs shipped with satqkd (missions, stations, scenarios, benches):
    the source tree's `configs/`, else the copy an install put in `<prefix>/share/satqkd/`
    (pyproject data-files); None if neither is there."""
    import site
    import sys

    for candidate in (
        Path(__file__).resolve().parents[1] / "configs",
        Path(sys.prefix) / "share" / "satqkd" / "configs",
        Path(site.getuserbase()) / "share" / "satqkd" / "configs",  # pip install --user
    ):
        if _is_configs_root(candidate):
            return candidate
    return None


def configs_root_for(path: Path) -> Path:
    """The `configs/` directory a scenario file belongs to (the nearest folder above it with
    missions/ and stations/), else the example configs shipped with satqkd: a scenario copied
    anywhere still finds the missions and stations it names (paths it gives are relative to
    the scenario file)."""
    path = path.resolve()
    for parent in path.parents:
        if _is_configs_root(parent):
            return parent
    examples = example_configs_root()
    if examples is not None:
        return examples
    raise ConfigError(
        f"{path}: cannot find a configs directory (with missions/ and stations/) above it; "
        "give paths relative to the scenario, or copy the examples with 'satqkd init DIR'"
    )


def _resolve_named(root: Path, folder: str, name: str, source: Path, key: str) -> Path:
    if re.fullmatch(NAME_PATTERN, name):
        candidate = root / folder / f"{name}.yaml"
    else:
        candidate = (source.parent / name).resolve()
    if not candidate.is_file():
        available = sorted(p.stem for p in (root / folder).glob("*.yaml"))
        raise ConfigError(
            f"{source}: {key}: no {folder[:-1]} profile {name!r} "
            f"(available: {', '.join(available)})"
        )
    return candidate


class Scenario(BaseModel):
    """A scenario with its mission and station profiles resolved and validated."""

    model_config = ConfigDict(frozen=True)
    path: Path
    scenario: ScenarioConfig
    # a decoy-BB84 mission (MissionConfig, `source` required) or a BBM92 one (pair_source)
    mission: MissionConfig | MissionProfileConfig
    station: StationConfig


def load_scenario(path: str | Path, seed: int | None = None) -> Scenario:
    """Load a scenario YAML and the mission and station it names."""
    path = Path(path)
    scenario = load_model(ScenarioConfig, path)
    if seed is not None:  # validated like the file's own seed
        data = {**scenario.model_dump(exclude_unset=True), "seed": seed}
        scenario = validate_model(ScenarioConfig, data, f"{path} (with --seed)")
    root = configs_root_for(path)
    mission_path = _resolve_named(root, "missions", scenario.mission, path, "mission")
    station_path = _resolve_named(root, "stations", scenario.station, path, "station")
    # both profiles are checked before either problem is shown: every problem at once
    loaded: dict[str, Any] = {}
    problems = []
    try:  # the family decides the model (a problem with the file is reported below)
        family = load_yaml_mapping(mission_path).get("protocol", {})
    except ConfigError:
        family = {}
    bbm92 = isinstance(family, dict) and family.get("family") == "bbm92"
    for key, model, file in (
        ("mission", MissionProfileConfig if bbm92 else MissionConfig, mission_path),
        ("station", StationConfig, station_path),
    ):
        try:
            loaded[key] = load_model(model, file)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(" | ".join(problems))
    if loaded["station"].atmosphere.model == "lowtran7":
        _check_lowtran7(loaded["mission"], mission_path, loaded["station"], station_path)
    return Scenario(path=path, scenario=scenario, **loaded)


def _check_lowtran7(
    mission: MissionProfileConfig, mission_path: Path, station: StationConfig, station_path: Path
) -> None:
    """The LOWTRAN7 table covers the source's wavelength and the station's altitude."""
    from sim_backends.atmosphere import LOWTRAN7_BANDS_NM, LOWTRAN7_MAX_ALTITUDE_M

    wavelength = mission.quantum_wavelength_nm
    if not any(low <= wavelength <= high for low, high in LOWTRAN7_BANDS_NM):
        bands = ", ".join(f"{low:g}-{high:g}" for low, high in LOWTRAN7_BANDS_NM)
        raise ConfigError(
            f"{mission_path}: source.wavelength_nm: {wavelength:g} nm is outside the LOWTRAN7 "
            f"table ({bands} nm) that {station_path} (atmosphere.model: lowtran7) uses"
        )
    if not 0.0 <= station.location.altitude_m <= LOWTRAN7_MAX_ALTITUDE_M:
        raise ConfigError(
            f"{station_path}: location.altitude_m: must be in [0, {LOWTRAN7_MAX_ALTITUDE_M:g}] "
            f"with atmosphere.model lowtran7 (got {station.location.altitude_m:g})"
        )


def bench_path(scenario: Scenario, node: str, name: str | None = None) -> Path:
    """The bench YAML file a loaded scenario names for a node (or `name` instead)."""
    name = name if name is not None else getattr(scenario.scenario.simulation.benches, node)
    root = configs_root_for(scenario.path)
    return _resolve_named(root, "instruments", name, scenario.path, f"simulation.benches.{node}")


def station_path(scenario: Scenario) -> Path:
    """The station YAML file a loaded scenario names (for files the station refers to)."""
    root = configs_root_for(scenario.path)
    return _resolve_named(root, "stations", scenario.scenario.station, scenario.path, "station")


def unix_seconds(instant: datetime) -> float:
    """UTC seconds since the Unix epoch; naive datetimes are taken as UTC."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.timestamp()
