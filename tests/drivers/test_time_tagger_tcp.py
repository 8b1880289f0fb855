"""Byte-exact protocol tests of the TT/1 time tagger driver (docs/tagger-protocol.md)."""

from __future__ import annotations

import asyncio
import struct
import sys
import types
import zlib

import numpy as np
import pytest

from drivers.interfaces import DeviceDisconnected, DeviceError, DeviceTimeout
from drivers.time_tagger_tcp import CHANNEL_SETTINGS, TcpTimeTagger, VendorTaggerAdapter
from drivers.transport import ScriptedTransport
from satqkd_core.errors import InputError

EPOCH = 1_700_000_000.0
EPOCH_REPLY = b"OK 1700000000.000000000\n"
HELLO = [(b"*IDN?\n", b"OK satqkd,TT-EMU-8,0001,1.0\n"), (b"CHAN?\n", b"OK 8\n")]
PS = 10**12


def frame(
    sequence: int,
    start_ps: int,
    stop_ps: int,
    tags: list[tuple[int, int]],
    *,
    kind: int = 1,
    flags: int = 0,
) -> bytes:
    """Build a frame by hand from the protocol document's table (not from either codebase)."""
    payload = b"".join(struct.pack(">Bq", channel, t) for channel, t in tags)
    head = struct.pack(">BBHIqqII", 0xA5, kind, flags, sequence, start_ps, stop_ps, len(tags), 0)
    head = head[:28] + struct.pack(">I", zlib.crc32(payload))
    return head + struct.pack(">I", zlib.crc32(head)) + payload


def end_frame(frames: int, stop_ps: int) -> bytes:
    return frame(frames, 0, stop_ps, [], kind=2)


def tagger_for(
    pairs: list[tuple[bytes, bytes]], **kwargs: object
) -> tuple[TcpTimeTagger, ScriptedTransport]:
    transport = ScriptedTransport(HELLO + pairs, name="script")
    options = {"reply_timeout_s": 0.2, "reconnect_backoff_s": 0.001}
    options.update(kwargs)
    return TcpTimeTagger("tagger", transport, **options), transport


def test_the_example_frame_in_the_protocol_document_is_what_frame_builds() -> None:
    built = frame(0, 0, PS, [(1, 1_000_000), (2, 2_000_000)])
    assert built[:28].hex() == (
        "a5" "01" "0000" "00000000" "0000000000000000" "000000e8d4a51000" "00000002"
    )  # fmt: skip
    assert built[36:].hex() == "01" "00000000000f4240" "02" "00000000001e8480"  # fmt: skip


async def test_connect_applies_declared_channel_settings_byte_for_byte() -> None:
    tagger, transport = tagger_for(
        [
            (b"TRIG 1 -0.250\n", b"OK\n"),
            (b"DEAD 1 25000\n", b"OK\n"),
            (b"DELAY 2 -1500\n", b"OK\n"),
            (b"TRIG? 1\n", b"OK -0.250\n"),
            (b"DEAD? 1\n", b"OK 25000\n"),
            (b"DELAY? 2\n", b"OK -1500\n"),
        ],
        channel_settings={
            1: {"trigger_level_v": -0.25, "dead_time_ps": 25_000},
            2: {"input_delay_ps": -1500},
        },
    )
    await tagger.connect()
    assert tagger.identity == "satqkd,TT-EMU-8,0001,1.0" and tagger.n_channels == 8
    assert await tagger.get_channel_setting(1, "trigger_level_v") == -0.25
    assert await tagger.get_channel_setting(1, "dead_time_ps") == 25_000
    assert await tagger.get_channel_setting(2, "input_delay_ps") == -1500
    transport.assert_all_consumed()


