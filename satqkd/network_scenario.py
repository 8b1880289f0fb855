"""The network scenario (`kind: network`) of `satqkd sim network` (docs/network.md).

It holds what the operation control centre plans with (satellites, stations, planning
settings, the cloud forecast, key demand: the OCC configuration's own models), the fibre
trusted-node networks behind the stations, and how the passes are flown. A demand's end point
may be a station, a satellite, or a fibre user node: a user node is served by the station its
fibre network reaches in the fewest hops (its gateway), and the OCC plans the demand between
the gateways.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from satqkd.config import NAME_PATTERN, ConfigError, _Model, load_yaml_mapping, validate_model
from satqkd_core.errors import InputError
from satqkd_core.hop_relay import route
from satqkd_occ.settings import (
    DemandEntry,
    ForecastConfig,
    OccConfig,
    PlanningConfig,
    SatelliteEntry,
    StationEntry,
)

__all__ = [
    "ChainEntry",
    "FibreConfig",
    "FibreLinkConfig",
    "NetworkScenario",
    "chain_hop_demand_id",
    "load_network_scenario",
]

KIND = "network"


class FibreLinkConfig(_Model):
    """One fibre QKD link between adjacent nodes (a station or a trusted/user node)."""

    a: Annotated[str, Field(pattern=NAME_PATTERN)]
    b: Annotated[str, Field(pattern=NAME_PATTERN)]
    rate_bps: Annotated[float, Field(ge=0.0, le=1e9)]
    pool_capacity_bits: Annotated[int, Field(ge=0, le=10**9, strict=True)] = 1_048_576
    length_km: Annotated[float, Field(ge=0.0, le=1000.0)] | None = None

    @model_validator(mode="after")
    def _two_ends(self) -> FibreLinkConfig:
        if self.a == self.b:
            raise ValueError(f"a fibre link joins two different nodes, got {self.a!r} twice")
        return self


class FibreConfig(_Model):
    """The fibre networks: user nodes and the links between nodes and stations."""

    users: Annotated[
        list[Annotated[str, Field(pattern=NAME_PATTERN)]],
        Field(default_factory=list, max_length=1000),
    ]
    links: Annotated[list[FibreLinkConfig], Field(default_factory=list, max_length=10_000)]


class ChainEntry(_Model):
    """Key wanted between two end points carried hop by hop over the key graph (seed scenarios
    II-IV): its edges are the satellite-station links (filled by passes) and the fibre links.
    The path is `endpoints[0]`, `via`..., `endpoints[1]`, or without `via` the route with the
    fewest hops (ties by node name); each hop re-encrypts the key with that link's key."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")]
    endpoints: tuple[
        Annotated[str, Field(pattern=NAME_PATTERN)], Annotated[str, Field(pattern=NAME_PATTERN)]
    ]
    via: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = None
    bits: Annotated[int, Field(ge=1, le=1 << 24, strict=True)]
    deadline_utc: datetime


def chain_hop_demand_id(chain_id: str, satellite: str, station: str) -> str:
    """Get: the id of the OCC demand for one satellite-station hop of a chain."""
    return f"{chain_id}:{satellite}-{station}"


class FlightConfig(_Model):
    """How each planned pass is flown with the daemons."""

    # QKD of each pass capped to this, centred on culmination (None: the whole pass); the
    # planner's key table is computed for the same window
    qkd_window_s: Annotated[float, Field(gt=0.0, le=1200.0)] | None = 60.0
    key_size_bits: Annotated[int, Field(ge=64, le=65536, strict=True)] = 256


