"""A child process entering and handing out keys is killed (SIGKILL) at random points: every
committed block is still there, whole, and no key is ever handed out twice."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from satqkd_runtime.key_management import KeyManagement

# Enters block after block (4 keys of 64 bits each), hands two keys to a master and one of them
# to its slave; prints each hand-over after it returned (so after its commit).
_CHILD = """
import hashlib, sys, uuid
from satqkd_runtime.key_management import KeyManagement
kms = KeyManagement(sys.argv[1], key_size_bits=64)
n = len(kms.blocks())
print("R", flush=True)
while True:
    n += 1
    block = str(uuid.UUID(int=n, version=4))
    kms.add_block(block, hashlib.sha256(block.encode()).digest(), 256, peer="payload",
                  origin="import")
    print("B", block, flush=True)
    keys = kms.deliver_to_master("payload", "alice", "bob", 2)
    for key in keys:
        print("M", key.key_id, key.material.hex(), flush=True)
    (got,) = kms.deliver_to_slave("alice", "bob", [keys[0].key_id])
    print("S", got.key_id, got.material.hex(), flush=True)
"""


def _run_and_kill(directory: Path, lines_first: int, delay_s: float) -> list[list[str]]:
    """Run the child until it printed `lines_first` lines after it is ready, let it work
    `delay_s` more, kill -9; every line it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "R"
    first = [child.stdout.readline() for _ in range(lines_first)]
    time.sleep(delay_s)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    lines = [line.split() for line in first + child.stdout.read().splitlines()]
    return [f for f in lines if f and len(f) == {"R": 1, "B": 2, "M": 3, "S": 3}.get(f[0])]


def _check_after_crashes(directory: Path, runs: int, seed: int) -> None:
    rng = random.Random(seed)
    lines: list[list[str]] = []
    for _ in range(runs):
        lines += _run_and_kill(directory, rng.randrange(0, 12), rng.uniform(0.0, 0.01))
    kms = KeyManagement(directory, key_size_bits=64)
    assert kms.check_integrity() == "ok"
    blocks = {b.block_id for b in kms.blocks()}
    printed = [fields[1] for fields in lines if fields[0] == "B"]
    assert set(printed) <= blocks  # a committed block is never lost
    counts = kms.counts()
    assert sum(counts.values()) == 4 * len(blocks)  # each block whole, carved once
    to_master = [fields[1:] for fields in lines if fields[0] == "M"]
    to_slave = [fields[1:] for fields in lines if fields[0] == "S"]
    assert len({key_id for key_id, _ in to_master}) == len(to_master)  # never twice
    assert len({key_id for key_id, _ in to_slave}) == len(to_slave)
    handed = dict(to_master)
    for key_id, material in to_slave:
        assert handed[key_id] == material  # the slave gets the master's key
        assert kms.state_of(key_id) == "consumed"
    for key_id, _ in to_master:
        assert kms.state_of(key_id) in ("delivered", "consumed")
    # the bits are the block's, at their place
    for block in blocks:
        digest = hashlib.sha256(block.encode()).digest()
        for key_id, material in to_master:
            for index in range(4):
                if key_id == str(uuid.uuid5(_namespace(), f"{block}/64/{index}")):
                    assert material == digest[8 * index : 8 * index + 8].hex()
    # a key the master got but the slave did not is still deliverable to that slave only
    waiting = [k for k, _ in to_master if kms.state_of(k) == "delivered"]
    if waiting:
        (key,) = kms.deliver_to_slave("alice", "bob", waiting[:1])
        assert key.material.hex() == handed[waiting[0]]
    kms.close()


def _namespace() -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "urn:satqkd:key-management")


def test_kill_at_random_points_loses_nothing_committed_and_delivers_once(tmp_path: Path) -> None:
    _check_after_crashes(tmp_path / "kms", runs=5, seed=14)


@pytest.mark.slow
def test_many_kills(tmp_path: Path) -> None:
    _check_after_crashes(tmp_path / "kms", runs=60, seed=1414)
