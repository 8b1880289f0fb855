"""The station's side of the exchanges after the pass: waiting for the payload's messages and
error correction (Cascade or blind LDPC), as a part of `OgsSession`.

`PassAborted` ends a pass without a key; `request_abort` puts `_ABORT_REQUESTED` in the inbox so
any wait here ends at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from satqkd_core.cascade import CascadeCorrector
from satqkd_core.codec import Envelope
from satqkd_core.errors import InputError, ProtocolError
from satqkd_core.ldpc import mother_codes
from satqkd_core.ldpc_reconciliation import (
    MESSAGE_NAMES,
    LdpcReceiver,
    message_from_wire,
    wire_message,
)
from satqkd_runtime.entropy_draws import draw_seed

if TYPE_CHECKING:
    from satqkd_core.pass_decisions import ProtocolParameters
    from satqkd_ogs.session import OgsPassResult, PassPlan
    from satqkd_runtime.entropy_draws import RandomBytes
    from satqkd_runtime.qkd_channel import QkdChannel


log = logging.getLogger("satqkd.ogs")


class PassAborted(Exception):
    """The pass ends without a key; the message says why. `tell_payload`: the payload does
    not know yet (a timeout, an operator's abort) and is sent ABORT."""

    def __init__(self, reason: str, tell_payload: bool = False) -> None:
        super().__init__(reason)
        self.tell_payload = tell_payload


_ABORT_REQUESTED = object()  # put in the inbox by request_abort: wakes any wait at once


class Reconciliation:
    """Error correction with the payload and the waits it needs (mixed into OgsSession)."""

    plan: PassPlan
    result: OgsPassResult
    channel: QkdChannel
    entropy: RandomBytes
    inbox: asyncio.Queue[Envelope]
    params: ProtocolParameters
    cascade_passes: int
    cascade_max_disturbance: float
    reply_timeout_s: float
    abort_requested: str | None
    aborted: asyncio.Event
    _tell_payload_of_abort: bool

    def _purpose(self, what: str) -> str:
        return f"{what}/{self.plan.station}/{self.plan.plan_id}"

    async def prepare_reconciliation(self) -> None:
        """Control: load what error correction needs that does not depend on the pass's key
        (LDPC: the shipped mother codes, ~2.4 CPU-s, cached for the daemon's life) while the
        pass runs, so it is not done after LOS. A failure is logged here; the exchange after
        LOS meets it again and ends the pass as for any station error."""
        if self.params.reconciliation != "ldpc":
            return
        try:
            await asyncio.to_thread(mother_codes)
        except Exception as exc:  # reported again where it ends the pass
            log.error("plan %d: LDPC codes not loaded ahead: %s", self.plan.plan_id, exc)

    def request_abort(self, reason: str, tell_payload: bool = True) -> None:
        """Control: end the pass without a key at either end, at the next step it takes
        (`tell_payload`: send the payload ABORT; not when the abort came from it)."""
        if self.abort_requested is None:
            self.abort_requested = reason
            self._tell_payload_of_abort = tell_payload
            self.inbox.put_nowait(_ABORT_REQUESTED)  # type: ignore[arg-type]
            self.aborted.set()

    def _check_abort(self) -> None:
        if self.abort_requested is not None:
            raise PassAborted(self.abort_requested, tell_payload=self._tell_payload_of_abort)

    async def _expect(self, name: str) -> dict:
        while True:
            try:
                async with asyncio.timeout(self.reply_timeout_s):  # not wait_for (issue 13)
                    envelope = await self.inbox.get()
            except TimeoutError:
                raise PassAborted(
                    f"payload did not send {name} within {self.reply_timeout_s:g} s",
                    tell_payload=True,
                ) from None
            if envelope is _ABORT_REQUESTED:
                self._check_abort()
            if envelope.spec.name == "ABORT":
                raise PassAborted(f"payload aborted: {envelope.fields['reason']}")
            if envelope.spec.name == name:
                return envelope.fields
            raise ProtocolError(f"expected {name}, got {envelope.spec.name}")

    async def _reconcile_cascade(
        self, noisy: np.ndarray, qber_z: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cascade with the payload: (corrected key, kept mask, framed mask), all bits."""
        plan, result = self.plan, self.result
        seed = await draw_seed(self.entropy, self._purpose("cascade-seed"))
        corrector = await asyncio.to_thread(
            partial(CascadeCorrector, max_disturbance=self.cascade_max_disturbance),
            noisy,
            max(qber_z, 1e-3),
            seed,
            self.cascade_passes,
        )
        round_no = 0
        # queries in their compact wire form (satqkd_core.cascade_messages), answers in wire
        # order; a reply is applied and the next query made in one worker-thread call
        query = await asyncio.to_thread(corrector.next_query_message)
        while query is not None:
            rows = corrector.pending_rows
            await self.channel.send(
                "EC_QUERY",
                plan_id=plan.plan_id,
                round=round_no,
                permutation_seed=seed,
                passes=self.cascade_passes,
                qber_estimate=float(qber_z),
                query=query,
            )
            reply = await self._expect("EC_REPLY")
            if int(reply["round"]) != round_no or int(reply["n"]) != rows:
                raise ProtocolError(f"EC_REPLY does not answer round {round_no}")
            bits = np.unpackbits(np.frombuffer(reply["parities"], np.uint8), bitorder="big")
            if bits.size < rows:
                raise ProtocolError(f"EC_REPLY of round {round_no} holds fewer than {rows} bits")
            query = await asyncio.to_thread(_apply_then_query, corrector, bits[:rows])
            round_no += 1
        # both directions: the payload's answers and what the queries tell of the station's
        result.leak_ec_bits, result.ec_rounds = corrector.total_leak_bits, corrector.round_trips
        result.ec_input_bits = int(noisy.size)
        await self.channel.send(
            "EC_DONE",
            plan_id=plan.plan_id,
            leak_ec_bits=corrector.total_leak_bits,
            round_trips=corrector.round_trips,
        )
        every = np.ones(noisy.size, dtype=bool)
        return corrector.corrected_key, every, every

    async def _reconcile_ldpc(
        self, noisy: np.ndarray, qber: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Blind LDPC with the payload: (corrected bits of the decoded frames, kept mask,
        framed mask: the bits whose statistics count, failed frames included).

        Decoding runs in a worker thread; a malformed or unexpected LDPC message is counted
        and reported, and the exchange waits on for the right one until the reply timeout.
        """
        plan, result = self.plan, self.result
        seed = await draw_seed(self.entropy, self._purpose("ldpc-seed"))
        receiver = await asyncio.to_thread(LdpcReceiver, noisy, qber, seed)
        await self._send_ldpc(receiver.start_request())
        while not receiver.first_complete:
            await self._receive_ldpc(receiver.apply_first)
        while (request := receiver.next_request()) is not None:
            name = await self._send_ldpc(request)
            if name == "LDPC_FINAL":
                # sent before the acknowledgement arrives: the payload answers with VERIFY
                await self.channel.send(
                    "EC_DONE",
                    plan_id=plan.plan_id,
                    leak_ec_bits=receiver.charged_leak_bits,
                    round_trips=receiver.link_round_trips + 1,
                )
            await self._receive_ldpc(receiver.apply_reply)
        kept = receiver.kept_mask()
        result.leak_ec_bits = receiver.charged_leak_bits
        result.ec_rounds = receiver.link_round_trips
        result.ec_frames = receiver.frames
        result.ec_frames_failed = int(receiver.frames - receiver.frame_ok.sum())
        result.ec_input_bits = receiver.frames * receiver.plan.frame_key_bits
        return receiver.corrected_key[kept], kept, receiver.framed_mask()

    async def _send_ldpc(self, message: dict) -> str:
        name, fields = wire_message(message)
        await self.channel.send(name, plan_id=self.plan.plan_id, **fields)
        return name

    async def _receive_ldpc(self, apply: Callable[[dict], None]) -> None:
        """Wait for the LDPC message `apply` accepts; reject (count, event) any other."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reply_timeout_s
        runtime = self.channel.runtime
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    envelope = await self.inbox.get()
            except TimeoutError:
                raise PassAborted(
                    f"payload did not answer the LDPC exchange within {self.reply_timeout_s:g} s",
                    tell_payload=True,
                ) from None
            if envelope is _ABORT_REQUESTED:
                self._check_abort()
            name = envelope.spec.name
            if name == "ABORT":
                raise PassAborted(f"payload aborted: {envelope.fields['reason']}")
            try:
                if name not in MESSAGE_NAMES.values():
                    raise ProtocolError("not an LDPC message, during LDPC reconciliation")
                await asyncio.to_thread(apply, message_from_wire(name, envelope.fields))
                return
            except (ProtocolError, InputError) as exc:
                runtime.counters.qkd_rejected += 1
                await runtime.emit_event("QKD_MESSAGE_REJECTED", f"{name}: {exc}")


def _apply_then_query(corrector: CascadeCorrector, parities: np.ndarray) -> bytes | None:
    """Apply one EC_REPLY's parities and get the next query (None: corrected): one hop to the
    worker thread per round instead of two (each hop costs the event loop a wake-up)."""
    corrector.apply_reply_message(parities)
    return corrector.next_query_message()
