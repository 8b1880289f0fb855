"""The ground station's side of one pass: tags -> pulse indices -> detection reports during the
pass, then parameter estimation, error correction (the station corrects towards the payload's
reference), verification and privacy amplification after loss of signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np

from drivers.interfaces import EntropyFailure, TagBuffer
from satqkd_core import finite_key as fk
from satqkd_core.cascade import CONCURRENCY_THRESHOLD
from satqkd_core.codec import Envelope
from satqkd_core.detection_report import encode_detection_report
from satqkd_core.ephemeris import Station, StationTrack, topocentric
from satqkd_core.errors import ProtocolError
from satqkd_core.light_time import LightTimeModel
from satqkd_core.pass_decisions import (
    ProtocolParameters,
    feasibility_abort_reason,
    kept_statistics,
    no_key_reason,
    statistics_from_counts,
)
from satqkd_core.privacy_amplification import toeplitz_hash, toeplitz_seed_bits
from satqkd_core.sifting import count_bit_errors, unpack_intensity_labels
from satqkd_core.sync import (
    DEFAULT_DRIFT_CHANGE_PPB_PER_S,
    TimingState,
    count_back_drift_change_ppb_per_s,
    track_pulse_indices,
)
from satqkd_core.verification import verification_tag, verification_tag_bits
from satqkd_ogs.reconciliation import PassAborted, Reconciliation
from satqkd_runtime.entropy_draws import RandomBytes, draw_bits
from satqkd_runtime.keystore import KeyStore
from satqkd_runtime.qkd_channel import QkdChannel

log = logging.getLogger("satqkd.ogs")

EPHEMERIS_STEP_S = 1.0


@dataclass(frozen=True)
class PassPlan:
    """A LOAD_PASS_PLAN telecommand's content."""

    plan_id: int
    mission: str
    station: str
    tle_line1: str
    tle_line2: str
    aos_unix_s: float
    los_unix_s: float
    qkd_start_unix_s: float
    qkd_stop_unix_s: float
    repetition_rate_hz: float

    @property
    def pulse_period_ps(self) -> int:
        """Get: pulse period in whole picoseconds."""
        return round(1e12 / self.repetition_rate_hz)

    @property
    def total_pulses(self) -> int:
        """Get: pulses the payload emits between QKD start and stop."""
        return round((self.qkd_stop_unix_s - self.qkd_start_unix_s) * self.repetition_rate_hz)


@dataclass
class ChunkRecord:
    """One frame of detections as the station saw and sifted it (no key bits leave here)."""

    chunk: int
    start_unix_s: float
    stop_unix_s: float
    elevation_deg: float
    tags: int
    detections: int
    pulse_index: np.ndarray
    basis: np.ndarray
    bit: np.ndarray
    sifted: int = 0
    z_errors: int = 0
    z_sifted: int = 0
    x_bits: np.ndarray | None = None
    x_intensity: np.ndarray | None = None
    z_intensity: np.ndarray | None = None
    z_error_flags: np.ndarray | None = None
    # kept when the pass ends (the arrays above are released): the clock offset at the frame
    # centre and the RMS timing residual of its assigned tags (NaN: not synchronised / none)
    clock_offset_ps: float = float("nan")
    residual_rms_ps: float = float("nan")
    # sifted X and Z detections and Z errors per intensity (signal, decoy, vacuum); None until
    # the payload's sifting answer for the frame arrived
    x_by_intensity: tuple[int, int, int] | None = None
    z_by_intensity: tuple[int, int, int] | None = None
    z_errors_by_intensity: tuple[int, int, int] | None = None
    # whole pulse periods the payload added to the frame's indices before sifting (the sync
    # sees the offset only modulo one period), and whether no shift was clearly right (then
    # nothing of the frame is kept); satqkd_core.pulse_shift
    pulse_shift: int = 0
    pulse_index_ambiguous: bool = False


