"""The fine-tracking loop: beacon sensor -> controller -> fast-steering mirror, at kHz rates.

On the ground terminal the fine-tracking controller runs in an FPGA or a real-time processor,
not in Python: every 1/sample_rate_hz it reads the beacon spot centroid on the fine-tracking
sensor, runs a PI controller and commands the fast-steering mirror (FSM). This shim emulates it
sample by sample in its own simulated time (`FineTrackingController.step` / `run_until`, driven
by whoever owns the clock), so the residual pointing error the quantum channel sees comes from
an actual closed loop rather than from an assumed rms.

Per axis, at sample k (one-sample sensor latency, zero-order-hold mirror command):

    e[k]   = d[k] - p[k]                          residual = disturbance - mirror correction
    s[k]   = e[k] + n[k]                          centroid reading, available at sample k + 1
    i[k]   = clip(i[k-1] + K_i s[k-1])            integrator, clipped to the FSM stroke
    c[k]   = clip(i[k] + K_p s[k-1])              mirror command
    p[k+1] = p[k] + alpha (c[k] - p[k])           first-order FSM response

K_i = 2 pi f_bw / f_s places the open-loop crossover at f_bw (an integrator's gain is 1 at
omega = K_i rad/sample), alpha = 1 - exp(-2 pi f_fsm / f_s) is the exact step response of a
first-order mirror of bandwidth f_fsm. Below f_bw the loop divides the disturbance by about
f / f_bw (sensitivity of a type-1 loop); the sensor noise passes with the complementary
sensitivity. The platform micro-vibration is a first-order Gauss-Markov (Ornstein-Uhlenbeck)
broadband term plus sinusoidal tones (reaction wheels, cryocooler); the Micius ATP system
reports 9.3 urad of platform micro-vibration reduced to 0.47 urad by its tracking loops
(Opt. Express 28(6), 8291 (2020)); the defaults here (9.3 urad in, 200 Hz crossover at
4 kHz, 0.3 urad sensor noise) leave about 0.52 urad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from satqkd_core.errors import InputError

__all__ = [
    "FineTrackingController",
    "FineTrackingLoop",
    "FineTrackingSamples",
    "MicroVibration",
    "fine_tracking_residual_urad",
    "fine_tracking_steps",
    "fine_tracking_steps_reference",
    "gauss_markov_steps",
    "gauss_markov_steps_reference",
]

# Samples per internal chunk: bounds memory for a whole pass (600 s at 4 kHz = 2.4e6 samples).
_CHUNK_SAMPLES = 1 << 18
# Warm-up before the first requested instant, in loop time constants 1 / (2 pi f_bw): the
# integrator has pulled in the initial offset to < e^-50 long before.
_WARMUP_TIME_CONSTANTS = 50.0
_MAX_SAMPLES = 1 << 34  # about 50 days at 4 kHz: anything larger is a units mistake
# Phase-margin guard: with two samples of latency (sensor readout + command hold) the type-1
# loop keeps >= ~45 deg of margin while K_i = 2 pi f_bw / f_s <= 2 pi / 16.
_MAX_BANDWIDTH_FRACTION = 1.0 / 16.0


@dataclass(frozen=True)
class MicroVibration:
    """Platform line-of-sight micro-vibration: Gauss-Markov broadband plus per-axis tones."""

    broadband_rms_urad: float = 9.2
    broadband_corner_hz: float = 0.2
    tone_frequencies_hz: tuple[float, ...] = (31.0, 95.0)
    tone_amplitudes_urad: tuple[float, ...] = (1.2, 0.4)

    def __post_init__(self) -> None:
        _check_number(self.broadband_rms_urad, "MicroVibration.broadband_rms_urad", zero=True)
        _check_number(self.broadband_corner_hz, "MicroVibration.broadband_corner_hz")
        if len(self.tone_frequencies_hz) != len(self.tone_amplitudes_urad):
            raise InputError(
                "MicroVibration.tone_frequencies_hz and tone_amplitudes_urad must have the same "
                f"length, got {len(self.tone_frequencies_hz)} and {len(self.tone_amplitudes_urad)}"
            )
        for f in self.tone_frequencies_hz:
            _check_number(f, "MicroVibration.tone_frequencies_hz entry")
        for a in self.tone_amplitudes_urad:
            _check_number(a, "MicroVibration.tone_amplitudes_urad entry", zero=True)

    @property
    def rms_urad(self) -> float:
        """Get the radial rms sqrt(E|d|^2) of the whole disturbance (a tone of peak a adds a^2)."""
        # Each axis carries a tone of peak a (variance a^2 / 2), so two axes add a^2.
        tones = sum(a * a for a in self.tone_amplitudes_urad)
        return math.sqrt(self.broadband_rms_urad**2 + tones)


@dataclass(frozen=True)
class FineTrackingLoop:
    """Loop rate, crossover, sensor noise (per-axis rms) and fast-steering-mirror limits."""

    sample_rate_hz: float = 4000.0
    bandwidth_hz: float = 200.0
    proportional_gain: float = 0.0
    sensor_noise_urad: float = 0.3
    fsm_bandwidth_hz: float = 1000.0
    fsm_range_urad: float = 2000.0

    def __post_init__(self) -> None:
        _check_number(self.sample_rate_hz, "FineTrackingLoop.sample_rate_hz")
        _check_number(self.bandwidth_hz, "FineTrackingLoop.bandwidth_hz")
        _check_number(self.proportional_gain, "FineTrackingLoop.proportional_gain", zero=True)
        _check_number(self.sensor_noise_urad, "FineTrackingLoop.sensor_noise_urad", zero=True)
        _check_number(self.fsm_bandwidth_hz, "FineTrackingLoop.fsm_bandwidth_hz")
        _check_number(self.fsm_range_urad, "FineTrackingLoop.fsm_range_urad")
        if self.bandwidth_hz > self.sample_rate_hz * _MAX_BANDWIDTH_FRACTION:
            raise InputError(
                f"FineTrackingLoop.bandwidth_hz must be <= sample_rate_hz / 16 "
                f"({self.sample_rate_hz / 16:g} Hz) for phase margin, got {self.bandwidth_hz:g}"
            )
        if self.fsm_bandwidth_hz < 2.0 * self.bandwidth_hz:
            raise InputError(
                "FineTrackingLoop.fsm_bandwidth_hz must be >= 2 x bandwidth_hz "
                f"({2 * self.bandwidth_hz:g} Hz), got {self.fsm_bandwidth_hz:g}"
            )
        if self.proportional_gain >= 1.0:
            raise InputError(
                f"FineTrackingLoop.proportional_gain must be < 1, got {self.proportional_gain}"
            )

    @property
    def integral_gain(self) -> float:
        """Get K_i = 2 pi f_bw / f_s (integrator gain per sample)."""
        return 2.0 * math.pi * self.bandwidth_hz / self.sample_rate_hz

    @property
    def fsm_alpha(self) -> float:
        """Get the per-sample step response 1 - exp(-2 pi f_fsm / f_s) of the mirror."""
        return 1.0 - math.exp(-2.0 * math.pi * self.fsm_bandwidth_hz / self.sample_rate_hz)


@dataclass(frozen=True)
class FineTrackingSamples:
    """A stretch of the loop's time series; arrays are (n, 2): x and y axes, urad."""

    first_sample: int
    start_unix_s: float
    sample_rate_hz: float
    disturbance_urad: np.ndarray
    residual_urad: np.ndarray

    @property
    def unix_s(self) -> np.ndarray:
        """Get the instant of each sample."""
        n = self.residual_urad.shape[0]
        return self.start_unix_s + np.arange(n, dtype=np.float64) / self.sample_rate_hz

    @property
    def residual_magnitude_urad(self) -> np.ndarray:
        """Get |e| of each sample."""
        return np.hypot(self.residual_urad[:, 0], self.residual_urad[:, 1])


