"""Cascade between the payload daemon and the station's session with compact EC_QUERY rows
(satqkd_core.cascade_messages), over authenticated QKD channels on an in-memory bus; the
harness (synthetic block, both ends, loopback bus) is test_ldpc_session's."""

from __future__ import annotations

import asyncio

import numpy as np

from satqkd_core.codec import decode_envelope
from tests.ogs.test_ldpc_session import (
    DOWN,
    PLAN_ID,
    UP,
    _assert_same_key_at_both_ends,
    ldpc_pass,
    make_block,
)
from tests.protocol_params import jinan1_params

__all__ = ["ldpc_pass"]  # the fixture, used by name below


async def test_malformed_queries_are_refused_counted_and_the_pass_ends_with_a_key(
    ldpc_pass,
) -> None:
    block = make_block(900_000, qber_x=0.011, qber_z=0.011, seed=6)
    p = await ldpc_pass(block, params=jinan1_params("cascade"))
    injected: list[bytes] = []

    async def misbehave() -> None:
        # authentic (signed by the station's channel) but malformed queries, once the
        # payload has answered the first round: a truncated varint, rows past the key
        while "EC_REPLY" not in p.bus.names(DOWN):
            await asyncio.sleep(0.001)
        for query in (b"\x02\x01\x00\x01\x80", b"\x02\x01\x00\x01\xff\xff\xff\x7f\x00"):
            await p.ogs.channel.send(
                "EC_QUERY",
                plan_id=PLAN_ID,
                round=1,
                permutation_seed=1,
                passes=16,
                qber_estimate=0.01,
                query=query,
            )
            injected.append(query)

    helper = asyncio.create_task(misbehave())
    await p.run(block)
    await helper
    _assert_same_key_at_both_ends(p)
    assert len(injected) == 2
    assert p.payload.runtime.counters.qkd_rejected == 2
    rejected = p.bus.events("payload")
    assert rejected.count("QKD_MESSAGE_REJECTED") == 2
    assert p.ogs_runtime.counters.qkd_rejected == 0
    # the station's own queries: compact rows, the same leak at both ends (EC_DONE agreed)
    up = [decode_envelope(d).fields for t, d in p.bus.published if t == UP]
    down = [decode_envelope(d).fields for t, d in p.bus.published if t == DOWN]
    queries = [f["query"] for f in up if "query" in f and f["query"] not in injected]
    rows = sum(int(f["n"]) for f in down if "parities" in f)
    result = p.ogs.result
    assert len(queries) == result.ec_rounds and rows > 1000
    assert sum(len(q) for q in queries) < 4 * rows  # three int64 (24 bytes) a row before
    assert result.leak_ec_bits == 2 * rows + 15  # both directions (decision 0018)
    assert np.isfinite(result.leak_ec_bits / max(result.ec_input_bits, 1))
