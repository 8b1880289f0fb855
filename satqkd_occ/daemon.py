"""The operation control centre daemon (`satqkd occ run`, docs/occ.md).

On the node runtime as node `occ`: it takes key demand from the stations (KEY_DEMAND telemetry),
replans (satqkd_occ.planner) over the coming days, sends each planned pass as a LOAD_PASS_PLAN
telecommand signed with the OCC's telecommand key of each node (the payload and the station:
the satellite's plan through the TT&C path, the station's mission plan), follows the nodes'
TC_ACKs, credits the key the stations' OGS_PASS_SUMMARY report to the demand the pass served,
and publishes DEMAND_STATUS and its own HOUSEKEEPING. Passes already sent stay in every later
plan. Bad demand is refused with a DEMAND_REJECTED event naming the field; a refused plan
raises PLAN_REFUSED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from satqkd_core import dictionary as dct
from satqkd_core.codec import CodecError, decode_envelope
from satqkd_core.errors import InputError
from satqkd_core.pass_plan import MAX_QKD_WINDOW_S, pass_plan_problem
from satqkd_occ.demand import KeyDemand, check_demands, demand_from_mapping
from satqkd_occ.planner import Plan, PlanSettings, plan_passes
from satqkd_occ.prediction import (
    CandidatePass,
    CloudForecast,
    KeyTable,
    Satellite,
    StationSite,
    predict_passes,
)
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.clock import Clock
from satqkd_runtime.node import NodeRuntime
from satqkd_runtime.telecommand_auth import TelecommandSigner

__all__ = ["OCC_NODE", "OccDaemon", "OccSettings", "SentPlan"]

OCC_NODE = "occ"
log = logging.getLogger("satqkd.occ")


@dataclass(frozen=True)
class OccSettings:
    """What the daemon plans with (built by the application from the OCC configuration)."""

    satellite: Satellite
    repetition_rate_hz: float
    sites: tuple[StationSite, ...]
    key_tables: Mapping[tuple[str, str], KeyTable]
    forecast: CloudForecast
    plan_settings: PlanSettings = field(default_factory=PlanSettings)
    horizon_days: float = 3.0
    night_only: bool = True
    qkd_start_after_aos_s: float = 10.0
    min_lead_s: float = 5.0
    housekeeping_period_s: float = 10.0


@dataclass
class SentPlan:
    """A pass sent out as a plan: its id, what each node answered, what it was to serve."""

    plan_id: int
    candidate: CandidatePass
    allocated_bits: dict[str, int]
    seqs: dict[str, int] = field(default_factory=dict)  # node -> telecommand seq
    accepted: dict[str, bool] = field(default_factory=dict)
    delivered_bits: int | None = None


class OccDaemon:
    """Demand in, plans out, fulfilment tracked (module docstring)."""

    def __init__(
        self,
        settings: OccSettings,
        bus: MessageBus,
        clock: Clock,
        signer_for: Callable[[str], TelecommandSigner],
        demands: Sequence[KeyDemand] = (),
    ) -> None:
        self.settings = settings
        self.mission = settings.satellite.name
        self.bus, self.clock, self.signer_for = bus, clock, signer_for
        self.runtime = NodeRuntime(bus, self.mission, OCC_NODE, clock, tc_verifier=None)
        self.stations = {site.name for site in settings.sites}
        self.demands: dict[str, KeyDemand] = {d.demand_id: d for d in self._checked(demands)}
        self.sent: dict[int, SentPlan] = {}
        self.by_pass: dict[str, SentPlan] = {}
        self.plan: Plan | None = None
        self.demands_rejected = 0
        self.plans_refused = 0
        self.stopped = asyncio.Event()
        self.replanned = asyncio.Event()

    def _checked(self, demands: Sequence[KeyDemand]) -> list[KeyDemand]:
        return check_demands(demands, self.stations, [self.mission])

    # ---- planning ---------------------------------------------------------------------------

    def predict(self, now_unix_s: float) -> list[CandidatePass]:
        """Get the candidate passes from now over the horizon (sent ones kept)."""
        s = self.settings
        stop = now_unix_s + s.horizon_days * 86400.0
        found = predict_passes(
            [s.satellite], s.sites, now_unix_s, stop, s.key_tables, s.forecast,
            night_only=s.night_only,
        )  # fmt: skip
        ids = {c.pass_id for c in found}
        kept = [p.candidate for p in self.by_pass.values() if p.candidate.pass_id not in ids]
        return [c for c in found if c.aos_unix_s > now_unix_s or c.pass_id in self.by_pass] + [
            c for c in kept if c.los_unix_s > now_unix_s
        ]

    async def replan(self) -> Plan:
        """Control: plan the demand over the coming passes; send the plans of new passes."""
        now = self.clock.now_unix_s()
        open_demand = [d for d in self.demands.values() if d.deadline_unix_s > now]
        candidates = self.predict(now)
        plan = await asyncio.to_thread(
            plan_passes, candidates, open_demand, self.settings.plan_settings,
            satellites=[self.mission], committed=set(self.by_pass),
        )  # fmt: skip
        self.plan = plan
        for item in plan.passes:
            sent = self.by_pass.get(item.candidate.pass_id)
            if sent is not None:
                sent.allocated_bits = dict(item.allocated_bits)
            elif item.allocated_bits:
                await self._send(item.candidate, dict(item.allocated_bits), now)
        await self.publish_demand_status()
        self.replanned.set()
        return plan

    def plan_fields(self, candidate: CandidatePass, plan_id: int) -> dict[str, Any]:
        """Get the LOAD_PASS_PLAN fields of a pass (QKD from a whole second after AOS)."""
        s = self.settings
        start = math.ceil(candidate.aos_unix_s + s.qkd_start_after_aos_s)
        stop = min(math.floor(candidate.los_unix_s), start + int(MAX_QKD_WINDOW_S))
        return {
            "plan_id": plan_id,
            "mission": self.mission,
            "station": candidate.station,
            "tle_line1": s.satellite.tle_line1,
            "tle_line2": s.satellite.tle_line2,
            "aos_unix_s": candidate.aos_unix_s,
            "los_unix_s": candidate.los_unix_s,
            "qkd_start_unix_s": float(start),
            "qkd_stop_unix_s": float(stop),
            "repetition_rate_hz": s.repetition_rate_hz,
        }

    def _new_plan_id(self, candidate: CandidatePass) -> int:
        plan_id = int(candidate.aos_unix_s) % 2**32  # the AOS second: never reused by a restart
        while plan_id in self.sent:
            plan_id = (plan_id + 1) % 2**32
        return plan_id

    async def _send(self, candidate: CandidatePass, allocated: dict[str, int], now: float) -> None:
        plan_id = self._new_plan_id(candidate)
        fields = self.plan_fields(candidate, plan_id)
        problem = pass_plan_problem(fields, now + self.settings.min_lead_s)
        if problem is not None:
            log.info("pass %s not sent: %s", candidate.pass_id, problem)
            return
        sent = SentPlan(plan_id, candidate, allocated)
        for node in ("payload", dct.ogs_node(candidate.station)):
            seq, data = self.signer_for(node).sign("LOAD_PASS_PLAN", fields)
            sent.seqs[node] = seq
            await self.bus.publish(dct.telecommand_topic(self.mission, node), data)
        self.sent[plan_id] = sent
        self.by_pass[candidate.pass_id] = sent
        await self.runtime.emit_event(
            "PLAN_SENT",
            f"plan {plan_id}: {candidate.station} AOS {candidate.aos_unix_s:.0f} for "
            + ", ".join(f"{k} {v} bits" for k, v in sorted(allocated.items())),
        )

    # ---- fulfilment -------------------------------------------------------------------------

    def delivered(self, demand: KeyDemand) -> int:
        """Get the key the stations reported for a demand (a relay: the least of both ends)."""
        per_end: dict[str, int] = {e: 0 for e in demand.endpoints if e in self.stations}
        for sent in self.sent.values():
            if sent.delivered_bits is None or demand.demand_id not in sent.allocated_bits:
                continue
            # a pass's key goes to its demands in the order of the plan's allocation
            left = sent.delivered_bits
            for demand_id, bits in sorted(sent.allocated_bits.items()):
                share = min(left, bits)
                left -= share
                if demand_id == demand.demand_id:
                    per_end[sent.candidate.station] = per_end.get(sent.candidate.station, 0) + share
        return min(per_end.values()) if per_end else 0

    async def publish_demand_status(self) -> None:
        """Control: publish DEMAND_STATUS of every demand."""
        outcomes = {o.demand.demand_id: o for o in self.plan.outcomes} if self.plan else {}
        for demand in self.demands.values():
            delivered = self.delivered(demand)
            outcome = outcomes.get(demand.demand_id)
            passes = sum(demand.demand_id in s.allocated_bits for s in self.sent.values())
            await self.runtime.publish_telemetry(
                "DEMAND_STATUS",
                demand_id=demand.demand_id,
                bits=demand.bits,
                planned_bits=outcome.planned_bits if outcome else 0,
                delivered_bits=delivered,
                planned_passes=passes,
                met=delivered >= demand.bits,
            )

    async def _on_demand(self, node: str, fields: dict[str, Any]) -> bool:
        try:
            posted = {
                "id": fields["demand_id"],
                "endpoints": [fields["endpoint_a"], fields["endpoint_b"]],
                "bits": int(fields["bits"]),
                "deadline_utc": float(fields["deadline_unix_s"]),
            }
            demand = demand_from_mapping(posted, "KEY_DEMAND")
            problem = self._demand_problem(node, demand)
            if problem:
                raise InputError(problem)
            self._checked(
                [*[d for d in self.demands.values() if d.demand_id != demand.demand_id], demand]
            )
        except InputError as exc:
            self.demands_rejected += 1
            await self.runtime.emit_event("DEMAND_REJECTED", f"from {node}: {exc}")
            return False
        self.demands[demand.demand_id] = demand
        return True

    def _demand_problem(self, node: str, demand: KeyDemand) -> str | None:
        station = node.removeprefix("ogs-")
        if not node.startswith("ogs-") or station not in demand.endpoints:
            return f"a station posts demand for itself only; {node} is not an end point"
        earlier = self.demands.get(demand.demand_id)
        if earlier is not None and station not in earlier.endpoints:
            return f"demand {demand.demand_id} is another station's; {node} may not replace it"
        if (
            not math.isfinite(demand.deadline_unix_s)
            or demand.deadline_unix_s <= self.clock.now_unix_s()
        ):
            return f"deadline_unix_s {demand.deadline_unix_s} is not in the future"
        return None

    async def _on_summary(self, fields: dict[str, Any]) -> bool:
        sent = self.sent.get(int(fields["plan_id"]))
        if sent is None or fields["station"] != sent.candidate.station:
            return False
        sent.delivered_bits = int(fields["secret_key_bits"])
        return True

    async def _on_ack(self, node: str, fields: dict[str, Any]) -> None:
        for sent in self.sent.values():
            if sent.seqs.get(node) == fields["command_seq"] and node not in sent.accepted:
                sent.accepted[node] = bool(fields["accepted"])
                if not fields["accepted"]:
                    self.plans_refused += 1
                    await self.runtime.emit_event(
                        "PLAN_REFUSED", f"plan {sent.plan_id} refused by {node}: {fields['reason']}"
                    )
                return

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Control: serve until `stopped` is set."""
        prefix = f"satqkd/{self.mission}/+/tm/"
        for name in ("KEY_DEMAND", "OGS_PASS_SUMMARY", "TC_ACK"):
            await self.bus.subscribe(prefix + name.lower())
        await self.runtime.emit_event("NODE_STARTED", f"occ for {self.mission}")
        tasks = [
            asyncio.create_task(self._serve()),
            asyncio.create_task(
                self.runtime.housekeeping_loop(
                    self.settings.housekeeping_period_s, self._snapshot, self._passes
                )
            ),
        ]
        try:
            await self.replan()
            await self.stopped.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _snapshot(self) -> tuple[str, int, int]:
        delivered = sum(s.delivered_bits or 0 for s in self.sent.values())
        return ("planning", delivered, 0)

    def _passes(self) -> tuple[int, int]:
        return (sum(s.delivered_bits is None for s in self.sent.values()), 0)

    async def _serve(self) -> None:
        async for message in self.bus.messages():
            parts = message.topic.split("/")
            node = parts[2] if len(parts) == 5 else ""
            try:
                envelope = decode_envelope(message.payload)
            except CodecError as exc:
                if message.topic.endswith("/key_demand"):
                    self.demands_rejected += 1
                    await self.runtime.emit_event("DEMAND_REJECTED", f"from {node}: {exc}")
                else:
                    log.warning("undecodable message on %s: %s", message.topic, exc)
                continue
            name, fields = envelope.spec.name, envelope.fields
            changed = False
            if name == "KEY_DEMAND" and node != OCC_NODE:
                changed = await self._on_demand(node, fields)
            elif name == "OGS_PASS_SUMMARY":
                changed = await self._on_summary(fields)
            elif name == "TC_ACK":
                await self._on_ack(node, fields)
            if changed:
                try:
                    await self.replan()
                except InputError as exc:  # no plan within the time limit: the last one stands
                    await self.runtime.emit_event("CONFIG_ERROR", f"replanning failed: {exc}")
