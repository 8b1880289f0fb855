"""The event flow of `satqkd sim network` (satqkd.network_run): the planned passes in time
order, each followed by the relays and fibre deliveries it makes possible.

Crediting (as the OCC daemon credits pass summaries): a flown pass's key goes to the demands
the plan gave it, in the plan's order, each up to what it still needs. A satellite-station
demand is then met by that key (both ends hold it). A demand between two stations (or their
fibre users) holds the credited key per (satellite, station) until both stations have some of
the same satellite; then one relay moves min(both, still needed) bits, rounded down to whole
keys of the key-management key size, from exactly those credited key-store blocks. The relay
happens at the later pass's LOS plus the planning's `key_ready_after_los_s`, and counts only
before the demand's deadline. Relay keys for a fibre user wait at the station until every hop
of the route holds link key for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

from satqkd.network_run import (
    DemandState,
    FlownPass,
    NetworkRun,
    draw_weather,
    fly_pass,
    pass_scenario,
    relay_keys,
    seed_base,
)

__all__ = ["NetworkFlow", "node_inventory_bits"]


def node_inventory_bits(keys: Path) -> int:
    """Get: secret key bits a node holds for use: confirmed key-store keys not yet entered
    into its key management store, plus that store's available keys."""
    from satqkd_runtime.key_management import DB_NAME
    from satqkd_runtime.keystore import KeyStore

    if not keys.is_dir():
        return 0
    store = KeyStore(keys)
    entered: set[str] = set()
    available = 0
    kms_dir = keys / "kms"
    if (kms_dir / DB_NAME).is_file():
        with _open_kms(kms_dir) as kms:
            entered = {b.block_id for b in kms.blocks()}
            available = kms.count() * kms.key_size_bits
    held = sum(
        store.metadata(k).key_bits for k in store.key_ids(state="confirmed") if k not in entered
    )
    return held + available


def _open_kms(directory: Path) -> Any:
    """The key management store of a directory with the key size it was made with."""
    import sqlite3

    from satqkd_runtime.key_management import DB_NAME, KeyManagement

    db = sqlite3.connect(directory / DB_NAME)
    try:
        row = db.execute("SELECT value FROM settings WHERE name = 'key_size_bits'").fetchone()
    finally:
        db.close()
    return KeyManagement(directory, int(row[0]) if row else 256)


