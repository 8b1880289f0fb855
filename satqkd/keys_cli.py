"""`satqkd keys bootstrap|telecommand|emission`: install the keys two ends share.

A command group module (satqkd/cli.py calls :func:`register` and :func:`run`).
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from satqkd.cli import EXIT_USAGE, _fail, _messages, _name
from satqkd.relay_cli import add_relay_parser, run_relay_command

GROUP = "keys"


def register(sub: argparse._SubParsersAction) -> None:
    """Control: add the `keys` group and its commands."""
    keys = sub.add_parser("keys", help="key stores").add_subparsers(dest="command", required=True)
    boot = keys.add_parser(
        "bootstrap", help="install one pre-shared authentication key at both ends"
    )
    boot.add_argument("--payload-keys", required=True, help="payload key store root")
    boot.add_argument("--ogs-keys", required=True, help="station key store directory")
    boot.add_argument("--station", type=_name, required=True, help="station name")
    boot.add_argument("--messages", type=_messages, default=65536, help="messages per direction")
    boot.add_argument(
        "--force",
        action="store_true",
        help="replace a pre-shared key already installed (and forget its sequence state) at "
        "both ends",
    )
    tc_keys = keys.add_parser(
        "telecommand", help="install one telecommand key (AES-256-CMAC) at a node and the OCC"
    )
    tc_keys.add_argument("--node", required=True, help="'payload' or 'ogs-<station>'")
    tc_keys.add_argument(
        "--node-keys",
        required=True,
        help="the node's key directory: the payload's key root, or the station's key store",
    )
    tc_keys.add_argument("--occ-keys", required=True, help="the control centre's key directory")
    tc_keys.add_argument(
        "--force",
        action="store_true",
        help="replace a telecommand key already installed (sequence numbers restart at both ends)",
    )
    emission_keys = keys.add_parser(
        "emission",
        help="install the emission key (AES-256-CMAC) of the payload and its controller: "
        "requests to emit are signed with it and refused without it",
    )
    emission_keys.add_argument(
        "--node-keys", required=True, help="the payload's key root (payload run --keys)"
    )
    emission_keys.add_argument(
        "--controller-keys",
        required=True,
        help="the payload controller's key directory (an emulator the payload runs in-process: "
        "NODE_KEYS/payload-controller)",
    )
    emission_keys.add_argument(
        "--force",
        action="store_true",
        help="replace an emission key already installed (counters restart at both ends)",
    )
    add_relay_parser(keys)


def run(args: argparse.Namespace) -> int:
    """Control: run one `keys` command; get its exit status."""
    if args.command == "relay":
        return run_relay_command(args)
    if args.command == "telecommand":
        return _telecommand_keys(args)
    if args.command == "emission":
        return _emission_keys(args)
    return _bootstrap_keys(args)


def _bootstrap_keys(args: argparse.Namespace) -> int:
    from satqkd_core.authentication import preshared_key_bytes
    from satqkd_runtime.keystore import KeyStore
    from satqkd_runtime.qkd_channel import install_preshared_key

    if args.messages < 1:
        return _fail("--messages must be positive", EXIT_USAGE)
    stores = (KeyStore(Path(args.payload_keys) / args.station), KeyStore(Path(args.ogs_keys)))
    holding = [str(store.directory) for store in stores if store.has_secret("preshared-auth")]
    if holding and not args.force:
        # overwriting one end alone, or a pool whose words were already used, would break
        # authentication or reuse one-time-pad words: replacing is an explicit decision
        return _fail(
            f"{', '.join(holding)} already hold(s) a pre-shared authentication key; "
            "give --force to replace it at both ends",
            EXIT_USAGE,
        )
    key = secrets.token_bytes(preshared_key_bytes(args.messages))
    for store in stores:
        install_preshared_key(store, key)  # the new pool starts at its first word, no extension
    print(f"pre-shared authentication key for {args.station} installed ({len(key)} bytes)")
    return 0


def _telecommand_keys(args: argparse.Namespace) -> int:
    """`satqkd keys telecommand`: one fresh 256-bit key at the node and the OCC."""
    from satqkd_core.errors import InputError
    from satqkd_runtime.keystore import KeyStoreError
    from satqkd_runtime.telecommand_auth import TelecommandKeyError, install_telecommand_key

    try:
        key = install_telecommand_key(args.node_keys, args.occ_keys, args.node, args.force)
    except (TelecommandKeyError, InputError, KeyStoreError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(f"{exc.filename or 'key directory'}: {exc.strerror}")
    print(
        f"telecommand key for {args.node} installed (key id {key.key_id}, AES-256-CMAC) in "
        f"{args.node_keys} and {Path(args.occ_keys) / args.node}; sequence numbers start at 1"
    )
    return 0


def _emission_keys(args: argparse.Namespace) -> int:
    """`satqkd keys emission`: one fresh 256-bit key at the payload and its controller."""
    from satqkd_runtime.emission_auth import EmissionKeyError, install_emission_key
    from satqkd_runtime.keystore import KeyStoreError

    try:
        install_emission_key(args.node_keys, args.controller_keys, args.force)
    except (EmissionKeyError, KeyStoreError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(f"{exc.filename or 'key directory'}: {exc.strerror}")
    print(
        f"emission key installed (AES-256-CMAC) in {args.node_keys} and "
        f"{args.controller_keys}; counters start at 1"
    )
    return 0
