"""Assignment of predicted passes to key demand, with OR-Tools CP-SAT.

The model (decision 0028):

- x[p] in {0, 1}: pass p is flown. Each pass is flown at most once, and its key serves demand
  only if it is flown: sum_d y[p, d] <= expected_key_bits[p] * x[p].
- y[p, d] >= 0: expected bits of pass p given to demand d; only for passes whose station is an
  end point of d (and whose satellite is the other end point, if it is a satellite) and whose
  LOS plus `key_ready_after_los_s` is no later than d's deadline.
- A satellite serves one station at a time and a station one satellite at a time: the
  intervals [AOS, LOS + gap) of the flown passes of one satellite (of one station) never
  overlap.
- met[d] <= bits[d]. A station-satellite demand is met by the key of its passes; a
  station-station demand through satellite s by min(key of s with a, key of s with b), summed
  over satellites (the relay's XOR spends as many bits at each end).

Objectives, in order (each stage keeps the optimum of the previous one): the total expected
bits of demand met; then the smallest fraction met of any demand (fairness, per mille); then
the fewest passes; then the earliest (sum over flown passes of hours from the start); last, the
fewest bits allocated (no pass gives a demand more than it uses). The last two are tie-breaks
with at most a fifth of the time limit each: the plan says per stage whether it is proven
optimal (`stage_status`), and `status` is OPTIMAL only when every stage is.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from satqkd_core.errors import InputError
from satqkd_occ.demand import KeyDemand
from satqkd_occ.prediction import CandidatePass

__all__ = ["DemandOutcome", "Plan", "PlanSettings", "PlannedPass", "plan_passes"]

_PER_MILLE = 1000
# the tie-breaking stages get at most this share of the time limit each
_TIE_BREAKS = ("earliest", "allocation")
_TIE_BREAK_SHARE = 0.2


@dataclass(frozen=True)
class PlanSettings:
    """How the planner works: gaps, key latency and the solver's budget."""

    satellite_gap_s: float = 120.0
    station_gap_s: float = 300.0
    key_ready_after_los_s: float = 0.0
    time_limit_s: float = 10.0
    workers: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("satellite_gap_s", "station_gap_s", "key_ready_after_los_s"):
            value = getattr(self, name)
            if not 0.0 <= value <= 86_400.0:
                raise InputError(f"planning.{name} must be in [0, 86400] s, got {value}")
        if not 0.0 < self.time_limit_s <= 3600.0:
            raise InputError(f"planning.time_limit_s must be in (0, 3600], got {self.time_limit_s}")
        if not 1 <= self.workers <= 64:
            raise InputError(f"planning.workers must be in 1..64, got {self.workers}")


@dataclass(frozen=True)
class PlannedPass:
    """A pass the plan flies and the expected bits it gives to each demand."""

    candidate: CandidatePass
    allocated_bits: dict[str, int]


@dataclass(frozen=True)
class DemandOutcome:
    """How much of one demand the plan is expected to meet, and through which satellites."""

    demand: KeyDemand
    planned_bits: int
    by_satellite: dict[str, int]

    @property
    def met(self) -> bool:
        """Get whether the plan is expected to meet the demand in full."""
        return self.planned_bits >= self.demand.bits


@dataclass(frozen=True)
class Plan:
    """The flown passes, sorted by AOS, and each demand's outcome."""

    passes: tuple[PlannedPass, ...]
    outcomes: tuple[DemandOutcome, ...]
    candidates: int
    status: str
    solve_s: float
    stage_status: dict[str, str] = field(default_factory=dict)


def _check(candidates: Sequence[CandidatePass], demands: Sequence[KeyDemand]) -> None:
    ids = [c.pass_id for c in candidates]
    if len(set(ids)) != len(ids):
        raise InputError("candidate passes: a pass_id appears twice")
    for c in candidates:
        if not c.aos_unix_s < c.los_unix_s:
            raise InputError(f"pass {c.pass_id}: AOS must come before LOS")
        if c.clear_sky_key_bits < 0 or not 0.0 <= c.cloud_probability <= 1.0:
            raise InputError(f"pass {c.pass_id}: key bits < 0 or cloud probability not in [0, 1]")
    demand_ids = [d.demand_id for d in demands]
    if len(set(demand_ids)) != len(demand_ids):
        raise InputError("demand: an id appears twice")


