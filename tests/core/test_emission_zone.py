"""The allowed zone both laser interlocks use (satqkd_core.emission_zone): elevation mask and
keep-out cones, one geometry for the payload controller and the station."""

from __future__ import annotations

import pytest

from firmware_shims.laser_interlock import KeepOutCone as PayloadCone
from satqkd_core.emission_zone import KeepOutCone, angular_separation_deg, zone_violation
from satqkd_core.errors import InputError
from satqkd_ogs.laser_safety import StationKeepOutCone


def test_both_interlocks_use_the_one_cone() -> None:
    assert PayloadCone is KeepOutCone and StationKeepOutCone is KeepOutCone


def test_separation_is_great_circle_across_north_and_the_zenith() -> None:
    assert angular_separation_deg(359.0, 0.0, 1.0, 0.0) == pytest.approx(2.0)
    assert angular_separation_deg(0.0, 89.0, 180.0, 89.0) == pytest.approx(2.0)
    # an azimuth step shrinks with elevation: 10 deg of azimuth at 60 deg is ~5 deg on the sky
    assert angular_separation_deg(100.0, 60.0, 110.0, 60.0) == pytest.approx(4.9952, abs=1e-4)


def test_zone_violation_names_each_reason() -> None:
    cone = KeepOutCone(azimuth_deg=180.0, elevation_deg=30.0, half_angle_deg=5.0)
    assert not zone_violation(90.0, 45.0, 10.0, (cone,))
    low = zone_violation(90.0, 9.9, 10.0, (cone,))
    assert low and low.below_elevation_mask and not low.in_keep_out_cone
    inside = zone_violation(184.0, 31.0, 10.0, (cone,))
    assert inside and inside.in_keep_out_cone and not inside.below_elevation_mask
    edge = KeepOutCone(azimuth_deg=0.0, elevation_deg=40.0, half_angle_deg=5.0)
    assert edge.contains(0.0, 44.999) and not edge.contains(0.0, 45.001)
    with pytest.raises(InputError, match=r"half_angle_deg must be in 0\.\.180"):
        KeepOutCone(azimuth_deg=0.0, elevation_deg=0.0, half_angle_deg=200.0)
