"""The payload daemon's settings, declared once: defaults and allowed ranges."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, InstanceOf
from pydantic.dataclasses import dataclass

from satqkd_core.pass_decisions import ProtocolParameters
from satqkd_runtime.settings import SETTINGS_CONFIG, HousekeepingPeriod, Seconds

__all__ = ["PayloadSettings"]


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class PayloadSettings:
    """What the payload daemon needs from the mission profile, and its own timings."""

    mission: str
    protocol: InstanceOf[ProtocolParameters]
    repetition_rate_hz: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    housekeeping_period_s: HousekeepingPeriod = 10.0
    # the source goes to its safe state once the broker has been unreachable this long
    ground_link_timeout_s: Seconds = 5.0
    # a key stored at PA_SEED that the station has not confirmed this long after is discarded
    pending_key_timeout_s: Seconds = 60.0
    # a session whose station has sent nothing this long after the plan's end (the later of
    # QKD stop and LOS) or after its last message, whichever is later, is abandoned keyless
    session_timeout_s: Seconds = 120.0
    # the pulse pattern: "expanded" (a 256-bit AES key per pass) or "recorded" (one entropy
    # byte per pulse, drawn and written to disk at plan load: information-theoretic)
    pattern_mode: Literal["expanded", "recorded"] = "expanded"
    # how well the station's clock knows the payload's offset (the mission's
    # time_sync.clock_offset_uncertainty_ps): on-board sifting resolves the whole pulse
    # periods the station's sync may be off by within it (satqkd_core.pulse_shift); 0: none
    clock_offset_uncertainty_ps: Annotated[float, Field(ge=0.0, le=1e9)] = 0.0
    # (the keep-alive on the payload controller's link is the link's own setting: the bench's
    # payload_link_source option keep_alive_interval_s)
