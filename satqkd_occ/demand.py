"""Key demand: a pair of end points that want a number of secret key bits by a deadline.

An end point is a ground station or a satellite. A station and a satellite share key over their
own passes; two stations share key through a satellite acting as a trusted relay, which needs
key of that satellite with each of them (the relay's XOR uses as many bits of each).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from satqkd_core.errors import InputError

__all__ = ["MAX_DEMAND_BITS", "KeyDemand", "check_demands", "demand_from_mapping"]

MAX_DEMAND_BITS = 10**12
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_FIELDS = ("id", "endpoints", "bits", "deadline_utc")


@dataclass(frozen=True)
class KeyDemand:
    """Bits of key wanted between two end points by a deadline (Unix s, UTC)."""

    demand_id: str
    endpoint_a: str
    endpoint_b: str
    bits: int
    deadline_unix_s: float

    @property
    def endpoints(self) -> tuple[str, str]:
        """Get both end points."""
        return self.endpoint_a, self.endpoint_b


def _deadline(value: object, where: str) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InputError(f"{where}.deadline_utc must carry a time zone (end it with Z)")
        return value.timestamp()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{where}.deadline_utc {value!r} is not an ISO 8601 instant") from None
        return _deadline(parsed, where)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InputError(f"{where}.deadline_utc must be an ISO 8601 instant, got {value!r}")


def demand_from_mapping(item: Mapping[str, Any], where: str = "demand") -> KeyDemand:
    """Get a KeyDemand from {id, endpoints: [a, b], bits, deadline_utc}; InputError naming the
    field otherwise."""
    if not isinstance(item, Mapping):
        raise InputError(f"{where} must be a mapping with keys {', '.join(_FIELDS)}")
    unknown = sorted(set(item) - set(_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(_FIELDS)})")
    for key in _FIELDS:
        if key not in item:
            raise InputError(f"{where}.{key}: required key is missing")
    demand_id = item["id"]
    if not isinstance(demand_id, str) or not _ID.match(demand_id):
        raise InputError(f"{where}.id must match {_ID.pattern}, got {demand_id!r}")
    endpoints = item["endpoints"]
    if (
        not isinstance(endpoints, (list, tuple))
        or len(endpoints) != 2
        or not all(isinstance(e, str) for e in endpoints)
    ):
        raise InputError(f"{where}.endpoints must be a list of two names, got {endpoints!r}")
    if endpoints[0] == endpoints[1]:
        raise InputError(f"{where}.endpoints must name two different end points")
    bits = item["bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 < bits <= MAX_DEMAND_BITS:
        raise InputError(
            f"{where}.bits must be a whole number in 1..{MAX_DEMAND_BITS}, got {bits!r}"
        )
    return KeyDemand(
        demand_id, endpoints[0], endpoints[1], bits, _deadline(item["deadline_utc"], where)
    )


def check_demands(
    demands: Iterable[KeyDemand], stations: Iterable[str], satellites: Iterable[str]
) -> list[KeyDemand]:
    """Get the demands as a list after checking ids are unique and every end point is known,
    with at least one station per pair; InputError naming the demand otherwise."""
    station_names, satellite_names = set(stations), set(satellites)
    seen: set[str] = set()
    checked = list(demands)
    for demand in checked:
        where = f"demand {demand.demand_id}"
        if demand.demand_id in seen:
            raise InputError(f"{where}: id used twice")
        seen.add(demand.demand_id)
        for endpoint in demand.endpoints:
            if endpoint not in station_names | satellite_names:
                raise InputError(
                    f"{where}: unknown end point {endpoint!r} (stations: "
                    f"{', '.join(sorted(station_names))}; satellites: "
                    f"{', '.join(sorted(satellite_names))})"
                )
        if all(endpoint in satellite_names for endpoint in demand.endpoints):
            raise InputError(f"{where}: two satellites share key only through a station")
    return checked
