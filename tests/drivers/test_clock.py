"""The simulated clock wakes sleepers in deadline order and never goes back."""

from __future__ import annotations

import asyncio

import pytest

from drivers.clock import RealClock, SimClock


async def test_sleepers_wake_in_deadline_order_at_their_own_time() -> None:
    clock = SimClock(1000.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, at: float) -> None:
        await clock.sleep_until(at)
        woke.append((name, clock.now_unix_s()))

    tasks = [
        asyncio.create_task(sleeper(n, t)) for n, t in (("c", 1030.0), ("a", 1010.0), ("b", 1020.0))
    ]
    await asyncio.sleep(0)
    await clock.advance_to(1025.0)
    assert woke == [("a", 1010.0), ("b", 1020.0)]
    assert clock.now_unix_s() == 1025.0
    assert clock.pending_sleepers == 1
    await clock.advance_to(1100.0)
    await asyncio.gather(*tasks)
    assert woke[-1] == ("c", 1030.0)


async def test_past_deadline_returns_at_once_and_time_cannot_go_back() -> None:
    clock = SimClock(50.0)
    await asyncio.wait_for(clock.sleep_until(10.0), 1.0)
    with pytest.raises(ValueError, match="cannot go back"):
        await clock.advance_to(40.0)


async def test_real_clock_sleeps_until_deadline() -> None:
    clock = RealClock()
    start = clock.now_unix_s()
    await clock.sleep_until(start + 0.02)
    assert clock.now_unix_s() >= start + 0.02
