"""Telecommands authenticated end to end, as the CCSDS Space Data Link Security protocol's
authentication-only baseline (CCSDS 355.0-B): a key id, a sequence number and an AES-256-CMAC.

The security trailer travels in the envelope's tag (docs/telecommands.md, decision 0016)::

    offset  size  field
    0       1     trailer format: 0x01 = AES-256-CMAC, 16-byte MAC
    1       2     key id (u16, big-endian), chosen when the key is installed
    3       16    MAC = AES-256-CMAC(key, authenticated_bytes(envelope))

The MAC covers the envelope's header (message type and the u32 seq) and body. The seq is the
anti-replay sequence number: a node executes a telecommand only if its MAC verifies and its seq
is above every seq it accepted before under that key. Each node has its own key, held by the
node and by the operation control centre (OCC), so a command signed for one node is refused by
every other.

State lives in `KeyStore` named secrets, owner-only: `telecommand-key` (key id and key, at both
ends), `telecommand-watermark` (the node's highest accepted seq) and `telecommand-send-seq` (the
OCC's next unreserved seq). Both sequence states are written durably (file and directory
fsynced): the node before it executes a command, the OCC before it uses a block of seqs, so a
crash never lets a replay in nor makes the OCC reuse a seq.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import re
import secrets
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.cmac import CMAC

from satqkd_core import dictionary as dct
from satqkd_core.codec import MAX_SEQ, Envelope, authenticated_bytes, encode_envelope
from satqkd_core.errors import InputError
from satqkd_runtime.keystore import KeyStore, KeyStoreError, fsync_directory

__all__ = [
    "KEY_BYTES",
    "MAC_BYTES",
    "TRAILER_BYTES",
    "TRAILER_FORMAT",
    "TelecommandAuthError",
    "TelecommandKey",
    "TelecommandKeyError",
    "TelecommandSigner",
    "TelecommandStateError",
    "TelecommandVerifier",
    "UnauthenticatedTelecommands",
    "check_node_name",
    "cmac_aes256",
    "install_hint",
    "install_telecommand_key",
]

TRAILER_FORMAT = 0x01  # AES-256-CMAC with a 16-byte MAC (SDLS baseline authentication)
KEY_BYTES = 32
MAC_BYTES = 16
_TRAILER = struct.Struct(">BH16s")
TRAILER_BYTES = _TRAILER.size  # 19
MAX_KEY_ID = 0xFFFF

KEY_SECRET = "telecommand-key"
WATERMARK_SECRET = "telecommand-watermark"
SEND_STATE_SECRET = "telecommand-send-seq"
_SEND_LOCK = "telecommand-send.lock"
_KEY_FORMAT = "satqkd-telecommand-key/1"
_NODE_NAME = re.compile(r"payload|ogs-[a-z0-9_-]+")


class TelecommandAuthError(Exception):
    """A telecommand failed authentication (the message says what failed, never a key)."""


class TelecommandStateError(Exception):
    """An authentic telecommand's anti-replay state could not be stored: it is not executed."""


class TelecommandKeyError(ValueError):
    """A telecommand key is missing, damaged or cannot be used (one line, with the fix)."""


def install_hint(node: str, node_keys: str | Path = "DIR") -> str:
    """Get: the command that installs a node's telecommand key (for error messages)."""
    return f"satqkd keys telecommand --node {node} --node-keys {node_keys} --occ-keys OCC_KEYS_DIR"


def check_node_name(node: str) -> str:
    """Get: `node` if it names a node ('payload' or 'ogs-<station>'), else InputError."""
    if not isinstance(node, str) or _NODE_NAME.fullmatch(node) is None:
        raise InputError(f"node: must be 'payload' or 'ogs-<station>' ([a-z0-9_-]+), got {node!r}")
    return node


def cmac_aes256(key: bytes, data: bytes) -> bytes:
    """Get: the 16-byte AES-CMAC (NIST SP 800-38B, RFC 4493) of `data` under a 256-bit key."""
    if len(key) != KEY_BYTES:
        raise TelecommandKeyError(f"AES-256-CMAC needs a {KEY_BYTES}-byte key, got {len(key)}")
    mac = CMAC(AES(key))
    mac.update(data)
    return mac.finalize()