def _check_number(value: object, name: str, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (value == 0.0 and not zero):
        raise InputError(f"{name} must be {'>= 0' if zero else '> 0'} and finite, got {value}")
    return value


@numba.njit(cache=True)
def gauss_markov_steps(
    normals: np.ndarray, rho: float, innovation: float, state: np.ndarray, out: np.ndarray
) -> None:
    """Set out[k] = rho out[k-1] + innovation normals[k] per column, continuing from state."""
    for k in range(normals.shape[0]):
        for axis in range(2):
            state[axis] = rho * state[axis] + innovation * normals[k, axis]
            out[k, axis] = state[axis]


def gauss_markov_steps_reference(
    normals: np.ndarray, rho: float, innovation: float, state: list[float]
) -> tuple[np.ndarray, list[float]]:
    """Get the same Gauss-Markov samples as gauss_markov_steps, and the final state, in Python."""
    x = [float(state[0]), float(state[1])]
    out = np.zeros((len(normals), 2))
    for k in range(len(normals)):
        for axis in range(2):
            x[axis] = rho * x[axis] + innovation * float(normals[k][axis])
            out[k, axis] = x[axis]
    return out, x


@numba.njit(cache=True)
def fine_tracking_steps(
    disturbance: np.ndarray,
    sensor_noise: np.ndarray,
    integral_gain: float,
    proportional_gain: float,
    fsm_alpha: float,
    fsm_range: float,
    state: np.ndarray,
    residual: np.ndarray,
) -> None:
    """Set the residual of each sample of the closed loop; state = (p, i, s) per axis, updated."""
    # state layout: [p_x, p_y, i_x, i_y, s_x, s_y] (mirror, integrator, last sensor reading)
    for k in range(disturbance.shape[0]):
        for axis in range(2):
            e = disturbance[k, axis] - state[axis]
            residual[k, axis] = e
            reading = state[4 + axis]
            integ = state[2 + axis] + integral_gain * reading
            integ = min(max(integ, -fsm_range), fsm_range)  # anti-windup at the stroke limit
            state[2 + axis] = integ
            command = min(max(integ + proportional_gain * reading, -fsm_range), fsm_range)
            state[axis] += fsm_alpha * (command - state[axis])
            state[4 + axis] = e + sensor_noise[k, axis]


def fine_tracking_steps_reference(
    disturbance: np.ndarray,
    sensor_noise: np.ndarray,
    integral_gain: float,
    proportional_gain: float,
    fsm_alpha: float,
    fsm_range: float,
    state: list[float],
) -> tuple[np.ndarray, list[float]]:
    """Get the same residuals and final state as fine_tracking_steps, written plainly."""
    mirror = [float(state[0]), float(state[1])]
    integrator = [float(state[2]), float(state[3])]
    reading = [float(state[4]), float(state[5])]
    residual = np.zeros((len(disturbance), 2))
    for k in range(len(disturbance)):
        for axis in range(2):
            error = float(disturbance[k][axis]) - mirror[axis]
            residual[k, axis] = error
            integrator[axis] = min(
                max(integrator[axis] + integral_gain * reading[axis], -fsm_range), fsm_range
            )
            command = min(
                max(integrator[axis] + proportional_gain * reading[axis], -fsm_range), fsm_range
            )
            mirror[axis] = mirror[axis] + fsm_alpha * (command - mirror[axis])
            reading[axis] = error + float(sensor_noise[k][axis])
    return residual, [*mirror, *integrator, *reading]


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


class FineTrackingController:
    """The fine-tracking loop stepping in its own simulated time from `start_unix_s`.

    Sample k happens at start_unix_s + k / sample_rate_hz. Results do not depend on how the
    caller slices the run into `step` calls (each noise source has its own generator).
    """

    def __init__(
        self,
        loop: FineTrackingLoop,
        vibration: MicroVibration,
        seed: int,
        start_unix_s: float = 0.0,
    ) -> None:
        if not isinstance(loop, FineTrackingLoop):
            raise InputError(f"loop must be a FineTrackingLoop, got {type(loop).__name__}")
        if not isinstance(vibration, MicroVibration):
            raise InputError(f"vibration must be a MicroVibration, got {type(vibration).__name__}")
        start = float(start_unix_s)
        if not math.isfinite(start):
            raise InputError(f"start_unix_s must be finite, got {start_unix_s!r}")
        seed = _check_seed(seed)
        self.loop = loop
        self.vibration = vibration
        self.start_unix_s = start
        self.samples_done = 0
        self._drive_rng = np.random.default_rng([seed, 1])
        self._noise_rng = np.random.default_rng([seed, 2])
        phases = np.random.default_rng([seed, 3]).uniform(
            0.0, 2.0 * math.pi, size=(len(vibration.tone_frequencies_hz), 2)
        )
        self._tone_phase = phases
        self._tone_frequency = np.asarray(vibration.tone_frequencies_hz, dtype=np.float64)
        self._tone_amplitude = np.asarray(vibration.tone_amplitudes_urad, dtype=np.float64)
        sigma = vibration.broadband_rms_urad / math.sqrt(2.0)  # per axis: E|d|^2 = rms^2
        self._rho = math.exp(-2.0 * math.pi * vibration.broadband_corner_hz / loop.sample_rate_hz)
        self._innovation = sigma * math.sqrt(1.0 - self._rho * self._rho)
        # Start the Gauss-Markov term in its stationary distribution, the loop at rest.
        self._gm_state = sigma * np.random.default_rng([seed, 4]).standard_normal(2)
        self._loop_state = np.zeros(6)

    @property
    def now_unix_s(self) -> float:
        """Get the instant of the next sample."""
        return self.start_unix_s + self.samples_done / self.loop.sample_rate_hz

    def step(self, n_samples: int) -> FineTrackingSamples:
        """Control: run the next n_samples of the loop and return their time series."""
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
            raise InputError(f"n_samples must be an integer, got {n_samples!r}")
        n = int(n_samples)
        if not 0 <= n <= _MAX_SAMPLES:
            raise InputError(f"n_samples must be in [0, {_MAX_SAMPLES}], got {n}")
        first = self.samples_done
        start = self.now_unix_s
        disturbance = np.empty((n, 2))
        residual = np.empty((n, 2))
        for lo in range(0, n, _CHUNK_SAMPLES):
            hi = min(n, lo + _CHUNK_SAMPLES)
            self._run_chunk(first + lo, disturbance[lo:hi], residual[lo:hi])
        self.samples_done = first + n
        return FineTrackingSamples(first, start, self.loop.sample_rate_hz, disturbance, residual)

    def run_until(self, unix_s: float) -> FineTrackingSamples:
        """Control: run every sample that falls before `unix_s` and return them."""
        target = float(unix_s)
        if not math.isfinite(target):
            raise InputError(f"unix_s must be finite, got {unix_s!r}")
        last = math.ceil((target - self.start_unix_s) * self.loop.sample_rate_hz - 1e-9)
        return self.step(max(0, last - self.samples_done))

    def _run_chunk(self, first_sample: int, disturbance: np.ndarray, residual: np.ndarray) -> None:
        n = disturbance.shape[0]
        normals = self._drive_rng.standard_normal((n, 2))
        gauss_markov_steps(normals, self._rho, self._innovation, self._gm_state, disturbance)
        if self._tone_frequency.size:
            t = (first_sample + np.arange(n, dtype=np.float64)) / self.loop.sample_rate_hz
            for f, a, phase in zip(
                self._tone_frequency, self._tone_amplitude, self._tone_phase, strict=True
            ):
                disturbance += a * np.sin(2.0 * math.pi * f * t[:, None] + phase[None, :])
        noise = self.loop.sensor_noise_urad * self._noise_rng.standard_normal((n, 2))
        fine_tracking_steps(
            disturbance,
            noise,
            self.loop.integral_gain,
            self.loop.proportional_gain,
            self.loop.fsm_alpha,
            self.loop.fsm_range_urad,
            self._loop_state,
            residual,
        )


def fine_tracking_residual_urad(
    loop: FineTrackingLoop,
    vibration: MicroVibration,
    unix_s: np.ndarray,
    seed: int,
    frame_s: float | None = None,
) -> np.ndarray:
    """Get the residual pointing error (urad) at each instant: |e|, or its rms over each frame.

    With frame_s None this is |e| at the sample in force at each instant (the same meaning as
    sim_backends.atp.tracking_residual_urad); with frame_s it is sqrt(mean |e|^2) over the
    frame [t - frame_s/2, t + frame_s/2) centred on each instant, the per-frame residual the
    link budget takes as `pointing_error_urad`.
    """
    if not isinstance(loop, FineTrackingLoop):
        raise InputError(f"loop must be a FineTrackingLoop, got {type(loop).__name__}")
    times = np.asarray(unix_s, dtype=np.float64)
    if times.ndim != 1:
        raise InputError(f"unix_s must be a 1-D array, got shape {times.shape}")
    if times.size and (not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0.0)):
        raise InputError("unix_s must be finite and non-decreasing")
    half = 0.0
    if frame_s is not None:
        half = _check_number(frame_s, "frame_s") / 2.0
    seed = _check_seed(seed)
    if times.size == 0:
        return np.zeros(0)
    rate = loop.sample_rate_hz
    warmup_s = _WARMUP_TIME_CONSTANTS / (2.0 * math.pi * loop.bandwidth_hz)
    start = float(times[0]) - half - warmup_s
    total = math.ceil((float(times[-1]) + half - start) * rate) + 1
    if total > _MAX_SAMPLES:
        raise InputError(f"unix_s spans {total} loop samples, more than {_MAX_SAMPLES}")
    controller = FineTrackingController(loop, vibration, seed, start)
    if frame_s is None:
        wanted = np.floor((times - start) * rate).astype(np.int64)
        out = np.empty(times.shape[0])
    else:
        lo_idx = np.ceil((times - half - start) * rate - 1e-9).astype(np.int64)
        hi_idx = np.ceil((times + half - start) * rate - 1e-9).astype(np.int64)
        hi_idx = np.maximum(hi_idx, lo_idx + 1)  # a frame shorter than a sample keeps one sample
        sums = np.zeros(times.shape[0])
    done = 0
    while done < total:
        chunk = controller.step(min(_CHUNK_SAMPLES, total - done))
        squared = np.sum(chunk.residual_urad**2, axis=1)
        end = done + squared.shape[0]
        if frame_s is None:
            inside = (wanted >= done) & (wanted < end)
            out[inside] = np.sqrt(squared[wanted[inside] - done])
        else:
            # Add this chunk's part of every frame via a prefix sum: O(chunk + frames).
            prefix = np.concatenate(([0.0], np.cumsum(squared)))
            a = np.clip(lo_idx - done, 0, squared.shape[0])
            b = np.clip(hi_idx - done, 0, squared.shape[0])
            sums += prefix[b] - prefix[a]
        done = end
    if frame_s is None:
        return out
    return np.sqrt(sums / (hi_idx - lo_idx))
