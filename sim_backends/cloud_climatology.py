"""Cloud as an attenuation with a probability of occurrence per site and month.

The shipped table (sim_backends/data/cloud_climatology.csv) gives, per site and calendar month,
the probability of a clear (photometric) night and of a night with thin cloud (usable but not
photometric); the rest of the nights are overcast. A simulated night draws one of the three
from the scenario's seed; the link then carries the weather class it drew
(sim_backends.link: thin cloud = cirrus of optical depth 0.5, overcast = a stratiform cloud of
optical depth OVERCAST_ZENITH_OPTICAL_DEPTH, both times the airmass).

Sources, per site (the table's `source` column):
- xinglong: Zhang et al., "Astronomical observing conditions at Xinglong Observatory from 2007
  to 2014", PASP 127, 1292 (2015) (arXiv:1601.08114): 32 % photometric and 63 %
  spectroscopic nights a year, worse in summer. The annual means are theirs; the monthly shape
  is a cosine peaked at the turn of the year whose December/July contrast follows Yao et al.,
  RAA 12, 772 (2012) (8 operable hours a night in December, 1-2 in July and August); their
  monthly tables were not at hand, so the shape between those months is assumed.
- jinan, stellenbosch, graz: no citable monthly table was at hand; the numbers are assumed
  (jinan as Xinglong, the same monsoon climate of north China; Stellenbosch clearer in the
  dry southern summer and cloudier in the winter-rain season; Graz flat around 30 % clear).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from satqkd_core.errors import InputError

__all__ = [
    "OVERCAST_ZENITH_OPTICAL_DEPTH",
    "WEATHER_DRAWS",
    "SiteClimate",
    "climate_sites",
    "draw_weather",
    "site_climate",
]

_TABLE = "cloud_climatology.csv"
# What a night can be; the names are sim_backends.link's weather classes.
WEATHER_DRAWS = ("clear", "thin_cloud", "overcast")
# Low stratiform cloud: optical depths of ~5-30 at visible and near-infrared wavelengths
# (e.g. Liou, An Introduction to Atmospheric Radiation, 2nd ed., 2002, ch. 5); 10 is assumed,
# 43 dB at zenith: no single-photon link survives it, which is what matters here.
OVERCAST_ZENITH_OPTICAL_DEPTH = 10.0


@dataclass(frozen=True)
class SiteClimate:
    """Monthly probabilities of a clear night and of thin cloud at one site (index 0 = Jan)."""

    site: str
    p_clear: tuple[float, ...]
    p_thin_cloud: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.p_clear) != 12 or len(self.p_thin_cloud) != 12:
            raise InputError(f"cloud climatology of {self.site}: needs 12 months")
        for clear, thin in zip(self.p_clear, self.p_thin_cloud, strict=True):
            if not (clear >= 0.0 and thin >= 0.0 and clear + thin <= 1.0 + 1e-9):
                raise InputError(
                    f"cloud climatology of {self.site}: probabilities must be >= 0 and sum to "
                    f"<= 1, got clear {clear}, thin cloud {thin}"
                )

    def cloud_probability(self, month: int) -> float:
        """Get the probability that a night of this month is not clear (thin cloud or overcast)."""
        return 1.0 - self.p_clear[_month_index(month)]


def _month_index(month: int) -> int:
    if isinstance(month, bool) or not isinstance(month, (int, np.integer)) or not 1 <= month <= 12:
        raise InputError(f"month must be an integer 1-12, got {month!r}")
    return int(month) - 1


@cache
def _table() -> dict[str, SiteClimate]:
    text = resources.files("sim_backends").joinpath("data", _TABLE).read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    by_site: dict[str, dict[int, tuple[float, float, str]]] = {}
    for row in rows:
        by_site.setdefault(row["site"], {})[int(row["month"])] = (
            float(row["p_clear"]),
            float(row["p_thin_cloud"]),
            row["source"],
        )
    sites = {}
    for site, months in by_site.items():
        if sorted(months) != list(range(1, 13)):
            raise InputError(f"{_TABLE}: site {site} must have months 1-12")
        sites[site] = SiteClimate(
            site,
            tuple(months[m][0] for m in range(1, 13)),
            tuple(months[m][1] for m in range(1, 13)),
            months[1][2],
        )
    return sites


def climate_sites() -> tuple[str, ...]:
    """Get the sites the shipped table covers."""
    return tuple(sorted(_table()))


def site_climate(site: str) -> SiteClimate:
    """Get one site's monthly cloud climatology; a clear error naming the known sites."""
    table = _table()
    if site not in table:
        raise InputError(
            f"no cloud climatology for site {site!r} (known: {', '.join(sorted(table))})"
        )
    return table[site]


def draw_weather(climate: SiteClimate, month: int, uniform: float) -> str:
    """Get the night's weather class (WEATHER_DRAWS) for a uniform draw in [0, 1)."""
    if not isinstance(climate, SiteClimate):
        raise InputError(f"climate must be a SiteClimate, got {type(climate).__name__}")
    if not (isinstance(uniform, float) and math.isfinite(uniform) and 0.0 <= uniform < 1.0):
        raise InputError(f"uniform must be a float in [0, 1), got {uniform!r}")
    k = _month_index(month)
    if uniform < climate.p_clear[k]:
        return "clear"
    if uniform < climate.p_clear[k] + climate.p_thin_cloud[k]:
        return "thin_cloud"
    return "overcast"
