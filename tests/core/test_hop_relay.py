"""Hop-by-hop relay through trusted nodes (satqkd_core.hop_relay)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.hop_relay import check_hops, link_of, one_time_pad, relay_along, route

LINE = [("graz", "vienna"), ("vienna", "linz"), ("linz", "user")]


def test_route_takes_fewest_hops_and_the_same_one_from_either_end() -> None:
    links = [*LINE, ("graz", "shortcut"), ("shortcut", "user")]
    assert route(links, "graz", "user") == ("graz", "shortcut", "user")
    assert route(links, "user", "graz") == ("user", "shortcut", "graz")
    assert route(LINE, "graz", "user") == ("graz", "vienna", "linz", "user")


def test_route_without_a_path_names_the_ends() -> None:
    with pytest.raises(InputError, match="no fibre route from 'graz' to 'island'"):
        route([*LINE, ("island", "rock")], "graz", "island")
    with pytest.raises(InputError, match="'nowhere' has no fibre link"):
        route(LINE, "graz", "nowhere")


def test_a_key_crosses_three_hops_equal_at_both_ends() -> None:
    key = os.urandom(32)
    path = route(LINE, "graz", "user")
    pads = [(pad, pad) for pad in (os.urandom(32) for _ in range(3))]
    received, records = relay_along(key, path, pads)
    assert received == key
    assert [(r.sender, r.receiver, r.consumed_bits) for r in records] == [
        ("graz", "vienna", 256),
        ("vienna", "linz", 256),
        ("linz", "user", 256),
    ]
    # the fibre carries ciphertext only: none of it is the key
    assert all(r.ciphertext_sha256 != records[0].ciphertext_sha256 for r in records[1:])


def test_pools_out_of_step_give_a_wrong_key_the_caller_sees() -> None:
    key = os.urandom(32)
    pads = [(os.urandom(32), os.urandom(32))]
    received, _ = relay_along(key, ("a", "b"), pads)
    assert received != key


def test_not_enough_link_key_refused_with_the_hop_and_shortfall() -> None:
    path = route(LINE, "graz", "user")
    available = {link_of(*hop): 1024 for hop in LINE}
    assert check_hops(path, 1024, available) is None
    available[link_of("linz", "vienna")] = 512
    refusal = check_hops(path, 1024, available)
    assert refusal is not None
    assert refusal.reason == (
        "not enough link key on hop vienna-linz: 512 bits available, 1024 needed"
    )


def test_a_pad_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(InputError, match="must match"):
        one_time_pad(b"\x00" * 4, b"\x00" * 3)


@given(st.binary(min_size=1, max_size=64), st.data())
def test_one_time_pad_is_its_own_inverse(data: bytes, draw: st.DataObject) -> None:
    pad = draw.draw(st.binary(min_size=len(data), max_size=len(data)))
    assert one_time_pad(one_time_pad(data, pad), pad) == data
