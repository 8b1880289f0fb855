"""S-Fifteen TDC1 driver: byte-exact protocol, record decoding and wrap-around, and against
its emulator over a real pty and through memory."""

from __future__ import annotations

import asyncio
import itertools
import struct

import numpy as np
import pytest
from pydantic import ValidationError

from drivers.interfaces import DeviceDisconnected, DeviceError, DeviceTimeout, TagBuffer
from drivers.time_tagger_tdc1 import Tdc1TaggerOptions, Tdc1TimeTagger
from drivers.transport import ScriptedTransport, open_transport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.tdc1 import Tdc1Emulator, encode_tdc1_records

EPOCH = 1_700_000_000.0
PERIOD = 1 << 27  # counter ticks
TICK_PS = 2000
HELLO = [
    (b"ABORT\r\n", b""),
    (b"*IDN?\r\n", b"S-Fifteen Instruments,TDC1,00121,1.0\r\n"),
    (b"*RST\r\n", b""),
    (b"TIMESTAMP\r\n", b""),
    (b"NIM\r\n", b""),
    (b"REFCLK 0\r\n", b""),
    (b"MODE?\r\n", b"3\r\n"),
]
START = b"INPKT;TIME 0;COUNTS?\r\n"
ABORT = b"ABORT\r\n"


def record(counter: int, inputs: tuple[int, ...] = (), *, marker: bool = False) -> bytes:
    """One record by hand from the documented layout: counter << 5 | marker bit | input bits."""
    low = (0x11 if marker else 0) | sum(1 << (i - 1) for i in inputs)
    return struct.pack("<I", (counter << 5) | low)


def tagger_for(
    pairs: list[tuple[bytes, bytes]], **options: object
) -> tuple[Tdc1TimeTagger, ScriptedTransport]:
    script = ScriptedTransport(HELLO + pairs, name="tdc1-script")
    options.setdefault("drain_quiet_s", 0.01)
    tagger = Tdc1TimeTagger(
        "tdc1",
        script,
        timeout_s=0.2,
        clock=SimClock(EPOCH),
        **options,  # type: ignore[arg-type]
    )
    return tagger, script


async def read_all(tagger: Tdc1TimeTagger, timeout_s: float = 2.0) -> list[TagBuffer]:
    buffers = []
    while (buffer := await tagger.read(timeout_s)) is not None:
        buffers.append(buffer)
    return buffers


def tags_of(buffers: list[TagBuffer]) -> tuple[list[int], list[int]]:
    channel = np.concatenate([b.channel for b in buffers]) if buffers else np.zeros(0)
    stamp = np.concatenate([b.timestamp_ps for b in buffers]) if buffers else np.zeros(0)
    return channel.tolist(), stamp.tolist()


# --- byte-exact protocol ---------------------------------------------------------------------


async def test_connect_configures_timestamp_mode_byte_for_byte_and_close_aborts() -> None:
    tagger, script = tagger_for(
        [(b"MODE?\r\n", b"3\r\n"), (b"LEVEL?\r\n", b"-0.400\r\n"), (ABORT, b"")]
    )
    await tagger.connect(timeout_s=1.0)
    assert tagger.identity == "S-Fifteen Instruments,TDC1,00121,1.0"
    status = await tagger.status()
    assert status.healthy and status.detail["mode"] == 3 and status.detail["level"] == "-0.400"
    await tagger.close()
    script.assert_all_consumed()
    assert tagger.counters.commands_sent == len(HELLO) + 3


async def test_threshold_reference_clock_and_a_stream_left_running_are_handled() -> None:
    leftover = record(5, (1,)) + record(9, (2,)) + record(12, (4,))
    script = ScriptedTransport(
        [
            (b"ABORT\r\n", leftover),  # a previous session left the TDC1 streaming
            (b"*IDN?\r\n", b"S-Fifteen Instruments,TDC1,00121,1.0\r\n"),
            (b"*RST\r\n", b""),
            (b"TIMESTAMP\r\n", b""),
            (b"TTL\r\n", b""),
            (b"NEG -0.250\r\n", b""),
            (b"REFCLK 1\r\n", b""),
            (b"MODE?\r\n", b"3\r\n"),
        ]
    )
    tagger = Tdc1TimeTagger(
        "tdc1",
        script,
        timeout_s=0.2,
        input_level="TTL",
        threshold_v=-0.25,
        reference_clock="external",
        drain_quiet_s=0.01,
    )
    await tagger.connect()
    script.assert_all_consumed()
    assert tagger.counters.stale_bytes_discarded == len(leftover)