class _Model:
    """The CP-SAT model of one planning problem."""

    def __init__(
        self,
        candidates: Sequence[CandidatePass],
        demands: Sequence[KeyDemand],
        settings: PlanSettings,
        satellites: set[str],
    ) -> None:
        self.model = cp_model.CpModel()
        self.candidates, self.demands = candidates, demands
        m = self.model
        self.flown = [m.new_bool_var(f"x[{c.pass_id}]") for c in candidates]
        self.given: dict[tuple[int, int], cp_model.IntVar] = {}
        for p, c in enumerate(candidates):
            share = []
            for d, demand in enumerate(demands):
                if c.station not in demand.endpoints:
                    continue
                other = demand.endpoint_b if c.station == demand.endpoint_a else demand.endpoint_a
                if other in satellites and other != c.satellite:
                    continue
                if c.los_unix_s + settings.key_ready_after_los_s > demand.deadline_unix_s:
                    continue
                var = m.new_int_var(0, c.expected_key_bits, f"y[{c.pass_id},{demand.demand_id}]")
                self.given[p, d] = var
                share.append(var)
            if share:
                m.add(sum(share) <= c.expected_key_bits * self.flown[p])
        self._no_overlap(settings)
        self.parts_of: dict[int, list[tuple[str, cp_model.IntVar]]] = {}
        self.met = [self._met(d, demand, satellites) for d, demand in enumerate(demands)]

    def _no_overlap(self, settings: PlanSettings) -> None:
        by_satellite: dict[str, list[cp_model.IntervalVar]] = defaultdict(list)
        by_station: dict[str, list[cp_model.IntervalVar]] = defaultdict(list)
        for p, c in enumerate(self.candidates):
            start = int(c.aos_unix_s)
            for gap, groups, key in (
                (settings.satellite_gap_s, by_satellite, c.satellite),
                (settings.station_gap_s, by_station, c.station),
            ):
                size = int(c.los_unix_s - start + gap) + 1
                groups[key].append(
                    self.model.new_optional_fixed_size_interval_var(
                        start, size, self.flown[p], f"i[{c.pass_id},{key}]"
                    )
                )
        for intervals in (*by_satellite.values(), *by_station.values()):
            if len(intervals) > 1:
                self.model.add_no_overlap(intervals)

    def _met(self, d: int, demand: KeyDemand, satellites: set[str]) -> cp_model.IntVar:
        """met[d]: summed over satellites, the least key that satellite gives each station end."""
        m = self.model
        stations = [e for e in demand.endpoints if e not in satellites]
        serving = (
            sorted(satellites)
            if len(stations) == 2
            else [e for e in demand.endpoints if e in satellites]
        )
        parts: list[tuple[str, cp_model.IntVar]] = []
        for satellite in serving:
            per_end = [
                [
                    var
                    for (p, dd), var in self.given.items()
                    if dd == d
                    and self.candidates[p].station == end
                    and self.candidates[p].satellite == satellite
                ]
                for end in stations
            ]
            if any(not terms for terms in per_end):
                continue
            part = m.new_int_var(0, demand.bits, f"met[{demand.demand_id},{satellite}]")
            for terms in per_end:
                m.add(part <= sum(terms))
            parts.append((satellite, part))
        self.parts_of[d] = parts
        met = m.new_int_var(0, demand.bits, f"met[{demand.demand_id}]")
        m.add(met <= sum(part for _, part in parts)) if parts else m.add(met == 0)
        return met


def _solver(settings: PlanSettings, time_left_s: float) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_left_s, 0.01)
    solver.parameters.num_workers = settings.workers
    solver.parameters.random_seed = settings.seed
    return solver


