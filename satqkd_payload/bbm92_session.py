"""The payload's side of a BBM92 pass (docs/bbm92.md, decision 0035): the pair source and the
on-board time tagger over the QKD window, coincidence finding block by block against the
station's uplinked timing, sifting, the test-basis verdict, and the reference end of Cascade,
verification, the Tomamichel et al. (2012) key length and privacy amplification (the
post-processing and key storage are `PayloadSession`'s, unchanged).

The payload is the high-count side: it keeps its own tags (its clock, QKD start as 0) only as
long as a timing block may still need them, the clock-offset uncertainty either side.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.interfaces import DeviceError, TagBuffer, TimeTagger
from satqkd_core.bbm92 import (
    Bbm92Parameters,
    block_coincidences,
    check_test_sample,
    pack_bits,
    sift_coincidences,
    unpack_bits,
)
from satqkd_core.bbm92_finite_key import bbm92_key_length
from satqkd_core.coincidence import ClockRelation
from satqkd_core.errors import InputError, ProtocolError
from satqkd_core.timing_compression import CompressedTiming, decode_timing
from satqkd_payload.pass_summary import EmissionWindow
from satqkd_payload.session import PayloadSession

if TYPE_CHECKING:
    from satqkd_payload.daemon import PayloadDaemon

__all__ = ["Bbm92PayloadSession", "run_pair_source"]

log = logging.getLogger("satqkd.payload")

_MARGIN_PS = 1_000_000_000  # 1 ms beyond the offset uncertainty and the drift
_CHANNELS = 4  # tagger channels 1..4: (X,0), (X,1), (Z,0), (Z,1)


@dataclass
class _Block:
    reply: dict[str, Any]
    key_bits: np.ndarray
    test_bits: np.ndarray


@dataclass
class Bbm92PayloadSession(PayloadSession):
    """One BBM92 pass with one station: the payload's tags, blocks and verdict."""

    bbm92: Bbm92Parameters | None = None
    qkd_start_unix_s: float = 0.0
    _tag_ps: list[np.ndarray] = field(default_factory=list)
    _tag_channel: list[np.ndarray] = field(default_factory=list)
    _tags_until_ps: int = -(2**62)
    _tagging_done: bool = False
    _pending: dict[int, tuple[dict[str, Any], np.ndarray, np.ndarray]] = field(default_factory=dict)
    _blocks: dict[int, _Block] = field(default_factory=dict)
    _relation: ClockRelation | None = None
    _next_chunk: int = 0
    _k_test_bits: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    payload_tags: int = 0
    coincidences: int = 0
    significance: float = float("nan")

    def _params(self) -> Bbm92Parameters:
        if self.bbm92 is None:
            raise ProtocolError("BBM92 session without BBM92 parameters")
        return self.bbm92

    # --- the on-board tags ------------------------------------------------------------

    async def add_tags(self, buffer: TagBuffer, offset_ps: int) -> None:
        """Keep one buffer of the on-board tagger (`offset_ps`: its epoch after QKD start)."""
        channel = np.asarray(buffer.channel, dtype=np.uint8)
        ok = (channel >= 1) & (channel <= _CHANNELS)
        ts = np.asarray(buffer.timestamp_ps, dtype=np.int64)[ok] + np.int64(offset_ps)
        self._tag_ps.append(ts)
        self._tag_channel.append(channel[ok])
        self.payload_tags += int(ts.size)
        stop_ps = round(buffer.stop_unix_s * 1e12) - round(self.qkd_start_unix_s * 1e12)
        self._tags_until_ps = max(self._tags_until_ps, stop_ps)
        await self._process_ready()

    async def tagging_ended(self) -> None:
        """Control: the window is over; blocks waiting for later tags go with what there is."""
        self._tagging_done = True
        await self._process_ready()

    def _margin_ps(self, stop_ps: int) -> int:
        params = self._params()
        return int(params.max_offset_ps + params.max_drift * abs(stop_ps)) + _MARGIN_PS

    # --- messages -----------------------------------------------------------------------

    async def handle(self, envelope: Any) -> None:
        """Process one authenticated message from the station (BBM92's own, then the
        post-processing every family shares)."""
        name, fields = envelope.spec.name, envelope.fields
        if name not in ("BBM92_TIMING", "BBM92_TEST"):
            if name == "EC_QUERY" and self._reference_key is None:
                raise ProtocolError("EC_QUERY before the test sample's verdict")
            await super().handle(envelope)
            return
        if fields.get("plan_id") != self.plan_id:
            raise ProtocolError(f"{name} for plan {fields.get('plan_id')}, expected {self.plan_id}")
        if self.finished:
            raise ProtocolError(f"{name} after the pass ended")
        if name == "BBM92_TIMING":
            await self._on_timing(fields)
        else:
            await self._on_test(fields)

    async def _on_timing(self, f: dict) -> None:
        chunk = int(f["chunk"])
        if chunk in self._blocks:  # re-sent block: the same answer again
            await self.channel.send("BBM92_COINCIDENCES", **self._blocks[chunk].reply)
            return
        if self._reference_key is not None or chunk < self._next_chunk or chunk in self._pending:
            raise ProtocolError(f"BBM92_TIMING block {chunk} out of order")
        start, stop = int(f["block_start_ps"]), int(f["block_stop_ps"])
        if not 0 <= start < stop:
            raise ProtocolError(f"BBM92_TIMING block {chunk}: span {start}..{stop} ps")
        try:
            b_ps, basis = await asyncio.to_thread(
                decode_timing, CompressedTiming.from_bytes(f["timing"])
            )
        except InputError as exc:
            raise ProtocolError(f"BBM92_TIMING block {chunk}: {exc}") from None
        if b_ps.size and (int(b_ps[0]) < start - 1_000_000 or int(b_ps[-1]) > stop + 1_000_000):
            raise ProtocolError(f"BBM92_TIMING block {chunk}: tags outside its span")
        self._pending[chunk] = (f, b_ps, basis)
        await self._process_ready()

    async def _process_ready(self) -> None:
        """Answer the pending blocks, in order, whose payload tags are all in."""
        async with self._lock:
            while (pending := self._pending.get(self._next_chunk)) is not None:
                f, b_ps, basis = pending
                stop = int(f["block_stop_ps"])
                if not self._tagging_done and self._tags_until_ps < stop + self._margin_ps(stop):
                    return
                del self._pending[self._next_chunk]
                await self._answer_block(self._next_chunk, f, b_ps, basis)
                self._next_chunk += 1

    def _own_tags(self, start_ps: int, stop_ps: int) -> tuple[np.ndarray, np.ndarray]:
        """The payload's tags a block needs, and forget those no later block needs."""
        if len(self._tag_ps) > 1:
            self._tag_ps = [np.concatenate(self._tag_ps)]
            self._tag_channel = [np.concatenate(self._tag_channel)]
        if not self._tag_ps:
            return np.zeros(0, np.int64), np.zeros(0, np.uint8)
        ts, ch = self._tag_ps[0], self._tag_channel[0]
        if ts.size > 1 and np.any(ts[1:] < ts[:-1]):  # buffers' edges may interleave by ps
            order = np.argsort(ts, kind="stable")
            ts, ch = ts[order], ch[order]
        lo, hi = np.searchsorted(
            ts, [start_ps - self._margin_ps(start_ps), stop_ps + self._margin_ps(stop_ps)]
        )
        keep_from = int(np.searchsorted(ts, stop_ps - self._margin_ps(stop_ps)))
        a_ps, a_channel = ts[lo:hi].copy(), ch[lo:hi].copy()
        self._tag_ps, self._tag_channel = [ts[keep_from:]], [ch[keep_from:]]
        return a_ps, a_channel

    async def _answer_block(
        self, chunk: int, f: dict, b_ps: np.ndarray, station_basis: np.ndarray
    ) -> None:
        params = self._params()
        a_ps, a_channel = self._own_tags(int(f["block_start_ps"]), int(f["block_stop_ps"]))
        pairs = None
        if a_ps.size >= 2 and b_ps.size >= 2:
            try:
                pairs, relation = await asyncio.to_thread(
                    block_coincidences, a_ps, b_ps, self._relation,
                    params.max_offset_ps, params.max_drift, params.coincidence_window_ps,
                )  # fmt: skip
            except InputError as exc:  # a block too short to correlate: none found in it
                log.warning("plan %d block %d: %s", self.plan_id, chunk, exc)
            else:
                self.significance = relation.significance
                if pairs is not None:
                    self._relation = relation
        index_a = pairs.index_a if pairs is not None else np.zeros(0, np.int64)
        index_b = pairs.index_b if pairs is not None else np.zeros(0, np.int64)
        own_basis = ((a_channel[index_a] - 1) >> 1).astype(np.uint8)
        own_bit = ((a_channel[index_a] - 1) & 1).astype(np.uint8)
        sifted = sift_coincidences(own_basis, station_basis[index_b], own_bit)
        reply = {
            "plan_id": self.plan_id,
            "chunk": chunk,
            "n": int(index_b.size),
            "index": index_b.astype(np.uint32),
            "basis": pack_bits(own_basis),
            "offset_ps": float(pairs.final_offset_ps) if pairs is not None else float("nan"),
            "drift_ppb": float(pairs.final_drift) * 1e9 if pairs is not None else float("nan"),
            "significance": float(self.significance),
        }
        self._blocks[chunk] = _Block(reply, sifted.key_bits.copy(), sifted.test_bits.copy())
        self.coincidences += int(index_b.size)
        self.outcome.chunks = len(self._blocks)
        await self.channel.send("BBM92_COINCIDENCES", **reply)

    async def _on_test(self, f: dict) -> None:
        if self._reference_key is not None:
            raise ProtocolError("BBM92_TEST after the test sample's verdict")
        n_chunks = int(f["n_chunks"])
        missing = [c for c in range(n_chunks) if c not in self._blocks]
        if missing or len(self._blocks) != n_chunks:
            await self._abort(f"payload has no coincidences for blocks {missing[:5]}")
            return
        ordered = [self._blocks[c] for c in range(n_chunks)]
        key = np.concatenate([b.key_bits for b in ordered]) if ordered else np.zeros(0, np.uint8)
        test = np.concatenate([b.test_bits for b in ordered]) if ordered else np.zeros(0, np.uint8)
        if (key.size, test.size) != (int(f["n_key_bits"]), int(f["k_test_bits"])):
            await self._abort(
                f"station's sifted counts {f['n_key_bits']}/{f['k_test_bits']} differ from "
                f"the payload's {key.size}/{test.size}"
            )
            return
        station_test = unpack_bits(f["test_bits"], test.size)
        verdict = check_test_sample(test, station_test, self._params().qber_tolerance)
        await self.channel.send(
            "BBM92_TEST_RESULT",
            plan_id=self.plan_id,
            k_test_bits=verdict.k_test_bits,
            test_errors=verdict.test_errors,
            passed=verdict.passed,
        )
        self._k_test_bits = verdict.k_test_bits
        if not verdict.passed:
            self.outcome.abort_reason = (
                f"test error rate {verdict.qber_test:.4f} above the tolerance "
                f"{verdict.qber_tolerance:g} ({verdict.test_errors}/{verdict.k_test_bits})"
            )
            self._finished = True
            return
        self._reference_key = key

    def _final_key_length(self, n: int, leak: int) -> tuple[int, str]:
        """Get: Tomamichel et al. (2012) Eq. (2) for n corrected bits (docs/bbm92.md)."""
        length = bbm92_key_length(
            n, self._k_test_bits, self._params().qber_tolerance, leak,
            self.params.eps_sec, self.params.eps_cor,
        )  # fmt: skip
        why = (
            f"finite-key bound (tomamichel2012) leaves no key: n {n}, k {self._k_test_bits}, "
            f"mu {length.mu:.4f}, leak {leak} bits"
        )
        return length.key_length_bits, why

    def release(self) -> None:
        """Control: overwrite and drop the pass's tags and sifted bits, then the rest."""
        for block in self._blocks.values():
            block.key_bits.fill(0)
            block.test_bits.fill(0)
        for channel in self._tag_channel:
            channel.fill(0)
        self._tag_ps, self._tag_channel = [], []
        self._pending.clear()
        super().release()

    def pass_figures(self) -> dict[str, int]:
        """Get: the pass's counts for its summary telemetry (no key material)."""
        figures = super().pass_figures()
        figures["detections"] = self.payload_tags
        figures["sifted_bits"] = sum(
            int(b.key_bits.size) + int(b.test_bits.size) for b in self._blocks.values()
        )
        return figures


