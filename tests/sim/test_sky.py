"""The station's truth: field-stop coupling, apparent direction with light time, mount model,
atmospheric tip/tilt, and the spot the emulators report in the ATP contract's conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.beacon import QuadCellBeacon
from drivers.fsm import PiGcsMirror
from drivers.gimbal import PtuGimbal
from satqkd_core.ephemeris import Station, topocentric
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.beacon import QuadCellEmulator
from sim_backends.emulators.fsm import GcsMirrorEmulator
from sim_backends.emulators.gimbal import PtuEmulator
from sim_backends.orbit import find_passes, sun_synchronous_tle
from sim_backends.sky import (
    ApparentTarget,
    BeaconLink,
    MountModel,
    StationSky,
    TipTiltSeries,
    coupling_into_field_stop,
    field_stop_coupling,
    field_stop_coupling_reference,
    sky_offset_urad,
)

T0 = 1_800_000_000.0
C_M_S = 299_792_458.0


# --- field-stop coupling -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    offsets=st.lists(st.floats(0.0, 400.0), min_size=0, max_size=70),
    radius=st.floats(0.5, 200.0),
    sigma=st.floats(0.2, 50.0),
)
def test_coupling_kernel_matches_reference(offsets: list[float], radius: float, sigma: float):
    values = np.array(offsets, dtype=np.float64)
    kernel = field_stop_coupling(values, radius, sigma)
    reference = field_stop_coupling_reference(values, radius, sigma)
    assert kernel.shape == values.shape
    np.testing.assert_allclose(kernel, reference, rtol=1e-12, atol=1e-14)


def test_coupling_of_a_centred_spot_is_the_rayleigh_law() -> None:
    # an unshifted 2-D Gaussian: P(|r| <= R) = 1 - exp(-R^2 / (2 sigma^2))
    for radius in (0.3, 1.0, 2.0, 3.5):
        got = field_stop_coupling(np.array([0.0]), radius, 1.0)[0]
        assert got == pytest.approx(1.0 - math.exp(-(radius**2) / 2.0), abs=2e-7)


def test_coupling_of_an_offset_spot_agrees_with_monte_carlo() -> None:
    z = np.random.default_rng(11).standard_normal((2, 400_000))
    for offset, radius in ((1.0, 1.5), (3.0, 2.0), (0.5, 3.0), (6.0, 5.0)):
        sampled = np.mean(np.hypot(z[0] + offset, z[1]) <= radius)
        assert field_stop_coupling(np.array([offset]), radius, 1.0)[0] == pytest.approx(
            sampled, abs=3e-3
        )


def test_coupling_falls_from_one_to_zero_across_the_field_stop() -> None:
    # 100 urad field of view, 5 urad spot: all in until near the edge, half at it, none beyond
    offsets = np.linspace(0.0, 80.0, 161)
    coupling = coupling_into_field_stop(offsets, 100.0, 5.0)
    assert np.all(np.diff(coupling) <= 1e-12)
    assert coupling[offsets <= 40.0].min() > 0.999
    assert coupling[np.searchsorted(offsets, 50.0)] == pytest.approx(0.5, abs=0.03)
    assert coupling[offsets >= 60.0].max() < 1e-3


def test_coupling_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="offset_urad must be finite and >= 0"):
        coupling_into_field_stop(np.array([-1.0]), 100.0, 5.0)
    with pytest.raises(InputError, match="1-D"):
        coupling_into_field_stop(np.zeros((2, 2)), 100.0, 5.0)
    with pytest.raises(InputError, match="field_of_view_urad must be > 0"):
        coupling_into_field_stop(np.zeros(3), 0.0, 5.0)
    with pytest.raises(InputError, match="spot_fwhm_urad must be a number"):
        coupling_into_field_stop(np.zeros(3), 100.0, "5")  # type: ignore[arg-type]


# --- geometry ----------------------------------------------------------------------------------


def _enu(az_deg: float, el_deg: float) -> tuple[float, float, float]:
    az, el = math.radians(az_deg), math.radians(el_deg)
    return math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)


def test_sky_offsets_follow_the_contract_signs() -> None:
    boresight = _enu(120.0, 40.0)
    x, y = sky_offset_urad(
        _enu(120.0 + math.degrees(50e-6 / math.cos(math.radians(40))), 40), boresight
    )
    assert x == pytest.approx(50.0, abs=0.01) and y == pytest.approx(0.0, abs=0.01)
    x, y = sky_offset_urad(_enu(120.0, 40.0 + math.degrees(30e-6)), boresight)
    assert x == pytest.approx(0.0, abs=0.01) and y == pytest.approx(30.0, abs=0.01)
    # the separation is exact far away too (90 deg from the boresight)
    x, y = sky_offset_urad(_enu(120.0, 40.0 + 90.0 - 1e-9), boresight)
    assert math.hypot(x, y) == pytest.approx(math.pi / 2 * 1e6, rel=1e-6)


def test_mount_model_offsets_and_tilt() -> None:
    perfect = MountModel()
    assert perfect.boresight(10.0, 30.0) == pytest.approx(_enu(10.0, 30.0), abs=1e-15)
    zero_points = MountModel(az_zero_urad=100.0, el_zero_urad=-80.0)
    x, y = sky_offset_urad(zero_points.boresight(10.0, 60.0), _enu(10.0, 60.0))
    assert x == pytest.approx(100.0 * math.cos(math.radians(60.0)), abs=0.01)
    assert y == pytest.approx(-80.0, abs=0.01)
    # an azimuth axis leaning 50 urad towards azimuth 90 (east): the zenith moves east by 50
    tilted = MountModel(axis_tilt_urad=50.0, axis_tilt_towards_az_deg=90.0)
    east, north, _ = tilted.boresight(0.0, 90.0)
    assert east == pytest.approx(50e-6, rel=1e-6) and abs(north) < 1e-12
    # and a pointing at right angles to the lean (north horizon) only rolls about itself
    x, y = sky_offset_urad(tilted.boresight(0.0, 0.0), _enu(0.0, 0.0))
    assert math.hypot(x, y) < 1e-3
    drawn = MountModel.from_seed(7, 150.0, 60.0)
    assert drawn == MountModel.from_seed(7, 150.0, 60.0) != MountModel.from_seed(8, 150.0, 60.0)
    with pytest.raises(InputError, match="axis_tilt_urad must be >= 0"):
        MountModel(axis_tilt_urad=-1.0)


def test_apparent_direction_lags_by_the_light_time() -> None:
    tle = sun_synchronous_tle(500.0, 22.5, T0)
    station = Station(40.3958, 117.5775, 900.0)
    passes = find_passes(tle[0], tle[1], station, T0, T0 + 2 * 86400.0, 30.0)
    window = passes[0]
    mid = 0.5 * (window.aos_unix_s + window.los_unix_s)
    target = ApparentTarget.from_tle(tle, station, mid - 60.0, mid + 60.0)
    for t in (mid - 40.0, mid, mid + 40.0):
        geometric = topocentric(tle[0], tle[1], station, np.array([t - 0.01, t, t + 0.01]))
        az, el = np.radians(geometric.azimuth_deg), np.radians(geometric.elevation_deg)
        vectors = np.stack([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)], 1)
        rate_rad_s = np.linalg.norm(vectors[2] - vectors[0]) / 0.02
        apparent = np.array(target.direction(t))
        lag = apparent - vectors[1]
        # the light left range / c ago: the satellite is seen that far back along its track
        assert np.linalg.norm(lag) == pytest.approx(
            rate_rad_s * geometric.range_m[1] / C_M_S, rel=0.01
        )
        assert float(lag @ (vectors[2] - vectors[0])) < 0.0
        assert 5e-6 < np.linalg.norm(lag) < 60e-6  # tens of urad at LEO
    with pytest.raises(InputError, match="outside the target grid"):
        target.direction(mid + 100.0)


def test_tip_tilt_series_is_seeded_with_unit_variance_and_its_spectrum() -> None:
    series = TipTiltSeries.generate(5, T0, 300.0, corner_hz=50.0, step_s=1e-3)
    again = TipTiltSeries.generate(5, T0, 300.0, corner_hz=50.0, step_s=1e-3)
    np.testing.assert_array_equal(series.xy, again.xy)
    assert not np.array_equal(series.xy, TipTiltSeries.generate(6, T0, 300.0, 50.0, 1e-3).xy)
    assert series.xy.std(axis=1) == pytest.approx([1.0, 1.0], abs=0.05)
    assert abs(float(np.corrcoef(series.xy)[0, 1])) < 0.05  # independent axes
    # measured spectrum: flat below the corner, -11/3 in log-log well above it
    power = np.abs(np.fft.rfft(series.xy[0])) ** 2
    f = np.fft.rfftfreq(series.xy.shape[1], 1e-3)

    def band(low: float, high: float) -> float:
        return float(power[(f >= low) & (f < high)].mean())

    model = lambda hz: (1.0 + (hz / 50.0) ** 2) ** (-11.0 / 6.0)  # noqa: E731
    assert band(5.0, 10.0) / band(10.0, 15.0) == pytest.approx(model(7.5) / model(12.5), rel=0.1)
    assert band(200.0, 220.0) / band(400.0, 440.0) == pytest.approx(2 ** (11 / 3), rel=0.15)
    assert series.at(T0 - 5.0) == (series.xy[0, 0], series.xy[1, 0])  # held at the ends
    with pytest.raises(InputError, match="Nyquist"):
        TipTiltSeries.generate(5, T0, 10.0, corner_hz=600.0, step_s=1e-3)


# --- the spot through the emulators and drivers ---------------------------------------------


def _fixed_target(az_deg: float, el_deg: float, span_s: float = 100.0) -> ApparentTarget:
    n = int(span_s / 0.5) + 2
    directions = np.tile(np.array(_enu(az_deg, el_deg)), (n, 1))
    return ApparentTarget(T0, 0.5, directions, np.full(n, el_deg), np.full(n, 1e6))


def _sky(mount: MountModel, tip_tilt_rms: float = 0.0) -> StationSky:
    return StationSky(
        target=_fixed_target(30.0, 45.0),
        mount_model=mount,
        tip_tilt=TipTiltSeries.generate(3, T0, 100.0, corner_hz=50.0, step_s=1e-3),
        tip_tilt_rms_urad_zenith=tip_tilt_rms,
        beacon=BeaconLink(np.array([T0, T0 + 100.0]), np.array([40.0, 40.0]), T0 + 1.0, T0 + 90.0),
        field_of_view_urad=100.0,
        spot_fwhm_urad=5.0,
    )


async def test_spot_through_drivers_follows_mount_error_and_mirror_signs() -> None:
    clock = SimClock(T0)
    sky = _sky(MountModel(az_zero_urad=100.0, el_zero_urad=-80.0))
    gimbal_unit = PtuEmulator(clock, resolution_arcsec=0.36, pan_limits=(-10**6, 10**6),
                              tilt_limits=(0, 900_000), max_speed=100_000)  # fmt: skip
    mirror_unit = GcsMirrorEmulator(clock)
    sensor_unit = QuadCellEmulator(clock, sky=sky.beacon_spot, centroid_noise_urad_at_ref=0.0)
    sky.attach(gimbal_unit, mirror_unit)
    for unit in (gimbal_unit, mirror_unit, sensor_unit):
        await unit.start_memory()
    gimbal = PtuGimbal("gimbal", gimbal_unit.memory_transport(), pan_resolution_arcsec=0.36,
                       tilt_resolution_arcsec=0.36)  # fmt: skip
    mirror = PiGcsMirror("fsm", mirror_unit.memory_transport())
    sensor = QuadCellBeacon("beacon", sensor_unit.memory_transport())
    try:
        for driver in (gimbal, mirror, sensor):
            await driver.connect(timeout_s=2.0)
        await gimbal.set_slew(10.0, 50.0)
        await gimbal.move_to(30.0, 45.0)
        await mirror.set_servo(True)
        await clock.advance_to(T0 + 0.5)
        assert not (await sensor.read_spot()).valid  # the satellite's beacon is not on yet
        await clock.advance_to(T0 + 10.0)
        spot = await sensor.read_spot()
        # the mount looks 100 urad further in azimuth and 80 urad lower than its encoders say
        assert spot.valid and spot.power_nw == pytest.approx(40.0)
        assert spot.x_urad == pytest.approx(-100.0 * math.cos(math.radians(45.0)), abs=0.5)
        assert spot.y_urad == pytest.approx(80.0, abs=0.5)
        # moving the mirror by +x moves the spot by -x (and tilt likewise in y)
        await mirror.move_to(20.0, -10.0)
        await clock.advance_to(T0 + 10.1)
        moved = await sensor.read_spot()
        assert moved.x_urad == pytest.approx(spot.x_urad - 20.0, abs=0.01)
        assert moved.y_urad == pytest.approx(spot.y_urad + 10.0, abs=0.01)
        await clock.advance_to(T0 + 95.0)
        assert not (await sensor.read_spot()).valid  # the beacon is off again
    finally:
        for driver in (gimbal, mirror, sensor):
            await driver.close()
        for unit in (gimbal_unit, mirror_unit, sensor_unit):
            await unit.stop()


async def _tiny_fine_loop(close_loop: bool) -> StationSky:
    """A 10 Hz integrator on the beacon spot (the contract's law: add the spot to the mirror),
    or none; returns the sky with its truth samples."""
    clock = SimClock(T0)
    sky = _sky(MountModel(az_zero_urad=60.0, el_zero_urad=-40.0, axis_tilt_urad=20.0), 1.5)
    gimbal_unit = PtuEmulator(clock, resolution_arcsec=0.36, pan_limits=(-10**6, 10**6),
                              tilt_limits=(0, 900_000), max_speed=100_000)  # fmt: skip
    gimbal_unit.pan.position = gimbal_unit.pan.target = 30.0 * 10_000
    gimbal_unit.tilt.position = gimbal_unit.tilt.target = 45.0 * 10_000
    mirror_unit = GcsMirrorEmulator(clock)
    sensor_unit = QuadCellEmulator(clock, sky=sky.beacon_spot, seed=4)
    sky.attach(gimbal_unit, mirror_unit)
    for unit in (mirror_unit, sensor_unit):
        await unit.start_memory()
    mirror = PiGcsMirror("fsm", mirror_unit.memory_transport())
    sensor = QuadCellBeacon("beacon", sensor_unit.memory_transport())
    try:
        await mirror.connect(timeout_s=2.0)
        await sensor.connect(timeout_s=2.0)
        await mirror.set_servo(True)
        command = (0.0, 0.0)
        for k in range(300):
            t = T0 + 2.0 + 0.1 * k
            await clock.advance_to(t)
            sky.sample(t)
            spot = await sensor.read_spot()
            if close_loop and spot.valid:
                command = (command[0] + 0.5 * spot.x_urad, command[1] + 0.5 * spot.y_urad)
                await mirror.move_to(*command)
    finally:
        await mirror.close()
        await sensor.close()
        await mirror_unit.stop()
        await sensor_unit.stop()
    return sky


async def test_a_fine_loop_on_the_spot_nulls_the_residual_and_couples_the_signal() -> None:
    closed = await _tiny_fine_loop(close_loop=True)
    open_ = await _tiny_fine_loop(close_loop=False)
    late = closed.samples.column("unix_s") > T0 + 5.0
    closed_rms = float(np.sqrt(np.mean(closed.samples.column("residual_urad")[late] ** 2)))
    open_rms = float(np.sqrt(np.mean(open_.samples.column("residual_urad")[late] ** 2)))
    # tip/tilt of 1.5 urad per axis (x sqrt(airmass 1.41)) left over, against ~60 urad of mount
    # error when nothing steers
    assert 1.0 < closed_rms < 5.0
    assert 50.0 < open_rms < 70.0
    assert closed.mean_coupling(T0 + 5.0, T0 + 32.0) > 0.999
    assert open_.mean_coupling(T0 + 5.0, T0 + 32.0) < 1e-3
    summary = closed.tracking_summary(T0, T0 + 90.0)
    assert summary["acquired"] and summary["acquisition_time_s"] < 3.0
    assert summary["inside_field_of_view_fraction"] > 0.99
    assert not open_.tracking_summary(T0, T0 + 90.0)["acquired"]


def test_the_tracking_summary_counts_aos_to_los_not_the_park_at_los() -> None:
    sky = _sky(MountModel())
    for k in range(100):  # tracked at 3 urad from AOS, then the station parks at LOS
        sky.samples.append(T0 + 0.05 * k, 3.0, 0.0, 3.0, 40.0)
    sky.samples.append(T0 + 5.0, -400.0, -400.0, 566.0, 40.0)
    summary = sky.tracking_summary(T0, T0 + 5.0)
    assert summary["acquisition_time_s"] == 0.0
    assert summary["tracking_rms_urad"] == pytest.approx(3.0)
    assert summary["inside_field_of_view_fraction"] == 1.0
