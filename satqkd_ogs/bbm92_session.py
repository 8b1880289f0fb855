"""The station's side of a BBM92 pass (docs/bbm92.md, decision 0035): its tags with the
predicted light time removed, uplinked block by block as compressed timing; the payload's
coincidences back; sifting, the test sample, Cascade (the station corrects towards the
payload's reference), verification, the Tomamichel et al. (2012) key length and privacy
amplification, the key stored pending until the payload confirms it (`OgsSession`'s steps).

Timeline: picoseconds after the plan's QKD start on the station's clock, each tag's predicted
light time (the plan's ephemeris, `light_time`) subtracted, so what is left between the two
ends is the payload clock's offset and drift and the ephemeris error.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.interfaces import TagBuffer
from satqkd_core.bbm92 import (
    Bbm92Parameters,
    pack_bits,
    sift_coincidences,
    unpack_bits,
)
from satqkd_core.bbm92_finite_key import bbm92_key_length
from satqkd_core.errors import InputError, ProtocolError
from satqkd_core.timing_compression import encode_timing
from satqkd_core.verification import verification_tag_bits
from satqkd_ogs.reconciliation import PassAborted
from satqkd_ogs.session import ChunkRecord, OgsSession

__all__ = ["Bbm92Figures", "Bbm92OgsSession"]

_CHANNELS = 4
log = logging.getLogger("satqkd.ogs")


@dataclass
class Bbm92Figures:
    """What a BBM92 pass gave at the station, for its summary and the report (no key bits)."""

    timing_blocks: int = 0
    uplink_timing_bytes: int = 0
    coincidences: int = 0
    n_key_bits: int = 0
    k_test_bits: int = 0
    test_errors: int = 0
    qber_test: float = math.nan
    correlation_significance: float = math.nan
    clock_offset_ps: float = math.nan
    finite_key_bound: str = "tomamichel2012"
    mu: float = math.nan
    key_length_bits: int = 0


@dataclass
class _StationBlock:
    start_ps: int
    stop_ps: int
    timeline_ps: np.ndarray
    channel: np.ndarray
    key_bits: np.ndarray | None = None
    test_bits: np.ndarray | None = None


class Bbm92OgsSession(OgsSession):
    """Pass execution and post-processing of one BBM92 plan."""

    def __init__(self, *args: Any, bbm92: Bbm92Parameters, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bbm92 = bbm92
        self.figures = Bbm92Figures()
        self._blocks: list[_StationBlock] = []
        self._open_ps: list[np.ndarray] = []
        self._open_channel: list[np.ndarray] = []
        self._block_ps = round(bbm92.timing_block_s * 1e12)
        self._answered: dict[int, asyncio.Future[None]] = {}

    # --- during the pass ---------------------------------------------------------------

    async def process_buffer(self, buffer: TagBuffer) -> None:
        """Put one tag buffer on the timeline; uplink each block once it is complete."""
        if self.tagger_epoch_unix_s is None:
            raise ProtocolError("tag buffer before the tagger was started")
        ts = np.asarray(buffer.timestamp_ps, dtype=np.int64)
        channel = np.asarray(buffer.channel, dtype=np.uint8)
        ok = (channel >= 1) & (channel <= _CHANNELS)
        ts, channel = ts[ok], channel[ok]
        start_unix_s = self.plan.qkd_start_unix_s
        epoch_rel = self.tagger_epoch_unix_s - self.light_time.grid_start_unix_s
        delay = self.light_time.delay_at_arrival_ps(epoch_rel + ts.astype(np.float64) * 1e-12)
        epoch_ps = round((self.tagger_epoch_unix_s - start_unix_s) * 1e12)
        timeline = ts + np.int64(epoch_ps) - np.rint(delay).astype(np.int64)
        order = np.argsort(timeline, kind="stable")  # a changing delay may swap close tags
        timeline, channel = timeline[order], channel[order]
        keep = timeline >= 0  # before QKD start: no pairs yet
        self._open_ps.append(timeline[keep])
        self._open_channel.append(channel[keep])
        self.result.tags += int(ts.size)
        self.result.detections += int(keep.sum())
        self.result.chunks.append(
            ChunkRecord(
                chunk=len(self.result.chunks),
                start_unix_s=buffer.start_unix_s,
                stop_unix_s=buffer.stop_unix_s,
                elevation_deg=float(
                    np.interp(
                        0.5 * (buffer.start_unix_s + buffer.stop_unix_s),
                        self.grid_unix_s,
                        self.elevation_deg,
                    )
                ),
                tags=int(ts.size),
                detections=int(keep.sum()),
                pulse_index=np.zeros(0, np.int64),
                basis=np.zeros(0, np.uint8),
                bit=np.zeros(0, np.uint8),
            )
        )
        # the timeline the buffer's end reaches: its end less the light time then
        stop_rel_s = np.array([buffer.stop_unix_s - self.light_time.grid_start_unix_s])
        end_ps = round((buffer.stop_unix_s - start_unix_s) * 1e12)
        reached = end_ps - round(float(self.light_time.delay_at_arrival_ps(stop_rel_s)[0]))
        final = buffer.stop_unix_s >= self.plan.qkd_stop_unix_s
        while True:
            start = len(self._blocks) * self._block_ps
            stop = start + self._block_ps
            if final:
                if not self._open_ps or start >= end_ps:
                    break
                stop = max(start + 1, min(stop, end_ps))
            elif reached < stop:
                break
            await self._send_block(start, stop)

    async def _send_block(self, start: int, stop: int) -> None:
        ts = np.concatenate(self._open_ps) if self._open_ps else np.zeros(0, np.int64)
        ch = np.concatenate(self._open_channel) if self._open_ps else np.zeros(0, np.uint8)
        if ts.size > 1 and np.any(ts[1:] < ts[:-1]):  # buffers' edges may interleave by ps
            order = np.argsort(ts, kind="stable")
            ts, ch = ts[order], ch[order]
        cut = int(np.searchsorted(ts, stop))
        block_ps, block_channel = ts[:cut], ch[:cut]
        self._open_ps, self._open_channel = [ts[cut:]], [ch[cut:]]
        chunk = len(self._blocks)
        self._blocks.append(_StationBlock(start, stop, block_ps, block_channel))
        self._answered[chunk] = asyncio.get_running_loop().create_future()
        if block_ps.size == 0:  # nothing to uplink: no coincidences in this block
            self._answered[chunk].set_result(None)
            self._blocks[-1].key_bits = np.zeros(0, np.uint8)
            self._blocks[-1].test_bits = np.zeros(0, np.uint8)
            return
        basis = ((block_channel - 1) >> 1).astype(np.uint8)
        timing = await asyncio.to_thread(
            lambda: encode_timing(block_ps, basis, self.bbm92.timing_resolution_ps).to_bytes()
        )
        self.figures.timing_blocks += 1
        self.figures.uplink_timing_bytes += len(timing)
        self.result.report_bytes += len(timing)
        await self.channel.send(
            "BBM92_TIMING",
            plan_id=self.plan.plan_id,
            chunk=chunk,
            block_start_ps=start,
            block_stop_ps=stop,
            timing=timing,
        )

    def on_coincidences(self, f: dict) -> None:
        """Record the payload's coincidences of one block, and sift them."""
        chunk = int(f["chunk"])
        if chunk >= len(self._blocks):
            raise ProtocolError(f"BBM92_COINCIDENCES for block {chunk} never sent")
        block = self._blocks[chunk]
        if block.key_bits is not None:
            return  # re-delivered answer
        n = int(f["n"])
        index = np.asarray(f["index"], dtype=np.int64)
        if index.size != n or (n and (index.min() < 0 or index.max() >= block.channel.size)):
            raise ProtocolError(f"BBM92_COINCIDENCES block {chunk}: indices malformed")
        if n > 1 and np.any(np.diff(index) <= 0):
            raise ProtocolError(f"BBM92_COINCIDENCES block {chunk}: indices not ascending")
        try:
            payload_basis = unpack_bits(f["basis"], n)
        except InputError as exc:
            raise ProtocolError(f"BBM92_COINCIDENCES block {chunk}: {exc}") from None
        own = block.channel[index] - 1
        sifted = sift_coincidences((own >> 1).astype(np.uint8), payload_basis, own & 1)
        block.key_bits, block.test_bits = sifted.key_bits.copy(), sifted.test_bits.copy()
        self.figures.coincidences += n
        self.figures.correlation_significance = float(f["significance"])
        if math.isfinite(float(f["offset_ps"])) and math.isfinite(float(f["drift_ppb"])):
            # the payload clock against the station's: the negative of station - payload
            self.figures.clock_offset_ps = float(f["offset_ps"])
            self.result.clock_drift_ppb = -float(f["drift_ppb"])
            if self.result.clock_offset_at_qkd_start_ps is None:
                self.result.clock_offset_at_qkd_start_ps = -float(f["offset_ps"])
        waiter = self._answered.get(chunk)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- after the pass ----------------------------------------------------------------

    async def post_process(self) -> None:
        """Post-processing as every family ends it, then BBM92_PASS_SUMMARY (before the
        station's OGS_PASS_SUMMARY, which closes the pass for a control centre)."""
        await super().post_process()
        figures = self.figures
        try:
            await self.channel.runtime.publish_telemetry(
                "BBM92_PASS_SUMMARY",
                plan_id=self.plan.plan_id,
                station=self.plan.station,
                family="bbm92",
                finite_key_bound=figures.finite_key_bound,
                timing_blocks=figures.timing_blocks,
                uplink_timing_bytes=figures.uplink_timing_bytes,
                coincidences=figures.coincidences,
                n_key_bits=figures.n_key_bits,
                k_test_bits=figures.k_test_bits,
                test_errors=figures.test_errors,
                qber_test=figures.qber_test,
                qber_tolerance=self.bbm92.qber_tolerance,
                correlation_significance=figures.correlation_significance,
                clock_offset_ps=figures.clock_offset_ps,
                mu=figures.mu,
                key_length_bits=figures.key_length_bits,
            )
        except ConnectionError as exc:  # the summary is figures only: logged, not retried
            log.warning("plan %d: BBM92_PASS_SUMMARY not sent: %s", self.plan.plan_id, exc)

    async def _post_process(self) -> None:
        plan, result, figures = self.plan, self.result, self.figures
        if self._answered:
            try:
                async with asyncio.timeout(self.reply_timeout_s):  # not wait_for (issue 13)
                    await asyncio.gather(*self._answered.values())
            except TimeoutError:
                missing = [c for c, w in self._answered.items() if not w.done()]
                raise PassAborted(f"no BBM92_COINCIDENCES for blocks {missing[:5]}") from None
        if not any(b.test_bits is not None and b.test_bits.size for b in self._blocks):
            raise PassAborted(
                f"no test-basis coincidences ({figures.coincidences} coincidences; first "
                f"correlation peak {figures.correlation_significance:.1f} sigma)",
                tell_payload=True,
            )
        empty = np.zeros(0, np.uint8)
        noisy = np.concatenate(
            [b.key_bits for b in self._blocks if b.key_bits is not None] or [empty]
        )
        test = np.concatenate(
            [b.test_bits for b in self._blocks if b.test_bits is not None] or [empty]
        )
        figures.n_key_bits, figures.k_test_bits = int(noisy.size), int(test.size)
        result.x_detections, result.z_detections = (int(noisy.size), 0, 0), (int(test.size), 0, 0)
        await self.channel.send(
            "BBM92_TEST",
            plan_id=plan.plan_id,
            n_chunks=len(self._blocks),
            n_key_bits=int(noisy.size),
            k_test_bits=int(test.size),
            test_bits=pack_bits(test),
        )
        verdict = await self._expect("BBM92_TEST_RESULT")
        figures.test_errors = int(verdict["test_errors"])
        k = int(verdict["k_test_bits"])
        figures.qber_test = figures.test_errors / k if k else math.nan
        result.z_errors = (figures.test_errors, 0, 0)
        if k != test.size:
            raise ProtocolError(f"BBM92_TEST_RESULT compares {k} test bits, {test.size} sent")
        if not verdict["passed"]:  # the payload ended the pass already
            raise PassAborted(
                f"test error rate {figures.qber_test:.4f} above the tolerance "
                f"{self.bbm92.qber_tolerance:g} ({figures.test_errors}/{k})"
            )
        if noisy.size == 0:
            raise PassAborted("no key-basis coincidences", tell_payload=True)
        corrected, _kept, _framed = await self._reconcile_cascade(noisy, figures.qber_test)
        result.ec_kept_bits = int(corrected.size)
        result.x_errors = (int(np.count_nonzero(corrected != noisy)), 0, 0)
        await self._verify(corrected)
        n = int(corrected.size)
        result.verification_tag_bits = verification_tag_bits(self.params.eps_cor, n)
        leak = result.leak_ec_bits + result.verification_tag_bits
        length = bbm92_key_length(
            n, k, self.bbm92.qber_tolerance, leak, self.params.eps_sec, self.params.eps_cor
        )
        figures.mu, figures.key_length_bits = length.mu, length.key_length_bits
        result.pa_input_bits = n
        if length.key_length_bits <= 0:  # the payload reaches the same end
            raise PassAborted(
                f"finite-key bound (tomamichel2012) leaves no key: n {n}, k {k}, "
                f"mu {length.mu:.4f}, leak {leak} bits"
            )
        await self._receive_key(corrected, length.key_length_bits)

    def release(self) -> None:
        """Control: overwrite and drop the pass's tags and sifted bits, then the rest."""
        for block in self._blocks:
            for array in (block.channel, block.key_bits, block.test_bits):
                if array is not None:
                    array.fill(0)
            block.key_bits = block.test_bits = None
        for channel in self._open_channel:
            channel.fill(0)
        self._open_ps, self._open_channel = [], []
        super().release()
