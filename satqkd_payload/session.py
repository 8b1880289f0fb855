"""The payload's side of one pass with one station: on-board sifting and the reference end of
post-processing (the payload holds the reference key; the station corrects towards it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from satqkd_core import finite_key as fk
from satqkd_core.cascade import CascadeResponder
from satqkd_core.codec import Envelope
from satqkd_core.detection_report import decode_detection_report
from satqkd_core.errors import ProtocolError
from satqkd_core.ldpc import mother_codes
from satqkd_core.ldpc_reconciliation import LdpcSender, message_from_wire, wire_message
from satqkd_core.pass_decisions import (
    ProtocolParameters,
    feasibility_abort_reason,
    kept_statistics,
    no_key_reason,
    statistics_from_counts,
)
from satqkd_core.privacy_amplification import toeplitz_hash, toeplitz_seed_bits
from satqkd_core.pulse_shift import (
    PooledPulseShift,
    PulseShiftDecision,
    resolve_pulse_shift,
    shifted_in_range,
)
from satqkd_core.sifting import pack_intensity_labels, sift_mask
from satqkd_core.verification import (
    verification_hash_key_words,
    verification_tag,
    verification_tag_bits,
)
from satqkd_runtime.entropy_draws import (
    RandomBytes,
    draw_bits,
    draw_hash_key_words,
    draw_key_id,
)
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import QkdChannel

log = logging.getLogger("satqkd.payload")


@dataclass
class _SiftedChunk:
    x_bits: np.ndarray
    x_intensity: np.ndarray
    z_count_by_intensity: np.ndarray
    reply: dict


@dataclass
class PayloadPassOutcome:
    """What the payload knows at the end of a pass (no key material)."""

    key_id: str | None = None
    key_bits: int = 0  # bits stored (privacy amplification's output less the pool refill)
    auth_refill_bits: int = 0  # bits of the output that refilled the authentication pool
    confirmed: bool = False
    discarded: bool = False  # a stored key was deleted: the station never confirmed it
    abort_reason: str | None = None
    chunks: int = 0
    stored_unix_s: float | None = None


def _no_refill(_output_bits: int) -> int:
    return 0


@dataclass
class PayloadSession:
    """Sifting and post-processing state for one pass plan with one station."""

    plan_id: int
    station: str
    # pulse index -> this pass's pattern record (basis, bit, intensity), from the sequencer
    pattern: Callable[[np.ndarray], Any]
    channel: QkdChannel
    keystore: KeyStore
    params: ProtocolParameters
    entropy: RandomBytes
    # how many leading bits of a new key of the given length go to the authentication pool
    auth_refill: Callable[[int], int] = _no_refill
    # a stored key the station has not confirmed after this long is discarded
    pending_key_timeout_s: float = 60.0
    # whole pulse periods the station's timing sync may be off by (the mission's clock offset
    # uncertainty over the pulse period; 0: none), and the pulses of the pass (shifted indices
    # stay within them); satqkd_core.pulse_shift
    max_pulse_shift: int = 0
    n_pulses: int = 2**62
    outcome: PayloadPassOutcome = field(default_factory=PayloadPassOutcome)
    _chunks: dict[int, _SiftedChunk] = field(default_factory=dict)
    _reference_key: np.ndarray | None = None
    _x_intensity: np.ndarray | None = None
    _statistics: fk.DecoyStatistics | None = None
    _responder: CascadeResponder | None = None
    _ldpc: LdpcSender | None = None
    _leak_ec_bits: int = 0
    _finished: bool = False
    _refill: bytearray | None = None
    _pa_input_bits: int = 0
    _pending_timer: asyncio.Task[None] | None = None
    _pooled_shift: PooledPulseShift | None = None

    @property
    def finished(self) -> bool:
        """Get: whether the pass has ended with a key or an abort."""
        return self._finished

    def _purpose(self, what: str) -> str:
        return f"{what}/{self.station}/{self.plan_id}"

    async def prepare_reconciliation(self) -> None:
        """Control: load what error correction needs that does not depend on the pass's key
        (LDPC: the shipped mother codes, cached for the daemon's life) while the pass runs,
        not after LOS. A failure is logged here; LDPC_START meets it again and ends the pass."""
        if self.params.reconciliation != "ldpc":
            return
        try:
            await asyncio.to_thread(mother_codes)
        except Exception as exc:  # reported again where it ends the pass
            log.error("plan %d: LDPC codes not loaded ahead: %s", self.plan_id, exc)

    async def handle(self, envelope: Envelope) -> None:
        """Process one authenticated message from the station."""
        name, fields = envelope.spec.name, envelope.fields
        if fields.get("plan_id") != self.plan_id:
            raise ProtocolError(f"{name} for plan {fields.get('plan_id')}, expected {self.plan_id}")
        if self._finished and name not in ("KEY_STORED", "ABORT"):
            raise ProtocolError(f"{name} after the pass ended")
        handler = {
            "DETECTION_REPORT": self._on_detection_report,
            "PE_COUNTS": self._on_pe_counts,
            "EC_QUERY": self._on_ec_query,
            "LDPC_START": self._on_ldpc_start,
            "LDPC_REVEAL_REQUEST": self._on_ldpc_request,
            "LDPC_FINAL": self._on_ldpc_request,
            "EC_DONE": self._on_ec_done,
            "VERIFY_RESULT": self._on_verify_result,
            "KEY_STORED": self._on_key_stored,
            "ABORT": self._on_abort,
        }.get(name)
        if handler is None:
            raise ProtocolError(f"{name} is not expected by the payload")
        if name.startswith("LDPC_"):
            await handler(message_from_wire(name, fields))
        else:
            await handler(fields)

    async def _on_detection_report(self, f: dict) -> None:
        chunk = int(f["chunk"])
        if chunk in self._chunks:  # re-sent report: answer the same again
            await self.channel.send("SIFT_RESULT", **self._chunks[chunk].reply)
            return
        if self._reference_key is not None:
            raise ProtocolError(f"DETECTION_REPORT chunk {chunk} after parameter estimation")
        # the CPU-heavy steps run off the event loop so the bus stays serviced meanwhile
        pulse_index, ogs_basis = await asyncio.to_thread(decode_detection_report, f["report"])
        if pulse_index.size != f["n_detections"]:
            raise ProtocolError(
                f"chunk {chunk}: report holds {pulse_index.size} detections, "
                f"header says {f['n_detections']}"
            )
        frame_shift = await asyncio.to_thread(self._frame_pulse_shift, pulse_index)
        shift, ambiguous, in_range = self._pulse_shift(frame_shift, pulse_index, chunk)
        sifted = np.flatnonzero(in_range)  # ascending: the kept detections stay in order
        record = self.pattern(pulse_index[sifted] + shift)
        same = sift_mask(record.basis, ogs_basis[sifted])
        keep = np.zeros(pulse_index.size, dtype=bool)
        keep[sifted[same]] = True
        kept_basis = record.basis[same]
        kept_intensity = record.intensity[same]
        kept_bits = record.bit[same]
        is_x = kept_basis == 0
        z_intensity = kept_intensity[~is_x]
        reply = {
            "plan_id": self.plan_id,
            "chunk": chunk,
            "n_detections": int(pulse_index.size),
            "keep": np.packbits(keep.astype(np.uint8), bitorder="big").tobytes(),
            "n_kept": int(keep.sum()),
            "intensity": pack_intensity_labels(kept_intensity),
            "z_bits": np.packbits(kept_bits[~is_x], bitorder="big").tobytes(),
            "pulse_shift": shift,
            "pulse_index_ambiguous": ambiguous,
        }
        self._chunks[chunk] = _SiftedChunk(
            x_bits=kept_bits[is_x].copy(),
            x_intensity=kept_intensity[is_x].copy(),
            z_count_by_intensity=np.bincount(z_intensity, minlength=3).astype(np.int64),
            reply=reply,
        )
        self.outcome.chunks = len(self._chunks)
        await self.channel.send("SIFT_RESULT", **reply)

    def _frame_pulse_shift(self, pulse_index: np.ndarray) -> PulseShiftDecision | None:
        """The frame's own vacuum-pulse counts at each candidate shift (None: no shift to
        resolve, or a frame without detections); runs off the event loop."""
        if self.max_pulse_shift == 0 or pulse_index.size == 0:
            return None
        return resolve_pulse_shift(
            pulse_index,
            self.max_pulse_shift,
            self.n_pulses,
            self.params.probabilities[2],
            lambda index: self.pattern(index).intensity,
        )

    def _pulse_shift(
        self, frame: PulseShiftDecision | None, pulse_index: np.ndarray, chunk: int
    ) -> tuple[int, bool, np.ndarray]:
        """The whole pulse periods to add to the frame's indices (satqkd_core.pulse_shift),
        whether they are ambiguous, and which detections to sift (none when ambiguous). A frame
        too weak to decide alone is decided by the evidence pooled over the pass so far."""
        if self._pooled_shift is None:
            self._pooled_shift = PooledPulseShift(self.params.probabilities[2])
        pool = self._pooled_shift
        if frame is None:  # nothing to resolve, or no detections: nothing is sifted wrongly
            shift = pool.last_shift if self.max_pulse_shift else 0
            return shift, False, shifted_in_range(pulse_index, shift, self.n_pulses)
        decision = pool.decide(frame)
        if decision.shift is None:
            log.warning("plan %d chunk %d: %s", self.plan_id, chunk, decision.reason)
            return 0, True, np.zeros(pulse_index.size, dtype=bool)
        if decision.shift:
            log.info(
                "plan %d chunk %d: pulse indices shifted by %+d (%d of %d detections on vacuum "
                "pulses there, %.0f expected at a wrong shift)",
                self.plan_id,
                chunk,
                decision.shift,
                int(decision.vacuum_hits[decision.candidates == decision.shift][0]),
                decision.n_evidence,
                decision.expected_wrong,
            )
        return decision.shift, False, shifted_in_range(pulse_index, decision.shift, self.n_pulses)

    async def _on_pe_counts(self, f: dict) -> None:
        n_chunks = int(f["n_chunks"])
        missing = [c for c in range(n_chunks) if c not in self._chunks]
        if missing:
            await self._abort(f"payload has no sifting record for chunks {missing[:5]}")
            return
        ordered = [self._chunks[c] for c in range(n_chunks)]
        x_bits = np.concatenate([c.x_bits for c in ordered]) if ordered else np.zeros(0, np.uint8)
        x_intensity = (
            np.concatenate([c.x_intensity for c in ordered]) if ordered else np.zeros(0, np.uint8)
        )
        x_counts = np.bincount(x_intensity, minlength=3)
        z_counts = sum((c.z_count_by_intensity for c in ordered), np.zeros(3, np.int64))
        # the station's counts must match what the payload itself sifted
        if list(x_counts) != list(f["x_detections"]) or list(z_counts) != list(f["z_detections"]):
            await self._abort(
                f"station's sifted counts {list(f['x_detections'])}/{list(f['z_detections'])} "
                f"differ from the payload's {list(x_counts)}/{list(z_counts)}"
            )
            return
        self._reference_key = x_bits
        self._x_intensity = x_intensity
        self._statistics = statistics_from_counts(self.params, f)
        reason = feasibility_abort_reason(self.params, self._statistics)
        if reason is not None:
            self.outcome.abort_reason = reason
            self._finished = True

    async def _on_ec_query(self, f: dict) -> None:
        if self._reference_key is None:
            raise ProtocolError("EC_QUERY before parameter estimation")
        if self.params.reconciliation != "cascade":
            raise ProtocolError(
                f"EC_QUERY, but this mission reconciles by {self.params.reconciliation}"
            )
        if self._responder is None:
            self._responder = await asyncio.to_thread(
                CascadeResponder,
                self._reference_key,
                int(f["permutation_seed"]),
                int(f["passes"]),
            )
        # compact rows (satqkd_core.cascade_messages): a malformed query is a ProtocolError
        parities = await asyncio.to_thread(self._responder.reply_message, f["query"])
        await self.channel.send(
            "EC_REPLY",
            plan_id=self.plan_id,
            round=int(f["round"]),
            parities=np.packbits(parities, bitorder="big").tobytes(),
            n=int(parities.size),
        )

    async def _on_ldpc_start(self, message: dict) -> None:
        if self._reference_key is None or self._statistics is None:
            raise ProtocolError("LDPC_START before parameter estimation")
        if self.params.reconciliation != "ldpc":
            raise ProtocolError(
                f"LDPC_START, but this mission reconciles by {self.params.reconciliation}"
            )
        if self._ldpc is not None:
            raise ProtocolError("LDPC_START after LDPC reconciliation started")
        # punctured fill: private uniform bits straight from the entropy source, one per
        # punctured symbol (the leak bound m - p credits exactly these)
        needed = LdpcSender.fill_bits_needed(
            self._reference_key.size, message, eps_frame=self.params.ldpc_eps_frame
        )
        fill = await self.entropy.read((needed + 7) // 8, self._purpose("ldpc-fill"))
        self._ldpc = await asyncio.to_thread(
            LdpcSender.from_start_request,
            self._reference_key,
            message,
            eps_frame=self.params.ldpc_eps_frame,
            fill=fill,
        )
        for part in self._ldpc.first_messages():
            await self._send_ldpc(part)

    async def _on_ldpc_request(self, message: dict) -> None:
        """A reveal request or the final request: answer it; after the final one, keep only
        the frames the station decoded (bits and decoy statistics alike)."""
        if self._ldpc is None or self._reference_key is None or self._statistics is None:
            raise ProtocolError("LDPC request before LDPC_START")
        reply = await asyncio.to_thread(self._ldpc.reply, message)
        await self._send_ldpc(reply)
        if self._ldpc.done and self._x_intensity is not None:
            # the key keeps the decoded frames; the statistics stay those of every frame
            # (dropped frames are charged as disclosed: ldpc_reconciliation's docstring)
            framed = self._ldpc.framed_mask()
            self._statistics = kept_statistics(self._statistics, self._x_intensity[framed])
            self._reference_key = self._reference_key[self._ldpc.kept_mask()]
            self._x_intensity = None  # restricted once, whatever re-delivery follows

    async def _send_ldpc(self, message: dict) -> None:
        name, fields = wire_message(message)
        await self.channel.send(name, plan_id=self.plan_id, **fields)

    def _disclosed_ec_bits(self) -> int:
        """Bits error correction disclosed so far; ProtocolError if it has not finished."""
        if self.params.reconciliation == "ldpc":
            if self._ldpc is None or not self._ldpc.done:
                raise ProtocolError("EC_DONE before LDPC reconciliation finished")
            return self._ldpc.charged_leak_bits
        if self._responder is None:
            raise ProtocolError("EC_DONE before any EC_QUERY")
        return self._responder.total_leak_bits

    async def _on_ec_done(self, f: dict) -> None:
        if self._reference_key is None:
            raise ProtocolError("EC_DONE before parameter estimation")
        disclosed = self._disclosed_ec_bits()
        if int(f["leak_ec_bits"]) != disclosed:
            await self._abort(
                f"station counts {f['leak_ec_bits']} leaked bits, payload disclosed {disclosed}"
            )
            return
        self._leak_ec_bits = disclosed
        n = int(self._reference_key.size)
        if n == 0:
            await self._abort("error correction kept no key bits (every frame failed)")
            return
        words = await draw_hash_key_words(
            self.entropy,
            verification_hash_key_words(self.params.eps_cor, n),
            self._purpose("verification-key"),
        )
        tag = await asyncio.to_thread(verification_tag, self._reference_key, words)
        await self.channel.send("VERIFY", plan_id=self.plan_id, hash_key=words, tag=tag)

    def _final_key_length(self, n: int, leak: int) -> tuple[int, str]:
        """Get: (the bound's key length for n corrected bits and `leak` disclosed bits, why
        there is no key when it is 0); the BBM92 session (bbm92_session.py) has its own."""
        if self._statistics is None:
            raise ProtocolError("VERIFY_RESULT before verification")
        result = fk.finite_key_length(
            self._statistics, self.params.eps_sec, self.params.eps_cor, leak
        )
        return result.key_length_bits, no_key_reason(result, leak)

    async def _on_verify_result(self, f: dict) -> None:
        if self._reference_key is None:
            raise ProtocolError("VERIFY_RESULT before verification")
        if not f["ok"]:
            self.outcome.abort_reason = "verification failed: keys differ after error correction"
            self._finished = True
            return
        n = int(self._reference_key.size)
        leak = self._leak_ec_bits + verification_tag_bits(self.params.eps_cor, n)
        m, no_key = self._final_key_length(n, leak)
        if m <= 0:
            await self._abort(no_key)
            return
        n_seed = toeplitz_seed_bits(n, m)
        seed = await draw_bits(self.entropy, n_seed, self._purpose("pa-seed"))
        final_key = await asyncio.to_thread(toeplitz_hash, self._reference_key, seed, m)
        self._pa_input_bits = n
        refill = self.auth_refill(m)
        if refill % 128 or not 0 <= refill < m:
            raise ProtocolError(f"authentication refill of {refill} bits out of a {m}-bit key")
        key_id = await draw_key_id(self.entropy, self._purpose("key-id"))
        self._refill = bytearray(np.packbits(final_key[:refill], bitorder="big").tobytes())
        self.keystore.store(
            key_id,
            final_key[refill:],
            self.station,
            self.plan_id,
            self.channel.runtime.clock.now_unix_s(),
        )
        final_key.fill(0)
        self._reference_key.fill(0)
        self.outcome.stored_unix_s = self.channel.runtime.clock.now_unix_s()
        self.outcome.key_id, self.outcome.key_bits = key_id, m - refill
        self.outcome.auth_refill_bits = refill
        self._pending_timer = asyncio.create_task(self._expire_pending_key())
        await self.channel.send(
            "PA_SEED",
            plan_id=self.plan_id,
            output_bits=m,
            seed=np.packbits(seed, bitorder="big").tobytes(),
            n_seed_bits=n_seed,
            key_id=key_id,
            auth_refill_bits=refill,
        )

    async def _expire_pending_key(self) -> None:
        """Discard the stored key if the station does not confirm holding it in time."""
        clock = self.channel.runtime.clock
        await clock.sleep_until(clock.now_unix_s() + self.pending_key_timeout_s)
        if not self.outcome.confirmed and not self._finished:
            await self._abort(
                f"station did not confirm key {self.outcome.key_id} within "
                f"{self.pending_key_timeout_s:g} s"
            )

    async def _on_key_stored(self, f: dict) -> None:
        if self.outcome.key_id is None or f["key_id"] != self.outcome.key_id:
            raise ProtocolError(f"KEY_STORED for unknown key {f['key_id']!r}")
        if self.outcome.confirmed:
            return  # re-delivered: KEY_CONFIRMED went out already
        if self.outcome.discarded:
            raise ProtocolError(f"KEY_STORED for key {f['key_id']} already discarded")
        if int(f["key_bits"]) != self.outcome.key_bits:
            raise ProtocolError("KEY_STORED with a different key length")
        self.keystore.confirm(self.outcome.key_id)
        self.outcome.confirmed = True
        self._finished = True
        self._cancel_pending_timer()
        if self._refill:
            self.channel.extend_pool(self.outcome.key_id, bytes(self._refill))
            self._refill[:] = bytes(len(self._refill))
        await self.channel.send("KEY_CONFIRMED", plan_id=self.plan_id, key_id=self.outcome.key_id)

    def _cancel_pending_timer(self) -> None:
        if self._pending_timer is not None and self._pending_timer is not asyncio.current_task():
            self._pending_timer.cancel()
        self._pending_timer = None

    def _discard_key(self) -> None:
        """Delete the key this pass stored, whatever its state: the station has no copy."""
        self._cancel_pending_timer()
        if self._refill is not None:
            self._refill[:] = bytes(len(self._refill))
        if self.outcome.key_id is not None and not self.outcome.discarded:
            self.keystore.discard(self.outcome.key_id)
            self.outcome.discarded = True
            self.outcome.confirmed = False

    async def _on_abort(self, f: dict) -> None:
        # the station has no key from this pass (it aborted before storing, or discarded its
        # pending copy): neither may this end keep one
        self.outcome.abort_reason = str(f["reason"]) or "aborted by the station"
        self._finished = True
        self._discard_key()

    async def abort(self, reason: str) -> None:
        """Control: end the pass without a key at either end and tell the station why
        (a key already confirmed by both ends stays)."""
        if not self._finished:
            await self._abort(reason)

    async def _abort(self, reason: str) -> None:
        self.outcome.abort_reason = reason
        self._finished = True
        self._discard_key()
        await self.channel.send("ABORT", plan_id=self.plan_id, reason=reason[:500])

    def release(self) -> None:
        """Control: overwrite and drop the pass's key material (the session is over)."""
        self._cancel_pending_timer()
        for chunk in self._chunks.values():
            chunk.x_bits.fill(0)
            chunk.reply["z_bits"] = b""
        self._chunks.clear()
        for array in (self._reference_key, self._x_intensity):
            if array is not None:
                array.fill(0)
        self._reference_key = self._x_intensity = None
        self._responder = None
        self._ldpc = None

    def pass_figures(self) -> dict[str, int]:
        """Get: the pass's counts for its summary telemetry (counts only, no key material)."""
        replies = [chunk.reply for chunk in self._chunks.values()]
        return {
            "detections": sum(int(r["n_detections"]) for r in replies),
            "sifted_bits": sum(int(r["n_kept"]) for r in replies),
            "leak_ec_bits": int(self._leak_ec_bits),
            # the bits privacy amplification hashed, once it did
            "pa_input_bits": self._pa_input_bits,
        }
