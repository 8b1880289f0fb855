"""`satqkd sim network`: a QKD network over simulated days (docs/network.md, decision 0032).

1. The OCC plans (satqkd_occ: pass prediction and the CP-SAT planner), with key tables for
   the QKD window each pass is flown with.
2. The day's weather: each station's night is cloudy with the forecast's probability, drawn
   from the seed; a planned pass on a cloudy night is lost (flown with no key).
3. Every other planned pass is flown in time order with the real payload and station daemons
   in simulated time (`satqkd.simulation.run_pass`, the machinery of `sim pass`); each node's
   key store persists across passes (one key root per satellite, `DIR/nodes/<satellite>`).
4. Its key is credited to the demands the plan gave it (in the plan's order). Demand between a
   satellite and a station is met by that key; demand between two stations (or their fibre
   users) through a trusted relay (`satqkd.relay_run.run_relay`: the real daemons, the XOR
   broadcast) as soon as both stations hold credited key of the same satellite.
5. Relay keys of a demand whose end point is a fibre user go hop by hop through the fibre
   network (sim_backends.fibre_network) from the station to the user.

Every random choice flows from the scenario's seed: the same seed gives the same report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from satqkd.config import (
    ConfigError,
    MissionConfig,
    Scenario,
    ScenarioConfig,
    StationConfig,
    TleConfig,
    _resolve_named,
    configs_root_for,
    load_model,
)
from satqkd.network_scenario import NetworkScenario
from satqkd_core import rng
from satqkd_core.errors import InputError

log = logging.getLogger("satqkd.network")

_PLAN_ID_BLOCK = 1_000_000  # run_pass's plan id is 1 + seed % this: one per pass, increasing


@dataclass
class FlownPass:
    """One planned pass and what became of it."""

    pass_id: str
    satellite: str
    station: str
    aos_unix_s: float
    los_unix_s: float
    max_elevation_deg: float
    night: str
    expected_key_bits: int
    allocated_bits: dict[str, int]
    status: str = "planned"  # flown | lost_to_weather | failed
    plan_id: int | None = None
    key_bits: int = 0
    key_id: str | None = None
    sha256_payload: str | None = None
    sha256_ogs: str | None = None
    qber: float | None = None
    qkd_s: float = 0.0
    reason: str | None = None
    credited: dict[str, int] = field(default_factory=dict)


@dataclass
class DemandState:
    """A demand as the run meets it."""

    demand_id: str
    endpoints: tuple[str, str]
    stations: tuple[str, str]  # the gateways the OCC planned between
    bits: int
    deadline_unix_s: float
    planned_bits: int = 0
    delivered_bits: int = 0  # key both end points hold (after relay and fibre, where needed)
    relayed_bits: int = 0
    # (satellite, station) -> [[key-store block id, credited bits not yet relayed]]
    credit: dict[tuple[str, str], list[list[Any]]] = field(default_factory=dict)
    # user node -> relay key ids waiting for the fibre
    fibre_pending: dict[str, list[str]] = field(default_factory=dict)
    # user node -> {relay key id: SHA-256 of the key as the user filed it}
    fibre_done: dict[str, dict[str, str]] = field(default_factory=dict)
    met_unix_s: float | None = None

    def is_relay(self, satellites: set[str]) -> bool:
        """Get: whether the demand is met through a relay (two stations)."""
        return not set(self.stations) & satellites


@dataclass
class NetworkRun:
    """Everything the network report is made of."""

    scenario: NetworkScenario
    path: Path
    out: Path
    plan: Any = None
    candidates: list[Any] = field(default_factory=list)
    passes: list[FlownPass] = field(default_factory=list)
    demands: list[DemandState] = field(default_factory=list)
    weather: dict[tuple[str, str], tuple[float, bool]] = field(default_factory=dict)
    relays: list[dict[str, Any]] = field(default_factory=list)
    fibre: list[dict[str, Any]] = field(default_factory=list)
    chains: list[Any] = field(default_factory=list)  # satqkd.network_chain.ChainState
    inventory: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    tles: dict[str, tuple[str, str]] = field(default_factory=dict)
    forecast: Any = None  # the OCC's cloud forecast (satqkd_occ.CloudForecast)
    replans: list[dict[str, Any]] = field(default_factory=list)


# ---- planning ---------------------------------------------------------------------------------


@dataclass
class NetworkPlanner:
    """The OCC's planning inputs for the run: every candidate pass, the demands and the
    planner's settings; `plan` plans (or replans) from an instant on, without the passes of
    a (station, night) seen cloudy (a pass of it lost to weather: every pass of a night shares
    its weather)."""

    candidates: list[Any]
    demands: list[Any]
    settings: Any
    satellites: list[str]
    cloudy_nights: set[tuple[str, str]] = field(default_factory=set)

    def plan(
        self, after_unix_s: float | None = None, remaining: dict[str, Any] | None = None
    ) -> Any:
        """Get: the plan of the passes with AOS after `after_unix_s` (all if None) for what
        each demand still needs: `remaining[id]` = (bits, end point a, end point b), where a
        relay demand one station already holds enough key for becomes a demand of the other
        station with the satellite (all of each demand if None; none left: dropped)."""
        import dataclasses

        from satqkd_occ import plan_passes

        candidates = [
            c
            for c in self.candidates
            if (after_unix_s is None or c.aos_unix_s > after_unix_s)
            and (c.station, c.night_date) not in self.cloudy_nights
        ]
        demands = []
        for d in self.demands:
            if remaining is None:
                demands.append(d)
                continue
            bits, a, b = remaining[d.demand_id]
            if bits > 0:
                demands.append(dataclasses.replace(d, bits=bits, endpoint_a=a, endpoint_b=b))
        return plan_passes(candidates, demands, self.settings, satellites=self.satellites)


def plan_network(scenario: NetworkScenario, path: Path) -> tuple[NetworkPlanner, dict[str, Any]]:
    """Get: the planner of the run (candidate passes with the key tables of the QKD window the
    passes are flown with) and the OCC inputs (satellites with their TLEs)."""
    from satqkd.occ_cli import build_inputs
    from satqkd_occ import KeyDemand, check_demands, predict_passes

    config = scenario.occ_config()
    start, stop = scenario.start_unix_s, scenario.stop_unix_s
    inputs = build_inputs(config, path, start, stop, scenario.simulation.qkd_window_s)
    satellites = [s.name for s in inputs["satellites"]]
    demands = check_demands(
        (
            KeyDemand(d.id, d.endpoints[0], d.endpoints[1], d.bits, d.deadline_utc.timestamp())
            for d in config.demand
        ),
        [s.name for s in inputs["sites"]],
        satellites,
    )
    candidates = predict_passes(
        inputs["satellites"], inputs["sites"], start, stop, inputs["tables"], inputs["forecast"],
        night_only=config.planning.night_only,
    )  # fmt: skip
    settings = config.planning.plan_settings(seed=scenario.seed % (2**31 - 1))
    return NetworkPlanner(candidates, demands, settings, satellites), inputs


def draw_weather(
    seed: int, forecast: Any, nights: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[float, bool]]:
    """Get: (cloud probability, cloudy) per (station, night): cloudy with the probability the
    OCC's forecast gives that night, drawn from the seed (the same night is the same whatever
    else is planned)."""
    drawn = {}
    for station, night in sorted(nights):
        p = forecast.probability(station, night)
        draw = np.random.default_rng(rng.derive_key(seed, f"weather/{station}/{night}"))
        drawn[station, night] = (p, bool(draw.random() < p))
    return drawn


# ---- flying a pass ----------------------------------------------------------------------------


def _profiles(scenario: NetworkScenario, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    root = configs_root_for(path)
    missions = {
        s.name: load_model(
            MissionConfig, _resolve_named(root, "missions", s.mission, path, "satellites.mission")
        )
        for s in scenario.satellites
    }
    stations = {}
    for entry in scenario.stations:
        profile = load_model(
            StationConfig,
            _resolve_named(root, "stations", entry.profile or entry.name, path, "stations.profile"),
        )
        if profile.name != entry.name:
            raise ConfigError(
                f"{path}: stations: {entry.name!r} names a profile of station {profile.name!r}; "
                "the node is named after its profile"
            )
        stations[entry.name] = profile
    return missions, stations


def pass_scenario(
    scenario: NetworkScenario,
    path: Path,
    flown: FlownPass,
    culmination_unix_s: float,
    tle: tuple[str, str],
    mission: Any,
    station: Any,
    seed: int,
) -> Scenario:
    """Get: the single-pass scenario that flies exactly this planned pass (its satellite's TLE
    pinned, QKD centred on culmination when the window is capped)."""
    from datetime import UTC, datetime

    entry = next(s for s in scenario.stations if s.name == flown.station)
    window_s = scenario.simulation.qkd_window_s
    start_after = None
    if window_s is not None and flown.los_unix_s - flown.aos_unix_s > window_s:
        start_after = max(culmination_unix_s - window_s / 2.0 - flown.aos_unix_s, 0.0)
    search_start = flown.aos_unix_s - 120.0
    config = ScenarioConfig.model_validate(
        {
            "name": scenario.name,
            "mission": mission.name,
            "station": entry.profile or entry.name,
            "seed": seed,
            "search": {
                "start_utc": datetime.fromtimestamp(search_start, tz=UTC),
                "days": (flown.los_unix_s - search_start + 120.0) / 86400.0,
                "min_max_elevation_deg": 0.0,
                "night_only": False,
            },
            "simulation": {"qkd_start_after_aos_s": start_after},
        }
    )
    orbit = mission.orbit.model_copy(
        update={"tle": TleConfig(line1=tle[0], line2=tle[1]), "sample_tle": None}
    )
    pinned = mission.model_copy(update={"orbit": orbit})
    return Scenario(path=path, scenario=config, mission=pinned, station=station)


async def fly_pass(pass_sc: Scenario, key_dir: Path, window_s: float | None) -> dict[str, Any]:
    """Control: fly one pass with the daemons into `key_dir` (its keys persist there); get
    the pass report."""
    from satqkd.simulation import run_pass

    run = await run_pass(pass_sc, key_dir, max_duration_s=window_s)
    return run.report


# ---- the relay and the fibre ------------------------------------------------------------------


async def relay_keys(
    payload_keys: Path,
    station_keys: dict[str, Path],
    relay_id: int,
    stations: tuple[str, str],
    bits: int,
    blocks: tuple[list[str], list[str]],
    mission: str,
) -> Any:
    """Control: one trusted relay through the satellite with the real daemons (N1's
    satqkd.relay_run); get its RelayResult."""
    from satqkd.relay_run import RelayRequest, run_relay

    request = RelayRequest(
        relay_id=relay_id,
        station_a=stations[0],
        station_b=stations[1],
        bits=bits,
        blocks_a=tuple(blocks[0]),
        blocks_b=tuple(blocks[1]),
    )
    return await run_relay(payload_keys, station_keys, request, mission=mission)


def seed_base(seed: int) -> int:
    """Get: the first pass seed of a run (pass k flies with seed base + k: plan id k + 1)."""
    return (rng.derive_key(seed, "network/passes") % (1 << 40)) * _PLAN_ID_BLOCK


def run_network(
    scenario: NetworkScenario, path: Path, out: Path, say: Callable[[str], None] | None = None
) -> NetworkRun:
    """Control: run the whole network scenario into `out`; get what the report needs."""
    from satqkd.network_flow import NetworkFlow

    began = time.perf_counter()
    run = NetworkRun(scenario, path, out)
    try:
        planner, inputs = plan_network(scenario, path)
        run.plan = planner.plan()
    except InputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    run.candidates = planner.candidates
    run.tles = {s.name: (s.tle_line1, s.tle_line2) for s in inputs["satellites"]}
    run.forecast = inputs["forecast"]
    run.timing["plan_s"] = round(time.perf_counter() - began, 3)
    missions, stations = _profiles(scenario, path)
    flow = NetworkFlow(run, planner, missions, stations, say or (lambda _: None))
    asyncio.run(flow.execute())
    run.timing["wall_s"] = round(time.perf_counter() - began, 3)
    return run