class NetworkScenario(_Model):
    """A network scenario: OCC inputs, fibre networks, flight settings and the seed."""

    kind: Literal["network"]
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    seed: Annotated[int, Field(ge=0, lt=2**63, strict=True)] = 0
    satellites: Annotated[list[SatelliteEntry], Field(min_length=1, max_length=10)]
    stations: Annotated[list[StationEntry], Field(min_length=1, max_length=20)]
    planning: PlanningConfig
    # the cloud forecast the OCC plans with; each night is then drawn cloudy with that
    # probability from the seed (the day's weather)
    weather: ForecastConfig = ForecastConfig()
    demand: Annotated[list[DemandEntry], Field(default_factory=list, max_length=1000)]
    fibre: FibreConfig = FibreConfig()
    # key carried hop by hop over satellite-station links (seed scenarios II-IV)
    chains: Annotated[list[ChainEntry], Field(default_factory=list, max_length=100)]
    simulation: FlightConfig = FlightConfig()

    @model_validator(mode="after")
    def _start_given(self) -> NetworkScenario:
        if self.planning.start_utc is None:
            raise ValueError("planning.start_utc is required (the simulated days start there)")
        if self.planning.start_utc.tzinfo is None:
            raise ValueError("planning.start_utc must carry a time zone (end it with Z)")
        return self

    @property
    def station_names(self) -> list[str]:
        """Get: the stations' names."""
        return [s.name for s in self.stations]

    @property
    def start_unix_s(self) -> float:
        """Get: the first simulated instant."""
        assert self.planning.start_utc is not None
        return self.planning.start_utc.astimezone(UTC).timestamp()

    @property
    def stop_unix_s(self) -> float:
        """Get: the last simulated instant."""
        return self.start_unix_s + self.planning.days * 86400.0

    def gateway(self, endpoint: str) -> str:
        """Get: the station or satellite that serves an end point (a user node's nearest
        station over the fibre, ties by name); InputError if it reaches none."""
        if endpoint in self.station_names or endpoint in {s.name for s in self.satellites}:
            return endpoint
        if endpoint not in self.fibre.users:
            raise InputError(f"unknown end point {endpoint!r}")
        links = [(link.a, link.b) for link in self.fibre.links]
        reachable = []
        for station in sorted(self.station_names):
            try:
                reachable.append((len(route(links, endpoint, station)), station))
            except InputError:
                continue
        if not reachable:
            raise InputError(f"fibre user {endpoint!r} reaches no station over the fibre")
        return min(reachable)[1]

    def occ_config(self) -> OccConfig:
        """Get: the OCC configuration: every demand between its end points' gateways;
        InputError for a demand of a fibre user with a satellite (a satellite's key is its
        link's with a station, not carried on over the fibre) or of two ends behind one
        station (no satellite in it)."""
        demand = []
        satellites = {s.name for s in self.satellites}
        for entry in self.demand:
            users = [e for e in entry.endpoints if e in self.fibre.users]
            orbit = [e for e in entry.endpoints if e in satellites]
            if users and orbit:
                raise InputError(
                    f"demand {entry.id}: {users[0]!r} is a fibre user and {orbit[0]!r} a "
                    f"satellite: a satellite's key is filed as the key of its link with a "
                    f"station and is not carried on over the fibre; ask for key between "
                    f"{orbit[0]!r} and the station {self.gateway(users[0])!r}, or between "
                    f"{users[0]!r} and a node behind another station (a relay)"
                )
            ends = tuple(self.gateway(e) for e in entry.endpoints)
            if ends[0] == ends[1]:
                raise InputError(
                    f"demand {entry.id}: both end points are served by {ends[0]}: "
                    "a fibre-only demand needs no satellite"
                )
            demand.append(entry.model_copy(update={"endpoints": ends}))
        demand.extend(self.chain_hop_demands())
        return OccConfig(
            name=self.name,
            description=self.description,
            satellites=self.satellites,
            stations=self.stations,
            planning=self.planning,
            weather=self.weather,
            demand=demand,
        )

    def key_graph_links(self) -> list[tuple[str, str]]:
        """Get: the edges of the key graph: every satellite-station pair and every fibre link."""
        pairs = [(s.name, st) for s in self.satellites for st in self.station_names]
        return pairs + [(link.a, link.b) for link in self.fibre.links]

    def chain_path(self, chain: ChainEntry) -> tuple[str, ...]:
        """Get: the chain's nodes in order (its `via`, or the fewest hops over the key graph);
        InputError naming the chain for a hop that is no edge of the graph or a node twice."""
        nodes = {s.name for s in self.satellites} | set(self.station_names)
        for node in (*chain.endpoints, *(chain.via or ())):
            if node not in nodes | set(self.fibre.users):
                raise InputError(
                    f"chains: {chain.id}: unknown node {node!r} (not a satellite, station or "
                    "fibre user)"
                )
        if chain.via is None:
            try:
                path = route(self.key_graph_links(), *chain.endpoints)
            except InputError as exc:
                raise InputError(f"chains: {chain.id}: {exc}") from None
        else:
            path = (chain.endpoints[0], *chain.via, chain.endpoints[1])
        if len(set(path)) != len(path):
            raise InputError(f"chains: {chain.id}: a node appears twice in {list(path)}")
        edges = {frozenset(link) for link in self.key_graph_links()}
        for a, b in pairwise(path):
            if frozenset((a, b)) not in edges:
                raise InputError(
                    f"chains: {chain.id}: hop {a}-{b} is neither a satellite and a station "
                    "nor a fibre link"
                )
        return path

    def chain_hops(self, chain: ChainEntry) -> list[tuple[str, str]]:
        """Get: the (satellite, station) link of every satellite hop of a chain, in order."""
        satellites = {s.name for s in self.satellites}
        return [
            (a, b) if a in satellites else (b, a)
            for a, b in pairwise(self.chain_path(chain))
            if satellites & {a, b}
        ]

    def chain_hop_demands(self) -> list[DemandEntry]:
        """Get: the OCC demand of every chain hop: the hop's link must hold the chain's bits by
        its deadline (the planner plans passes for each link)."""
        size = self.simulation.key_size_bits
        ids = [chain.id for chain in self.chains]
        if len(set(ids)) != len(ids):
            raise InputError("chains: a chain id is used twice")
        for chain in self.chains:
            if chain.bits % size:
                raise InputError(
                    f"chains: {chain.id}: bits {chain.bits} is not a multiple of the key size "
                    f"{size}"
                )
        return [
            DemandEntry(
                id=chain_hop_demand_id(chain.id, sat, station),
                endpoints=(station, sat),
                bits=chain.bits,
                deadline_utc=chain.deadline_utc,
            )
            for chain in self.chains
            for sat, station in self.chain_hops(chain)
        ]


