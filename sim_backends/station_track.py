"""Moving ground stations: read a ship's or vehicle's track into a StationTrack.

CSV with a header row naming the columns unix_s, latitude_deg, longitude_deg and altitude_m
(lat, lon and alt are accepted too; altitude may be left out for a ship at sea level), one
sample per row in time order; '#' starts a comment line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from satqkd_core.ephemeris import StationTrack
from satqkd_core.errors import InputError

__all__ = ["read_station_track_csv", "station_track_from_rows"]

_COLUMNS = {
    "unix_s": "unix_s",
    "latitude_deg": "latitude_deg",
    "lat": "latitude_deg",
    "longitude_deg": "longitude_deg",
    "lon": "longitude_deg",
    "altitude_m": "altitude_m",
    "alt": "altitude_m",
}
_MAX_SAMPLES = 10_000_000


def station_track_from_rows(rows: Iterable[Sequence[float]]) -> StationTrack:
    """Get a StationTrack from (unix_s, latitude_deg, longitude_deg, altitude_m) rows."""
    try:
        table = np.array([tuple(float(v) for v in row) for row in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("track rows must be 4 numbers: unix_s, lat, lon, alt") from None
    if table.ndim != 2 or table.shape[1] != 4:
        raise InputError(f"track rows must have 4 numbers each, got shape {table.shape}")
    return StationTrack(table[:, 0], table[:, 1], table[:, 2], table[:, 3])


def read_station_track_csv(path: str | Path) -> StationTrack:
    """Read a station track CSV; InputError naming the file, line and problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise InputError(f"{path}: no header row")
    header_number, header_line = lines[0]
    header = [name.strip().lower() for name in next(csv.reader(io.StringIO(header_line)))]
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        if name not in _COLUMNS:
            raise InputError(
                f"{path}:{header_number}: unknown column {name!r} "
                f"(allowed: {', '.join(sorted(set(_COLUMNS)))})"
            )
        index[_COLUMNS[name]] = position
    missing = [c for c in ("unix_s", "latitude_deg", "longitude_deg") if c not in index]
    if missing:
        raise InputError(f"{path}:{header_number}: missing column(s) {', '.join(missing)}")
    if len(lines) - 1 > _MAX_SAMPLES:
        raise InputError(f"{path}: more than {_MAX_SAMPLES} samples")
    rows = []
    for number, line in lines[1:]:
        fields = next(csv.reader(io.StringIO(line)))
        if len(fields) != len(header):
            raise InputError(f"{path}:{number}: {len(fields)} fields, header has {len(header)}")
        try:
            values = [float(field) for field in fields]
        except ValueError:
            raise InputError(f"{path}:{number}: fields must be numbers, got {line!r}") from None
        altitude = values[index["altitude_m"]] if "altitude_m" in index else 0.0
        rows.append(
            (
                values[index["unix_s"]],
                values[index["latitude_deg"]],
                values[index["longitude_deg"]],
                altitude,
            )
        )
    try:
        return station_track_from_rows(rows)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
