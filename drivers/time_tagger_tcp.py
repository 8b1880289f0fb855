"""Time tagger drivers: the satqkd TT/1 streaming protocol over a Transport, and a vendor slot.

`TcpTimeTagger` speaks docs/tagger-protocol.md over any `drivers.transport.Transport` (TCP in
the lab and in CI against `sim_backends.emulators.time_tagger`): ASCII commands, binary frames
of 9-byte tags parsed with one `np.frombuffer` per frame (no Python object per tag). While an
acquisition streams, one reader task owns the receive side: it hands frames to `read` and reply
lines to the command that is waiting for them, and recovers from a garbled frame or a dropped
connection by reconnecting with backoff and `RESUME`-ing at the first frame it did not get.

`VendorTaggerAdapter` wraps a vendor SDK in-process (Swabian Instruments' `TimeTagger` module);
it is written against the SDK's documented API but untested here, since the SDK is not
installed: importing this module never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import math
import struct
import time
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from drivers.interfaces import (
    DeviceDisconnected,
    DeviceError,
    DeviceStatus,
    DeviceTimeout,
    TagBuffer,
    TimeTagger,
)
from drivers.options import DriverOptions
from drivers.tag_queue import TagBufferQueue
from drivers.transport import Transport
from satqkd_core.errors import InputError

__all__ = [
    "CHANNEL_SETTINGS",
    "ChannelSetting",
    "TaggerCounters",
    "TcpTimeTagger",
    "VendorTaggerAdapter",
]

_SYNC = 0xA5
_KIND_TAGS = 0x01
_KIND_END = 0x02
_FLAG_DATA_LOST = 0x0001
_HEADER = struct.Struct(">BBHIqqIII")  # 36 bytes; see docs/tagger-protocol.md
_EVENT_DTYPE = np.dtype([("channel", "u1"), ("timestamp_ps", ">i8")])
_MAX_TAGS_PER_FRAME = 1 << 24
_PS = 1e-12
_IDLE_POLL_S = 1.0  # how long the reader waits for a frame before looking again
#: default slack (ps) a tag may lie outside its frame's interval before the frame is refused:
#: the simulation (satqkd.pass_physics) and so the TT/1 emulator stamp a frame's tags with the
#: light time added (ms for LEO, ~0.14 s for GEO), after the frame's interval
DEFAULT_TAG_SLACK_PS = 200_000_000_000


@dataclass(frozen=True)
class ChannelSetting:
    """One per-channel setting of the command set: command word, unit, range, integer or not."""

    command: str
    unit: str
    minimum: float
    maximum: float
    integer: bool
    doc: str

    def encode(self, value: float) -> str:
        """Get the wire text of a value (integer ps, or volts with 3 decimals)."""
        return str(int(value)) if self.integer else f"{value:.3f}"


CHANNEL_SETTINGS: dict[str, ChannelSetting] = {
    "trigger_level_v": ChannelSetting("TRIG", "V", -2.5, 2.5, False, "comparator threshold"),
    "dead_time_ps": ChannelSetting("DEAD", "ps", 0, 100_000_000, True, "input dead time"),
    "input_delay_ps": ChannelSetting(
        "DELAY", "ps", -10_000_000, 10_000_000, True, "delay added to the channel's tags"
    ),
}


@dataclass
class TaggerCounters:
    """What the driver has seen of the stream since connect."""

    frames: int = 0
    tags: int = 0
    garbled_frames: int = 0
    data_lost_frames: int = 0
    lost_frames: int = 0
    duplicate_frames: int = 0
    reconnects: int = 0
    command_errors: int = 0
    unexpected_replies: int = 0
    implausible_frames: int = 0


class _FramingError(Exception):
    """A frame failed a check: the stream position can no longer be trusted."""


class TcpTimeTagger(TimeTagger):
    """A time tagger speaking satqkd TT/1 over a transport (TCP, or any byte stream)."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        reply_timeout_s: float = 2.0,
        reconnect_attempts: int = 5,
        reconnect_backoff_s: float = 0.05,
        reconnect_backoff_max_s: float = 2.0,
        queue_depth: int = 8,
        channel_settings: Mapping[int, Mapping[str, float]] | None = None,
        tag_slack_ps: int = DEFAULT_TAG_SLACK_PS,
    ) -> None:
        super().__init__(name)
        if not isinstance(transport, Transport):
            raise InputError(f"transport must be a Transport, got {type(transport).__name__}")
        for value, label in (
            (reply_timeout_s, "reply_timeout_s"),
            (reconnect_backoff_s, "reconnect_backoff_s"),
            (reconnect_backoff_max_s, "reconnect_backoff_max_s"),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"{label} must be a positive number of seconds, got {value!r}")
        if not isinstance(reconnect_attempts, int) or reconnect_attempts < 0:
            raise InputError(f"reconnect_attempts must be an int >= 0, got {reconnect_attempts!r}")
        if not isinstance(queue_depth, int) or queue_depth < 1:
            raise InputError(f"queue_depth must be an int >= 1, got {queue_depth!r}")
        if isinstance(tag_slack_ps, bool) or not isinstance(tag_slack_ps, int) or tag_slack_ps < 0:
            raise InputError(f"tag_slack_ps must be an int >= 0, got {tag_slack_ps!r}")
        self.transport = transport
        self.tag_slack_ps = tag_slack_ps
        self.reply_timeout_s = float(reply_timeout_s)
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_backoff_s = float(reconnect_backoff_s)
        self.reconnect_backoff_max_s = float(reconnect_backoff_max_s)
        self.queue_depth = queue_depth
        self.channel_settings = {int(k): dict(v) for k, v in (channel_settings or {}).items()}
        self.identity = ""
        self.n_channels = 0
        self.counters = TaggerCounters()
        self.last_error = ""
        self.epoch_unix_s: float | None = None
        self._connect_timeout_s = 5.0
        self._lock = asyncio.Lock()
        self._pending: deque[tuple[str, asyncio.Future[str]]] = deque()
        self._streaming = False
        self._next_sequence = 0
        self._queue = TagBufferQueue(queue_depth, ended=True)
        self._reader: asyncio.Task[None] | None = None
        self._link_up = asyncio.Event()
        self._link_up.set()

    # --- life cycle ---------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: open the transport, read identity and channel count, apply settings."""
        self._connect_timeout_s = float(timeout_s)
        await self.transport.open(timeout_s)
        try:
            await self._flush_input()
            self.identity = await self._command("*IDN?")
            channels = await self._command("CHAN?")
            if not channels.isdigit() or not 1 <= int(channels) <= 255:
                raise DeviceError(f"{self.name}: CHAN? answered {channels!r}, not a channel count")
            self.n_channels = int(channels)
            for channel, settings in sorted(self.channel_settings.items()):
                for setting, value in settings.items():
                    await self.set_channel_setting(channel, setting, value)
        except BaseException:
            await self.transport.close()  # leave nothing half open behind a failed connect
            raise

    async def close(self) -> None:
        """Control: stop any acquisition and release the transport."""
        if self._streaming:
            with contextlib.suppress(DeviceError):
                await self.stop()
        await self._cancel_reader()
        await self.transport.close()

    async def status(self) -> DeviceStatus:
        """Measure: identity, link state and stream counters."""
        reader_failed = self._reader is not None and self._reader.done() and self._streaming
        return DeviceStatus(
            self.name,
            self.identity,
            self.transport.connected,
            self.transport.connected and not reader_failed,
            {
                "streaming": self._streaming,
                "next_sequence": self._next_sequence,
                "epoch_unix_s": self.epoch_unix_s,
                "last_error": self.last_error,
                **asdict(self.counters),
            },
        )

    # --- channel settings (declared in CHANNEL_SETTINGS) --------------------------------------

    def _check_channel(self, channel: int) -> int:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise InputError(f"channel must be an integer, got {channel!r}")
        top = self.n_channels or 255
        if not 1 <= int(channel) <= top:
            raise InputError(f"channel must be in 1..{top}, got {channel}")
        return int(channel)

    async def set_channel_setting(self, channel: int, setting: str, value: float) -> None:
        """Set: one per-channel setting (a CHANNEL_SETTINGS key) after a range check."""
        spec = CHANNEL_SETTINGS.get(setting)
        if spec is None:
            raise InputError(f"setting must be one of {sorted(CHANNEL_SETTINGS)}, got {setting!r}")
        channel = self._check_channel(channel)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputError(f"{setting} must be a number, got {value!r}")
        if spec.integer and float(value) != int(value):
            raise InputError(f"{setting} must be a whole number of {spec.unit}, got {value!r}")
        if not (math.isfinite(float(value)) and spec.minimum <= value <= spec.maximum):
            raise InputError(
                f"{setting} must be in {spec.minimum:g}..{spec.maximum:g} {spec.unit}, got {value}"
            )
        await self._command(f"{spec.command} {channel} {spec.encode(value)}")

    async def get_channel_setting(self, channel: int, setting: str) -> float:
        """Get: one per-channel setting as the tagger reports it."""
        spec = CHANNEL_SETTINGS.get(setting)
        if spec is None:
            raise InputError(f"setting must be one of {sorted(CHANNEL_SETTINGS)}, got {setting!r}")
        channel = self._check_channel(channel)
        text = await self._command(f"{spec.command}? {channel}")
        try:
            return int(text) if spec.integer else float(text)
        except ValueError:
            raise DeviceError(f"{self.name}: {spec.command}? answered {text!r}") from None

    async def set_trigger_level(self, channel: int, level_v: float) -> None:
        """Set: trigger level of an input, volts."""
        await self.set_channel_setting(channel, "trigger_level_v", level_v)

    async def set_dead_time(self, channel: int, dead_time_ps: int) -> None:
        """Set: dead time of an input, ps."""
        await self.set_channel_setting(channel, "dead_time_ps", dead_time_ps)

    async def set_input_delay(self, channel: int, delay_ps: int) -> None:
        """Set: delay added to an input's tags, ps."""
        await self.set_channel_setting(channel, "input_delay_ps", delay_ps)

    # --- acquisition --------------------------------------------------------------------------

    async def start(self) -> float:
        """Control: start an acquisition; returns the UTC instant (s) of timestamp 0."""
        if self._streaming:
            raise DeviceError(f"{self.name}: already streaming")
        self.epoch_unix_s = self._parse_epoch(await self._command("START"))
        self._next_sequence = 0
        self._queue = TagBufferQueue(self.queue_depth)
        self._streaming = True
        self._reader = asyncio.create_task(self._read_stream(), name=f"{self.name} stream")
        return self.epoch_unix_s

    async def stop(self) -> None:
        """Control: stop the acquisition; a pending `read` then returns None."""
        if not self._streaming:
            return
        try:
            await self._send_stop()
            if self._reader is not None:
                async with asyncio.timeout(self.reply_timeout_s):  # not wait_for (issue 13)
                    await asyncio.shield(self._reader)
        except DeviceError:
            await self._end_stream_locally()
            raise
        except TimeoutError:
            await self._end_stream_locally()
            raise DeviceTimeout(f"{self.name}: stream did not end after STOP") from None

    async def _send_stop(self) -> None:
        for attempt in range(2):
            try:
                await self._command("STOP")
                return
            except DeviceDisconnected:
                if attempt == 1:
                    raise
            except DeviceError as exc:
                if attempt == 1 and " refused: ERR 5 " in str(exc):
                    return  # the first STOP did arrive; the resumed stream ends by itself
                raise
            # The link dropped with STOP in flight. Once the reader has resumed, the stream
            # either ends by itself (the tagger had stopped) or STOP must be sent again.
            await self._wait_for_link_or_end()
            if self._reader_done() or not self._streaming:
                return

    async def _wait_for_link_or_end(self) -> None:
        budget_s = self.reconnect_attempts * (
            self.reconnect_backoff_max_s + self._connect_timeout_s
        )
        waiters = [asyncio.ensure_future(self._link_up.wait())]
        if self._reader is not None:
            waiters.append(asyncio.ensure_future(asyncio.shield(self._reader)))
        try:
            await asyncio.wait(waiters, timeout=budget_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def read(self, timeout_s: float | None = None) -> TagBuffer | None:
        """Measure: the next buffer of tags, or None once the acquisition has stopped."""
        return await self._queue.read(self.name, timeout_s)

    # --- commands -----------------------------------------------------------------------------

    async def _command(self, text: str) -> str:
        """Send one command; return the text after OK, raise on ERR, time out naming it."""
        async with self._lock:
            if self._reader is not None and not self._reader.done():
                future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                self._pending.append((text, future))
                await self._queue.wake()  # a reader held by back-pressure re-checks it
                await self.transport.write(text.encode("ascii") + b"\n")
                try:
                    async with asyncio.timeout(self.reply_timeout_s):
                        line = await future
                except TimeoutError:
                    raise self._no_reply(text) from None
            else:
                await self._flush_input()  # a late reply to a timed-out command must not count
                await self.transport.write(text.encode("ascii") + b"\n")
                line = await self._read_reply_directly(text)
        return self._parse_reply(text, line)

    async def _read_reply_directly(self, text: str) -> str:
        try:
            first = await self.transport.read_exactly(1, self.reply_timeout_s)
            if first[0] == _SYNC:
                raise DeviceError(
                    f"{self.name}: a frame arrived where the reply to {text!r} was due"
                )
            rest = await self.transport.read_until(b"\n", self.reply_timeout_s)
        except DeviceTimeout:
            raise self._no_reply(text) from None
        return (first + rest).decode("ascii", errors="replace").rstrip("\r\n")

    def _no_reply(self, text: str) -> DeviceTimeout:
        return DeviceTimeout(f"{self.name}: no reply to {text!r} within {self.reply_timeout_s:g} s")

    def _parse_reply(self, text: str, line: str) -> str:
        if line == "OK" or line.startswith("OK "):
            return line[3:]
        self.counters.command_errors += 1
        if line.startswith("ERR "):
            raise DeviceError(f"{self.name}: {text!r} refused: {line}")
        raise DeviceError(f"{self.name}: {text!r} got a malformed reply {line!r}")

    def _parse_epoch(self, text: str) -> float:
        try:
            epoch = float(text)
        except ValueError:
            epoch = math.nan
        if not math.isfinite(epoch):
            raise DeviceError(f"{self.name}: epoch {text!r} is not a number of seconds")
        return epoch

    async def _flush_input(self) -> None:
        """Discard bytes already waiting (a stale reply or the rest of a bad frame)."""
        with contextlib.suppress(DeviceTimeout):
            while await self.transport.read_available(0.0):
                pass

    # --- the stream reader --------------------------------------------------------------------

    def _reader_done(self) -> bool:
        return self._reader is None or self._reader.done()

    async def _read_stream(self) -> None:
        """Own the receive side until the end frame and the last pending reply have arrived."""
        try:
            while self._streaming or self._pending:
                try:
                    await self._read_message()
                except _FramingError as exc:
                    self.counters.garbled_frames += 1
                    self.last_error = f"garbled frame: {exc}"
                    await self._recover()
                except DeviceDisconnected as exc:
                    self.last_error = str(exc)
                    await self._recover()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_error = str(exc)
            error = exc if isinstance(exc, DeviceError) else DeviceError(f"{self.name}: {exc}")
            self._fail_pending(error)
            self._streaming = False
            await self._queue.put(error)

    async def _read_message(self) -> None:
        try:
            first = await self.transport.read_exactly(1, _IDLE_POLL_S)
        except DeviceTimeout:
            return  # nothing yet; read() has its own timeout
        try:
            if first[0] == _SYNC:
                await self._read_frame(first)
            elif first in (b"O", b"E"):
                rest = await self.transport.read_until(b"\n", self.reply_timeout_s)
                self._deliver_reply((first + rest).decode("ascii", errors="replace").rstrip())
            else:
                raise _FramingError(f"byte 0x{first[0]:02X} where a frame or reply should start")
        except DeviceTimeout as exc:
            raise _FramingError(f"message incomplete: {exc}") from None

    def _deliver_reply(self, line: str) -> None:
        if not self._pending:
            self.counters.unexpected_replies += 1
            return
        _, future = self._pending.popleft()
        if not future.done():  # a command that timed out still owns its (late) reply
            future.set_result(line)

    async def _read_frame(self, first: bytes) -> None:
        head = first + await self.transport.read_exactly(_HEADER.size - 1, self.reply_timeout_s)
        _, kind, flags, sequence, start_ps, stop_ps, n, tags_crc, head_crc = _HEADER.unpack(head)
        if zlib.crc32(head[:32]) != head_crc:
            raise _FramingError("header CRC mismatch")
        if kind not in (_KIND_TAGS, _KIND_END) or n > _MAX_TAGS_PER_FRAME:
            raise _FramingError(f"frame {sequence}: kind {kind} with {n} tags")
        payload = await self.transport.read_exactly(9 * n, self.reply_timeout_s) if n else b""
        if zlib.crc32(payload) != tags_crc:
            raise _FramingError(f"frame {sequence}: tag CRC mismatch")
        if kind == _KIND_END:
            if sequence > self._next_sequence:
                self.counters.lost_frames += sequence - self._next_sequence
            self._streaming = False
            await self._queue.put(None)
            return
        if sequence < self._next_sequence:
            self.counters.duplicate_frames += 1  # replayed after a RESUME
            return
        events = np.frombuffer(payload, dtype=_EVENT_DTYPE)
        channel = events["channel"].copy()
        timestamp_ps = events["timestamp_ps"].astype(np.int64)
        if n and (channel.min() < 1 or channel.max() > self.n_channels):
            raise _FramingError(f"frame {sequence}: channel outside 1..{self.n_channels}")
        if n > 1 and np.any(timestamp_ps[1:] < timestamp_ps[:-1]):
            raise _FramingError(f"frame {sequence}: tags out of time order")
        self._check_plausible(sequence, start_ps, stop_ps, timestamp_ps)
        overflow = bool(flags & _FLAG_DATA_LOST)
        if sequence > self._next_sequence:
            self.counters.lost_frames += sequence - self._next_sequence
            overflow = True
        self.counters.data_lost_frames += overflow
        self.counters.frames += 1
        self.counters.tags += n
        self._next_sequence = sequence + 1
        assert self.epoch_unix_s is not None
        buffer = TagBuffer(
            channel,
            timestamp_ps,
            self.epoch_unix_s + start_ps * _PS,
            self.epoch_unix_s + stop_ps * _PS,
            overflow,
        )
        await self._queue.put(buffer, wait=self._back_pressure)

    def _check_plausible(
        self, sequence: int, start_ps: int, stop_ps: int, timestamp_ps: np.ndarray
    ) -> None:
        """Refuse (DeviceError, counted; ends the stream) a frame whose CRC is good but whose
        interval or tags cannot be: stop before start, or a tag outside [start, stop] by more
        than `tag_slack_ps` (all in ps since the epoch, as the frame carries them)."""
        assert self.epoch_unix_s is not None
        start_s = self.epoch_unix_s + start_ps * _PS
        stop_s = self.epoch_unix_s + stop_ps * _PS
        low, high = start_ps - self.tag_slack_ps, stop_ps + self.tag_slack_ps
        why = ""
        if not (math.isfinite(start_s) and math.isfinite(stop_s)):
            why = f"interval {start_ps}..{stop_ps} ps is not a finite time; expected finite"
        elif stop_ps < start_ps:
            why = f"stop {stop_ps} ps is before start {start_ps} ps; expected start <= stop"
        elif timestamp_ps.size and (
            timestamp_ps[0] < low or timestamp_ps[-1] > high
        ):  # the tags are in time order: the first and last bound them all
            outside = timestamp_ps[(timestamp_ps < low) | (timestamp_ps > high)]
            why = (
                f"tag at {int(outside[0])} ps outside its interval {start_ps}..{stop_ps} ps "
                f"({outside.size} outside); expected start - {self.tag_slack_ps} <= tag <= "
                f"stop + {self.tag_slack_ps} ps"
            )
        if why:
            self.counters.implausible_frames += 1
            raise DeviceError(f"{self.name}: implausible frame {sequence} refused: {why}")

    def _back_pressure(self) -> bool:
        # once STOP is on its way the consumer stops reading: never block the reader then
        return self._streaming and not any(text == "STOP" for text, _ in self._pending)

    async def _recover(self) -> None:
        """Reconnect with exponential backoff and resume at the first frame not received."""
        self.counters.reconnects += 1
        self._link_up.clear()
        self._fail_pending(DeviceDisconnected(f"{self.name}: link lost ({self.last_error})"))
        await self.transport.close()
        delay = self.reconnect_backoff_s
        failure = "no attempt allowed"
        for _ in range(self.reconnect_attempts):
            await asyncio.sleep(delay)  # network backoff runs on real time, not the sim clock
            try:
                await self.transport.open(self._connect_timeout_s)
                await self._flush_input()
                resume = f"RESUME {self._next_sequence}"
                await self.transport.write(resume.encode("ascii") + b"\n")
                epoch = self._parse_epoch(
                    self._parse_reply(resume, await self._read_reply_directly(resume))
                )
            except DeviceError as exc:
                failure = str(exc)
                delay = min(2.0 * delay, self.reconnect_backoff_max_s)
                with contextlib.suppress(Exception):
                    await self.transport.close()
                continue
            if epoch != self.epoch_unix_s:
                raise DeviceError(
                    f"{self.name}: tagger restarted (epoch {epoch} != {self.epoch_unix_s}); "
                    "acquisition lost"
                )
            self._link_up.set()
            return
        raise DeviceDisconnected(
            f"{self.name}: link lost ({self.last_error}); not regained after "
            f"{self.reconnect_attempts} attempts: {failure}"
        )

    def _fail_pending(self, error: DeviceError) -> None:
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)

    async def _end_stream_locally(self) -> None:
        self._streaming = False
        await self._cancel_reader()
        self._fail_pending(DeviceDisconnected(f"{self.name}: stream abandoned"))
        await self._queue.put(None)

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