@dataclass(frozen=True)
class TelecommandKey:
    """One telecommand key: its id (1..65535, carried in the trailer) and its 32 bytes."""

    key_id: int
    key: bytes = field(repr=False)  # never in a repr, a log or an event

    def __post_init__(self) -> None:
        if not 1 <= self.key_id <= MAX_KEY_ID:
            raise TelecommandKeyError(f"key id must be in 1..{MAX_KEY_ID}, got {self.key_id}")
        if len(self.key) != KEY_BYTES:
            raise TelecommandKeyError(
                f"a telecommand key is {KEY_BYTES} bytes, got {len(self.key)}"
            )

    @classmethod
    def generate(cls, key_id: int) -> TelecommandKey:
        """Get: a fresh 256-bit key from the operating system's CSPRNG (`secrets`)."""
        return cls(key_id, secrets.token_bytes(KEY_BYTES))

    def to_bytes(self) -> bytes:
        """Get: the stored form (JSON naming the format and algorithm, key in hex)."""
        record = {
            "format": _KEY_FORMAT,
            "algorithm": "AES-256-CMAC",
            "key_id": self.key_id,
            "key_hex": self.key.hex(),
        }
        return json.dumps(record).encode()

    @classmethod
    def from_store(cls, store: KeyStore) -> TelecommandKey:
        """Get: the key installed in a key store; TelecommandKeyError if none or damaged."""
        try:
            raw = store.load_secret(KEY_SECRET)
        except KeyStoreError:
            raise TelecommandKeyError(f"{store.directory}: no telecommand key") from None
        try:
            record = json.loads(raw)
            if record["format"] != _KEY_FORMAT:
                raise ValueError(record["format"])
            return cls(int(record["key_id"]), bytes.fromhex(record["key_hex"]))
        except (ValueError, KeyError, TypeError):
            raise TelecommandKeyError(
                f"{store.directory}: the telecommand key file is damaged (reinstall it with "
                "'satqkd keys telecommand ... --force')"
            ) from None

    def mac(self, data: bytes) -> bytes:
        """Get: AES-256-CMAC of `data` under this key."""
        return cmac_aes256(self.key, data)


def _store_durably(store: KeyStore, name: str, state: Mapping[str, int]) -> None:
    """Write a state secret and wait until it and its directory entry are on disk (a durable
    `store_secret` fsyncs the file and the directory)."""
    store.store_secret(name, json.dumps(dict(state)).encode(), durable=True)


def _load_state(store: KeyStore, name: str, key_id: int, item: str, default: int) -> int:
    """Get: a sequence state kept for `key_id`; `default` if none, or kept for another key."""
    try:
        state = json.loads(store.load_secret(name))
    except KeyStoreError:
        return default
    except ValueError:
        raise TelecommandKeyError(
            f"{store.directory}: telecommand sequence state {name!r} is damaged (reinstall the "
            "key with 'satqkd keys telecommand ... --force' to reset it at both ends)"
        ) from None
    if not isinstance(state, dict) or state.get("key_id") != key_id:
        return default  # a state of a replaced key: the new key starts afresh
    value = state.get(item)
    if not isinstance(value, int) or value < 0:
        raise TelecommandKeyError(f"{store.directory}: telecommand sequence state is damaged")
    return value


