"""The simulated clock wakes sleepers in deadline order and never goes back."""

from __future__ import annotations

import asyncio

import pytest

from satqkd_runtime.clock import RealClock, SimClock


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


async def test_lockstep_participant_does_slow_io_at_every_deadline() -> None:
    """A loop that does wall-clock I/O between sleeps still sees every one of its instants:
    time waits for it (without lockstep, advance_to would run past its deadlines)."""
    clock = SimClock(0.0)
    seen: list[float] = []

    async def loop() -> None:
        with clock.participating("atp loop"):
            for k in range(1, 11):
                await clock.sleep_until(0.1 * k)
                seen.append(clock.now_unix_s())
                await asyncio.sleep(0.005)  # a round trip to an emulator, in wall time
                seen.append(clock.now_unix_s())

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await clock.advance_to(0.55)
    assert seen == pytest.approx([round(0.1 * k, 10) for k in range(1, 6) for _ in (0, 1)])
    await clock.advance_to(2.0)
    await task
    assert len(seen) == 20 and seen[-1] == pytest.approx(1.0)


async def test_stalled_participant_stops_the_simulation_naming_it() -> None:
    from satqkd_runtime.clock import SimulationStalled

    clock = SimClock(0.0, settle_timeout_s=0.05)
    release = asyncio.Event()

    async def stuck() -> None:
        with clock.participating("gimbal program track"):
            await clock.sleep_until(1.0)
            await release.wait()  # an I/O that never completes

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    with pytest.raises(SimulationStalled, match="gimbal program track"):
        await clock.advance_to(2.0)
    release.set()
    await task
    await clock.advance_to(3.0)  # the participant left: time moves freely again


async def test_real_clock_participation_is_a_no_op() -> None:
    with RealClock().participating("anything"):
        pass
