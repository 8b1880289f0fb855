"""The validity of a pass plan (LOAD_PASS_PLAN), one rule set for both ends.

The payload and the station must agree on which plans are valid: a plan one end accepts and
the other refuses leaves the payload emitting alone (or the station tagging nothing) for the
window. Both daemons call `pass_plan_problem` for the generic rules below and keep only their
own checks (mission and station names, the source's repetition rate, a pre-shared key, a plan
id already seen: see `satqkd_runtime.plan_registry`).

Rules, checked in this order (the first one broken is reported):

1. `plan_id` is a whole number >= 0 (and fits the telecommand's u32).
2. `aos_unix_s`, `qkd_start_unix_s`, `qkd_stop_unix_s`, `los_unix_s` are finite numbers.
3. `repetition_rate_hz` is a finite number > 0.
4. aos <= qkd_start < qkd_stop <= los.
5. `qkd_start_unix_s` is on a whole second: it is the pulse timing origin (pulse 0), and the
   station's time tagger counts from the whole second (timestamp 0).
6. The pulse period 1e12 / repetition_rate_hz is a whole number of picoseconds (within
   `PERIOD_TOLERANCE_PS`): the station places pulse k at k periods from the origin.
7. The QKD window lasts at most `MAX_QKD_WINDOW_S`.
8. The QKD window has not started: qkd_start > now. A plan loaded at or after its start is
   refused at both ends, so a restarted payload never turns the source on mid-window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real

MAX_QKD_WINDOW_S = 3600.0  # longer than any LEO pass over one station
PERIOD_TOLERANCE_PS = 1e-6
MAX_PLAN_ID = 2**32 - 1  # plan_id is a u32 in the telecommand
TIME_FIELDS = ("aos_unix_s", "qkd_start_unix_s", "qkd_stop_unix_s", "los_unix_s")


def _number(value: object) -> float | None:
    """The value as a float if it is a real number (not a bool), None otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    return float(value)


def pass_plan_problem(fields: Mapping[str, object], now_unix_s: float) -> str | None:
    """Get: the first reason the LOAD_PASS_PLAN `fields` are invalid at `now_unix_s` (see the
    module's rules), None if they are valid. Pure: reads nothing but its arguments."""
    plan_id = fields.get("plan_id")
    if isinstance(plan_id, bool) or not isinstance(plan_id, Integral):
        return f"plan_id {plan_id!r} is not a whole number"
    if not 0 <= int(plan_id) <= MAX_PLAN_ID:
        return f"plan_id {plan_id} is outside 0..{MAX_PLAN_ID}"
    times: dict[str, float] = {}
    for name in TIME_FIELDS:
        value = _number(fields.get(name))
        if value is None or not math.isfinite(value):
            return f"{name} {fields.get(name)!r} is not a finite number"
        times[name] = value
    rate = _number(fields.get("repetition_rate_hz"))
    if rate is None or not math.isfinite(rate) or rate <= 0:
        return f"repetition_rate_hz {fields.get('repetition_rate_hz')!r} is not a finite rate > 0"
    aos, start = times["aos_unix_s"], times["qkd_start_unix_s"]
    stop, los = times["qkd_stop_unix_s"], times["los_unix_s"]
    if not aos <= start < stop <= los:
        return "need aos <= qkd_start < qkd_stop <= los"
    if start != math.floor(start):
        return f"qkd_start_unix_s {start!r} must be a whole second (pulse timing origin)"
    period_ps = 1e12 / rate
    if not math.isfinite(period_ps) or abs(period_ps - round(period_ps)) > PERIOD_TOLERANCE_PS:
        return f"repetition_rate_hz {rate:g}: pulse period {period_ps!r} ps is not whole ps"
    if stop - start > MAX_QKD_WINDOW_S:
        return f"QKD window of {stop - start:g} s is longer than {MAX_QKD_WINDOW_S:g} s"
    if not start > now_unix_s:
        return (
            f"QKD window already started (qkd_start {start:.0f} <= now {now_unix_s:.3f}): "
            "a plan is loaded before its start"
        )
    return None
