"""`satqkd sim night`: one station, several missions, one night.

The night scenario names one station and two or more missions in priority order. For each
mission the passes of the night over the station are searched (satqkd_core.pass_search, the
TLE each mission's profile gives, epoch at the night's start); each mission's passes are
offered to the station, best first, and held or refused by the station's own rule
(satqkd_ogs.missions: unknown or incompatible mission, overlap, slew and reconfiguration gap),
one pass per mission. Every held pass is then flown in time order by the `sim pass` machinery
(satqkd.simulation.run_pass: the real daemons, broker and physics) with that mission's
profile, the station's daemons sharing one `StationMissions` (they re-check every plan and
switch the station's profile before each AOS), and keys kept per mission and peer across the
night. The night report lists each pass and each mission (docs/missions.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from satqkd.config import (
    NAME_PATTERN,
    ConfigError,
    MissionConfig,
    MissionProfileConfig,
    PassSearchConfig,
    Positive,
    Scenario,
    ScenarioConfig,
    SimBenchesConfig,
    SimulationConfig,
    StationConfig,
    StrictCount,
    WeatherConfig,
    _Model,
    _resolve_named,
    configs_root_for,
    load_model,
    unix_seconds,
    validate_model,
)
from satqkd.mission_compat import station_missions
from satqkd.station_site import station_position
from satqkd_core import rng
from satqkd_core.pass_search import PassWindow, find_passes
from satqkd_ogs.missions import MISSIONS_DIR, PlanRefused, StationMissions, mission_key_root

#: how long before AOS a pass's own scenario starts its pass search (it finds that pass first)
SEARCH_LEAD_S = 300.0


class NightWindowConfig(_Model):
    start_utc: datetime
    hours: Annotated[float, Field(gt=0.0, le=24.0)] = 14.0
    min_max_elevation_deg: Annotated[float, Field(ge=0.0, le=90.0)] = 20.0
    night_only: bool = True


class NightMissionConfig(_Model):
    mission: str
    # QKD time of the pass, centred on culmination (None: from the QKD mask to LOS)
    max_duration_s: Positive | None = 30.0
    # the station's key store of this mission holds the keys shared with this peer
    peer: Annotated[str, Field(pattern=NAME_PATTERN)] = "payload"
    # the benches this mission's passes fly with (default: the night's simulation.benches);
    # a BBM92 pass needs a pair source and taggers at both ends (sim-*-bbm92)
    benches: SimBenchesConfig | None = None


class NightScenarioConfig(_Model):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    station: str
    seed: Annotated[int, StrictCount, Field(ge=0, lt=2**63)] = 0
    night: NightWindowConfig
    missions: Annotated[list[NightMissionConfig], Field(min_length=1, max_length=8)]
    weather: WeatherConfig = WeatherConfig()
    simulation: SimulationConfig = SimulationConfig()

    @model_validator(mode="after")
    def _missions_once(self) -> NightScenarioConfig:
        names = [m.mission for m in self.missions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"each mission once (priority order): {', '.join(twice)} repeated")
        return self


@dataclass(frozen=True)
class NightScenario:
    """A night scenario with its station and mission profiles loaded."""

    path: Path
    config: NightScenarioConfig
    station: StationConfig
    station_file: Path
    missions: dict[str, MissionProfileConfig]  # by profile name, in priority order
    entries: dict[str, NightMissionConfig]  # the same keys

    @property
    def start_unix_s(self) -> float:
        """Get: the start of the night window."""
        return unix_seconds(self.config.night.start_utc)


def load_night(path: str | Path, seed: int | None = None) -> NightScenario:
    """Get: the night scenario at `path` with its profiles; ConfigError (one line, every bad
    file named) for a missing or invalid one."""
    path = Path(path)
    config = load_model(NightScenarioConfig, path)
    if seed is not None:
        data = {**config.model_dump(exclude_unset=True), "seed": seed}
        config = validate_model(NightScenarioConfig, data, f"{path} (with --seed)")
    root = configs_root_for(path)
    problems: list[str] = []
    station = None
    station_file = Path()
    try:
        station_file = _resolve_named(root, "stations", config.station, path, "station")
        station = load_model(StationConfig, station_file)
    except ConfigError as exc:
        problems.append(str(exc))
    missions: dict[str, MissionProfileConfig] = {}
    entries: dict[str, NightMissionConfig] = {}
    for k, entry in enumerate(config.missions):
        try:
            file = _resolve_named(root, "missions", entry.mission, path, f"missions.{k}.mission")
            profile = load_model(MissionProfileConfig, file)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if profile.name in missions:
            problems.append(f"{path}: missions.{k}: profile {profile.name} given twice")
        missions[profile.name] = profile
        entries[profile.name] = entry
    if problems:
        raise ConfigError(" | ".join(problems))
    assert station is not None
    return NightScenario(path, config, station, station_file, missions, entries)


def _with_epoch(mission: MissionProfileConfig, start_unix_s: float) -> MissionProfileConfig:
    """The profile with its orbit's epoch fixed at the night's start when it has none, so
    every pass of the night (and each pass's own scenario) sees the same orbit."""
    orbit = mission.orbit
    if orbit.tle is not None or orbit.sample_tle is not None or orbit.epoch_utc is not None:
        return mission
    epoch = datetime.fromtimestamp(start_unix_s, UTC)
    return mission.model_copy(update={"orbit": orbit.model_copy(update={"epoch_utc": epoch})})


def _tle(mission: MissionProfileConfig) -> tuple[str, str]:
    from sim_backends.orbit import load_sample_tle, sun_synchronous_tle

    orbit = mission.orbit
    if orbit.tle is not None:
        return orbit.tle.line1, orbit.tle.line2
    if orbit.sample_tle is not None:
        return load_sample_tle(orbit.sample_tle)
    assert orbit.epoch_utc is not None
    return sun_synchronous_tle(orbit.altitude_km, orbit.ltan_hours, unix_seconds(orbit.epoch_utc))


@dataclass(frozen=True)
class NightPass:
    """One pass the station holds for the night."""

    mission: str
    plan_id: int
    seed: int
    window: PassWindow
    start_after_aos_s: float | None
    max_duration_s: float | None


@dataclass
class NightPlan:
    """The night's passes (held, in time order) and every pass the station refused."""

    passes: list[NightPass] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    candidates: dict[str, list[PassWindow]] = field(default_factory=dict)


def _utc(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pass_seed(night: NightScenario, mission: str, window: PassWindow) -> int:
    return rng.derive_key(night.config.seed, f"night/{mission}/{window.aos_unix_s:.0f}") >> 1


def candidate_passes(night: NightScenario) -> dict[str, list[PassWindow]]:
    """Get: each mission's passes in the night window that meet the night's criteria, best
    (highest culmination) first."""
    window = night.config.night
    start = night.start_unix_s
    stop = start + window.hours * 3600.0
    where = station_position(night.station, night.station_file)
    found = {}
    for name, mission in night.missions.items():
        line1, line2 = _tle(_with_epoch(mission, start))
        passes = find_passes(line1, line2, where, start, stop, night.station.min_elevation_deg)
        eligible = [
            p
            for p in passes
            if p.max_elevation_deg >= window.min_max_elevation_deg
            and (p.night or not window.night_only)
        ]
        found[name] = sorted(eligible, key=lambda p: -p.max_elevation_deg)
    return found


def plan_night(night: NightScenario, planner: StationMissions | None = None) -> NightPlan:
    """Get: the passes the station holds for the night: missions in priority order, each
    mission's passes best first, the first the station takes is its pass; every refusal
    with the station's reason."""
    planner = planner or station_missions(night.station, night.missions.values())
    plan = NightPlan(candidates=candidate_passes(night))
    for name, windows in plan.candidates.items():
        entry = night.entries[name]
        if not windows:
            reason = (
                f"no {'night ' if night.config.night.night_only else ''}pass above "
                f"{night.config.night.min_max_elevation_deg:g} deg in the window"
            )
            plan.refused.append(
                {"mission": name, "aos_utc": None, "max_elevation_deg": None, "reason": reason}
            )
        for window in windows:
            seed = _pass_seed(night, name, window)
            plan_id = 1 + seed % 1_000_000  # as satqkd.simulation.run_pass numbers its plan
            try:
                planner.hold(plan_id, name, window.aos_unix_s, window.los_unix_s)
            except PlanRefused as exc:
                plan.refused.append(
                    {
                        "mission": name,
                        "aos_utc": _utc(window.aos_unix_s),
                        "max_elevation_deg": round(window.max_elevation_deg, 1),
                        "reason": str(exc),
                    }
                )
                if name in planner.incompatible:
                    break  # every pass of it is refused for the same reason
                continue
            start_after = None
            if entry.max_duration_s is not None:  # centred on culmination
                half = entry.max_duration_s / 2.0
                start_after = max(0.0, window.culmination_unix_s - window.aos_unix_s - half)
            plan.passes.append(
                NightPass(name, plan_id, seed, window, start_after, entry.max_duration_s)
            )
            break
    plan.passes.sort(key=lambda p: p.window.aos_unix_s)
    return plan


def pass_scenario(night: NightScenario, night_pass: NightPass, index: int) -> Scenario:
    """Get: the `sim pass` scenario of one held pass: its mission's profile (orbit epoch at the
    night's start), the night's station, weather and simulation settings, a search that
    finds this pass first, QKD centred on culmination."""
    sc = night.config
    mission = _with_epoch(night.missions[night_pass.mission], night.start_unix_s)
    # decoy BB84 flies as MissionConfig (`source` required); BBM92 as its profile
    flown = (
        mission if mission.source is None else MissionConfig.model_validate(mission.model_dump())
    )
    entry = night.entries[night_pass.mission]
    update: dict[str, Any] = {"qkd_start_after_aos_s": night_pass.start_after_aos_s}
    if entry.benches is not None:
        update["benches"] = entry.benches
    simulation = sc.simulation.model_copy(update=update)
    aos = night_pass.window.aos_unix_s
    config = ScenarioConfig(
        name=f"{sc.name}-{index}"[:64],
        description=f"pass {index} of night {sc.name}: {night_pass.mission}",
        mission=entry.mission,
        station=sc.station,
        seed=night_pass.seed,
        search=PassSearchConfig(
            start_utc=datetime.fromtimestamp(aos - SEARCH_LEAD_S, UTC),
            days=0.25,
            min_max_elevation_deg=0.0,
            night_only=False,
        ),
        weather=sc.weather,
        simulation=simulation,
    )
    return Scenario(path=night.path, scenario=config, mission=flown, station=night.station)


@dataclass
class NightRun:
    """A flown night: its plan, one row per pass, the per-mission totals, the report."""

    night: NightScenario
    plan: NightPlan
    rows: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def station_key_root(out_dir: Path, night: NightScenario) -> Path:
    """Get: the station's key root of a night run (one store per mission and peer below)."""
    return out_dir / "keys" / f"ogs-{night.station.name}"


def _pass_row(
    index: int, night_pass: NightPass, run: Any, guard: StationMissions, switched: bool
) -> dict[str, Any]:
    from satqkd.report import explain_no_key

    report = run.report
    key, quantum = report["key"], report["quantum"]
    window = night_pass.window
    digests_equal = key["sha256_payload"] is not None and (
        key["sha256_payload"] == key["sha256_ogs"]
    )
    row = {
        "index": index,
        "mission": night_pass.mission,
        "protocol": night_pass_family(run),
        "plan_id": night_pass.plan_id,
        "aos_utc": _utc(window.aos_unix_s),
        "los_utc": _utc(window.los_unix_s),
        "max_elevation_deg": round(window.max_elevation_deg, 2),
        "qkd_start_utc": _utc(run.physics.qkd_start_unix_s),
        "qkd_stop_utc": _utc(run.physics.qkd_stop_unix_s),
        "qkd_duration_s": run.physics.qkd_stop_unix_s - run.physics.qkd_start_unix_s,
        "station_profile": guard.active.describe() if guard.active else None,
        "profile_switched": switched,
        "detections": quantum["detections"],
        "sifted_bits": quantum["sifted_bits"],
        "qber": quantum["qber"],
        "secret_key_bits": key["secret_key_bits"],
        "digests_equal": digests_equal,
        "no_key_reason": None,
        "report": f"passes/{index}-{night_pass.mission}/report.json",
        "wall_s": round(run.wall_s, 2),
    }
    if not key["secret_key_bits"]:
        culmination = window.culmination_unix_s - window.aos_unix_s
        row["no_key_reason"] = explain_no_key(report, culmination)
    return row


def night_pass_family(run: Any) -> str:
    """Get: the protocol family the pass ran (its mission profile's)."""
    return str(run.scenario.mission.protocol.family)


async def fly_night(
    night: NightScenario,
    plan: NightPlan,
    out_dir: Path,
    progress: Any = None,
) -> NightRun:
    """Fly every held pass in time order with the real daemons (satqkd.simulation.run_pass),
    the station's daemons sharing one StationMissions, keys kept per mission and peer."""
    from satqkd.report_builder import write_report
    from satqkd.simulation import run_pass

    guard = station_missions(night.station, night.missions.values())
    night_run = NightRun(night, plan)
    station_root = station_key_root(out_dir, night)
    for directory in (out_dir / "keys", station_root, station_root / MISSIONS_DIR):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)  # owner-only, as every key store below
    for index, night_pass in enumerate(plan.passes, start=1):
        entry = night.entries[night_pass.mission]
        pass_dir = out_dir / "passes" / f"{index}-{night_pass.mission}"
        pass_dir.mkdir(parents=True, exist_ok=True)
        if progress is not None:
            progress(f"pass {index}/{len(plan.passes)}: {night_pass.mission} "
                     f"AOS {_utc(night_pass.window.aos_unix_s)}")  # fmt: skip
        scenario = pass_scenario(night, night_pass, index)
        switches = guard.counters.profile_switches
        run = await run_pass(
            scenario,
            pass_dir,
            max_duration_s=night_pass.max_duration_s,
            key_root=out_dir / "keys" / night_pass.mission,
            ogs_keys=mission_key_root(
                station_root, night_pass.mission, entry.peer, single_mission=False
            ),
            station_missions=guard,
        )
        if abs(run.physics.window.aos_unix_s - night_pass.window.aos_unix_s) > 1.0:
            raise ConfigError(
                f"pass {index} ({night_pass.mission}): the pass simulation chose the pass at "
                f"{_utc(run.physics.window.aos_unix_s)}, not the one held"
            )
        write_report(run.report, pass_dir)
        switched = guard.counters.profile_switches > switches
        night_run.rows.append(_pass_row(index, night_pass, run, guard, switched))
    night_run.report = night_report(night_run, out_dir, guard)
    return night_run


def _mission_totals(night_run: NightRun, out_dir: Path) -> dict[str, Any]:
    from satqkd_runtime.keystore import KeyStore

    night = night_run.night
    totals = {}
    for name, entry in night.entries.items():
        rows = [r for r in night_run.rows if r["mission"] == name]
        store = mission_key_root(
            station_key_root(out_dir, night), name, entry.peer, single_mission=False
        )
        held = store.is_dir()
        totals[name] = {
            "protocol": night.missions[name].protocol.family,
            "passes_flown": len(rows),
            "secret_key_bits": sum(r["secret_key_bits"] for r in rows),
            "all_digests_equal": all(r["digests_equal"] for r in rows if r["secret_key_bits"]),
            "station_key_store": str(store.relative_to(out_dir)),
            "station_confirmed_key_bits": KeyStore(store).total_bits() if held else 0,
        }
    return totals


def night_report(night_run: NightRun, out_dir: Path, guard: StationMissions) -> dict[str, Any]:
    """Get: the night report (docs/missions.md, "Several missions in one night")."""
    night, plan = night_run.night, night_run.plan
    counters = guard.counters
    return {
        "night": night.config.name,
        "station": night.station.name,
        "seed": night.config.seed,
        "window": {
            "start_utc": _utc(night.start_unix_s),
            "hours": night.config.night.hours,
            "min_max_elevation_deg": night.config.night.min_max_elevation_deg,
            "night_only": night.config.night.night_only,
        },
        "qkd_max_duration_s": {n: e.max_duration_s for n, e in night.entries.items()},
        "candidates": {
            name: [
                {
                    "aos_utc": _utc(w.aos_unix_s),
                    "los_utc": _utc(w.los_unix_s),
                    "max_elevation_deg": round(w.max_elevation_deg, 2),
                }
                for w in sorted(windows, key=lambda w: w.aos_unix_s)
            ]
            for name, windows in plan.candidates.items()
        },
        "passes": night_run.rows,
        "refused": plan.refused,
        "missions": _mission_totals(night_run, out_dir),
        "station_missions": {
            "plans_held": counters.plans_held,
            "plans_refused": counters.plans_refused,
            "profile_switches": counters.profile_switches,
            "slew_gap_s": guard.slew_gap_s,
            "reconfiguration_gap_s": guard.reconfiguration_gap_s,
            "incompatible": dict(guard.incompatible),
        },
    }


def write_night(night_run: NightRun, out_dir: Path) -> list[Path]:
    """Write night.json, the timeline plot night-timeline.png and its table night-timeline.csv."""
    from satqkd.night_plot import write_timeline

    path = out_dir / "night.json"
    path.write_text(json.dumps(night_run.report, indent=2) + "\n", encoding="utf-8")
    return [path, *write_timeline(night_run.report, out_dir)]


def run_night(night: NightScenario, out_dir: Path, progress: Any = None) -> tuple[NightRun, float]:
    """Plan and fly the night into `out_dir`, write its report and plot; get the run and its
    wall time in seconds."""
    start = time.perf_counter()
    plan = plan_night(night)
    night_run = asyncio.run(fly_night(night, plan, out_dir, progress))
    wall = time.perf_counter() - start
    night_run.report["wall_s"] = round(wall, 1)
    write_night(night_run, out_dir)
    return night_run, wall
