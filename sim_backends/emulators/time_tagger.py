"""A time tagger on a TCP port speaking the satqkd TT/1 protocol (docs/tagger-protocol.md).

The scenario feeds it the channel simulation's detections buffer by buffer (`feed`, like
`SimTimeTagger.feed`); it applies each input's delay and dead time as a tagger
does, frames the tags and streams them to whichever connection started or resumed the
acquisition. The acquisition survives a dropped connection: the most recent frames are kept for
`RESUME`. Faults are injected through `faults` (a hung tagger, slow replies, a garbled frame, a
connection dropped mid-stream, an input FIFO overflow) so the driver's error paths run against
real sockets.

The frame encoder here is written from the protocol document, independently of the driver's
decoder, so a misreading of the format on one side shows up as a test failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numba
import numpy as np

from drivers.interfaces import TagBuffer
from satqkd_core.errors import InputError

__all__ = [
    "TaggerFaults",
    "TimeTaggerEmulator",
    "encode_tagger_frame",
    "tagger_dead_time_filter",
    "tagger_dead_time_filter_reference",
]

SYNC = 0xA5
KIND_TAGS = 0x01
KIND_END = 0x02
FLAG_DATA_LOST = 0x0001
_HEADER = struct.Struct(">BBHIqqII")  # header bytes 0..31; the header CRC follows
_CRC = struct.Struct(">I")
_EVENT_DTYPE = np.dtype([("channel", "u1"), ("timestamp_ps", ">i8")])
_PS_PER_S = 1_000_000_000_000
# Settings ranges (docs/tagger-protocol.md); the driver checks the same ranges independently.
_TRIGGER_RANGE_V = (-2.5, 2.5)
_DEAD_TIME_RANGE_PS = (0, 100_000_000)
_DELAY_RANGE_PS = (-10_000_000, 10_000_000)
_FAR_PAST_PS = -(1 << 62)  # "no live tag yet" for the dead-time filter, safe to subtract from


class _Clock(Protocol):
    def now_unix_s(self) -> float: ...


@dataclass
class TaggerFaults:
    """Faults to inject; sequence sets are consumed (each listed frame is faulted once)."""

    no_reply: bool = False  # ignore every command and stop streaming (hung firmware)
    reply_delay_s: float = 0.0  # wait this long (real time) before each reply line
    garble_sequences: set[int] = field(default_factory=set)  # corrupt these frames' tag bytes
    garble_header_sequences: set[int] = field(default_factory=set)  # corrupt these headers
    disconnect_before_sequences: set[int] = field(default_factory=set)  # drop link before these
    overflow_sequences: set[int] = field(default_factory=set)  # FIFO overflow: lose half the tags


@numba.njit(cache=True)
def tagger_dead_time_filter(
    channel: np.ndarray,
    timestamp_ps: np.ndarray,
    dead_time_ps: np.ndarray,
    last_live_ps: np.ndarray,
    keep: np.ndarray,
) -> None:
    """Set keep[i] if tag i is outside its input's dead time after the last kept tag there."""
    for i in range(channel.shape[0]):
        c = channel[i]
        if timestamp_ps[i] - last_live_ps[c] >= dead_time_ps[c]:
            keep[i] = True
            last_live_ps[c] = timestamp_ps[i]
        else:
            keep[i] = False


def tagger_dead_time_filter_reference(
    channel: np.ndarray, timestamp_ps: np.ndarray, dead_time_ps: dict[int, int], last_live_ps: dict
) -> list[bool]:
    """Get the keep mask of tagger_dead_time_filter with dictionaries (updates last_live_ps)."""
    keep = []
    for c, t in zip(channel.tolist(), timestamp_ps.tolist(), strict=True):
        last = last_live_ps.get(c)
        live = last is None or t - last >= dead_time_ps.get(c, 0)
        if live:
            last_live_ps[c] = t
        keep.append(live)
    return keep