def install_telecommand_key(
    node_keys: str | Path, occ_keys: str | Path, node: str, force: bool = False
) -> TelecommandKey:
    """Control: install one fresh telecommand key for `node` in its key directory and in the
    OCC's directory `occ_keys/<node>`; the sequence state of both ends is reset. Refuses
    (TelecommandKeyError) to replace an installed key unless `force`."""
    check_node_name(node)
    KeyStore(occ_keys)  # the control centre's directory is owner-only too (0700)
    stores = (KeyStore(node_keys), KeyStore(Path(occ_keys) / node))
    installed: list[tuple[str, int]] = []
    for store in stores:
        if store.has_secret(KEY_SECRET):
            try:
                installed.append((str(store.directory), TelecommandKey.from_store(store).key_id))
            except TelecommandKeyError:
                installed.append((str(store.directory), 0))
    if installed and not force:
        raise TelecommandKeyError(
            f"{', '.join(d for d, _ in installed)} already hold(s) a telecommand key for {node}; "
            "give --force to replace it at both ends (sequence numbers start again at 1)"
        )
    # a new id, so a state or a captured command of the replaced key can never match it
    key_id = max((k for _, k in installed), default=0) % MAX_KEY_ID + 1
    key = TelecommandKey.generate(key_id)
    for store in stores:
        store.delete_secret(WATERMARK_SECRET)
        store.delete_secret(SEND_STATE_SECRET)
        store.store_secret(KEY_SECRET, key.to_bytes())
        fsync_directory(store.directory)
    return key


