"""TDC1 timestamp records: decoding chunk by chunk (vectorised), and the channel table.

Record layout (pyS15, `S15lib/instruments/usb_counter_fpga.py`; docs/tagger-protocol.md): one
32-bit little-endian word per record, bits 31..5 a 27-bit counter of 2 ns ticks, bit 4 set for
a marker (not an event), bits 3..0 the inputs 4..1 that fired in that tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from satqkd_core.errors import InputError

__all__ = [
    "TDC1_COUNTER_PERIOD_TICKS",
    "TDC1_TICK_PS",
    "Tdc1RecordDecoder",
    "Tdc1StreamCounters",
    "channel_lookup_table",
]

TDC1_TICK_PS = 2000
TDC1_COUNTER_PERIOD_TICKS = 1 << 27
_MARKER_BIT = 0x10
_INPUT_BITS = 0x0F


def channel_lookup_table(mapping: Mapping[int, int], inputs: range, what: str) -> np.ndarray:
    """Get a uint8 table input -> channel 1..4 (0: not mapped); InputError for a bad mapping."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise InputError(f"{what} must be a non-empty mapping of input -> channel 1..4")
    table = np.zeros(inputs.stop, dtype=np.uint8)
    for key, value in mapping.items():
        for label, number, allowed in (("input", key, inputs), ("channel", value, range(1, 5))):
            if isinstance(number, bool) or not isinstance(number, int) or number not in allowed:
                raise InputError(
                    f"{what}: {label} {number!r} is not in {allowed.start}..{allowed.stop - 1}"
                )
        table[key] = value
    if len(set(mapping.values())) != len(mapping):
        raise InputError(f"{what}: two inputs map to the same channel: {dict(mapping)}")
    return table


@dataclass
class Tdc1StreamCounters:
    """What the driver has seen of the timestamp stream since connect."""

    acquisitions: int = 0
    records: int = 0
    markers: int = 0
    tags: int = 0
    wraps: int = 0
    buffers: int = 0
    garbled_records: int = 0
    short_records: int = 0
    unmapped_tags: int = 0
    stream_errors: int = 0
    implausible_buffers: int = 0


class Tdc1RecordDecoder:
    """Decode TDC1 timestamp records chunk by chunk: unwrapped 2 ns ticks and input numbers.

    State carried between chunks: the bytes of an incomplete record, the counter periods seen
    and the last valid counter value. A record that is neither a marker nor an event on at
    least one input is garbled: it is counted and left out of the unwrapping.
    """

    def __init__(self, counters: Tdc1StreamCounters | None = None) -> None:
        self.counters = counters if counters is not None else Tdc1StreamCounters()
        self.reset()

    def reset(self) -> None:
        """Control: forget the stream (a new acquisition starts at period 0)."""
        self._carry = b""
        self._periods = 0
        self._last_counter: int | None = None
        self.last_tick: int | None = None

    @property
    def pending_bytes(self) -> int:
        """Get: bytes of an incomplete record waiting for the rest of it."""
        return len(self._carry)

    def take_incomplete(self) -> bytes:
        """Control: drop and return the bytes of an incomplete record (the stream ended)."""
        carry, self._carry = self._carry, b""
        return carry

    def decode(self, data: bytes) -> tuple[np.ndarray, np.ndarray, int]:
        """Get (input 1..4 uint8, tick int64, garbled record count) for the events in `data`.

        A record with several input bits set gives one tag per input, inputs ascending."""
        buffer = self._carry + data if self._carry else data
        n = len(buffer) // 4
        self._carry = bytes(buffer[4 * n :])
        words = np.frombuffer(buffer, dtype="<u4", count=n)
        pattern = (words & _INPUT_BITS).astype(np.uint8)
        marker = (words & _MARKER_BIT) != 0
        valid = marker | (pattern != 0)
        garbled = int(n - np.count_nonzero(valid))
        counter = (words[valid] >> 5).astype(np.int64)
        if counter.size == 0:
            return np.zeros(0, np.uint8), np.zeros(0, np.int64), garbled
        previous = np.empty_like(counter)
        previous[0] = counter[0] if self._last_counter is None else self._last_counter
        previous[1:] = counter[:-1]
        periods = self._periods + np.cumsum(counter < previous)
        tick = periods * TDC1_COUNTER_PERIOD_TICKS + counter
        self.counters.wraps += int(periods[-1]) - self._periods
        self._periods = int(periods[-1])
        self._last_counter = int(counter[-1])
        self.last_tick = int(tick[-1])
        self.counters.records += int(counter.size)
        self.counters.markers += int(np.count_nonzero(marker))
        event = ~marker[valid]
        bits = (pattern[valid][event, None] >> np.arange(4, dtype=np.uint8)) & 1
        rows, columns = np.nonzero(bits)  # row-major: time order, then input order
        return (columns + 1).astype(np.uint8), tick[event][rows], garbled
