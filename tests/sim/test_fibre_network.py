"""The fibre trusted-node network model (sim_backends.fibre_network)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sim_backends.fibre_network import FibreLinkSpec, FibreNetwork, FibreRefused

T0 = 1_796_000_000.0
NODES = ("graz", "vienna", "linz", "user")


def _network(tmp_path: Path, rate_bps: float = 1000.0, capacity: int = 8192) -> FibreNetwork:
    links = [
        FibreLinkSpec(a, b, rate_bps, capacity)
        for a, b in (("graz", "vienna"), ("vienna", "linz"), ("linz", "user"))
    ]
    stores = {node: tmp_path / node for node in NODES}
    return FibreNetwork(links, stores, seed=5, start_unix_s=T0)


def test_pools_fill_at_the_link_rate_up_to_their_capacity(tmp_path: Path) -> None:
    net = _network(tmp_path)
    net.advance_to(T0 + 1.0)  # 1000 bits made: three whole 256-bit keys
    assert net.pool_bits("graz", "vienna") == 768
    net.advance_to(T0 + 2.0)  # the fraction carries over: 2000 bits -> 7 keys
    assert net.pool_bits("vienna", "graz") == 1792
    net.advance_to(T0 + 100.0)
    assert net.pool_bits("linz", "user") == 8192
    net.close()


def test_a_key_crosses_three_hops_and_each_pool_gives_exactly_its_length(tmp_path: Path) -> None:
    net = _network(tmp_path)
    net.advance_to(T0 + 100.0)
    before = {link: net.pool_bits(*link) for link in net.links}
    key = os.urandom(64)  # 512 bits
    delivery = net.deliver("graz", "user", "5f0c6a2e-0000-4000-8000-000000000001", key)
    assert delivery.path == ("graz", "vienna", "linz", "user")
    assert delivery.sha256_target == delivery.sha256_source == hashlib.sha256(key).hexdigest()
    assert {link: before[link] - net.pool_bits(*link) for link in net.links} == dict.fromkeys(
        net.links, 512
    )
    # the user node filed it; no intermediate node holds it (trusted nodes only relay it)
    assert net.kms["user"].count(peer="graz") == 2
    for node in ("vienna", "linz"):
        assert [b.origin for b in net.kms[node].blocks()] == ["import"] * 2
        assert net.kms[node].counts()["delivered"] == net.kms[node].counts()["reserved"] == 0
    net.close()


def test_not_enough_link_key_is_refused_and_nothing_is_consumed(tmp_path: Path) -> None:
    net = _network(tmp_path, capacity=256)
    net.advance_to(T0 + 100.0)
    before = {link: net.pool_bits(*link) for link in net.links}
    with pytest.raises(FibreRefused, match="not enough link key on hop graz-vienna: 256 bits"):
        net.deliver("graz", "user", "5f0c6a2e-0000-4000-8000-000000000002", os.urandom(64))
    assert {link: net.pool_bits(*link) for link in net.links} == before
    assert not net.kms["user"].blocks() or all(
        b.origin == "import" for b in net.kms["user"].blocks()
    )
    net.close()


def test_the_same_seed_feeds_the_same_link_keys(tmp_path: Path) -> None:
    digests = []
    for run in ("one", "two"):
        net = _network(tmp_path / run)
        net.advance_to(T0 + 10.0)
        key = b"\x5a" * 32
        digests.append(net.deliver("graz", "vienna", "k", key).hops[0].ciphertext_sha256)
        net.close()
    assert digests[0] == digests[1]
