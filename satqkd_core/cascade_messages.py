"""Compact wire form of Cascade's parity queries (the `query` bytes of EC_QUERY).

A query row (pass_index, start, stop) used to travel as three int64 (24 bytes). Both ends know
the block structure, and a round's rows are few and spread over the key, so the rows are sent
as unsigned LEB128 varints (7 bits a byte, high bit set on every byte but a value's last):

- format 1, **top-level round**: `1`, then the number of passes P and each pass's top-level
  block size. The rows are every top-level block of every pass but the last block of passes
  >= 1 (its parity follows from pass 0's: `top_level_rows`), rebuilt by the responder from
  its key length; a round of ~2e4 rows costs a few bytes.
- format 2, **bisection rounds**: `2`, then G (passes present), G pairs (pass gap, row count)
  with the passes ascending (the first gap is the pass index, later ones pass - previous - 1),
  then for each row, passes in that order and starts ascending within a pass: the start gap
  (the first row's start, later start - previous start) and stop - start - 1. About 3 bytes a
  row at 2.4e6-bit keys instead of 24.

Rows go on the wire sorted by (pass, start, stop); the corrector keeps `order` (wire row i is
its row order[i]) and puts the answers, which come in wire order, back in its own order, so
its transcript is the same as with the rows in its order. What a row discloses does not
change: the answered parity, and the station's parity through the public query structure
(`satqkd_core.cascade`, leakage). Decoding is strict: a wrong format byte, a truncated or
overlong varint, a value out of range, counts that do not add up, or bytes left over raise
`ProtocolError` naming what was wrong; the responder then validates each row against its key.
"""

from __future__ import annotations

import numba
import numpy as np

from satqkd_core.errors import InputError, ProtocolError

__all__ = [
    "FORMAT_ROWS",
    "FORMAT_TOP_LEVEL",
    "decode_query",
    "decode_query_reference",
    "decode_varints",
    "encode_rows",
    "encode_rows_reference",
    "encode_top_level",
    "encode_varints",
    "top_level_rows",
]

FORMAT_TOP_LEVEL = 1
FORMAT_ROWS = 2
_MAX_VARINT_BYTES = 9  # 63 bits: every value here is below 2^63
_MASK = np.uint64(0x7F)


def top_level_rows(n: int, block_sizes: list[int] | np.ndarray) -> np.ndarray:
    """(k, 3) int64 rows of a first round: every top-level block (pass, start, stop) of every
    pass, in pass then start order, but the last block of passes >= 1 (inferred from pass 0)."""
    sizes = np.asarray(block_sizes, dtype=np.int64)
    if n < 1 or sizes.ndim != 1 or sizes.size < 1 or (sizes < 1).any() or (sizes > n).any():
        raise InputError(f"top-level blocks need n >= 1 and sizes in 1..n, got {n}, {sizes}")
    rows = []
    for p, block in enumerate(sizes.tolist()):
        starts = np.arange(0, n, block, dtype=np.int64)
        if p > 0:
            starts = starts[:-1]
        stops = np.minimum(starts + block, n)
        rows.append(np.stack([np.full(starts.size, p, dtype=np.int64), starts, stops], axis=1))
    return np.ascontiguousarray(np.concatenate(rows))