def encode_tagger_frame(
    kind: int,
    flags: int,
    sequence: int,
    interval_start_ps: int,
    interval_stop_ps: int,
    channel: np.ndarray,
    timestamp_ps: np.ndarray,
) -> bytes:
    """Get one TT/1 frame: 36-byte header (two CRC-32s), then 9 bytes per tag."""
    events = np.empty(channel.shape[0], dtype=_EVENT_DTYPE)
    events["channel"] = channel
    events["timestamp_ps"] = timestamp_ps
    payload = events.tobytes()
    head = _HEADER.pack(
        SYNC,
        kind,
        flags,
        sequence,
        interval_start_ps,
        interval_stop_ps,
        channel.shape[0],
        zlib.crc32(payload),
    )
    return head + _CRC.pack(zlib.crc32(head)) + payload


def _with_flags(frame: bytes, flags: int) -> bytes:
    """Get the frame with extra flag bits set and its header CRC recomputed."""
    head = bytearray(frame[:32])
    old = struct.unpack_from(">H", head, 2)[0]
    struct.pack_into(">H", head, 2, old | flags)
    return bytes(head) + _CRC.pack(zlib.crc32(head)) + frame[36:]


class _Connection:
    """One client connection: its writer and a lock so each message is written whole."""

    def __init__(self, writer: asyncio.StreamWriter, number: int) -> None:
        self.writer = writer
        self.number = number
        self.lock = asyncio.Lock()
        self.closed = False

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("connection closed")
        async with self.lock:
            self.writer.write(data)
            await self.writer.drain()

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()