async def test_settings_are_checked_before_anything_is_sent() -> None:
    tagger, transport = tagger_for([])
    await tagger.connect()
    with pytest.raises(InputError, match=r"trigger_level_v must be in -2.5..2.5 V"):
        await tagger.set_trigger_level(1, 3.0)
    with pytest.raises(InputError, match="dead_time_ps must be a whole number of ps"):
        await tagger.set_dead_time(1, 1.5)
    with pytest.raises(InputError, match=r"channel must be in 1..8, got 9"):
        await tagger.set_input_delay(9, 0)
    with pytest.raises(InputError, match="setting must be one of"):
        await tagger.set_channel_setting(1, "gain_db", 1.0)
    transport.assert_all_consumed()
    assert set(CHANNEL_SETTINGS) == {"trigger_level_v", "dead_time_ps", "input_delay_ps"}


async def test_an_error_reply_is_raised_naming_the_command_and_counted() -> None:
    tagger, transport = tagger_for([(b"DELAY 3 100\n", b"ERR 5 not allowed\n")])
    await tagger.connect()
    with pytest.raises(DeviceError, match=r"tagger: 'DELAY 3 100' refused: ERR 5 not allowed"):
        await tagger.set_input_delay(3, 100)
    assert tagger.counters.command_errors == 1
    transport.assert_all_consumed()


async def test_a_tagger_that_does_not_answer_times_out_naming_it() -> None:
    transport = ScriptedTransport([(b"*IDN?\n", b"")])
    tagger = TcpTimeTagger("station-tagger", transport, reply_timeout_s=0.05)
    with pytest.raises(DeviceTimeout, match=r"station-tagger: no reply to '\*IDN\?' within 0.05 s"):
        await tagger.connect()
    transport.assert_all_consumed()