class NetworkFlow:
    """Drives one network run (module docstring)."""

    def __init__(
        self,
        run: NetworkRun,
        planner: Any,
        missions: dict[str, Any],
        stations: dict[str, Any],
        say: Callable[[str], None],
    ) -> None:
        self.run, self.missions, self.stations, self.say = run, missions, stations, say
        self.planner = planner
        scenario = run.scenario
        self.satellites = {s.name for s in scenario.satellites}
        self.key_size = scenario.simulation.key_size_bits
        self.ready_s = scenario.planning.key_ready_after_los_s
        self.relay_count = 0
        self.fibre = self._fibre_network() if scenario.fibre.links else None
        for outcome in run.plan.outcomes:
            d = outcome.demand
            entry = next((e for e in scenario.demand if e.id == d.demand_id), None)
            endpoints = tuple(entry.endpoints) if entry is not None else d.endpoints  # chain hop
            run.demands.append(
                DemandState(
                    d.demand_id, endpoints, d.endpoints, d.bits, d.deadline_unix_s,
                    planned_bits=outcome.planned_bits,
                )
            )  # fmt: skip
        self._chain_states()

    def _chain_states(self) -> None:
        from satqkd.network_chain import ChainState

        scenario = self.run.scenario
        for chain in scenario.chains:
            self.run.chains.append(
                ChainState(
                    chain.id, scenario.chain_path(chain), scenario.chain_hops(chain), chain.bits,
                    chain.deadline_utc.timestamp(),
                )
            )  # fmt: skip

    def _fibre_network(self) -> Any:
        from sim_backends.fibre_network import FibreLinkSpec, FibreNetwork

        scenario = self.run.scenario
        links = [
            FibreLinkSpec(link.a, link.b, link.rate_bps, link.pool_capacity_bits)
            for link in scenario.fibre.links
        ]
        nodes = {n for link in links for n in (link.a, link.b)}
        stores = {node: self.run.out / "fibre" / node for node in nodes}
        return FibreNetwork(
            links, stores, seed=scenario.seed, start_unix_s=scenario.start_unix_s,
            key_size_bits=self.key_size,
        )  # fmt: skip

    def key_root(self, satellite: str) -> Path:
        """Get: the directory whose keys/ holds a satellite's and its stations' key stores."""
        return self.run.out / "nodes" / satellite

    # ---- the flow -----------------------------------------------------------------------------

    async def execute(self) -> None:
        """Control: fly the planned passes in time order, with relays and fibre after each;
        replan the rest of the range after a pass that gave less key than the plan gave out
        (lost to weather, failed, or short), as the OCC daemon replans after each summary."""
        run = self.run
        queue = self._queue(run.plan)
        self._sample(run.scenario.start_unix_s)
        base = seed_base(run.scenario.seed)
        while queue:
            flown, culmination = queue.pop(0)
            run.passes.append(flown)
            self._weather(flown)
            await self._fly(flown, culmination, base + len(run.passes) - 1)
            now = flown.los_unix_s + self.ready_s
            self._credit(flown)
            await self._relays(now)
            self._chains(now)
            self._fibre(now)
            self._sample(now)
            if flown.key_bits < sum(flown.allocated_bits.values()):
                queue = self._replan(flown.los_unix_s, flown.pass_id)
        end = run.scenario.stop_unix_s
        self._fibre(end)
        self._sample(end)
        if self.fibre is not None:
            self.fibre.close()

    def _queue(self, plan: Any) -> list[tuple[FlownPass, float]]:
        queue = []
        for item in plan.passes:
            c = item.candidate
            queue.append(
                (
                    FlownPass(
                        c.pass_id, c.satellite, c.station, c.aos_unix_s, c.los_unix_s,
                        c.max_elevation_deg, c.night_date, c.expected_key_bits,
                        dict(item.allocated_bits),
                    ),
                    c.culmination_unix_s,
                )
            )  # fmt: skip
        return queue

    def _remaining(self) -> dict[str, tuple[int, str, str]]:
        """What each demand still needs, as (bits, end point a, end point b) for the planner:
        a relay demand whose one station already holds the key it needs becomes a demand of
        the other station with the satellite that holds it."""
        left: dict[str, tuple[int, str, str]] = {}
        for d in self.run.demands:
            a, b = d.stations
            if not d.is_relay(self.satellites):
                left[d.demand_id] = (max(d.bits - d.delivered_bits, 0), a, b)
                continue
            need = d.bits - d.relayed_bits
            left[d.demand_id] = (max(need, 0), a, b)
            for satellite in sorted(self.satellites):
                held = [sum(n for _, n in d.credit.get((satellite, s), [])) for s in (a, b)]
                if need > 0 and max(held) >= need > min(held):
                    short = (a, b)[held.index(min(held))]
                    left[d.demand_id] = (need - min(held), short, satellite)
                    break
        return left

    def _replan(self, after_unix_s: float, cause: str) -> list[tuple[FlownPass, float]]:
        from satqkd_core.errors import InputError

        remaining = self._remaining()
        try:
            plan = self.planner.plan(after_unix_s, remaining)
        except InputError as exc:  # no plan at all: nothing more is flown
            self.say(f"replan after {cause}: {exc}")
            return []
        self.run.replans.append(
            {"after_pass": cause, "at_unix_s": after_unix_s, "planned_passes": len(plan.passes),
             "remaining": {k: {"bits": v[0], "endpoints": [v[1], v[2]]}
                           for k, v in remaining.items()},
             "solver_status": plan.status}
        )  # fmt: skip
        wanted = ", ".join(f"{k} {v[0]} bits" for k, v in remaining.items() if v[0])
        self.say(f"replanned after {cause}: {len(plan.passes)} passes for {wanted or 'nothing'}")
        return self._queue(plan)

    def _weather(self, flown: FlownPass) -> None:
        key = (flown.station, flown.night)
        if key not in self.run.weather:
            self.run.weather.update(draw_weather(self.run.scenario.seed, self.run.forecast, {key}))

    async def _fly(self, flown: FlownPass, culmination: float, seed: int) -> None:
        from satqkd.pass_physics import NoPassError
        from satqkd.simulation import SimulationError

        probability, cloudy = self.run.weather[flown.station, flown.night]
        where = f"{flown.satellite} over {flown.station} {flown.pass_id}"
        if cloudy:
            flown.status = "lost_to_weather"
            flown.reason = f"night {flown.night} cloudy (forecast {probability:.2f})"
            self.planner.cloudy_nights.add((flown.station, flown.night))  # seen: not replanned
            self.say(f"{where}: lost to weather ({flown.reason})")
            return
        scenario = pass_scenario(
            self.run.scenario, self.run.path, flown, culmination,
            self.run.tles[flown.satellite], self.missions[flown.satellite],
            self.stations[flown.station], seed,
        )  # fmt: skip
        window_s = self.run.scenario.simulation.qkd_window_s
        try:
            report = await fly_pass(scenario, self.key_root(flown.satellite), window_s)
        except (SimulationError, NoPassError) as exc:
            flown.status, flown.reason = "failed", str(exc)
            self.say(f"{where}: failed: {exc}")
            return
        key = report["key"]
        flown.status = "flown"
        flown.plan_id = report.get("plan_id")
        flown.key_bits = int(key["secret_key_bits"])
        flown.key_id = key["key_id"] if flown.key_bits else None
        flown.sha256_payload, flown.sha256_ogs = key["sha256_payload"], key["sha256_ogs"]
        flown.qber = report["quantum"]["qber"]
        flown.qkd_s = _qkd_seconds(report)
        self.say(f"{where}: {flown.key_bits} secret key bits (QBER {100 * flown.qber:.2f} %)")

    def _credit(self, flown: FlownPass) -> None:
        """Give the pass's key to the demands of its allocation, in the plan's order."""
        left = flown.key_bits
        demands = {d.demand_id: d for d in self.run.demands}
        for demand_id in flown.allocated_bits:
            d = demands[demand_id]
            if left <= 0 or flown.los_unix_s + self.ready_s > d.deadline_unix_s:
                continue
            if d.is_relay(self.satellites):
                held = sum(b for _, b in d.credit.get((flown.satellite, flown.station), []))
                need = d.bits - d.relayed_bits - held
            else:
                need = d.bits - d.delivered_bits
            give = min(left, max(need, 0))
            if give <= 0:
                continue
            left -= give
            flown.credited[demand_id] = give
            d.credit.setdefault((flown.satellite, flown.station), []).append([flown.key_id, give])
            if not d.is_relay(self.satellites):
                d.delivered_bits += give
                self._check_met(d, flown.los_unix_s + self.ready_s)

    def _check_met(self, d: DemandState, now: float) -> None:
        if d.met_unix_s is None and d.delivered_bits >= d.bits:
            d.met_unix_s = now

    async def _relays(self, now: float) -> None:
        for d in self.run.demands:
            if not d.is_relay(self.satellites) or now > d.deadline_unix_s:
                continue
            for satellite in sorted(self.satellites):
                ends = [d.credit.get((satellite, s), []) for s in d.stations]
                held = [sum(b for _, b in blocks) for blocks in ends]
                bits = min(*held, d.bits - d.relayed_bits) // self.key_size * self.key_size
                if bits > 0:
                    await self._relay(d, satellite, bits, ends, now)

    async def _relay(
        self, d: DemandState, satellite: str, bits: int, ends: list[list[list[Any]]], now: float
    ) -> None:
        from satqkd.relay_run import RelayError

        self.relay_count += 1
        keys = self.key_root(satellite) / "keys"
        a, b = d.stations
        mission = self.run.scenario.satellites
        mission_ref = next(s.mission for s in mission if s.name == satellite)
        entry: dict[str, Any] = {
            "relay_id": self.relay_count, "demand": d.demand_id, "satellite": satellite,
            "station_a": a, "station_b": b, "bits": bits, "at_unix_s": now,
        }  # fmt: skip
        try:
            result = await relay_keys(
                keys / "payload",
                {a: keys / f"ogs-{a}", b: keys / f"ogs-{b}"},
                self.relay_count,
                (a, b),
                bits,
                ([blk for blk, _ in ends[0]], [blk for blk, _ in ends[1]]),
                self._mission_path(mission_ref),
            )
        except RelayError as exc:
            entry.update(ok=False, abort_reason=str(exc), key_ids=[], sha256_a=None,
                         sha256_b=None, relay_bytes=0)  # fmt: skip
            self.run.relays.append(entry)
            self.say(f"relay {self.relay_count} for {d.demand_id}: refused: {exc}")
            return
        entry.update(
            ok=bool(result.ok), abort_reason=result.abort_reason, key_ids=list(result.key_ids),
            relay_block_id=result.relay_block_id, sha256_a=result.sha256.get(a),
            sha256_b=result.sha256.get(b), relay_bytes=int(result.relay_bytes),
        )  # fmt: skip
        self.run.relays.append(entry)
        if not result.ok:
            self.say(f"relay {self.relay_count} for {d.demand_id}: aborted: {result.abort_reason}")
            return
        equal = entry["sha256_a"] == entry["sha256_b"]
        self.say(
            f"relay {self.relay_count} {a}-{b} via {satellite}: {bits} bits for {d.demand_id}, "
            f"digests {'equal' if equal else 'DIFFER'}, {entry['relay_bytes']} bytes relayed"
        )
        for blocks in ends:  # the relayed bits leave the credit, oldest first
            left = bits
            while left and blocks:
                take = min(left, blocks[0][1])
                blocks[0][1] -= take
                left -= take
                if not blocks[0][1]:
                    blocks.pop(0)
        d.relayed_bits += bits
        users = [e for e in d.endpoints if e not in d.stations]
        for user in users:
            d.fibre_pending.setdefault(user, []).extend(result.key_ids)
        if not users:
            d.delivered_bits += bits
            self._check_met(d, now)

    def _chains(self, now: float) -> None:
        """Carry each waiting chain's key hop by hop once every hop's link holds its key."""
        from satqkd.network_chain import LinkStores, run_chain
        from satqkd.network_scenario import chain_hop_demand_id

        demands = {d.demand_id: d for d in self.run.demands}
        stores = LinkStores({s: self.key_root(s) for s in self.satellites}, self.key_size)
        for chain in self.run.chains:
            if chain.done or now > chain.deadline_unix_s:
                continue
            credited, credited_bits = {}, {}
            for link in chain.hops:
                d = demands.get(chain_hop_demand_id(chain.chain_id, *link))
                blocks = d.credit.get(link, []) if d is not None else []
                credited[link] = [blk for blk, _ in blocks]
                credited_bits[link] = sum(n for _, n in blocks)
            if not all(credited_bits.values()):
                continue  # a hop's link has no key yet: nothing to try
            if self.fibre is not None:
                self.fibre.advance_to(max(now, self.fibre.now_unix_s))
            run_chain(
                chain, credited, credited_bits, stores, self.run.out / "chains",
                self.run.scenario.seed, now, fibre=self.fibre,
            )  # fmt: skip
            path = "-".join(chain.path)
            if chain.done:
                equal = chain.sha256_source == chain.sha256_target
                self.say(
                    f"chain {chain.chain_id} {path}: {chain.bits} bits hop by hop, digests "
                    f"{'equal' if equal else 'DIFFER'} at both ends"
                )
            else:
                self.say(f"chain {chain.chain_id} {path}: waiting: {chain.refused}")

    def _mission_path(self, reference: str) -> str:
        from satqkd.config import _resolve_named, configs_root_for

        path = self.run.path
        return str(_resolve_named(configs_root_for(path), "missions", reference, path, "mission"))

    # ---- the fibre ----------------------------------------------------------------------------

    def _fibre(self, now: float) -> None:
        """Deliver waiting relay keys to fibre users, as far as the link pools allow."""
        if self.fibre is None:
            return
        self.fibre.advance_to(max(now, self.fibre.now_unix_s))
        for d in self.run.demands:
            for user, pending in d.fibre_pending.items():
                if pending:
                    self._deliver(d, user, pending, now)
            users = [e for e in d.endpoints if e not in d.stations]
            if users and d.fibre_pending:
                both = set.intersection(*(set(d.fibre_done.get(u, [])) for u in users))
                d.delivered_bits = len(both) * self.key_size
                if now <= d.deadline_unix_s:
                    self._check_met(d, now)

    def _deliver(self, d: DemandState, user: str, pending: list[str], now: float) -> None:
        from satqkd_core.hop_relay import route
        from sim_backends.fibre_network import FibreRefused

        assert self.fibre is not None
        station = self.run.scenario.gateway(user)
        path = route(self.fibre.links, station, user)
        room = min(self.fibre.pool_bits(*hop) for hop in pairwise(path))
        number = min(len(pending), room // self.key_size)
        entry: dict[str, Any] = {
            "demand": d.demand_id, "station": station, "user": user, "path": list(path),
            "at_unix_s": now, "keys": 0, "bits": 0, "waiting_keys": len(pending),
        }  # fmt: skip
        if number == 0:
            entry["refused"] = (
                f"not enough link key on the route for one {self.key_size}-bit key "
                f"({room} bits on its shortest hop)"
            )
            self.run.fibre.append(entry)
            return
        satellite = self._relay_satellite(pending[0])
        taken = pending[:number]
        with _open_kms(self.key_root(satellite) / "keys" / f"ogs-{station}" / "kms") as kms:
            keys = kms.take_available(taken, f"fibre:{user}")
        before = {hop: self.fibre.pool_bits(*hop) for hop in pairwise(path)}
        digest_src, digest_dst = hashlib.sha256(), hashlib.sha256()
        other = next(e for e in d.endpoints if e != user)
        for key in keys:
            try:
                delivery = self.fibre.deliver(station, user, key.key_id, key.material, peer=other)
            except FibreRefused as exc:  # pools checked above: only if they are out of step
                entry["refused"] = str(exc)
                break
            digest_src.update(bytes.fromhex(delivery.sha256_source))
            digest_dst.update(bytes.fromhex(delivery.sha256_target))
            d.fibre_done.setdefault(user, {})[key.key_id] = delivery.sha256_target
            pending.remove(key.key_id)
            entry["keys"] += 1
        entry["bits"] = entry["keys"] * self.key_size
        entry["waiting_keys"] = len(pending)
        # SHA-256 over the keys' own SHA-256s, in order: as sent and as the user filed them
        entry["sha256_station"] = digest_src.hexdigest()
        entry["sha256_user"] = digest_dst.hexdigest()
        entry["hop_consumed_bits"] = {
            f"{a}-{b}": before[a, b] - self.fibre.pool_bits(a, b) for a, b in before
        }
        self.run.fibre.append(entry)

    def _relay_satellite(self, key_id: str) -> str:
        for entry in self.run.relays:
            if key_id in entry.get("key_ids", []):
                return str(entry["satellite"])
        raise KeyError(key_id)

    # ---- inventory ----------------------------------------------------------------------------

    def _sample(self, now: float) -> None:
        """Record every node's key inventory (bits held for use) at `now`."""
        nodes: dict[str, int] = {}
        for satellite in sorted(self.satellites):
            keys = self.key_root(satellite) / "keys"
            nodes[satellite] = sum(node_inventory_bits(keys / "payload" / s) for s in self.stations)
            for station in self.stations:
                nodes[station] = nodes.get(station, 0) + node_inventory_bits(
                    keys / f"ogs-{station}"
                )
        if self.fibre is not None:
            for user in self.run.scenario.fibre.users:
                if user in self.fibre.kms:
                    nodes[user] = self.fibre.held_bits(user)
        self.run.inventory.append({"t_unix_s": now, "bits": nodes})


def _qkd_seconds(report: dict[str, Any]) -> float:
    from datetime import datetime

    p = report["pass"]
    start = datetime.fromisoformat(p["qkd_start_utc"].replace("Z", "+00:00"))
    stop = datetime.fromisoformat(p["qkd_stop_utc"].replace("Z", "+00:00"))
    return (stop - start).total_seconds()