class TelecommandSigner:
    """The OCC's side for one destination node: signs telecommands with the node's key and a
    durable send sequence.

    Sequence numbers are reserved in blocks of `reservation`, written durably (under a file
    lock, so two OCC processes never get the same block) before any of them is used: after a
    crash the signer resumes above the reserved block, skipping at most one block and never
    reusing a seq. The node accepts only increasing seqs, so commands must reach it in the order
    they were signed (one sender per node at a time).
    """

    def __init__(self, store: KeyStore, reservation: int = 64) -> None:
        if not 1 <= reservation <= 1 << 20:
            raise ValueError(f"reservation must be in 1..{1 << 20}, got {reservation}")
        self.store = store
        self.reservation = reservation
        self.key = TelecommandKey.from_store(store)
        self._next_seq = 0  # nothing reserved yet: the first sign() reserves
        self._reserved_until = 0

    @classmethod
    def for_node(cls, occ_keys: str | Path, node: str, reservation: int = 64) -> TelecommandSigner:
        """Get: the signer of `node` from the OCC key directory; TelecommandKeyError (with the
        command that installs one) if the OCC holds no key for it."""
        check_node_name(node)
        directory = Path(occ_keys) / node
        if not (directory / f"{KEY_SECRET}.secret").is_file():
            raise TelecommandKeyError(
                f"{directory}: no telecommand key for {node} (run '{install_hint(node)}')"
            )
        return cls(KeyStore(directory), reservation)

    @property
    def key_id(self) -> int:
        """Get: the id of the key this signer uses."""
        return self.key.key_id

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        descriptor = os.open(self.store.directory / _SEND_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def _reserve(self) -> None:
        with self._locked():
            on_disk = _load_state(self.store, SEND_STATE_SECRET, self.key_id, "next_seq", 1)
            start = max(self._next_seq, on_disk, 1)
            if start > MAX_SEQ:
                raise TelecommandKeyError(
                    f"{self.store.directory}: the sequence numbers of telecommand key id "
                    f"{self.key_id} are used up; install a new key with --force"
                )
            end = min(start + self.reservation, MAX_SEQ + 1)
            _store_durably(self.store, SEND_STATE_SECRET, {"key_id": self.key_id, "next_seq": end})
        self._next_seq, self._reserved_until = start, end

    def next_seq(self) -> int:
        """Control: take the next sequence number, reserving a block on disk first if needed."""
        if self._next_seq >= self._reserved_until:
            self._reserve()
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def sign_envelope(self, unsigned: bytes) -> bytes:
        """Get: an encoded telecommand envelope (empty tag) with its security trailer."""
        data = authenticated_bytes(unsigned)
        if len(unsigned) != len(data) + 1 or unsigned[-1] != 0:
            raise InputError("sign_envelope: the envelope must have an empty tag")
        return data + bytes((TRAILER_BYTES,)) + self.trailer(data)

    def trailer(self, data: bytes) -> bytes:
        """Get: the security trailer of the authenticated bytes of an envelope."""
        return _TRAILER.pack(TRAILER_FORMAT, self.key_id, self.key.mac(data))

    def sign(self, name: str, fields: Mapping[str, Any]) -> tuple[int, bytes]:
        """Get: (seq, envelope) of telecommand `name` with `fields`, signed with a new seq;
        InputError (a CodecError) for an unknown telecommand or fields that do not fit."""
        spec = dct.DICTIONARY.get(name)
        if spec is None or spec.kind != "tc":
            known = ", ".join(s.name for s in dct.DICTIONARY.values() if s.kind == "tc")
            raise InputError(f"{name!r} is not a telecommand; telecommands: {known}")
        encode_envelope(spec, 0, fields)  # the fields are checked before a seq is taken
        seq = self.next_seq()
        return seq, self.sign_envelope(encode_envelope(spec, seq, fields))


class TelecommandVerifier:
    """The node's side: accepts a telecommand only if its trailer names the installed key, its
    MAC verifies (constant-time comparison) and its seq is above the highest accepted before;
    that seq is then written durably (file and directory fsynced) before `verify` returns, so
    the command is executed only once it can never be accepted again, even after a crash."""

    authenticates = True

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.key = TelecommandKey.from_store(store)
        self._highest = _load_state(
            store, WATERMARK_SECRET, self.key.key_id, "highest_accepted_seq", 0
        )

    @classmethod
    def load(cls, node_keys: str | Path, node: str) -> TelecommandVerifier:
        """Get: the verifier of `node` from its key directory; TelecommandKeyError, one line
        naming the command that installs the key, if there is none."""
        check_node_name(node)
        directory = Path(node_keys)
        if not (directory / f"{KEY_SECRET}.secret").is_file():
            raise TelecommandKeyError(
                f"{directory}: no telecommand key for {node}, so no telecommand could be "
                f"authenticated (run '{install_hint(node, directory)}')"
            )
        return cls(KeyStore(directory))

    @property
    def key_id(self) -> int:
        """Get: the id of the installed key."""
        return self.key.key_id

    @property
    def highest_accepted_seq(self) -> int:
        """Get: the highest seq accepted under the installed key (0: none yet)."""
        return self._highest

    def verify(self, payload: bytes, envelope: Envelope) -> None:
        """Control: accept one received telecommand (its raw bytes and decoded envelope), or
        raise TelecommandAuthError saying what failed; TelecommandStateError if the
        anti-replay state cannot be written (the command must not be executed)."""
        tag = envelope.tag
        if not tag:
            raise TelecommandAuthError("no security trailer (unsigned)")
        if len(tag) != TRAILER_BYTES:
            raise TelecommandAuthError(
                f"security trailer of {len(tag)} bytes, expected {TRAILER_BYTES}"
            )
        trailer_format, key_id, mac = _TRAILER.unpack(tag)
        if trailer_format != TRAILER_FORMAT:
            raise TelecommandAuthError(f"unknown trailer format {trailer_format:#04x}")
        if key_id != self.key.key_id:
            raise TelecommandAuthError(
                f"wrong key id {key_id} (this node holds key id {self.key.key_id})"
            )
        if not hmac.compare_digest(self.key.mac(authenticated_bytes(payload)), mac):
            raise TelecommandAuthError(f"bad MAC (key id {key_id})")
        if envelope.seq <= self._highest:
            raise TelecommandAuthError(
                f"seq {envelope.seq} is not above the last accepted seq {self._highest} "
                "(replayed or out of order)"
            )
        state = {"key_id": self.key.key_id, "highest_accepted_seq": envelope.seq}
        try:
            _store_durably(self.store, WATERMARK_SECRET, state)
        except (OSError, KeyStoreError) as exc:
            raise TelecommandStateError(f"anti-replay state not stored: {exc}") from None
        self._highest = envelope.seq


class UnauthenticatedTelecommands:
    """The explicit opt-out, for a test or simulation that does not exercise telecommand
    security: every decodable telecommand is accepted without a trailer. Never use it for a
    daemon that a broker shared with anyone else can reach (decision 0016)."""

    authenticates = False

    def verify(self, payload: bytes, envelope: Envelope) -> None:
        """Control: accept everything."""