@dataclass
class OgsPassResult:
    """Figures of one pass at the station, for telemetry and the pass report."""

    plan_id: int
    tags: int = 0
    detections: int = 0
    in_window_tags: int = 0
    residual_sq_sum_ps2: float = 0.0
    # per frame that measured it: the clock offset at the frame centre, whole pulse periods
    # included (with a clock drift it moves from frame to frame)
    clock_offsets_ps: list[float] = field(default_factory=list)
    # payload clock rate against the station's as last tracked (positive: payload fast);
    # None until the synchronisation has acquired
    clock_drift_ppb: float | None = None
    clock_offset_at_qkd_start_ps: float | None = None
    # frames the synchronisation tried to acquire on, and when it locked (frame start after QKD
    # start, s; None: never)
    sync_acquisition_attempts: int = 0
    sync_locked_after_s: float | None = None
    # the payload's pulse-index shift of the last frame it resolved (None: none yet), and the
    # frames whose shift was ambiguous (sifted to nothing)
    pulse_shift: int | None = None
    pulse_index_ambiguous_frames: int = 0
    chunks: list[ChunkRecord] = field(default_factory=list)
    x_detections: tuple[int, int, int] = (0, 0, 0)
    z_detections: tuple[int, int, int] = (0, 0, 0)
    x_errors: tuple[int, int, int] = (0, 0, 0)
    z_errors: tuple[int, int, int] = (0, 0, 0)
    leak_ec_bits: int = 0
    # "cascade" or "ldpc"; round trips on the link (LDPC: start, blind rounds, final); frames
    # (LDPC only: Cascade has none) and how many failed; key bits error correction covered
    # (LDPC: whole frames) and kept (LDPC: decoded frames); the X errors it found are in those
    ec_method: str = "cascade"
    ec_rounds: int = 0
    ec_frames: int = 0
    ec_frames_failed: int = 0
    ec_input_bits: int = 0
    ec_kept_bits: int = 0
    verification_tag_bits: int = 0
    pa_input_bits: int = 0
    pa_output_bits: int = 0
    auth_refill_bits: int = 0  # leading output bits that refilled the authentication pool
    key_bits: int = 0  # bits stored and confirmed (the output less the refill)
    key_stored_unix_s: float | None = None
    key_id: str | None = None
    abort_reason: str | None = None
    finished: bool = False
    report_bytes: int = 0
    finite_key: dict | None = None

    @property
    def assigned_fraction(self) -> float:
        """Get: fraction of tags assigned a pulse index."""
        return self.in_window_tags / self.tags if self.tags else 0.0

    @property
    def residual_rms_ps(self) -> float:
        """Get: RMS timing residual of assigned tags."""
        return (
            float(np.sqrt(self.residual_sq_sum_ps2 / self.in_window_tags))
            if self.in_window_tags
            else 0.0
        )


