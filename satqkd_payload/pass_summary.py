"""The payload's PAYLOAD_PASS_SUMMARY: every figure of the pass report the payload measures.

Counts, rates and instants only: no key bits and no digest of a key ever go on the bus. Byte
and message counts are those since the plan was loaded (`ChannelCounts` taken then).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from satqkd_runtime.qkd_channel import ChannelCounts

if TYPE_CHECKING:
    from satqkd_payload.session import PayloadSession

NAN = float("nan")


@dataclass
class EmissionWindow:
    """When the source emitted for one plan: from QKD start (pulse 0) until it was made safe,
    at most until the plan's QKD stop (later pulses are no protocol pulses)."""

    start_unix_s: float
    planned_stop_unix_s: float
    repetition_rate_hz: float
    stop_unix_s: float = NAN

    def close(self, now_unix_s: float) -> None:
        """Control: the source stopped emitting now (the first stop counts)."""
        if math.isnan(self.stop_unix_s):
            self.stop_unix_s = min(max(now_unix_s, self.start_unix_s), self.planned_stop_unix_s)

    def stop_at(self, now_unix_s: float) -> float:
        """Get: the end of emission as known at `now_unix_s` (still on: now, at most stop)."""
        if not math.isnan(self.stop_unix_s):
            return self.stop_unix_s
        return min(max(now_unix_s, self.start_unix_s), self.planned_stop_unix_s)

    def pulses(self, now_unix_s: float) -> int:
        """Get: pulses emitted inside the QKD window as known at `now_unix_s`."""
        return round((self.stop_at(now_unix_s) - self.start_unix_s) * self.repetition_rate_hz)


def payload_pass_summary(
    session: PayloadSession,
    emission: EmissionWindow | None,
    channel_at_load: ChannelCounts,
    now_unix_s: float,
    fine_tracking: tuple[float, float] = (NAN, NAN),
) -> dict[str, Any]:
    """Get: the PAYLOAD_PASS_SUMMARY fields of a session that ended; `fine_tracking` is the
    payload controller's (rms residual in urad, locked fraction) over the emission."""
    outcome = session.outcome
    figures = session.pass_figures()
    pulses = emission.pulses(now_unix_s) if emission is not None else 0
    held = outcome.key_id and not outcome.abort_reason and not outcome.discarded
    key_bits = outcome.key_bits if held else 0
    # a key stored and then discarded (the station never confirmed it) keeps its id: the
    # report compares what each end holds
    stored_unix_s = NAN if outcome.stored_unix_s is None else outcome.stored_unix_s
    channel = channel_at_load.since(session.channel)
    return {
        "plan_id": session.plan_id,
        "station": session.station,
        "emission_start_unix_s": emission.start_unix_s if emission is not None else NAN,
        "emission_stop_unix_s": emission.stop_at(now_unix_s) if emission is not None else NAN,
        "repetition_rate_hz": emission.repetition_rate_hz if emission is not None else 0.0,
        "pulses_sent": pulses,
        "intensities": [float(mu) for mu in session.params.intensities],
        "sent_by_intensity": [round(pulses * p) for p in session.params.probabilities],
        **figures,
        "secret_key_bits": key_bits,
        "key_id": outcome.key_id or "",
        "key_confirmed": bool(outcome.confirmed),
        "auth_refill_bits": outcome.auth_refill_bits,
        "abort_reason": (outcome.abort_reason or "")[:500],
        "key_stored_unix_s": stored_unix_s,
        "ended_unix_s": now_unix_s,
        "downlink_bytes": channel.sent_bytes,
        "downlink_messages": channel.sent_messages,
        "received_bytes": channel.received_bytes,
        "rejected_messages": channel.rejected,
        "auth_messages_left": session.channel.pool_messages_left,
        "fine_residual_rms_urad": float(fine_tracking[0]),
        "fine_locked_fraction": float(fine_tracking[1]),
    }
