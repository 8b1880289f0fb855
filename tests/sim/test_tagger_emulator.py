"""The TT/1 time tagger emulator against the real driver over a real socket, with faults."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.interfaces import DeviceDisconnected, DeviceTimeout, TagBuffer
from drivers.time_tagger_tcp import TcpTimeTagger
from drivers.transport import open_transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.time_tagger import (
    TimeTaggerEmulator,
    tagger_dead_time_filter,
    tagger_dead_time_filter_reference,
)
from tests.conftest import examples

PS = 10**12
START_UNIX_S = 1_700_000_000.25


@settings(max_examples=examples(150, 50), deadline=None)
@given(
    data=st.data(),
    n=st.sampled_from([0, 1, 2, 7, 8, 9, 63, 64, 65, 200]),
    dead=st.lists(st.integers(0, 5_000), min_size=5, max_size=5),
)
def test_dead_time_kernel_matches_reference(data: st.DataObject, n: int, dead: list[int]) -> None:
    channel = np.array(data.draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)), np.uint8)
    gaps = data.draw(st.lists(st.integers(0, 3_000), min_size=n, max_size=n))
    timestamp_ps = np.cumsum(np.array(gaps, dtype=np.int64))
    dead_time = np.zeros(256, dtype=np.int64)
    dead_time[: len(dead)] = dead
    last = np.full(256, -(1 << 62), dtype=np.int64)
    keep = np.empty(n, dtype=np.bool_)
    tagger_dead_time_filter(channel, timestamp_ps, dead_time, last, keep)
    reference_last: dict[int, int] = {}
    expected = tagger_dead_time_filter_reference(
        channel, timestamp_ps, dict(enumerate(dead)), reference_last
    )
    assert keep.tolist() == expected
    for c, t in reference_last.items():
        assert last[c] == t


@pytest.fixture
async def emulator() -> AsyncIterator[TimeTaggerEmulator]:
    async with TimeTaggerEmulator(SimClock(START_UNIX_S)) as emulator:
        yield emulator


async def _tagger(emulator: TimeTaggerEmulator, **kwargs: object) -> TcpTimeTagger:
    options = {"reply_timeout_s": 1.0, "reconnect_backoff_s": 0.01}
    options.update(kwargs)
    tagger = TcpTimeTagger("station-tagger", open_transport(emulator.resource), **options)
    await tagger.connect(timeout_s=2.0)
    return tagger


def _buffer(epoch: float, k: int, n: int, seed: int = 0) -> TagBuffer:
    rng = np.random.default_rng([seed, k])
    timestamp_ps = np.sort(rng.integers(k * PS, (k + 1) * PS, n))
    channel = rng.integers(1, 5, n).astype(np.uint8)
    return TagBuffer(channel, timestamp_ps, epoch + k, epoch + k + 1)


async def _feed_all(emulator: TimeTaggerEmulator, buffers: list[TagBuffer]) -> None:
    for buffer in buffers:
        await emulator.feed(buffer)


async def _read_n(tagger: TcpTimeTagger, n: int) -> list[TagBuffer]:
    out = []
    for _ in range(n):
        buffer = await tagger.read(5.0)
        assert buffer is not None
        out.append(buffer)
    return out


def _assert_same(got: list[TagBuffer], sent: list[TagBuffer]) -> None:
    assert len(got) == len(sent)
    for a, b in zip(got, sent, strict=True):
        np.testing.assert_array_equal(a.channel, b.channel)
        np.testing.assert_array_equal(a.timestamp_ps, b.timestamp_ps)
        assert (a.start_unix_s, a.stop_unix_s) == (b.start_unix_s, b.stop_unix_s)


async def test_a_stream_round_trips_byte_exact_over_a_socket(emulator: TimeTaggerEmulator) -> None:
    tagger = await _tagger(emulator)
    epoch = await tagger.start()
    assert epoch == 1_700_000_000.0 == emulator.epoch_unix_s and emulator.started.is_set()
    sent = [_buffer(epoch, k, n) for k, n in enumerate([0, 1, 5000, 64, 200_000, 3])]
    feeder = asyncio.create_task(_feed_all(emulator, sent))
    got = await _read_n(tagger, len(sent))
    await feeder
    _assert_same(got, sent)
    await tagger.stop()
    assert await tagger.read(1.0) is None
    assert tagger.counters.frames == 6 and tagger.counters.tags == 205_068
    assert tagger.counters.garbled_frames == tagger.counters.reconnects == 0
    await tagger.close()


async def test_tagger_applies_input_delay_and_dead_time(emulator: TimeTaggerEmulator) -> None:
    tagger = await _tagger(emulator)
    await tagger.set_input_delay(1, 5_000)
    await tagger.set_dead_time(2, 1_000)
    await tagger.set_trigger_level(3, -0.125)
    assert await tagger.get_channel_setting(1, "input_delay_ps") == 5_000
    assert await tagger.get_channel_setting(3, "trigger_level_v") == -0.125
    epoch = await tagger.start()
    channel = np.array([1, 2, 2, 2, 3], dtype=np.uint8)
    timestamp_ps = np.array([100, 200, 900, 1_300, 2_000], dtype=np.int64)
    await emulator.feed(TagBuffer(channel, timestamp_ps, epoch, epoch + 1))
    # channel 2 carries over its dead time into the next buffer
    await emulator.feed(TagBuffer(np.array([2], np.uint8), np.array([1_400]), epoch + 1, epoch + 2))
    first, second = await _read_n(tagger, 2)
    assert first.channel.tolist() == [2, 2, 3, 1]  # re-sorted after channel 1's delay
    assert first.timestamp_ps.tolist() == [200, 1_300, 2_000, 5_100]
    assert second.channel.size == 0
    await tagger.close()


async def test_a_hung_tagger_times_out_naming_it(emulator: TimeTaggerEmulator) -> None:
    tagger = await _tagger(emulator, reply_timeout_s=0.1)
    epoch = await tagger.start()
    await emulator.inject(no_reply=True)
    await emulator.feed(_buffer(epoch, 0, 10))
    with pytest.raises(DeviceTimeout, match=r"station-tagger: no tag buffer within 0\.2 s"):
        await tagger.read(0.2)
    with pytest.raises(DeviceTimeout, match=r"station-tagger: no reply to 'DEAD 1 0'"):
        await tagger.set_dead_time(1, 0)
    await emulator.inject(no_reply=False)  # the tagger comes back: the stream carries on
    (buffer,) = await _read_n(tagger, 1)
    assert buffer.channel.size == 10
    await tagger.close()


async def test_slow_replies_pass_with_a_long_enough_timeout(emulator: TimeTaggerEmulator) -> None:
    await emulator.inject(reply_delay_s=0.15)
    impatient = await _tagger(emulator, reply_timeout_s=0.5)
    impatient.reply_timeout_s = 0.05
    with pytest.raises(DeviceTimeout, match=r"no reply to 'DELAY\? 1' within 0\.05 s"):
        await impatient.get_channel_setting(1, "input_delay_ps")
    await impatient.close()
    patient = await _tagger(emulator, reply_timeout_s=1.0)
    assert await patient.get_channel_setting(1, "input_delay_ps") == 0
    await patient.close()


async def test_a_disconnect_mid_stream_is_reconnected_without_losing_data(
    emulator: TimeTaggerEmulator,
) -> None:
    tagger = await _tagger(emulator)
    epoch = await tagger.start()
    emulator.faults.disconnect_before_sequences.add(3)
    sent = [_buffer(epoch, k, 1000) for k in range(8)]
    feeder = asyncio.create_task(_feed_all(emulator, sent))
    got = await _read_n(tagger, 8)
    await feeder
    _assert_same(got, sent)
    assert tagger.counters.reconnects == 1 and emulator.connections == 2
    assert "RESUME 3" in emulator.commands
    assert not any(b.overflow for b in got)
    await tagger.stop()
    await tagger.close()


async def test_a_garbled_frame_is_rejected_counted_and_recovered(
    emulator: TimeTaggerEmulator,
) -> None:
    tagger = await _tagger(emulator)
    epoch = await tagger.start()
    emulator.faults.garble_sequences.add(1)
    emulator.faults.garble_header_sequences.add(2)
    sent = [_buffer(epoch, k, 500) for k in range(4)]
    for buffer in sent[:2]:
        await emulator.feed(buffer)
    got = await _read_n(tagger, 2)  # frame 1 arrives only after the first recovery
    for buffer in sent[2:]:
        await emulator.feed(buffer)
    got += await _read_n(tagger, 2)
    _assert_same(got, sent)
    assert tagger.counters.garbled_frames == 2 and tagger.counters.reconnects == 2
    assert "header CRC mismatch" in tagger.last_error
    status = await tagger.status()
    assert status.healthy and status.detail["garbled_frames"] == 2
    await tagger.close()


async def test_overflow_flag_reaches_the_buffer(emulator: TimeTaggerEmulator) -> None:
    tagger = await _tagger(emulator)
    epoch = await tagger.start()
    emulator.faults.overflow_sequences.add(1)
    for k in range(3):
        await emulator.feed(_buffer(epoch, k, 100))
    got = await _read_n(tagger, 3)
    assert [b.overflow for b in got] == [False, True, False]
    assert got[1].channel.size == 50  # the FIFO overflowed half way through the interval
    assert tagger.counters.data_lost_frames == 1 and tagger.counters.lost_frames == 0
    await tagger.close()


async def test_frames_overwritten_while_disconnected_are_reported_lost() -> None:
    async with TimeTaggerEmulator(
        SimClock(START_UNIX_S), retain_frames=2, queue_depth=None
    ) as emulator:
        tagger = await _tagger(emulator, reconnect_backoff_s=0.3)
        epoch = await tagger.start()
        await emulator.feed(_buffer(epoch, 0, 10))
        await _read_n(tagger, 1)
        emulator.drop_connections()
        for k in range(1, 6):  # the tagger keeps acquiring; only frames 4 and 5 are kept
            await emulator.feed(_buffer(epoch, k, 10))
        got = await _read_n(tagger, 2)
        assert [b.start_unix_s - epoch for b in got] == [4.0, 5.0]
        assert got[0].overflow and not got[1].overflow
        assert tagger.counters.lost_frames == 3
        await tagger.stop()
        assert await tagger.read(1.0) is None
        await tagger.close()


async def test_a_tagger_that_never_comes_back_fails_the_stream_naming_it() -> None:
    emulator = TimeTaggerEmulator(SimClock(START_UNIX_S))
    await emulator.start()
    tagger = await _tagger(emulator, reconnect_attempts=2, reconnect_backoff_s=0.01)
    await tagger.start()
    await emulator.close()
    with pytest.raises(DeviceDisconnected, match=r"station-tagger: link lost .* after 2 attempts"):
        await tagger.read(5.0)
    assert (await tagger.status()).detail["reconnects"] == 1
    await tagger.close()


async def test_the_wire_format_matches_the_protocol_document(emulator: TimeTaggerEmulator) -> None:
    """Raw socket: commands, replies and one frame decoded by hand from the document."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)

    async def ask(line: bytes) -> bytes:
        writer.write(line)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 2.0)

    assert await ask(b"*IDN?\n") == b"OK satqkd,TT-EMU-8,0001,1.0\n"
    assert await ask(b"BOGUS\n") == b"ERR 1 unknown command 'BOGUS'\n"
    assert await ask(b"TRIG 9 0.1\n") == b"ERR 3 channel 9 not in 1..8\n"
    assert await ask(b"DEAD 1 -5\n") == b"ERR 4 dead time -5 ps not in 0..100000000\n"
    assert await ask(b"STOP\n") == b"ERR 5 not running\n"
    assert await ask(b"STAT?\n") == b"OK IDLE 0 0\n"
    assert await ask(b"START\n") == b"OK 1700000000.000000000\n"
    await emulator.feed(
        TagBuffer(np.array([1, 2], np.uint8), np.array([1_000_000, 2_000_000]), 1.7e9, 1.7e9 + 1)
    )
    head = await asyncio.wait_for(reader.readexactly(36), 2.0)
    sync, kind, flags, sequence, start, stop, n, tags_crc, head_crc = struct.unpack(
        ">BBHIqqIII", head
    )
    assert (sync, kind, flags, sequence, start, stop, n) == (0xA5, 1, 0, 0, 0, PS, 2)
    assert head_crc == zlib.crc32(head[:32])
    payload = await reader.readexactly(18)
    assert payload == bytes.fromhex("01" "00000000000f4240" "02" "00000000001e8480")  # fmt: skip
    assert tags_crc == zlib.crc32(payload)
    writer.write(b"STOP\n")
    await writer.drain()
    end = await asyncio.wait_for(reader.readexactly(36), 2.0)
    assert struct.unpack(">BBHIqqII", end[:32])[:7] == (0xA5, 2, 0, 1, 0, PS, 0)
    assert await asyncio.wait_for(reader.readline(), 2.0) == b"OK 1\n"
    writer.close()


async def test_feed_checks_its_buffer(emulator: TimeTaggerEmulator) -> None:
    await emulator.feed(_buffer(0.0, 0, 3))  # not acquiring: recorded nowhere
    assert emulator.dropped_buffers == 1
    with pytest.raises(InputError, match=r"buffer.channel must be in 1..8"):
        await emulator.feed(TagBuffer(np.array([0], np.uint8), np.array([1]), 0.0, 1.0))
    with pytest.raises(InputError, match="non-decreasing"):
        await emulator.feed(TagBuffer(np.array([1, 1], np.uint8), np.array([5, 1]), 0.0, 1.0))
    with pytest.raises(InputError, match="unknown tagger fault"):
        await emulator.inject(explode=True)
