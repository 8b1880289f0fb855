"""The classical link of a simulated pass: the mission's rates and the pass's range put between
the payload's and the station's QKD messages (sim_backends.classical_link, through
satqkd_runtime.bus_link), and what the report says of it (`classical_channel.link`)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

from satqkd.config import ConfigError, Scenario
from satqkd.pass_physics import PassPhysics
from satqkd_runtime.bus import MessageBus
from satqkd_runtime.bus_link import LinkedBus
from satqkd_runtime.clock import SimClock
from sim_backends.classical_link import DIRECTIONS, ClassicalLinkModel, range_of_pass

__all__ = ["link_buses", "link_report"]


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
    wrapped = []
    for bus, direction in ((payload_bus, "downlink"), (ogs_bus, "uplink")):

        def deliver_at(size: int, now: float, direction: str = direction) -> float:
            return link.schedule(direction, size, now)

        wrapped.append(await stack.enter_async_context(LinkedBus(bus, deliver_at, _qkd_topic)))
    return wrapped[0], wrapped[1], link


def link_report(link: ClassicalLinkModel | None, los_loop_s: float) -> dict[str, Any]:
    """Get: `classical_channel.link` of the report (empty without a link): the rates, and per
    direction over the pass and after LOS, messages, bytes and seconds on the link."""
    if link is None:
        return {}
    whole, after = link.summary(), link.summary(los_loop_s)
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
