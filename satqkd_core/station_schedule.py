"""One station, several missions: which pass plans can share the station's night.

A station serves one pass at a time, from AOS to LOS. Between two passes it needs the
telescope's slew to the next AOS (`slew_gap_s`), and when the next pass belongs to another
mission also the change of optics, detector channels and protocol (`reconfiguration_gap_s`,
added to the slew). A plan that breaks either gap with a plan already held is refused with the
reason, naming both plans and the gap missing. Pure: reads nothing but its arguments, so the
station daemon and the planning tools apply the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedPass:
    """One pass plan as the station's schedule sees it."""

    plan_id: int
    mission: str
    aos_unix_s: float
    los_unix_s: float

    def describe(self) -> str:
        """Get: 'plan 7 (jinan1, AOS 1765000000 - LOS 1765000600)' for messages."""
        return (
            f"plan {self.plan_id} ({self.mission}, AOS {self.aos_unix_s:.0f} - "
            f"LOS {self.los_unix_s:.0f})"
        )


def _gap_needed(first: PlannedPass, second: PlannedPass, slew_s: float, reconf_s: float) -> float:
    return slew_s + (reconf_s if first.mission != second.mission else 0.0)


def conflict(
    held: PlannedPass, candidate: PlannedPass, slew_gap_s: float, reconfiguration_gap_s: float
) -> str | None:
    """Get: why `candidate` cannot share the station with `held` (a time overlap, or less than
    the slew and reconfiguration gap between them), None if both fit."""
    first, second = sorted((held, candidate), key=lambda p: (p.aos_unix_s, p.los_unix_s))
    needed = _gap_needed(first, second, slew_gap_s, reconfiguration_gap_s)
    gap = second.aos_unix_s - first.los_unix_s
    if gap < 0.0:
        overlap = min(first.los_unix_s, second.los_unix_s) - second.aos_unix_s
        return (
            f"plan {candidate.plan_id} overlaps {held.describe()} by {overlap:.0f} s "
            f"({candidate.describe()})"
        )
    if gap < needed:
        what = (
            f"{slew_gap_s:g} s slew + {reconfiguration_gap_s:g} s reconfiguration "
            f"({first.mission} -> {second.mission})"
            if first.mission != second.mission
            else f"{slew_gap_s:g} s slew"
        )
        return (
            f"plan {candidate.plan_id} leaves {gap:.0f} s between {first.describe()} and "
            f"{second.describe()}; the station needs {what}"
        )
    return None


def _valid_times(plan: PlannedPass) -> str | None:
    if not (math.isfinite(plan.aos_unix_s) and math.isfinite(plan.los_unix_s)):
        return f"plan {plan.plan_id}: AOS and LOS must be finite numbers"
    if not plan.aos_unix_s < plan.los_unix_s:
        return (
            f"plan {plan.plan_id}: AOS {plan.aos_unix_s:.0f} is not before "
            f"LOS {plan.los_unix_s:.0f}"
        )
    return None


def schedule_refusal(
    held: Iterable[PlannedPass],
    candidate: PlannedPass,
    slew_gap_s: float,
    reconfiguration_gap_s: float,
) -> str | None:
    """Get: every reason the station refuses `candidate` given the plans it holds (one line,
    reasons joined by '; '), None if it fits. A plan id already held is a reason too."""
    if slew_gap_s < 0.0 or reconfiguration_gap_s < 0.0:
        raise ValueError("slew_gap_s and reconfiguration_gap_s must be >= 0")
    problem = _valid_times(candidate)
    if problem is not None:
        return problem
    reasons = []
    for plan in held:
        if plan.plan_id == candidate.plan_id:
            reasons.append(f"plan id {candidate.plan_id} is already held ({plan.describe()})")
            continue
        reason = conflict(plan, candidate, slew_gap_s, reconfiguration_gap_s)
        if reason is not None:
            reasons.append(reason)
    return "; ".join(reasons) if reasons else None


def schedule_conflicts(
    plans: Sequence[PlannedPass], slew_gap_s: float, reconfiguration_gap_s: float
) -> list[str]:
    """Get: every conflict in a night's plans, taking them in order as a station would load
    them: each plan checked against the ones accepted before it, a refused one not held);
    [] if all fit."""
    reasons: list[str] = []
    accepted: list[PlannedPass] = []
    for plan in plans:
        reason = schedule_refusal(accepted, plan, slew_gap_s, reconfiguration_gap_s)
        if reason is None:
            accepted.append(plan)
        else:
            reasons.append(reason)
    return reasons
