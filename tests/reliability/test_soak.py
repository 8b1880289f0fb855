"""Soak: 20 passes one after another on the same two daemons (a real Mosquitto, simulated
time), a seeded random fault in most of them (broker outages at any phase, a daemon killed at
any key-store step and restarted). Every pass ends at both ends with the same keys (none
lost at one end only, none pending, nothing open), and the test process neither leaks file
descriptors nor grows its memory from pass to pass. `pytest -m soak` (outside the default run);
test_faults_in_simulated_time.py's default test is its short variant (three passes)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from satqkd_core import rng
from tests.reliability.sim_pair import PHASES, Crash, Outage, SimPair, run_with_timeout

pytestmark = [pytest.mark.soak, pytest.mark.mosquitto, pytest.mark.timeout(3600)]

PASSES = 20
SEED = 11
CRASHES = [
    ("station", "PE_COUNTS"),
    ("payload", "EC_REPLY"),
    ("payload", "PA_SEED"),
    ("station", "KEY_STORED"),
    ("payload", "KEY_CONFIRMED"),
    ("station", "event:KEY_STORED"),
]
FD_SLACK = 4  # sockets a reconnecting client may hold for a moment
RSS_GROWTH_MIB = 64.0  # after warm-up (numba caches, first pass's imports)


def _faults(seed: int, n: int) -> list[Outage | Crash | None]:
    """Get: a seeded sequence of faults, one per pass (None: a clean pass), each kind once
    in the first passes so every kind is flown, the rest drawn."""
    generator = np.random.default_rng(rng.derive_key(seed, "soak/faults"))
    faults: list[Outage | Crash | None] = []
    for k in range(n):
        draw = generator.random()
        if k % 4 == 3 or draw < 0.2:
            faults.append(None)
        elif draw < 0.6:
            phase = PHASES[int(generator.integers(len(PHASES)))]
            faults.append(Outage(phase, float(generator.choice([5.0, 20.0, 40.0, 120.0]))))
        else:
            victim, before = CRASHES[int(generator.integers(len(CRASHES)))]
            faults.append(Crash(victim, before))
    return faults


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mib() -> float:
    """Get: resident memory after a collection, with freed heap handed back to the system
    (else the allocator's free lists would look like growth)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_twenty_passes_with_random_faults(
    mosquitto_factory: Callable[..., object], tmp_path: Path
) -> None:
    broker = mosquitto_factory(persistence=True)
    faults = _faults(SEED, PASSES)
    keys = 0
    async with SimPair(broker, tmp_path, seed=SEED) as pair:
        baseline: tuple[int, float] | None = None
        for k, fault in enumerate(faults):
            end = await run_with_timeout(pair.fly(500 + k, fault), 300.0)
            keys += end.ogs_key_id is not None
            open_now = len(pair.ogs.sessions) + len(pair.payload.links["xinglong"].sessions)
            print(
                f"\npass {k} {fault}: {end.key_bits} bits "
                f"({end.ogs_key_id or end.ogs_abort}); fds {_fds()}, rss {_rss_mib():.0f} MiB, "
                f"open sessions {open_now}"
            )
            assert open_now == 0
            if k == 2:
                baseline = (_fds(), _rss_mib())
        assert baseline is not None
        assert _fds() <= baseline[0] + FD_SLACK, (baseline, _fds())
        assert _rss_mib() <= baseline[1] + RSS_GROWTH_MIB, (baseline, _rss_mib())
        # the confirmed keys are the same at both ends, one per pass that made one
        assert pair.payload_store.key_ids() == pair.ogs_store.key_ids()
        assert len(pair.ogs_store.key_ids()) == keys
    assert keys >= 3, "most faults cost their pass's key, but the clean passes make keys"
