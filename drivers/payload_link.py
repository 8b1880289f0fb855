"""The spacecraft link to the QKD payload controller: ECSS PUS over CCSDS space packets.

`PayloadLink` sends PUS-C telecommands (built with the `spacepackets` package) over a serial
`Transport` and receives telemetry: service 1 verification (each TC waits for its acceptance
and completion reports), 3 housekeeping, 5 event reports and 17 are-you-alive. Each packet on
the line is preceded by the CCSDS attached sync marker 0x1ACFFC1D; a packet whose CRC-16 does
not check, or whose header makes no sense, is counted and skipped, and the receiver
re-synchronises on the next marker. The interface control data (APID, functions, failure
codes, events, housekeeping layout, framing) is declared once in `satqkd_core.payload_icd`,
which the firmware side (`firmware_shims/payload_controller.py`) uses too. Given an
`EmissionSigner` (the payload node's emission key, `satqkd_runtime.emission_auth`), every request
to emit is a SOURCE_ENABLE_SIGNED carrying a new counter and its AES-256-CMAC tag, which a
controller holding the key requires.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from spacepackets.ccsds.spacepacket import PacketType, SpacePacketHeader
from spacepackets.ccsds.time import CdsShortTimestamp
from spacepackets.ecss.tc import PusTc
from spacepackets.ecss.tm import PusTm

from drivers.interfaces import Device, DeviceError, DeviceStatus, DeviceTimeout
from drivers.transport import Transport
from satqkd_core.errors import InputError
from satqkd_core.payload_icd import (
    ACK_ACCEPTANCE,
    ACK_COMPLETION,
    HOUSEKEEPING_SID,
    PAYLOAD_APID,
    TIMESTAMP_BYTES,
    FunctionId,
    extract_frames,
    failure_code_name,
    frame_packet,
    pack_function,
    pack_housekeeping_intervals,
    pack_sid_list,
    unpack_event,
    unpack_housekeeping,
    unpack_verification,
)
from satqkd_runtime.emission_auth import EmissionKeyError, EmissionSigner

__all__ = [
    "HousekeepingReport",
    "LinkCounters",
    "PayloadEvent",
    "PayloadLink",
    "TelecommandError",
]

_POLL_S = 0.5
_HOUSEKEEPING_QUEUE_DEPTH = 64  # reports nobody takes: the oldest is dropped (and counted)


class _Clock(Protocol):
    def now_unix_s(self) -> float: ...

    async def sleep_until(self, unix_s: float) -> None: ...


class TelecommandError(DeviceError):
    """The payload controller refused or failed a telecommand; carries the failure code."""

    def __init__(self, message: str, code: int, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class HousekeepingReport:
    """One (3,25) report: its SID, on-board time and the declared parameters."""

    sid: int
    unix_s: float
    values: dict[str, float]


@dataclass(frozen=True)
class PayloadEvent:
    """One (5,x) event report: id, name, severity (1 info .. 4 high), time and aux data."""

    event_id: int
    name: str
    severity: int
    unix_s: float
    aux: dict[str, float]


@dataclass
class LinkCounters:
    """Link statistics on the ground side."""

    tc_sent: int = 0
    tc_accepted: int = 0
    tc_rejected: int = 0
    tc_failed: int = 0
    tc_timed_out: int = 0
    tm_received: int = 0
    bad_packets: int = 0
    skipped_bytes: int = 0
    unknown_tm: int = 0
    unmatched_verifications: int = 0
    housekeeping_dropped: int = 0


@dataclass
class _PendingTc:
    label: str
    completed: asyncio.Future[None]
    accepted: bool = False
    reports: list[int] = field(default_factory=list)


class PayloadLink(Device):
    """Ground (or platform) side of the payload controller's PUS link over a transport."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        apid: int = PAYLOAD_APID,
        source_id: int = 1,
        reply_timeout_s: float = 2.0,
        emission_signer: EmissionSigner | None = None,
    ) -> None:
        super().__init__(name)
        if emission_signer is not None and not isinstance(emission_signer, EmissionSigner):
            raise InputError(f"emission_signer must be an EmissionSigner, got {emission_signer!r}")
        if not isinstance(transport, Transport):
            raise InputError(f"transport must be a Transport, got {type(transport).__name__}")
        if not isinstance(apid, int) or not 0 <= apid < 0x7FF:
            raise InputError(f"apid must be in 0..0x7FE, got {apid!r}")
        if not isinstance(source_id, int) or not 0 <= source_id <= 0xFFFF:
            raise InputError(f"source_id must be in 0..65535, got {source_id!r}")
        if not isinstance(reply_timeout_s, (int, float)) or not reply_timeout_s > 0:
            raise InputError(f"reply_timeout_s must be > 0, got {reply_timeout_s!r}")
        self.transport = transport
        self.apid = apid
        self.source_id = source_id
        self.reply_timeout_s = float(reply_timeout_s)
        self.emission_signer = emission_signer
        self.counters = LinkCounters()
        self.housekeeping: dict[int, HousekeepingReport] = {}
        self.events: list[PayloadEvent] = []
        self.last_error = ""
        self._sequence = 0
        self._pending: dict[int, _PendingTc] = {}
        self._rx = bytearray()
        self._event_queue: asyncio.Queue[PayloadEvent] = asyncio.Queue()
        self._housekeeping_queue: asyncio.Queue[HousekeepingReport] = asyncio.Queue(
            _HOUSEKEEPING_QUEUE_DEPTH
        )
        self._housekeeping_arrived = asyncio.Event()
        self._alive_replies = 0
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- life cycle ---------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: open the line, start receiving telemetry and check the controller answers."""
        await self.transport.open(timeout_s)
        self._rx.clear()
        self._reader = asyncio.create_task(self._receive(), name=f"{self.name} telemetry")
        try:
            await self.ping()
        except BaseException:
            await self.close()  # leave nothing half open behind a failed connect
            raise

    async def close(self) -> None:
        """Control: stop receiving and release the line (the controller keeps its own state)."""
        caller_cancelled = False
        task, self._reader = self._reader, None
        if task is not None:
            current = asyncio.current_task()
            cancels_before = current.cancelling() if current is not None else 0
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # ours ended as asked; a cancel of the caller meanwhile (its timeout) is not
                # ours to swallow: raised again below, once the line is released (a caller
                # already being cancelled when it called close still gets the line closed)
                caller_cancelled = current is not None and current.cancelling() > cancels_before
        await self.transport.close()
        if caller_cancelled:
            raise asyncio.CancelledError

    @property
    def link_up(self) -> bool:
        """Get: whether the line is open and telemetry is being received."""
        receiving = self._reader is not None and not self._reader.done()
        return bool(self.transport.connected) and receiving

    async def status(self) -> DeviceStatus:
        """Measure: link state, counters and the latest housekeeping."""
        latest = self.housekeeping.get(HOUSEKEEPING_SID)
        return DeviceStatus(
            self.name,
            f"PUS payload controller APID 0x{self.apid:03X}",
            self.transport.connected,
            self.link_up,
            {
                **asdict(self.counters),
                "last_error": self.last_error,
                "housekeeping": dict(latest.values) if latest else {},
            },
        )

    # --- telecommands -------------------------------------------------------------------------

    async def send_telecommand(
        self, service: int, subtype: int, app_data: bytes = b"", *, label: str = ""
    ) -> None:
        """Control: send one TC and wait for its acceptance and completion reports."""
        label = label or f"TC({service},{subtype})"
        if self._reader is None or self._reader.done():
            raise DeviceError(f"{self.name}: not connected")
        async with self._lock:  # one sequence count per TC, in order on the line
            sequence = self._sequence
            self._sequence = (self._sequence + 1) & 0x3FFF
            tc = PusTc(
                service=service,
                message_subtype=subtype,
                apid=self.apid,
                app_data=app_data,
                seq_count=sequence,
                source_id=self.source_id,
                ack_flags=ACK_ACCEPTANCE | ACK_COMPLETION,
            )
            loop = asyncio.get_running_loop()
            pending = _PendingTc(label, loop.create_future())
            self._pending[sequence] = pending
            try:
                await self.transport.write(frame_packet(bytes(tc.pack())))
            except DeviceError:
                del self._pending[sequence]
                raise
            self.counters.tc_sent += 1
        try:
            async with asyncio.timeout(self.reply_timeout_s):  # not wait_for: see _receive
                await asyncio.shield(pending.completed)
        except TimeoutError:
            self.counters.tc_timed_out += 1
            stage = "completion" if pending.accepted else "acceptance"
            raise DeviceTimeout(
                f"{self.name}: no {stage} report for {label} within {self.reply_timeout_s:g} s"
            ) from None
        finally:
            self._pending.pop(sequence, None)

    async def ping(self) -> float:
        """Measure: send are-you-alive (17,1); returns the round trip in seconds."""
        replies = self._alive_replies
        started = time.perf_counter()
        await self.send_telecommand(17, 1, label="ARE_YOU_ALIVE")
        if self._alive_replies == replies:
            raise DeviceError(f"{self.name}: (17,1) completed without a (17,2) reply")
        return time.perf_counter() - started

    async def request_housekeeping(self, sid: int = HOUSEKEEPING_SID) -> HousekeepingReport:
        """Measure: one-shot (3,27) report of a SID."""
        self.housekeeping.pop(sid, None)
        await self.send_telecommand(3, 27, pack_sid_list([sid]), label=f"HK_ONE_SHOT({sid})")
        report = self.housekeeping.get(sid)
        if report is None:
            raise DeviceError(f"{self.name}: (3,27) completed without a report for SID {sid}")
        return report

    async def enable_periodic_housekeeping(self, sid: int = HOUSEKEEPING_SID) -> None:
        """Control: (3,5) enable periodic reports of a SID."""
        await self.send_telecommand(3, 5, pack_sid_list([sid]), label=f"HK_ENABLE({sid})")

    async def disable_periodic_housekeeping(self, sid: int = HOUSEKEEPING_SID) -> None:
        """Control: (3,6) disable periodic reports of a SID."""
        await self.send_telecommand(3, 6, pack_sid_list([sid]), label=f"HK_DISABLE({sid})")

    async def set_housekeeping_interval(
        self, interval_s: float, sid: int = HOUSEKEEPING_SID
    ) -> None:
        """Set: (3,31) collection interval of a SID (>= 0.1 s, whole ms)."""
        if not isinstance(interval_s, (int, float)) or not 0.1 <= interval_s <= 86_400:
            raise InputError(f"interval_s must be in 0.1..86400 s, got {interval_s!r}")
        data = pack_housekeeping_intervals([(sid, round(interval_s * 1000))])
        await self.send_telecommand(3, 31, data, label=f"HK_INTERVAL({sid})")

    async def _function(self, function: FunctionId, *arguments: float | bytes) -> None:
        await self.send_telecommand(8, 1, pack_function(function, *arguments), label=function.name)

    async def configure_source(self, repetition_rate_hz: float) -> None:
        """Set: the source's pulse repetition rate."""
        await self._function(FunctionId.SOURCE_CONFIGURE, _finite(repetition_rate_hz, "rate"))

    async def enable_source(self, first_pulse_unix_s: float) -> None:
        """Control: start emitting, pulse 0 at first_pulse_unix_s (inside the loaded plan); signed
        with the next counter when the link holds an emission signer."""
        first_pulse = _finite(first_pulse_unix_s, "first_pulse_unix_s")
        if self.emission_signer is None:
            await self._function(FunctionId.SOURCE_ENABLE, first_pulse)
            return
        try:
            counter, tag = self.emission_signer.sign(first_pulse)
        except (EmissionKeyError, OSError) as exc:  # the counter must be stored before use
            raise DeviceError(f"{self.name}: request to emit not signed: {exc}") from None
        await self._function(FunctionId.SOURCE_ENABLE_SIGNED, first_pulse, counter, tag)

    async def disable_source(self) -> None:
        """Control: put the source in its safe state."""
        await self._function(FunctionId.SOURCE_DISABLE)

    async def load_pass_plan(
        self,
        plan_id: int,
        station_id: int,
        qkd_start_unix_s: float,
        qkd_stop_unix_s: float,
        repetition_rate_hz: float,
    ) -> None:
        """Control: load the pass plan whose QKD window the source interlock enforces."""
        if not isinstance(plan_id, int) or not 0 <= plan_id <= 0xFFFFFFFF:
            raise InputError(f"plan_id must be a u32, got {plan_id!r}")
        if not isinstance(station_id, int) or not 0 <= station_id <= 0xFFFF:
            raise InputError(f"station_id must be a u16, got {station_id!r}")
        window_and_rate = [
            _finite(v, n)
            for v, n in (
                (qkd_start_unix_s, "qkd_start_unix_s"),
                (qkd_stop_unix_s, "qkd_stop_unix_s"),
                (repetition_rate_hz, "repetition_rate_hz"),
            )
        ]
        await self._function(FunctionId.LOAD_PASS_PLAN, plan_id, station_id, *window_and_rate)

    async def clear_pass_plan(self, plan_id: int) -> None:
        """Control: unload a plan (and put the source in its safe state)."""
        if not isinstance(plan_id, int) or not 0 <= plan_id <= 0xFFFFFFFF:
            raise InputError(f"plan_id must be a u32, got {plan_id!r}")
        await self._function(FunctionId.CLEAR_PASS_PLAN, plan_id)

    async def reset_counters(self) -> None:
        """Control: RESET-COUNTERS on the controller."""
        await self._function(FunctionId.RESET_COUNTERS)

    async def next_event(self, timeout_s: float) -> PayloadEvent:
        """Measure: the next event report (in arrival order)."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._event_queue.get()
        except TimeoutError:
            raise DeviceTimeout(f"{self.name}: no event report within {timeout_s:g} s") from None

    async def keep_alive(self, interval_s: float, clock: _Clock) -> None:
        """Control: ping every interval_s of `clock` (feeds the controller's link watchdog)."""
        if not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise InputError(f"interval_s must be > 0, got {interval_s!r}")
        next_ping = clock.now_unix_s()
        while True:
            try:
                await self.ping()
            except DeviceError as exc:
                self.last_error = str(exc)  # keep trying: the watchdog decides, not this loop
            next_ping += interval_s
            await clock.sleep_until(next_ping)

    # --- telemetry ----------------------------------------------------------------------------

    async def _receive(self) -> None:
        # Every wait here and in the transport is bounded with asyncio.timeout, never wait_for:
        # Python 3.11's wait_for returns the result of a wait that finished in the same loop
        # pass as a cancel() (telemetry landing as close() runs), losing the cancellation, and
        # close() then waited for this loop forever.
        while True:
            try:
                chunk = await self.transport.read_available(_POLL_S)
            except DeviceTimeout:
                continue
            except DeviceError as exc:
                self.last_error = str(exc)
                for pending in self._pending.values():
                    if not pending.completed.done():
                        pending.completed.set_exception(
                            DeviceError(f"{self.name}: link lost: {exc}")
                        )
                return
            self._rx += chunk
            for packet in self._extract_packets():
                self._dispatch(packet)

    def _extract_packets(self) -> list[bytes]:
        """Cut sync-marked packets with a good CRC out of the buffer; count and skip the rest."""
        scan = extract_frames(self._rx, check_crc=True)
        self.counters.skipped_bytes += scan.skipped_bytes
        if scan.rejected:
            self.counters.bad_packets += len(scan.rejected)
            self.last_error = f"bad packet: {scan.rejected[-1]}"
        return scan.packets

    def _dispatch(self, packet: bytes) -> None:
        header = SpacePacketHeader.unpack(packet)
        if header.packet_type != PacketType.TM or header.apid != self.apid:
            self.counters.unknown_tm += 1
            return
        try:
            tm = PusTm.unpack(packet, timestamp_len=TIMESTAMP_BYTES)
            unix_s = CdsShortTimestamp.unpack(tm.timestamp).as_unix_seconds()
        except Exception as exc:  # malformed secondary header or timestamp
            self.counters.bad_packets += 1
            self.last_error = f"bad packet: {exc}"
            return
        self.counters.tm_received += 1
        data = bytes(tm.source_data)
        handlers = {1: self._on_verification, 3: self._on_housekeeping, 5: self._on_event}
        if tm.service == 17 and tm.message_subtype == 2:
            self._alive_replies += 1
        elif tm.service in handlers:
            try:
                handlers[tm.service](tm.message_subtype, data, unix_s)
            except (KeyError, ValueError) as exc:  # InputError is a ValueError
                self.counters.bad_packets += 1
                self.last_error = f"bad ({tm.service},{tm.message_subtype}) report: {exc}"
        else:
            self.counters.unknown_tm += 1

    def _on_verification(self, subtype: int, data: bytes, unix_s: float) -> None:
        report = unpack_verification(data)
        pending = self._pending.get(report.tc_sequence)
        if pending is None or report.tc_apid != self.apid:
            self.counters.unmatched_verifications += 1
            return
        pending.reports.append(subtype)
        if subtype == 1:
            pending.accepted = True
            self.counters.tc_accepted += 1
            return
        if pending.completed.done():
            return  # a report after the outcome (a duplicate on the line): nothing to decide
        if subtype == 7:
            pending.completed.set_result(None)
            return
        code, reason = report.code, report.reason
        name = failure_code_name(code)
        if subtype == 2:
            self.counters.tc_rejected += 1
            stage = "rejected"
        else:
            self.counters.tc_failed += 1
            stage = "failed"
        pending.completed.set_exception(
            TelecommandError(
                f"{self.name}: {pending.label} {stage}: {name}: {reason}", code, reason
            )
        )

    def _on_housekeeping(self, subtype: int, data: bytes, unix_s: float) -> None:
        if subtype != 25:
            self.counters.unknown_tm += 1
            return
        sid, values = unpack_housekeeping(data)
        if sid != HOUSEKEEPING_SID:
            raise KeyError(f"SID {sid}")
        report = HousekeepingReport(sid, unix_s, values)
        self.housekeeping[sid] = report
        if self._housekeeping_queue.full():
            self._housekeeping_queue.get_nowait()
            self.counters.housekeeping_dropped += 1
        self._housekeeping_queue.put_nowait(report)
        self._housekeeping_arrived.set()

    def _on_event(self, subtype: int, data: bytes, unix_s: float) -> None:
        report = unpack_event(subtype, data)
        event = PayloadEvent(report.event_id, report.name, report.severity, unix_s, report.aux)
        self.events.append(event)
        self._event_queue.put_nowait(event)

    async def next_housekeeping(self, timeout_s: float) -> HousekeepingReport:
        """Measure: the next housekeeping report in arrival order (periodic or one-shot; at most
        the latest 64 are kept for a reader that lags)."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._housekeeping_queue.get()
        except TimeoutError:
            raise DeviceTimeout(
                f"{self.name}: no housekeeping report within {timeout_s:g} s"
            ) from None

    async def wait_for_housekeeping(self, timeout_s: float) -> HousekeepingReport:
        """Measure: the next housekeeping report to arrive (periodic or one-shot)."""
        self._housekeeping_arrived.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._housekeeping_arrived.wait()
        except TimeoutError:
            raise DeviceTimeout(
                f"{self.name}: no housekeeping report within {timeout_s:g} s"
            ) from None
        return self.housekeeping[HOUSEKEEPING_SID]


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)
