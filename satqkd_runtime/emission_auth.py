"""Requests to emit, authenticated between the payload computer and the payload controller.

The payload controller's laser interlock (`firmware_shims.laser_interlock`) lets the source emit
only on a `SOURCE_ENABLE_SIGNED` (0x0004) request whose tag is the AES-256-CMAC (NIST SP
800-38B, the same `cmac_aes256` telecommands use) under the emission key of the function, the
first pulse instant and a counter above every counter it accepted before. One key, 32 bytes
from the operating system's CSPRNG, is installed owner-only in two key stores: the payload
node's key directory (the sender, `EmissionSigner`) and the controller's (`EmissionWatermark`
keeps its highest accepted counter). Both counters are written durably (file and directory
fsynced) before they are used, so a restart of either side never lets a request be replayed
nor makes the sender reuse a counter. Installing a key resets both counters.
"""

from __future__ import annotations

import json
import secrets
import struct
from pathlib import Path

from satqkd_core.errors import InputError
from satqkd_core.payload_icd import FunctionId
from satqkd_runtime.keystore import KeyStore, KeyStoreError, fsync_directory
from satqkd_runtime.telecommand_auth import KEY_BYTES, cmac_aes256

__all__ = [
    "EMISSION_KEY_SECRET",
    "EmissionKeyError",
    "EmissionSigner",
    "EmissionWatermark",
    "emission_request_tag",
    "install_emission_key",
    "load_emission_key",
]

EMISSION_KEY_SECRET = "emission-key"
SEND_COUNTER_SECRET = "emission-send-counter"  # the payload computer's last counter used
WATERMARK_SECRET = "emission-watermark"  # the controller's highest counter accepted
MAX_COUNTER = 0xFFFF_FFFF  # u32 on the wire
_KEY_FORMAT = "satqkd-emission-key/1"
_TAG_DOMAIN = b"satqkd payload emission request v1"


class EmissionKeyError(ValueError):
    """An emission key or counter is missing, damaged or used up (one line, with the fix)."""


def install_hint(
    node_keys: str | Path = "NODE_KEYS", controller_keys: str | Path = "CONTROLLER_KEYS"
) -> str:
    """Get: the command that installs the emission key (for error messages)."""
    return f"satqkd keys emission --node-keys {node_keys} --controller-keys {controller_keys}"


def emission_request_tag(key: bytes, first_pulse_unix_s: float, counter: int) -> bytes:
    """Get the 16-byte AES-256-CMAC tag of a SOURCE_ENABLE_SIGNED request."""
    data = _TAG_DOMAIN + struct.pack(
        ">HdI", int(FunctionId.SOURCE_ENABLE_SIGNED), first_pulse_unix_s, counter
    )
    return cmac_aes256(key, data)


def install_emission_key(
    node_keys: str | Path, controller_keys: str | Path, force: bool = False
) -> None:
    """Control: install one fresh emission key in the payload node's key directory and the
    controller's, resetting both counters; refuses (EmissionKeyError) to replace an installed
    key unless `force`."""
    stores = (KeyStore(node_keys), KeyStore(controller_keys))
    held = [str(s.directory) for s in stores if s.has_secret(EMISSION_KEY_SECRET)]
    if held and not force:
        raise EmissionKeyError(
            f"{', '.join(held)} already hold(s) an emission key; give --force to replace it "
            "at both ends (counters start again at 1)"
        )
    record = {
        "format": _KEY_FORMAT,
        "algorithm": "AES-256-CMAC",
        "key_hex": secrets.token_bytes(KEY_BYTES).hex(),
    }
    for store in stores:
        store.delete_secret(SEND_COUNTER_SECRET)
        store.delete_secret(WATERMARK_SECRET)
        store.store_secret(EMISSION_KEY_SECRET, json.dumps(record).encode())
        fsync_directory(store.directory)


def load_emission_key(directory: str | Path, controller: bool = False) -> bytes:
    """Get: the emission key installed in the payload node's key directory (or, `controller`,
    the payload controller's); EmissionKeyError, one line naming the command that installs it,
    if it is missing or damaged."""
    path = Path(directory) / f"{EMISSION_KEY_SECRET}.secret"
    who = "payload controller" if controller else "payload node"
    hint = install_hint(controller_keys=directory) if controller else install_hint(directory)
    try:
        record = json.loads(path.read_bytes())
        if record["format"] != _KEY_FORMAT:
            raise ValueError(record["format"])
        key = bytes.fromhex(record["key_hex"])
        if len(key) != KEY_BYTES:
            raise ValueError(len(key))
    except FileNotFoundError:
        raise EmissionKeyError(
            f"{directory}: no emission key for the {who}, so no request to emit could be "
            f"authenticated (run '{hint}')"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise EmissionKeyError(
            f"{directory}: the emission key file is damaged (reinstall it with '{hint} --force')"
        ) from None
    return key


def _load_counter(store: KeyStore, name: str) -> int:
    try:
        value = json.loads(store.load_secret(name)).get("counter")
    except KeyStoreError:
        return 0
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, int) or not 0 <= value <= MAX_COUNTER:
        raise EmissionKeyError(
            f"{store.directory}: emission counter {name!r} is damaged (reinstall the key with "
            f"'{install_hint()} --force' to reset it at both ends)"
        )
    return value


def _store_counter(store: KeyStore, name: str, counter: int) -> None:
    store.store_secret(name, json.dumps({"counter": counter}).encode(), durable=True)


class EmissionSigner:
    """The payload computer's side: signs each request to emit with the next counter, written
    durably before the request leaves."""

    def __init__(self, node_keys: str | Path) -> None:
        self.store = KeyStore(node_keys)
        self._key = load_emission_key(node_keys)
        self.counter = _load_counter(self.store, SEND_COUNTER_SECRET)

    def sign(self, first_pulse_unix_s: float) -> tuple[int, bytes]:
        """Control: take the next counter (stored durably first) and get (counter, tag)."""
        counter = self.counter + 1
        if counter > MAX_COUNTER:
            raise EmissionKeyError(
                f"{self.store.directory}: emission counters used up; install a new key with "
                f"'{install_hint()} --force'"
            )
        _store_counter(self.store, SEND_COUNTER_SECRET, counter)
        self.counter = counter
        return counter, emission_request_tag(self._key, first_pulse_unix_s, counter)


class EmissionWatermark:
    """The controller's side: the highest counter accepted under its key, kept durably."""

    def __init__(self, controller_keys: str | Path) -> None:
        self.store = KeyStore(controller_keys)
        self.key = load_emission_key(controller_keys, controller=True)
        self.highest = _load_counter(self.store, WATERMARK_SECRET)

    def advance(self, counter: int) -> None:
        """Control: record an accepted counter durably (OSError/KeyStoreError if it could not
        be stored: the request must then be refused)."""
        if not isinstance(counter, int) or not self.highest < counter <= MAX_COUNTER:
            raise InputError(f"counter {counter!r} is not above {self.highest}")
        _store_counter(self.store, WATERMARK_SECRET, counter)
        self.highest = counter
