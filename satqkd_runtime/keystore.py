"""Owner-only key storage: one directory per node, one file per key, metadata beside it.

Key bits are stored packed (big-endian bit order) in `<key_id>.key` with mode 0600 inside a
0700 directory; `<key_id>.json` holds metadata only (never key material). A key is `pending`
until the peer confirms it holds the same key, then `confirmed`.

Crash safety. Every file is written to `<name>.tmp`, fsynced, renamed over the old one with
`os.replace`, and then the directory itself is fsynced: the rename (and an unlink) is a change
of the directory, and without that second fsync a crash can undo it even though the file's
data reached the disk. A write with `durable=False` skips both fsyncs. `discard` destroys a key:
its bits are overwritten with zeros and fsynced before the files are unlinked (on a
copy-on-write file system or an SSD the old blocks may survive below the file system; full
disk encryption covers that). A crash between the zeroing and the unlinks leaves a zeroed key
that its metadata still describes: `recover` quarantines a key file of 64 bits or more that is
all zeros (a real key is all zeros with probability 2**-64).

Recovery. A crash in `store`, `confirm` or `discard` can leave `*.tmp` files, a key file without
metadata, or metadata without a key file; a damaged disk can leave metadata that does not parse
or does not match its key file. Readers (`key_ids` and everything built on it) skip any entry
that is not consistent and remember it (`skipped`), so housekeeping keeps running; `recover`,
called by a daemon at start (before any key is being written), cleans the store up: leftovers
and orphans are removed (key bits zeroed first), corrupt entries are moved to `quarantine/`
(never deleted), and it returns what it did, by key id, without key material.

Counting. `total_bits` and `digest` count confirmed keys only (the keys both ends hold); pass
`state="pending"` or `state=None` (all) to count others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

_KEY_ID = re.compile(r"^[0-9a-f-]{36}$")
_STATES = ("pending", "confirmed")
QUARANTINE = "quarantine"
_ZEROED_MIN_BITS = 64  # an all-zero key file this long is a discard cut short, not a key

log = logging.getLogger("satqkd.keystore")


class KeyStoreError(RuntimeError):
    """The key store cannot do what was asked (the message says what)."""


@dataclass(frozen=True)
class KeyMetadata:
    """What is known about a stored key, without the key."""

    key_id: str
    key_bits: int
    peer: str
    plan_id: int
    created_unix_s: float
    state: str


_FIELD_TYPES = {"key_id": str, "key_bits": int, "peer": str, "plan_id": int}


def _parse_metadata(text: str, key_id: str) -> KeyMetadata:
    """The metadata in `text`, checked field by field; ValueError saying what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise ValueError("metadata is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ValueError("metadata is not a JSON object")
    names = {f.name for f in fields(KeyMetadata)}
    if set(raw) != names:
        raise ValueError(f"metadata fields {sorted(raw)} are not {sorted(names)}")
    for name, kind in _FIELD_TYPES.items():
        if not isinstance(raw[name], kind) or isinstance(raw[name], bool):
            raise ValueError(f"metadata field {name} is not a {kind.__name__}")
    created = raw["created_unix_s"]
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise ValueError("metadata field created_unix_s is not a number")
    if raw["key_id"] != key_id:
        raise ValueError("metadata names another key id")
    if raw["key_bits"] < 0:
        raise ValueError("metadata key_bits is negative")
    if raw["state"] not in _STATES:
        raise ValueError(f"metadata state is not one of {_STATES}")
    return KeyMetadata(**{**raw, "created_unix_s": float(created)})


@dataclass(frozen=True)
class RecoveryReport:
    """What `KeyStore.recover` did, by file name and key id; never key material."""

    removed_tmp: tuple[str, ...] = ()  # names of *.tmp leftovers of interrupted writes
    destroyed_orphan_keys: tuple[str, ...] = ()  # key ids: key file without metadata
    removed_orphan_metadata: tuple[str, ...] = ()  # key ids: metadata without key file
    quarantined: tuple[tuple[str, str], ...] = ()  # (key id, why) moved to quarantine/
    ignored: tuple[str, ...] = ()  # names of files the store does not own, left alone

    @property
    def changed(self) -> bool:
        """Get: whether recovery changed anything."""
        return bool(
            self.removed_tmp
            or self.destroyed_orphan_keys
            or self.removed_orphan_metadata
            or self.quarantined
        )

    def counts(self) -> dict[str, int]:
        """Get: how many entries of each kind recovery handled."""
        return {
            "removed_tmp": len(self.removed_tmp),
            "destroyed_orphan_keys": len(self.destroyed_orphan_keys),
            "removed_orphan_metadata": len(self.removed_orphan_metadata),
            "quarantined": len(self.quarantined),
            "ignored": len(self.ignored),
        }

    def messages(self) -> list[str]:
        """Get: one line per action, for the daemon's events (ids and reasons only)."""
        lines = [f"removed leftover of an interrupted write: {name}" for name in self.removed_tmp]
        lines += [f"key {k} had no metadata: destroyed" for k in self.destroyed_orphan_keys]
        lines += [f"key {k} had metadata only: removed" for k in self.removed_orphan_metadata]
        lines += [f"key {k} quarantined: {why}" for k, why in self.quarantined]
        return lines


def fsync_directory(directory: Path) -> None:
    """Make the entries of `directory` durable (a rename or an unlink done in it)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_private_directory(directory: Path) -> None:
    """Create `directory` owner-only (0700), and every missing parent with it.

    A key store's directory is always 0700; parents it had to create are 0700 too, so a
    freshly made key tree does not even list its stations' names to other users. Parents that
    already existed are left as they are.
    """
    missing = [parent for parent in (directory, *directory.parents) if not parent.exists()]
    for parent in reversed(missing):
        parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(parent, 0o700)  # mkdir's mode is masked by the umask
    os.chmod(directory, 0o700)


def _tmp_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".tmp")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_private(path: Path, data: bytes, durable: bool = True) -> None:
    tmp = _tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        # the rename lives in the directory: without this a crash can undo it
        fsync_directory(path.parent)


def _overwrite_with_zeros(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        _write_all(fd, bytes(os.fstat(fd).st_size))
        os.fsync(fd)
    finally:
        os.close(fd)


_ZEROS = bytes(1 << 20)


def erase_file(path: Path, overwrite_below_bytes: int) -> None:
    """Control: delete a file holding secret bits, overwriting it with zeros (synced) first
    when it is smaller than `overwrite_below_bytes` (a larger one is only unlinked: on a
    journaling or copy-on-write file system or an SSD an overwrite does not reach the old
    blocks anyway); no error if it is already gone."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        size = path.stat().st_size
        if size < overwrite_below_bytes:
            with path.open("r+b", buffering=0) as handle:
                for start in range(0, size, len(_ZEROS)):
                    handle.write(_ZEROS[: min(len(_ZEROS), size - start)])
                os.fsync(handle.fileno())
        path.unlink()


class KeyStore:
    """Keys of one node, on disk, readable by the owner only."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        make_private_directory(self.directory)
        self._skipped: dict[str, str] = {}

    def _paths(self, key_id: str) -> tuple[Path, Path]:
        if not _KEY_ID.fullmatch(key_id):
            raise KeyStoreError(f"key id {key_id!r} is not a UUID")
        return self.directory / f"{key_id}.key", self.directory / f"{key_id}.json"

    def store(
        self, key_id: str, key: np.ndarray, peer: str, plan_id: int, now_unix_s: float
    ) -> None:
        """Control: store a new key as pending; refuses to overwrite an existing one."""
        key_path, meta_path = self._paths(key_id)
        if key_path.exists():
            raise KeyStoreError(f"key {key_id} already stored")
        bits = np.asarray(key, dtype=np.uint8)
        _write_private(key_path, np.packbits(bits, bitorder="big").tobytes())
        meta = KeyMetadata(key_id, int(bits.size), peer, int(plan_id), float(now_unix_s), "pending")
        _write_private(meta_path, json.dumps(asdict(meta), indent=1).encode())

    def confirm(self, key_id: str) -> None:
        """Control: mark a pending key confirmed by the peer."""
        meta = self.metadata(key_id)
        updated = KeyMetadata(**{**asdict(meta), "state": "confirmed"})
        _write_private(self._paths(key_id)[1], json.dumps(asdict(updated), indent=1).encode())

    def discard(self, key_id: str) -> None:
        """Control: destroy a key (e.g. a pending key the peer never confirmed): its bits are
        overwritten with zeros and fsynced, and the key, its metadata and any leftover of an
        interrupted write are unlinked and the directory fsynced. KeyStoreError if nothing of
        the key is stored."""
        key_path, meta_path = self._paths(key_id)
        key_files = [p for p in (key_path, _tmp_path(key_path)) if p.exists()]
        meta_files = [p for p in (meta_path, _tmp_path(meta_path)) if p.exists()]
        if not key_files and not meta_files:
            raise KeyStoreError(f"no key {key_id} in {self.directory}")
        for path in key_files:
            _overwrite_with_zeros(path)
        for path in key_files + meta_files:
            path.unlink()
        fsync_directory(self.directory)
        self._skipped.pop(key_id, None)

    def metadata(self, key_id: str) -> KeyMetadata:
        """Get: the metadata of one key; KeyStoreError if it is missing or corrupt."""
        _, meta_path = self._paths(key_id)
        try:
            text = meta_path.read_text()
        except FileNotFoundError:
            raise KeyStoreError(f"no key {key_id} in {self.directory}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"key {key_id}: metadata unreadable ({exc})") from None
        try:
            return _parse_metadata(text, key_id)
        except ValueError as exc:
            raise KeyStoreError(f"key {key_id}: corrupt metadata ({exc})") from None

    def _check(self, key_id: str) -> KeyMetadata:
        """The metadata of a key whose key file is there and of the size it says;
        KeyStoreError (saying why) otherwise."""
        meta = self.metadata(key_id)
        key_path, _ = self._paths(key_id)
        try:
            size = key_path.stat().st_size
        except FileNotFoundError:
            raise KeyStoreError(f"key {key_id}: metadata without key file") from None
        if size != (meta.key_bits + 7) // 8:
            raise KeyStoreError(
                f"key {key_id}: key file of {size} bytes, metadata says {meta.key_bits} bits"
            )
        return meta

    def _consistent(self, state: str | None = None) -> list[KeyMetadata]:
        """Metadata of every consistent key (in `state`, if given), oldest first; an
        inconsistent entry is skipped and remembered for `recover`."""
        metas = []
        for path in self.directory.glob("*.json"):
            if not _KEY_ID.fullmatch(path.stem):
                continue
            try:
                meta = self._check(path.stem)
            except KeyStoreError as exc:
                if path.stem not in self._skipped:
                    log.warning("%s: skipped until recovered: %s", self.directory, exc)
                self._skipped[path.stem] = str(exc)
                continue
            self._skipped.pop(path.stem, None)
            if state is None or meta.state == state:
                metas.append(meta)
        return sorted(metas, key=lambda m: (m.created_unix_s, m.key_id))

    def skipped(self) -> dict[str, str]:
        """Get: key ids a reader skipped as inconsistent since the last `recover`, and why."""
        return dict(self._skipped)

    def discard_pending(self) -> list[str]:
        """Control: discard every key still pending (the peer never confirmed it: a crash or a
        lost message left it behind); get their ids."""
        pending = self.key_ids(state="pending")
        for key_id in pending:
            self.discard(key_id)
        return pending

    def load(self, key_id: str) -> np.ndarray:
        """Get: the key bits (uint8 0/1); KeyStoreError if the key is missing or inconsistent."""
        key_path, _ = self._paths(key_id)
        meta = self._check(key_id)
        packed = np.frombuffer(key_path.read_bytes(), dtype=np.uint8)
        return np.unpackbits(packed, bitorder="big")[: meta.key_bits]

    def key_ids(self, state: str | None = None) -> list[str]:
        """Get: ids of the stored keys (in `state`, "pending" or "confirmed", if given), oldest
        first. An inconsistent entry (corrupt metadata, key file missing or of the wrong size)
        is skipped, not raised: see `skipped` and `recover`."""
        if state is not None and state not in _STATES:
            raise KeyStoreError(f"state {state!r} is not one of {_STATES}")
        return [m.key_id for m in self._consistent(state)]

    def total_bits(self, state: str | None = "confirmed") -> int:
        """Get: bits of key stored in `state` (confirmed by default: the keys both ends hold;
        None counts every consistent key)."""
        if state is not None and state not in _STATES:
            raise KeyStoreError(f"state {state!r} is not one of {_STATES}")
        return sum(m.key_bits for m in self._consistent(state))

    def digest(self, state: str | None = "confirmed") -> str:
        """Get: SHA-256 over the stored keys in `state` (confirmed by default; None for all) in
        the order of `key_ids` (for comparing two ends, not secret)."""
        h = hashlib.sha256()
        for key_id in self.key_ids(state):
            h.update(self._paths(key_id)[0].read_bytes())
        return h.hexdigest()

    def recover(self) -> RecoveryReport:
        """Control: make the store consistent after a crash; call at start, before any key is
        written. Removes `*.tmp` leftovers of interrupted writes (a key's or a secret's bits
        zeroed first), destroys key files without metadata (zeroed first, as `discard`),
        removes metadata without a key file, and moves corrupt entries (metadata that does not
        parse or check, key file of a size other than the metadata says, or all zeros: a
        `discard` cut short) into `quarantine/` (0700), never deleting them. Every change is
        made durable (directory fsync). Pending keys are kept (`discard_pending` is the
        daemon's call). Get what was done."""
        removed_tmp: list[str] = []
        orphan_keys: list[str] = []
        orphan_meta: list[str] = []
        quarantined: list[tuple[str, str]] = []
        ignored: list[str] = []
        changed = False
        for path in sorted(self.directory.iterdir()):
            if not path.is_file() or path.is_symlink():
                if path.name != QUARANTINE:
                    ignored.append(path.name)
                continue
            if path.name.endswith(".tmp"):
                if not path.name.endswith(".json.tmp"):  # may hold key or secret bits
                    _overwrite_with_zeros(path)
                path.unlink()
                removed_tmp.append(path.name)
                changed = True
        if changed:
            fsync_directory(self.directory)
        entries = {
            p.stem
            for p in self.directory.iterdir()
            if p.suffix in (".key", ".json")
            and p.is_file()
            and not p.is_symlink()
            and _KEY_ID.fullmatch(p.stem)
        }
        for key_id in sorted(entries):
            key_path, meta_path = self._paths(key_id)
            if not meta_path.exists():
                _overwrite_with_zeros(key_path)
                key_path.unlink()
                fsync_directory(self.directory)
                orphan_keys.append(key_id)
                continue
            try:
                self.metadata(key_id)
            except KeyStoreError as exc:
                quarantined.append((key_id, self._quarantine(key_id, exc)))
                continue
            if not key_path.exists():
                meta_path.unlink()
                fsync_directory(self.directory)
                orphan_meta.append(key_id)
                continue
            try:
                meta = self._check(key_id)
                if meta.key_bits >= _ZEROED_MIN_BITS and not any(key_path.read_bytes()):
                    raise KeyStoreError(f"key {key_id}: key file all zeros (discard interrupted)")
            except KeyStoreError as exc:
                quarantined.append((key_id, self._quarantine(key_id, exc)))
        known = {f"{k}{suffix}" for k in entries for suffix in (".key", ".json")}
        ignored += [
            p.name
            for p in sorted(self.directory.iterdir())
            if p.is_file()
            and not p.is_symlink()
            and p.suffix != ".secret"
            and p.name not in known
            and p.name not in removed_tmp
        ]
        self._skipped.clear()
        report = RecoveryReport(
            tuple(removed_tmp),
            tuple(orphan_keys),
            tuple(orphan_meta),
            tuple(quarantined),
            tuple(ignored),
        )
        if report.changed:
            log.warning("%s: recovered: %s", self.directory, report.counts())
        return report

    def _quarantine(self, key_id: str, why: KeyStoreError) -> str:
        """Move a key's files into quarantine/ (durably); get why, without the key id prefix."""
        reason = str(why).removeprefix(f"key {key_id}: ")
        self._move_to_quarantine(self._paths(key_id))
        self._skipped.pop(key_id, None)
        return reason

    def _move_to_quarantine(self, paths: tuple[Path, ...]) -> list[Path]:
        """Move files into quarantine/ (0700) durably, an earlier file of the same name kept;
        get where each existing one went."""
        target = self.directory / QUARANTINE
        if not target.is_dir():
            target.mkdir(mode=0o700)
            fsync_directory(self.directory)
        os.chmod(target, 0o700)
        moved = []
        for path in paths:
            if not path.exists():
                continue
            destination = target / path.name
            n = 1
            while destination.exists():  # an earlier quarantine of the same name: keep both
                destination = target / f"{path.name}.{n}"
                n += 1
            os.replace(path, destination)
            moved.append(destination)
        fsync_directory(target)
        fsync_directory(self.directory)
        return moved

    def quarantine_secret(self, name: str) -> Path:
        """Control: move a named secret that cannot be used (corrupt) into quarantine/, never
        deleting it; get its new path. KeyStoreError if there is no such secret."""
        path = self.directory / f"{name}.secret"
        if not re.fullmatch(r"[a-z0-9_.-]+", name) or not path.is_file():
            raise KeyStoreError(f"no secret {name!r} in {self.directory}")
        return self._move_to_quarantine((path,))[0]

    def discard_plan(self, plan_id: int) -> list[str]:
        """Control: destroy every key a pass stored (pending or confirmed), as `discard` does:
        the pass is abandoned at both ends. Get their ids (none: nothing was stored)."""
        doomed = [m.key_id for m in self._consistent() if m.plan_id == int(plan_id)]
        for key_id in doomed:
            self.discard(key_id)
        return doomed

    def store_secret(self, name: str, data: bytes, durable: bool = True) -> Path:
        """Control: store a named secret (e.g. the pre-shared authentication key), owner-only;
        `durable` waits until it is on disk (fsync), not just handed to the OS."""
        if not re.fullmatch(r"[a-z0-9_.-]+", name):
            raise KeyStoreError(f"secret name {name!r} not allowed")
        path = self.directory / f"{name}.secret"
        _write_private(path, data, durable)
        return path

    def has_secret(self, name: str) -> bool:
        """Get: whether a named secret is stored."""
        return (self.directory / f"{name}.secret").is_file()

    def delete_secret(self, name: str) -> None:
        """Control: remove a named secret, if stored (the directory entry is made durable)."""
        path = self.directory / f"{name}.secret"
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_directory(self.directory)

    def load_secret(self, name: str) -> bytes:
        """Get: a named secret."""
        path = self.directory / f"{name}.secret"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(f"no secret {name!r} in {self.directory}") from None
