"""The network report of `satqkd sim network` (`satqkd.network-report/1`, docs/network.md and
docs/network-report.schema.json).

Only what the seed decides goes in: the same seed gives the same report (wall-clock times go
to DIR/timing.json). Bit counts are measured (keys the daemons stored, relayed, delivered),
except `planned_bits` and `expected_key_bits`, the planner's expectations.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from satqkd.network_run import DemandState, NetworkRun
from satqkd.network_scenario import utc_text

__all__ = ["REPORT_FORMAT", "build_network_report", "write_network_report"]

REPORT_FORMAT = "satqkd.network-report/1"


def _demand(d: DemandState) -> dict[str, Any]:
    users = [e for e in d.endpoints if e not in d.stations]
    entry: dict[str, Any] = {
        "id": d.demand_id,
        "endpoints": list(d.endpoints),
        "stations": list(d.stations),
        "bits": d.bits,
        "deadline_utc": utc_text(d.deadline_unix_s),
        "planned_bits": d.planned_bits,
        "relayed_bits": d.relayed_bits,
        "delivered_bits": d.delivered_bits,
        "met": d.met_unix_s is not None,
        "met_utc": None if d.met_unix_s is None else utc_text(d.met_unix_s),
    }
    if users:
        # the keys every user of the demand filed, as one digest per user over the common ids
        common = sorted(set.intersection(*(set(d.fibre_done.get(u, {})) for u in users)))
        entry["fibre_keys"] = len(common)
        entry["sha256_users"] = {
            u: _digest_of_digests([d.fibre_done[u][k] for k in common]) if common else None
            for u in users
        }
    return entry


def _digest_of_digests(digests: list[str]) -> str:
    h = hashlib.sha256()
    for digest in digests:
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


def _relay(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k not in ("at_unix_s", "key_ids")}
    out["at_utc"] = utc_text(entry["at_unix_s"])
    out["keys"] = len(entry.get("key_ids", []))
    digests = (entry.get("sha256_a"), entry.get("sha256_b"))
    out["digests_equal"] = (
        bool(entry.get("ok")) and digests[0] is not None and (digests[0] == digests[1])
    )
    return out


def _fibre(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k != "at_unix_s"}
    out["at_utc"] = utc_text(entry["at_unix_s"])
    return out


def _chain(c: Any) -> dict[str, Any]:
    return {
        "id": c.chain_id,
        "path": list(c.path),
        "bits": c.bits,
        "deadline_utc": utc_text(c.deadline_unix_s),
        "met": c.done,
        "met_utc": None if c.at_unix_s is None else utc_text(c.at_unix_s),
        "refused": c.refused,
        "keys": len(c.key_ids),
        "hop_consumed_bits": {f"{h.sender}-{h.receiver}": h.consumed_bits for h in c.hop_records},
        "sha256_source": c.sha256_source,
        "sha256_target": c.sha256_target,
        "digests_equal": c.done and c.sha256_source == c.sha256_target,
    }


def build_network_report(run: NetworkRun) -> dict[str, Any]:
    """Get: the report document of a network run."""
    scenario = run.scenario
    plan = run.plan
    passes = [
        {
            "pass_id": p.pass_id,
            "satellite": p.satellite,
            "station": p.station,
            "aos_utc": utc_text(p.aos_unix_s),
            "los_utc": utc_text(p.los_unix_s),
            "max_elevation_deg": round(p.max_elevation_deg, 2),
            "night": p.night,
            "status": p.status,
            "reason": p.reason,
            "expected_key_bits": p.expected_key_bits,
            "allocated_bits": p.allocated_bits,
            "qkd_s": p.qkd_s,
            "key_bits": p.key_bits,
            "qber": p.qber,
            "sha256_payload": p.sha256_payload,
            "sha256_ogs": p.sha256_ogs,
            "credited_bits": p.credited,
        }
        for p in run.passes
    ]
    count = {
        status: sum(p.status == status for p in run.passes)
        for status in ("flown", "lost_to_weather", "failed")
    }
    demand = [_demand(d) for d in run.demands]
    return {
        "format": REPORT_FORMAT,
        "scenario": scenario.name,
        "seed": scenario.seed,
        "from_utc": utc_text(scenario.start_unix_s),
        "to_utc": utc_text(scenario.stop_unix_s),
        "qkd_window_s": scenario.simulation.qkd_window_s,
        "key_size_bits": scenario.simulation.key_size_bits,
        "plan": {
            "candidate_passes": plan.candidates,
            "planned_passes": len(plan.passes),
            "solver_status": plan.status,
            "replans": [
                {
                    **{k: v for k, v in r.items() if k != "at_unix_s"},
                    "at_utc": utc_text(r["at_unix_s"]),
                }
                for r in run.replans
            ],
        },
        "passes": {
            "planned": len(run.passes),
            **count,
            "key_bits": sum(p.key_bits for p in run.passes),
            "list": passes,
        },
        "weather": [
            {"station": s, "night": n, "cloud_probability": p, "cloudy": cloudy}
            for (s, n), (p, cloudy) in sorted(run.weather.items())
        ],
        "demand": demand,
        "demand_met": sum(d["met"] for d in demand),
        "demand_total": len(demand),
        "key_delivered_bits": sum(d.delivered_bits for d in run.demands),
        "relays": [_relay(r) for r in run.relays],
        "fibre_deliveries": [_fibre(f) for f in run.fibre],
        **({"chains": [_chain(c) for c in run.chains]} if run.chains else {}),
        "inventory": [{"t_utc": utc_text(s["t_unix_s"]), "bits": s["bits"]} for s in run.inventory],
    }


def write_network_report(report: dict[str, Any], run: NetworkRun, out: Path) -> Path:
    """Control: write DIR/network-report.json and DIR/timing.json; get the report's path."""
    path = out / "network-report.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "timing.json").write_text(json.dumps(run.timing, indent=2) + "\n", encoding="utf-8")
    return path