async def test_another_instrument_on_the_port_is_refused_and_counted() -> None:
    script = ScriptedTransport([HELLO[0], (b"*IDN?\r\n", b"Pan-Tilt Controller v3.4\r\n")])
    tagger = Tdc1TimeTagger("tdc1", script, timeout_s=0.2, drain_quiet_s=0.01)
    with pytest.raises(DeviceError, match="not the expected instrument"):
        await tagger.connect()
    assert tagger.counters.instrument_errors == 1 and not script.connected


async def test_a_unit_refusing_timestamp_mode_is_an_instrument_error() -> None:
    script = ScriptedTransport([*HELLO[:-1], (b"MODE?\r\n", b"0\r\n")])
    tagger = Tdc1TimeTagger("tdc1", script, timeout_s=0.2, drain_quiet_s=0.01)
    with pytest.raises(DeviceError, match=r"MODE\? answers 0, not 3"):
        await tagger.connect()
    assert tagger.counters.instrument_errors == 1
    script.assert_all_consumed()


async def test_a_garbled_mode_reply_is_counted() -> None:
    script = ScriptedTransport([*HELLO[:-1], (b"MODE?\r\n", b"\x7f~?\r\n")])
    tagger = Tdc1TimeTagger("tdc1", script, timeout_s=0.2, drain_quiet_s=0.01)
    with pytest.raises(DeviceError, match="garbled reply"):
        await tagger.connect()
    assert tagger.counters.garbled_replies == 1


async def test_stream_decodes_ticks_to_ps_across_wraps_and_expands_coincidences() -> None:
    stream = (
        record(10, (1,))
        + record((1 << 26) + 3960, marker=True)  # quiet half period
        + record(100, (2, 3))  # after the first wrap: inputs 2 and 3 in one tick
        + record(PERIOD - 1, (4,))
    )
    tail = record(5, (1,))  # after the second wrap, sent just before ABORT takes effect
    tagger, script = tagger_for([(START, stream), (ABORT, tail), (ABORT, b"")])
    await tagger.connect()
    assert await tagger.start() == EPOCH
    with pytest.raises(DeviceError, match="refused while timestamps stream"):
        await tagger.ask("MODE?")
    assert (await tagger.status()).healthy
    await tagger.stop()
    buffers = await read_all(tagger)
    assert await tagger.read(0.01) is None
    channel, stamp = tags_of(buffers)
    assert channel == [1, 2, 3, 4, 1]
    ticks = [10, PERIOD + 100, PERIOD + 100, 2 * PERIOD - 1, 2 * PERIOD + 5]
    assert stamp == [t * TICK_PS for t in ticks]
    assert buffers[0].start_unix_s == EPOCH
    assert buffers[-1].stop_unix_s == pytest.approx(EPOCH + (2 * PERIOD + 6) * 2e-9)
    for before, after in itertools.pairwise(buffers):
        assert after.start_unix_s == before.stop_unix_s  # intervals tile the acquisition
    assert not any(b.overflow for b in buffers)
    assert (tagger.stream.wraps, tagger.stream.markers, tagger.stream.tags) == (2, 1, 5)
    await tagger.close()
    script.assert_all_consumed()


async def test_garbled_and_short_records_are_dropped_flagged_and_counted() -> None:
    stream = record(10, (1,)) + record(20) + record(30, (2,))  # record(20) names no input
    tagger, script = tagger_for([(START, stream), (ABORT, record(40, (3,))[:2]), (ABORT, b"")])
    await tagger.connect()
    await tagger.start()
    await tagger.stop()
    buffers = await read_all(tagger)
    assert tags_of(buffers) == ([1, 2], [10 * TICK_PS, 30 * TICK_PS])
    assert any(b.overflow for b in buffers)
    assert tagger.stream.garbled_records == 1 and tagger.stream.short_records == 1
    assert "inside a record (2 of 4 bytes)" in tagger.last_error
    await tagger.close()
    script.assert_all_consumed()


