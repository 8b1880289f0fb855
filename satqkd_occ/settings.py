"""The operation control centre's configuration, declared once (docs/occ.md).

Satellites name their mission profile; stations their station profile (both resolved by the
application), with the planner's own settings per station. Demand may be listed here, read
from a file or posted over the bus; the weather forecast is a cloud probability per station per
night (`satqkd_occ.prediction.night_date`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from satqkd_occ.planner import PlanSettings

__all__ = [
    "DemandEntry",
    "ForecastConfig",
    "OccConfig",
    "PlanningConfig",
    "SatelliteEntry",
    "StationEntry",
]

_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TleEntry(_Model):
    line1: str
    line2: str


class SatelliteEntry(_Model):
    """A satellite: its mission profile (orbit, source rate) and optionally its current TLE."""

    name: Annotated[str, Field(pattern=_NAME)]
    mission: str
    tle: TleEntry | None = None


class StationEntry(_Model):
    """A station: its profile (location, elevation mask) and what the planner assumes of it."""

    name: Annotated[str, Field(pattern=_NAME)]
    profile: str | None = None  # default: the station profile named like the station
    min_elevation_deg: Annotated[float, Field(ge=0.0, lt=90.0)] | None = None
    night_sun_elevation_deg: Annotated[float, Field(ge=-90.0, le=0.0)] | None = None
    # expected clear-sky key bits against a pass's maximum elevation; computed from the link
    # physics of the mission and station profiles when absent
    key_table: (
        list[tuple[Annotated[float, Field(ge=0.0, le=90.0)], Annotated[int, Field(ge=0)]]] | None
    ) = None


class PlanningConfig(_Model):
    """The time range and the planner's settings."""

    start_utc: datetime | None = None
    days: Annotated[float, Field(gt=0.0, le=30.0)] = 7.0
    night_only: bool = True
    night_sun_elevation_deg: Annotated[float, Field(ge=-90.0, le=0.0)] = -12.0
    satellite_gap_s: Annotated[float, Field(ge=0.0, le=86_400.0)] = 120.0
    station_gap_s: Annotated[float, Field(ge=0.0, le=86_400.0)] = 300.0
    key_ready_after_los_s: Annotated[float, Field(ge=0.0, le=86_400.0)] = 0.0
    time_limit_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 10.0
    workers: Annotated[int, Field(ge=1, le=64, strict=True)] = 1
    key_table_passes: Annotated[int, Field(ge=1, le=20, strict=True)] = 4

    def plan_settings(self, seed: int = 0) -> PlanSettings:
        """Get the planner's settings."""
        return PlanSettings(
            satellite_gap_s=self.satellite_gap_s,
            station_gap_s=self.station_gap_s,
            key_ready_after_los_s=self.key_ready_after_los_s,
            time_limit_s=self.time_limit_s,
            workers=self.workers,
            seed=seed,
        )


class ForecastConfig(_Model):
    """Cloud probability per station per night (YYYY-MM-DD of the evening); for other nights
    the station's monthly cloud climatology when `climatology` is true, else the default."""

    default_cloud_probability: Fraction = 0.0
    nights: dict[str, dict[str, Fraction]] = {}
    climatology: bool = False


class DemandEntry(_Model):
    """Key wanted between two end points (stations or satellites) by a deadline."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    endpoints: tuple[str, str]
    bits: Annotated[int, Field(ge=1, le=10**12, strict=True)]
    deadline_utc: datetime


class OccConfig(_Model):
    """The whole configuration of the operation control centre."""

    name: Annotated[str, Field(pattern=_NAME)]
    description: str = ""
    satellites: Annotated[list[SatelliteEntry], Field(min_length=1, max_length=50)]
    stations: Annotated[list[StationEntry], Field(min_length=1, max_length=100)]
    planning: PlanningConfig = PlanningConfig()
    weather: ForecastConfig = ForecastConfig()
    demand: Annotated[list[DemandEntry], Field(max_length=10_000)] = []
    housekeeping_period_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 10.0
