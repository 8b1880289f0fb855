"""`satqkd occ plan --config|--scenario FILE [--from T] [--days N] [--out DIR] [--quiet]`: the
operation control centre's plan for a time range (docs/occ.md).

The application's part: it resolves the satellites' TLEs from their mission profiles and the
stations from their profiles, and computes each station's expected-key table from the link
physics (sim_backends.expected, the same expected-key code as `sim link`) when the
configuration gives none: the expected key of up to `planning.key_table_passes` of the
predicted passes, spread over their maximum elevations. satqkd_occ predicts the passes and
plans them. Writes DIR/plan.json and DIR/plan.png; prints the plan as a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from satqkd.config import ConfigError

GROUP = "occ"
_KEY_STEP_S = 5.0  # expected counts integrated over 5 s steps (< 1 % from 1 s steps)


def _instant(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 instant like 2026-12-07T00:00:00Z, got {text[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 30.0:
        raise argparse.ArgumentTypeError(f"expected days in (0, 30], got {text[:20]!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add `occ plan`."""
    occ = sub.add_parser(GROUP, help="operation control centre: demand, passes, plans")
    commands = occ.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="predict passes and plan them against key demand")
    source = plan.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="an OCC configuration (configs/occ/)")
    source.add_argument("--scenario", type=Path, help="a scenario whose `occ:` key holds one")
    plan.add_argument("--from", dest="start", type=_instant, help="start instant (ISO 8601 UTC)")
    plan.add_argument("--days", type=_days, help="days to plan (default: the configuration's)")
    plan.add_argument("--out", type=Path, help="output directory (default runs/occ-<time>)")
    plan.add_argument("--quiet", action="store_true", help="print no table")

    daemon = commands.add_parser("run", help="the OCC daemon: demand in, signed plans out")
    daemon.add_argument("config", type=Path, help="an OCC configuration (configs/occ/)")
    daemon.add_argument(
        "--broker", required=True, help="mqtt://HOST:PORT, or mqtts:// with --tls-*"
    )
    daemon.add_argument("--occ-keys", required=True, type=Path, help="the OCC's telecommand keys")
    daemon.add_argument("--days", type=_days, default=3.0, help="planning horizon (default 3)")
    daemon.add_argument("--housekeeping-period-s", type=_period, default=10.0)
    daemon.add_argument("--tls-ca", metavar="FILE", help="with mqtts://: the broker's CA")
    daemon.add_argument("--tls-cert", metavar="FILE", help="with mqtts://: occ.crt")
    daemon.add_argument("--tls-key", metavar="FILE", help="and its key (occ.key)")