async def test_channel_map_renumbers_inputs_and_counts_the_unmapped() -> None:
    stream = record(1, (1,)) + record(2, (2,)) + record(3, (3,)) + record(4, (4,))
    tagger, script = tagger_for(
        [(START, stream), (ABORT, b""), (ABORT, b"")], channel_map={4: 1, 3: 2, 1: 4}
    )
    await tagger.connect()
    await tagger.start()
    await tagger.stop()
    assert tags_of(await read_all(tagger)) == ([4, 2, 1], [2000, 6000, 8000])
    assert tagger.stream.unmapped_tags == 1
    await tagger.close()
    script.assert_all_consumed()


async def test_read_times_out_naming_the_tagger_and_start_twice_is_refused() -> None:
    tagger, _ = tagger_for([(START, b""), (ABORT, b""), (ABORT, b"")])
    assert await tagger.read(0.01) is None  # nothing started: nothing to wait for
    with pytest.raises(DeviceError, match="not connected"):
        await tagger.start()
    await tagger.connect()
    await tagger.start()
    with pytest.raises(DeviceError, match="already streaming"):
        await tagger.start()
    with pytest.raises(DeviceTimeout, match=r"tdc1: no tag buffer within 0\.05 s"):
        await tagger.read(0.05)
    await tagger.close()


def test_bad_constructor_values_and_options_are_refused_with_the_name() -> None:
    script = ScriptedTransport([])
    for kwargs, text in (
        ({"threshold_v": 4.0}, "threshold_v"),
        ({"input_level": "ECL"}, "input_level"),
        ({"reference_clock": "gps"}, "reference_clock"),
        ({"channel_map": {5: 1}}, "input 5 is not in 1..4"),
        ({"channel_map": {1: 1, 2: 1}}, "same channel"),
        ({"buffer_duration_s": 0}, "buffer_duration_s"),
        ({"queue_depth": 0}, "queue_depth"),
    ):
        with pytest.raises(InputError, match=text):
            Tdc1TimeTagger("tdc1", script, **kwargs)  # type: ignore[arg-type]
    assert Tdc1TaggerOptions().channel_map == {1: 1, 2: 2, 3: 3, 4: 4}
    assert Tdc1TaggerOptions.model_validate({"channel_map": {"2": "1"}}).channel_map == {2: 1}
    for bad in ({"threshold_v": -3.5}, {"channel_map": {1: 7}}, {"baud": 9600}):
        with pytest.raises(ValidationError):
            Tdc1TaggerOptions.model_validate(bad)


# --- against the emulator --------------------------------------------------------------------


def test_emulator_speaks_the_vendor_scripts_chained_lower_case_commands() -> None:
    emulator = Tdc1Emulator(SimClock(EPOCH))
    assert emulator.respond(b"*IDN?\r").startswith(b"S-Fifteen Instruments,TDC1")  # type: ignore[union-attr]
    assert emulator.respond(b"timestamp;ttl;mode?;level?\r") == b"3\r\n1.000\r\n"
    assert emulator.respond(b"NEG -0.3;level?;time 0;time?") == b"-0.300\r\n0\r\n"
    assert emulator.respond(b"INPKT;time 0;counts?;\r") is None and emulator.acquiring
    assert emulator.epoch_unix_s == EPOCH and emulator.started.is_set()
    assert emulator.respond(b"abort") is None and not emulator.acquiring
    assert emulator.respond(b"FROB 3") is None and emulator.unknown_commands == 1
    assert encode_tdc1_records(np.array([PERIOD + 3]), np.array([0x05])) == record(3, (1, 3))


async def _stream_through(emulator: Tdc1Emulator, tagger: Tdc1TimeTagger) -> None:
    """Feed tags over more than three counter periods, with a quiet spell longer than one."""
    await tagger.connect(timeout_s=2.0)
    epoch = await tagger.start()
    await asyncio.wait_for(emulator.started.wait(), 2.0)
    assert epoch == emulator.epoch_unix_s == EPOCH
    feeds = [
        ([1, 2, 3], [2_000, 4_000, 4_000], 0.2),
        ([4], [300_000_000_000], 0.4),  # past the first wrap (268.4 ms)
        ([], [], 0.9),
        ([1, 2], [950_000_000_000, 951_000_002_000], 1.0),  # 0.55 s quiet: two wraps unseen
    ]
    start = epoch
    for channels, stamps, stop in feeds:
        buffer = TagBuffer(
            np.array(channels, np.uint8), np.array(stamps, np.int64), start, epoch + stop
        )
        await emulator.feed(buffer)
        start = epoch + stop
    await tagger.stop()
    channel, stamp = tags_of(await read_all(tagger))
    assert channel == [c for f in feeds for c in f[0]]
    assert stamp == [s for f in feeds for s in f[1]]
    assert tagger.stream.wraps == 3 and tagger.stream.markers >= 2


