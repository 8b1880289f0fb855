"""Drivers refuse what an instrument reports when it cannot be true (reliability finding 5):
a mirror travel range with min >= max or an absurd span, a gimbal resolution of zero or limits
out of order, tagger buffers whose stop is before their start or whose tags lie outside them.
Each is a `DeviceError` naming the instrument, the value and what was expected; nothing of a
refused buffer is delivered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers.fsm import PiGcsMirror
from drivers.gimbal import PtuGimbal
from drivers.interfaces import DeviceError
from drivers.time_tagger_replay import ReplayFileError, ReplayTimeTagger
from drivers.time_tagger_tcp import DEFAULT_TAG_SLACK_PS, TcpTimeTagger
from drivers.time_tagger_tdc1 import Tdc1TimeTagger
from drivers.transport import ScriptedTransport
from satqkd_core.errors import InputError
from satqkd_runtime.clock import SimClock
from sim_backends.emulators.fsm import IDENTITY
from tests.drivers.test_time_tagger_replay import t2, write_ptu_t2
from tests.drivers.test_time_tagger_tcp import EPOCH_REPLY, PS, end_frame, frame
from tests.drivers.test_time_tagger_tdc1 import ABORT, HELLO, START, record

# --- fast-steering mirror (PI GCS) -------------------------------------------------------------

GCS_HELLO = [(b"*IDN?\n", IDENTITY.encode() + b"\n"), (b"ERR?\n", b"0\n")]


def _gcs_travel(low: bytes, high: bytes) -> ScriptedTransport:
    return ScriptedTransport([*GCS_HELLO, (b"TMN? A B\n", low), (b"TMX? A B\n", high)], name="gcs")


async def test_mirror_travel_with_min_equal_to_max_is_refused_at_connect() -> None:
    transport = _gcs_travel(b"A=-2.500000 \nB=1.000000\n", b"A=2.500000 \nB=1.000000\n")
    mirror = PiGcsMirror("fsm", transport, timeout_s=0.2)
    with pytest.raises(DeviceError) as caught:
        await mirror.connect(timeout_s=1.0)
    message = str(caught.value)
    assert message.startswith("fsm") and "\n" not in message
    assert "axis B" in message and "1.0 .. TMX? 1.0" in message and "min < max" in message
    assert mirror.counters.instrument_errors == 1
    assert not transport.connected
    with pytest.raises(Exception, match="travel range unknown"):
        await mirror.travel_range()


async def test_mirror_travel_with_min_above_max_is_refused_at_connect() -> None:
    transport = _gcs_travel(b"A=2.500000 \nB=-2.000000\n", b"A=-2.500000 \nB=2.000000\n")
    mirror = PiGcsMirror("fsm", transport, timeout_s=0.2)
    with pytest.raises(DeviceError, match=r"fsm .*axis A: TMN\? 2.5 \.\. TMX\? -2.5"):
        await mirror.connect(timeout_s=1.0)


async def test_mirror_travel_span_beyond_any_tip_tilt_mirror_is_refused() -> None:
    # 200 mrad each way: a 400 000 urad span, no piezo tip/tilt platform travels that far
    transport = _gcs_travel(b"A=-200.000000 \nB=-2.000000\n", b"A=200.000000 \nB=2.000000\n")
    mirror = PiGcsMirror("fsm", transport, timeout_s=0.2)
    with pytest.raises(DeviceError, match=r"fsm .*axis A.*span under 100000 urad"):
        await mirror.connect(timeout_s=1.0)


async def test_mirror_travel_that_is_not_finite_is_refused() -> None:
    transport = _gcs_travel(b"A=nan \nB=-2.000000\n", b"A=2.500000 \nB=2.000000\n")
    mirror = PiGcsMirror("fsm", transport, timeout_s=0.2)
    with pytest.raises(DeviceError, match=r"fsm .*TMN\?.*not finite"):
        await mirror.connect(timeout_s=1.0)


async def test_mirror_with_a_plausible_travel_still_connects() -> None:
    transport = _gcs_travel(b"A=-2.500000 \nB=-2.000000\n", b"A=2.500000 \nB=2.000000\n")
    mirror = PiGcsMirror("fsm", transport, timeout_s=0.2)
    await mirror.connect(timeout_s=1.0)
    travel = await mirror.travel_range()
    assert (travel.tip_min_urad, travel.tip_max_urad) == (-2500.0, 2500.0)


# --- gimbal (PTU) ------------------------------------------------------------------------------

PTU_HELLO = [
    (b"ED\n", b"*\r\n"),
    (b"FT\n", b"*\r\n"),
    (b"V\n", b"* Pan-Tilt Controller v3.4.3\r\n"),
]
PTU_RESOLUTION = [(b"PR\n", b"* 46.2857\r\n"), (b"TR\n", b"* 46.2857\r\n")]
PTU_LIMITS = [
    (b"PN\n", b"* -14000\r\n"),
    (b"PX\n", b"* 14000\r\n"),
    (b"TN\n", b"* -700\r\n"),
    (b"TX\n", b"* 7000\r\n"),
]


async def test_gimbal_reporting_zero_resolution_is_refused_at_connect() -> None:
    transport = ScriptedTransport(
        [*PTU_HELLO, (b"PR\n", b"* 0\r\n"), *PTU_RESOLUTION[1:], *PTU_LIMITS], name="ptu"
    )
    gimbal = PtuGimbal("gimbal", transport, timeout_s=0.2)
    with pytest.raises(DeviceError) as caught:
        await gimbal.connect(timeout_s=1.0)
    message = str(caught.value)
    assert message.startswith("gimbal") and "\n" not in message
    assert "resolution 0.0 arcsec/count (PR)" in message and "finite value > 0" in message
    assert gimbal.counters.instrument_errors == 1
    assert not transport.connected


async def test_gimbal_reporting_negative_resolution_is_refused_at_connect() -> None:
    transport = ScriptedTransport(
        [*PTU_HELLO, PTU_RESOLUTION[0], (b"TR\n", b"* -46.2857\r\n"), *PTU_LIMITS], name="ptu"
    )
    gimbal = PtuGimbal("gimbal", transport, timeout_s=0.2)
    with pytest.raises(DeviceError, match=r"gimbal .*resolution -46.2857 arcsec/count \(TR\)"):
        await gimbal.connect(timeout_s=1.0)


async def test_gimbal_limits_out_of_order_are_refused_at_connect() -> None:
    reversed_tilt = [*PTU_LIMITS[:2], (b"TN\n", b"* 7000\r\n"), (b"TX\n", b"* -700\r\n")]
    transport = ScriptedTransport([*PTU_HELLO, *PTU_RESOLUTION, *reversed_tilt], name="ptu")
    gimbal = PtuGimbal("gimbal", transport, timeout_s=0.2)
    with pytest.raises(DeviceError, match=r"gimbal .*tilt limits 7000 \.\. -700 counts.*min < max"):
        await gimbal.connect(timeout_s=1.0)
    assert gimbal.counters.instrument_errors == 1


async def test_gimbal_limits_read_again_out_of_order_are_refused_and_not_kept() -> None:
    equal_pan = [(b"PN\n", b"* 500\r\n"), (b"PX\n", b"* 500\r\n"), *PTU_LIMITS[2:]]
    transport = ScriptedTransport(
        [*PTU_HELLO, *PTU_RESOLUTION, *PTU_LIMITS, *equal_pan], name="ptu"
    )
    gimbal = PtuGimbal("gimbal", transport, timeout_s=0.2)
    await gimbal.connect(timeout_s=1.0)
    with pytest.raises(DeviceError, match=r"gimbal .*pan limits 500 \.\. 500 counts"):
        await gimbal.limits()
    # the limits read at connect still guard moves
    assert gimbal._limits_from_counts().az_max_deg == pytest.approx(14000 * 46.2857 / 3600)
    transport.assert_all_consumed()


# --- TT/1 tagger over TCP ----------------------------------------------------------------------

TT1_HELLO = [(b"*IDN?\n", b"OK satqkd,TT-EMU-8,0001,1.0\n"), (b"CHAN?\n", b"OK 8\n")]


async def _tt1_stream(frames: bytes, tag_slack_ps: int = 0) -> TcpTimeTagger:
    transport = ScriptedTransport([*TT1_HELLO, (b"START\n", EPOCH_REPLY + frames)], name="tt1")
    tagger = TcpTimeTagger(
        "tagger",
        transport,
        reply_timeout_s=0.2,
        reconnect_backoff_s=0.001,
        tag_slack_ps=tag_slack_ps,
    )
    await tagger.connect()
    await tagger.start()
    return tagger


async def test_tcp_tagger_frame_with_stop_before_start_is_refused_not_delivered() -> None:
    tagger = await _tt1_stream(frame(0, PS, PS // 2, [(1, PS)]) + end_frame(1, PS))
    with pytest.raises(DeviceError) as caught:
        await tagger.read(1.0)
    message = str(caught.value)
    assert message.startswith("tagger: implausible frame 0 refused") and "\n" not in message
    assert f"stop {PS // 2} ps is before start {PS} ps" in message
    assert tagger.counters.implausible_frames == 1
    assert tagger.counters.frames == 0 and tagger.counters.tags == 0  # nothing delivered
    await tagger.close()


async def test_tcp_tagger_frame_with_a_tag_outside_its_interval_is_refused() -> None:
    good = frame(0, 0, PS, [(1, 10), (2, PS)])  # a tag at stop is still inside
    bad = frame(1, PS, 2 * PS, [(1, PS + 5), (3, 3 * PS)])
    tagger = await _tt1_stream(good + bad + end_frame(2, 2 * PS))
    first = await tagger.read(1.0)
    assert first is not None and first.timestamp_ps.tolist() == [10, PS]
    with pytest.raises(DeviceError, match=rf"tagger: implausible frame 1 .*tag at {3 * PS} ps"):
        await tagger.read(1.0)
    assert tagger.counters.implausible_frames == 1 and tagger.counters.frames == 1
    await tagger.close()


async def test_tcp_tagger_frame_with_a_tag_before_its_interval_is_refused() -> None:
    tagger = await _tt1_stream(frame(0, PS, 2 * PS, [(1, PS - 1)]) + end_frame(1, 2 * PS))
    with pytest.raises(DeviceError, match=rf"tag at {PS - 1} ps outside its interval"):
        await tagger.read(1.0)
    assert tagger.counters.implausible_frames == 1
    await tagger.close()


async def test_tcp_tagger_default_slack_takes_light_time_late_tags_but_not_wild_ones() -> None:
    # the simulation stamps a frame's tags with the light time added: ms after its stop
    late = frame(0, 0, PS, [(1, PS + 3_000_000_000)])
    wild = frame(1, PS, 2 * PS, [(1, 3600 * PS)])  # an hour away from its interval
    tagger = await _tt1_stream(late + wild, tag_slack_ps=DEFAULT_TAG_SLACK_PS)
    assert tagger.tag_slack_ps == DEFAULT_TAG_SLACK_PS
    first = await tagger.read(1.0)
    assert first is not None and first.timestamp_ps.tolist() == [PS + 3_000_000_000]
    with pytest.raises(DeviceError, match=rf"implausible frame 1 .*tag at {3600 * PS} ps"):
        await tagger.read(1.0)
    assert tagger.counters.implausible_frames == 1
    await tagger.close()
    with pytest.raises(InputError, match="tag_slack_ps"):
        TcpTimeTagger("tagger", ScriptedTransport([]), tag_slack_ps=-1)


# --- TDC1 --------------------------------------------------------------------------------------


async def test_tdc1_tags_before_their_buffer_start_are_refused_not_delivered() -> None:
    # counter 10 once more after the buffer [0, 11) ticks went out: a tick the unit already
    # reported, so the tag at tick 10 lies before the next buffer's start
    replay = record(10, (2,)) + record(12, (3,))
    script = ScriptedTransport(
        [
            *HELLO,
            (START, record(10, (1,))),
            (ABORT, replay),
            (ABORT, b""),  # the refusal aborts the stream itself
            (ABORT, b""),  # close
        ],
        name="tdc1",
    )
    tagger = Tdc1TimeTagger(
        "tdc1",
        script,
        timeout_s=0.2,
        clock=SimClock(1_700_000_000.0),
        drain_quiet_s=0.01,
        buffer_duration_s=0.02,
    )
    await tagger.connect(timeout_s=1.0)
    await tagger.start()
    first = await tagger.read(1.0)
    assert first is not None and first.timestamp_ps.tolist() == [10 * 2000]
    await tagger.stop()
    with pytest.raises(DeviceError) as caught:
        await tagger.read(1.0)
    message = str(caught.value)
    assert message.startswith("tdc1") and "\n" not in message
    assert "implausible buffer refused: tag at tick 10 outside the buffer's ticks 11..13" in message
    assert tagger.stream.implausible_buffers == 1 and tagger.stream.tags == 1
    await tagger.close()
    script.assert_all_consumed()


# --- PTU replay --------------------------------------------------------------------------------


async def test_replay_tags_outside_their_window_are_refused_not_delivered(tmp_path: Path) -> None:
    # 5 ps units: a tag at 500 ps, then one at 50 ps (time ran backwards), then one at 2000 ps
    path = write_ptu_t2(tmp_path / "backwards.ptu", [t2(0, 0, 100), t2(0, 0, 10), t2(0, 0, 400)])
    tagger = ReplayTimeTagger("replay", path=path, buffer_duration_s=1e-10, chunk_records=1)
    await tagger.connect()
    await tagger.start()
    delivered = []
    with pytest.raises(ReplayFileError) as caught:
        while (buffer := await tagger.read(1.0)) is not None:
            delivered.append(buffer)
    message = str(caught.value)
    assert isinstance(caught.value, DeviceError)
    assert message.startswith("replay: replay file") and "\n" not in message
    assert "tag at 50 ps outside the window 500..600 ps" in message
    assert tagger.counters.refused_buffers == 1
    stamps = np.concatenate([b.timestamp_ps for b in delivered]) if delivered else []
    assert 50 not in list(stamps)
    for buffer in delivered:
        assert buffer.start_unix_s <= buffer.stop_unix_s
