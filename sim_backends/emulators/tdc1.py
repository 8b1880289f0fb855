"""An S-Fifteen TDC1 time-to-digital converter on a pty (as its USB serial port appears).

It answers the command set the vendor's pyS15 scripts use (docs/tagger-protocol.md, section
"S-Fifteen TDC1") and, once ``COUNTS?`` starts an acquisition in timestamp mode, streams the
detections the scenario feeds (`feed`, like `TimeTaggerEmulator.feed`) as 32-bit timestamp
records: 27-bit counter of 2 ns ticks, marker bit, four input bits. Tags falling in the same
tick share one record (several input bits; two on one input become one, as the hardware's
dead time would have it). At each half-period boundary of the counter that saw no event since
the previous boundary it inserts a marker record, 3960 ticks late, as the vendor's recorded
example shows, so a host can count wraps through quiet spells.

What the public sources leave open is the emulator's own choice and stated here: the identity
text, the LEVEL? text for NIM and TTL, and that unknown commands are ignored (counted in
`unknown_commands`). The record encoder below is written from the protocol description, not
from the driver's decoder, so a misreading on one side shows up as a test failure.

Faults (`tdc1_faults`): records that name no input, a stream cut inside a record, and a unit
that will not enter timestamp mode; the base class's `faults` (silent, garbled replies, late
replies) and `disconnect()` (the USB link drops) apply as for every line emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import numpy as np

from drivers.interfaces import TagBuffer
from satqkd_core.errors import InputError
from satqkd_runtime.clock import Clock
from sim_backends.emulators.base import LineEmulator

__all__ = ["Tdc1Emulator", "Tdc1Faults", "encode_tdc1_records"]

TICK_PS = 2000
COUNTER_PERIOD = 1 << 27
HALF_PERIOD = 1 << 26
MARKER_DELAY_TICKS = 3960  # the vendor's example stream: markers at 3960 and 2^26 + 3960
MARKER_WORD_LOW_BITS = 0x11  # marker bit and input bit 0, as in that example
_LEVELS_V = {"NIM": -0.4, "TTL": 1.0}  # this emulator's thresholds for the two standards
_PS_PER_S = 1e12


@dataclass
class Tdc1Faults:
    """Stream faults to inject; counts are consumed as they are used."""

    garble_records: int = 0  # the next N event records name no input (and are no marker)
    cut_last_record: bool = False  # the next fed buffer's stream stops 2 bytes into its last record
    refuse_timestamp_mode: bool = False  # TIMESTAMP is ignored: MODE? keeps its old answer


def encode_tdc1_records(tick: np.ndarray, low_bits: np.ndarray) -> bytes:
    """Get the wire bytes of records: little-endian u32, counter (tick mod 2^27) << 5 | low."""
    counter = (np.asarray(tick, dtype=np.int64) % COUNTER_PERIOD).astype(np.uint32)
    words = (counter << np.uint32(5)) | np.asarray(low_bits, dtype=np.uint32)
    return words.astype("<u4").tobytes()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Tdc1Emulator(LineEmulator):
    """A TDC1 answering its ASCII commands and streaming fed tags as binary records."""

    command_terminator = b"\n"
    baudrate = 115200  # a USB CDC port ignores it

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        name: str = "tdc1",
        identity: str = "S-Fifteen Instruments,TDC1,EMU-0001,satqkd-emulator",
        seed: int = 0,
    ) -> None:
        if "\n" in identity or "\r" in identity:
            raise InputError("identity must be one line")
        super().__init__(name, clock, seed)
        self.identity = identity
        self.tdc1_faults = Tdc1Faults()
        self.started = asyncio.Event()
        self.epoch_unix_s: float | None = None
        self.acquiring = False
        self.records_sent = 0
        self.dropped_buffers = 0
        self.dropped_tags = 0
        self.lost_bytes = 0
        self.unknown_commands = 0
        self._stream_lock = asyncio.Lock()
        self._reset_settings()
        self._reset_stream()

    def _reset_settings(self) -> None:
        self.mode = 0
        self.level = "NIM"
        self.threshold_v = _LEVELS_V["NIM"]
        self.integration_ms = 1000
        self.reference_clock = 0

    def _reset_stream(self) -> None:
        # boundary checks at b * 2^26 + 3960 ticks; the first (b = 0) closes the first window
        # but never sends a marker (the example stream has none there)
        self._next_check = 0
        self._event_since_check = False
        self._last_tick = -1

    # --- commands ------------------------------------------------------------------------------

    def respond(self, command: bytes) -> bytes | None:
        """Get: the replies to one line of ``;``-separated commands (None if none answers)."""
        text = command.decode("ascii", errors="replace").strip()
        replies = [self._execute(part.strip()) for part in text.split(";") if part.strip()]
        answered = [reply.encode("ascii") + b"\r\n" for reply in replies if reply is not None]
        return b"".join(answered) or None

    def _execute(self, command: str) -> str | None:
        word, *args = command.split()
        key = word.upper()
        queries = {
            "*IDN?": lambda: self.identity,
            "MODE?": lambda: str(self.mode),
            "TIME?": lambda: str(self.integration_ms),
            "LEVEL?": lambda: f"{self.threshold_v:.3f}",
            "REFCLK?": lambda: str(self.reference_clock),
        }
        if key in queries and not args:
            return queries[key]()
        if key == "COUNTS?" and not args:
            return self._counts()
        if key == "ABORT":
            self.acquiring = False
        elif key == "*RST":
            self.acquiring = False
            self._reset_settings()
        elif key in ("SINGLES", "PAIRS", "TIMESTAMP") and not args:
            if key != "TIMESTAMP" or not self.tdc1_faults.refuse_timestamp_mode:
                self.mode = {"SINGLES": 0, "PAIRS": 1, "TIMESTAMP": 3}[key]
        elif key in _LEVELS_V and not args:
            self.level, self.threshold_v = key, _LEVELS_V[key]
        elif key in ("NEG", "POS") and len(args) == 1:
            self._set_threshold(key, args[0])
        elif key == "TIME" and len(args) == 1 and args[0].isdigit() and int(args[0]) < 65536:
            self.integration_ms = int(args[0])
        elif key == "REFCLK" and args in (["0"], ["1"], ["2"]):
            self.reference_clock = int(args[0])
        elif key != "INPKT":  # INPKT prepares the timestamp input; nothing to model here
            self.unknown_commands += 1
        return None

    def _set_threshold(self, sign: str, text: str) -> None:
        try:
            value = abs(float(text))
        except ValueError:
            self.unknown_commands += 1
            return
        if value <= 3.3:
            self.threshold_v = -value if sign == "NEG" else value

    def _counts(self) -> str | None:
        if self.mode == 0:
            return "0 0 0 0"  # singles over the integration time; nothing is fed in this mode
        if self.mode == 1:
            return "0 0 0 0 0 0 0 0"
        self.epoch_unix_s = float(self.clock.now_unix_s())  # counter zero is now
        self.acquiring = True
        self._reset_stream()
        self.started.set()
        return None

    # --- the simulation side -------------------------------------------------------------------

    async def feed(self, buffer: TagBuffer) -> None:
        """Simulation side: stream one buffer of detections (inputs 1..4, ps since the epoch)
        as records; dropped while no acquisition runs. Waits while the port's buffer is full."""
        channel = np.ascontiguousarray(buffer.channel, dtype=np.int64)
        timestamp_ps = np.ascontiguousarray(buffer.timestamp_ps, dtype=np.int64)
        if channel.ndim != 1 or channel.shape != timestamp_ps.shape:
            raise InputError(
                f"buffer.channel and buffer.timestamp_ps must be 1-D of one length, got "
                f"{channel.shape} and {timestamp_ps.shape}"
            )
        if channel.size and (channel.min() < 1 or channel.max() > 4):
            raise InputError("buffer.channel must be in 1..4 (the TDC1 has four inputs)")
        if timestamp_ps.size > 1 and np.any(np.diff(timestamp_ps) < 0):
            raise InputError("buffer.timestamp_ps must be non-decreasing")
        if not self.acquiring or self.epoch_unix_s is None:
            self.dropped_buffers += 1
            return
        stop_tick = int((buffer.stop_unix_s - self.epoch_unix_s) * _PS_PER_S // TICK_PS)
        async with self._stream_lock:
            data = self._records_for(channel, timestamp_ps // TICK_PS, stop_tick)
            if data:
                await self._send_stream(data)

    def _records_for(self, channel: np.ndarray, tick: np.ndarray, stop_tick: int) -> bytes:
        late = tick <= self._last_tick  # before timestamp 0 or a tick already sent
        self.dropped_tags += int(np.count_nonzero(late))
        channel, tick = channel[~late], tick[~late]
        event_tick, record = np.unique(tick, return_inverse=True)
        inputs = np.zeros(event_tick.size, dtype=np.uint32)
        np.bitwise_or.at(inputs, record, (1 << (channel - 1)).astype(np.uint32))
        # two tags on one input in one tick make one event (the input's dead time)
        self.dropped_tags += int(tick.size - np.unique(tick * 4 + channel - 1).size)
        if self.tdc1_faults.garble_records and inputs.size:
            n = min(self.tdc1_faults.garble_records, inputs.size)
            inputs[:n] = 0
            self.tdc1_faults.garble_records -= n
        markers = self._markers(event_tick, stop_tick)
        all_tick = np.concatenate([event_tick, markers])
        low = np.concatenate([inputs, np.full(markers.size, MARKER_WORD_LOW_BITS, np.uint32)])
        order = np.argsort(all_tick, kind="stable")
        if all_tick.size:
            self._last_tick = max(self._last_tick, int(all_tick.max()))
        self.records_sent += int(all_tick.size)
        data = encode_tdc1_records(all_tick[order], low[order])
        if self.tdc1_faults.cut_last_record and data:
            self.tdc1_faults.cut_last_record = False
            data = data[:-2]
        return data

    def _markers(self, event_tick: np.ndarray, stop_tick: int) -> np.ndarray:
        """Get the marker ticks for the boundaries this buffer passes (updates the state)."""
        markers = []
        index = 0
        while (check := self._next_check * HALF_PERIOD + MARKER_DELAY_TICKS) < stop_tick:
            after = int(np.searchsorted(event_tick, check, side="right"))
            if self._next_check and not (self._event_since_check or after > index):
                markers.append(check)
            index, self._event_since_check = after, False
            self._next_check += 1
        if index < event_tick.size:
            self._event_since_check = True
        return np.asarray(markers, dtype=np.int64)

    # --- the binary stream on the wire ---------------------------------------------------------

    async def _send_stream(self, data: bytes) -> None:
        """Write stream bytes to whoever is attached, waiting while a pty's buffer is full."""
        if self._memory_peer is not None:
            self._memory_peer._deliver(data)
        elif self._master_fd is not None:
            await self._write_pty(data)
        elif self._client is not None and not self._client.is_closing():
            self._client.write(data)
            with contextlib.suppress(ConnectionError):
                await self._client.drain()
        else:
            self.lost_bytes += len(data)

    async def _write_pty(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        fd = self._master_fd
        view = memoryview(data)
        while view:
            if fd is None or fd != self._master_fd:  # the link was dropped: the rest is lost
                self.lost_bytes += len(view)
                return
            try:
                view = view[os.write(fd, view) :]
                continue
            except BlockingIOError:
                pass
            except OSError:
                self.lost_bytes += len(view)
                return
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _resolve, writable)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):  # then look again: fd may be replaced
                        await writable
            finally:
                with contextlib.suppress(Exception):
                    loop.remove_writer(fd)
