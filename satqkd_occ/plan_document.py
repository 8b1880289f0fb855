"""The plan as a JSON document (`plan.json`, schema `satqkd.occ-plan/1`, docs/occ.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from satqkd_occ.planner import Plan

__all__ = ["PLAN_SCHEMA", "plan_document", "utc_text"]

PLAN_SCHEMA = "satqkd.occ-plan/1"


def utc_text(unix_s: float) -> str:
    """Get an instant as ISO 8601 UTC text, to the second."""
    return (
        datetime.fromtimestamp(unix_s, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def plan_document(
    plan: Plan, name: str, start_unix_s: float, stop_unix_s: float, night_only: bool
) -> dict[str, Any]:
    """Get the plan.json content: the flown passes and each demand's expected outcome."""
    passes = []
    for item in plan.passes:
        c = item.candidate
        passes.append(
            {
                "pass_id": c.pass_id,
                "satellite": c.satellite,
                "station": c.station,
                "aos_utc": utc_text(c.aos_unix_s),
                "los_utc": utc_text(c.los_unix_s),
                "aos_unix_s": c.aos_unix_s,
                "culmination_unix_s": c.culmination_unix_s,
                "los_unix_s": c.los_unix_s,
                "max_elevation_deg": round(c.max_elevation_deg, 3),
                "max_sun_elevation_deg": round(c.max_sun_elevation_deg, 3),
                "night": c.night_date,
                "cloud_probability": c.cloud_probability,
                "clear_sky_key_bits": c.clear_sky_key_bits,
                "expected_key_bits": c.expected_key_bits,
                "allocated_bits": dict(sorted(item.allocated_bits.items())),
            }
        )
    demand = [
        {
            "id": o.demand.demand_id,
            "endpoints": list(o.demand.endpoints),
            "bits": o.demand.bits,
            "deadline_utc": utc_text(o.demand.deadline_unix_s),
            "planned_bits": o.planned_bits,
            "met": o.met,
            "by_satellite": dict(sorted(o.by_satellite.items())),
        }
        for o in plan.outcomes
    ]
    return {
        "schema": PLAN_SCHEMA,
        "name": name,
        "from_utc": utc_text(start_unix_s),
        "to_utc": utc_text(stop_unix_s),
        "night_only": night_only,
        "candidate_passes": plan.candidates,
        "planned_passes": len(plan.passes),
        "solver_status": plan.status,
        "stage_status": dict(plan.stage_status),
        "solve_s": round(plan.solve_s, 3),
        "demand_met": sum(o.met for o in plan.outcomes),
        "demand_total": len(plan.outcomes),
        "passes": passes,
        "demand": demand,
    }
