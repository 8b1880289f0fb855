"""Key management of a node whose keys are delivered through two KMEs (docs/key-delivery.md,
"Two KMEs"): the station at each end of a link (a relayed pair of stations) runs its own ETSI
GS QKD 014 server over the same blocks under the same key ids.

- **Partition**: of every block shared with the peer, the KME whose id sorts first may hand the
  keys of even index to its master SAEs, the other those of odd index. The two never choose the
  same key, whatever the timing, without a message between them.
- **Outbox**: a key handed to a master here is, in the same transaction, queued as a numbered
  notice (`address`: these ids went to master M for slave S) for the peer KME; a notice leaves
  the outbox when the peer acknowledged it. A `void` notice tells the peer to erase keys whose
  hand-over here was withdrawn (the peer did not confirm in time).
- **Applied notices**: a notice from the peer is applied in one transaction with its sequence
  number, so a notice applied once is refused when it comes again (a replay, or a resend after
  a lost acknowledgement: the sender reads `applied_through` and forgets it). The ids of an
  `address` notice must be available keys of the peer's partition.

Every change is one SQLite transaction, as in `key_management`: a crash leaves the state before
or after it, a notice is never lost once its keys were handed out, and never applied twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from satqkd_runtime.key_management import (
    DeliveredKey,
    KeyManagement,
    KeyManagementError,
    KeyRefused,
    NotEnoughKeys,
)

ACTIONS = ("address", "void")

_SYNC_SCHEMA = """
CREATE TABLE IF NOT EXISTS kme_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_kme TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('address', 'void')),
    master_sae TEXT NOT NULL,
    slave_sae TEXT NOT NULL,
    key_ids TEXT NOT NULL,
    created_unix_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kme_applied (peer_kme TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class NoticeReplayed(KeyManagementError):
    """A notice whose sequence number was applied already (nothing changed)."""

    def __init__(self, seq: int, applied_through: int) -> None:
        super().__init__(f"notice {seq} replayed: notices through {applied_through} are applied")
        self.applied_through = applied_through


@dataclass(frozen=True)
class Notice:
    """One numbered notice of the outbox (key ids only, never key material)."""

    seq: int
    action: str
    master_sae: str
    slave_sae: str
    key_ids: tuple[str, ...]


def master_parity(own_kme: str, peer_kme: str) -> int:
    """Get: the key index parity (0 even, 1 odd) whose keys `own_kme` may hand to masters."""
    if own_kme == peer_kme:
        raise KeyManagementError(f"a KME ({own_kme}) cannot be its own peer")
    return 0 if own_kme < peer_kme else 1


class PairedKeyManagement(KeyManagement):
    """The key management store of one of two KMEs serving the keys shared with `peer`."""

    def __init__(
        self,
        directory: str | Path,
        key_size_bits: int,
        *,
        peer: str,
        own_kme: str,
        peer_kme: str,
    ) -> None:
        super().__init__(directory, key_size_bits)
        self.peer, self.own_kme, self.peer_kme = peer, own_kme, peer_kme
        self.parity = master_parity(own_kme, peer_kme)
        self._db.executescript(_SYNC_SCHEMA)

    # ---- this KME's masters -------------------------------------------------------------------

    def deliver_to_master(
        self, peer: str, master_sae: str, slave_sae: str, number: int
    ) -> list[DeliveredKey]:
        """Control: as `KeyManagement.deliver_to_master`, from this KME's partition only, and
        queue the `address` notice for the peer KME in the same transaction."""
        if peer != self.peer:
            raise KeyManagementError(f"this KME serves keys shared with {self.peer}, not {peer}")
        if number < 1:
            raise KeyManagementError(f"number of keys {number} is not positive")
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT k.key_id, k.material FROM keys k JOIN blocks b USING (block_id)"
                " WHERE k.peer = ? AND k.size_bits = ? AND k.state = 'available'"
                " AND k.key_index % 2 = ?"
                " ORDER BY b.entered_unix_s, k.block_id, k.key_index LIMIT ?",
                (peer, self.key_size_bits, self.parity, number),
            ).fetchall()
            if len(rows) < number:
                raise NotEnoughKeys(
                    f"{len(rows)} keys of this KME's share available for {peer}, {number} asked for"
                )
            ids = [key_id for key_id, _ in rows]
            db.executemany(
                "UPDATE keys SET state = 'delivered', master_sae = ?, slave_sae = ?,"
                " updated_unix_s = ? WHERE key_id = ?",
                ((master_sae, slave_sae, now, key_id) for key_id in ids),
            )
            self._queue(db, "address", master_sae, slave_sae, ids, now)
        return [DeliveredKey(key_id, bytes(material)) for key_id, material in rows]

    def withdraw(self, master_sae: str, slave_sae: str, key_ids: Sequence[str]) -> int:
        """Control: erase keys handed to `master_sae` here whose answer is withdrawn (the peer
        did not confirm them) and queue a `void` notice so the peer erases them too; how many."""
        now = time.time()
        with self._transaction() as db:
            erased = sum(
                db.execute(
                    "UPDATE keys SET state = 'consumed', material = NULL, updated_unix_s = ?"
                    " WHERE key_id = ? AND state = 'delivered' AND master_sae = ?"
                    " AND slave_sae = ?",
                    (now, key_id, master_sae, slave_sae),
                ).rowcount
                for key_id in key_ids
            )
            self._queue(db, "void", master_sae, slave_sae, list(key_ids), now)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return erased

    def _queue(
        self,
        db: sqlite3.Connection,
        action: str,
        master: str,
        slave: str,
        ids: list[str],
        now: float,
    ) -> None:
        db.execute(
            "INSERT INTO kme_outbox (peer_kme, action, master_sae, slave_sae, key_ids,"
            " created_unix_s) VALUES (?, ?, ?, ?, ?, ?)",
            (self.peer_kme, action, master, slave, json.dumps(ids), now),
        )

    def own_available(self) -> int:
        """Get: how many available keys of the peer's blocks this KME may hand to masters."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM keys WHERE peer = ? AND size_bits = ? AND state = 'available'"
            " AND key_index % 2 = ?",
            (self.peer, self.key_size_bits, self.parity),
        ).fetchone()
        return int(row[0])

    # ---- the outbox ---------------------------------------------------------------------------

    def pending_notices(self) -> list[Notice]:
        """Get: the notices the peer KME has not acknowledged, oldest first."""
        rows = self._db.execute(
            "SELECT seq, action, master_sae, slave_sae, key_ids FROM kme_outbox"
            " WHERE peer_kme = ? ORDER BY seq",
            (self.peer_kme,),
        )
        return [Notice(s, a, m, sl, tuple(json.loads(ids))) for s, a, m, sl, ids in rows]

    def acknowledged(self, through_seq: int) -> int:
        """Control: forget the notices through `through_seq` (the peer applied them)."""
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM kme_outbox WHERE peer_kme = ? AND seq <= ?",
                (self.peer_kme, through_seq),
            ).rowcount

    # ---- notices from the peer ----------------------------------------------------------------

    def applied_through(self) -> int:
        """Get: the sequence number of the last notice of the peer applied here (0: none)."""
        row = self._db.execute(
            "SELECT seq FROM kme_applied WHERE peer_kme = ?", (self.peer_kme,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def apply_notice(self, notice: Notice) -> int:
        """Control: apply a notice of the peer KME with its sequence number, all or nothing;
        how many keys changed. NoticeReplayed if its number is not above the last applied;
        KeyRefused if an `address` names a key that is not an available key of the peer's
        partition of a block shared with the peer (nothing changes)."""
        if notice.action not in ACTIONS:
            raise KeyManagementError(f"action {notice.action!r} is not one of {ACTIONS}")
        if not notice.key_ids or len(set(notice.key_ids)) != len(notice.key_ids):
            raise KeyManagementError("key ids: none given, or one given twice")
        now = time.time()
        with self._transaction() as db:
            last = self.applied_through()
            if notice.seq <= last:
                raise NoticeReplayed(notice.seq, last)
            changed = 0
            for key_id in notice.key_ids:
                row = db.execute(
                    "SELECT peer, key_index, state, master_sae, slave_sae FROM keys"
                    " WHERE key_id = ? AND size_bits = ?",
                    (key_id, self.key_size_bits),
                ).fetchone()
                if row is None or row[0] != self.peer or row[1] % 2 == self.parity:
                    raise KeyRefused(f"key {key_id} is not a key {self.peer_kme} may deliver")
                changed += self._apply_one(db, notice, key_id, row[2], tuple(row[3:]), now)
            db.execute(
                "INSERT INTO kme_applied VALUES (?, ?) ON CONFLICT (peer_kme)"
                " DO UPDATE SET seq = excluded.seq",
                (self.peer_kme, notice.seq),
            )
        if notice.action == "void":
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changed

    @staticmethod
    def _apply_one(
        db: sqlite3.Connection,
        notice: Notice,
        key_id: str,
        state: str,
        pair: tuple[str, ...],
        now: float,
    ) -> int:
        run = db.execute
        if notice.action == "address":
            if state != "available":
                raise KeyRefused(f"key {key_id} is {state}, not available to address")
            run(
                "UPDATE keys SET state = 'delivered', master_sae = ?, slave_sae = ?,"
                " updated_unix_s = ? WHERE key_id = ?",
                (notice.master_sae, notice.slave_sae, now, key_id),
            )
            return 1
        # void: the peer withdrew these keys; erase them unless the slave already took them
        if state not in ("available", "delivered") or (
            state == "delivered" and pair != (notice.master_sae, notice.slave_sae)
        ):
            return 0  # consumed already, or held by someone else here
        run(
            "UPDATE keys SET state = 'consumed', material = NULL, updated_unix_s = ?"
            " WHERE key_id = ?",
            (now, key_id),
        )
        return 1
