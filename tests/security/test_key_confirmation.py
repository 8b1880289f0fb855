"""Keys both ends hold, or neither, whatever message is lost (security issue, finding 8).

On a037fab the payload stored its key before PA_SEED with no timeout and the station confirmed
its own at once, so a lost message left one end with a key the other never had. Now a key is
pending until the three-way confirmation (PA_SEED, KEY_STORED, KEY_CONFIRMED) completes, and an
end that gives up deletes its pending key and tells the other, which deletes its copy too.
Also pinned: every random value of post-processing is drawn from the entropy source at the
length it is credited with.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import pytest

from satqkd_core.codec import decode_envelope
from satqkd_core.privacy_amplification import toeplitz_seed_bits
from satqkd_core.verification import verification_hash_key_words
from tests.ogs import test_ldpc_session as rig

ldpc_pass = rig.ldpc_pass


async def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.mark.parametrize("lost", ["PA_SEED", "KEY_STORED", "KEY_CONFIRMED"])
async def test_a_lost_confirmation_message_leaves_no_key_at_either_end(
    ldpc_pass: Callable[..., Awaitable[rig.Pass]], lost: str
) -> None:
    block = rig.make_block(900_000, qber_x=0.011, qber_z=0.011, seed=31)
    p = await ldpc_pass(block, timeout_s=2.0)  # the station's reply timeout

    def drop(topic: str, data: bytes) -> list[bytes]:
        return [] if decode_envelope(data).spec.name == lost else [data]

    p.bus.tamper = drop
    await p.sift(block)
    await p.ogs.post_process()
    # the station gave up waiting and said so (ABORT); the payload, told, drops its copy
    assert p.ogs.result.abort_reason is not None and "did not send" in p.ogs.result.abort_reason
    assert "ABORT" in p.bus.names(rig.UP)
    assert await _until(lambda: p.payload_store.key_ids() == [], 5.0), "payload kept its key"
    assert p.ogs_store.key_ids() == []
    assert p.ogs.result.key_id is None
    outcome = p.payload_session.outcome
    assert not outcome.confirmed
    assert outcome.abort_reason is not None


def test_every_random_value_is_drawn_at_its_credited_length(good_ldpc_exchange: rig.Pass) -> None:
    p = good_ldpc_exchange  # 1.1 M detections at Q 1.1 %, block seed 1 (tests/conftest.py)
    result = p.ogs.result
    assert result.key_id is not None
    n, m = result.pa_input_bits, result.pa_output_bits
    drawn = p.payload_session.entropy.drawn_bytes  # type: ignore[attr-defined]
    # the Toeplitz seed: n + m - 1 fresh bits, not an expansion of a short seed
    assert drawn["pa-seed"] == math.ceil(toeplitz_seed_bits(n, m) / 8)
    # the verification hash: 8 bytes per GF(2^61 - 1) word (a rare rejection draws again)
    words = verification_hash_key_words(1e-15, n)
    assert drawn["verification-key"] in (8 * words, 8 * words + 8)
    # the LDPC fill: one fresh bit per punctured symbol of every frame
    assert drawn["ldpc-fill"] > 0
    assert drawn["key-id"] == 16
    station = p.ogs.entropy.drawn_bytes  # type: ignore[attr-defined]
    assert station["ldpc-seed"] == 8
