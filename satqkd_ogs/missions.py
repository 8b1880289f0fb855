"""One station, several missions: the plans it holds, the profile it sets up per pass, and
where each mission's keys live.

A station that serves satellites of different operators runs one daemon per mission (each on
its mission's topics, with its own telecommand key and its own pre-shared key with that
mission's payload) and one `StationMissions` shared by all of them, because the telescope,
filters, detectors and time tagger are one. The daemon asks it to `hold` every LOAD_PASS_PLAN
(refused, with every reason on one line, when the mission is unknown or one the station's
capabilities cannot serve, or when the pass overlaps a held plan or leaves less than the slew
and reconfiguration gap: `satqkd_core.station_schedule`), and to `switch_to` the plan's
`StationProfile` (filter, detector and tagger channels, protocol family, time
synchronisation) `reconfiguration_gap_s` before AOS. Every refusal and switch is counted.

Keys are kept per mission and peer: `mission_key_root` (docs/missions.md, "Several missions in
one night"). The capability check itself is made by the app (`satqkd.mission_compat`) from
the profiles, once per mission at start, and handed in as `incompatible`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from satqkd_core.station_schedule import PlannedPass, schedule_refusal

__all__ = [
    "MISSIONS_DIR",
    "PlanRefused",
    "StationMissions",
    "StationProfile",
    "mission_key_root",
    "plan_refusal",
]

#: under a station's key root, the directory holding one key store per mission and peer
MISSIONS_DIR = "missions"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class PlanRefused(ValueError):
    """The station refuses a pass plan; the message gives every reason on one line."""


@dataclass(frozen=True)
class StationProfile:
    """What the station sets up for one mission's pass: the quantum path's filter, the
    detector channels (of the bank whose band holds the mission's wavelength) and the tagger
    inputs they feed, the analyser (encoding), the protocol family and the time
    synchronisation (pulse clock or cross-correlation of time tags)."""

    mission: str
    family: str
    time_sync: str
    encoding: str
    filter_centre_nm: float
    filter_width_nm: float
    detector_channels: tuple[int, ...]
    tagger_channels: tuple[int, ...]

    def describe(self) -> str:
        """Get: one line for events and reports, e.g. 'jinan1: decoy-bb84, pulsed-clock, ...'."""
        return (
            f"{self.mission}: {self.family}, {self.time_sync}, {self.encoding}, filter "
            f"{self.filter_centre_nm:g}/{self.filter_width_nm:g} nm, detectors "
            f"{_channels(self.detector_channels)}, tagger inputs {_channels(self.tagger_channels)}"
        )


def _channels(channels: tuple[int, ...]) -> str:
    if channels and list(channels) == list(range(channels[0], channels[-1] + 1)):
        return f"{channels[0]}-{channels[-1]}" if len(channels) > 1 else str(channels[0])
    return ",".join(str(c) for c in channels) or "none"


def plan_refusal(
    known: Mapping[str, object],
    incompatible: Mapping[str, str],
    held: list[PlannedPass] | tuple[PlannedPass, ...],
    candidate: PlannedPass,
    slew_gap_s: float,
    reconfiguration_gap_s: float,
) -> str | None:
    """Get: every reason a station refuses `candidate` on one line (a mission it has no
    profile of, a mission its capabilities cannot serve, an overlap or too short a gap with a
    held plan), None if it takes it. The one rule the station daemon and the planning tools
    (`satqkd.mission_compat.plan_refusal`) apply."""
    reasons = []
    if candidate.mission in incompatible:
        reasons.append(f"plan {candidate.plan_id}: {incompatible[candidate.mission]}")
    elif candidate.mission not in known:
        shown = ", ".join(sorted({*known, *incompatible})) or "none"
        reasons.append(
            f"plan {candidate.plan_id}: no mission profile {candidate.mission!r} (known: {shown})"
        )
    conflict = schedule_refusal(held, candidate, slew_gap_s, reconfiguration_gap_s)
    if conflict is not None:
        reasons.append(conflict)
    return "; ".join(reasons) if reasons else None


@dataclass
class MissionCounters:
    """What the station's multi-mission guard counted (housekeeping, the night report)."""

    plans_held: int = 0
    plans_refused: int = 0
    refused_overlap_or_gap: int = 0
    refused_unknown_or_incompatible: int = 0
    profile_switches: int = 0
    switches_by_mission: dict[str, int] = field(default_factory=dict)


class StationMissions:
    """The plans one station holds for all its missions, and the profile it is set up for.

    `profiles`: the station profile of every mission it has a profile for; `incompatible`:
    mission -> the one-line reason its capabilities cannot serve it (such a mission's plans
    are refused). Shared by the station's per-mission daemons (one event loop)."""

    def __init__(
        self,
        station: str,
        profiles: Mapping[str, StationProfile],
        incompatible: Mapping[str, str],
        slew_gap_s: float,
        reconfiguration_gap_s: float,
    ) -> None:
        if not (math.isfinite(slew_gap_s) and math.isfinite(reconfiguration_gap_s)):
            raise ValueError("slew_gap_s and reconfiguration_gap_s must be finite")
        if slew_gap_s < 0.0 or reconfiguration_gap_s < 0.0:
            raise ValueError("slew_gap_s and reconfiguration_gap_s must be >= 0")
        self.station = station
        self.profiles = dict(profiles)
        self.incompatible = dict(incompatible)
        self.slew_gap_s = slew_gap_s
        self.reconfiguration_gap_s = reconfiguration_gap_s
        self.held: dict[int, PlannedPass] = {}
        self.active: StationProfile | None = None
        self.counters = MissionCounters()

    def refusal(self, candidate: PlannedPass) -> str | None:
        """Get: why the station would refuse `candidate` now, None if it would hold it."""
        return plan_refusal(
            self.profiles,
            self.incompatible,
            tuple(self.held.values()),
            candidate,
            self.slew_gap_s,
            self.reconfiguration_gap_s,
        )

    def hold(
        self,
        plan_id: int,
        mission: str,
        aos_unix_s: float,
        los_unix_s: float,
        now_unix_s: float | None = None,
    ) -> None:
        """Control: hold a plan for the station's night, or raise PlanRefused with every
        reason (counted). With `now_unix_s` (the station's clock), plans that ended more than
        the largest gap before now are forgotten first: no plan still to come can conflict
        with them (a plan whose window has started is refused by the plan rules)."""
        candidate = PlannedPass(int(plan_id), str(mission), float(aos_unix_s), float(los_unix_s))
        if now_unix_s is not None and math.isfinite(now_unix_s):
            horizon = now_unix_s - self.slew_gap_s - self.reconfiguration_gap_s
            for old in [p for p in self.held.values() if p.los_unix_s < horizon]:
                del self.held[old.plan_id]
        reason = self.refusal(candidate)
        if reason is not None:
            self.counters.plans_refused += 1
            if candidate.mission in self.profiles:
                self.counters.refused_overlap_or_gap += 1
            else:
                self.counters.refused_unknown_or_incompatible += 1
            raise PlanRefused(reason)
        self.held[candidate.plan_id] = candidate
        self.counters.plans_held += 1

    def release(self, plan_id: int) -> None:
        """Control: forget a held plan that will not fly (refused by a later check)."""
        self.held.pop(int(plan_id), None)

    def switch_time_unix_s(self, plan_id: int) -> float:
        """Get: when the station sets up the plan's profile: the reconfiguration gap before
        its AOS (the schedule leaves that much after the previous pass's LOS)."""
        return self.held[plan_id].aos_unix_s - self.reconfiguration_gap_s

    def switch_to(self, plan_id: int) -> str | None:
        """Control: set the station up for a held plan's mission; get the event text when the
        profile changed (counted), None when it was already set up for that mission.
        KeyError for a plan it does not hold."""
        profile = self.profiles[self.held[plan_id].mission]
        if self.active == profile:
            return None
        previous = self.active.mission if self.active is not None else "none"
        self.active = profile
        self.counters.profile_switches += 1
        by_mission = self.counters.switches_by_mission
        by_mission[profile.mission] = by_mission.get(profile.mission, 0) + 1
        return f"plan {plan_id}: {previous} -> {profile.describe()}"


def mission_key_root(root: Path, mission: str, peer: str, *, single_mission: bool) -> Path:
    """Get: the key store of one mission and peer under a station's key root.

    A station serving one mission keeps the layout it always had: its store is `root` itself.
    A station serving several keeps one store per mission and peer at
    `root/missions/<mission>/<peer>/` (pre-shared key, channel state, plan record, final
    keys), so no key, pad word or plan id of one mission is ever used for another.
    ValueError for a name that is not a plain lower-case identifier (no path tricks)."""
    for what, name in (("mission", mission), ("peer", peer)):
        if not _NAME.fullmatch(name):
            raise ValueError(f"{what} name {name!r} is not a plain identifier ([a-z0-9_.-])")
    if single_mission:
        return root
    return root / MISSIONS_DIR / mission / peer
