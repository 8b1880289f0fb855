"""Key management at a node: confirmed QKD keys in blocks, carved into delivery keys with a state.

One SQLite database per node (stdlib `sqlite3`, WAL journal, `synchronous=FULL`: a commit is on
disk when it returns), owner-only (0700 directory, 0600 database; SQLite gives its `-wal` and
`-shm` files the database's mode), `secure_delete` on (freed pages are zeroed).

- A **block** is one confirmed key of a link (a pass's key, later a relayed key) with its
  provenance: the peer, the origin (`pass`, `import`, `relay`), the plan id, the id the key has in
  the node's key store (the same at both ends of the link: each source key enters once) and the
  pass's epsilons.
- The block is carved into **keys** of `key_size_bits` when it enters (the remainder of fewer
  bits is dropped and counted). A key's id is a UUID derived from the block id, the key size and
  the index, so both ends of a link carve the same keys under the same ids.
- A key is `available`, `reserved` (held for a holder such as a relay; released or consumed),
  `delivered` (handed to its master SAE, addressed to one slave SAE) or `consumed` (handed to the
  slave too, or used by its holder: the bits are erased in the same transaction).

Every state change is one `BEGIN IMMEDIATE` transaction, so a crash (power loss, kill -9) at any
point leaves either the state before or after it: a committed key is never lost, and a key is
handed out at most once (a crash after the commit and before the answer reached the SAE loses
that key rather than risking a second delivery).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from satqkd_runtime.keystore import make_private_directory

STATES = ("available", "reserved", "delivered", "consumed")
ORIGINS = ("pass", "import", "relay")
DB_NAME = "keys.sqlite"
MIN_KEY_SIZE_BITS, MAX_KEY_SIZE_BITS = 64, 65536
# name-based key ids (RFC 4122 version 5) in a namespace of their own
_KEY_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:satqkd:key-management")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    block_id TEXT PRIMARY KEY,
    peer TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('pass', 'import', 'relay')),
    plan_id INTEGER,
    eps_sec REAL,
    eps_cor REAL,
    size_bits INTEGER NOT NULL CHECK (size_bits >= 0),
    dropped_bits INTEGER NOT NULL,
    created_unix_s REAL NOT NULL,
    entered_unix_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    block_id TEXT NOT NULL REFERENCES blocks (block_id),
    peer TEXT NOT NULL,
    key_index INTEGER NOT NULL,
    size_bits INTEGER NOT NULL,
    material BLOB,
    state TEXT NOT NULL CHECK (state IN ('available', 'reserved', 'delivered', 'consumed')),
    holder TEXT,
    master_sae TEXT,
    slave_sae TEXT,
    updated_unix_s REAL NOT NULL,
    CHECK ((state = 'consumed') = (material IS NULL))
);
CREATE INDEX IF NOT EXISTS keys_by_state ON keys (peer, size_bits, state, block_id, key_index);
"""


class KeyManagementError(RuntimeError):
    """The key management store cannot do what was asked (the message says what)."""


class NotEnoughKeys(KeyManagementError):
    """Fewer available keys than asked for (nothing was handed out)."""


class KeyRefused(KeyManagementError):
    """A key asked for by id is unknown, not addressed to the caller, or already handed out."""


@dataclass(frozen=True)
class Block:
    """Provenance of a block of confirmed key (never key material)."""

    block_id: str
    peer: str
    origin: str
    plan_id: int | None
    eps_sec: float | None
    eps_cor: float | None
    size_bits: int
    dropped_bits: int
    created_unix_s: float


@dataclass(frozen=True)
class DeliveredKey:
    """One key as handed to an SAE or a holder: its id and its bytes."""

    key_id: str
    material: bytes


def key_id_for(block_id: str, key_size_bits: int, index: int) -> str:
    """Get: the id of key `index` of size `key_size_bits` carved from block `block_id` (the
    same at every node holding the block)."""
    return str(uuid.uuid5(_KEY_ID_NAMESPACE, f"{block_id}/{key_size_bits}/{index}"))


