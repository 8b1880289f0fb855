"""The plan ids a node has accepted, kept across restarts: a plan id is never used twice.

A node records each LOAD_PASS_PLAN it accepts in a named secret of a KeyStore (`plans-seen`,
JSON `{"version": 1, "plan_ids": [...]}`, oldest first), written durably (fsync of the file and
of the directory, through `KeyStore.store_secret`). The payload keeps one record per station
(in that station link's KeyStore), the station one in its own. Only the last `KEEP` ids are
kept (plan ids grow per mission: an id that old is long past). A record that cannot be read
or parsed raises KeyStoreError: the daemon then refuses plans rather than risk reusing one.
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

    def ids(self) -> list[int]:
        """Get: the recorded plan ids, oldest first; KeyStoreError if the record is corrupt."""
        if not self.keystore.has_secret(self.name):
            return []
        raw = self.keystore.load_secret(self.name)
        try:
            doc = json.loads(raw.decode())
            ids = doc["plan_ids"]
            if doc.get("version") != _VERSION or not isinstance(ids, list):
                raise ValueError("unknown layout")
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise ValueError("a plan id is not an integer")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyStoreError(f"plan record {self.name!r} corrupt: {exc}") from None
        return ids

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
        """Control: record `plan_id` durably (keeping the last `keep`); KeyStoreError if it
        was recorded before or the record cannot be read or written."""
        plan_id = int(plan_id)
        ids = self.ids()
        if plan_id in ids:
            raise KeyStoreError(already_loaded(plan_id))
        ids = [*ids, plan_id][-self.keep :]
        doc = {"version": _VERSION, "plan_ids": ids}
        try:
            self.keystore.store_secret(self.name, json.dumps(doc).encode(), durable=True)
        except OSError as exc:
            raise KeyStoreError(f"plan {plan_id} not recorded: {exc}") from None
