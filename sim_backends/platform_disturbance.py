"""The satellite platform's line-of-sight disturbance the payload's pointing must reject.

Nature on the space end of the link, per axis (x, y) in urad, sampled at the payload's fine
loop rate:

- attitude knowledge error: body pointing is commanded from the attitude estimate and the
  station's predicted direction, so the line of sight starts off by the estimate's error (a
  constant per pass, Gaussian, sigma = a third of the 1 mrad-class 3-sigma cone) and wanders
  slowly with it (a first-order Gauss-Markov drift, Lorentzian spectrum, corner ~0.01 Hz);
- micro-vibration: reaction wheels, gyros and the cryocooler shake the line of sight with
  tones and a broadband floor. On Micius the angular micro-vibration was 9.3 urad with its
  energy mainly below 30 Hz, reduced to 0.47 urad by the ATP loops ("Angular micro-vibration
  of the Micius satellite measured by an optical sensor and the method for its suppression",
  2021). Tones: a sine per axis with a seeded phase; broadband: a Lorentzian spectrum
  (1 + (f / f_c)^2)^-1 of the given corner.

Broadband terms are synthesised by FFT (as sim_backends.sky does for atmospheric tip/tilt), so
the whole window is drawn at once from the scenario's seed; no per-sample Python objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError

__all__ = ["PlatformDisturbance", "PointingScene", "lorentzian_series"]

_MAX_SAMPLES = 1 << 25  # 2 axes x 33 M samples: ~28 min at 20 kHz; more is a units mistake


def _number(value: object, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (positive and value == 0.0):
        raise InputError(f"{name} must be {'> 0' if positive else '>= 0'} and finite, got {value}")
    return value


@dataclass(frozen=True)
class PlatformDisturbance:
    """What shakes and biases the payload's line of sight (urad, Hz).

    `micro_vibration_scale` multiplies the tones and the broadband floor (a degraded platform).
    Tone amplitudes are per-axis peaks; broadband and drift rms are radial, sqrt(E|d|^2)."""

    attitude_knowledge_error_3sigma_urad: float = 1000.0
    attitude_drift_rms_urad: float = 20.0
    attitude_drift_corner_hz: float = 0.01
    broadband_rms_urad: float = 9.0
    broadband_corner_hz: float = 0.2
    tone_frequencies_hz: tuple[float, ...] = (12.0, 27.0)
    tone_amplitudes_urad: tuple[float, ...] = (1.5, 1.0)
    micro_vibration_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "attitude_knowledge_error_3sigma_urad",
            "attitude_drift_rms_urad",
            "broadband_rms_urad",
            "micro_vibration_scale",
        ):
            _number(getattr(self, name), f"PlatformDisturbance.{name}")
        for name in ("attitude_drift_corner_hz", "broadband_corner_hz"):
            _number(getattr(self, name), f"PlatformDisturbance.{name}", positive=True)
        if len(self.tone_frequencies_hz) != len(self.tone_amplitudes_urad):
            raise InputError(
                "PlatformDisturbance.tone_frequencies_hz and tone_amplitudes_urad must have the "
                f"same length, got {len(self.tone_frequencies_hz)} and "
                f"{len(self.tone_amplitudes_urad)}"
            )
        for f in self.tone_frequencies_hz:
            _number(f, "PlatformDisturbance.tone_frequencies_hz entry", positive=True)
        for a in self.tone_amplitudes_urad:
            _number(a, "PlatformDisturbance.tone_amplitudes_urad entry")

    @property
    def micro_vibration_rms_urad(self) -> float:
        """Get the radial rms of the micro-vibration (tones and broadband, scaled)."""
        tones = sum(a * a for a in self.tone_amplitudes_urad)  # a^2 / 2 per axis, two axes
        return self.micro_vibration_scale * math.sqrt(self.broadband_rms_urad**2 + tones)

    def scaled_to(self, micro_vibration_rms_urad: float) -> PlatformDisturbance:
        """Get the same spectrum with the micro-vibration scaled to a radial rms."""
        target = _number(micro_vibration_rms_urad, "micro_vibration_rms_urad")
        base = self.micro_vibration_rms_urad / self.micro_vibration_scale
        if base == 0.0:
            raise InputError("PlatformDisturbance has no micro-vibration to scale")
        return _replace(self, micro_vibration_scale=target / base)

    def micro_vibration(
        self, seed: int, sample_rate_hz: float, n_samples: int, start_unix_s: float = 0.0
    ) -> np.ndarray:
        """Get the micro-vibration (2, n) in urad: tones plus broadband, scaled."""
        rate, n = _grid(sample_rate_hz, n_samples)
        draw = np.random.default_rng(_seed(seed))
        t = start_unix_s + np.arange(n) / rate
        out = lorentzian_series(draw, n, rate, self.broadband_corner_hz, self.broadband_rms_urad)
        nyquist = rate / 2.0
        for f, a in zip(self.tone_frequencies_hz, self.tone_amplitudes_urad, strict=True):
            phases = draw.uniform(0.0, 2.0 * math.pi, size=2)
            if f >= nyquist:  # a tone the loop cannot even see: aliasing it would be a lie
                continue
            for axis in range(2):
                out[axis] += a * np.sin(2.0 * math.pi * f * t + phases[axis])
        return self.micro_vibration_scale * out

    def attitude_error(self, seed: int, sample_rate_hz: float, n_samples: int) -> np.ndarray:
        """Get the attitude knowledge error (2, n) in urad: a per-pass bias plus a slow drift."""
        rate, n = _grid(sample_rate_hz, n_samples)
        draw = np.random.default_rng(_seed(seed))
        sigma = self.attitude_knowledge_error_3sigma_urad / 3.0
        cone = self.attitude_knowledge_error_3sigma_urad
        bias = np.zeros(2)
        if sigma > 0.0:
            while True:  # truncated to the 3-sigma cone, as the acquisition budget assumes
                bias = draw.normal(0.0, sigma, size=2)
                if math.hypot(bias[0], bias[1]) <= cone:
                    break
        drift = lorentzian_series(
            draw, n, rate, self.attitude_drift_corner_hz, self.attitude_drift_rms_urad
        )
        return drift + bias[:, None]


@dataclass(frozen=True)
class PointingScene:
    """What the payload's tracking sensor faces over a window, on the loop's sample grid:
    the platform's line-of-sight disturbance, the sensor's centroid noise, and whether the
    station's uplink beacon reaches the sensor at each sample."""

    start_unix_s: float
    sample_rate_hz: float
    disturbance_urad: np.ndarray  # (2, n)
    noise_urad: np.ndarray  # (2, n)
    beacon_visible: np.ndarray  # (n,) bool
    micro_vibration_rms_urad: float = math.nan  # radial rms of the micro-vibration part

    def __post_init__(self) -> None:
        n = self.beacon_visible.shape[0]
        if self.disturbance_urad.shape != (2, n) or self.noise_urad.shape != (2, n):
            raise InputError(
                f"PointingScene arrays must be (2, n) and (n,), got "
                f"{self.disturbance_urad.shape}, {self.noise_urad.shape}, ({n},)"
            )
        _number(self.sample_rate_hz, "PointingScene.sample_rate_hz", positive=True)

    @property
    def n_samples(self) -> int:
        """Get the number of samples."""
        return int(self.beacon_visible.shape[0])

    def sample_index(self, unix_s: float) -> int:
        """Get the index of the first sample at or after an instant (clamped to the scene)."""
        k = math.ceil((unix_s - self.start_unix_s) * self.sample_rate_hz - 1e-9)
        return min(max(k, 0), self.n_samples)

    @classmethod
    def generate(
        cls,
        disturbance: PlatformDisturbance,
        seed: int,
        start_unix_s: float,
        duration_s: float,
        sample_rate_hz: float,
        sensor_noise_urad: float,
        beacon_on: tuple[float, float] | None = None,
    ) -> PointingScene:
        """Get a seeded scene: attitude error plus micro-vibration, centroid noise (per-axis
        rms) and the beacon visible inside `beacon_on` (unix s; None: throughout)."""
        rate = _number(sample_rate_hz, "sample_rate_hz", positive=True)
        duration = _number(duration_s, "duration_s", positive=True)
        noise = _number(sensor_noise_urad, "sensor_noise_urad")
        n = math.ceil(duration * rate)
        key = _seed(seed)
        total = disturbance.attitude_error(key, rate, n)
        micro = disturbance.micro_vibration(key + 1, rate, n, start_unix_s)
        micro_rms = float(np.sqrt(np.mean(np.sum(micro**2, axis=0)))) if n else 0.0
        total += micro
        draw = np.random.default_rng(key + 2)
        t = start_unix_s + np.arange(n) / rate
        visible = np.ones(n, dtype=bool)
        if beacon_on is not None:
            visible = (t >= beacon_on[0]) & (t <= beacon_on[1])
        noise_urad = noise * draw.standard_normal((2, n))
        return cls(float(start_unix_s), rate, total, noise_urad, visible, micro_rms)


