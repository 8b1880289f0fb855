"""S-Fifteen Instruments TDC1 (4-channel, 2 ns time-to-digital converter) over USB serial.

The TDC1 is a USB CDC device (a serial port; no baud rate or parity to set). Its command set
and timestamp format are published in the vendor's open-source Python package pyS15
(github.com/s-fifteen-instruments/pyS15, `S15lib/instruments/usb_counter_fpga.py`, class
`TimestampTDC1`, and the example notebook `examples/TDC1_time_to_digital_converter.ipynb`);
docs/tagger-protocol.md restates the wire format as this driver understands it. In short:

- Commands are ASCII, case-insensitive, ending in CR LF; several may share a line separated by
  ``;``. Queries answer one line: ``*IDN?`` (must contain ``TDC1``; pyS15 finds the device the
  same way), ``MODE?`` (0 singles, 1 pairs, 3 timestamp), ``LEVEL?`` (threshold, volts first),
  ``TIME?``. Settings answer nothing: ``*RST``, ``TIMESTAMP``, ``NIM`` / ``TTL``,
  ``NEG <v>`` / ``POS <v>`` (threshold within +-3.3 V), ``REFCLK <0 auto|1 external|2 internal>``,
  ``TIME <ms>`` (0: run until aborted), ``INPKT`` (sent before each acquisition, as the vendor's
  scripts do). In timestamp mode ``COUNTS?`` starts the binary stream; ``ABORT`` ends it.
- The stream is a sequence of 32-bit little-endian records: bits 31..5 a 27-bit counter of
  2 ns ticks (it wraps every 2^27 ticks, 268.435456 ms), bit 4 set for a record that is not an
  event (a marker the tagger inserts while no event arrives), bits 3..0 the inputs that fired
  in that tick (bit 0 input 1 .. bit 3 input 4; several bits for coincident events).

Wrap-around: pyS15 adds one counter period each time a record's counter is lower than its
predecessor's, and the vendor's recorded example shows a marker at each half-period boundary
that had no event since the previous boundary, so consecutive records are less than one period
apart and every decrease is exactly one wrap. Timestamp 0 is counter zero at the start of the
acquisition (the counter starts with it, as in that example); its UTC instant is read from the
injected clock as ``COUNTS?`` is written (USB latency: ms-level, absorbed by synchronisation).

The driver does not reconnect inside an acquisition (the TDC1 keeps no stream to resume): a
lost link ends the stream with `DeviceDisconnected` from `read`, and the next `start` reopens
the port, repeats the handshake and starts a new acquisition. Decoding is vectorised: one
`np.frombuffer` per chunk read, never a Python object per tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from drivers.commands import CommandInstrument
from drivers.interfaces import (
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
    TagBuffer,
    TimeTagger,
)
from drivers.options import DriverOptions
from drivers.tag_queue import TagBufferQueue
from drivers.time_tagger_tdc1_records import (
    TDC1_COUNTER_PERIOD_TICKS,
    TDC1_TICK_PS,
    Tdc1RecordDecoder,
    Tdc1StreamCounters,
    channel_lookup_table,
)
from drivers.transport import Transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import Clock, RealClock

__all__ = [
    "TDC1_COUNTER_PERIOD_TICKS",
    "TDC1_TICK_PS",
    "Tdc1RecordDecoder",
    "Tdc1StreamCounters",
    "Tdc1TaggerOptions",
    "Tdc1TimeTagger",
    "channel_lookup_table",
]

_THRESHOLD_RANGE_V = (-3.3, 3.3)
_REFCLK_CODES = {"auto": 0, "external": 1, "internal": 2}
_START_COMMAND = b"INPKT;TIME 0;COUNTS?\r\n"
_ABORT_COMMAND = b"ABORT\r\n"
_TIMESTAMP_MODE = 3
_IDENTITY_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4}


class Tdc1TimeTagger(CommandInstrument, TimeTagger):
    """An S-Fifteen TDC1 streaming timestamps over USB serial (see the module docstring)."""

    identity_pattern: ClassVar[str] = r"TDC1"
    #: settings answer nothing, so any stray output is dropped before the next command
    drain_before_command: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        timeout_s: float = 1.0,
        clock: Clock | None = None,
        input_level: Literal["NIM", "TTL"] = "NIM",
        threshold_v: float | None = None,
        reference_clock: Literal["auto", "external", "internal"] = "auto",
        channel_map: Mapping[int, int] | None = None,
        buffer_duration_s: float = 0.1,
        queue_depth: int = 8,
        drain_quiet_s: float = 0.05,
        **driver_options: Any,
    ) -> None:
        super().__init__(name, transport, timeout_s=timeout_s, **driver_options)
        if input_level not in ("NIM", "TTL"):
            raise InputError(f"input_level must be 'NIM' or 'TTL', got {input_level!r}")
        low, high = _THRESHOLD_RANGE_V
        if threshold_v is not None and not (
            isinstance(threshold_v, int | float) and math.isfinite(threshold_v)
            and low <= threshold_v <= high
        ):  # fmt: skip
            raise InputError(f"threshold_v must be within {low}..{high} V, got {threshold_v!r}")
        if reference_clock not in _REFCLK_CODES:
            raise InputError(
                f"reference_clock must be one of {list(_REFCLK_CODES)}, got {reference_clock!r}"
            )
        for label, value in (
            ("buffer_duration_s", buffer_duration_s),
            ("drain_quiet_s", drain_quiet_s),
        ):
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InputError(f"{label} must be a positive number of seconds, got {value!r}")
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int) or queue_depth < 1:
            raise InputError(f"queue_depth must be an int >= 1, got {queue_depth!r}")
        self.clock: Clock = clock if clock is not None else RealClock()
        self.input_level = input_level
        self.threshold_v = None if threshold_v is None else float(threshold_v)
        self.reference_clock = reference_clock
        self.channel_map = dict(channel_map if channel_map is not None else _IDENTITY_CHANNELS)
        self._lookup = channel_lookup_table(self.channel_map, range(1, 5), f"{name}: channel_map")
        self.buffer_duration_s = float(buffer_duration_s)
        self.queue_depth = queue_depth
        self.drain_quiet_s = float(drain_quiet_s)
        self.stream = Tdc1StreamCounters()
        self.epoch_unix_s: float | None = None
        self.last_error = ""
        self._decoder = Tdc1RecordDecoder(self.stream)
        self._queue = TagBufferQueue(queue_depth, ended=True)
        self._streaming = False
        self._aborting = False
        self._reader: asyncio.Task[None] | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_start_tick = 0
        self._pending_overflow = False

    # --- command framing -------------------------------------------------------------------

    async def _transact(self, command: str, expect_reply: bool) -> str:
        await self.transport.write(command.encode("ascii") + b"\r\n")
        if not expect_reply:
            return ""  # TDC1 settings answer nothing; the handshake reads back what matters
        line = (await self._read_line(b"\n", command)).rstrip("\r")
        if not line.strip():
            raise self.garbled(command, line, "empty reply")
        return line.strip()

    async def _exchange(self, command: str, expect_reply: bool, idempotent: bool = True) -> str:
        if self._streaming:
            raise DeviceError(f"{self._label()}: {command!r} refused while timestamps stream")
        return await super()._exchange(command, expect_reply, idempotent)

    async def _drain_until_quiet(self) -> None:
        """Discard input until the line is quiet for drain_quiet_s (a stream left running)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10 * self.timeout_s
        while True:
            try:
                stale = await self.transport.read_available(self.drain_quiet_s)
            except DeviceTimeout:
                return
            self._on_stale_input(stale)
            if loop.time() > deadline:
                raise DeviceError(
                    f"{self._label()}: still streaming {self.timeout_s * 10:g} s after ABORT"
                )

    async def _handshake(self) -> str:
        # ABORT first: a TDC1 left streaming would bury the identity reply in records
        await self._roundtrip("ABORT", expect_reply=False)
        await self._drain_until_quiet()
        identity = self._check_identity(await self._roundtrip("*IDN?", expect_reply=True))
        settings = ["*RST", "TIMESTAMP", self.input_level]
        if self.threshold_v is not None:
            sign = "NEG" if self.threshold_v < 0 else "POS"
            settings.append(f"{sign} {self.threshold_v:.3f}")
        settings.append(f"REFCLK {_REFCLK_CODES[self.reference_clock]}")
        for command in settings:
            await self._roundtrip(command, expect_reply=False)
        await self._drain()
        mode = await self._query_mode()
        if mode != _TIMESTAMP_MODE:
            raise self.instrument_error("TIMESTAMP", f"MODE? answers {mode}, not 3 (timestamp)")
        return identity

    async def _query_mode(self) -> int:
        reply = await self._roundtrip("MODE?", expect_reply=True)
        try:
            return int(reply)
        except ValueError:
            raise self.garbled("MODE?", reply, "not a mode number") from None

    async def _make_safe(self) -> None:
        await self.send("ABORT")

    async def _health(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {
            "streaming": self._streaming,
            "epoch_unix_s": self.epoch_unix_s,
            "last_error": self.last_error,
            "stream": asdict(self.stream),
        }
        if self._streaming:  # the line carries records: no query now
            reader_alive = self._reader is not None and not self._reader.done()
            return reader_alive, detail
        async with self._lock:
            mode = await self._query_mode()
            detail["level"] = await self._roundtrip("LEVEL?", expect_reply=True)
        detail["mode"] = mode
        return mode == _TIMESTAMP_MODE, detail

    # --- acquisition ---------------------------------------------------------------------------

    async def start(self) -> float:
        """Control: start streaming timestamps; returns the UTC instant (s) of timestamp 0."""
        async with self._lock:
            if self._streaming:
                raise DeviceError(f"{self._label()}: already streaming")
            if not self.identity:
                raise DeviceError(f"{self._label()}: not connected")
            if not self.transport.connected:
                await self._reconnect_locked(DeviceDisconnected(f"{self._label()}: link lost"))
            try:
                epoch = await self._write_start()
            except DeviceDisconnected as exc:
                await self._reconnect_locked(exc)
                epoch = await self._write_start()
            self.epoch_unix_s = epoch
            self._decoder.reset()
            self._pending.clear()
            self._pending_start_tick = 0
            self._pending_overflow = False
            self._queue = TagBufferQueue(self.queue_depth)
            self._aborting = False
            self._streaming = True
            self.stream.acquisitions += 1
            self._reader = asyncio.create_task(self._read_stream(), name=f"{self.name} stream")
        return epoch

    async def _write_start(self) -> float:
        if self._resync_needed:
            await self._drain()
            self._resync_needed = False
        epoch = float(self.clock.now_unix_s())
        self.counters.commands_sent += 1
        await self.transport.write(_START_COMMAND)
        return epoch

    async def stop(self) -> None:
        """Control: ABORT the stream; records already sent are still delivered, then None."""
        if not self._streaming or self._aborting:
            return
        self._aborting = True
        await self._queue.wake()
        self.counters.commands_sent += 1
        with contextlib.suppress(DeviceDisconnected):  # the reader reports a lost link
            await self.transport.write(_ABORT_COMMAND)
        if self._reader is None:
            return
        try:
            async with asyncio.timeout(10 * self.timeout_s + 1.0):  # not wait_for (issue 13)
                await asyncio.shield(self._reader)
        except TimeoutError:
            await self._cancel_reader()
            self._streaming = False
            await self._queue.put(None)
            raise DeviceTimeout(f"{self._label()}: stream did not end after ABORT") from None

    async def read(self, timeout_s: float | None = None) -> TagBuffer | None:
        """Measure: the next buffer of tags, or None once the stream has ended."""
        return await self._queue.read(self.name, timeout_s)

    async def close(self) -> None:
        """Control: end any stream, ABORT, release the port."""
        if self._streaming:
            with contextlib.suppress(DeviceError):
                await self.stop()
        await self._cancel_reader()
        self._streaming = False
        await super().close()

    async def _cancel_reader(self) -> None:
        task, self._reader = self._reader, None
        if task is not None and not task.done():
            current = asyncio.current_task()
            cancels_before = current.cancelling() if current is not None else 0
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # ours ended as asked; a cancel of the caller meanwhile (its timeout) is not
                # ours to swallow (one from before, a caller tearing down, is already handled)
                if current is not None and current.cancelling() > cancels_before:
                    raise

    # --- the stream reader ---------------------------------------------------------------------

    async def _read_stream(self) -> None:
        """Own the receive side from COUNTS? until the line is quiet after ABORT."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            while True:
                wait_s = self.drain_quiet_s if self._aborting else self.buffer_duration_s
                try:
                    data = await self.transport.read_available(wait_s)
                except DeviceTimeout:
                    if self._aborting:
                        break
                    await self._emit(force=True)  # quiet for a while: hand over what arrived
                    continue
                self._take(data)
                await self._emit(force=False)
                if self._aborting:
                    deadline = deadline or loop.time() + 10 * self.timeout_s
                    if loop.time() > deadline:
                        raise DeviceError(f"{self._label()}: records keep coming after ABORT")
            incomplete = self._decoder.take_incomplete()
            if incomplete:
                self.stream.short_records += 1
                self._pending_overflow = True
                self.last_error = (
                    f"stream ended inside a record ({len(incomplete)} of 4 bytes); dropped"
                )
            await self._emit(force=True)
            await self._queue.put(None)
        except asyncio.CancelledError:
            raise
        except DeviceError as exc:
            self.stream.stream_errors += 1
            self.last_error = str(exc)
            await self._emit(force=True)
            error = exc if str(exc).startswith(self.name) else type(exc)(f"{self.name}: {exc}")
            await self._queue.put(error)
        finally:
            self._streaming = False

    def _take(self, data: bytes) -> None:
        inputs, tick, garbled = self._decoder.decode(data)
        if garbled:
            self.stream.garbled_records += garbled
            self._pending_overflow = True
            self.last_error = f"{garbled} garbled record(s) (no input and not a marker); dropped"
        if inputs.size:
            self._pending.append((inputs, tick))

    async def _emit(self, *, force: bool) -> None:
        """Queue the pending tags as one buffer once they span buffer_duration_s (or `force`)."""
        last_tick = self._decoder.last_tick
        if last_tick is not None and last_tick >= self._pending_start_tick:
            stop_tick = last_tick + 1  # records are one per tick: the next one is later
        elif force and self._pending_overflow:
            stop_tick = self._pending_start_tick  # only damage to report: an empty interval
        else:
            return  # no record since the last buffer: no news of time passing
        span_s = (stop_tick - self._pending_start_tick) * TDC1_TICK_PS * 1e-12
        if not force and span_s < self.buffer_duration_s:
            return
        if self._pending:
            inputs = np.concatenate([part[0] for part in self._pending])
            tick = np.concatenate([part[1] for part in self._pending])
        else:
            inputs, tick = np.zeros(0, np.uint8), np.zeros(0, np.int64)
        await self._check_plausible(tick, stop_tick)
        channel = self._lookup[inputs]
        mapped = channel != 0
        self.stream.unmapped_tags += int(inputs.size - np.count_nonzero(mapped))
        assert self.epoch_unix_s is not None
        buffer = TagBuffer(
            channel[mapped],
            tick[mapped] * TDC1_TICK_PS,
            self.epoch_unix_s + self._pending_start_tick * TDC1_TICK_PS * 1e-12,
            self.epoch_unix_s + stop_tick * TDC1_TICK_PS * 1e-12,
            self._pending_overflow,
        )
        self._pending.clear()
        self._pending_start_tick = stop_tick
        self._pending_overflow = False
        self.stream.tags += int(buffer.channel.size)
        self.stream.buffers += 1
        await self._queue.put(buffer, wait=lambda: not self._aborting)

    async def _check_plausible(self, tick: np.ndarray, stop_tick: int) -> None:
        """Refuse (DeviceError, counted) a buffer whose interval ends before it starts or
        whose tags lie outside [start, stop] (both in ticks since the acquisition started):
        its tags are dropped, ABORT is sent and the stream ends with the error."""
        start_tick = self._pending_start_tick
        why = ""
        if stop_tick < start_tick:
            why = f"stop tick {stop_tick} is before start tick {start_tick}"
        elif tick.size and (int(tick.min()) < start_tick or int(tick.max()) > stop_tick):
            outside = tick[(tick < start_tick) | (tick > stop_tick)]
            why = (
                f"tag at tick {int(outside[0])} outside the buffer's ticks "
                f"{start_tick}..{stop_tick} ({outside.size} outside)"
            )
        if not why:
            return
        self.stream.implausible_buffers += 1
        self._pending.clear()
        self._pending_start_tick = max(start_tick, stop_tick)
        self._pending_overflow = False
        self._resync_needed = True  # the next start drains what the unit still sends
        with contextlib.suppress(DeviceError):
            await self.transport.write(_ABORT_COMMAND)
        raise DeviceError(
            f"{self._label()}: implausible buffer refused: {why}; expected start <= tag <= stop"
        )


class Tdc1TaggerOptions(DriverOptions):
    """Options of `Tdc1TimeTagger`: input standard or threshold (one for all four inputs),
    reference clock, input -> channel map, buffering and the quiet time that ends a stream."""

    input_level: Literal["NIM", "TTL"] = "NIM"
    threshold_v: Annotated[float, Field(ge=-3.3, le=3.3)] | None = None
    reference_clock: Literal["auto", "external", "internal"] = "auto"
    channel_map: dict[int, int] = Field(default_factory=lambda: dict(_IDENTITY_CHANNELS))
    buffer_duration_s: Annotated[float, Field(gt=0.0, le=10.0)] = 0.1
    queue_depth: Annotated[int, Field(ge=1, le=1024)] = 8
    drain_quiet_s: Annotated[float, Field(gt=0.0, le=5.0)] = 0.05

    @field_validator("channel_map")
    @classmethod
    def _check_channel_map(cls, value: dict[int, int]) -> dict[int, int]:
        channel_lookup_table(value, range(1, 5), "channel_map")
        return value
