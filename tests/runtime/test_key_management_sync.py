"""Key management of two KMEs over the same relay block: disjoint shares for their masters, the
outbox of notices kept across a restart, notices applied once, never into the other's share."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from satqkd_runtime.key_management import KeyRefused, NotEnoughKeys, key_id_for
from satqkd_runtime.key_management_sync import (
    Notice,
    NoticeReplayed,
    PairedKeyManagement,
    master_parity,
)

BLOCK = str(uuid.uuid5(uuid.NAMESPACE_URL, "relay-block"))
MATERIAL = bytes((11 * i + 5) % 256 for i in range(8 * 10))  # ten 64-bit keys
A, B = "kme-graz", "kme-xinglong"  # A sorts first: even key indices are A's


def _pair(tmp_path: Path) -> tuple[PairedKeyManagement, PairedKeyManagement]:
    a = PairedKeyManagement(tmp_path / "a", 64, peer="ogs-xinglong", own_kme=A, peer_kme=B)
    b = PairedKeyManagement(tmp_path / "b", 64, peer="ogs-graz", own_kme=B, peer_kme=A)
    a.add_block(BLOCK, MATERIAL, 640, peer="ogs-xinglong", origin="relay")
    b.add_block(BLOCK, MATERIAL, 640, peer="ogs-graz", origin="relay")
    return a, b


def test_the_two_kmes_masters_draw_from_disjoint_shares(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    assert (master_parity(A, B), master_parity(B, A)) == (0, 1)
    assert a.own_available() == b.own_available() == 5
    to_a = a.deliver_to_master("ogs-xinglong", "alice", "bob", 5)
    to_b = b.deliver_to_master("ogs-graz", "dave", "carol", 5)
    assert [k.key_id for k in to_a] == [key_id_for(BLOCK, 64, i) for i in (0, 2, 4, 6, 8)]
    assert [k.key_id for k in to_b] == [key_id_for(BLOCK, 64, i) for i in (1, 3, 5, 7, 9)]
    with pytest.raises(NotEnoughKeys):  # A's share is used up; B's odd keys are not A's
        a.deliver_to_master("ogs-xinglong", "alice", "bob", 1)
    assert a.count(state="available") == 5  # B's share, still there at A
    (notice,) = a.pending_notices()
    assert (notice.action, notice.master_sae, notice.slave_sae) == ("address", "alice", "bob")
    assert notice.key_ids == tuple(k.key_id for k in to_a)


def test_a_notice_applied_at_the_peer_lets_the_slave_fetch_once(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    taken = a.deliver_to_master("ogs-xinglong", "alice", "bob", 2)
    ids = [k.key_id for k in taken]
    with pytest.raises(KeyRefused):  # B refuses ids A has not told it about
        b.deliver_to_slave("alice", "bob", ids)
    (notice,) = a.pending_notices()
    assert b.apply_notice(notice) == 2
    assert b.applied_through() == notice.seq
    assert a.acknowledged(notice.seq) == 1 and a.pending_notices() == []
    assert b.deliver_to_slave("alice", "bob", ids) == taken
    with pytest.raises(KeyRefused):
        b.deliver_to_slave("alice", "bob", ids)
    with pytest.raises(NoticeReplayed) as replay:  # the same notice again: nothing changes
        b.apply_notice(notice)
    assert replay.value.applied_through == notice.seq
    assert {b.state_of(i) for i in ids} == {"consumed"}


def test_a_notice_naming_the_receivers_own_share_is_refused_whole(tmp_path: Path) -> None:
    _, b = _pair(tmp_path)
    theirs = key_id_for(BLOCK, 64, 0)  # A's share
    ours = key_id_for(BLOCK, 64, 1)  # B's: A may not hand it to a master
    for ids in ((theirs, ours), (str(uuid.uuid4()),)):
        with pytest.raises(KeyRefused):
            b.apply_notice(Notice(1, "address", "alice", "bob", ids))
    assert b.state_of(theirs) == b.state_of(ours) == "available"
    assert b.applied_through() == 0  # a refused notice does not use up its number


def test_the_outbox_survives_a_restart_and_a_withdrawal_erases_at_both(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    taken = a.deliver_to_master("ogs-xinglong", "alice", "bob", 3)
    a.close()  # the KME stops between the commit and sending the notice
    a = PairedKeyManagement(tmp_path / "a", 64, peer="ogs-xinglong", own_kme=A, peer_kme=B)
    (address,) = a.pending_notices()
    assert address.key_ids == tuple(k.key_id for k in taken)
    b.apply_notice(address)
    a.acknowledged(address.seq)
    # the peer's confirmation did not come in time: the keys are withdrawn at A, then at B
    ids = [k.key_id for k in taken]
    assert a.withdraw("alice", "bob", ids) == 3
    (void,) = a.pending_notices()
    assert void.action == "void" and void.seq > address.seq
    assert b.apply_notice(void) == 3
    for node in (a, b):
        assert {node.state_of(i) for i in ids} == {"consumed"}
    for name in ("a", "b"):  # erased: the bytes are in no file
        for path in (tmp_path / name).iterdir():
            assert MATERIAL[:8] not in path.read_bytes()


# KME A hands keys to a master and sends each notice to KME B's store (applied, then
# acknowledged at A), block after block; prints each hand-over after its commit.
_CHILD = """
import hashlib, sys, uuid
from satqkd_runtime.key_management_sync import NoticeReplayed, PairedKeyManagement
root = sys.argv[1]
a = PairedKeyManagement(root + "/a", 64, peer="ogs-b", own_kme="kme-a", peer_kme="kme-b")
b = PairedKeyManagement(root + "/b", 64, peer="ogs-a", own_kme="kme-b", peer_kme="kme-a")
def block(i):
    name = str(uuid.UUID(int=i, version=4))
    return name, hashlib.sha512(name.encode()).digest()
