"""Telecommands in tests are signed as the control centre signs them (decision 0016).

    from tests.tc_signing import OccSigner, install_tc_key

    verifier = install_tc_key(node_keys, occ_keys, "payload")  # pass as tc_verifier=
    occ = OccSigner(occ_keys)
    await bus.publish(dct.telecommand_topic("jinan1", "payload"), occ.sign("payload", "NOOP"))

A daemon started as a process (`satqkd payload run --keys DIR`) finds the key installed in DIR
by `install_tc_key` as it would one installed by `satqkd keys telecommand`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from satqkd_runtime.telecommand_auth import (
    TelecommandSigner,
    TelecommandVerifier,
    install_telecommand_key,
)


def install_tc_key(node_keys: str | Path, occ_keys: str | Path, node: str) -> TelecommandVerifier:
    """Control: install a fresh telecommand key for `node` (its key directory and the OCC's);
    get the node's verifier, to pass to the daemon as `tc_verifier=`."""
    install_telecommand_key(node_keys, occ_keys, node, force=True)
    return TelecommandVerifier.load(node_keys, node)


class OccSigner:
    """The control centre of a test: signs telecommands for any node it holds a key for."""

    def __init__(self, occ_keys: str | Path) -> None:
        self.occ_keys = Path(occ_keys)
        self._signers: dict[str, TelecommandSigner] = {}
        self.last_seq: dict[str, int] = {}

    def signer(self, node: str) -> TelecommandSigner:
        """Get: the signer of one node (made on first use)."""
        if node not in self._signers:
            self._signers[node] = TelecommandSigner.for_node(self.occ_keys, node)
        return self._signers[node]

    def signed(self, node: str, name: str, **fields: Any) -> tuple[int, bytes]:
        """Get: (seq, envelope) of a signed telecommand for `node`."""
        seq, data = self.signer(node).sign(name, fields)
        self.last_seq[node] = seq
        return seq, data

    def sign(self, node: str, name: str, **fields: Any) -> bytes:
        """Get: the envelope of a signed telecommand for `node` (its seq in `last_seq`)."""
        return self.signed(node, name, **fields)[1]
