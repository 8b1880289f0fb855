"""Tests of the downlink budget against hand-computed values and limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from satqkd_core.ephemeris import Geometry
from satqkd_core.errors import InputError
from sim_backends.link import (
    Atmosphere,
    Background,
    ReceiverOptics,
    TransmitterOptics,
    airmass_kasten_young,
    link_budget,
)

TX = TransmitterOptics(
    wavelength_nm=850.0, aperture_diameter_m=0.1, divergence_urad=20.0, optics_efficiency=0.5
)
RX = ReceiverOptics(aperture_diameter_m=1.0, optics_efficiency=0.25, field_of_view_urad=100.0)
CLEAR = Atmosphere(zenith_loss_db=0.8)
DARK = Background("dark_night")


def _geometry(range_m: list[float], elevation_deg: list[float], t0: float = 0.0) -> Geometry:
    n = len(range_m)
    return Geometry(
        unix_s=t0 + np.arange(n, dtype=float),
        range_m=np.array(range_m, dtype=float),
        range_rate_m_s=np.zeros(n),
        elevation_deg=np.array(elevation_deg, dtype=float),
        azimuth_deg=np.zeros(n),
        sat_speed_m_s=np.full(n, 7600.0),
        point_ahead_urad=np.full(n, 50.0),
    )


def test_zenith_budget_matches_hand_computation() -> None:
    budget = link_budget(_geometry([500e3], [90.0]), TX, RX, CLEAR, DARK, np.zeros(1), None)
    # w = sqrt(0.05^2 + (10e-6 * 500e3)^2) = 5.00025 m; eta = 1 - exp(-2 * 0.5^2 / w^2).
    w = math.sqrt(0.05**2 + 5.0**2)
    eta_geo = 1.0 - math.exp(-2.0 * 0.25 / w**2)
    assert budget.geometric_loss_db[0] == pytest.approx(-10 * math.log10(eta_geo), rel=1e-12)
    assert budget.geometric_loss_db[0] == pytest.approx(17.03, abs=0.01)  # eta = 0.019799
    assert budget.pointing_loss_db[0] == 0.0
    # Kasten & Young at 90 deg: 1 / (1 + 0.50572 * 96.07995^-1.6364) = 0.99970.
    assert budget.atmospheric_loss_db[0] == pytest.approx(0.8 * 0.99970, abs=1e-5)
    assert budget.scintillation_loss_db[0] == 0.0
    assert budget.transmitter_optics_loss_db[0] == pytest.approx(3.0103, abs=1e-4)
    assert budget.receiver_optics_loss_db[0] == pytest.approx(6.0206, abs=1e-4)
    terms = (
        budget.geometric_loss_db
        + budget.pointing_loss_db
        + budget.atmospheric_loss_db
        + budget.scintillation_loss_db
        + budget.transmitter_optics_loss_db
        + budget.receiver_optics_loss_db
    )
    np.testing.assert_allclose(budget.total_loss_db, terms, rtol=1e-14)
    np.testing.assert_allclose(budget.transmittance, 10 ** (-terms / 10), rtol=1e-12)
    expected = eta_geo * 0.5 * 0.25 * 10 ** (-0.08 * 0.99970)
    assert budget.transmittance[0] == pytest.approx(expected, rel=1e-5)


def test_airmass_limits() -> None:
    assert airmass_kasten_young(np.array([90.0]))[0] == pytest.approx(1.0, abs=5e-4)
    assert airmass_kasten_young(np.array([30.0]))[0] == pytest.approx(1.995, abs=0.005)
    # At the horizon the fit gives 1 / (0.50572 * 6.07995^-1.6364) = 37.92 (their tabulated
    # value is 38.09); a plane-parallel 1/sin(E) would diverge.
    assert airmass_kasten_young(np.array([0.0]))[0] == pytest.approx(37.92, abs=0.01)
    elevations = np.linspace(0.0, 90.0, 91)
    assert np.all(np.diff(airmass_kasten_young(elevations)) < 0.0)


def test_zenith_versus_horizon_and_below() -> None:
    geometry = _geometry([500e3, 1200e3, 2500e3, 3000e3], [90.0, 30.0, 0.0, -2.0])
    budget = link_budget(geometry, TX, RX, CLEAR, DARK, np.zeros(4), None)
    assert np.all(np.diff(budget.geometric_loss_db[:3]) > 0.0)
    assert np.all(np.diff(budget.atmospheric_loss_db[:3]) > 0.0)
    assert budget.atmospheric_loss_db[2] == pytest.approx(0.8 * 37.92, abs=0.01)
    assert budget.transmittance[3] == 0.0 and budget.atmospheric_loss_db[3] == np.inf
    assert np.all(budget.transmittance[:3] > 0.0)


def test_pointing_loss_follows_the_gaussian_far_field() -> None:
    errors = np.array([0.0, 1.0, 5.0, 10.0])
    budget = link_budget(_geometry([600e3] * 4, [60.0] * 4), TX, RX, CLEAR, DARK, errors, None)
    # Half-angle 10 urad: exp(-2 theta^2 / 100) -> 0.0869, 2.171, 8.686 dB at 1, 5, 10 urad.
    expected = -10 * np.log10(np.exp(-2 * errors**2 / 10.0**2))
    np.testing.assert_allclose(budget.pointing_loss_db, expected, rtol=1e-12, atol=1e-15)
    assert budget.pointing_loss_db[3] == pytest.approx(8.686, abs=1e-3)
    scalar = link_budget(_geometry([600e3] * 4, [60.0] * 4), TX, RX, CLEAR, DARK, 5.0, None)
    np.testing.assert_allclose(scalar.pointing_loss_db, expected[2])


def test_diffraction_limit_and_obscuration() -> None:
    narrow = TransmitterOptics(850.0, 0.1, 0.1, 1.0)
    # lambda / (pi w0) = 850e-9 / (pi * 0.05) = 5.411 urad > 0.05 urad designed half-angle.
    assert narrow.far_field_half_angle_urad == pytest.approx(5.4113, abs=1e-4)
    obscured = ReceiverOptics(1.0, 0.25, 100.0, central_obscuration_diameter_m=0.3)
    geometry = _geometry([500e3], [90.0])
    clear_aperture = link_budget(geometry, TX, RX, CLEAR, DARK, np.zeros(1), None)
    annulus = link_budget(geometry, TX, obscured, CLEAR, DARK, np.zeros(1), None)
    w2 = 0.05**2 + 5.0**2
    ratio = (math.exp(-2 * 0.15**2 / w2) - math.exp(-2 * 0.25 / w2)) / (
        1 - math.exp(-2 * 0.25 / w2)
    )
    assert annulus.transmittance[0] / clear_aperture.transmittance[0] == pytest.approx(ratio)


def test_weather_and_passing_cloud() -> None:
    geometry = _geometry([600e3] * 6, [60.0] * 6, t0=1000.0)
    airmass = airmass_kasten_young(np.array([60.0]))[0]
    haze = link_budget(geometry, TX, RX, Atmosphere(0.8, "haze"), DARK, np.zeros(6), None)
    np.testing.assert_allclose(haze.atmospheric_loss_db, 3 * 0.8 * airmass)
    cloud = Atmosphere(
        0.8, "clear", cloud_start_unix_s=1002.0, cloud_stop_unix_s=1004.0, cloud_extra_loss_db=7.0
    )
    budget = link_budget(geometry, TX, RX, cloud, DARK, np.zeros(6), None)
    extra = budget.atmospheric_loss_db - 0.8 * airmass
    np.testing.assert_allclose(extra, [0, 0, 7, 7, 0, 0], atol=1e-12)


def test_scintillation_is_unit_mean_lognormal_and_seeded() -> None:
    n = 20_000
    geometry = _geometry([600e3] * n, [30.0] * n)
    atmosphere = Atmosphere(0.8, scintillation_index_zenith=0.05)
    first = link_budget(geometry, TX, RX, atmosphere, DARK, np.zeros(n), scintillation_seed=4)
    again = link_budget(geometry, TX, RX, atmosphere, DARK, np.zeros(n), scintillation_seed=4)
    np.testing.assert_array_equal(first.scintillation_loss_db, again.scintillation_loss_db)
    fading = 10 ** (-first.scintillation_loss_db / 10)
    index = 0.05 * airmass_kasten_young(np.array([30.0]))[0] ** (11 / 6)
    assert np.mean(fading) == pytest.approx(1.0, abs=4 * math.sqrt(index / n))
    assert np.var(fading) == pytest.approx(index, rel=0.1)
    none = link_budget(geometry, TX, RX, atmosphere, DARK, np.zeros(n), scintillation_seed=None)
    assert np.all(none.scintillation_loss_db == 0.0)
    # Near the horizon 0.05 * airmass^(11/6) ~ 11 would overshoot; the index saturates at 1.
    low = link_budget(_geometry([2500e3] * n, [2.0] * n), TX, RX, atmosphere, DARK, np.zeros(n), 8)
    assert np.var(10 ** (-low.scintillation_loss_db / 10)) == pytest.approx(1.0, rel=0.3)


def test_background_rate_from_sky_radiance() -> None:
    receiver = ReceiverOptics(1.0, 0.25, 100.0, filter_bandwidth_nm=2.0)
    budget = link_budget(
        _geometry([600e3], [60.0]), TX, receiver, CLEAR, Background("dark_night"), 0.0, None
    )
    # L * Omega * A * dlambda * eta / (h c / lambda) / 4 detectors.
    omega = math.pi * (50e-6) ** 2
    photon_j = 6.62607015e-34 * 299792458.0 / 850e-9
    expected = 5.3e-9 * omega * math.pi * 0.25 * 2.0 * 0.25 / photon_j / 4
    assert budget.background_counts_per_s[0] == pytest.approx(expected, rel=1e-12)
    moon = link_budget(
        _geometry([600e3], [60.0]), TX, receiver, CLEAR, Background("moon"), 0.0, None
    )
    assert moon.background_counts_per_s[0] == pytest.approx(10 * expected)
    explicit = Background(radiance_w_m2_sr_nm=0.0)
    dark = link_budget(_geometry([600e3], [60.0]), TX, receiver, CLEAR, explicit, 0.0, None)
    assert dark.background_counts_per_s[0] == 0.0


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(InputError, match="divergence_urad"):
        TransmitterOptics(850.0, 0.1, 0.0, 0.5)
    with pytest.raises(InputError, match="optics_efficiency"):
        ReceiverOptics(1.0, 1.5, 100.0)
    with pytest.raises(InputError, match="central_obscuration"):
        ReceiverOptics(1.0, 0.5, 100.0, central_obscuration_diameter_m=1.0)
    with pytest.raises(InputError, match="weather"):
        Atmosphere(weather="fog")
    with pytest.raises(InputError, match="cloud_stop_unix_s"):
        Atmosphere(cloud_start_unix_s=10.0)
    with pytest.raises(InputError, match="sky_class"):
        Background("daylight")
    geometry = _geometry([600e3] * 3, [60.0] * 3)
    with pytest.raises(InputError, match="pointing_error_urad"):
        link_budget(geometry, TX, RX, CLEAR, DARK, np.zeros(2), None)
    with pytest.raises(InputError, match="pointing_error_urad"):
        link_budget(geometry, TX, RX, CLEAR, DARK, np.array([0.0, -1.0, 0.0]), None)
    with pytest.raises(InputError, match="scintillation_seed"):
        link_budget(geometry, TX, RX, CLEAR, DARK, np.zeros(3), 1.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="tx"):
        link_budget(geometry, RX, RX, CLEAR, DARK, np.zeros(3), None)  # type: ignore[arg-type]


def test_divergence_read_as_fwhm_widens_the_beam_by_its_definition() -> None:
    geometry = _geometry([1.2e6], [30.0])
    fwhm = TransmitterOptics(850.0, 0.1, 20.0, 0.5, divergence_definition="fwhm_full_angle")
    e2 = link_budget(geometry, TX, RX, CLEAR, DARK, 0.0, None)
    wider = link_budget(geometry, fwhm, RX, CLEAR, DARK, 0.0, None)
    # FWHM = sqrt(2 ln 2) x the 1/e^2 radius: the radius grows by 2 / sqrt(2 ln 2) = 1.699
    expected_db = 20 * math.log10(2 / math.sqrt(2 * math.log(2)))
    difference = wider.geometric_loss_db[0] - e2.geometric_loss_db[0]
    assert difference == pytest.approx(expected_db, abs=0.02)
    with pytest.raises(InputError, match="divergence_definition"):
        TransmitterOptics(850.0, 0.1, 20.0, 0.5, divergence_definition="half_angle")


def test_pointing_jitter_average_matches_sampled_jitter() -> None:
    geometry = _geometry([1e6], [45.0])
    jitter, offset = 3.0, 4.0  # urad: per-axis rms, static offset
    tx = TransmitterOptics(850.0, 0.1, 20.0, 0.5, pointing_jitter_rms_urad=jitter)
    budget = link_budget(geometry, tx, RX, CLEAR, DARK, offset, None)
    half = TX.far_field_half_angle_urad
    draws = np.random.default_rng(3).normal(0.0, jitter, size=(400_000, 2))
    radius2 = (draws[:, 0] + offset) ** 2 + draws[:, 1] ** 2
    sampled_db = -10 * math.log10(float(np.mean(np.exp(-2 * radius2 / half**2))))
    assert budget.pointing_loss_db[0] == pytest.approx(sampled_db, abs=0.01)
    assert (
        budget.pointing_loss_db[0]
        > link_budget(geometry, TX, RX, CLEAR, DARK, offset, None).pointing_loss_db[0]
    )


def test_daylight_floods_the_background_only_while_the_sun_is_up() -> None:
    geometry = _geometry([8e5, 8e5], [40.0, 40.0])
    night = link_budget(geometry, TX, RX, CLEAR, DARK, 0.0, None)
    sun = link_budget(geometry, TX, RX, CLEAR, DARK, 0.0, None, np.array([-20.0, 30.0]))
    assert sun.background_counts_per_s[0] == night.background_counts_per_s[0]
    # Appl. Opt. 6, 2105 (1967) radiance at 30 deg sun: ~1e7 photons/s per detector here
    assert sun.background_counts_per_s[1] > 1e3 * night.background_counts_per_s[1]
    assert sun.background_counts_per_s[1] > 1e6


def test_lowtran_atmosphere_follows_station_altitude_weather_and_seeing() -> None:
    geometry = _geometry([6.5e5, 1.2e6], [50.0, 20.0])
    tx = TransmitterOptics(848.62, 0.3, 10.0, 1.0)
    stop = ReceiverOptics(1.0, 0.16, 15.0, 0.2)
    base = {"model": "lowtran7", "ground_altitude_m": 900.0}
    clear = link_budget(geometry, tx, stop, Atmosphere(**base), DARK, 0.0, None)
    haze = link_budget(geometry, tx, stop, Atmosphere(weather="haze", **base), DARK, 0.0, None)
    sea = Atmosphere(model="lowtran7", ground_altitude_m=0.0)
    at_sea_level = link_budget(geometry, tx, stop, sea, DARK, 0.0, None)
    seeing = link_budget(geometry, tx, stop, Atmosphere(seeing_arcsec=1.9, **base), DARK, 0.0, None)
    assert np.all(haze.atmospheric_loss_db > clear.atmospheric_loss_db + 1.0)
    assert np.all(at_sea_level.atmospheric_loss_db > clear.atmospheric_loss_db)
    assert np.all(clear.field_stop_loss_db == 0.0)
    # the seeing spot grows with airmass^(3/5): the 15 urad stop loses more at 20 deg
    assert 0.0 < seeing.field_stop_loss_db[0] < seeing.field_stop_loss_db[1]
    with pytest.raises(InputError, match="wavelength_nm"):
        link_budget(
            geometry,
            TransmitterOptics(1064.0, 0.3, 10.0, 1.0),
            stop,
            Atmosphere(**base),
            DARK,
            0.0,
            None,
        )
