"""Where a station is, from its profile: a fixed location, or the track of a moving one."""

from __future__ import annotations

from pathlib import Path

from satqkd.config import ConfigError, StationConfig
from satqkd_core.ephemeris import Station, StationTrack
from satqkd_core.errors import InputError
from sim_backends.station_track import read_station_track_csv, station_track_from_rows

__all__ = ["station_position"]


def station_position(station: StationConfig, station_file: Path) -> Station | StationTrack:
    """Where the station is for the ephemeris: its fixed location, or its track if it moves
    (a CSV beside the station file, or points given inline)."""
    track = station.track
    if track is None:
        loc = station.location
        return Station(loc.latitude_deg, loc.longitude_deg, loc.altitude_m)
    try:
        if track.csv is not None:
            return read_station_track_csv(station_file.parent / track.csv)
        return station_track_from_rows(
            (p.unix_s, p.latitude_deg, p.longitude_deg, p.altitude_m) for p in track.points or []
        )
    except InputError as exc:
        raise ConfigError(f"{station_file}: track: {exc}") from None
