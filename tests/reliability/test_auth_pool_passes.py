"""Consecutive passes on the same two daemons (tests/reliability/sim_pair.py: QKD windows around
the culmination of overhead passes, a real Mosquitto, simulated time) with the 4096-message
pre-shared pool that used to run dry half-way through the seventh 30-s pass.

- 60-s windows pay for their authentication (key longer than 128 bits per message each way):
  each key refills what the pool lacks of its target, so the pool is back at the target after
  every pass, as many passes in a row as flown.
- 30-s windows do not (30-39 kbit of key against ~73 kbit of pad words): each gives all its
  key but one message to the pool, which falls more slowly, and the first plan the pool cannot
  cover is refused at both ends with the figure; no pass ever fails half-way.

In both, refill bits are never stored as key at either end and both ends hold the same refills.
Slow (tens of seconds of wall time per pass):
`pytest -m slow tests/reliability/test_auth_pool_passes.py`. The default run's checks of the same
rules are tests/runtime/test_auth_pool_economy.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from satqkd_payload.key_lifecycle import REFILL_TARGET_MESSAGES
from satqkd_runtime.qkd_channel import DEFAULT_PASS_RESERVE_MESSAGES
from tests.reliability import sim_pair
from tests.reliability.sim_pair import PassEnd, SimPair, run_with_timeout

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(3600)]

DEFAULT_POOL_MESSAGES = 4096  # `preshared_auth_key(seed, 4096)`: the pool that ran dry
BITS_PER_MESSAGE = 128  # a pad word each way


def _check_refill(pair: SimPair, end: PassEnd) -> tuple[int, int]:
    """The pass made the same key at both ends, less its refill, and the same refill at both
    ends; get the pool left at each end."""
    station = pair.scenario.station.name
    ogs_channel, payload_channel = pair.ogs.channel, pair.payload.links[station].channel
    result = pair.ogs.results[end.plan_id]
    left = (ogs_channel.pool_messages_left, payload_channel.pool_messages_left)
    print(
        f"\nplan {end.plan_id}: {result.pa_output_bits} bits out of PA, "
        f"{result.auth_refill_bits} refilled, {end.key_bits} stored; pool left {left}"
    )
    assert end.ogs_key_id is not None and end.ogs_key_id == end.payload_key_id, end
    assert left[0] == left[1]  # both ends applied the same refills
    stored = [store.load(end.ogs_key_id) for store in (pair.ogs_store, pair.payload_store)]
    assert stored[0].size == stored[1].size == result.key_bits > 0
    assert result.key_bits + result.auth_refill_bits == result.pa_output_bits
    assert result.auth_refill_bits > 0  # the 4096-message pool is below its target + margin
    pads = [c._extensions[end.ogs_key_id] for c in (ogs_channel, payload_channel)]
    assert pads[0] == pads[1] and 8 * len(pads[0]) == result.auth_refill_bits
    refill_bits = np.unpackbits(np.frombuffer(pads[0], np.uint8), bitorder="big")
    assert not np.array_equal(refill_bits[: stored[0].size], stored[0])
    return left


async def test_passes_that_pay_for_their_words_keep_the_pool_at_its_target(
    mosquitto_factory: Callable[..., object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sim_pair, "PRESHARED_MESSAGES", DEFAULT_POOL_MESSAGES)
    monkeypatch.setattr(sim_pair, "QKD_WINDOW_S", 60.0)
    broker = mosquitto_factory(persistence=True)
    async with SimPair(broker, tmp_path) as pair:
        for k in range(8):  # more than the 4096-message pool covers without refills
            end = await run_with_timeout(pair.fly(600 + k), 300.0)
            left = _check_refill(pair, end)
            assert min(left) >= REFILL_TARGET_MESSAGES


async def test_passes_that_cannot_pay_end_in_a_clean_refusal_not_an_exhausted_pool(
    mosquitto_factory: Callable[..., object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sim_pair, "PRESHARED_MESSAGES", DEFAULT_POOL_MESSAGES)
    broker = mosquitto_factory(persistence=True)
    async with SimPair(broker, tmp_path) as pair:
        left = (DEFAULT_POOL_MESSAGES, DEFAULT_POOL_MESSAGES)
        for k in range(12):
            if min(left) < DEFAULT_PASS_RESERVE_MESSAGES:
                break
            end = await run_with_timeout(pair.fly(700 + k), 300.0)
            before = min(left)
            left = _check_refill(pair, end)
            assert min(left) < before  # a 30-s window's key is shorter than its pad words
        else:
            raise AssertionError(f"the pool never fell below the reserve: {left}")
        # the next plan is refused at both ends, before anything starts, with the figure
        with pytest.raises(AssertionError) as refused:
            await run_with_timeout(pair.fly(799), 300.0)
        reasons = str(refused.value)
        figure = f"authentication pool too low for a pass: {min(left)} messages left"
        assert reasons.count(figure) == 2, reasons
        assert pair.ogs.channel.passes_refused == 1
        assert pair.payload.links[pair.scenario.station.name].channel.passes_refused == 1