async def run_pair_source(
    daemon: PayloadDaemon, plan: dict, session: Bbm92PayloadSession, tagger: TimeTagger
) -> None:
    """The QKD window of a BBM92 plan: the on-board tagger from `tagger_lead_s` before QKD
    start, the pair source on from QKD start to QKD stop, every buffer into the session."""
    key = (str(plan["station"]), int(plan["plan_id"]))
    params = session._params()
    start, stop = float(plan["qkd_start_unix_s"]), float(plan["qkd_stop_unix_s"])
    try:
        await daemon.source.configure(plan["repetition_rate_hz"])
        await daemon.clock.sleep_until(start - params.tagger_lead_s)
        epoch = await tagger.start()
        await daemon.clock.sleep_until(start)
        if daemon.ground_link_lost:
            daemon._interrupt(key, "ground link down at QKD start: pair source kept safe")
            return
        if key in daemon.interrupted:
            return
        await daemon.source.enable(start)
    except DeviceError as exc:
        await daemon._instrument_error(f"plan {key[1]}: pair source or tagger: {exc}")
        daemon._interrupt(key, f"pair source or on-board tagger not started: {exc}")
        await session.tagging_ended()
        return
    daemon._emitting_for = key
    daemon.emissions[key] = EmissionWindow(start, stop, plan["repetition_rate_hz"])
    daemon.mode = "qkd"
    await daemon._emit("PASS_STARTED", f"pair source on for {plan['station']}")
    offset_ps = round((epoch - start) * 1e12)
    try:
        while (buffer := await tagger.read(stop - start + 60.0)) is not None:
            await session.add_tags(buffer, offset_ps)
            if buffer.stop_unix_s >= stop or session.finished:
                break
    except DeviceError as exc:
        await daemon._instrument_error(f"plan {key[1]}: on-board tagger: {exc}")
        daemon._interrupt(key, f"on-board tagger failed: {exc}")
    finally:
        daemon._emitting_for = None
        await daemon._safe_source("end of the QKD window")
        try:
            await tagger.stop()
        except DeviceError as exc:
            log.warning("payload: on-board tagger did not stop: %s", exc)
        daemon.mode = "idle"
    await session.tagging_ended()
    await daemon._emit("PASS_ENDED", f"pair source off after {plan['station']} pass")