def _check_key_size(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise KeyManagementError(f"key size {bits!r} is not an integer number of bits")
    if bits % 8 or not MIN_KEY_SIZE_BITS <= bits <= MAX_KEY_SIZE_BITS:
        raise KeyManagementError(
            f"key size {bits} bits: must be a multiple of 8 in "
            f"{MIN_KEY_SIZE_BITS}..{MAX_KEY_SIZE_BITS}"
        )
    return bits


def _private_file(path: Path) -> None:
    """Create `path` owner-only if it does not exist, or make it owner-only."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class KeyManagement:
    """The key blocks and delivery keys of one node, in one SQLite database (WAL)."""

    def __init__(self, directory: str | Path, key_size_bits: int = 256) -> None:
        self.directory = Path(directory)
        self.key_size_bits = _check_key_size(key_size_bits)
        make_private_directory(self.directory)
        self.path = self.directory / DB_NAME
        _private_file(self.path)  # SQLite gives new -wal and -shm files this file's mode
        for journal in (
            self.path.with_name(DB_NAME + "-wal"),
            self.path.with_name(DB_NAME + "-shm"),
        ):
            if journal.exists():
                os.chmod(journal, 0o600)
        try:
            # one thread at a time (a server's event loop), not necessarily the one that opened it
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO settings VALUES ('key_size_bits', ?)", (key_size_bits,)
            )
            (carved,) = self._db.execute(
                "SELECT value FROM settings WHERE name = 'key_size_bits'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise KeyManagementError(f"{self.path}: not a usable key database ({exc})") from None
        if carved != key_size_bits:
            self._db.close()
            raise KeyManagementError(
                f"{self.path}: its blocks are carved into {carved}-bit keys, not {key_size_bits}"
            )

    def close(self) -> None:
        """Control: checkpoint the journal into the database and close it."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    def __enter__(self) -> KeyManagement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- entering key -------------------------------------------------------------------------

    def add_block(
        self,
        block_id: str,
        material: bytes,
        size_bits: int,
        *,
        peer: str,
        origin: str,
        plan_id: int | None = None,
        eps_sec: float | None = None,
        eps_cor: float | None = None,
        created_unix_s: float | None = None,
    ) -> bool:
        """Control: enter a confirmed key as a block and carve it into available keys, in one
        transaction; False (nothing changed) if the block is already there. `material` holds
        `size_bits` bits, big-endian bit order (as the key store packs them)."""
        if origin not in ORIGINS:
            raise KeyManagementError(f"origin {origin!r} is not one of {ORIGINS}")
        if not peer:
            raise KeyManagementError("a block needs the peer it is shared with")
        if size_bits < 0 or len(material) != (size_bits + 7) // 8:
            raise KeyManagementError(
                f"block {block_id}: {len(material)} bytes do not hold {size_bits} bits"
            )
        key_bytes = self.key_size_bits // 8
        count = size_bits // self.key_size_bits
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM blocks WHERE block_id = ?", (block_id,)).fetchone():
                return False
            db.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    block_id,
                    peer,
                    origin,
                    plan_id,
                    eps_sec,
                    eps_cor,
                    size_bits,
                    size_bits - count * self.key_size_bits,
                    now if created_unix_s is None else created_unix_s,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO keys (key_id, block_id, peer, key_index, size_bits, material, state,"
                " updated_unix_s) VALUES (?, ?, ?, ?, ?, ?, 'available', ?)",
                (
                    (
                        key_id_for(block_id, self.key_size_bits, i),
                        block_id,
                        peer,
                        i,
                        self.key_size_bits,
                        material[i * key_bytes : (i + 1) * key_bytes],
                        now,
                    )
                    for i in range(count)
                ),
            )
        return True

    # ---- ETSI GS QKD 014 delivery -------------------------------------------------------------

    def deliver_to_master(
        self, peer: str, master_sae: str, slave_sae: str, number: int
    ) -> list[DeliveredKey]:
        """Control: hand `number` available keys of the link to `peer` (oldest first) to the
        master SAE, addressed to `slave_sae`; NotEnoughKeys (nothing handed out) if fewer are
        available. Committed before it returns: each key is handed out at most once."""
        if number < 1:
            raise KeyManagementError(f"number of keys {number} is not positive")
        with self._transaction() as db:
            rows = db.execute(
                "SELECT k.key_id, k.material FROM keys k JOIN blocks b USING (block_id)"
                " WHERE k.peer = ? AND k.size_bits = ? AND k.state = 'available'"
                " ORDER BY b.entered_unix_s, k.block_id, k.key_index LIMIT ?",
                (peer, self.key_size_bits, number),
            ).fetchall()
            if len(rows) < number:
                raise NotEnoughKeys(f"{len(rows)} keys available for {peer}, {number} asked for")
            db.executemany(
                "UPDATE keys SET state = 'delivered', master_sae = ?, slave_sae = ?,"
                " updated_unix_s = ? WHERE key_id = ? AND state = 'available'",
                ((master_sae, slave_sae, time.time(), key_id) for key_id, _ in rows),
            )
        return [DeliveredKey(key_id, bytes(material)) for key_id, material in rows]

    def deliver_to_slave(
        self, master_sae: str, slave_sae: str, key_ids: Sequence[str]
    ) -> list[DeliveredKey]:
        """Control: hand the keys `key_ids` to the slave SAE they were addressed to by
        `master_sae`, and erase them (consumed). KeyRefused (nothing handed out) if any is
        unknown, addressed to another pair, not yet delivered to its master, or consumed."""
        if not key_ids:
            raise KeyManagementError("no key ids given")
        if len(set(key_ids)) != len(key_ids):
            raise KeyRefused("a key id is given twice")
        now = time.time()
        with self._transaction() as db:
            found = []
            for key_id in key_ids:
                row = db.execute(
                    "SELECT material, state, master_sae, slave_sae FROM keys WHERE key_id = ?",
                    (key_id,),
                ).fetchone()
                # one answer for every refusal: an SAE learns nothing about other pairs' keys
                if row is None or row[1] != "delivered" or row[2:] != (master_sae, slave_sae):
                    raise KeyRefused(
                        f"key {key_id} is not a key {master_sae} obtained for {slave_sae}, "
                        "or it was already delivered"
                    )
                found.append(DeliveredKey(key_id, bytes(row[0])))
            db.executemany(
                "UPDATE keys SET state = 'consumed', material = NULL, updated_unix_s = ?"
                " WHERE key_id = ?",
                ((now, key.key_id) for key in found),
            )
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # old pages with the bits: gone
        return found

    # ---- a holder such as a relay -------------------------------------------------------------

    def reserve(self, peer: str, number: int, holder: str) -> list[str]:
        """Control: reserve `number` available keys of the link to `peer` for `holder` (e.g. a
        relay's agreed block); their ids. NotEnoughKeys (nothing reserved) if fewer exist."""
        with self._transaction() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT k.key_id FROM keys k JOIN blocks b USING (block_id)"
                    " WHERE k.peer = ? AND k.size_bits = ? AND k.state = 'available'"
                    " ORDER BY b.entered_unix_s, k.block_id, k.key_index LIMIT ?",
                    (peer, self.key_size_bits, number),
                )
            ]
            if len(ids) < number:
                raise NotEnoughKeys(f"{len(ids)} keys available for {peer}, {number} asked for")
            db.executemany(
                "UPDATE keys SET state = 'reserved', holder = ?, updated_unix_s = ?"
                " WHERE key_id = ?",
                ((holder, time.time(), key_id) for key_id in ids),
            )
        return ids

    def consume_reserved(self, key_ids: Sequence[str], holder: str) -> list[DeliveredKey]:
        """Control: take the keys reserved for `holder` (their bytes) and erase them."""
        with self._transaction() as db:
            found = []
            for key_id in key_ids:
                row = db.execute(
                    "SELECT material FROM keys WHERE key_id = ? AND state = 'reserved'"
                    " AND holder = ?",
                    (key_id, holder),
                ).fetchone()
                if row is None:
                    raise KeyRefused(f"key {key_id} is not reserved for {holder}")
                found.append(DeliveredKey(key_id, bytes(row[0])))
            db.executemany(
                "UPDATE keys SET state = 'consumed', material = NULL, updated_unix_s = ?"
                " WHERE key_id = ?",
                ((time.time(), key.key_id) for key in found),
            )
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return found

    def release(self, key_ids: Sequence[str], holder: str) -> int:
        """Control: make keys reserved for `holder` available again; how many were."""
        with self._transaction() as db:
            return sum(
                db.execute(
                    "UPDATE keys SET state = 'available', holder = NULL, updated_unix_s = ?"
                    " WHERE key_id = ? AND state = 'reserved' AND holder = ?",
                    (time.time(), key_id, holder),
                ).rowcount
                for key_id in key_ids
            )

    def take_available(self, key_ids: Sequence[str], holder: str) -> list[DeliveredKey]:
        """Control: take the named keys for `holder` (a relay) and erase them, all or none:
        KeyRefused (nothing taken) if any is unknown or not available (reserved, delivered or
        consumed)."""
        if not key_ids or len(set(key_ids)) != len(key_ids):
            raise KeyManagementError("key ids: none given, or one given twice")
        now = time.time()
        with self._transaction() as db:
            found = []
            for key_id in key_ids:
                row = db.execute(
                    "SELECT material, state FROM keys WHERE key_id = ?", (key_id,)
                ).fetchone()
                if row is None or row[1] != "available":
                    state = "unknown" if row is None else row[1]
                    raise KeyRefused(f"key {key_id} is {state}, not available")
                found.append(DeliveredKey(key_id, bytes(row[0])))
            db.executemany(
                "UPDATE keys SET state = 'consumed', material = NULL, holder = ?,"
                " updated_unix_s = ? WHERE key_id = ?",
                ((holder, now, key.key_id) for key in found),
            )
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return found

    def address_to_pair(self, key_ids: Sequence[str], master_sae: str, slave_sae: str) -> int:
        """Control: mark available keys as delivered to `master_sae` for `slave_sae` without
        handing them out (the far KME's master took the same key ids), so the slave SAE here
        may fetch them once with dec_keys; all or none (KeyRefused). Get how many."""
        with self._transaction() as db:
            for key_id in key_ids:
                row = db.execute("SELECT state FROM keys WHERE key_id = ?", (key_id,)).fetchone()
                if row is None or row[0] != "available":
                    raise KeyRefused(f"key {key_id} is not available to address")
            db.executemany(
                "UPDATE keys SET state = 'delivered', master_sae = ?, slave_sae = ?,"
                " updated_unix_s = ? WHERE key_id = ?",
                ((master_sae, slave_sae, time.time(), key_id) for key_id in key_ids),
            )
        return len(key_ids)

    def available_indices(self, block_id: str) -> list[int]:
        """Get: the indices of a block's available keys, increasing."""
        rows = self._db.execute(
            "SELECT key_index FROM keys WHERE block_id = ? AND state = 'available'"
            " AND size_bits = ? ORDER BY key_index",
            (block_id, self.key_size_bits),
        )
        return [int(row[0]) for row in rows]

    # ---- reading ------------------------------------------------------------------------------

    def count(self, peer: str | None = None, state: str = "available") -> int:
        """Get: how many keys (of this store's key size) are in `state` (for one peer, if
        given)."""
        if state not in STATES:
            raise KeyManagementError(f"state {state!r} is not one of {STATES}")
        query = "SELECT COUNT(*) FROM keys WHERE state = ? AND size_bits = ?"
        params: tuple[object, ...] = (state, self.key_size_bits)
        if peer is not None:
            query, params = query + " AND peer = ?", (*params, peer)
        return int(self._db.execute(query, params).fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Get: the number of keys in each state (all peers)."""
        found = dict(self._db.execute("SELECT state, COUNT(*) FROM keys GROUP BY state"))
        return {state: int(found.get(state, 0)) for state in STATES}

    def state_of(self, key_id: str) -> str | None:
        """Get: the state of a key, None if there is no such key."""
        row = self._db.execute("SELECT state FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else str(row[0])

    def blocks(self) -> list[Block]:
        """Get: the provenance of every block, oldest first."""
        rows = self._db.execute(
            "SELECT block_id, peer, origin, plan_id, eps_sec, eps_cor, size_bits, dropped_bits,"
            " created_unix_s FROM blocks ORDER BY entered_unix_s, block_id"
        )
        return [Block(*row) for row in rows]

    def has_block(self, block_id: str) -> bool:
        """Get: whether a block is already in the store."""
        query = "SELECT 1 FROM blocks WHERE block_id = ?"
        return self._db.execute(query, (block_id,)).fetchone() is not None

    def peers(self) -> list[str]:
        """Get: the peers the store holds blocks for."""
        return [row[0] for row in self._db.execute("SELECT DISTINCT peer FROM blocks ORDER BY 1")]

    def check_integrity(self) -> str:
        """Get: SQLite's integrity check ('ok' when the database is sound)."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