def load_network_scenario(path: Path, seed: int | None = None) -> NetworkScenario:
    """Get: the validated network scenario of a file (with `seed` instead of its own);
    ConfigError naming the file and key otherwise."""
    data: dict[str, Any] = load_yaml_mapping(path)
    if data.get("kind") != KIND:
        raise ConfigError(
            f"{path}: kind: expected 'network' (a network scenario; `sim pass` takes the "
            f"single-pass ones), got {data.get('kind')!r}"
        )
    if seed is not None:
        data = {**data, "seed": seed}
    scenario = validate_model(NetworkScenario, data, str(path))
    names = scenario.station_names + [s.name for s in scenario.satellites]
    clash = sorted(set(scenario.fibre.users) & set(names))
    if clash or len(set(scenario.fibre.users)) != len(scenario.fibre.users):
        raise ConfigError(f"{path}: fibre.users: {clash or 'a name'} used twice")
    nodes = set(scenario.station_names) | set(scenario.fibre.users)
    for k, link in enumerate(scenario.fibre.links):
        for end in (link.a, link.b):
            if end not in nodes:
                raise ConfigError(
                    f"{path}: fibre.links.{k}: {end!r} is neither a station nor a fibre user"
                )
    try:
        scenario.occ_config()
    except (InputError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return scenario


def utc_text(unix_s: float) -> str:
    """Get: an instant as ISO 8601 UTC text to the second."""
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