async def test_emulator_over_a_real_pty_streams_fed_tags_exactly() -> None:
    clock = SimClock(EPOCH)
    emulator = Tdc1Emulator(clock)
    resource = await emulator.start_pty()
    assert resource.startswith("serial://")
    tagger = Tdc1TimeTagger("tdc1", open_transport(resource), timeout_s=0.5, clock=clock)
    try:
        await _stream_through(emulator, tagger)
    finally:
        await tagger.close()
        await emulator.stop()


async def test_emulator_in_memory_streams_fed_tags_exactly() -> None:
    clock = SimClock(EPOCH)
    emulator = Tdc1Emulator(clock)
    await emulator.start_memory()
    tagger = Tdc1TimeTagger("tdc1", emulator.memory_transport(), timeout_s=0.5, clock=clock)
    try:
        await _stream_through(emulator, tagger)
    finally:
        await tagger.close()
        await emulator.stop()


async def test_emulator_faults_reach_the_driver_as_counted_errors() -> None:
    clock = SimClock(EPOCH)
    emulator = Tdc1Emulator(clock)
    await emulator.start_memory()
    tagger = Tdc1TimeTagger("tdc1", emulator.memory_transport(), timeout_s=0.5, clock=clock)
    await tagger.connect()
    epoch = await tagger.start()
    emulator.tdc1_faults.garble_records = 1
    emulator.tdc1_faults.cut_last_record = True
    stamps = np.array([2_000, 4_000, 6_000], np.int64)
    await emulator.feed(TagBuffer(np.array([1, 2, 3], np.uint8), stamps, epoch, epoch + 0.01))
    await tagger.stop()
    buffers = await read_all(tagger)
    assert tags_of(buffers) == ([2], [4_000])  # first garbled, last cut short
    assert buffers[-1].overflow
    assert tagger.stream.garbled_records == 1 and tagger.stream.short_records == 1
    await tagger.close()
    emulator.tdc1_faults.refuse_timestamp_mode = True
    emulator.mode = 0
    with pytest.raises(DeviceError, match="not 3"):
        await tagger.connect()
    await emulator.stop()


async def test_link_lost_mid_stream_ends_it_and_the_next_start_reconnects() -> None:
    clock = SimClock(EPOCH)
    emulator = Tdc1Emulator(clock)
    resource = await emulator.start_pty()
    tagger = Tdc1TimeTagger(
        "tdc1", open_transport(resource), timeout_s=0.5, clock=clock, reconnect_backoff_s=0.01
    )
    try:
        await tagger.connect()
        epoch = await tagger.start()
        await asyncio.wait_for(emulator.started.wait(), 2.0)
        await emulator.feed(
            TagBuffer(np.array([1], np.uint8), np.array([2_000]), epoch, epoch + 0.2)
        )
        first = await tagger.read(2.0)
        assert first is not None and first.timestamp_ps.tolist() == [2_000]
        await emulator.disconnect()  # the USB cable is pulled
        with pytest.raises(DeviceDisconnected, match=r"^tdc1: "):
            await tagger.read(2.0)
        assert tagger.stream.stream_errors == 1 and not (await tagger.status()).connected
        emulator.started.clear()
        epoch = await tagger.start()
        assert tagger.counters.reconnects == 1
        await asyncio.wait_for(emulator.started.wait(), 2.0)
        await emulator.feed(
            TagBuffer(np.array([3], np.uint8), np.array([8_000]), epoch, epoch + 0.2)
        )
        await tagger.stop()
        assert tags_of(await read_all(tagger)) == ([3], [8_000])
    finally:
        await tagger.close()
        await emulator.stop()