def lorentzian_series(
    draw: np.random.Generator, n: int, rate_hz: float, corner_hz: float, rms_urad: float
) -> np.ndarray:
    """Get (2, n) independent zero-mean axes whose spectrum is (1 + (f / f_c)^2)^-1 and whose
    radial rms is `rms_urad` (per axis rms / sqrt 2), by Fourier synthesis."""
    out = np.zeros((2, n))
    if rms_urad == 0.0 or n < 2:
        return out
    n_fft = 1 << max(1, (n - 1).bit_length())
    f = np.fft.rfftfreq(n_fft, 1.0 / rate_hz)
    amplitude = (1.0 + (f / corner_hz) ** 2) ** -0.5
    amplitude[0] = 0.0  # a constant is the attitude bias's business
    variance = (2.0 * np.sum(amplitude[1:-1] ** 2) + amplitude[-1] ** 2) / n_fft**2
    per_axis = rms_urad / math.sqrt(2.0)
    for axis in range(2):
        coefficients = amplitude * (
            draw.standard_normal(f.size) + 1j * draw.standard_normal(f.size)
        )
        coefficients /= math.sqrt(2.0)
        coefficients[-1] = amplitude[-1] * draw.standard_normal()
        out[axis] = np.fft.irfft(coefficients, n_fft)[:n] * (per_axis / math.sqrt(variance))
    return out


def _grid(sample_rate_hz: float, n_samples: int) -> tuple[float, int]:
    rate = _number(sample_rate_hz, "sample_rate_hz", positive=True)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise InputError(f"n_samples must be an integer, got {n_samples!r}")
    if not 0 <= n_samples <= _MAX_SAMPLES:
        raise InputError(f"n_samples must be in 0..{_MAX_SAMPLES}, got {n_samples}")
    return rate, int(n_samples)


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed) % (1 << 63)


def _replace(model: PlatformDisturbance, **changes: float) -> PlatformDisturbance:
    import dataclasses

    return dataclasses.replace(model, **changes)
