"""The plan ids a node has accepted, kept across restarts: a plan id is never used twice.

A node records each LOAD_PASS_PLAN it accepts in a named secret of a KeyStore (`plans-seen`,
JSON `{"version": 1, "plan_ids": [...], "open": [...]}`, oldest first), written durably (fsync
of the file and of the directory, through `KeyStore.store_secret`). The payload keeps one
record per station (in that station link's KeyStore), the station one in its own. Only the
last `KEEP` ids are kept (plan ids grow per mission: an id that old is long past).

Open passes. `record` also marks the plan open; the daemon `close`s it when the pass has ended
at this end (key confirmed or pass aborted) and its session is released. A plan still open when
a daemon starts was running when the previous run died (kill -9, power loss): the daemon
abandons it at both ends (decision 0021). A record without `"open"` (older layout) has none.

A record that cannot be read or parsed raises KeyStoreError, and `refusal` refuses every plan
rather than risk reusing one, until `recover` (called by a daemon at start and when a plan is
refused for it) moves the file into the key store's `quarantine/` and starts a new record.
"""

from __future__ import annotations

import json

from satqkd_runtime.keystore import KeyStore, KeyStoreError

SECRET = "plans-seen"
KEEP = 4096
_VERSION = 1


def already_loaded(plan_id: int) -> str:
    """Get: the refusal for a plan id the registry holds."""
    return f"plan {plan_id} was already loaded (before a restart?)"


class PlanRegistry:
    """The accepted plan ids in one KeyStore; reads the disk at each call (no cache), so a
    new object, or a restarted daemon, sees what an earlier one recorded."""

    def __init__(self, keystore: KeyStore, keep: int = KEEP, name: str = SECRET) -> None:
        if keep < 1:
            raise ValueError("keep at least one plan id")
        self.keystore = keystore
        self.keep = keep
        self.name = name

    def _read(self) -> tuple[list[int], list[int]]:
        """(recorded ids, open ids), oldest first; KeyStoreError if the record is corrupt."""
        if not self.keystore.has_secret(self.name):
            return [], []
        raw = self.keystore.load_secret(self.name)
        try:
            doc = json.loads(raw.decode())
            ids = doc["plan_ids"]
            still_open = doc.get("open", [])
            if doc.get("version") != _VERSION or not isinstance(ids, list):
                raise ValueError("unknown layout")
            if not isinstance(still_open, list):
                raise ValueError("open plans are not a list")
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids + still_open):
                raise ValueError("a plan id is not an integer")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyStoreError(f"plan record {self.name!r} corrupt: {exc}") from None
        return ids, still_open

    def _write(self, ids: list[int], still_open: list[int], plan_id: int) -> None:
        doc = {"version": _VERSION, "plan_ids": ids[-self.keep :], "open": still_open}
        try:
            self.keystore.store_secret(self.name, json.dumps(doc).encode(), durable=True)
        except OSError as exc:
            raise KeyStoreError(f"plan {plan_id} not recorded: {exc}") from None

    def ids(self) -> list[int]:
        """Get: the recorded plan ids, oldest first; KeyStoreError if the record is corrupt."""
        return self._read()[0]

    def open_ids(self) -> list[int]:
        """Get: the plans recorded and not yet closed (at start: the passes the previous run
        left open when it died), oldest first; KeyStoreError if the record is corrupt."""
        return self._read()[1]

    def close(self, plan_id: int) -> None:
        """Control: mark a plan's pass ended at this end (durably); nothing if it is not open."""
        ids, still_open = self._read()
        if int(plan_id) in still_open:
            self._write(ids, [i for i in still_open if i != int(plan_id)], int(plan_id))

    def abandon_open(self) -> list[tuple[int, list[str]]]:
        """Control: end every plan left open by a run that died: destroy each key it stored
        (pending or confirmed: the peer is told to do the same) and close it. Get (plan id,
        ids of the keys destroyed) per plan; KeyStoreError if the record is corrupt."""
        abandoned = []
        for plan_id in self.open_ids():
            abandoned.append((plan_id, self.keystore.discard_plan(plan_id)))
            self.close(plan_id)
        return abandoned

    def recover(self) -> str | None:
        """Control: a record that cannot be read is moved into the key store's `quarantine/`
        (kept, never deleted) and a new, empty one begins; get one line saying so, or None if
        the record was sound. (Past plan ids are then unknown; a plan whose window has started
        is refused anyway by the plan rules both ends share.)"""
        try:
            self._read()
        except KeyStoreError as exc:
            where = self.keystore.quarantine_secret(self.name)
            return f"{exc}: moved to {where.name} in quarantine/, a new record begins"
        return None

    def seen(self, plan_id: int) -> bool:
        """Get: whether `plan_id` was recorded (by this or an earlier run)."""
        return int(plan_id) in self.ids()

    def refusal(self, plan_id: int) -> str | None:
        """Get: why `plan_id` cannot be loaded (seen before, or the record unreadable), None
        if it is new."""
        try:
            if self.seen(plan_id):
                return already_loaded(int(plan_id))
        except KeyStoreError as exc:
            return f"plan record unreadable, no plan accepted until repaired: {exc}"
        return None

    def record(self, plan_id: int) -> None:
        """Control: record `plan_id` durably (keeping the last `keep`), and open; KeyStoreError
        if it was recorded before or the record cannot be read or written."""
        plan_id = int(plan_id)
        ids, still_open = self._read()
        if plan_id in ids:
            raise KeyStoreError(already_loaded(plan_id))
        self._write([*ids, plan_id], [*still_open, plan_id], plan_id)
