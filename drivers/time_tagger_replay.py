"""Replay a recorded acquisition from a PicoQuant PTU file (T2 mode) behind `TimeTagger`.

A recorded pass is re-processed by pointing the station at its file instead of a tagger. The
header is read with the `ptufile` package (tags, record type, global resolution, where the
records start); the 32-bit T2 records are decoded here, chunk by chunk with numpy, because the
overflow count must carry from one chunk to the next. The record layouts are PicoQuant's
published ones (github.com/PicoQuant/PicoQuant-Time-Tagged-File-Format-Demos,
`doc/apx_tttrrecords.html` and `PTU/Python/Read_PTU.py`):

- PicoHarp 300 T2 (record type 0x00010203): channel 4 bits, time tag 28 bits; channel 15 is a
  special record: an overflow of 210698240 units when the low 4 time bits are 0, else markers.
- HydraHarp, TimeHarp 260, MultiHarp, PicoHarp 330 and generic T2 (0x00010204, 0x01010204,
  0x00010205, 0x00010206, 0x00010207): special 1 bit, channel 6 bits, time tag 25 bits. Special
  channel 63 is an overflow of 2^25 units times the time tag (0 counts as 1; HydraHarp V1:
  always one overflow of 33552000), special channel 0 a sync event, 1..15 markers.

File channels are numbered as PicoQuant's demo prints them: PicoHarp T2 the channel code as
is; the others 0 for the sync input and k + 1 for input k. `channel_map` (file channel -> 1..4)
picks the detectors; other channels and markers are skipped and counted. Timestamp 0 is time
tag 0 of the file; its UTC instant is `epoch_unix_s` if given, else the header's
File_CreatingTime read as UTC (whole seconds at best: the synchronisation stage finds the true
offset). Buffers tile the recording in `buffer_duration_s` steps; `pacing="realtime"` releases
each when the injected clock has advanced by its end since `start`, `"asap"` as fast as read.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from drivers.interfaces import DeviceError, DeviceStatus, DeviceTimeout, TagBuffer, TimeTagger
from drivers.options import DriverOptions
from drivers.time_tagger_tdc1_records import channel_lookup_table
from satqkd_core.errors import InputError
from satqkd_runtime.clock import Clock, RealClock

__all__ = [
    "PTU_T2_RECORD_TYPES",
    "PtuT2Decoder",
    "ReplayCounters",
    "ReplayFileError",
    "ReplayTaggerOptions",
    "ReplayTimeTagger",
]

#: record type -> (name, layout): "picoharp", "hydraharp1" or "generic"
PTU_T2_RECORD_TYPES: dict[int, tuple[str, str]] = {
    0x00010203: ("PicoHarp 300 T2", "picoharp"),
    0x00010204: ("HydraHarp V1 T2", "hydraharp1"),
    0x01010204: ("HydraHarp V2 T2", "generic"),
    0x00010205: ("TimeHarp 260N T2", "generic"),
    0x00010206: ("TimeHarp 260P T2", "generic"),
    0x00010207: ("MultiHarp / PicoHarp 330 / generic T2", "generic"),
}
_PICOHARP_WRAP = 210698240
_HYDRAHARP_V1_WRAP = 33552000
_GENERIC_WRAP = 1 << 25
_FILE_CHANNELS = range(0, 65)
_IDENTITY_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4}
_CHUNK_RECORDS = 1 << 20
_UNIX_EPOCH = datetime(1970, 1, 1)


class ReplayFileError(DeviceError, InputError):
    """The replay file is missing, unreadable or not a T2 PTU file; the message names it."""


@dataclass
class ReplayCounters:
    """What the replay has read of the file since `start`."""

    records: int = 0
    tags: int = 0
    sync_events: int = 0
    markers: int = 0
    overflow_records: int = 0
    unmapped_tags: int = 0
    buffers: int = 0
    refused_buffers: int = 0


class PtuT2Decoder:
    """Decode PTU T2 records chunk by chunk into (file channel, time in resolution units)."""

    def __init__(self, layout: str, counters: ReplayCounters | None = None) -> None:
        if layout not in ("picoharp", "hydraharp1", "generic"):
            raise InputError(f"layout must be picoharp, hydraharp1 or generic, got {layout!r}")
        self.layout = layout
        self.counters = counters if counters is not None else ReplayCounters()
        self.overflow_units = 0  # time carried by the overflows decoded so far

    def decode(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Get (file channel int16, time int64, time of the chunk's last record) for the
        photon and sync records of `words` (uint32), in file order."""
        words = np.asarray(words, dtype=np.uint32)
        if self.layout == "picoharp":
            code = (words >> 28).astype(np.int16)
            tag = (words & 0x0FFFFFFF).astype(np.int64)
            special = code == 15
            overflow = special & ((tag & 0xF) == 0)
            wrap = np.where(overflow, _PICOHARP_WRAP, 0)
            keep, channel, sync = ~special, code, np.zeros(words.shape, np.bool_)
        else:
            special = (words >> 31) != 0
            code = ((words >> 25) & 0x3F).astype(np.int16)
            tag = (words & 0x1FFFFFF).astype(np.int64)
            overflow = special & (code == 63)
            if self.layout == "hydraharp1":
                wrap = np.where(overflow, _HYDRAHARP_V1_WRAP, 0)
            else:
                wrap = np.where(overflow, _GENERIC_WRAP * np.maximum(tag, 1), 0)
            sync = special & (code == 0)
            keep, channel = ~special | sync, np.where(special, 0, code + 1).astype(np.int16)
        carried = np.cumsum(wrap, dtype=np.int64)
        base = self.overflow_units + carried - wrap  # overflow time before each record
        time = base + np.where(overflow, wrap, tag)  # an overflow starts the next period
        if words.size:
            self.overflow_units += int(carried[-1])
        self.counters.records += int(words.size)
        self.counters.overflow_records += int(np.count_nonzero(overflow))
        self.counters.markers += int(np.count_nonzero(special & ~overflow & ~sync))
        self.counters.sync_events += int(np.count_nonzero(sync))
        last = int(time[-1]) if words.size else self.overflow_units
        return channel[keep], time[keep], last


