"""The operation control centre: key demand, pass prediction, planning with CP-SAT
(docs/occ.md)."""

from satqkd_occ.demand import KeyDemand, check_demands, demand_from_mapping
from satqkd_occ.plan_document import PLAN_SCHEMA, plan_document
from satqkd_occ.planner import DemandOutcome, Plan, PlannedPass, PlanSettings, plan_passes
from satqkd_occ.prediction import (
    CandidatePass,
    CloudForecast,
    KeyTable,
    Satellite,
    StationSite,
    night_date,
    predict_passes,
)

__all__ = [
    "PLAN_SCHEMA",
    "CandidatePass",
    "CloudForecast",
    "DemandOutcome",
    "KeyDemand",
    "KeyTable",
    "Plan",
    "PlanSettings",
    "PlannedPass",
    "Satellite",
    "StationSite",
    "check_demands",
    "demand_from_mapping",
    "night_date",
    "plan_document",
    "plan_passes",
    "predict_passes",
]