def encode_varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of each value (int64 >= 0, below 2^63), concatenated."""
    v = np.asarray(values, dtype=np.int64)
    if v.ndim != 1 or (v < 0).any():
        raise InputError("varints encode a 1-D array of non-negative integers")
    u = v.astype(np.uint64)
    lengths = np.ones(u.size, dtype=np.int64)
    for k in range(1, _MAX_VARINT_BYTES):
        lengths += u >= np.uint64(1 << (7 * k))
    ends = np.cumsum(lengths)
    first = ends - lengths
    out = np.zeros(int(ends[-1]) if u.size else 0, dtype=np.uint8)
    for k in range(_MAX_VARINT_BYTES):
        has = lengths > k
        if not has.any():
            break
        byte = (u[has] >> np.uint64(7 * k)) & _MASK
        more = (lengths[has] > k + 1).astype(np.uint64) << np.uint64(7)
        out[first[has] + k] = (byte | more).astype(np.uint8)
    return out.tobytes()


def decode_varints(data: bytes, what: str = "query") -> np.ndarray:
    """Values (int64) of concatenated unsigned LEB128 varints; ProtocolError if the bytes end
    inside a value, a value is overlong (more than 9 bytes, or a needless trailing zero byte)."""
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(b < 0x80)
    if ends.size == 0 or ends[-1] != b.size - 1:
        raise ProtocolError(f"{what}: the bytes end inside a varint")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if (lengths > _MAX_VARINT_BYTES).any():
        raise ProtocolError(f"{what}: a varint longer than {_MAX_VARINT_BYTES} bytes")
    if ((lengths > 1) & (b[ends] == 0)).any():
        raise ProtocolError(f"{what}: an overlong varint (a needless zero byte)")
    values = np.zeros(ends.size, dtype=np.uint64)
    for k in range(int(lengths.max())):
        has = lengths > k
        values[has] |= (b[starts[has] + k].astype(np.uint64) & _MASK) << np.uint64(7 * k)
    return values.astype(np.int64)


def encode_top_level(block_sizes: list[int] | np.ndarray) -> bytes:
    """Format 1: the first round's query, all top-level blocks, by its block sizes."""
    sizes = np.asarray(block_sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size < 1 or (sizes < 1).any():
        raise InputError(f"block sizes must be >= 1, one per pass, got {sizes}")
    return bytes([FORMAT_TOP_LEVEL]) + encode_varints(np.r_[sizes.size, sizes])


def encode_rows(rows: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Format 2: (bytes, order) for a round's rows (k >= 1, 0 <= start < stop < 2^31,
    pass < 2^31); wire row i is rows[order[i]] (rows sorted by pass and start, ties kept in
    their order), and the answers come back in wire order. One numba kernel
    (`encode_rows_reference` is the same in numpy steps)."""
    r = _validated_rows(rows)
    out, order = _encode_rows_kernel(r)
    return out.tobytes(), order


def encode_planned_rows(rows: np.ndarray) -> tuple[bytes, np.ndarray]:
    """`encode_rows` for rows the corrector planned itself (C-contiguous int64, k >= 1,
    0 <= start < stop <= n < 2^31, pass < 2^31): the same bytes and order, without the
    checks a caller's rows need."""
    out, order = _encode_rows_kernel(rows)
    return out.tobytes(), order


def encode_rows_reference(rows: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Reference of `encode_rows` (numpy steps)."""
    r = _validated_rows(rows)
    order = np.lexsort((r[:, 1], r[:, 0]))  # stable: ties keep their order
    s = r[order]
    passes, counts = np.unique(s[:, 0], return_counts=True)
    pass_gaps = np.diff(passes, prepend=-1) - 1
    new_pass = np.r_[True, s[1:, 0] != s[:-1, 0]]
    start_gaps = np.where(new_pass, s[:, 1], s[:, 1] - np.r_[0, s[:-1, 1]])
    header = np.r_[passes.size, np.stack([pass_gaps, counts], axis=1).ravel()]
    body = np.stack([start_gaps, s[:, 2] - s[:, 1] - 1], axis=1).ravel()
    return bytes([FORMAT_ROWS]) + encode_varints(np.r_[header, body]), order


def _validated_rows(rows: np.ndarray) -> np.ndarray:
    r = np.ascontiguousarray(rows, dtype=np.int64)
    if r.ndim != 2 or r.shape[1] != 3 or r.shape[0] == 0:
        raise InputError(f"query rows must have shape (k >= 1, 3), got {r.shape}")
    if (r[:, 0] < 0).any() or (r[:, 1] < 0).any() or (r[:, 2] <= r[:, 1]).any():
        raise InputError("query rows need pass >= 0 and 0 <= start < stop")
    if (r[:, 0] >= 2**31).any() or (r[:, 2] >= 2**31).any():
        raise InputError("query rows need pass and stop below 2^31")
    return r


@numba.njit(cache=True, inline="always")
def _put_varint(out: np.ndarray, pos: int, value: int) -> int:
    while value >= 0x80:
        out[pos] = (value & 0x7F) | 0x80
        value >>= 7
        pos += 1
    out[pos] = value
    return pos + 1


@numba.njit(cache=True)
def _encode_rows_kernel(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel of `encode_rows` (validated rows)."""
    k = rows.shape[0]
    keys = np.empty(k, dtype=np.int64)
    for i in range(k):
        keys[i] = (rows[i, 0] << 32) | rows[i, 1]
    order = np.argsort(keys, kind="mergesort")
    groups = 1
    for i in range(1, k):
        groups += rows[order[i], 0] != rows[order[i - 1], 0]
    out = np.empty(1 + 5 * (1 + 2 * groups + 2 * k), dtype=np.uint8)  # values < 2^32
    out[0] = 2  # FORMAT_ROWS
    pos = _put_varint(out, 1, groups)
    previous, count = -1, 0
    for i in range(k + 1):
        p = rows[order[i], 0] if i < k else -2
        if i > 0 and p != previous:
            pos = _put_varint(out, pos, count)
            count = 0
        if i < k and p != previous:
            pos = _put_varint(out, pos, p - previous - 1)
            previous = p
        count += 1
    previous_pass, previous_start = -1, 0
    for i in range(k):
        row = order[i]
        start = rows[row, 1]
        gap = start if rows[row, 0] != previous_pass else start - previous_start
        pos = _put_varint(out, pos, gap)
        pos = _put_varint(out, pos, rows[row, 2] - start - 1)
        previous_pass, previous_start = rows[row, 0], start
    return out[:pos], order


def decode_query(data: bytes, n: int, passes: int) -> np.ndarray:
    """(k, 3) int64 rows of a `query` (either format) for a key of n bits and `passes` passes,
    in wire order; ProtocolError naming what is malformed. Ranges are checked against n and
    passes here; the responder checks them again with every other row rule. Format 2 is
    decoded by one numba kernel (`decode_query_reference` is the same in numpy steps)."""
    raw = _query_bytes(data)
    if raw[0] == FORMAT_ROWS:
        body = np.frombuffer(raw, dtype=np.uint8)[1:]
        rows, code, a, b = _decode_rows_kernel(body, n, passes)
        if code:
            raise ProtocolError(_rows_error(code, a, b, n, passes))
        return rows
    return decode_query_reference(raw, n, passes)


def decode_query_reference(data: bytes, n: int, passes: int) -> np.ndarray:
    """Reference of `decode_query` (numpy steps)."""
    raw = _query_bytes(data)
    values = decode_varints(raw[1:])
    if raw[0] == FORMAT_TOP_LEVEL:
        return _decode_top_level(values, n, passes)
    if raw[0] == FORMAT_ROWS:
        rows, code, a, b = _decode_rows_reference(values, n, passes)
        if code:
            raise ProtocolError(_rows_error(code, a, b, n, passes))
        return rows
    raise ProtocolError(
        f"query format {raw[0]} is unknown ({FORMAT_TOP_LEVEL}: top level, {FORMAT_ROWS}: rows)"
    )


def _query_bytes(data: object) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"query must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise ProtocolError("query is empty")
    return raw


def _decode_top_level(values: np.ndarray, n: int, passes: int) -> np.ndarray:
    if values.size < 1 or values[0] != passes or values.size != passes + 1:
        raise ProtocolError(
            f"top-level query must give {passes} block sizes (one per pass), got "
            f"{values.size - 1} values for {values[0] if values.size else 'no'} passes"
        )
    sizes = values[1:]
    if (sizes < 1).any() or (sizes > n).any():
        raise ProtocolError(f"top-level block sizes must lie in 1..{n}, got {sizes.tolist()}")
    return top_level_rows(n, sizes)


# what is wrong with a format-2 query (codes of the decoders below, details a and b)
_END_INSIDE, _TOO_LONG, _OVERLONG = 1, 2, 3
_NO_GROUPS, _GROUPS, _PASS, _COUNT, _BODY, _VALUE, _PAST_END = 4, 5, 6, 7, 8, 9, 10


def _rows_error(code: int, a: int, b: int, n: int, passes: int) -> str:
    if code == _END_INSIDE:
        return "query: the bytes end inside a varint"
    if code == _TOO_LONG:
        return f"query: a varint longer than {_MAX_VARINT_BYTES} bytes"
    if code == _OVERLONG:
        return "query: an overlong varint (a needless zero byte)"
    messages = {
        _NO_GROUPS: "no pass count",
        _GROUPS: f"{a} passes given, expected 1..{passes} with counts",
        _PASS: f"pass index outside 0..{passes - 1}",
        _COUNT: f"a pass's row count outside 1..{a}",
        _BODY: f"{a} rows need {2 * a} values after the header, got {b}",
        _VALUE: f"a start gap or length outside 0..{n - 1}",
        _PAST_END: f"a range ends after the key's {n} bits",
    }
    return f"query rows: {messages[code]}"


def _decode_rows_reference(
    values: np.ndarray, n: int, passes: int
) -> tuple[np.ndarray, int, int, int]:
    """(rows, code, a, b) of format 2's values: code 0 and the rows, or what is wrong."""
    nothing = np.zeros((0, 3), dtype=np.int64)
    if values.size < 1:
        return nothing, _NO_GROUPS, 0, 0
    groups = int(values[0])
    if not 1 <= groups <= passes or values.size < 1 + 2 * groups:
        return nothing, _GROUPS, groups, 0
    header = values[1 : 1 + 2 * groups].reshape(groups, 2)
    if (header[:, 0] >= passes).any():
        return nothing, _PASS, 0, 0
    pass_index = np.cumsum(header[:, 0] + 1) - 1
    counts = header[:, 1]
    if pass_index[-1] >= passes:
        return nothing, _PASS, 0, 0
    if (counts < 1).any() or (counts > values.size).any():  # each row takes two values
        return nothing, _COUNT, values.size, 0
    total = int(counts.sum())
    body = values[1 + 2 * groups :]
    if body.size != 2 * total:
        return nothing, _BODY, total, body.size
    pairs = body.reshape(total, 2)
    if (pairs >= n).any():
        return nothing, _VALUE, 0, 0
    first = np.zeros(total, dtype=np.bool_)
    first[np.cumsum(counts) - counts] = True
    # starts: a cumulative sum of the gaps restarted at each pass's first row
    sums = np.cumsum(pairs[:, 0])
    base = np.where(first, sums - pairs[:, 0], 0)
    starts = sums - np.maximum.accumulate(base)
    rows = np.empty((total, 3), dtype=np.int64)
    rows[:, 0] = np.repeat(pass_index, counts)
    rows[:, 1] = starts
    rows[:, 2] = starts + pairs[:, 1] + 1
    if (rows[:, 2] > n).any():
        return nothing, _PAST_END, 0, 0
    return rows, 0, 0, 0


@numba.njit(cache=True)
def _decode_rows_kernel(b: np.ndarray, n: int, passes: int) -> tuple[np.ndarray, int, int, int]:
    """Kernel of `_decode_rows_reference` on the bytes after the format byte (the varints
    decoded here too, with `decode_varints`' checks in its order)."""
    nothing = np.zeros((0, 3), dtype=np.int64)
    size = b.shape[0]
    if size > 0 and b[size - 1] >= 0x80:
        return nothing, 1, 0, 0  # _END_INSIDE
    values = np.empty(size, dtype=np.int64)
    count = 0
    i = 0
    overlong = False
    while i < size:
        start = i
        value = np.uint64(0)
        shift = np.uint64(0)
        while True:
            byte = b[i]
            i += 1
            if i - start > 9:
                return nothing, 2, 0, 0  # _TOO_LONG
            value |= np.uint64(byte & 0x7F) << shift
            if byte < 0x80:
                overlong |= byte == 0 and i - start > 1
                break
            shift += np.uint64(7)
        values[count] = np.int64(value)
        count += 1
    if overlong:
        return nothing, 3, 0, 0  # _OVERLONG
    if count < 1:
        return nothing, 4, 0, 0  # _NO_GROUPS
    groups = values[0]
    if groups < 1 or groups > passes or count < 1 + 2 * groups:
        return nothing, 5, groups, 0  # _GROUPS
    p = -1
    for g in range(groups):
        if values[1 + 2 * g] >= passes:
            return nothing, 6, 0, 0  # _PASS
        p += values[1 + 2 * g] + 1
    if p >= passes:
        return nothing, 6, 0, 0  # _PASS
    total = 0
    for g in range(groups):
        if values[2 + 2 * g] < 1 or values[2 + 2 * g] > count:
            return nothing, 7, count, 0  # _COUNT
        total += values[2 + 2 * g]
    if count - 1 - 2 * groups != 2 * total:
        return nothing, 8, total, count - 1 - 2 * groups  # _BODY
    body = 1 + 2 * groups
    for j in range(2 * total):
        if values[body + j] >= n:
            return nothing, 9, 0, 0  # _VALUE
    rows = np.empty((total, 3), dtype=np.int64)
    r = 0
    p = -1
    past_end = False
    for g in range(groups):
        p += values[1 + 2 * g] + 1
        start = 0
        for j in range(values[2 + 2 * g]):
            start = values[body + 2 * r] if j == 0 else start + values[body + 2 * r]
            rows[r, 0] = p
            rows[r, 1] = start
            rows[r, 2] = start + values[body + 2 * r + 1] + 1
            past_end |= rows[r, 2] > n
            r += 1
    if past_end:
        return nothing, 10, 0, 0  # _PAST_END
    return rows, 0, 0, 0