async def test_stream_delivers_frames_as_numpy_buffers_and_ends_on_stop() -> None:
    tags0 = [(1, 5), (3, 1_000), (2, 1_000), (4, PS // 2 - 1)]
    tags1 = [(2, PS // 2 + 17)]
    tagger, transport = tagger_for(
        [
            (b"START\n", EPOCH_REPLY + frame(0, 0, PS // 2, tags0) + frame(1, PS // 2, PS, tags1)),
            (b"STOP\n", frame(2, PS, 3 * PS // 2, []) + end_frame(3, 3 * PS // 2) + b"OK 3\n"),
        ]
    )
    await tagger.connect()
    assert await tagger.start() == EPOCH
    first = await tagger.read(1.0)
    assert first is not None
    assert first.channel.dtype == np.uint8 and first.timestamp_ps.dtype == np.int64
    np.testing.assert_array_equal(first.channel, [1, 3, 2, 4])
    np.testing.assert_array_equal(first.timestamp_ps, [5, 1_000, 1_000, PS // 2 - 1])
    assert (first.start_unix_s, first.stop_unix_s, first.overflow) == (EPOCH, EPOCH + 0.5, False)
    second = await tagger.read(1.0)
    assert second is not None and second.timestamp_ps.tolist() == [PS // 2 + 17]
    await tagger.stop()
    last = await tagger.read(1.0)
    assert last is not None and last.channel.size == 0 and last.stop_unix_s == EPOCH + 1.5
    assert await tagger.read(1.0) is None
    assert await tagger.read(1.0) is None  # stays ended
    assert tagger.counters.frames == 3 and tagger.counters.tags == 5
    transport.assert_all_consumed()


async def test_a_reply_between_frames_goes_to_its_command() -> None:
    tagger, transport = tagger_for(
        [
            (b"START\n", EPOCH_REPLY + frame(0, 0, PS, [(1, 10)])),
            (b"TRIG 3 0.100\n", frame(1, PS, 2 * PS, [(3, PS + 1)]) + b"OK\n"),
            (b"STAT?\n", b"OK RUNNING 2 2\n"),
            (b"STOP\n", end_frame(2, 2 * PS) + b"OK 2\n"),
        ]
    )
    await tagger.connect()
    await tagger.start()
    await tagger.set_trigger_level(3, 0.1)
    assert await tagger._command("STAT?") == "RUNNING 2 2"
    buffers = [await tagger.read(1.0), await tagger.read(1.0)]
    assert [b.timestamp_ps.tolist() for b in buffers if b is not None] == [[10], [PS + 1]]
    await tagger.stop()
    assert await tagger.read(1.0) is None
    transport.assert_all_consumed()


async def test_data_lost_flag_and_sequence_gaps_mark_the_buffer() -> None:
    tagger, transport = tagger_for(
        [
            (
                b"START\n",
                EPOCH_REPLY
                + frame(0, 0, PS, [(1, 1)], flags=1)
                + frame(2, 2 * PS, 3 * PS, [(1, 2 * PS)])
                + frame(3, 3 * PS, 4 * PS, []),
            ),
            (b"STOP\n", end_frame(4, 4 * PS) + b"OK 4\n"),
        ]
    )
    await tagger.connect()
    await tagger.start()
    flagged, after_gap, clean = [await tagger.read(1.0) for _ in range(3)]
    assert flagged is not None and flagged.overflow
    assert after_gap is not None and after_gap.overflow and after_gap.start_unix_s == EPOCH + 2
    assert clean is not None and not clean.overflow
    assert tagger.counters.lost_frames == 1 and tagger.counters.data_lost_frames == 2
    await tagger.stop()
    transport.assert_all_consumed()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda f: f[:-1] + bytes([f[-1] ^ 0xFF]), "tag CRC mismatch"),
        (lambda f: f[:27] + bytes([f[27] ^ 0x01]) + f[28:], "header CRC mismatch"),
        (lambda f: b"Z" + f[1:], "byte 0x5A where a frame or reply should start"),
        (lambda f: frame(0, 0, PS, [(9, 1)]), "channel outside 1..8"),
        (lambda f: frame(0, 0, PS, [(1, 9), (1, 8)]), "tags out of time order"),
    ],
)
async def test_a_garbled_frame_is_rejected_counted_and_resumed(bad: object, reason: str) -> None:
    good = frame(0, 0, PS, [(1, 7), (2, 8)])
    tagger, transport = tagger_for(
        [
            (b"START\n", EPOCH_REPLY + bad(good)),  # type: ignore[operator]
            (b"RESUME 0\n", EPOCH_REPLY + good),
            (b"STOP\n", end_frame(1, PS) + b"OK 1\n"),
        ]
    )
    await tagger.connect()
    await tagger.start()
    buffer = await tagger.read(1.0)
    assert buffer is not None and buffer.timestamp_ps.tolist() == [7, 8] and not buffer.overflow
    assert tagger.counters.garbled_frames == 1 and tagger.counters.reconnects == 1
    assert reason in tagger.last_error
    assert transport.open_count == 2  # the connection was dropped and opened again
    await tagger.stop()
    assert await tagger.read(1.0) is None
    transport.assert_all_consumed()


async def test_frames_replayed_after_resume_are_dropped_once() -> None:
    f0, f1 = frame(0, 0, PS, [(1, 1)]), frame(1, PS, 2 * PS, [(1, PS)])
    tagger, transport = tagger_for(
        [
            (b"START\n", EPOCH_REPLY + f0 + f1[:-1] + bytes([f1[-1] ^ 0xFF])),  # frame 1 corrupt
            (b"RESUME 1\n", EPOCH_REPLY + f0 + f1),  # a tagger may replay from further back
            (b"STOP\n", end_frame(2, 2 * PS) + b"OK 2\n"),
        ]
    )
    await tagger.connect()
    await tagger.start()
    got = [await tagger.read(1.0), await tagger.read(1.0)]
    assert [b.start_unix_s - EPOCH for b in got if b is not None] == [0.0, 1.0]
    assert tagger.counters.duplicate_frames == 1
    await tagger.stop()
    transport.assert_all_consumed()


async def test_a_restarted_tagger_is_reported_as_a_lost_acquisition() -> None:
    tagger, transport = tagger_for(
        [
            (b"START\n", EPOCH_REPLY + b"\x00"),
            (b"RESUME 0\n", b"OK 1700000099.000000000\n"),
        ]
    )
    await tagger.connect()
    await tagger.start()
    with pytest.raises(DeviceError, match=r"tagger: tagger restarted .* acquisition lost"):
        await tagger.read(1.0)
    assert await tagger.read(0.1) is None  # the stream is over
    transport.assert_all_consumed()


async def test_reconnect_gives_up_after_its_attempts_naming_the_tagger() -> None:
    tagger, transport = tagger_for(
        [
            (b"START\n", EPOCH_REPLY + b"\x00"),
            (b"RESUME 0\n", b""),
            (b"RESUME 0\n", b""),
        ],
        reconnect_attempts=2,
        reply_timeout_s=0.05,
    )
    await tagger.connect()
    await tagger.start()
    with pytest.raises(DeviceDisconnected, match=r"tagger: link lost .* not regained after 2"):
        await tagger.read(2.0)
    transport.assert_all_consumed()


async def test_read_times_out_naming_the_tagger_and_stop_releases_a_pending_read() -> None:
    tagger, transport = tagger_for(
        [(b"START\n", EPOCH_REPLY), (b"STOP\n", end_frame(0, 0) + b"OK 0\n")]
    )
    await tagger.connect()
    await tagger.start()
    with pytest.raises(DeviceTimeout, match=r"tagger: no tag buffer within 0.05 s"):
        await tagger.read(0.05)
    pending = asyncio.create_task(tagger.read(5.0))
    await asyncio.sleep(0.01)
    await tagger.stop()
    assert await pending is None
    transport.assert_all_consumed()


async def test_stop_without_an_answer_times_out_and_still_ends_the_stream() -> None:
    tagger, transport = tagger_for([(b"START\n", EPOCH_REPLY), (b"STOP\n", b"")])
    await tagger.connect()
    await tagger.start()
    with pytest.raises(DeviceTimeout, match=r"tagger: no reply to 'STOP'"):
        await tagger.stop()
    assert await tagger.read(0.1) is None
    status = await tagger.status()
    assert status.detail["streaming"] is False
    transport.assert_all_consumed()


async def test_stop_unblocks_a_reader_held_by_back_pressure() -> None:
    frames = b"".join(frame(k, k * PS, (k + 1) * PS, [(1, k * PS)]) for k in range(4))
    tagger, transport = tagger_for(
        [(b"START\n", EPOCH_REPLY + frames), (b"STOP\n", end_frame(4, 4 * PS) + b"OK 4\n")],
        queue_depth=1,
    )
    await tagger.connect()
    await tagger.start()
    first = await tagger.read(1.0)
    assert first is not None
    await tagger.stop()  # the consumer stopped reading with three frames still coming
    rest = [await tagger.read(1.0) for _ in range(4)]
    assert [b.start_unix_s - EPOCH for b in rest[:3] if b is not None] == [1.0, 2.0, 3.0]
    assert rest[3] is None
    transport.assert_all_consumed()


class _FakeStreamBuffer:
    def __init__(self, channels: list[int], timestamps: list[int], types_: list[int]) -> None:
        self._c, self._t, self._e = channels, timestamps, types_
        self.size = len(channels)
        self.hasOverflows = False
        self.tStart = 1_000_000
        self.tGetData = 1_000_000 + 2 * PS

    def getChannels(self) -> np.ndarray:
        return np.array(self._c, dtype=np.int32)

    def getTimestamps(self) -> np.ndarray:
        return np.array(self._t, dtype=np.int64)

    def getEventTypes(self) -> np.ndarray:
        return np.array(self._e, dtype=np.int8)


def _fake_sdk(calls: list[tuple]) -> types.ModuleType:
    """A stand-in exposing the documented SDK names, to exercise the adapter's own logic."""
    sdk = types.ModuleType("TimeTagger")

    class Tagger:
        def getModel(self) -> str:
            return "Time Tagger Ultra"

        def getSerial(self) -> str:
            return "1234"

        def setTriggerLevel(self, channel: int, level: float) -> None:
            calls.append(("trigger", channel, level))

        def setDeadtime(self, channel: int, ps: int) -> None:
            calls.append(("dead", channel, ps))

        def setInputDelay(self, channel: int, ps: int) -> None:
            calls.append(("delay", channel, ps))

    class Stream:
        def __init__(self, tagger: Tagger, n_max: int, channels: list[int]) -> None:
            calls.append(("stream", n_max, tuple(channels)))
            self.buffers = [
                _FakeStreamBuffer([1, 2, 3], [1_000_010, 1_000_020, 1_000_030], [0, 4, 0])
            ]

        def start(self) -> None:
            calls.append(("start",))

        def stop(self) -> None:
            calls.append(("stop",))

        def getData(self) -> _FakeStreamBuffer:
            return self.buffers.pop(0) if self.buffers else _FakeStreamBuffer([], [], [])

    sdk.createTimeTagger = lambda serial="": Tagger()  # type: ignore[attr-defined]
    sdk.freeTimeTagger = lambda tagger: calls.append(("free",))  # type: ignore[attr-defined]
    sdk.TimeTagStream = Stream  # type: ignore[attr-defined]
    return sdk


async def test_vendor_adapter_without_the_sdk_fails_at_connect_not_at_import() -> None:
    if VendorTaggerAdapter.sdk_available():
        pytest.skip("a vendor SDK is installed here")
    adapter = VendorTaggerAdapter("vendor", [1, 2])
    with pytest.raises(DeviceError, match="vendor: no vendor SDK"):
        await adapter.connect()


async def test_vendor_adapter_maps_the_sdk_stream_to_tag_buffers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple] = []
    monkeypatch.setitem(sys.modules, "TimeTagger", _fake_sdk(calls))
    monkeypatch.setattr(VendorTaggerAdapter, "_SDK_MODULES", ("TimeTagger",))
    adapter = VendorTaggerAdapter(
        "vendor",
        [1, 2, 3],
        channel_settings={1: {"trigger_level_v": -0.3, "dead_time_ps": 20_000}},
        now_unix_s=lambda: EPOCH,
        poll_interval_s=0.001,
    )
    await adapter.connect()
    assert adapter.identity == "Time Tagger Ultra 1234"
    assert await adapter.start() == EPOCH
    buffer = await adapter.read(1.0)
    assert buffer is not None
    np.testing.assert_array_equal(buffer.channel, [1, 3])  # the missed-events marker dropped
    np.testing.assert_array_equal(buffer.timestamp_ps, [10, 30])
    assert buffer.overflow and buffer.stop_unix_s == EPOCH + 2.0
    with pytest.raises(DeviceTimeout, match=r"vendor: no tag buffer within 0\.01 s"):
        await adapter.read(0.01)
    await adapter.close()
    assert calls[:2] == [("trigger", 1, -0.3), ("dead", 1, 20_000)]
    assert ("stop",) in calls and calls[-1] == ("free",)


async def test_a_stop_lost_with_the_link_is_sent_again_after_the_resume() -> None:
    tagger, transport = tagger_for(
        [
            (b"START\n", EPOCH_REPLY + frame(0, 0, PS, [(1, 3)])),
            (b"STOP\n", b"\x00"),  # line noise instead of the end of the stream
            (b"RESUME 1\n", EPOCH_REPLY),  # still running: this STOP never arrived
            (b"STOP\n", end_frame(1, PS) + b"OK 1\n"),
        ]
    )
    await tagger.connect()
    await tagger.start()
    await tagger.stop()
    first = await tagger.read(1.0)
    assert first is not None and first.timestamp_ps.tolist() == [3]
    assert await tagger.read(1.0) is None
    assert tagger.counters.reconnects == 1
    transport.assert_all_consumed()


async def test_a_stop_that_arrived_before_the_link_dropped_is_not_repeated() -> None:
    tagger, transport = tagger_for(
        [
            (b"START\n", EPOCH_REPLY),
            (b"STOP\n", b"\x00"),
            (b"RESUME 0\n", EPOCH_REPLY + end_frame(0, 0)),  # the tagger had stopped
        ]
    )
    await tagger.connect()
    await tagger.start()
    await tagger.stop()
    assert await tagger.read(1.0) is None
    transport.assert_all_consumed()
