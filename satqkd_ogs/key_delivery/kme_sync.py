"""KME-to-KME key id synchronisation: two stations' ETSI GS QKD 014 servers over the same blocks
(a relay key filed at both under the same key ids; docs/key-delivery.md, "Two KMEs").

A master SAE at KME A takes keys with enc_keys; A commits them as delivered and queues a
numbered notice in the same transaction (`PairedKeyManagement`), then sends it to KME B over
HTTPS with mutual TLS (`POST /kme/v1/notices`) and answers its master only when B confirmed
it: the slave SAE at B can then fetch the keys by id with dec_keys, once. If B does not
confirm in time, A erases the keys, answers 503 and queues a `void` notice, sent with the rest
of the outbox until B acknowledges it. Which keys each KME may hand to masters is fixed by the
key index (partition), so no race between the two is possible.

The peer is authenticated by its client certificate, issued by this KME's CA with the common
name `kme-<peer station>` (no SAE id may start with `kme-`); a notice is applied once, by its
sequence number (a replay is refused with 409 and changes nothing).
"""

# no `from __future__ import annotations`: FastAPI reads the local dependency annotation

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from satqkd_ogs.key_delivery.models import Error, KeyContainer
from satqkd_ogs.key_delivery.service import DeliveryRefused
from satqkd_runtime.key_management import KeyManagementError
from satqkd_runtime.key_management_sync import Notice, NoticeReplayed, PairedKeyManagement

NOTICES_PATH = "/kme/v1/notices"
MAX_KEYS_PER_NOTICE = 1024
log = logging.getLogger("satqkd.kme_sync")


class KeyNotice(BaseModel):
    """A notice from one KME to the other: which key ids went to which pair of SAEs (`address`)
    or were withdrawn (`void`). Ids only, never key material."""

    model_config = ConfigDict(extra="forbid")

    source_KME_ID: str = Field(max_length=140)
    target_KME_ID: str = Field(max_length=140)
    seq: int = Field(ge=1, description="the sender's notice number, increasing")
    action: Literal["address", "void"]
    master_SAE_ID: str = Field(max_length=128)
    slave_SAE_ID: str = Field(max_length=128)
    key_IDs: list[str] = Field(min_length=1, max_length=MAX_KEYS_PER_NOTICE)


