"""Tests of the fine-tracking loop shim (beacon sensor -> PI controller -> fast-steering mirror)."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from firmware_shims.fine_tracking import (
    FineTrackingController,
    FineTrackingLoop,
    MicroVibration,
    fine_tracking_residual_urad,
    fine_tracking_steps,
    fine_tracking_steps_reference,
    gauss_markov_steps,
    gauss_markov_steps_reference,
)
from satqkd_core.errors import InputError

QUIET = MicroVibration(broadband_rms_urad=0.0, tone_frequencies_hz=(), tone_amplitudes_urad=())

_finite = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False)
_lengths = st.sampled_from([0, 1, 2, 7, 8, 9, 63, 64, 65, 130])


def _axis_pairs(n: int, bound: float) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, (n, 2), elements=st.floats(-bound, bound, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n=_lengths,
    rho=st.floats(min_value=0.0, max_value=0.999999),
    innovation=st.floats(min_value=0.0, max_value=20.0),
    state=st.tuples(_finite, _finite),
)
def test_gauss_markov_kernel_matches_reference(
    data: st.DataObject, n: int, rho: float, innovation: float, state: tuple[float, float]
) -> None:
    normals = data.draw(_axis_pairs(n, 6.0))
    kernel_state = np.array(state, dtype=np.float64)
    out = np.empty((n, 2))
    gauss_markov_steps(normals, rho, innovation, kernel_state, out)
    ref_out, ref_state = gauss_markov_steps_reference(normals, rho, innovation, list(state))
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(kernel_state, ref_state)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n=_lengths,
    integral_gain=st.floats(min_value=0.0, max_value=0.4),
    proportional_gain=st.floats(min_value=0.0, max_value=0.9),
    alpha=st.floats(min_value=0.01, max_value=1.0),
    fsm_range=st.floats(min_value=0.5, max_value=100.0),  # small ranges exercise the clamps
    state=st.lists(_finite, min_size=6, max_size=6),
)
def test_loop_kernel_matches_reference(
    data: st.DataObject,
    n: int,
    integral_gain: float,
    proportional_gain: float,
    alpha: float,
    fsm_range: float,
    state: list[float],
) -> None:
    d = data.draw(_axis_pairs(n, 50.0))
    s = data.draw(_axis_pairs(n, 2.0))
    kernel_state = np.array(state, dtype=np.float64)
    residual = np.empty((n, 2))
    fine_tracking_steps(
        d, s, integral_gain, proportional_gain, alpha, fsm_range, kernel_state, residual
    )
    ref_residual, ref_state = fine_tracking_steps_reference(
        d, s, integral_gain, proportional_gain, alpha, fsm_range, state
    )
    np.testing.assert_allclose(residual, ref_residual, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kernel_state, ref_state, rtol=1e-12, atol=1e-12)


def test_results_do_not_depend_on_how_the_run_is_sliced() -> None:
    whole = FineTrackingController(FineTrackingLoop(), MicroVibration(), seed=5).step(3001)
    sliced = FineTrackingController(FineTrackingLoop(), MicroVibration(), seed=5)
    parts = [sliced.step(n) for n in (1, 999, 0, 1001, 1000)]
    np.testing.assert_array_equal(
        whole.residual_urad, np.concatenate([p.residual_urad for p in parts])
    )
    np.testing.assert_array_equal(
        whole.disturbance_urad, np.concatenate([p.disturbance_urad for p in parts])
    )
    assert [p.first_sample for p in parts] == [0, 1, 1000, 1000, 2001]
    assert sliced.samples_done == 3001


def test_run_until_steps_in_the_loops_own_time() -> None:
    controller = FineTrackingController(
        FineTrackingLoop(sample_rate_hz=2000.0, bandwidth_hz=100.0), QUIET, 1, 100.0
    )
    first = controller.run_until(100.01)  # samples at 100.0000 ... 100.0095
    assert first.residual_urad.shape == (20, 2)
    assert first.unix_s[0] == 100.0 and math.isclose(first.unix_s[-1], 100.0095)
    assert controller.now_unix_s == pytest.approx(100.01)
    assert controller.run_until(100.01).residual_urad.shape == (0, 2)  # nothing left to run
    assert controller.run_until(99.0).residual_urad.shape == (0, 2)  # never runs backwards


def test_default_loop_reduces_micius_like_micro_vibration_to_half_a_microradian() -> None:
    # Micius: 9.3 urad platform micro-vibration reduced to 0.47 urad (Opt. Express 28, 8291).
    vibration = MicroVibration()
    assert vibration.rms_urad == pytest.approx(9.3, abs=0.05)
    controller = FineTrackingController(FineTrackingLoop(), vibration, seed=11)
    controller.step(4000)  # let the loop pull in
    samples = controller.step(4000 * 40)
    disturbance_rms = math.sqrt(np.mean(np.sum(samples.disturbance_urad**2, axis=1)))
    residual_rms = math.sqrt(np.mean(samples.residual_magnitude_urad**2))
    assert 7.0 < disturbance_rms < 12.0  # 40 s hold ~50 correlation times of the 0.2 Hz term
    assert 0.4 < residual_rms < 0.65
    assert residual_rms < disturbance_rms / 12.0


def _sensitivity(loop: FineTrackingLoop, frequency_hz: float) -> float:
    """|E/D| of the loop equations in the module docstring at one frequency."""
    z = cmath.exp(2j * math.pi * frequency_hz / loop.sample_rate_hz)
    alpha = loop.fsm_alpha
    controller = (loop.integral_gain / (1.0 - 1.0 / z) + loop.proportional_gain) / z
    open_loop = alpha / (z - 1.0 + alpha) * controller
    return abs(1.0 / (1.0 + open_loop))


@pytest.mark.parametrize("frequency_hz", [5.0, 40.0, 150.0, 400.0])
@pytest.mark.parametrize("proportional_gain", [0.0, 0.3])
def test_a_tone_is_attenuated_by_the_loop_sensitivity(
    frequency_hz: float, proportional_gain: float
) -> None:
    loop = FineTrackingLoop(sensor_noise_urad=0.0, proportional_gain=proportional_gain)
    tone = MicroVibration(
        broadband_rms_urad=0.0, tone_frequencies_hz=(frequency_hz,), tone_amplitudes_urad=(3.0,)
    )
    controller = FineTrackingController(loop, tone, seed=2)
    controller.step(8000)  # transient gone
    samples = controller.step(int(loop.sample_rate_hz))  # whole number of tone periods
    residual_amplitude = math.sqrt(2.0 * np.mean(samples.residual_urad[:, 0] ** 2))
    assert residual_amplitude / 3.0 == pytest.approx(_sensitivity(loop, frequency_hz), rel=0.01)


def test_wider_bandwidth_tracks_better_and_sensor_noise_costs() -> None:
    times = np.arange(20, dtype=np.float64) + 0.5

    def mean_residual(loop: FineTrackingLoop) -> float:
        return float(np.mean(fine_tracking_residual_urad(loop, MicroVibration(), times, 3, 1.0)))

    narrow = mean_residual(FineTrackingLoop(bandwidth_hz=50.0))
    wide = mean_residual(FineTrackingLoop(bandwidth_hz=200.0))
    noisy = mean_residual(FineTrackingLoop(bandwidth_hz=200.0, sensor_noise_urad=2.0))
    assert wide < narrow * 0.7
    assert noisy > wide * 1.5


def test_a_stroke_limited_mirror_cannot_follow_a_large_disturbance() -> None:
    loop = FineTrackingLoop(sensor_noise_urad=0.0, fsm_range_urad=5.0)
    step = MicroVibration(
        broadband_rms_urad=0.0, tone_frequencies_hz=(1.0,), tone_amplitudes_urad=(20.0,)
    )
    samples = FineTrackingController(loop, step, seed=0).step(8000)
    residual = samples.residual_urad[:, 0]
    disturbance = samples.disturbance_urad[:, 0]
    # Where |d| exceeds the stroke, the residual is at least |d| - range.
    big = np.abs(disturbance) > 10.0
    assert np.all(np.abs(residual[big]) >= np.abs(disturbance[big]) - 5.0 - 1e-9)


def test_per_frame_residual_is_a_drop_in_pointing_error_array() -> None:
    frame_mid = 1.7e9 + np.arange(30, dtype=np.float64) + 0.5
    per_frame = fine_tracking_residual_urad(FineTrackingLoop(), MicroVibration(), frame_mid, 4, 1.0)
    again = fine_tracking_residual_urad(FineTrackingLoop(), MicroVibration(), frame_mid, 4, 1.0)
    other = fine_tracking_residual_urad(FineTrackingLoop(), MicroVibration(), frame_mid, 5, 1.0)
    instant = fine_tracking_residual_urad(FineTrackingLoop(), MicroVibration(), frame_mid, 4)
    assert per_frame.shape == instant.shape == (30,) and per_frame.dtype == np.float64
    assert np.all(np.isfinite(per_frame)) and np.all(per_frame > 0.0)
    np.testing.assert_array_equal(per_frame, again)
    assert not np.array_equal(per_frame, other)
    # A frame's rms averages ~4000 samples, so it varies far less than single samples do.
    assert np.std(per_frame) < np.std(instant)
    assert fine_tracking_residual_urad(FineTrackingLoop(), MicroVibration(), [], 4).shape == (0,)


def test_per_frame_rms_matches_the_time_series() -> None:
    loop = FineTrackingLoop(sample_rate_hz=1000.0, bandwidth_hz=50.0, fsm_bandwidth_hz=200.0)
    times = np.array([10.0, 10.25, 11.0])
    per_frame = fine_tracking_residual_urad(loop, MicroVibration(), times, 9, frame_s=0.5)
    # Rebuild by hand: the function starts its loop warm-up before the first frame.
    warmup_s = 50.0 / (2.0 * math.pi * loop.bandwidth_hz)
    start = 10.0 - 0.25 - warmup_s
    series = FineTrackingController(loop, MicroVibration(), 9, start).run_until(11.5)
    t, magnitude = series.unix_s, series.residual_magnitude_urad
    for centre, value in zip(times, per_frame, strict=True):
        inside = (t >= centre - 0.25 - 1e-9) & (t < centre + 0.25 - 1e-9)
        assert value == pytest.approx(math.sqrt(np.mean(magnitude[inside] ** 2)), rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bandwidth_hz": 500.0}, "sample_rate_hz / 16"),
        ({"fsm_bandwidth_hz": 300.0}, "fsm_bandwidth_hz must be >= 2 x bandwidth_hz"),
        ({"sample_rate_hz": -1.0}, "sample_rate_hz must be > 0"),
        ({"sensor_noise_urad": float("nan")}, "sensor_noise_urad must be >= 0"),
        ({"proportional_gain": 1.5}, "proportional_gain must be < 1"),
        ({"fsm_range_urad": True}, "fsm_range_urad must be a number"),
    ],
)
def test_bad_loop_parameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        FineTrackingLoop(**kwargs)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(InputError, match="tone_frequencies_hz and tone_amplitudes_urad"):
        MicroVibration(tone_frequencies_hz=(1.0,), tone_amplitudes_urad=())
    with pytest.raises(InputError, match="broadband_corner_hz must be > 0"):
        MicroVibration(broadband_corner_hz=0.0)
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        FineTrackingController(FineTrackingLoop(), QUIET, seed=-1)
    with pytest.raises(InputError, match="n_samples must be in"):
        FineTrackingController(FineTrackingLoop(), QUIET, seed=1).step(-3)
    with pytest.raises(InputError, match="unix_s must be finite and non-decreasing"):
        fine_tracking_residual_urad(FineTrackingLoop(), QUIET, [2.0, 1.0], 1)
    with pytest.raises(InputError, match="unix_s must be a 1-D array"):
        fine_tracking_residual_urad(FineTrackingLoop(), QUIET, [[1.0]], 1)
    with pytest.raises(InputError, match="frame_s must be > 0"):
        fine_tracking_residual_urad(FineTrackingLoop(), QUIET, [1.0], 1, frame_s=0.0)
    with pytest.raises(InputError, match="loop must be a FineTrackingLoop"):
        fine_tracking_residual_urad("fast", QUIET, [1.0], 1)  # type: ignore[arg-type]
