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
disk encryption covers that).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_KEY_ID = re.compile(r"^[0-9a-f-]{36}$")


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


def fsync_directory(directory: Path) -> None:
    """Make the entries of `directory` durable (a rename or an unlink done in it)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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


class KeyStore:
    """Keys of one node, on disk, readable by the owner only."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

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
        overwritten with zeros and fsynced, then the key, its metadata and any leftover of an
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

    def metadata(self, key_id: str) -> KeyMetadata:
        """Get: the metadata of one key."""
        _, meta_path = self._paths(key_id)
        try:
            return KeyMetadata(**json.loads(meta_path.read_text()))
        except FileNotFoundError:
            raise KeyStoreError(f"no key {key_id} in {self.directory}") from None

    def discard_pending(self) -> list[str]:
        """Control: discard every key still pending (the peer never confirmed it: a crash or a
        lost message left it behind); get their ids."""
        pending = [k for k in self.key_ids() if self.metadata(k).state == "pending"]
        for key_id in pending:
            self.discard(key_id)
        return pending

    def load(self, key_id: str) -> np.ndarray:
        """Get: the key bits (uint8 0/1)."""
        key_path, _ = self._paths(key_id)
        meta = self.metadata(key_id)
        packed = np.frombuffer(key_path.read_bytes(), dtype=np.uint8)
        return np.unpackbits(packed, bitorder="big")[: meta.key_bits]

    def key_ids(self) -> list[str]:
        """Get: ids of all stored keys, oldest first."""
        metas = [self.metadata(p.stem) for p in self.directory.glob("*.json")]
        return [m.key_id for m in sorted(metas, key=lambda m: (m.created_unix_s, m.key_id))]

    def total_bits(self) -> int:
        """Get: bits of key stored."""
        return sum(self.metadata(k).key_bits for k in self.key_ids())

    def digest(self) -> str:
        """Get: SHA-256 over all stored keys in id order (for comparing two ends, not secret)."""
        h = hashlib.sha256()
        for key_id in self.key_ids():
            h.update(self._paths(key_id)[0].read_bytes())
        return h.hexdigest()

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
