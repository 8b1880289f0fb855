"""Replay tagger: PTU T2 files written here from PicoQuant's published format are read back
tag for tag, across overflow records, with channel mapping, epochs, pacing and errors."""

from __future__ import annotations

import asyncio
import itertools
import struct
from pathlib import Path

import numpy as np
import ptufile
import pytest
from pydantic import ValidationError

from drivers.interfaces import DeviceError, DeviceTimeout, TagBuffer
from drivers.time_tagger_replay import ReplayFileError, ReplayTaggerOptions, ReplayTimeTagger
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock

GENERIC_T2 = 0x00010207
HYDRAHARP_V1_T2 = 0x00010204
PICOHARP_T2 = 0x00010203
WRAP = 1 << 25
# PTU tag types (PicoQuant's doc/apx_tagtypes.html)
TY_EMPTY8, TY_INT8, TY_FLOAT8 = 0xFFFF0008, 0x10000008, 0x20000008
TY_TDATETIME, TY_ANSI_STRING = 0x21000008, 0x4001FFFF
CREATED_TDATETIME = 45000.5  # days since 1899-12-30: 2023-03-15 12:00:00
CREATED_UNIX_S = 1_678_881_600.0


def _tag(ident: str, kind: int, value: object = 0) -> bytes:
    """One PTU header tag: 32-byte name, int32 index (-1: not indexed), uint32 type, 8 bytes."""
    head = ident.encode("ascii").ljust(32, b"\0") + struct.pack("<iI", -1, kind)
    if kind == TY_ANSI_STRING:
        text = str(value).encode("ascii") + b"\0"
        text = text.ljust(-(-len(text) // 8) * 8, b"\0")  # tags stay 8-byte aligned
        return head + struct.pack("<q", len(text)) + text
    if kind in (TY_FLOAT8, TY_TDATETIME):
        return head + struct.pack("<d", value)
    return head + struct.pack("<q", value)


def write_ptu_t2(
    path: Path,
    records: list[int],
    *,
    record_type: int = GENERIC_T2,
    resolution_s: float = 5e-12,
    created: float | None = CREATED_TDATETIME,
) -> Path:
    """Write a PTU T2 file: magic, version, tags, Header_End, then little-endian u32 records."""
    header = b"PQTTTR\0\0" + b"1.0.00\0\0"
    header += _tag("File_GUID", TY_ANSI_STRING, "{6D1A6A84-0D8C-4F4B-9C6E-6B1C4E1B2A01}")
    if created is not None:
        header += _tag("File_CreatingTime", TY_TDATETIME, created)
    header += _tag("Measurement_Mode", TY_INT8, 2)  # T2
    header += _tag("Measurement_SubMode", TY_INT8, 0)
    header += _tag("TTResultFormat_TTTRRecType", TY_INT8, record_type)
    header += _tag("TTResultFormat_BitsPerRecord", TY_INT8, 32)
    header += _tag("MeasDesc_GlobalResolution", TY_FLOAT8, resolution_s)
    header += _tag("MeasDesc_Resolution", TY_FLOAT8, resolution_s)
    header += _tag("TTResult_NumberOfRecords", TY_INT8, len(records))
    header += _tag("Header_End", TY_EMPTY8)
    path.write_bytes(header + np.asarray(records, dtype="<u4").tobytes())
    return path


def t2(special: int, channel: int, timetag: int) -> int:
    """A HydraHarp/MultiHarp/generic T2 record: special 1 bit, channel 6 bits, time tag 25."""
    return (special << 31) | (channel << 25) | timetag


GENERIC_RECORDS = [
    t2(0, 0, 5),  # input 0 -> file channel 1
    t2(1, 0, 7),  # sync -> file channel 0
    t2(0, 1, 10),  # input 1 -> file channel 2
    t2(1, 63, 2),  # two overflows
    t2(0, 2, 3),  # file channel 3 at 2 * 2^25 + 3
    t2(1, 1, 4),  # a marker: skipped
    t2(1, 63, 0),  # an old-style overflow: one
    t2(1, 63, 1),  # one more
    t2(0, 3, 9),  # file channel 4 at 4 * 2^25 + 9
]


async def replay_all(tagger: ReplayTimeTagger) -> list[TagBuffer]:
    await tagger.connect()
    await tagger.start()
    buffers = []
    while (buffer := await tagger.read(1.0)) is not None:
        buffers.append(buffer)
    return buffers


def joined(buffers: list[TagBuffer]) -> tuple[list[int], list[int]]:
    return (
        np.concatenate([b.channel for b in buffers]).tolist(),
        np.concatenate([b.timestamp_ps for b in buffers]).tolist(),
    )


async def test_tags_read_back_exactly_across_overflow_records(tmp_path: Path) -> None:
    path = write_ptu_t2(tmp_path / "pass.ptu", GENERIC_RECORDS)
    tagger = ReplayTimeTagger("replay", path=path, buffer_duration_s=1e-4)
    buffers = await replay_all(tagger)
    channel, stamp = joined(buffers)
    assert channel == [1, 2, 3, 4]
    assert stamp == [5 * 5, 10 * 5, (2 * WRAP + 3) * 5, (4 * WRAP + 9) * 5]
    # the same photon times as ptufile's own decoder gives (records 0, 2, 4, 8 are photons)
    with ptufile.PtuFile(path) as ptu:
        reference = ptu.decode_records()["time"][[0, 2, 4, 8]] * 5
    assert stamp == reference.tolist()
    counters = tagger.counters
    assert (counters.overflow_records, counters.markers, counters.sync_events) == (3, 1, 1)
    assert counters.unmapped_tags == 1  # the sync channel is not mapped by default
    assert await tagger.read() is None and await tagger.read() is None  # end of file
    assert buffers[0].start_unix_s == CREATED_UNIX_S
    for before, after in itertools.pairwise(buffers):
        assert after.start_unix_s == before.stop_unix_s
    assert buffers[-1].stop_unix_s == pytest.approx(
        CREATED_UNIX_S + ((4 * WRAP + 9) * 5 + 1) * 1e-12
    )
    assert len(buffers) == int(np.ceil(((4 * WRAP + 9) * 5 + 1) / 1e8))


async def test_channel_map_picks_file_channels_including_the_sync(tmp_path: Path) -> None:
    path = write_ptu_t2(tmp_path / "pass.ptu", GENERIC_RECORDS)
    tagger = ReplayTimeTagger("replay", path=path, channel_map={0: 4, 3: 1}, buffer_duration_s=1)
    channel, stamp = joined(await replay_all(tagger))
    assert channel == [4, 1] and stamp == [7 * 5, (2 * WRAP + 3) * 5]
    assert tagger.counters.unmapped_tags == 3


async def test_hydraharp_v1_and_picoharp_overflow_rules(tmp_path: Path) -> None:
    v1 = write_ptu_t2(
        tmp_path / "v1.ptu",
        [t2(0, 0, 1), t2(1, 63, 5), t2(0, 1, 2)],  # V1: an overflow is always one of 33552000
        record_type=HYDRAHARP_V1_T2,
        resolution_s=1e-12,
    )
    assert joined(await replay_all(ReplayTimeTagger("v1", path=v1))) == ([1, 2], [1, 33552002])
    picoharp = write_ptu_t2(
        tmp_path / "ph.ptu",
        [(1 << 28) | 100, (15 << 28) | 0, (15 << 28) | 0x23, (2 << 28) | 7],  # overflow, marker
        record_type=PICOHARP_T2,
        resolution_s=4e-12,
    )
    tagger = ReplayTimeTagger("ph", path=picoharp, channel_map={1: 1, 2: 2})
    assert joined(await replay_all(tagger)) == ([1, 2], [400, (210698240 + 7) * 4])
    assert tagger.counters.markers == 1


async def test_epoch_from_the_header_or_the_option_and_replay_restarts(tmp_path: Path) -> None:
    path = write_ptu_t2(tmp_path / "pass.ptu", GENERIC_RECORDS[:3])
    tagger = ReplayTimeTagger("replay", path=path, epoch_unix_s=1_700_000_000.5)
    await tagger.connect()
    assert await tagger.start() == 1_700_000_000.5
    first = await tagger.read()
    await tagger.stop()
    assert await tagger.read() is None
    assert await tagger.start() == 1_700_000_000.5
    again = await tagger.read()
    assert first is not None and again is not None
    assert again.timestamp_ps.tolist() == first.timestamp_ps.tolist() == [25, 50]
    status = await tagger.status()
    assert status.connected and status.detail["records"] == 3 and "pass.ptu" in status.identity
    undated = write_ptu_t2(tmp_path / "undated.ptu", GENERIC_RECORDS, created=None)
    with pytest.raises(ReplayFileError, match=r"undated\.ptu: has no File_CreatingTime"):
        await ReplayTimeTagger("replay", path=undated).connect()


async def test_missing_invalid_and_t3_files_are_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ptu"
    with pytest.raises(
        ReplayFileError, match=r"replay: replay file .*nowhere\.ptu: does not exist"
    ):
        await ReplayTimeTagger("replay", path=missing).connect()
    garbage = tmp_path / "garbage.ptu"
    garbage.write_bytes(b"not a PicoQuant file at all" * 4)
    with pytest.raises(ReplayFileError, match=r"garbage\.ptu: not a readable PicoQuant PTU file"):
        await ReplayTimeTagger("replay", path=garbage).connect()
    t3 = tmp_path / "image.ptu"
    with ptufile.PtuWriter(t3, (2, 2, 4), 1e-8, 1e-10, 1e-6) as writer:
        writer.write(np.ones((2, 2, 4), np.uint16))
    with pytest.raises(ReplayFileError, match=r"image\.ptu: record type .* not a supported T2"):
        await ReplayTimeTagger("replay", path=t3).connect()
    error = ReplayFileError("x")
    assert isinstance(error, InputError) and isinstance(error, DeviceError)
    with pytest.raises(DeviceError, match="not connected"):
        await ReplayTimeTagger("replay", path=missing).start()


async def test_realtime_pacing_follows_the_clock_and_stop_wakes_a_waiting_read(
    tmp_path: Path,
) -> None:
    path = write_ptu_t2(tmp_path / "pass.ptu", [t2(0, 0, 10), t2(1, 63, 3000), t2(0, 1, 20)])
    clock = SimClock(1_800_000_000.0)
    tagger = ReplayTimeTagger(
        "replay", path=path, pacing="realtime", buffer_duration_s=0.1, clock=clock
    )
    await tagger.connect()
    await tagger.start()
    with pytest.raises(DeviceTimeout, match=r"replay: no tag buffer within 0\.05 s"):
        await tagger.read(0.05)
    waiting = asyncio.ensure_future(tagger.read(5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await clock.advance_to(1_800_000_000.1)
    first = await asyncio.wait_for(waiting, 1.0)
    assert first is not None and first.channel.tolist() == [1]
    waiting = asyncio.ensure_future(tagger.read(5.0))  # the next window is due 0.1 s later
    await asyncio.sleep(0.01)
    await tagger.stop()
    assert await asyncio.wait_for(waiting, 1.0) is None


def test_constructor_and_options_refuse_bad_values() -> None:
    for kwargs, text in (
        ({"pacing": "fast"}, "pacing"),
        ({"buffer_duration_s": -1}, "buffer_duration_s"),
        ({"epoch_unix_s": float("nan")}, "epoch_unix_s"),
        ({"channel_map": {65: 1}}, "input 65 is not in 0..64"),
        ({"channel_map": {1: 5}}, "channel 5 is not in 1..4"),
    ):
        with pytest.raises(InputError, match=text):
            ReplayTimeTagger("replay", path="x.ptu", **kwargs)  # type: ignore[arg-type]
    options = ReplayTaggerOptions()  # the file is the bench entry's resource, file://PATH
    assert options.pacing == "asap" and options.channel_map == {1: 1, 2: 2, 3: 3, 4: 4}
    for bad in ({"path": "a.ptu"}, {"speed": 2}, {"pacing": "x"}, {"channel_map": {1: 9}}):
        with pytest.raises(ValidationError):
            ReplayTaggerOptions.model_validate(bad)
