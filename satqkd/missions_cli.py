"""`satqkd missions check STATION.yaml MISSION.yaml [MISSION.yaml ...]`: whether a station can
serve each mission, and if not, every reason (docs/missions.md).

Exit status: 0 if the station serves every mission, 1 if it cannot serve at least one, 2 for a
user's mistake (a missing or invalid profile: one line naming the file and key).
"""

from __future__ import annotations

import argparse
from pathlib import Path

GROUP = "missions"
EXIT_OK = 0
EXIT_INCOMPATIBLE = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Control: add `satqkd missions check STATION MISSION [MISSION ...]`."""
    parser = sub.add_parser(GROUP, help="mission profiles: which missions a station can serve")
    actions = parser.add_subparsers(dest="missions_command", required=True)
    check = actions.add_parser(
        "check", help="whether a station can serve each mission, with every reason if not"
    )
    check.add_argument("station", metavar="STATION.yaml", help="station profile")
    check.add_argument(
        "missions", metavar="MISSION.yaml", nargs="+", help="mission profile(s) to check"
    )


def check_lines(station_file: Path, mission_files: list[Path]) -> tuple[list[str], bool]:
    """Get: one line per mission ('NAME: compatible' or 'NAME: incompatible: reasons') and
    whether all are compatible. ConfigError (one line) for a missing or invalid profile; every
    profile is loaded before any line is made."""
    from satqkd.config import (
        ConfigError,
        MissionProfileConfig,
        StationConfig,
        load_model,
    )
    from satqkd.mission_compat import compatibility_problems

    problems: list[str] = []
    station = None
    try:
        station = load_model(StationConfig, station_file)
    except ConfigError as exc:
        problems.append(str(exc))
    missions = []
    for path in mission_files:
        try:
            missions.append(load_model(MissionProfileConfig, path))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(" | ".join(problems))
    assert station is not None
    lines = []
    all_ok = True
    for mission in missions:
        reasons = compatibility_problems(station, mission)
        if reasons:
            all_ok = False
            lines.append(
                f"{mission.name}: incompatible with station {station.name}: " + "; ".join(reasons)
            )
        else:
            lines.append(f"{mission.name}: compatible with station {station.name}")
    return lines, all_ok


def run(args: argparse.Namespace) -> int:
    """`satqkd missions check`: print one line per mission; 0 all compatible, 1 otherwise."""
    lines, all_ok = check_lines(Path(args.station), [Path(p) for p in args.missions])
    for line in lines:
        print(line)
    return EXIT_OK if all_ok else EXIT_INCOMPATIBLE
