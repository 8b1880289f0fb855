"""The light-time model interpolates range exactly for cubic motion and inverts arrival times."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.light_time import SPEED_OF_LIGHT_M_S, LightTimeModel


def _cubic_model(a: float, b: float, c: float, d: float) -> tuple[LightTimeModel, callable]:
    t = np.arange(0.0, 11.0)
    r = lambda x: a + b * x + c * x**2 + d * x**3  # noqa: E731
    v = lambda x: b + 2 * c * x + 3 * d * x**2  # noqa: E731
    return LightTimeModel(1000.0, 1.0, r(t), v(t)), r


@settings(max_examples=100, deadline=None)
@given(
    st.floats(5e5, 2e6),
    st.floats(-8e3, 8e3),
    st.floats(-100, 100),
    st.floats(-1, 1),
    st.floats(0, 10),
)
def test_hermite_is_exact_for_cubic_range(a: float, b: float, c: float, d: float, t: float) -> None:
    model, r = _cubic_model(a, b, c, d)
    assert model.range_at(np.array([t]))[0] == pytest.approx(r(t), abs=1e-6)


def test_arrival_inverse_of_emission() -> None:
    model, _ = _cubic_model(1.0e6, -7000.0, 50.0, 0.1)
    emission = np.linspace(0.5, 9.0, 50)
    delay = model.delay_at_emission_ps(emission)
    arrival = emission + delay * 1e-12
    assert np.max(np.abs(model.delay_at_arrival_ps(arrival) - delay)) < 1e-3  # < 1 fs
    assert delay[0] == pytest.approx(model.range_at(emission[:1])[0] / SPEED_OF_LIGHT_M_S * 1e12)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(InputError, match="equal length"):
        LightTimeModel(0.0, 1.0, np.ones(3), np.ones(4))
    with pytest.raises(InputError, match="step_s"):
        LightTimeModel(0.0, 0.0, np.ones(3), np.ones(3))
    model, _ = _cubic_model(1e6, 0, 0, 0)
    with pytest.raises(InputError, match="outside the ephemeris grid"):
        model.range_at(np.array([11.5]))
