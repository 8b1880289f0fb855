"""What the KME answers, apart from HTTP: the checks of ETSI GS QKD 014 V1.1.1 on each request
and the hand-over through the key management store. Each refusal is a `DeliveryRefused` with
the status the standard gives it (400, 401, 503) and is counted by reason."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from dataclasses import dataclass

from satqkd_ogs.key_delivery.models import Key, KeyContainer, KeyRequest, Status
from satqkd_runtime.key_management import (
    DeliveredKey,
    KeyManagement,
    KeyManagementError,
    KeyRefused,
    NotEnoughKeys,
)
from satqkd_runtime.key_management_sync import PairedKeyManagement


@dataclass(frozen=True)
class DeliverySettings:
    """What a KME serves: its id, the link whose keys it hands out, the SAEs it knows."""

    kme_id: str
    peer: str  # the node the keys are shared with (the payload; a relayed station later)
    sae_ids: frozenset[str]
    max_key_per_request: int = 128
    max_key_count: int = 1_000_000
    # one of two KMEs over the same keys (kme_sync): the other's id and the SAEs it serves; the
    # slave of enc_keys and the master of dec_keys are then SAEs of the peer KME
    peer_kme_id: str | None = None
    peer_sae_ids: frozenset[str] = frozenset()


class DeliveryRefused(Exception):
    """A request the KME answers with an ETSI Error (status 400, 401 or 503)."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def _container(keys: list[DeliveredKey]) -> KeyContainer:
    return KeyContainer(
        keys=[Key(key_ID=k.key_id, key=base64.b64encode(k.material).decode()) for k in keys]
    )


class KeyDelivery:
    """The three methods of clause 5 on a key management store (one thread at a time)."""

    def __init__(self, kms: KeyManagement, settings: DeliverySettings) -> None:
        self.kms, self.settings = kms, settings
        self.counters: Counter[str] = Counter()

    def caller(self, sae: str | None) -> str:
        """Get: the calling SAE (the common name of its client certificate); 401 if none or
        one this KME does not serve."""
        if not sae:
            raise DeliveryRefused(401, "a client certificate naming the SAE is required", "no_cert")
        if sae not in self.settings.sae_ids:
            raise DeliveryRefused(401, f"SAE {sae!r} is not served by this KME", "unknown_sae")
        return sae

    def _other_sae(self, caller: str, other: str, role: str) -> None:
        if self.settings.peer_kme_id is not None:
            if other not in self.settings.peer_sae_ids:
                peer = self.settings.peer_kme_id
                raise DeliveryRefused(400, f"{role} {other!r} is not an SAE of {peer}", "unknown")
            return
        if other not in self.settings.sae_ids:
            raise DeliveryRefused(400, f"{role} {other!r} is not an SAE of this KME", "unknown")
        if other == caller:
            raise DeliveryRefused(400, f"{role} {other!r} is the calling SAE itself", "self")

    def status(self, caller: str, slave: str) -> Status:
        """Get status (clause 5.2): the pair's Status (6.1)."""
        self._other_sae(caller, slave, "slave_SAE_ID")
        size = self.kms.key_size_bits
        return Status(
            source_KME_ID=self.settings.kme_id,
            target_KME_ID=self.settings.peer_kme_id or self.settings.kme_id,
            master_SAE_ID=caller,
            slave_SAE_ID=slave,
            key_size=size,
            stored_key_count=(
                self.kms.own_available()
                if isinstance(self.kms, PairedKeyManagement)
                else self.kms.count(self.settings.peer)
            ),
            max_key_count=self.settings.max_key_count,
            max_key_per_request=self.settings.max_key_per_request,
            max_key_size=size,
            min_key_size=size,
            max_SAE_ID_count=0,
        )

    def _check_key_request(self, request: KeyRequest) -> int:
        number = 1 if request.number is None else request.number
        limit, size = self.settings.max_key_per_request, self.kms.key_size_bits
        if number > limit:
            message = f"number {number} is above max_key_per_request {limit}"
            raise DeliveryRefused(400, message, "too_many")
        if request.size is not None and request.size != size:
            message = f"size {request.size} bits: this KME delivers keys of {size} bits"
            raise DeliveryRefused(400, message + " (min_key_size = max_key_size)", "size")
        if request.additional_slave_SAE_IDs:
            message = "additional_slave_SAE_IDs: max_SAE_ID_count is 0"
            raise DeliveryRefused(400, message, "multicast")
        if request.extension_mandatory:  # clause 6.2: the KME refuses what it does not support
            names = sorted({name for entry in request.extension_mandatory for name in entry})
            message = f"not all extension_mandatory parameters are supported: {names}"
            raise DeliveryRefused(400, message, "extension")
        return number

    def enc_keys(self, caller: str, slave: str, request: KeyRequest) -> KeyContainer:
        """Get key (clause 5.3): new keys for the master SAE, addressed to `slave`."""
        self._other_sae(caller, slave, "slave_SAE_ID")
        number = self._check_key_request(request)
        try:
            keys = self.kms.deliver_to_master(self.settings.peer, caller, slave, number)
        except NotEnoughKeys as exc:
            raise DeliveryRefused(503, f"not enough keys: {exc}", "no_keys") from None
        self.counters["keys_to_master"] += len(keys)
        return _container(keys)

    def dec_keys(self, caller: str, master: str, key_ids: list[str]) -> KeyContainer:
        """Get key with key IDs (clause 5.4): the keys `master` obtained for the caller."""
        self._other_sae(caller, master, "master_SAE_ID")
        if len(key_ids) > self.settings.max_key_per_request:
            raise DeliveryRefused(400, "more key_IDs than max_key_per_request", "too_many")
        for key_id in key_ids:
            try:
                uuid.UUID(key_id)
            except ValueError:
                raise DeliveryRefused(400, f"key_ID {key_id[:64]!r} is not a UUID", "id") from None
        try:
            keys = self.kms.deliver_to_slave(master, caller, key_ids)
        except KeyRefused as exc:
            raise DeliveryRefused(400, str(exc), "key_refused") from None
        except KeyManagementError as exc:
            raise DeliveryRefused(400, str(exc), "bad_ids") from None
        self.counters["keys_to_slave"] += len(keys)
        return _container(keys)
