"""The payload controller firmware behind the spacecraft link: ECSS PUS over CCSDS on a serial line.

The QKD payload's controller (an MCU next to the source) takes telecommands from the platform
and answers with telemetry, as CCSDS space packets carrying ECSS-E-ST-70-41C (PUS-C) services,
each preceded by the CCSDS attached sync marker and ending with the PUS CRC-16. The services,
byte layouts and framing (the interface control data) are declared once in
`satqkd_core.payload_icd`, which the ground-side driver (`drivers.payload_link.PayloadLink`)
uses too. This shim runs as an asyncio task on a pty, so that driver opens a real serial device.
Success reports follow the TC's acknowledgement flags; failures are always sent. This module is
the line, the hardware, the periodic tick (watchdog, plan end, laser interlock, beacon) and the
telemetry; the telecommands themselves (parsing and performing) are in
`firmware_shims.payload_commands`.

The source interlock: the source may only be enabled inside a loaded pass plan's QKD window, is
disabled at the window's end, and is put in its safe state (disabled) when no valid telecommand
has arrived for `link_timeout_s` ("the laser goes to its safe state when the payload loses its
link"). Counters follow flight practice (F Prime, cFS): accepted, rejected at acceptance,
failed at completion, bad packets; RESET_COUNTERS clears them.

The controller owns the source hardware (`source_hardware`: anything with async `configure`,
`enable`, `disable`, e.g. the in-process simulated source or the SCPI laser driver): a
SOURCE_ENABLE completes only once the hardware has started emitting (a hardware refusal is an
INTERLOCK completion failure), and every way to the safe state (command, plan end, watchdog,
plan cleared) disables the hardware too, retried on every tick until it succeeds. The periodic
loop joins the clock's lockstep, so in simulation the watchdog and the plan end act on the
hardware at the same simulated instants on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tty
from collections.abc import Callable
from typing import Protocol

from spacepackets.ccsds.spacepacket import PacketType, SpacePacketHeader
from spacepackets.ccsds.time import CdsShortTimestamp
from spacepackets.ecss.tc import PusTc
from spacepackets.ecss.tm import PusTm

from firmware_shims.fine_tracking import FineTracking
from firmware_shims.laser_interlock import BeamGeometry, LaserInterlock
from firmware_shims.payload_commands import (
    CommandFailure,
    ControllerCommands,
    ControllerCounters,
    PassPlan,
)
from satqkd_core.errors import InputError
from satqkd_core.payload_icd import (
    HOUSEKEEPING_SID,
    PAYLOAD_APID,
    DisableReason,
    FailureCode,
    InterlockReason,
    crc16_ok,
    extract_frames,
    frame_packet,
    pack_event,
    pack_housekeeping,
    pack_verification,
)

__all__ = [
    "BeaconHardware",
    "ControllerCounters",
    "PayloadController",
    "SourceHardware",
]

_TX_LIMIT_BYTES = 64 * 1024  # telemetry queued for a reader that does not read is dropped


class _Clock(Protocol):
    def now_unix_s(self) -> float: ...

    async def sleep_until(self, unix_s: float) -> None: ...


class SourceHardware(Protocol):
    """The laser source the controller drives (a PulsedSource driver satisfies this)."""

    async def configure(self, repetition_rate_hz: float) -> None: ...

    async def enable(self, first_pulse_unix_s: float) -> None: ...

    async def disable(self) -> None: ...


class BeaconHardware(Protocol):
    """The payload's downlink beacon laser."""

    async def enable(self) -> None: ...

    async def disable(self) -> None: ...


