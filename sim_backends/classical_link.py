"""The classical link between payload and station, as a simulated pass models it.

A message handed to the link at instant t (seconds, any monotonic time base) in one direction
waits for the messages before it in that direction to be serialised (the link sends one at a
time at the direction's rate), is serialised itself (8 (bytes + framing) / rate seconds) and
then travels the slant range at the speed of light. Its delivery instant is

    start = max(t, end of the previous message's serialisation)
    delivery = start + 8 (bytes + framing_bytes) / rate_bps + range(start) / c,

and no message overtakes the one before it. The range comes from the pass geometry (a
`LightTimeModel` on the ephemeris grid, held at the grid's ends outside it: after LOS the
link keeps the range of LOS, i.e. the model assumes the classical link outlives the QKD
window, as an RF or optical terminal tracking below the QKD elevation mask does).

Each message is recorded (direction, hand-over, delivery, bytes), so a report can say what
the link carried and how long its messages spent on it, in all and after any instant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from satqkd_core.light_time import SPEED_OF_LIGHT_M_S, LightTimeModel

__all__ = ["DIRECTIONS", "ClassicalLinkModel", "LinkMessage", "range_of_pass"]

DIRECTIONS = ("uplink", "downlink")  # uplink: station -> payload; downlink: payload -> station


@dataclass(frozen=True)
class LinkMessage:
    """One message that crossed the link."""

    direction: str
    handed_s: float
    start_s: float
    delivered_s: float
    size_bytes: int
    light_time_s: float


@dataclass
class _Direction:
    rate_bps: float
    busy_until_s: float = -math.inf
    last_delivery_s: float = -math.inf
    messages: list[LinkMessage] = field(default_factory=list)


def range_of_pass(
    light_time: LightTimeModel, now_unix_s: Callable[[], float]
) -> Callable[[], float]:
    """Get: the slant range (m) now, from the pass's ephemeris grid (its end values outside)."""

    def range_m() -> float:
        t = min(max(now_unix_s() - light_time.grid_start_unix_s, 0.0), light_time.span_s)
        return float(light_time.range_at([t])[0])

    return range_m


class ClassicalLinkModel:
    """Range delay and serialisation of payload <-> station messages (module docstring)."""

    def __init__(
        self,
        range_m: Callable[[], float],
        uplink_bps: float,
        downlink_bps: float,
        framing_bytes: int = 0,
    ) -> None:
        rates = {"uplink": uplink_bps, "downlink": downlink_bps}
        for name, rate in rates.items():
            if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
                raise ValueError(f"{name}_bps must be a positive finite number, got {rate!r}")
        if isinstance(framing_bytes, bool) or not isinstance(framing_bytes, int):
            raise ValueError(f"framing_bytes must be an integer, got {framing_bytes!r}")
        if framing_bytes < 0:
            raise ValueError(f"framing_bytes must be >= 0, got {framing_bytes}")
        self._range_m = range_m
        self.framing_bytes = framing_bytes
        self._directions = {name: _Direction(float(rate)) for name, rate in rates.items()}

    def rate_bps(self, direction: str) -> float:
        """Get: the rate of one direction."""
        return self._direction(direction).rate_bps

    def schedule(self, direction: str, size_bytes: int, now_s: float) -> float:
        """Hand a message of `size_bytes` to the link at `now_s`; get its delivery instant."""
        link = self._direction(direction)
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
            raise ValueError(f"size_bytes must be an integer >= 0, got {size_bytes!r}")
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be finite, got {now_s!r}")
        start = max(now_s, link.busy_until_s)
        link.busy_until_s = start + 8.0 * (size_bytes + self.framing_bytes) / link.rate_bps
        range_m = self._range_m()
        if not (math.isfinite(range_m) and range_m > 0):
            raise ValueError(f"range must be positive and finite, got {range_m!r} m")
        light_time = range_m / SPEED_OF_LIGHT_M_S
        delivered = max(link.busy_until_s + light_time, link.last_delivery_s)
        link.last_delivery_s = delivered
        link.messages.append(
            LinkMessage(direction, now_s, start, delivered, size_bytes, light_time)
        )
        return delivered

    def messages(self, direction: str, since_s: float = -math.inf) -> list[LinkMessage]:
        """Get: the messages of one direction handed to the link at or after `since_s`."""
        return [m for m in self._direction(direction).messages if m.handed_s >= since_s]

    def summary(self, since_s: float = -math.inf) -> dict[str, dict[str, float | int | None]]:
        """Get: per direction, messages and bytes, seconds they spent on the link (queueing,
        serialisation and light time), and the light time's range, from `since_s` on."""
        out: dict[str, dict[str, float | int | None]] = {}
        for name in DIRECTIONS:
            chosen = self.messages(name, since_s)
            light = [m.light_time_s for m in chosen]
            out[name] = {
                "rate_bps": self._directions[name].rate_bps,
                "messages": len(chosen),
                "bytes": sum(m.size_bytes for m in chosen),
                "link_s": sum(m.delivered_s - m.handed_s for m in chosen),
                "serialisation_s": sum(
                    8.0 * (m.size_bytes + self.framing_bytes) / self._directions[name].rate_bps
                    for m in chosen
                ),
                "light_time_min_s": min(light) if light else None,
                "light_time_max_s": max(light) if light else None,
            }
        return out

    def _direction(self, direction: str) -> _Direction:
        try:
            return self._directions[direction]
        except KeyError:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}") from None
