"""The operation control centre's planning (issue 14, decision 0028): a week, three stations
(Xinglong, Graz, Nanshan), one Jinan-1-like satellite (500 km, LTAN 22:30), N demands.

- occ_pass_prediction_week_s: the night passes of the week over the three stations
  (satqkd_occ.predict_passes: SGP4 pass search and the Sun test);
- occ_plan_week_s: CP-SAT planning of those passes against N demands (all stages, 1 worker,
  the default 10 s limit),
  N = 30 (10 quick): relay pairs and direct demands with deadlines spread over the week;
- occ_demand_met_fraction: the demands the plan meets in full, as a check on the case.
The key of a pass comes from a fixed table (the physics-computed one is `occ plan`'s, timed in
docs/performance.md), so the figures time prediction and planning alone.
"""

from __future__ import annotations

import time

__all__ = ["figures"]

START = 1796601600.0  # 2026-12-07T00:00:00Z
DAY = 86400.0


def figures(quick: bool) -> list[dict]:
    """Get the planning figures."""
    from satqkd_core.ephemeris import Station
    from satqkd_occ import (
        CloudForecast,
        KeyDemand,
        KeyTable,
        PlanSettings,
        Satellite,
        StationSite,
        plan_passes,
        predict_passes,
    )
    from sim_backends.orbit import sun_synchronous_tle

    satellite = Satellite("jinan1", *sun_synchronous_tle(500.0, 22.5, START))
    sites = [
        StationSite("xinglong", Station(40.3958, 117.5775, 900.0)),
        StationSite("graz", Station(47.0671, 15.4934, 493.0)),
        StationSite("nanshan", Station(43.4711, 87.1775, 2080.0)),
    ]
    table = KeyTable((10.0, 25.0, 50.0, 90.0), (0, 60_000, 240_000, 390_000))
    tables = {("jinan1", s.name): table for s in sites}
    forecast = CloudForecast(default=0.3)
    began = time.perf_counter()
    candidates = predict_passes([satellite], sites, START, START + 7 * DAY, tables, forecast)
    prediction_s = time.perf_counter() - began

    n = 10 if quick else 30
    pairs = (("xinglong", "graz"), ("xinglong", "nanshan"), ("graz", "nanshan"))
    pairs += (("xinglong", "jinan1"), ("graz", "jinan1"), ("nanshan", "jinan1"))
    demands = [
        KeyDemand(
            f"d{k}", *pairs[k % len(pairs)], 20_000 + 5_000 * (k % 7), START + (2 + k % 6) * DAY
        )
        for k in range(n)
    ]
    settings = PlanSettings(key_ready_after_los_s=600.0, time_limit_s=10.0, workers=1)
    plan = plan_passes(candidates, demands, settings)
    params = {"stations": 3, "days": 7, "demands": n, "candidate_passes": len(candidates)}
    return [
        {"name": "occ_pass_prediction_week_s", "value": prediction_s, "unit": "s",
         "params": params},
        {"name": "occ_plan_week_s", "value": plan.solve_s, "unit": "s",
         "params": {**params, "stages": plan.stage_status, "planned_passes": len(plan.passes)}},
        {"name": "occ_demand_met_fraction", "value": sum(o.met for o in plan.outcomes) / n,
         "unit": "1", "params": params},
    ]  # fmt: skip