def _period(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.05 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected seconds in 0.05..3600, got {text[:20]!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run an `occ` command."""
    if args.command == "run":
        return _run_daemon(args)
    return _plan(args)


# ---- configuration ------------------------------------------------------------------------


def load_occ_config(path: Path, *, embedded: bool = False) -> Any:
    """Get the validated OccConfig of a file (`embedded`: under the file's `occ:` key)."""
    from satqkd.config import load_yaml_mapping, validate_model
    from satqkd_occ.settings import OccConfig

    data = load_yaml_mapping(path)
    if embedded:
        if not isinstance(data.get("occ"), dict):
            raise ConfigError(f"{path}: occ: required key is missing (the OCC configuration)")
        return validate_model(OccConfig, data["occ"], f"{path}: occ")
    return validate_model(OccConfig, data, str(path))


def _profiles(config: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mission profile of each satellite and the station profile of each station."""
    from satqkd.config import (
        MissionConfig,
        StationConfig,
        _resolve_named,
        configs_root_for,
        load_model,
    )

    root = configs_root_for(path)
    missions = {
        s.name: load_model(
            MissionConfig, _resolve_named(root, "missions", s.mission, path, "satellites.mission")
        )
        for s in config.satellites
    }
    stations = {}
    for entry in config.stations:
        name = entry.profile or entry.name
        profile = load_model(
            StationConfig, _resolve_named(root, "stations", name, path, "stations.profile")
        )
        if profile.track is not None:
            raise ConfigError(f"{path}: stations: {entry.name} moves (a track); plan fixed ones")
        stations[entry.name] = profile
    return missions, stations


def _scenario(path: Path, mission: Any, station: Any, start_unix_s: float, ref: str) -> Any:
    """A clear-sky scenario of one satellite over one station (profile `ref`), for the link
    physics."""
    from satqkd.config import Scenario, ScenarioConfig

    config = ScenarioConfig.model_validate(
        {
            "name": "occ-key-table",
            "mission": mission.name,
            "station": ref,
            "search": {"start_utc": datetime.fromtimestamp(start_unix_s, tz=UTC)},
        }
    )
    return Scenario(path=path, scenario=config, mission=mission, station=station)


def expected_pass_key_bits(scenario: Any, tle: tuple[str, str], window: Any) -> int:
    """Expected secret key bits of one clear-sky pass: the link physics over the pass above
    the mission's QKD elevation mask, through the station's post-processing (as `sim link`)."""
    import numpy as np

    from satqkd.pass_physics import detector_model, link_timeline, source_model
    from satqkd.wiring import protocol_parameters
    from satqkd_core import rng
    from sim_backends.channel import AttackModel
    from sim_backends.expected import expected_key, expected_rates, expected_statistics

    times = np.arange(math.ceil(window.aos_unix_s), math.floor(window.los_unix_s), _KEY_STEP_S)
    if times.size < 2:
        return 0
    link = link_timeline(scenario, tle, window, times)
    in_window = link.geometry.elevation_deg >= scenario.mission.protocol.min_qkd_elevation_deg
    if not in_window.any():
        return 0
    mission, source, detectors = scenario.mission, source_model(scenario), detector_model(scenario)
    rates = expected_rates(
        source,
        detectors,
        link.budget.transmittance,
        link.budget.background_counts_per_s,
        mission.protocol.sync_window_ps,
        link.polarisation_error,
        AttackModel(),
    )
    params = protocol_parameters(mission)
    stats = expected_statistics(rates, source, detectors, params, _KEY_STEP_S, in_window)
    seed = rng.derive_key(0, "occ/expected-reconciliation")
    return expected_key(stats, params, mission.protocol.cascade_passes, seed).key_bits


def _representatives(windows: list[Any], count: int) -> list[Any]:
    ordered = sorted(windows, key=lambda w: w.max_elevation_deg)
    if len(ordered) <= count:
        return ordered
    picks = (
        {round(k * (len(ordered) - 1) / (count - 1)) for k in range(count)} if count > 1 else {0}
    )
    return [ordered[k] for k in sorted(picks)]


def centred_window(window: Any, seconds: float | None) -> Any:
    """Get: the part of a pass `seconds` long centred on its culmination (all of it if None
    or longer): where `sim network` flies a pass whose QKD time is capped."""
    from satqkd_core.pass_search import PassWindow

    if seconds is None or window.los_unix_s - window.aos_unix_s <= seconds:
        return window
    start = max(window.aos_unix_s, window.culmination_unix_s - seconds / 2.0)
    stop = min(window.los_unix_s, start + seconds)
    return PassWindow(start, window.culmination_unix_s, stop, window.max_elevation_deg, True)


def build_inputs(
    config: Any, path: Path, start: float, stop: float, qkd_window_s: float | None = None
) -> dict[str, Any]:
    """Satellites, station sites, key tables and forecast of a configuration, for satqkd_occ
    (`qkd_window_s`: key tables of passes whose QKD is capped to that, centred_window)."""
    from satqkd.pass_physics import _tle_for
    from satqkd_core.ephemeris import Station
    from satqkd_core.pass_search import PassWindow
    from satqkd_occ import CloudForecast, KeyTable, Satellite, StationSite, predict_passes

    missions, profiles = _profiles(config, path)
    planning = config.planning
    satellites, tles = [], {}
    for entry in config.satellites:
        first = config.stations[0]
        scenario = _scenario(
            path, missions[entry.name], profiles[first.name], start, first.profile or first.name
        )
        tle = (entry.tle.line1, entry.tle.line2) if entry.tle else _tle_for(scenario, start)
        tles[entry.name] = tle
        satellites.append(Satellite(entry.name, tle[0], tle[1]))
    sites = []
    for entry in config.stations:
        profile = profiles[entry.name]
        location = profile.location
        sites.append(
            StationSite(
                entry.name,
                Station(location.latitude_deg, location.longitude_deg, location.altitude_m),
                entry.min_elevation_deg
                if entry.min_elevation_deg is not None
                else profile.min_elevation_deg,
                entry.night_sun_elevation_deg
                if entry.night_sun_elevation_deg is not None
                else planning.night_sun_elevation_deg,
            )
        )
    tables: dict[tuple[str, str], KeyTable] = {}
    # the table is of night passes: the ones a night-only plan flies (day passes count 0)
    night_passes = predict_passes(satellites, sites, start, stop, night_only=True)
    for entry, site in zip(config.stations, sites, strict=True):
        for satellite in satellites:
            if entry.key_table is not None:
                points = sorted(entry.key_table)
                tables[satellite.name, site.name] = KeyTable(
                    tuple(p[0] for p in points), tuple(p[1] for p in points)
                )
                continue
            scenario = _scenario(
                path,
                missions[satellite.name],
                profiles[entry.name],
                start,
                entry.profile or entry.name,
            )
            tle = tles[satellite.name]
            windows = [
                PassWindow(
                    c.aos_unix_s, c.culmination_unix_s, c.los_unix_s, c.max_elevation_deg, True
                )
                for c in night_passes
                if c.satellite == satellite.name and c.station == site.name
            ]
            chosen = _representatives(windows, planning.key_table_passes)
            if not chosen:
                continue
            points = [
                (
                    w.max_elevation_deg,
                    expected_pass_key_bits(scenario, tle, centred_window(w, qkd_window_s)),
                )
                for w in chosen
            ]
            tables[satellite.name, site.name] = KeyTable(
                tuple(p[0] for p in points), tuple(p[1] for p in points)
            )
    forecast = CloudForecast(
        {k: dict(v) for k, v in config.weather.nights.items()},
        config.weather.default_cloud_probability,
        _climatology(config, profiles, path) if config.weather.climatology else {},
    )
    return {"satellites": satellites, "sites": sites, "tables": tables, "forecast": forecast}


def _climatology(config: Any, profiles: dict[str, Any], path: Path) -> dict[str, list[float]]:
    """Each station's monthly cloud probability, 1 - p_clear of its profile's climate site."""
    from satqkd_core.errors import InputError
    from sim_backends.cloud_climatology import site_climate

    monthly = {}
    for entry in config.stations:
        site = profiles[entry.name].atmosphere.climate_site
        if site is None:
            raise ConfigError(
                f"{path}: weather: climatology needs atmosphere.climate_site in the station "
                f"profile of {entry.name}"
            )
        try:
            climate = site_climate(site)
        except InputError as exc:
            raise ConfigError(f"{path}: stations: {entry.name}: {exc}") from None
        monthly[entry.name] = [climate.cloud_probability(m) for m in range(1, 13)]
    return monthly


# ---- occ plan -------------------------------------------------------------------------------


def make_plan(config: Any, path: Path, start: float, days: float) -> dict[str, Any]:
    """Predict, plan and get the plan.json document (and the candidates, for the plot)."""
    from satqkd_occ import (
        KeyDemand,
        check_demands,
        plan_document,
        plan_passes,
        predict_passes,
    )

    stop = start + days * 86400.0
    inputs = build_inputs(config, path, start, stop)
    known_stations = [s.name for s in inputs["sites"]]
    known_satellites = [s.name for s in inputs["satellites"]]
    demands = check_demands(
        (
            KeyDemand(d.id, d.endpoints[0], d.endpoints[1], d.bits, _utc_seconds(d.deadline_utc))
            for d in config.demand
        ),
        known_stations,
        known_satellites,
    )
    candidates = predict_passes(
        inputs["satellites"],
        inputs["sites"],
        start,
        stop,
        inputs["tables"],
        inputs["forecast"],
        night_only=config.planning.night_only,
    )
    plan = plan_passes(
        candidates, demands, config.planning.plan_settings(), satellites=known_satellites
    )
    document = plan_document(plan, config.name, start, stop, config.planning.night_only)
    return {"document": document, "candidates": candidates, "plan": plan}


def _utc_seconds(instant: datetime) -> float:
    return (instant if instant.tzinfo else instant.replace(tzinfo=UTC)).timestamp()


def _plan(args: argparse.Namespace) -> int:
    from satqkd_core.errors import InputError

    path = args.config if args.config is not None else args.scenario
    config = load_occ_config(path, embedded=args.scenario is not None)
    start = args.start
    if start is None:
        if config.planning.start_utc is None:
            raise ConfigError(f"{path}: planning.start_utc is not set; give --from")
        start = _utc_seconds(config.planning.start_utc)
    days = args.days if args.days is not None else config.planning.days
    out = args.out or Path("runs") / f"occ-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    try:
        result = make_plan(config, path, start, days)
    except InputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    document = result["document"]
    (out / "plan.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    plot_plan_timeline(result["candidates"], result["plan"], out / "plan.png")
    if not args.quiet:
        _print_table(document)
        print(f"wrote {out / 'plan.json'} and {out / 'plan.png'}")
    return 0


def _print_table(document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=140)
    passes = Table(title=f"plan {document['name']}: {document['from_utc']} .. {document['to_utc']}")
    for column in ("AOS (UTC)", "satellite", "station", "max el", "cloud", "expected bits", "for"):
        passes.add_column(column)
    for p in document["passes"]:
        passes.add_row(
            p["aos_utc"],
            p["satellite"],
            p["station"],
            f"{p['max_elevation_deg']:.1f}",
            f"{p['cloud_probability']:.2f}",
            str(p["expected_key_bits"]),
            ", ".join(f"{k} {v}" for k, v in p["allocated_bits"].items()),
        )
    console.print(passes)
    demand = Table(title="demand")
    for column in ("id", "end points", "bits", "deadline (UTC)", "planned bits", "met"):
        demand.add_column(column)
    for d in document["demand"]:
        demand.add_row(
            d["id"],
            " - ".join(d["endpoints"]),
            str(d["bits"]),
            d["deadline_utc"],
            str(d["planned_bits"]),
            "yes" if d["met"] else "NO",
        )
    console.print(demand)
    console.print(
        f"{document['demand_met']} of {document['demand_total']} demands met; "
        f"{document['planned_passes']} of {document['candidate_passes']} passes flown; "
        f"solver {document['solver_status']} in {document['solve_s']} s"
    )


def plot_plan_timeline(candidates: list[Any], plan: Any, path: Path) -> None:
    """Draw the timeline: one row per satellite and station, every candidate pass in grey, the
    flown ones coloured by the demand they serve most."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted({(c.satellite, c.station) for c in candidates})
    index = {row: k for k, row in enumerate(rows)}
    demand_ids = [o.demand.demand_id for o in plan.outcomes]
    colours = plt.get_cmap("tab10")
    t0 = min((c.aos_unix_s for c in candidates), default=0.0)
    figure, axes = plt.subplots(figsize=(12, 1.5 + 0.5 * max(len(rows), 1)))
    for c in candidates:
        width_h = (c.los_unix_s - c.aos_unix_s) / 3600.0
        axes.broken_barh(
            [((c.aos_unix_s - t0) / 3600.0, max(width_h, 0.05))],
            (index[c.satellite, c.station] - 0.4, 0.8),
            facecolors="0.85",
        )
    for item in plan.passes:
        c = item.candidate
        main = max(item.allocated_bits, key=item.allocated_bits.get)
        colour = colours(demand_ids.index(main) % 10)
        axes.broken_barh(
            [((c.aos_unix_s - t0) / 3600.0, max((c.los_unix_s - c.aos_unix_s) / 3600.0, 0.1))],
            (index[c.satellite, c.station] - 0.4, 0.8),
            facecolors=colour,
        )
    for k, demand_id in enumerate(demand_ids):
        axes.plot([], [], color=colours(k % 10), linewidth=6, label=demand_id)
    end_h = max(((c.los_unix_s - t0) / 3600.0 for c in candidates), default=1.0)
    axes.set_xlim(-1.0, end_h + 1.0)
    axes.set_ylim(-0.6, len(rows) - 0.4 + 0.6)
    axes.set_yticks(range(len(rows)), [f"{sat} / {station}" for sat, station in rows])
    axes.set_xlabel(f"hours from {datetime.fromtimestamp(t0, tz=UTC):%Y-%m-%d %H:%M} UTC")
    axes.set_title("passes: grey predicted, coloured flown (by the demand served most)")
    if demand_ids:
        axes.legend(loc="upper right", fontsize="small", ncol=min(len(demand_ids), 6))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---- occ run --------------------------------------------------------------------------------


def occ_daemon_settings(config: Any, path: Path, now_unix_s: float, days: float) -> Any:
    """Get the daemon's OccSettings from a configuration (one satellite)."""
    from satqkd.config import MissionConfig, _resolve_named, configs_root_for, load_model
    from satqkd_occ.daemon import OccSettings

    if len(config.satellites) != 1:
        raise ConfigError(
            f"{path}: satellites: occ run plans one satellite, got {len(config.satellites)}"
        )
    inputs = build_inputs(config, path, now_unix_s, now_unix_s + days * 86400.0)
    entry = config.satellites[0]
    mission = load_model(
        MissionConfig,
        _resolve_named(
            configs_root_for(path), "missions", entry.mission, path, "satellites.mission"
        ),
    )
    return OccSettings(
        satellite=inputs["satellites"][0],
        repetition_rate_hz=mission.source.repetition_rate_hz,
        sites=tuple(inputs["sites"]),
        key_tables=inputs["tables"],
        forecast=inputs["forecast"],
        plan_settings=config.planning.plan_settings(),
        horizon_days=days,
        night_only=config.planning.night_only,
        housekeeping_period_s=config.housekeeping_period_s,
    )


def _run_daemon(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from satqkd.signals import run_until_signalled
    from satqkd_core import dictionary as dct
    from satqkd_core.errors import InputError
    from satqkd_occ import KeyDemand
    from satqkd_runtime.telecommand_auth import TelecommandSigner

    config = load_occ_config(args.config)
    signers = {}
    for node in ("payload", *(dct.ogs_node(entry.name) for entry in config.stations)):
        try:  # like the nodes, the OCC refuses to start without its telecommand keys
            signers[node] = TelecommandSigner.for_node(args.occ_keys, node)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        settings = occ_daemon_settings(config, args.config, time.time(), args.days)
        demands = [
            KeyDemand(d.id, d.endpoints[0], d.endpoints[1], d.bits, _utc_seconds(d.deadline_utc))
            for d in config.demand
        ]
    except InputError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None
    import dataclasses

    settings = dataclasses.replace(settings, housekeeping_period_s=args.housekeeping_period_s)
    asyncio.run(run_until_signalled(serve_occ(settings, demands, args, signers)))
    return 0


async def serve_occ(
    settings: Any, demands: list[Any], args: argparse.Namespace, signers: dict[str, Any]
) -> None:
    """Control: run the OCC daemon on a real clock until it is stopped."""
    from satqkd.broker_security import daemon_tls
    from satqkd_occ.daemon import OccDaemon
    from satqkd_runtime.bus import MessageBus
    from satqkd_runtime.clock import RealClock

    async with MessageBus(args.broker, "satqkd-occ", tls=daemon_tls(args, "occ")) as bus:
        daemon = OccDaemon(settings, bus, RealClock(), signers.__getitem__, demands)
        await daemon.run()
