"""The station's expected field-stop coupling (`sim link`) against what the pass samples.

`sim pass` averages sim_backends.sky.coupling_into_field_stop over the sampled residual of the
station's fine tracking in each frame; `sim link` takes its expectation from the tilt statistics
and the loop gain (sim_backends.link.expected_station_coupling). These tests hold the two equal
on a residual drawn as the station's loop makes it.
"""

from __future__ import annotations

import numpy as np
import pytest

from satqkd_core.errors import InputError
from sim_backends.link import airmass_kasten_young, expected_station_coupling
from sim_backends.sky import coupling_into_field_stop

FOV_URAD, SPOT_FWHM_URAD, TILT_URAD = 20.0, 5.0, 1.5


def loop_residual(rng: np.random.Generator, tilt_rms: float, gain: float, n: int) -> np.ndarray:
    """|residual| of the station's fine loop (satqkd_ogs.pointing: command += g x spot, one
    sample late) on tilt that decorrelates between updates (corner 50 Hz, loop 10 Hz)."""
    tilt = rng.normal(0.0, tilt_rms, size=(n, 2))
    command = np.zeros(2)
    residual = np.empty(n)
    for k in range(n):
        spot = tilt[k] - command
        residual[k] = np.hypot(*spot)
        command = command + gain * spot
    return residual


@pytest.mark.parametrize(("elevation_deg", "gain"), [(15.0, 0.5), (25.0, 1.2), (60.0, 0.0)])
def test_expected_coupling_is_the_mean_of_what_the_loop_residual_gives(elevation_deg, gain):
    tilt_rms = TILT_URAD * np.sqrt(airmass_kasten_young(np.array([elevation_deg]))[0])
    residual = loop_residual(np.random.default_rng(3), tilt_rms, gain, 4_000)
    sampled = coupling_into_field_stop(residual, FOV_URAD, SPOT_FWHM_URAD).mean()
    expected = expected_station_coupling(
        np.array([elevation_deg]), TILT_URAD, gain, FOV_URAD, SPOT_FWHM_URAD
    )[0]
    # the loss (1 - coupling) within 10 %: what the pass's frames average to
    assert 1.0 - expected == pytest.approx(1.0 - sampled, rel=0.1)
    # and not the tilt alone: the loop's own share of it counts (g > 0)
    if gain > 0:
        alone = expected_station_coupling(
            np.array([elevation_deg]), TILT_URAD, 0.0, FOV_URAD, SPOT_FWHM_URAD
        )[0]
        assert 1.0 - alone < 0.9 * (1.0 - sampled)


def test_the_low_pass_loses_more_through_the_stop_than_a_high_one():
    coupling = expected_station_coupling(
        np.array([90.0, 52.0, 25.0, 10.0, -1.0]), TILT_URAD, 0.5, FOV_URAD, SPOT_FWHM_URAD
    )
    assert np.all(np.diff(coupling[:4]) < 0)
    # the Micius low pass's 20 urad stop: 0.03-0.1 dB at 25 deg, more than 0.15 dB at 10 deg
    # (the pass's window, 10-29 deg, loses 0.15 dB on average); 52 deg: under 0.03 dB
    assert 0.03 < -10 * np.log10(coupling[2]) < 0.1
    assert -10 * np.log10(coupling[3]) > 0.15
    assert -10 * np.log10(coupling[1]) < 0.03
    assert coupling[4] == 1.0  # below the horizon: nothing to couple
    # no tilt: a 5 urad spot fills a 20 urad stop to 1 - 2^-16
    still = expected_station_coupling(np.array([30.0]), 0.0, 0.5, FOV_URAD, SPOT_FWHM_URAD)
    assert still[0] == pytest.approx(1.0 - 2.0**-16, rel=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.array([[30.0]]), 1.5, 0.5, 20.0, 5.0), "elevation_deg"),
        ((np.array([np.nan]), 1.5, 0.5, 20.0, 5.0), "elevation_deg"),
        ((np.array([30.0]), -1.5, 0.5, 20.0, 5.0), "tip_tilt_rms_urad_zenith"),
        ((np.array([30.0]), 1.5, 2.0, 20.0, 5.0), "loop_integral_gain"),
        ((np.array([30.0]), 1.5, 0.5, 0.0, 5.0), "field_of_view_urad"),
        ((np.array([30.0]), 1.5, 0.5, 20.0, "5"), "spot_fwhm_urad"),
    ],
)
def test_bad_input_names_the_argument(args, message):
    with pytest.raises(InputError, match=message):
        expected_station_coupling(*args)