class PayloadController(ControllerCommands):
    """Payload controller firmware emulation on a pty (or any pair of file descriptors)."""

    def __init__(
        self,
        clock: _Clock,
        *,
        link_timeout_s: float = 10.0,
        housekeeping_interval_s: float = 5.0,
        tick_s: float = 0.1,
        apid: int = PAYLOAD_APID,
        source_hardware: SourceHardware | None = None,
        interlock: LaserInterlock | None = None,
        fine_tracking: FineTracking | None = None,
        beam_geometry: Callable[[float], BeamGeometry | None] | None = None,
        beacon_hardware: BeaconHardware | None = None,
        beacon_lead_s: float = 20.0,
    ) -> None:
        for value, name in (
            (link_timeout_s, "link_timeout_s"),
            (housekeeping_interval_s, "housekeeping_interval_s"),
            (tick_s, "tick_s"),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(apid, int) or not 0 <= apid < 0x7FF:
            raise InputError(f"apid must be in 0..0x7FE, got {apid!r}")
        self.clock = clock
        self.link_timeout_s = float(link_timeout_s)
        self.tick_s = float(tick_s)
        self.apid = apid
        self.counters = ControllerCounters()
        self.source_enabled = False
        self.disable_reason = DisableReason.NONE
        self.repetition_rate_hz = 0.0
        self.first_pulse_unix_s: float | None = None
        self.plan: PassPlan | None = None
        self.source_history: list[tuple[float, bool, DisableReason]] = []
        self.events: list[tuple[float, str, tuple]] = []
        self.periodic_housekeeping = True
        self.housekeeping_interval_s = float(housekeeping_interval_s)
        self.on_source_change: Callable[[bool], None] | None = None
        self.source_hardware = source_hardware
        self.hardware_safe_pending = False  # a hardware disable failed: retried every tick
        # the payload's pointing and laser interlock (firmware_shims.laser_interlock)
        self.interlock = interlock
        self.fine_tracking = fine_tracking
        self.beam_geometry = beam_geometry
        self.beacon_hardware = beacon_hardware
        self.beacon_lead_s = float(beacon_lead_s)
        self.beacon_enabled = False
        self.beacon_history: list[tuple[float, bool]] = []
        self._hardware_lock = asyncio.Lock()
        self._boot_unix_s = clock.now_unix_s()
        self._last_valid_tc_unix_s = self._boot_unix_s
        self._next_housekeeping_unix_s = self._boot_unix_s + self.housekeeping_interval_s
        self._tm_sequence = 0
        self._message_counter = 0
        self._rx = bytearray()
        self._rx_ready = asyncio.Event()
        self._tx = bytearray()
        self._fd: int | None = None
        self._slave_fd: int | None = None
        self.port_path: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- the serial line ----------------------------------------------------------------------

    def open_pty(self) -> str:
        """Control: create a raw pty; returns the device path the ground driver opens."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: a binary serial line
        os.set_blocking(master, False)
        self._fd, self._slave_fd = master, slave
        self.port_path = os.ttyname(slave)
        return self.port_path

    async def start(self) -> None:
        """Control: start reading the line and the periodic (housekeeping, watchdog) loop."""
        if self._fd is None:
            self.open_pty()
        assert self._fd is not None
        if self.fine_tracking is not None:
            self.fine_tracking.load_code()  # seconds of loading: now, not in the first tick
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._on_readable)
        self._tasks = [
            asyncio.create_task(self._serve_line(), name="payload controller line"),
            asyncio.create_task(self._periodic(), name="payload controller periodic"),
        ]

    async def close(self) -> None:
        """Control: stop the tasks and close the pty."""
        current = asyncio.current_task()
        cancels_before = current.cancelling() if current is not None else 0
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task  # ours end as asked
        # a cancel of the caller meanwhile (its timeout) is not ours to swallow: raised again
        # below, once the pty is closed (one from before, a caller tearing down, is handled)
        caller_cancelled = current is not None and current.cancelling() > cancels_before
        self._tasks = []
        if self._fd is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._slave_fd is not None:
            os.close(self._slave_fd)
            self._slave_fd = None
        if caller_cancelled:
            raise asyncio.CancelledError

    async def __aenter__(self) -> PayloadController:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while no slave is open: nothing to read
        self._rx += data
        self._rx_ready.set()

    def _send(self, packet: bytes) -> None:
        framed = frame_packet(packet)
        if len(self._tx) + len(framed) > _TX_LIMIT_BYTES:
            self.counters.tm_dropped += 1
            return
        self._tx += framed
        self.counters.tm_sent += 1
        self._flush_tx()

    def _flush_tx(self) -> None:
        if self._fd is None:
            return
        loop = asyncio.get_running_loop()
        while self._tx:
            try:
                written = os.write(self._fd, self._tx)
            except BlockingIOError:
                loop.add_writer(self._fd, self._flush_tx)
                return
            del self._tx[:written]
        loop.remove_writer(self._fd)

    # --- receive side ---------------------------------------------------------------------------

    async def _serve_line(self) -> None:
        while True:
            await self._rx_ready.wait()
            self._rx_ready.clear()
            for packet in self._extract_packets():
                await self._handle_packet(packet)

    def _extract_packets(self) -> list[bytes]:
        """Cut whole sync-marked packets out of the receive buffer; count what is not one."""
        # the CRC is checked per packet later, so a corrupt TC can still be answered with (1,2)
        scan = extract_frames(self._rx, check_crc=False)
        self.counters.bad_packets += len(scan.rejected)
        return scan.packets

    async def _handle_packet(self, packet: bytes) -> None:
        header = SpacePacketHeader.unpack(packet)
        if header.packet_type != PacketType.TC or header.apid != self.apid:
            self.counters.foreign_packets += 1
            return
        if not crc16_ok(packet):
            self.counters.bad_packets += 1
            self._reject_unparsed(packet, FailureCode.CRC_ERROR, "CRC-16 mismatch")
            return
        try:
            tc = PusTc.unpack(packet)
        except Exception as exc:  # spacepackets raises several types for malformed headers
            self.counters.bad_packets += 1
            self._reject_unparsed(packet, FailureCode.BAD_APP_DATA, f"malformed TC: {exc}")
            return
        self._last_valid_tc_unix_s = self.clock.now_unix_s()
        await self._execute(tc)

    def _reject_unparsed(self, packet: bytes, code: FailureCode, reason: str) -> None:
        """Acceptance failure for a TC whose primary header is readable but whose body is not."""
        self.counters.tc_rejected += 1
        service = packet[7] if len(packet) > 8 else 0
        subtype = packet[8] if len(packet) > 8 else 0
        self._verification(packet[:4], 2, code, reason)
        self._event("TC_REJECTED", service, subtype, int(code))

    async def _start_hardware(self, first_pulse_unix_s: float) -> None:
        """Make the hardware emit at the configured rate, or fail the TC with its refusal."""
        hardware = self.source_hardware
        if hardware is None:
            return
        async with self._hardware_lock:
            try:
                await hardware.configure(self.repetition_rate_hz)
                await hardware.enable(first_pulse_unix_s)
            except Exception as exc:  # any driver failure: the MCU must answer, not crash
                self.counters.hardware_faults += 1
                self.hardware_safe_pending = True  # half-started: make sure it is off
                raise CommandFailure(
                    FailureCode.INTERLOCK, f"source hardware refused to emit: {exc}"
                ) from None
            self.hardware_safe_pending = False  # emitting now, as commanded

    async def _make_hardware_safe(self) -> None:
        """Disable the hardware if the state says safe and it has not confirmed yet."""
        hardware = self.source_hardware
        if hardware is None or not self.hardware_safe_pending:
            return
        async with self._hardware_lock:
            if self.source_enabled or not self.hardware_safe_pending:
                return  # decided while this call waited for the lock
            try:
                await hardware.disable()
            except Exception:  # counted; the periodic loop tries again on its next tick
                self.counters.hardware_faults += 1
                return
            self.hardware_safe_pending = False

    async def _set_source(self, enabled: bool, reason: DisableReason) -> None:
        if enabled == self.source_enabled:
            return
        self.source_enabled = enabled
        self.disable_reason = reason
        self.source_history.append((self.clock.now_unix_s(), enabled, reason))
        if enabled:
            self._event("SOURCE_ENABLED", self.first_pulse_unix_s)
        else:
            self._event("SOURCE_DISABLED", int(reason))
            self.hardware_safe_pending = True
            await self._make_hardware_safe()
        if self.on_source_change is not None:
            self.on_source_change(enabled)

    # --- periodic duties ------------------------------------------------------------------------

    async def _periodic(self) -> None:
        participating = getattr(self.clock, "participating", None)
        # lockstep: simulated time waits while a tick drives the hardware (see satqkd_runtime.clock)
        joined = participating("payload controller") if participating else contextlib.nullcontext()
        with joined:
            next_tick = self.clock.now_unix_s() + self.tick_s
            while True:
                await self.clock.sleep_until(next_tick)
                now = self.clock.now_unix_s()
                await self.check_interlocks(now)
                if self.periodic_housekeeping and now >= self._next_housekeeping_unix_s:
                    self._send_housekeeping()
                    self._next_housekeeping_unix_s = now + self.housekeeping_interval_s
                next_tick += self.tick_s
                if next_tick <= now:  # overrun (a stalled loop): skip ahead, keep the phase
                    next_tick += math.ceil((now - next_tick) / self.tick_s + 1e-9) * self.tick_s

    async def check_interlocks(self, now: float) -> None:
        """Control: apply the link watchdog and the pass-plan window at time `now`, and retry a
        hardware safe state that has not been confirmed."""
        silence = now - self._last_valid_tc_unix_s
        if self.source_enabled and silence >= self.link_timeout_s:
            self.counters.watchdog_trips += 1
            self._event("LINK_LOST_SOURCE_SAFED", silence)
            await self._set_source(False, DisableReason.LINK_WATCHDOG)
        plan = self.plan
        if self.source_enabled and plan is not None and now >= plan.qkd_stop_unix_s:
            await self._set_source(False, DisableReason.PLAN_ENDED)
        if self.interlock is not None:
            reasons = self._interlock_reasons(now)
            if reasons:
                await self._trip(reasons)
            await self._drive_beacon(now, reasons)
        await self._make_hardware_safe()

    def _interlock_reasons(self, now: float) -> InterlockReason:
        """Advance the tracking loop to now and evaluate the interlock."""
        assert self.interlock is not None
        locked = None
        if self.fine_tracking is not None:
            self.fine_tracking.advance_to(now)
            locked = self.fine_tracking.locked
        geometry = self.beam_geometry(now) if self.beam_geometry is not None else None
        return self.interlock.evaluate(
            now,
            last_valid_tc_unix_s=self._last_valid_tc_unix_s,
            tracking_locked=locked,
            geometry=geometry,
            geometry_known=self.beam_geometry is not None,
        )

    async def _trip(self, reasons: InterlockReason) -> None:
        """Disable both lasers now for the interlock's reasons (evented once per trip)."""
        if self.source_enabled:
            self._event("LASER_INTERLOCK_TRIPPED", int(reasons))
            await self._set_source(False, DisableReason.LASER_INTERLOCK)
        await self._set_beacon(False)

    async def _drive_beacon(self, now: float, reasons: InterlockReason) -> None:
        """The beacon emits inside a loaded plan's ATP window while the interlock permits."""
        plan = self.plan
        window = plan is not None and (
            plan.qkd_start_unix_s - self.beacon_lead_s <= now < plan.qkd_stop_unix_s
        )
        await self._set_beacon(bool(window) and not reasons)

    async def _set_beacon(self, enabled: bool) -> None:
        if enabled == self.beacon_enabled:
            return
        self.beacon_enabled = enabled
        self.beacon_history.append((self.clock.now_unix_s(), enabled))
        hardware = self.beacon_hardware
        if hardware is None:
            return
        try:
            await (hardware.enable() if enabled else hardware.disable())
        except Exception:  # counted; a failed disable is retried on the next trip or tick
            self.counters.hardware_faults += 1
            if not enabled:
                self.beacon_enabled = True  # not confirmed off: try again next tick

    # --- telemetry ------------------------------------------------------------------------------

    def housekeeping_values(self) -> dict[str, float]:
        """Get the SID 1 housekeeping parameters now."""
        now = self.clock.now_unix_s()
        c = self.counters
        return {
            "source_enabled": int(self.source_enabled),
            "disable_reason": int(self.disable_reason),
            "repetition_rate_hz": self.repetition_rate_hz,
            "plan_id": self.plan.plan_id if self.plan is not None else 0,
            "tc_accepted": c.tc_accepted,
            "tc_rejected": c.tc_rejected,
            "tc_failed": c.tc_failed,
            "bad_packets": c.bad_packets,
            "watchdog_trips": min(c.watchdog_trips, 0xFFFF),
            "link_silence_s": now - self._last_valid_tc_unix_s,
            "uptime_s": now - self._boot_unix_s,
            "tm_dropped": c.tm_dropped,
            "interlock_reasons": int(self.interlock.reasons) if self.interlock else 0,
            "beacon_enabled": int(self.beacon_enabled),
            "tracking_locked": int(self.fine_tracking.locked) if self.fine_tracking else 0,
            "fine_residual_rms_urad": (
                self.fine_tracking.take_residual_rms_urad() if self.fine_tracking else math.nan
            ),
        }

    def _send_housekeeping(self) -> None:
        self._send_tm(3, 25, pack_housekeeping(self.housekeeping_values(), HOUSEKEEPING_SID))

    def _event(self, name: str, *aux: object) -> None:
        severity, body = pack_event(name, *aux)
        self.events.append((self.clock.now_unix_s(), name, aux))
        self._send_tm(5, severity, body)

    def _verification(
        self, request_id: bytes, subtype: int, code: FailureCode | None = None, reason: str = ""
    ) -> None:
        body = pack_verification(request_id, None if code is None else int(code), reason)
        self._send_tm(1, subtype, body)

    def _send_tm(self, service: int, subtype: int, source_data: bytes) -> None:
        now = self.clock.now_unix_s()
        days = math.floor(now / 86400.0)
        ms_of_day = min(math.floor((now - days * 86400.0) * 1000.0), 86_399_999)
        stamp = CdsShortTimestamp.from_unix_days(days, ms_of_day).pack()
        tm = PusTm(
            service=service,
            message_subtype=subtype,
            timestamp=stamp,
            source_data=source_data,
            apid=self.apid,
            seq_count=self._tm_sequence,
            message_counter=self._message_counter,
        )
        self._tm_sequence = (self._tm_sequence + 1) & 0x3FFF
        self._message_counter = (self._message_counter + 1) & 0xFFFF
        self._send(bytes(tm.pack()))
