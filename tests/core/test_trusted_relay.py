"""The pure parts of the trusted relay: XOR and recovery, what the broadcast reveals, key ranges
on the wire, the choice of keys and the checks of a request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.trusted_relay import (
    KeyRange,
    choose_key_ranges,
    format_key_ranges,
    parse_block_list,
    parse_key_ranges,
    recover_key,
    relay_block_id,
    relay_problem,
    xor_keys,
)

BLOCK = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@given(
    st.integers(1, 64).flatmap(
        lambda n: st.tuples(st.binary(min_size=n, max_size=n), st.binary(min_size=n, max_size=n))
    )
)
def test_station_b_recovers_station_a_key_from_the_broadcast(keys: tuple[bytes, bytes]) -> None:
    key_a, key_b = keys
    assert recover_key(xor_keys(key_a, key_b), key_b) == key_a
    assert recover_key(xor_keys(key_a, key_b), key_a) == key_b


def test_the_broadcast_reveals_nothing_about_either_key() -> None:
    # one-time pad: for a uniform key_b every broadcast value is equally likely whatever
    # key_a is, so the XOR's distribution does not depend on key_a (exhaustive on one byte)
    for key_a in range(256):
        broadcasts = sorted(xor_keys(bytes([key_a]), bytes([b]))[0] for b in range(256))
        assert broadcasts == list(range(256))


def test_keys_of_different_lengths_are_refused() -> None:
    with pytest.raises(InputError, match="keys of 2 and 3 bytes"):
        xor_keys(b"ab", b"abc")


@given(st.lists(st.lists(st.integers(0, 40), unique=True).map(sorted), min_size=1, max_size=4),
       st.integers(1, 60))  # fmt: skip
def test_chosen_ranges_are_the_first_available_keys_in_block_order(
    indices: list[list[int]], count: int
) -> None:
    blocks = [f"{i:08x}-d9cb-469f-a165-70867728950e" for i in range(len(indices))]
    available = list(zip(blocks, indices, strict=True))
    chosen = choose_key_ranges(available, count)
    flat = [(b, i) for b, idx in available for i in idx]
    if len(flat) < count:
        assert chosen is None
        return
    assert chosen is not None
    assert [(r.block_id, i) for r in chosen for i in r.indices] == flat[:count]
    assert parse_key_ranges(format_key_ranges(chosen), "keys") == chosen


def test_ranges_join_consecutive_indices() -> None:
    chosen = choose_key_ranges([(BLOCK, [0, 1, 2, 5, 6]), (OTHER, [3])], 6)
    assert chosen == [KeyRange(BLOCK, 0, 3), KeyRange(BLOCK, 5, 2), KeyRange(OTHER, 3, 1)]
    assert format_key_ranges(chosen[:1]) == f"{BLOCK}:0:3"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no key ranges"),
        (f"{BLOCK}:0", "is not block:first:count"),
        ("not-a-uuid:0:1", "is not block:first:count"),
        (f"{BLOCK}:0:0", "holds no key"),
        (f"{BLOCK}:0:2;{BLOCK}:1:1", "key 1 of .* named twice"),
    ],
)
def test_malformed_key_ranges_are_refused_naming_the_field(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=f"keys_a: .*{problem}"):
        parse_key_ranges(text, "keys_a")


def test_block_lists() -> None:
    assert parse_block_list("", "blocks_a") == []
    assert parse_block_list(f"{BLOCK}, {OTHER}", "blocks_a") == [BLOCK, OTHER]
    with pytest.raises(InputError, match="blocks_b: 'x' is not a key id"):
        parse_block_list("x", "blocks_b")
    with pytest.raises(InputError, match="named twice"):
        parse_block_list(f"{BLOCK},{BLOCK}", "blocks_a")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ((1, "a", "b", 512), None),
        ((-1, "a", "b", 512), "relay_id -1 is not a u32"),
        ((1, "a", "a", 512), "both 'a'"),
        ((1, "A!", "b", 512), "station_a 'A!' is not a station name"),
        ((1, "a", "b", 0), "bits 0 is not a positive number"),
        ((1, "a", "b", 300), "not a multiple of the key size 256"),
        ((1, "a", "b", 1 << 25), "above the limit"),
    ],
)
def test_relay_requests_are_checked(args: tuple, problem: str | None) -> None:
    found = relay_problem(*args, 256)
    assert found == problem if problem is None else problem in found


def test_the_relay_block_id_is_the_same_for_both_stations_and_new_per_relay() -> None:
    first = relay_block_id("jinan1", 1, "xinglong", "graz")
    assert first == relay_block_id("jinan1", 1, "xinglong", "graz")
    assert first != relay_block_id("jinan1", 2, "xinglong", "graz")
