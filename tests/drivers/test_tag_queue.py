"""The tag buffer queue between a tagger driver's stream reader and `read`."""

from __future__ import annotations

import asyncio

import pytest

from drivers.tag_queue import TagBufferQueue


@pytest.mark.parametrize("passes", range(6))
async def test_a_read_cancelled_as_a_buffer_arrives_is_cancelled_and_keeps_the_buffer(
    passes: int,
) -> None:
    # Python 3.11's wait_for returned the buffer to a read cancelled in the loop pass it landed
    # in: the cancel was lost, and a tagger's read loop told to stop went on reading. Whatever
    # the loop pass the cancel lands in, an accepted cancel wins and the buffer stays queued.
    queue = TagBufferQueue(depth=4)
    reading = asyncio.create_task(queue.get(5.0))
    await asyncio.sleep(0)  # the read waits for a buffer
    await queue.put(None)  # a buffer (here the end marker) lands...
    for _ in range(passes):
        await asyncio.sleep(0)
    if not reading.cancel():  # ...and the reader is told to stop `passes` loop passes later
        assert reading.result() is None and not queue.items  # it had already returned it
        return
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert list(queue.items) == [None]  # nothing lost for the next reader


async def test_a_read_with_nothing_queued_times_out_as_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        await TagBufferQueue(depth=4).get(0.01)