class TimeTaggerEmulator:
    """A TT/1 time tagger on 127.0.0.1 (a free port) fed by the scenario's detections."""

    def __init__(
        self,
        clock: _Clock,
        *,
        n_channels: int = 8,
        identity: str = "satqkd,TT-EMU-8,0001,1.0",
        retain_frames: int = 256,
        queue_depth: int | None = 4,
        host: str = "127.0.0.1",
    ) -> None:
        if isinstance(n_channels, bool) or not isinstance(n_channels, int):
            raise InputError(f"n_channels must be an int, got {n_channels!r}")
        if not 1 <= n_channels <= 255:
            raise InputError(f"n_channels must be in 1..255, got {n_channels}")
        if not isinstance(retain_frames, int) or retain_frames < 1:
            raise InputError(f"retain_frames must be an int >= 1, got {retain_frames!r}")
        if queue_depth is not None and (not isinstance(queue_depth, int) or queue_depth < 1):
            raise InputError(f"queue_depth must be None or an int >= 1, got {queue_depth!r}")
        if "\n" in identity:
            raise InputError("identity must be one line")
        self.clock = clock
        self.n_channels = n_channels
        self.identity = identity
        self.retain_frames = retain_frames
        self.queue_depth = queue_depth
        self.host = host
        self.port: int | None = None
        self.faults = TaggerFaults()
        self.trigger_level_v = np.full(n_channels + 1, -0.5)
        self.dead_time_ps = np.zeros(256, dtype=np.int64)
        self.input_delay_ps = np.zeros(256, dtype=np.int64)
        self.state = "IDLE"
        self.epoch_unix_s: float | None = None
        self.started = asyncio.Event()
        self.commands: list[str] = []
        self.connections = 0
        self.frames_sent = 0
        self.dropped_buffers = 0
        self._server: asyncio.Server | None = None
        self._clients: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retained: deque[tuple[int, bytes]] = deque(maxlen=retain_frames)
        self._next_sequence = 0
        self._send_sequence = 0
        self._attached: _Connection | None = None
        self._changed = asyncio.Condition()
        self._end_sent = asyncio.Event()
        self._last_live_ps = np.full(256, _FAR_PAST_PS, dtype=np.int64)
        self._first_start_ps: int | None = None
        self._last_stop_ps = 0

    # --- life cycle ---------------------------------------------------------------------------

    @property
    def resource(self) -> str:
        """Get the resource string a driver opens (tcp://127.0.0.1:PORT)."""
        if self.port is None:
            raise RuntimeError("emulator not started")
        return f"tcp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Get whether an acquisition is running."""
        return self.state == "RUNNING"

    async def start(self, port: int = 0) -> None:
        """Control: listen on `port` of the host (0: a free one)."""
        self._server = await asyncio.start_server(self._serve, self.host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Control: drop every connection and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._clients):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):  # not wait_for (issue 13)
                    await server.wait_closed()

    async def __aenter__(self) -> TimeTaggerEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def inject(self, **changes: object) -> None:
        """Control: change fault settings (TaggerFaults field names) and wake the streamer."""
        for key, value in changes.items():
            if not hasattr(self.faults, key):
                raise InputError(f"unknown tagger fault {key!r}")
            setattr(self.faults, key, value)
        async with self._changed:
            self._changed.notify_all()

    def drop_connections(self) -> None:
        """Control: abort every client connection now (the acquisition carries on)."""
        for connection in list(self._clients):
            connection.abort()

    # --- the simulation side ------------------------------------------------------------------

    async def feed(self, buffer: TagBuffer) -> None:
        """Simulation side: record one buffer of detections (waits while the host lags)."""
        channel = np.ascontiguousarray(buffer.channel, dtype=np.uint8)
        timestamp_ps = np.ascontiguousarray(buffer.timestamp_ps, dtype=np.int64)
        if channel.ndim != 1 or channel.shape != timestamp_ps.shape:
            raise InputError(
                f"buffer.channel and buffer.timestamp_ps must be 1-D of one length, got "
                f"{channel.shape} and {timestamp_ps.shape}"
            )
        if channel.size and (channel.min() < 1 or channel.max() > self.n_channels):
            raise InputError(f"buffer.channel must be in 1..{self.n_channels}")
        if timestamp_ps.size > 1 and np.any(np.diff(timestamp_ps) < 0):
            raise InputError("buffer.timestamp_ps must be non-decreasing")
        if self.state != "RUNNING" or self.epoch_unix_s is None:
            self.dropped_buffers += 1  # a stopped tagger records nothing
            return
        if self.queue_depth is not None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: (
                        self._next_sequence - self._send_sequence < self.queue_depth
                        or self.state != "RUNNING"
                    )
                )
            if self.state != "RUNNING":
                self.dropped_buffers += 1
                return
        start_ps = round((buffer.start_unix_s - self.epoch_unix_s) * _PS_PER_S)
        stop_ps = round((buffer.stop_unix_s - self.epoch_unix_s) * _PS_PER_S)
        sequence = self._next_sequence
        flags = FLAG_DATA_LOST if buffer.overflow else 0
        channel, timestamp_ps = self._apply_inputs(channel, timestamp_ps)
        if sequence in self.faults.overflow_sequences:
            self.faults.overflow_sequences.discard(sequence)
            keep = channel.shape[0] // 2  # the FIFO filled: the rest of the interval is lost
            channel, timestamp_ps = channel[:keep], timestamp_ps[:keep]
            flags |= FLAG_DATA_LOST
        frame = encode_tagger_frame(
            KIND_TAGS, flags, sequence, start_ps, stop_ps, channel, timestamp_ps
        )
        if self._first_start_ps is None:
            self._first_start_ps = start_ps
        self._last_stop_ps = stop_ps
        self._retained.append((sequence, frame))
        self._next_sequence += 1
        async with self._changed:
            self._changed.notify_all()

    def _apply_inputs(
        self, channel: np.ndarray, timestamp_ps: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Get the tags after each input's delay and dead time, in time order."""
        delayed = timestamp_ps + self.input_delay_ps[channel]
        if np.any(self.input_delay_ps):
            order = np.argsort(delayed, kind="stable")
            channel, delayed = channel[order], delayed[order]
        if np.any(self.dead_time_ps):
            keep = np.empty(channel.shape[0], dtype=np.bool_)
            tagger_dead_time_filter(channel, delayed, self.dead_time_ps, self._last_live_ps, keep)
            channel, delayed = channel[keep], delayed[keep]
        return channel, delayed

    # --- the wire side ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = _Connection(writer, self.connections)
        self._clients.add(connection)
        try:
            while True:
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    return  # EOF (a partial last line is not a command)
                if self.faults.no_reply:
                    continue
                command = line.decode("ascii", errors="replace").strip()
                self.commands.append(command)
                await self._execute(connection, command)
        except (ConnectionError, OSError):
            return
        finally:
            connection.closed = True
            self._clients.discard(connection)
            if self._attached is connection:
                self._attached = None
            with contextlib.suppress(Exception):
                writer.close()

    async def _reply(self, connection: _Connection, text: str) -> None:
        if self.faults.reply_delay_s > 0.0:
            await asyncio.sleep(self.faults.reply_delay_s)
        await connection.send(text.encode("ascii") + b"\n")

    async def _execute(self, connection: _Connection, command: str) -> None:
        name, *args = command.split(" ") if command else [""]
        handlers = {
            "*IDN?": self._cmd_identity,
            "CHAN?": self._cmd_channels,
            "TRIG": self._cmd_set,
            "DEAD": self._cmd_set,
            "DELAY": self._cmd_set,
            "TRIG?": self._cmd_get,
            "DEAD?": self._cmd_get,
            "DELAY?": self._cmd_get,
            "START": self._cmd_start,
            "STOP": self._cmd_stop,
            "RESUME": self._cmd_resume,
            "STAT?": self._cmd_status,
        }
        handler = handlers.get(name)
        if handler is None:
            await self._reply(connection, f"ERR 1 unknown command {name!r}")
            return
        reply = await handler(connection, name, args)
        if reply is not None:
            await self._reply(connection, reply)

    async def _cmd_identity(self, connection: _Connection, name: str, args: list[str]) -> str:
        return "ERR 2 no arguments expected" if args else f"OK {self.identity}"

    async def _cmd_channels(self, connection: _Connection, name: str, args: list[str]) -> str:
        return "ERR 2 no arguments expected" if args else f"OK {self.n_channels}"

    def _parse_channel(self, text: str) -> int | str:
        if not text.isdigit():
            return f"ERR 2 channel must be an integer, got {text!r}"
        channel = int(text)
        if not 1 <= channel <= self.n_channels:
            return f"ERR 3 channel {channel} not in 1..{self.n_channels}"
        return channel

    async def _cmd_set(self, connection: _Connection, name: str, args: list[str]) -> str:
        if len(args) != 2:
            return f"ERR 2 {name} takes a channel and a value"
        channel = self._parse_channel(args[0])
        if isinstance(channel, str):
            return channel
        try:
            value = float(args[1]) if name == "TRIG" else int(args[1])
        except ValueError:
            return f"ERR 2 bad value {args[1]!r}"
        if name == "TRIG":
            low, high = _TRIGGER_RANGE_V
            if not (math.isfinite(value) and low <= value <= high):
                return f"ERR 4 trigger level {args[1]} V not in {low}..{high}"
            self.trigger_level_v[channel] = round(value, 3)
        elif name == "DEAD":
            low, high = _DEAD_TIME_RANGE_PS
            if not low <= value <= high:
                return f"ERR 4 dead time {value} ps not in {low}..{high}"
            self.dead_time_ps[channel] = value
        else:
            low, high = _DELAY_RANGE_PS
            if not low <= value <= high:
                return f"ERR 4 delay {value} ps not in {low}..{high}"
            self.input_delay_ps[channel] = value
        return "OK"

    async def _cmd_get(self, connection: _Connection, name: str, args: list[str]) -> str:
        if len(args) != 1:
            return f"ERR 2 {name} takes a channel"
        channel = self._parse_channel(args[0])
        if isinstance(channel, str):
            return channel
        if name == "TRIG?":
            return f"OK {self.trigger_level_v[channel]:.3f}"
        if name == "DEAD?":
            return f"OK {int(self.dead_time_ps[channel])}"
        return f"OK {int(self.input_delay_ps[channel])}"

    async def _cmd_status(self, connection: _Connection, name: str, args: list[str]) -> str:
        if args:
            return "ERR 2 no arguments expected"
        return f"OK {self.state} {self._next_sequence} {len(self._retained)}"

    async def _cmd_start(self, connection: _Connection, name: str, args: list[str]) -> str | None:
        if args:
            return "ERR 2 no arguments expected"
        if self.state == "RUNNING":
            return "ERR 5 already running"
        # timestamp 0 is the whole second at or before now, as SimTimeTagger does
        self.epoch_unix_s = float(math.floor(self.clock.now_unix_s()))
        self.state = "RUNNING"
        self._retained.clear()
        self._next_sequence = 0
        self._send_sequence = 0
        self._first_start_ps = None
        self._last_stop_ps = 0
        self._last_live_ps[:] = _FAR_PAST_PS
        self._end_sent = asyncio.Event()
        await self._reply(connection, f"OK {self.epoch_unix_s:.9f}")
        await self._attach(connection)
        self.started.set()
        return None

    async def _cmd_resume(self, connection: _Connection, name: str, args: list[str]) -> str | None:
        if len(args) != 1 or not args[0].isdigit():
            return "ERR 2 RESUME takes a sequence number"
        sequence = int(args[0])
        if self.state == "IDLE" or self.epoch_unix_s is None:
            return "ERR 5 no acquisition to resume"
        if sequence > self._next_sequence:
            return f"ERR 5 sequence {sequence} beyond the last frame {self._next_sequence - 1}"
        self._send_sequence = sequence
        self._end_sent = asyncio.Event()
        await self._reply(connection, f"OK {self.epoch_unix_s:.9f}")
        await self._attach(connection)
        return None

    async def _cmd_stop(self, connection: _Connection, name: str, args: list[str]) -> str | None:
        if args:
            return "ERR 2 no arguments expected"
        if self.state != "RUNNING":
            return "ERR 5 not running"
        self.state = "STOPPED"
        async with self._changed:
            self._changed.notify_all()
        if self._attached is not connection:
            await self._attach(connection)
        await self._end_sent.wait()
        return f"OK {self._next_sequence}"

    async def _attach(self, connection: _Connection) -> None:
        """Stream the acquisition to this connection (an earlier one's stream task ends)."""
        self._attached = connection
        task = asyncio.create_task(
            self._stream(connection), name=f"tagger stream {connection.number}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        async with self._changed:
            self._changed.notify_all()

    async def _stream(self, connection: _Connection) -> None:
        try:
            while self._attached is connection and not connection.closed:
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: (
                            self._attached is not connection
                            or (
                                not self.faults.no_reply
                                and (
                                    self._send_sequence < self._next_sequence
                                    or self.state == "STOPPED"
                                )
                            )
                        )
                    )
                if self._attached is not connection:
                    return
                if self._send_sequence < self._next_sequence:
                    await self._send_frame(connection)
                elif self.state == "STOPPED":
                    end = encode_tagger_frame(
                        KIND_END,
                        0,
                        self._next_sequence,
                        self._first_start_ps or 0,
                        self._last_stop_ps,
                        np.zeros(0, np.uint8),
                        np.zeros(0, np.int64),
                    )
                    await connection.send(end)
                    self._end_sent.set()
                    return
        except (ConnectionError, OSError):
            return

    async def _send_frame(self, connection: _Connection) -> None:
        sequence = self._send_sequence
        faults = self.faults
        if sequence in faults.disconnect_before_sequences:
            faults.disconnect_before_sequences.discard(sequence)
            connection.abort()
            return
        oldest = self._retained[0][0]
        lost = sequence < oldest
        if lost:  # overwritten before the host asked again: resend from the oldest we hold
            sequence = oldest
        frame = self._retained[sequence - oldest][1]
        if lost:
            frame = _with_flags(frame, FLAG_DATA_LOST)
        if sequence in faults.garble_sequences:
            faults.garble_sequences.discard(sequence)
            corrupt = bytearray(frame)
            corrupt[-1 if len(frame) > 36 else 30] ^= 0x5A  # a tag byte, or the tag CRC
            frame = bytes(corrupt)
        elif sequence in faults.garble_header_sequences:
            faults.garble_header_sequences.discard(sequence)
            corrupt = bytearray(frame)
            corrupt[27] ^= 0x01  # the tag count: a reader that trusts it loses framing
            frame = bytes(corrupt)
        await connection.send(frame)
        self.frames_sent += 1
        self._send_sequence = sequence + 1
        async with self._changed:
            self._changed.notify_all()
