"""A daemon repairs its key stores when it starts: crash leftovers go, a corrupt entry is
quarantined and evented, pending keys of the previous run are discarded, the rest is served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from satqkd_runtime.keystore import KeyStore
from tests.security.test_pattern_per_pass import _payload

KEY_A = "00000000-0000-4000-8000-00000000000a"
KEY_B = "00000000-0000-4000-8000-00000000000b"
KEY_C = "00000000-0000-4000-8000-00000000000c"


async def test_the_payload_repairs_its_key_store_at_start(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys" / "xinglong")
    store.store(KEY_A, np.ones(256, np.uint8), "xinglong", 1, 1.0)
    store.confirm(KEY_A)
    store.store(KEY_B, np.tile([1, 0], 64).astype(np.uint8), "xinglong", 2, 2.0)  # pending
    (store.directory / f"{KEY_C}.json").write_text("{not json")  # corrupt metadata
    (store.directory / f"{KEY_C}.key").write_bytes(b"\x55" * 32)
    (store.directory / f"{KEY_A}.json.tmp").write_text("{}")  # a crash's leftover
    daemon, *_ = await _payload(tmp_path)
    served = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10.0):
            while "KEY_DISCARDED" not in daemon.runtime.counters.events:
                await asyncio.sleep(0.01)
        events = daemon.runtime.counters.events
        assert events["KEY_STORE_RECOVERED"] >= 2  # the leftover and the quarantined entry
        assert events["KEY_DISCARDED"] == 1  # the pending key of the previous run
        assert store.key_ids() == [KEY_A] and store.total_bits() == 256
        assert (store.directory / "quarantine" / f"{KEY_C}.json").exists()
        assert not (store.directory / f"{KEY_A}.json.tmp").exists()
    finally:
        served.cancel()
        await asyncio.gather(served, return_exceptions=True)