class ReplayTimeTagger(TimeTagger):
    """A time tagger that plays a PTU T2 recording (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        path: str | Path,
        channel_map: Mapping[int, int] | None = None,
        epoch_unix_s: float | None = None,
        pacing: Literal["asap", "realtime"] = "asap",
        buffer_duration_s: float = 0.1,
        clock: Clock | None = None,
        chunk_records: int = _CHUNK_RECORDS,
    ) -> None:
        super().__init__(name)
        if not str(path):
            raise InputError(f"{name}: path must name a PTU file")
        if epoch_unix_s is not None and not (
            isinstance(epoch_unix_s, int | float) and math.isfinite(epoch_unix_s)
        ):
            raise InputError(f"{name}: epoch_unix_s must be a finite number, got {epoch_unix_s!r}")
        if pacing not in ("asap", "realtime"):
            raise InputError(f"{name}: pacing must be 'asap' or 'realtime', got {pacing!r}")
        if not isinstance(buffer_duration_s, int | float) or not (
            math.isfinite(buffer_duration_s) and buffer_duration_s > 0
        ):
            raise InputError(f"{name}: buffer_duration_s must be > 0 s, got {buffer_duration_s!r}")
        if (
            isinstance(chunk_records, bool)
            or not isinstance(chunk_records, int)
            or chunk_records < 1
        ):
            raise InputError(f"{name}: chunk_records must be an int >= 1, got {chunk_records!r}")
        self.path = Path(path)
        self.channel_map = dict(channel_map if channel_map is not None else _IDENTITY_CHANNELS)
        self._lookup = channel_lookup_table(
            self.channel_map, _FILE_CHANNELS, f"{name}: channel_map"
        )
        self.configured_epoch_unix_s = None if epoch_unix_s is None else float(epoch_unix_s)
        self.pacing = pacing
        self.buffer_duration_ps = round(float(buffer_duration_s) * 1e12)
        self.chunk_records = chunk_records
        self.clock: Clock = clock if clock is not None else RealClock()
        self.identity = ""
        self.epoch_unix_s: float | None = None
        self.counters = ReplayCounters()
        self._records: np.ndarray | None = None
        self._layout = ""
        self._resolution_ps = 1.0
        self._running = False
        self._stopped = asyncio.Event()
        self._decoder = PtuT2Decoder("generic", self.counters)
        self._started_clock_s = 0.0
        self._reset_position()

    def _reset_position(self) -> None:
        self._position = 0
        self._window_start_ps = 0
        self._held: list[tuple[np.ndarray, np.ndarray]] = []
        self._last_record_ps = -1  # no record yet: the recording ends before it begins
        self._ready: TagBuffer | None = None

    def _fail(self, why: str) -> ReplayFileError:
        return ReplayFileError(f"{self.name}: replay file {self.path}: {why}")

    # --- Device --------------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: read the file's header and map its records; ReplayFileError naming it."""
        if not self.path.is_file():
            raise self._fail("does not exist or is not a file")
        import ptufile  # imported here: only replay needs it

        try:
            with ptufile.PtuFile(self.path) as ptu:
                record_type = int(ptu.tags.get("TTResultFormat_TTTRRecType", -1))
                resolution_s = float(ptu.global_resolution)
                created = ptu.datetime
                records = ptu.read_records(memmap=True) if ptu.number_records else None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise self._fail(f"not a readable PicoQuant PTU file ({exc})") from None
        if record_type not in PTU_T2_RECORD_TYPES:
            raise self._fail(f"record type 0x{record_type:08X} is not a supported T2 type")
        if not (math.isfinite(resolution_s) and resolution_s > 0):
            raise self._fail(f"MeasDesc_GlobalResolution {resolution_s!r} is not a time")
        epoch = self.configured_epoch_unix_s
        if epoch is None:
            if not isinstance(created, datetime):
                raise self._fail("has no File_CreatingTime; set epoch_unix_s")
            if created.tzinfo is not None:
                epoch = created.timestamp()
            else:  # a TDateTime carries no zone: read as UTC, as PicoQuant's demo prints it
                epoch = (created - _UNIX_EPOCH).total_seconds()
        kind, self._layout = PTU_T2_RECORD_TYPES[record_type]
        self._records = records if records is not None else np.zeros(0, np.uint32)
        self._resolution_ps = resolution_s * 1e12
        self.epoch_unix_s = float(epoch)
        self.identity = (
            f"PicoQuant PTU replay {self.path.name} ({kind}, {self._records.size} records)"
        )

    async def close(self) -> None:
        """Control: stop and release the file."""
        await self.stop()
        self._records = None

    async def status(self) -> DeviceStatus:
        """Measure: the file, the position in it and what was read."""
        connected = self._records is not None
        return DeviceStatus(
            self.name,
            self.identity,
            connected,
            connected,
            {
                "path": str(self.path),
                "running": self._running,
                "position": self._position,
                "records": 0 if self._records is None else int(self._records.size),
                "epoch_unix_s": self.epoch_unix_s,
                "pacing": self.pacing,
                **asdict(self.counters),
            },
        )

    # --- TimeTagger ----------------------------------------------------------------------------

    async def start(self) -> float:
        """Control: replay from the beginning; returns the UTC instant of timestamp 0."""
        if self._records is None or self.epoch_unix_s is None:
            raise DeviceError(f"{self.name}: not connected")
        self._reset_position()
        self.counters = ReplayCounters()
        self._decoder = PtuT2Decoder(self._layout, self.counters)
        self._stopped = asyncio.Event()
        self._started_clock_s = self.clock.now_unix_s()
        self._running = True
        return self.epoch_unix_s

    async def stop(self) -> None:
        """Control: stop; a pending or later `read` returns None."""
        self._running = False
        self._stopped.set()

    async def read(self, timeout_s: float | None = None) -> TagBuffer | None:
        """Measure: the next buffer of the recording, or None at its end or after `stop`."""
        if not self._running:
            return None
        if self._ready is None:
            self._ready = self._next_buffer()
        if self._ready is None:
            self._running = False
            return None
        if self.pacing == "realtime":
            assert self.epoch_unix_s is not None
            due = self._started_clock_s + (self._ready.stop_unix_s - self.epoch_unix_s)
            await self._wait_until(due, timeout_s)
            if self._stopped.is_set():
                return None
        buffer, self._ready = self._ready, None
        self.counters.buffers += 1
        return buffer

    async def _wait_until(self, due_unix_s: float, timeout_s: float | None) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep_until(due_unix_s))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait(
                {sleeper, stopped}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (sleeper, stopped):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not done:
            raise DeviceTimeout(
                f"{self.name}: no tag buffer within {timeout_s} s (real-time pacing)"
            )

    # --- decoding ------------------------------------------------------------------------------

    def _next_buffer(self) -> TagBuffer | None:
        """Get the buffer of the next window, or None when the recording is exhausted."""
        assert self._records is not None and self.epoch_unix_s is not None
        window_stop = self._window_start_ps + self.buffer_duration_ps
        while self._position < self._records.size and self._last_record_ps < window_stop:
            self._decode_chunk()
        if self._position >= self._records.size:  # the last window ends with the last record
            end_ps = self._last_record_ps + 1
            if self._window_start_ps >= end_ps:
                return None
            window_stop = min(window_stop, end_ps)
        channel, stamp = self._take_held()
        cut = int(np.searchsorted(stamp, window_stop, side="left"))
        if cut < stamp.size:
            self._held = [(channel[cut:], stamp[cut:])]
        window_start = self._window_start_ps
        self._window_start_ps = window_stop
        self._check_plausible(stamp[:cut], window_start, window_stop)
        return TagBuffer(
            channel[:cut],
            stamp[:cut],
            self.epoch_unix_s + window_start * 1e-12,
            self.epoch_unix_s + window_stop * 1e-12,
        )

    def _check_plausible(self, stamp: np.ndarray, start_ps: int, stop_ps: int) -> None:
        """Refuse (ReplayFileError, counted) a window whose stop is before its start, whose
        instants are not finite or holding tags outside [start, stop] (ps since timestamp 0):
        the file's times do not run forwards. Its tags are dropped; the next read goes on."""
        assert self.epoch_unix_s is not None
        why = ""
        if not (
            math.isfinite(self.epoch_unix_s + start_ps * 1e-12)
            and math.isfinite(self.epoch_unix_s + stop_ps * 1e-12)
        ):
            why = f"window {start_ps}..{stop_ps} ps is not a finite time"
        elif stop_ps < start_ps:
            why = f"window stop {stop_ps} ps is before its start {start_ps} ps"
        elif stamp.size and (int(stamp.min()) < start_ps or int(stamp.max()) > stop_ps):
            outside = stamp[(stamp < start_ps) | (stamp > stop_ps)]
            why = (
                f"tag at {int(outside[0])} ps outside the window {start_ps}..{stop_ps} ps "
                f"({outside.size} outside)"
            )
        if why:
            self.counters.refused_buffers += 1
            raise self._fail(f"implausible buffer refused: {why}; expected start <= tag <= stop")

    def _take_held(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._held:
            return np.zeros(0, np.uint8), np.zeros(0, np.int64)
        channel = np.concatenate([part[0] for part in self._held])
        stamp = np.concatenate([part[1] for part in self._held])
        self._held = []
        return channel, stamp

    def _decode_chunk(self) -> None:
        assert self._records is not None
        end = min(self._position + self.chunk_records, self._records.size)
        words = np.asarray(self._records[self._position : end])
        self._position = end
        file_channel, units, last_units = self._decoder.decode(words)
        self._last_record_ps = int(self._to_ps(np.asarray([last_units]))[0])
        channel = self._lookup[file_channel]
        mapped = channel != 0
        self.counters.unmapped_tags += int(mapped.size - np.count_nonzero(mapped))
        stamp = self._to_ps(units[mapped])
        channel = channel[mapped]
        if stamp.size > 1 and np.any(np.diff(stamp) < 0):
            order = np.argsort(stamp, kind="stable")
            channel, stamp = channel[order], stamp[order]
        self.counters.tags += int(stamp.size)
        self._held.append((channel, stamp))

    def _to_ps(self, units: np.ndarray) -> np.ndarray:
        whole = round(self._resolution_ps)
        if whole >= 1 and abs(self._resolution_ps - whole) < 1e-6:
            return units.astype(np.int64) * whole
        return np.rint(units * self._resolution_ps).astype(np.int64)


class ReplayTaggerOptions(DriverOptions):
    """Options of `ReplayTimeTagger` (the PTU file is the bench entry's resource, file://PATH):
    file channel -> channel 1..4, the UTC instant of timestamp 0 (default: the header's
    File_CreatingTime), pacing, buffer length."""

    channel_map: dict[int, int] = Field(default_factory=lambda: dict(_IDENTITY_CHANNELS))
    epoch_unix_s: Annotated[float, Field(allow_inf_nan=False)] | None = None
    pacing: Literal["asap", "realtime"] = "asap"
    buffer_duration_s: Annotated[float, Field(gt=0.0, le=60.0)] = 0.1

    @field_validator("channel_map")
    @classmethod
    def _check_channel_map(cls, value: dict[int, int]) -> dict[int, int]:
        channel_lookup_table(value, _FILE_CHANNELS, "channel_map")
        return value