n = len(a.blocks())
for i in range(1, n + 1):  # a crash between the two stores' entries
    b.add_block(*block(i), 512, peer="ogs-a", origin="relay")
print("R", flush=True)
while True:
    for notice in a.pending_notices():
        try:
            b.apply_notice(notice)
        except NoticeReplayed:
            pass
        a.acknowledged(notice.seq)
    n += 1
    a.add_block(*block(n), 512, peer="ogs-b", origin="relay")
    b.add_block(*block(n), 512, peer="ogs-a", origin="relay")
    for key in a.deliver_to_master("ogs-b", "alice", "bob", 3):
        print("M", key.key_id, flush=True)
"""


def test_killed_between_hand_over_notice_and_acknowledgement_the_two_stores_agree(
    tmp_path: Path,
) -> None:
    _kill_and_check(tmp_path, runs=3, seed=37)


@pytest.mark.slow
def test_many_kills_between_hand_over_and_acknowledgement(tmp_path: Path) -> None:
    _kill_and_check(tmp_path, runs=30, seed=3737)


def _kill_and_check(tmp_path: Path, runs: int, seed: int) -> None:
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    rng, printed = random.Random(seed), []
    for _ in range(runs):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "R"
        first = [child.stdout.readline() for _ in range(rng.randrange(0, 10))]
        time.sleep(rng.uniform(0.0, 0.01))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        lines = first + child.stdout.read().splitlines()
        printed += [f[1] for f in (line.split() for line in lines) if len(f) == 2 and f[0] == "M"]
    a = PairedKeyManagement(tmp_path / "a", 64, peer="ogs-b", own_kme="kme-a", peer_kme="kme-b")
    b = PairedKeyManagement(tmp_path / "b", 64, peer="ogs-a", own_kme="kme-b", peer_kme="kme-a")
    assert len(set(printed)) == len(printed) and printed  # each key to a master once
    for notice in a.pending_notices():  # what a restarted KME A sends
        applied = notice.seq <= b.applied_through()
        states = {b.state_of(key_id) for key_id in notice.key_ids}
        assert states == ({"delivered"} if applied else {"available"})
        if applied:
            with pytest.raises(NoticeReplayed):
                b.apply_notice(notice)
        else:
            b.apply_notice(notice)
        a.acknowledged(notice.seq)
    delivered = {
        key_id
        for block in a.blocks()
        for key_id in (key_id_for(block.block_id, 64, i) for i in range(8))
        if a.state_of(key_id) == "delivered"
    }
    assert set(printed) <= delivered  # every key a master got is addressed at B, and no other
    assert delivered == {k for k in delivered | set(printed) if b.state_of(k) == "delivered"}
    assert b.count(state="delivered") == len(delivered) == a.count(state="delivered")
    a.close()
    b.close()