def plan_passes(
    candidates: Sequence[CandidatePass],
    demands: Sequence[KeyDemand],
    settings: PlanSettings | None = None,
    *,
    satellites: Sequence[str] | None = None,
    committed: Collection[str] = (),
) -> Plan:
    """Get the plan: which passes to fly and which demand each serves (module docstring).

    `satellites` names every satellite an end point may be (default: those of the passes);
    `committed` the pass ids already sent out, flown whatever the new plan.
    """
    settings = settings if settings is not None else PlanSettings()
    _check(candidates, demands)
    names = set(satellites) if satellites is not None else {c.satellite for c in candidates}
    began = time.perf_counter()
    model = _Model(candidates, demands, settings, names)
    m = model.model
    for p, c in enumerate(candidates):
        if c.pass_id in committed:
            m.add(model.flown[p] == 1)
    solver: cp_model.CpSolver | None = None
    stages = [("met", sum(model.met), True)]
    if demands:
        fairness = m.new_int_var(0, _PER_MILLE, "fairness")
        for met, demand in zip(model.met, demands, strict=True):
            m.add(fairness * demand.bits <= met * _PER_MILLE)
        stages.append(("fairness", fairness, True))
    stages.append(("passes", sum(model.flown), False))
    t0 = min((c.aos_unix_s for c in candidates), default=0.0)
    hours = [int((c.aos_unix_s - t0) // 3600) for c in candidates]
    stages.append(("earliest", sum(h * x for h, x in zip(hours, model.flown, strict=True)), False))
    # last, no more bits given to a demand than it uses (a tidy allocation table)
    stages.append(("allocation", sum(model.given.values()), False))
    stage_status: dict[str, str] = {}
    for name, objective, maximise in stages:
        if maximise:
            m.maximize(objective)
        else:
            m.minimize(objective)
        left_s = settings.time_limit_s - (time.perf_counter() - began)
        if name in _TIE_BREAKS:  # best effort: proving them optimal can take long
            left_s = min(left_s, _TIE_BREAK_SHARE * settings.time_limit_s)
        stage = _solver(settings, left_s)
        status = stage.solve(m)
        stage_status[name] = stage.status_name(status)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if solver is None:
                raise InputError(f"the planner found no plan ({stage.status_name(status)})")
            break  # out of time: the previous stage's plan stands
        solver = stage
        best = round(solver.objective_value)
        m.clear_hints()
        for var in (*model.flown, *model.given.values()):
            m.add_hint(var, solver.value(var))
        m.add(objective >= best if maximise else objective <= best)
    assert solver is not None
    proven = all(stage_status.get(name) == "OPTIMAL" for name, _, _ in stages)
    return _read_plan(
        model, solver, "OPTIMAL" if proven else "FEASIBLE", time.perf_counter() - began,
        stage_status,
    )  # fmt: skip


def _read_plan(
    model: _Model,
    solver: cp_model.CpSolver,
    status: str,
    solve_s: float,
    stage_status: dict[str, str],
) -> Plan:
    planned = []
    for p, c in enumerate(model.candidates):
        if not solver.value(model.flown[p]):
            continue
        allocated = {
            model.demands[d].demand_id: int(solver.value(var))
            for (pp, d), var in model.given.items()
            if pp == p and solver.value(var) > 0
        }
        planned.append(PlannedPass(c, allocated))
    outcomes = []
    for d, demand in enumerate(model.demands):
        by_satellite = {
            satellite: int(solver.value(part))
            for satellite, part in model.parts_of.get(d, [])
            if solver.value(part) > 0
        }
        outcomes.append(DemandOutcome(demand, int(solver.value(model.met[d])), by_satellite))
    planned.sort(key=lambda item: item.candidate.aos_unix_s)
    return Plan(
        tuple(planned), tuple(outcomes), len(model.candidates), status, solve_s, stage_status
    )