@dataclass(frozen=True)
class PeerKme:
    """The other KME: its id, its URL, and what this KME shows it (its CA, our client
    certificate issued by that CA)."""

    kme_id: str
    url: str
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """Get: TLS trusting only the peer's CA, showing this KME's client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class KmeSync:
    """Both directions of the notices between this KME and its peer (one event loop)."""

    def __init__(
        self,
        kms: PairedKeyManagement,
        peer: PeerKme,
        counters: Counter[str],
        *,
        timeout_s: float = 5.0,
    ) -> None:
        if not isinstance(kms, PairedKeyManagement):
            raise KeyManagementError("a KME with a peer KME needs a PairedKeyManagement store")
        if kms.peer_kme != peer.kme_id:
            raise KeyManagementError(f"the store is paired with {kms.peer_kme}, not {peer.kme_id}")
        self.kms, self.peer, self.counters = kms, peer, counters
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._context = peer.client_context()

    # ---- sending ------------------------------------------------------------------------------

    def _body(self, notice: Notice) -> dict[str, Any]:
        return KeyNotice(
            source_KME_ID=self.kms.own_kme,
            target_KME_ID=self.peer.kme_id,
            seq=notice.seq,
            action=notice.action,  # type: ignore[arg-type]
            master_SAE_ID=notice.master_sae,
            slave_SAE_ID=notice.slave_sae,
            key_IDs=list(notice.key_ids),
        ).model_dump()

    async def push(self) -> bool:
        """Control: send the outbox to the peer, oldest first, until it is empty or the peer
        cannot be reached; True if every notice was applied by the peer (none refused)."""
        async with self._lock:
            notices = self.kms.pending_notices()
            if not notices:
                return True
            refused = False
            try:
                async with httpx.AsyncClient(
                    base_url=self.peer.url, verify=self._context, timeout=self.timeout_s
                ) as client:
                    for notice in notices:
                        refused |= not await self._send(client, notice)
            except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
                self.counters["sync_unreachable"] += 1
                log.warning("peer KME %s not reached: %s", self.peer.kme_id, exc)
                return False
            return not refused

    async def _send(self, client: httpx.AsyncClient, notice: Notice) -> bool:
        answer = await client.post(NOTICES_PATH, json=self._body(notice))
        if answer.status_code == 200:
            self.counters[f"sync_sent_{notice.action}"] += 1
        elif answer.status_code == 409 and _applied_through(answer) >= notice.seq:
            self.counters["sync_already_applied"] += 1  # our resend after a lost answer
        elif answer.status_code == 400:  # the peer will never apply it: forget it, loudly
            self.counters["sync_refused_by_peer"] += 1
            log.error("peer KME refused notice %d: %s", notice.seq, _message(answer))
            self.kms.acknowledged(notice.seq)
            return False
        else:
            raise httpx.HTTPError(f"notice {notice.seq}: {answer.status_code} {_message(answer)}")
        self.kms.acknowledged(notice.seq)
        return True

    async def confirm(self, master: str, slave: str, container: KeyContainer) -> None:
        """Control: have the peer confirm the keys just handed to `master` here; if it does
        not, erase them here, queue their withdrawal and refuse the request (503)."""
        if await self.push():
            return
        ids = [key.key_ID for key in container.keys]
        self.kms.withdraw(master, slave, ids)
        self.counters["keys_withdrawn"] += len(ids)
        raise DeliveryRefused(
            503, f"peer KME {self.peer.kme_id} did not confirm the keys; none handed out", "peer"
        )

    async def keep_pushing(self, interval_s: float, stop: asyncio.Event) -> None:
        """Control: resend what the outbox holds (a restart's, a withdrawal) until `stop`."""
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if not stop.is_set() and self.kms.pending_notices():
                await self.push()

    # ---- receiving ----------------------------------------------------------------------------

    def receive(self, caller: str | None, notice: KeyNotice) -> dict[str, int]:
        """Control: apply a notice from the peer KME; DeliveryRefused (401 not the peer's
        certificate, 400 not for us or naming keys the peer may not deliver, 409 replayed)."""
        if caller != self.peer.kme_id:
            raise DeliveryRefused(401, "notices are accepted from the peer KME only", "not_peer")
        if notice.source_KME_ID != caller or notice.target_KME_ID != self.kms.own_kme:
            message = f"a notice from {caller} to {self.kms.own_kme} expected"
            raise DeliveryRefused(400, message, "misaddressed")
        action = notice.action
        try:
            changed = self.kms.apply_notice(
                Notice(
                    notice.seq,
                    action,
                    notice.master_SAE_ID,
                    notice.slave_SAE_ID,
                    tuple(notice.key_IDs),
                )
            )
        except NoticeReplayed as exc:
            raise ReplayRefused(str(exc), exc.applied_through) from None
        except KeyManagementError as exc:
            raise DeliveryRefused(400, str(exc), "bad_notice") from None
        self.counters[f"sync_applied_{action}"] += 1
        return {"applied_through": notice.seq, "keys": changed}


class ReplayRefused(DeliveryRefused):
    """A notice applied before (409): its answer says how far the notices are applied."""

    def __init__(self, message: str, applied_through: int) -> None:
        super().__init__(409, message, "replayed")
        self.applied_through = applied_through


def _applied_through(answer: httpx.Response) -> int:
    with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
        return int(answer.json()["details"][0]["applied_through"])
    return 0


def _message(answer: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(answer.json()["message"])[:200]
    return answer.text[:200]


def add_sync_routes(app: FastAPI, sync: KmeSync, identity_key: str) -> None:
    """Control: add `POST /kme/v1/notices` (the peer KME's notices) to a key delivery app;
    the caller is the common name of its client certificate (`identity_key` in the state)."""

    @app.exception_handler(ReplayRefused)
    async def _replayed(request: Request, exc: ReplayRefused) -> JSONResponse:
        sync.counters["refused_replayed"] += 1
        body = Error(message=exc.message, details=[{"applied_through": exc.applied_through}])
        return JSONResponse(body.model_dump(), 409)

    def peer_caller(request: Request) -> str:
        # a dependency: checked before the body, so anyone but the peer gets 401
        caller = request.scope.get("state", {}).get(identity_key)
        if caller != sync.peer.kme_id:
            raise DeliveryRefused(401, "notices are accepted from the peer KME only", "not_peer")
        return str(caller)

    @app.post(NOTICES_PATH, include_in_schema=False)  # KME to KME: not part of ETSI 014
    async def post_notice(
        caller: Annotated[str, Depends(peer_caller)], notice: KeyNotice
    ) -> dict[str, int]:
        return sync.receive(caller, notice)
