"""Pass prediction for the operation control centre: every pass of every satellite over every
station in a time range, with its night test, the night's cloud forecast and the key expected
from it.

The geometry is satqkd_core's (SGP4 pass search and the Sun's elevation). A pass is "night" when
the Sun stays below the station's `night_sun_elevation_deg` at AOS, culmination and LOS (the Sun
moves < 2 deg in a 10-minute pass, so the three instants bound it). The expected key of a pass
comes from a per satellite and station table of key bits against the pass's maximum elevation
(computed by the application from the link physics, or given in the configuration), weighted by
the probability of a clear sky that night.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise

import numpy as np

from satqkd_core.ephemeris import Station, sun_elevation_deg
from satqkd_core.errors import InputError
from satqkd_core.pass_search import find_passes

__all__ = [
    "CandidatePass",
    "CloudForecast",
    "KeyTable",
    "Satellite",
    "StationSite",
    "night_date",
    "predict_passes",
]

_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Satellite:
    """A satellite the OCC plans: its name (the mission) and TLE."""

    name: str
    tle_line1: str
    tle_line2: str


@dataclass(frozen=True)
class StationSite:
    """A ground station as the planner sees it: where it is and when it can work."""

    name: str
    location: Station
    min_elevation_deg: float = 10.0
    night_sun_elevation_deg: float = -12.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_elevation_deg < 90.0:
            raise InputError(
                f"station {self.name}: min_elevation_deg must be in [0, 90), "
                f"got {self.min_elevation_deg}"
            )
        if not -90.0 <= self.night_sun_elevation_deg <= 0.0:
            raise InputError(
                f"station {self.name}: night_sun_elevation_deg must be in [-90, 0], "
                f"got {self.night_sun_elevation_deg}"
            )


def night_date(unix_s: float, longitude_deg: float) -> str:
    """Get the night an instant belongs to at a longitude: the local mean solar date of its
    evening (YYYY-MM-DD), i.e. the date 12 h before local mean solar time."""
    local = unix_s + longitude_deg / 15.0 * _SECONDS_PER_HOUR - 12.0 * _SECONDS_PER_HOUR
    return datetime.fromtimestamp(local, tz=UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class CloudForecast:
    """Probability of cloud per station per night (`night_date`); for a night without one, the
    station's climatology for the night's month (`monthly`: 12 probabilities, January first,
    e.g. 1 - p_clear of sim_backends/data/cloud_climatology.csv); `default` elsewhere."""

    nights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    default: float = 0.0
    monthly: Mapping[str, Sequence[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for station, by_night in {"(default)": {"-": self.default}, **self.nights}.items():
            for night, probability in by_night.items():
                _check_probability(probability, f"cloud probability of {station} night {night}")
        for station, months in self.monthly.items():
            if isinstance(months, (str, bytes)) or len(months) != 12:
                raise InputError(
                    f"monthly cloud probabilities of {station} must be 12 numbers (Jan-Dec)"
                )
            for k, probability in enumerate(months):
                _check_probability(probability, f"cloud probability of {station} month {k + 1}")

    def probability(self, station: str, night: str) -> float:
        """Get the cloud probability at a station for one night (YYYY-MM-DD)."""
        by_night = self.nights.get(station, {})
        if night in by_night:
            return float(by_night[night])
        if station in self.monthly:
            return float(self.monthly[station][int(night[5:7]) - 1])
        return float(self.default)


def _check_probability(probability: object, what: str) -> None:
    if isinstance(probability, bool) or not (
        isinstance(probability, (int, float)) and 0.0 <= probability <= 1.0
    ):
        raise InputError(f"{what} must be in [0, 1], got {probability!r}")


@dataclass(frozen=True)
class KeyTable:
    """Expected secret key bits of a clear-sky pass against its maximum elevation: linear
    between the points, the end values beyond them."""

    max_elevation_deg: tuple[float, ...]
    key_bits: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.max_elevation_deg) != len(self.key_bits) or not self.key_bits:
            raise InputError("a key table needs one or more (max_elevation_deg, key_bits) points")
        if any(not math.isfinite(e) or not 0.0 <= e <= 90.0 for e in self.max_elevation_deg):
            raise InputError("key table elevations must be in [0, 90] deg")
        elevations = self.max_elevation_deg
        if any(b <= a for a, b in pairwise(elevations)):
            raise InputError("key table elevations must increase")
        if any(bits < 0 for bits in self.key_bits):
            raise InputError("key table key_bits must be >= 0")

    def bits_at(self, max_elevation_deg: float) -> int:
        """Get the expected key bits of a clear-sky pass peaking at this elevation."""
        elevations, bits = self.max_elevation_deg, self.key_bits
        k = bisect.bisect_right(elevations, max_elevation_deg)
        if k == 0:
            return bits[0]
        if k == len(elevations):
            return bits[-1]
        e0, e1 = elevations[k - 1], elevations[k]
        share = (max_elevation_deg - e0) / (e1 - e0) if e1 > e0 else 1.0
        return round(bits[k - 1] + share * (bits[k] - bits[k - 1]))


@dataclass(frozen=True)
class CandidatePass:
    """One predicted pass of a satellite over a station, with what it should give."""

    pass_id: str
    satellite: str
    station: str
    aos_unix_s: float
    culmination_unix_s: float
    los_unix_s: float
    max_elevation_deg: float
    max_sun_elevation_deg: float
    night: bool
    night_date: str
    clear_sky_key_bits: int
    cloud_probability: float

    @property
    def expected_key_bits(self) -> int:
        """Get the key expected from the pass: clear-sky key times the chance of a clear sky."""
        return round(self.clear_sky_key_bits * (1.0 - self.cloud_probability))


def predict_passes(
    satellites: Sequence[Satellite],
    stations: Sequence[StationSite],
    start_unix_s: float,
    stop_unix_s: float,
    key_tables: Mapping[tuple[str, str], KeyTable] | None = None,
    forecast: CloudForecast | None = None,
    *,
    night_only: bool = True,
) -> list[CandidatePass]:
    """Get every pass (night ones only if `night_only`) of each satellite over each station in
    [start, stop], sorted by AOS; key from `key_tables[(satellite, station)]`, a table of night
    passes (0 without one, and 0 for a day pass)."""
    forecast = forecast if forecast is not None else CloudForecast()
    tables = key_tables or {}
    found: list[CandidatePass] = []
    for satellite in satellites:
        for site in stations:
            windows = find_passes(
                satellite.tle_line1,
                satellite.tle_line2,
                site.location,
                start_unix_s,
                stop_unix_s,
                site.min_elevation_deg,
            )
            table = tables.get((satellite.name, site.name))
            for window in windows:
                instants = np.array(
                    [window.aos_unix_s, window.culmination_unix_s, window.los_unix_s]
                )
                sun_deg = float(np.max(sun_elevation_deg(site.location, instants)))
                night = sun_deg < site.night_sun_elevation_deg
                if night_only and not night:
                    continue
                night_of = night_date(window.culmination_unix_s, site.location.longitude_deg)
                found.append(
                    CandidatePass(
                        pass_id=f"{satellite.name}/{site.name}/{int(window.aos_unix_s)}",
                        satellite=satellite.name,
                        station=site.name,
                        aos_unix_s=window.aos_unix_s,
                        culmination_unix_s=window.culmination_unix_s,
                        los_unix_s=window.los_unix_s,
                        max_elevation_deg=window.max_elevation_deg,
                        max_sun_elevation_deg=sun_deg,
                        night=night,
                        night_date=night_of,
                        clear_sky_key_bits=(
                            table.bits_at(window.max_elevation_deg) if table and night else 0
                        ),
                        cloud_probability=forecast.probability(site.name, night_of),
                    )
                )
    found.sort(key=lambda p: (p.aos_unix_s, p.satellite, p.station))
    return found