class OgsSession(Reconciliation):
    """Pass execution and post-processing for one plan."""

    def __init__(
        self,
        plan: PassPlan,
        station: Station | StationTrack,
        channel: QkdChannel,
        keystore: KeyStore,
        params: ProtocolParameters,
        entropy: RandomBytes,
        sync_window_ps: float,
        cascade_passes: int,
        reply_timeout_s: float,
        *,
        sync_drift_change_ppb_per_s: float = DEFAULT_DRIFT_CHANGE_PPB_PER_S,
        cascade_max_disturbance: float = CONCURRENCY_THRESHOLD,
    ) -> None:
        self.plan = plan
        self.channel = channel
        self.keystore = keystore
        self.params = params
        self.entropy = entropy
        self.abort_requested: str | None = None
        self._tell_payload_of_abort = True
        self._stored_key_id: str | None = None  # stored, not yet confirmed by the payload
        self.sync_window_ps = sync_window_ps
        self.sync_drift_change_ppb_per_s = sync_drift_change_ppb_per_s
        self.cascade_passes = cascade_passes
        self.cascade_max_disturbance = cascade_max_disturbance
        self.reply_timeout_s = reply_timeout_s
        self.result = OgsPassResult(plan.plan_id, ec_method=params.reconciliation)
        self.inbox: asyncio.Queue[Envelope] = asyncio.Queue()
        self.aborted = asyncio.Event()  # set by request_abort: wakes a wait for QKD start
        self._sift_waiters: dict[int, asyncio.Future[None]] = {}
        grid_start = float(np.floor(plan.aos_unix_s)) - 60.0
        n = int(np.ceil((plan.los_unix_s + 60.0 - grid_start) / EPHEMERIS_STEP_S)) + 1
        grid = grid_start + EPHEMERIS_STEP_S * np.arange(n)
        geometry = topocentric(plan.tle_line1, plan.tle_line2, station, grid)
        self.grid_unix_s = grid
        self.elevation_deg = geometry.elevation_deg
        self.light_time = LightTimeModel(
            grid_start, EPHEMERIS_STEP_S, geometry.range_m, geometry.range_rate_m_s
        )
        # d3r/dt3 on the grid: bounds how far counting back to pulse 0 may assume the drift
        # changed (count_back_drift_change_ppb_per_s, decision 0030)
        self._range_jerk_m_s3 = np.gradient(
            np.gradient(geometry.range_rate_m_s, EPHEMERIS_STEP_S), EPHEMERIS_STEP_S
        )
        self.tagger_epoch_unix_s: float | None = None

    # --- during the pass ---------------------------------------------------------------

    # The clock offset line tracked from frame to frame; a session starts acquiring (frozen,
    # so the class-level default is never shared mutably).
    timing_state: TimingState = TimingState()

    async def process_buffer(self, buffer: TagBuffer) -> None:
        """Synchronise one tag buffer and send its detection report to the payload."""
        if self.tagger_epoch_unix_s is None:
            raise ProtocolError("tag buffer before the tagger was started")
        plan = self.plan
        ts = np.asarray(buffer.timestamp_ps, dtype=np.int64)
        channel = np.asarray(buffer.channel, dtype=np.uint8)
        epoch_rel = self.tagger_epoch_unix_s - self.light_time.grid_start_unix_s
        arrival_rel_s = epoch_rel + ts.astype(np.float64) * 1e-12
        qkd_start_ps = round((plan.qkd_start_unix_s - self.tagger_epoch_unix_s) * 1e12)
        acquiring = self.timing_state.mode == "acquiring"
        count_back = self._count_back_drift_change(buffer) if acquiring else None
        # the CPU-heavy steps run off the event loop so the bus stays serviced meanwhile
        sync, timing = await asyncio.to_thread(
            lambda: track_pulse_indices(
                self.timing_state,
                ts,
                self.light_time.delay_at_arrival_ps(arrival_rel_s),
                qkd_start_ps,
                float(plan.pulse_period_ps),
                self.sync_window_ps,
                drift_change_ppb_per_s=self.sync_drift_change_ppb_per_s,
                count_back_drift_change_ppb_per_s=count_back,
            )
        )
        self.timing_state = timing
        self.result.sync_acquisition_attempts = timing.acquisition_attempts
        if timing.last_frame == "acquired" and self.result.sync_locked_after_s is None:
            self.result.sync_locked_after_s = buffer.start_unix_s - plan.qkd_start_unix_s
            log.info(
                "plan %d sync locked %.1f s after QKD start (%d acquisition attempts)",
                plan.plan_id,
                self.result.sync_locked_after_s,
                timing.acquisition_attempts,
            )
        if timing.message:
            chunk = len(self.result.chunks)
            log.warning("plan %d chunk %d sync: %s", plan.plan_id, chunk, timing.message)
        ok = sync.in_window & (sync.pulse_index >= 0) & (sync.pulse_index < plan.total_pulses)
        ok &= (channel >= 1) & (channel <= 4)
        self.result.tags += int(ts.size)
        self.result.in_window_tags += int(ok.sum())
        frame_sq_ps2 = float(np.sum(sync.residual_ps[ok] ** 2))
        self.result.residual_sq_sum_ps2 += frame_sq_ps2
        frame_assigned = int(ok.sum())
        synchronised = timing.last_frame in ("acquired", "tracked")
        if synchronised:
            self.result.clock_offsets_ps.append(float(sync.clock_offset_ps))
            self.result.clock_drift_ppb = timing.drift_ppb
            self.result.clock_offset_at_qkd_start_ps = timing.offset_at_ps(qkd_start_ps)
        chunk_id = len(self.result.chunks)
        index, basis, bit = await self._squash(sync.pulse_index[ok], channel[ok] - 1, chunk_id)
        mid = 0.5 * (buffer.start_unix_s + buffer.stop_unix_s)
        record = ChunkRecord(
            chunk=chunk_id,
            start_unix_s=buffer.start_unix_s,
            stop_unix_s=buffer.stop_unix_s,
            elevation_deg=float(np.interp(mid, self.grid_unix_s, self.elevation_deg)),
            tags=int(ts.size),
            detections=int(index.size),
            pulse_index=index,
            basis=basis,
            bit=bit,
            clock_offset_ps=float(sync.clock_offset_ps) if synchronised else float("nan"),
            residual_rms_ps=(
                float(np.sqrt(frame_sq_ps2 / frame_assigned)) if frame_assigned else float("nan")
            ),
        )
        self.result.chunks.append(record)
        self.result.detections += record.detections
        self._sift_waiters[chunk_id] = asyncio.get_running_loop().create_future()
        report = await asyncio.to_thread(encode_detection_report, index, basis)
        self.result.report_bytes += len(report)
        await self.channel.send(
            "DETECTION_REPORT",
            plan_id=plan.plan_id,
            chunk=chunk_id,
            frame_start_unix_s=buffer.start_unix_s,
            frame_stop_unix_s=buffer.stop_unix_s,
            n_detections=int(index.size),
            report=report,
        )

    def _count_back_drift_change(self, buffer: TagBuffer) -> float:
        """The drift change (ppb/s) the count back to pulse 0 may assume for this buffer: the
        pass geometry's bound from QKD start to the buffer's end plus the oscillator's own,
        never more than the mission's flat drift_change_ppb_per_s."""
        grid, step = self.light_time.grid_start_unix_s, self.light_time.step_s
        start_rel = self.plan.qkd_start_unix_s - grid
        stop_rel = buffer.stop_unix_s - grid
        first = min(max(int(np.floor(start_rel / step)), 0), self._range_jerk_m_s3.size - 1)
        last = min(max(int(np.ceil(stop_rel / step)), first), self._range_jerk_m_s3.size - 1)
        rate_at_start = np.interp(
            start_rel, step * np.arange(self._range_jerk_m_s3.size), self.light_time.range_rate_m_s
        )
        bound = count_back_drift_change_ppb_per_s(
            self._range_jerk_m_s3[first : last + 1],
            float(rate_at_start),
            float(self.plan.pulse_period_ps),
        )
        return min(bound, self.sync_drift_change_ppb_per_s)

    async def _squash(
        self, pulse_index: np.ndarray, detector: np.ndarray, chunk_id: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One detection per pulse; several clicks on one pulse become a random basis and bit
        (squashing), so multi-click events cannot be steered by an eavesdropper."""
        order = np.argsort(pulse_index, kind="stable")
        index_sorted = pulse_index[order]
        detector_sorted = detector[order].astype(np.uint8)
        unique, first, counts = np.unique(index_sorted, return_index=True, return_counts=True)
        basis = detector_sorted[first] >> 1
        bit = detector_sorted[first] & 1
        multi = np.flatnonzero(counts > 1)
        if multi.size:  # two secret bits from the entropy source per multi-click pulse
            bits = await draw_bits(self.entropy, 2 * multi.size, self._purpose("squash"))
            basis[multi] = bits[0::2]
            bit[multi] = bits[1::2]
        return unique.astype(np.int64), basis.astype(np.uint8), bit.astype(np.uint8)

    def on_sift_result(self, f: dict) -> None:
        """Record the payload's sifting answer for one chunk."""
        chunk = int(f["chunk"])
        if chunk >= len(self.result.chunks):
            raise ProtocolError(f"SIFT_RESULT for chunk {chunk} never reported")
        record = self.result.chunks[chunk]
        if record.x_bits is not None:
            return  # re-delivered answer
        if int(f["n_detections"]) != record.detections:
            raise ProtocolError(f"SIFT_RESULT chunk {chunk}: detection count differs")
        keep = np.unpackbits(np.frombuffer(f["keep"], np.uint8), bitorder="big")
        keep = keep[: record.detections].astype(bool)
        if keep.size != record.detections or int(keep.sum()) != int(f["n_kept"]):
            raise ProtocolError(f"SIFT_RESULT chunk {chunk}: keep mask malformed")
        self._record_pulse_shift(
            record, int(f["pulse_shift"]), bool(f["pulse_index_ambiguous"]), int(f["n_kept"])
        )
        kept_basis = record.basis[keep]
        intensity = unpack_intensity_labels(f["intensity"], int(f["n_kept"]))
        is_x = kept_basis == 0
        n_z = int((~is_x).sum())
        payload_z = np.unpackbits(np.frombuffer(f["z_bits"], np.uint8), bitorder="big")[:n_z]
        if payload_z.size != n_z:
            raise ProtocolError(f"SIFT_RESULT chunk {chunk}: z_bits too short")
        own_z = record.bit[keep][~is_x]
        record.x_bits = record.bit[keep][is_x].copy()
        record.x_intensity = intensity[is_x].copy()
        record.z_intensity = intensity[~is_x].copy()
        record.z_error_flags = (own_z != payload_z).astype(np.uint8)
        record.sifted = int(keep.sum())
        record.z_sifted = n_z
        record.z_errors = count_bit_errors(own_z, payload_z)
        record.x_by_intensity = _by_intensity(record.x_intensity)
        record.z_by_intensity = _by_intensity(record.z_intensity)
        record.z_errors_by_intensity = _by_intensity(
            record.z_intensity, record.z_error_flags.astype(bool)
        )
        waiter = self._sift_waiters.get(chunk)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _record_pulse_shift(
        self, record: ChunkRecord, shift: int, ambiguous: bool, n_kept: int
    ) -> None:
        """The payload's whole-period shift of a frame's indices (or that it found none)."""
        if ambiguous:
            if n_kept or shift:
                raise ProtocolError(f"SIFT_RESULT chunk {record.chunk}: ambiguous yet sifted")
            record.pulse_index_ambiguous = True
            self.result.pulse_index_ambiguous_frames += 1
            log.warning(
                "plan %d chunk %d: pulse index ambiguous (payload found no clear whole-period "
                "shift of the timing): frame not sifted",
                self.plan.plan_id,
                record.chunk,
            )
            return
        if shift != self.result.pulse_shift:
            log.info("plan %d chunk %d: pulse shift %+d", self.plan.plan_id, record.chunk, shift)
        record.pulse_shift = shift
        record.pulse_index = record.pulse_index + shift
        self.result.pulse_shift = shift

    # --- after the pass ----------------------------------------------------------------

    async def post_process(self) -> None:
        """Parameter estimation, error correction, verification, privacy amplification."""
        try:
            self._check_abort()
            await self._post_process()
        except PassAborted as exc:
            self.result.abort_reason = str(exc)
            self._discard_key()
            if exc.tell_payload:
                with contextlib.suppress(ConnectionError):
                    await self.channel.send(
                        "ABORT", plan_id=self.plan.plan_id, reason=str(exc)[:500]
                    )
        except ConnectionError:
            # the broker stayed away longer than a publish waits: the daemon ends the pass
            # and tells the payload once the broker is back
            self._discard_key()
            raise
        except Exception as exc:
            self._discard_key()
            if isinstance(exc, EntropyFailure):
                await self.channel.runtime.emit_event("ENTROPY_SOURCE_FAILURE", str(exc))
            kind = "protocol error" if isinstance(exc, ProtocolError) else "station error"
            self.result.abort_reason = f"{kind}: {exc}"
            await self.channel.send(
                "ABORT", plan_id=self.plan.plan_id, reason=self.result.abort_reason[:500]
            )
        finally:
            self.result.finished = True

    async def _post_process(self) -> None:
        plan, result = self.plan, self.result
        waiters = list(self._sift_waiters.values())
        if waiters:
            try:
                async with asyncio.timeout(self.reply_timeout_s):  # not wait_for (issue 13)
                    await asyncio.gather(*waiters)
            except TimeoutError:
                missing = [c for c, w in self._sift_waiters.items() if not w.done()]
                raise PassAborted(f"no SIFT_RESULT for chunks {missing[:5]}") from None
        chunks = result.chunks
        reported = sum(1 for c in chunks if c.detections)
        ambiguous = result.pulse_index_ambiguous_frames
        if ambiguous and 2 * ambiguous >= reported:
            raise PassAborted(
                f"pulse index ambiguous in {ambiguous} of {reported} "
                "frames: no whole-period shift of the timing within the mission's clock offset "
                "uncertainty put clearly few detections on vacuum pulses",
                tell_payload=True,  # the payload sifted frame by frame: it does not know yet
            )
        x_int = _concat([c.x_intensity for c in chunks])
        z_int = _concat([c.z_intensity for c in chunks])
        z_err = _concat([c.z_error_flags for c in chunks])
        x_det = np.bincount(x_int, minlength=3)[:3]
        z_det = np.bincount(z_int, minlength=3)[:3]
        z_errors = np.bincount(z_int, weights=z_err, minlength=3)[:3].astype(np.int64)
        result.x_detections = tuple(int(v) for v in x_det)
        result.z_detections = tuple(int(v) for v in z_det)
        result.z_errors = tuple(int(v) for v in z_errors)
        counts = {
            "plan_id": plan.plan_id,
            "n_chunks": len(chunks),
            "x_detections": x_det.astype(np.uint64),
            "z_detections": z_det.astype(np.uint64),
            "z_errors": z_errors.astype(np.uint64),
        }
        await self.channel.send("PE_COUNTS", **counts)
        stats = statistics_from_counts(self.params, counts)
        reason = feasibility_abort_reason(self.params, stats)
        if reason is not None:
            raise PassAborted(reason)
        noisy = _concat([c.x_bits for c in chunks])
        qber_z = sum(result.z_errors) / max(sum(result.z_detections), 1)
        if self.params.reconciliation == "ldpc":
            corrected, kept, framed = await self._reconcile_ldpc(noisy, max(qber_z, 1e-3))
        else:
            corrected, kept, framed = await self._reconcile_cascade(noisy, qber_z)
        # the kept bits go on; the decoy statistics are those of every frame (dropped frames
        # are charged in the leak, not post-selected away)
        stats = kept_statistics(stats, x_int[framed])
        x_int, noisy = x_int[kept], noisy[kept]
        result.ec_kept_bits = int(corrected.size)
        flips = (corrected != noisy).astype(np.uint8)
        result.x_errors = tuple(
            int(v) for v in np.bincount(x_int, weights=flips, minlength=3)[:3].astype(np.int64)
        )
        if corrected.size == 0:
            raise PassAborted("error correction kept no key bits (every frame failed)")
        await self._verify(corrected)
        n = int(corrected.size)
        result.verification_tag_bits = verification_tag_bits(self.params.eps_cor, n)
        leak = result.leak_ec_bits + result.verification_tag_bits
        final = fk.finite_key_length(stats, self.params.eps_sec, self.params.eps_cor, leak)
        result.finite_key = final.as_dict()
        result.pa_input_bits = n
        if final.key_length_bits <= 0:
            raise PassAborted(no_key_reason(final, leak))  # the payload reaches the same end
        await self._receive_key(corrected, final.key_length_bits)

    async def _verify(self, corrected: np.ndarray) -> None:
        """Answer the payload's VERIFY: the hash of the corrected key against its own."""
        verify = await self._expect("VERIFY")
        own_tag = await asyncio.to_thread(
            verification_tag, corrected, np.asarray(verify["hash_key"], np.uint64)
        )
        ok = own_tag == verify["tag"]
        await self.channel.send("VERIFY_RESULT", plan_id=self.plan.plan_id, ok=bool(ok))
        if not ok:
            raise PassAborted("verification failed: keys differ after error correction")

    async def _receive_key(self, corrected: np.ndarray, m: int) -> None:
        """Privacy amplification with the payload's PA_SEED into an m-bit key, stored pending
        until KEY_CONFIRMED (decision 0018); the BBM92 session (bbm92_session.py) ends so too."""
        plan, result, n = self.plan, self.result, int(corrected.size)
        pa = await self._expect("PA_SEED")
        if int(pa["output_bits"]) != m:
            raise ProtocolError(f"PA_SEED asks for {pa['output_bits']} bits, bound gives {m}")
        n_seed = int(pa["n_seed_bits"])
        if n_seed != toeplitz_seed_bits(n, m):
            raise ProtocolError("PA_SEED seed length does not match the key lengths")
        seed_bits = np.unpackbits(np.frombuffer(pa["seed"], np.uint8), bitorder="big")[:n_seed]
        refill = int(pa["auth_refill_bits"])
        if refill % 128 or not 0 <= refill < m:
            raise ProtocolError(f"PA_SEED refills {refill} bits of a {m}-bit key")
        key = await asyncio.to_thread(toeplitz_hash, corrected, seed_bits, m)
        corrected.fill(0)
        refill_bytes = bytearray(np.packbits(key[:refill], bitorder="big").tobytes())
        now = self.channel.runtime.clock.now_unix_s()
        self.keystore.store(pa["key_id"], key[refill:], "payload", plan.plan_id, now)
        key.fill(0)
        self._stored_key_id = pa["key_id"]
        result.pa_output_bits, result.auth_refill_bits = m, refill
        result.key_stored_unix_s = now
        await self.channel.send(
            "KEY_STORED", plan_id=plan.plan_id, key_id=pa["key_id"], key_bits=m - refill
        )
        try:
            confirmed = await self._expect("KEY_CONFIRMED")
            if confirmed["key_id"] != pa["key_id"]:
                raise ProtocolError(f"KEY_CONFIRMED for key {confirmed['key_id']!r}")
            self.keystore.confirm(pa["key_id"])
            if refill:
                self.channel.extend_pool(pa["key_id"], bytes(refill_bytes))
        finally:
            refill_bytes[:] = bytes(len(refill_bytes))
        self._stored_key_id = None
        result.key_id, result.key_bits = pa["key_id"], m - refill

    def _discard_key(self) -> None:
        """Delete a key stored but not confirmed by the payload (this pass ends keyless)."""
        if self._stored_key_id is not None:
            self.keystore.discard(self._stored_key_id)
            self._stored_key_id = None

    def release(self) -> None:
        """Control: overwrite and drop the pass's per-detection arrays (bits included);
        the counts the report and plots use stay."""
        for chunk in self.result.chunks:
            for name in ("bit", "x_bits", "basis", "pulse_index"):
                array = getattr(chunk, name)
                if array is not None:
                    array.fill(0)
            chunk.pulse_index = chunk.basis = chunk.bit = np.zeros(0, dtype=np.uint8)
            chunk.x_bits = chunk.x_intensity = chunk.z_intensity = chunk.z_error_flags = None


def _by_intensity(labels: np.ndarray, where: np.ndarray | None = None) -> tuple[int, int, int]:
    """Counts of intensity labels 0, 1, 2 (only those `where` is true, if given)."""
    chosen = labels if where is None else labels[where]
    counts = np.bincount(np.asarray(chosen, np.int64), minlength=3)[:3]
    return (int(counts[0]), int(counts[1]), int(counts[2]))


def _concat(arrays: list[np.ndarray | None]) -> np.ndarray:
    parts = [a for a in arrays if a is not None]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