class VendorTaggerAdapter(TimeTagger):
    """A vendor SDK tagger (Swabian Instruments `TimeTagger`) in-process, behind TimeTagger.

    UNTESTED: written against the SDK's documented Python API (createTimeTagger,
    setTriggerLevel, setDeadtime, setInputDelay, TimeTagStream.getData -> getChannels,
    getTimestamps, getEventTypes) without the SDK installed. The SDK is imported at `connect`,
    so this class costs nothing when it is absent. Timestamp 0 is the first tag stream buffer's
    start; its UTC epoch is the host clock at `start` (ms-level unless the tagger's clock is
    disciplined by a reference input), which the synchronisation stage absorbs.
    """

    _SDK_MODULES = ("Swabian.TimeTagger", "TimeTagger")

    def __init__(
        self,
        name: str,
        channels: Sequence[int],
        *,
        serial: str = "",
        channel_settings: Mapping[int, Mapping[str, float]] | None = None,
        buffer_tags: int = 10_000_000,
        poll_interval_s: float = 0.05,
        now_unix_s: Any = None,
    ) -> None:
        super().__init__(name)
        if not channels or any(not 1 <= int(c) <= 255 for c in channels):
            raise InputError(f"channels must be a non-empty list of 1..255, got {channels!r}")
        self.channels = [int(c) for c in channels]
        self.serial = serial
        self.channel_settings = {int(k): dict(v) for k, v in (channel_settings or {}).items()}
        self.buffer_tags = int(buffer_tags)
        self.poll_interval_s = float(poll_interval_s)
        self._now = now_unix_s
        self._sdk: Any = None
        self._tagger: Any = None
        self._stream: Any = None
        self._origin_ps: int | None = None
        self._last_stop_ps = 0
        self.epoch_unix_s: float | None = None
        self.identity = ""

    @classmethod
    def sdk_available(cls) -> bool:
        """Get whether a vendor SDK module can be imported here."""
        return any(importlib.util.find_spec(m.split(".")[0]) for m in cls._SDK_MODULES)

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: import the SDK, open the tagger and apply the channel settings."""
        for module in self._SDK_MODULES:
            with contextlib.suppress(ImportError):
                self._sdk = importlib.import_module(module)
                break
        if self._sdk is None:
            raise DeviceError(f"{self.name}: no vendor SDK ({' or '.join(self._SDK_MODULES)})")
        sdk = self._sdk
        async with asyncio.timeout(timeout_s):
            self._tagger = await asyncio.to_thread(sdk.createTimeTagger, self.serial)
        self.identity = f"{self._tagger.getModel()} {self._tagger.getSerial()}"
        setters = {
            "trigger_level_v": self._tagger.setTriggerLevel,
            "dead_time_ps": self._tagger.setDeadtime,
            "input_delay_ps": self._tagger.setInputDelay,
        }
        for channel, settings in self.channel_settings.items():
            for setting, value in settings.items():
                if setting not in setters:
                    raise InputError(f"setting must be one of {sorted(setters)}, got {setting!r}")
                setters[setting](channel, value)

    async def close(self) -> None:
        """Control: stop streaming and free the tagger."""
        await self.stop()
        if self._tagger is not None:
            self._sdk.freeTimeTagger(self._tagger)
            self._tagger = None

    async def status(self) -> DeviceStatus:
        """Measure: identity and whether a stream is running."""
        connected = self._tagger is not None
        return DeviceStatus(
            self.name, self.identity, connected, connected, {"streaming": self._stream is not None}
        )

    async def start(self) -> float:
        """Control: start a TimeTagStream; returns the host UTC instant of timestamp 0."""
        if self._tagger is None:
            raise DeviceError(f"{self.name}: not connected")
        now = self._now() if self._now is not None else time.time()
        self._stream = self._sdk.TimeTagStream(self._tagger, self.buffer_tags, self.channels)
        self._stream.start()
        self._origin_ps = None
        self.epoch_unix_s = float(now)
        return self.epoch_unix_s

    async def stop(self) -> None:
        """Control: stop the stream."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()

    async def read(self, timeout_s: float | None = None) -> TagBuffer | None:
        """Measure: the tags gathered since the last read (polls the SDK's buffer)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self._stream is not None:
            data = await asyncio.to_thread(self._stream.getData)
            if data.size:
                return self._to_buffer(data)
            if deadline is not None and loop.time() >= deadline:
                raise DeviceTimeout(f"{self.name}: no tag buffer within {timeout_s} s")
            await asyncio.sleep(self.poll_interval_s)
        return None

    def _to_buffer(self, data: Any) -> TagBuffer:
        types = np.asarray(data.getEventTypes())
        tag = types == 0  # TimeTag; the others mark errors, overflow begin/end, missed events
        timestamp = np.asarray(data.getTimestamps(), dtype=np.int64)
        if self._origin_ps is None:
            self._origin_ps = int(data.tStart)
        start_ps = self._last_stop_ps
        self._last_stop_ps = int(data.tGetData) - self._origin_ps
        assert self.epoch_unix_s is not None
        return TagBuffer(
            np.asarray(data.getChannels(), dtype=np.int64)[tag].astype(np.uint8),
            timestamp[tag] - self._origin_ps,
            self.epoch_unix_s + start_ps * _PS,
            self.epoch_unix_s + self._last_stop_ps * _PS,
            bool(data.hasOverflows) or bool(np.any(~tag)),
        )


class TcpTimeTaggerOptions(DriverOptions):
    """Options of `TcpTimeTagger`: reply timeout, reconnection, buffering and per-channel
    settings (`{channel: {"threshold_v": -0.5, "delay_ps": 0, "dead_time_ps": 22000}}`)."""

    reply_timeout_s: Annotated[float, Field(gt=0.0, le=60.0)] = 2.0
    reconnect_attempts: Annotated[int, Field(ge=0, le=100)] = 5
    reconnect_backoff_s: Annotated[float, Field(gt=0.0)] = 0.05
    reconnect_backoff_max_s: Annotated[float, Field(gt=0.0)] = 2.0
    queue_depth: Annotated[int, Field(ge=1, le=1024)] = 8
    channel_settings: dict[int, dict[str, float]] | None = None
    tag_slack_ps: Annotated[int, Field(ge=0)] = DEFAULT_TAG_SLACK_PS
