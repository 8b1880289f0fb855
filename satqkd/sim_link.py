"""The classical link of a simulated pass: the mission's rates and the pass's range put between
the payload's and the station's QKD messages (sim_backends.classical_link, through
satqkd_runtime.bus_link), and what the report says of it (`classical_channel.link`).

The link is timed in simulated time, not on the host's clock (`LinkTime`): a message is handed
to the link at its sender's time, the later of the simulated clock's now and the instant the
sender last received a message over the link (it cannot answer before it has heard), so the
queueing and serialisation follow the link's capacity whatever the host's speed. It is
delivered when the simulated clock reaches its delivery instant, or, when the clock lags or
stands still (after LOS), once the event loop has waited the rest of its time on the link.

The link's now is the later of the simulated clock's now and the latest delivery instant (in
either direction) moved on by the wall time since that delivery: when the clock stands still
the link's time moves with the wall clock from each delivery on. A message waits its delivery
instant less the link's now, and it is handed at the link's now, so the time a node spends
computing its answer counts once, before its answer is handed. (Until decision 0039 the rest
was counted from the previous delivery in the message's own direction: after LOS each
exchange then waited its round trip twice, once per direction.) The wall time to a key after
LOS is therefore the model's link time plus the nodes' CPU time plus the broker's hops.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from satqkd.config import ConfigError, Scenario
from satqkd.pass_physics import PassPhysics
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.bus_link import LinkedBus
from satqkd_runtime.clock import SimClock
from sim_backends.classical_link import DIRECTIONS, ClassicalLinkModel, range_of_pass

__all__ = ["LinkTime", "link_buses", "link_report"]

_OTHER = {"uplink": "downlink", "downlink": "uplink"}


class _SimulatedClock(Protocol):
    def now_unix_s(self) -> float: ...

    async def sleep_until(self, unix_s: float) -> None: ...


class LinkTime:
    """Hands messages to a `ClassicalLinkModel` at simulated instants (module docstring): per
    direction, a `LinkedBus`'s `deliver_at`, `on_delivered` and `wait_until`."""

    def __init__(self, link: ClassicalLinkModel, clock: _SimulatedClock) -> None:
        self._link = link
        self._clock = clock
        # per direction: the latest instant a message in it reached its receiver, and the
        # delivery instants (simulated) of the messages still on their way, in order
        self._received = {d: -math.inf for d in DIRECTIONS}
        self._pending: dict[str, deque[float]] = {d: deque() for d in DIRECTIONS}
        # the largest (delivery instant - event-loop time when it was reached): the link's now
        # is at least the event loop's time plus this (module docstring)
        self._reached_minus_loop = -math.inf

    def _now(self) -> float:
        """Get: the link's now (module docstring)."""
        loop_now = asyncio.get_running_loop().time()
        return max(self._clock.now_unix_s(), loop_now + self._reached_minus_loop)

    def _reached(self, delivered: float) -> None:
        loop_now = asyncio.get_running_loop().time()
        self._reached_minus_loop = max(self._reached_minus_loop, delivered - loop_now)

    def deliver_at(self, direction: str) -> Callable[[int, float], float]:
        """Get: for one direction, (size, loop now) -> the simulated instant of the delivery."""

        def deliver_at(size: int, loop_now: float) -> float:
            handed = max(self._now(), self._received[_OTHER[direction]])
            delivered = self._link.schedule(direction, size, handed)
            self._pending[direction].append(delivered)
            return delivered

        return deliver_at

    def wait_until(self, direction: str) -> Callable[[float], Awaitable[None]]:
        """Get: for one direction, wait until a message's delivery instant: the simulated clock
        reaching it, or the event loop waiting what is left of it (module docstring)."""

        async def wait_until(delivered: float) -> None:
            now = max(self._now(), self._received[direction])
            if delivered > now:
                on_clock = asyncio.ensure_future(self._clock.sleep_until(delivered))
                try:
                    await asyncio.wait({on_clock}, timeout=delivered - now)
                finally:
                    on_clock.cancel()
            self._reached(delivered)  # the link's time has reached the delivery instant

        return wait_until

    def on_delivered(self, direction: str) -> Callable[[bool], None]:
        """Get: for one direction, the callback the bus calls after each delivery or loss."""

        def on_delivered(published: bool) -> None:
            delivered = self._pending[direction].popleft()
            if published:
                self._received[direction] = max(self._received[direction], delivered)

        return on_delivered


def _qkd_topic(topic: str) -> bool:
    """The payload <-> station QKD messages (satqkd_core.dictionary.qkd_topic)."""
    return "/qkd/" in topic


async def link_buses(
    scenario: Scenario,
    physics: PassPhysics,
    clock: SimClock,
    payload_bus: MessageBus,
    ogs_bus: MessageBus,
    stack: contextlib.AsyncExitStack,
) -> tuple[Any, Any, ClassicalLinkModel | None]:
    """Get: the two nodes' buses with the mission's link between their QKD messages, and the
    link, when the scenario asks for it (`simulation.classical_link: modelled`); else the buses
    unchanged and None. ConfigError when the mission gives no link to model."""
    if scenario.scenario.simulation.classical_link == "loopback":
        return payload_bus, ogs_bus, None
    config = scenario.mission.classical_link
    if config is None:
        raise ConfigError(
            f"{scenario.path}: simulation.classical_link: modelled, but mission "
            f"{scenario.mission.name!r} gives no classical_link (uplink_bps, downlink_bps)"
        )
    link = ClassicalLinkModel(
        range_of_pass(physics.light_time, clock.now_unix_s),
        config.uplink_bps,
        config.downlink_bps,
        config.framing_bytes,
    )
    timing = LinkTime(link, clock)
    wrapped = []
    for bus, direction in ((payload_bus, "downlink"), (ogs_bus, "uplink")):
        linked = LinkedBus(
            bus,
            timing.deliver_at(direction),
            _qkd_topic,
            timing.on_delivered(direction),
            timing.wait_until(direction),
        )
        wrapped.append(await stack.enter_async_context(linked))
    return wrapped[0], wrapped[1], link


def link_report(link: ClassicalLinkModel | None, los_unix_s: float) -> dict[str, Any]:
    """Get: `classical_channel.link` of the report (empty without a link): the rates, and per
    direction over the pass and after LOS (simulated time), messages, bytes and seconds on the
    link."""
    if link is None:
        return {}
    whole, after = link.summary(), link.summary(los_unix_s)
    light = [whole[d][k] for d in DIRECTIONS for k in ("light_time_min_s", "light_time_max_s")]
    light_s = [value for value in light if value is not None]
    report: dict[str, Any] = {
        "model": "range delay and serialisation",
        "framing_bytes": link.framing_bytes,
        "light_time_min_ms": round(min(light_s) * 1e3, 3) if light_s else None,
        "light_time_max_ms": round(max(light_s) * 1e3, 3) if light_s else None,
    }
    for direction in DIRECTIONS:
        report[direction] = {
            "rate_bps": whole[direction]["rate_bps"],
            "messages": whole[direction]["messages"],
            "bytes": whole[direction]["bytes"],
            "serialisation_s": round(float(whole[direction]["serialisation_s"] or 0.0), 3),
            "messages_after_los": after[direction]["messages"],
            "bytes_after_los": after[direction]["bytes"],
            "link_s_after_los": round(float(after[direction]["link_s"] or 0.0), 3),
        }
    total = sum(float(after[d]["link_s"] or 0.0) for d in DIRECTIONS)
    report["link_s_after_los"] = round(total, 3) if math.isfinite(total) else None
    return report
