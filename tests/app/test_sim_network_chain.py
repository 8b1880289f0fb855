"""Chains over satellite-station links (seed scenarios II-IV, satqkd.network_chain): a key
carried hop by hop, each hop one-time-padded with its own link key taken from the pass keys
both ends of the link hold; small key stores, no daemons (the full scenario is `-m slow`)."""

from __future__ import annotations

import hashlib
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from satqkd.network_chain import ChainState, LinkStores, run_chain
from satqkd.network_scenario import load_network_scenario
from satqkd_runtime.key_management import KeyManagement
from satqkd_runtime.keystore import KeyStore

REPO = Path(__file__).resolve().parents[2]
CHAIN = REPO / "configs" / "scenarios" / "network-chain-two-satellites.yaml"
SIZE = 256
BLOCK = "00000000-0000-4000-8000-{:012d}"


def _pass_key(root: Path, satellite: str, station: str, bits: int, n: int) -> str:
    """A confirmed pass key of `bits` in both ends' key stores (same id, same bits)."""
    key = np.random.default_rng(n).integers(0, 2, bits, dtype=np.uint8)
    block = BLOCK.format(n)
    keys = root / satellite / "keys"
    for directory, peer in (
        (keys / "payload" / station, station),
        (keys / f"ogs-{station}", satellite),
    ):
        store = KeyStore(directory)
        store.store(block, key, peer, 1, 0.0)
        store.confirm(block)
    return block


def _chain(path: tuple[str, ...], bits: int) -> ChainState:
    sats = {"micius", "jinan1"}
    hops = [(a, b) if a in sats else (b, a) for a, b in pairwise(path)]
    return ChainState("c", path, hops, bits, 1e12)


def _setup(tmp_path: Path, bits: dict[tuple[str, str], int]):
    roots = {s: tmp_path / s for s in ("micius", "jinan1")}
    credited, credited_bits = {}, {}
    for n, ((sat, station), b) in enumerate(bits.items()):
        credited[sat, station] = [_pass_key(tmp_path, sat, station, b, n)]
        credited_bits[sat, station] = b
    return LinkStores(roots, SIZE), credited, credited_bits


def _available(root: Path, satellite: str, station: str) -> tuple[int, int]:
    keys = root / satellite / "keys"
    out = []
    for directory in (keys / "payload" / station, keys / f"ogs-{station}"):
        with KeyManagement(directory / "kms", SIZE) as kms:
            out.append(kms.count() * SIZE)
    return out[0], out[1]


def test_chain_iv_carries_the_key_and_each_hop_consumes_its_length(tmp_path: Path) -> None:
    path = ("jinan1", "xinglong", "micius", "graz")
    stores, credited, credited_bits = _setup(
        tmp_path,
        {("jinan1", "xinglong"): 1024, ("micius", "xinglong"): 768, ("micius", "graz"): 512},
    )
    chain = _chain(path, 512)
    assert run_chain(chain, credited, credited_bits, stores, tmp_path / "chains", 3, 100.0)
    assert chain.sha256_source == chain.sha256_target is not None
    # each hop took exactly the key's length of link key at both ends, no more
    assert _available(tmp_path, "jinan1", "xinglong") == (512, 512)
    assert _available(tmp_path, "micius", "xinglong") == (256, 256)
    assert _available(tmp_path, "micius", "graz") == (0, 0)
    assert [r.consumed_bits for r in chain.hop_records] == [512, 512, 512]
    # both ends filed the same key, and the intermediate nodes filed nothing
    filed = {}
    for node in ("jinan1", "graz"):
        with KeyManagement(tmp_path / "chains" / node, SIZE) as kms:
            keys = kms.take_available(chain.key_ids, "test")
            filed[node] = b"".join(k.material for k in keys)
    assert filed["jinan1"] == filed["graz"]
    assert hashlib.sha256(filed["graz"]).hexdigest() == chain.sha256_target
    assert sorted(p.name for p in (tmp_path / "chains").iterdir()) == ["graz", "jinan1"]
    # what crossed each hop is not the key
    assert all(r.ciphertext_sha256 != chain.sha256_source for r in chain.hop_records)


def test_station_relays_between_two_satellites(tmp_path: Path) -> None:
    stores, credited, credited_bits = _setup(
        tmp_path, {("micius", "xinglong"): 512, ("jinan1", "xinglong"): 512}
    )
    chain = _chain(("micius", "xinglong", "jinan1"), 512)
    assert run_chain(chain, credited, credited_bits, stores, tmp_path / "chains", 3, 0.0)
    assert chain.sha256_source == chain.sha256_target
    assert _available(tmp_path, "micius", "xinglong") == (0, 0)
    assert _available(tmp_path, "jinan1", "xinglong") == (0, 0)


def test_a_short_hop_refuses_the_chain_by_name_and_consumes_nothing(tmp_path: Path) -> None:
    stores, credited, credited_bits = _setup(
        tmp_path,
        {("jinan1", "xinglong"): 1024, ("micius", "xinglong"): 256, ("micius", "graz"): 1024},
    )
    chain = _chain(("jinan1", "xinglong", "micius", "graz"), 512)
    assert not run_chain(chain, credited, credited_bits, stores, tmp_path / "chains", 3, 0.0)
    assert chain.refused == (
        "not enough link key on hop xinglong-micius: 256 bits available, 512 needed"
    )
    assert _available(tmp_path, "jinan1", "xinglong") == (1024, 1024)
    assert _available(tmp_path, "micius", "graz") == (1024, 1024)
    assert not (tmp_path / "chains").exists()


def test_only_the_credited_bits_of_a_link_are_used(tmp_path: Path) -> None:
    """Key of the link credited to other demands is not the chain's."""
    stores, credited, credited_bits = _setup(
        tmp_path, {("micius", "xinglong"): 1024, ("jinan1", "xinglong"): 1024}
    )
    credited_bits["micius", "xinglong"] = 256
    chain = _chain(("micius", "xinglong", "jinan1"), 512)
    assert not run_chain(chain, credited, credited_bits, stores, tmp_path / "chains", 3, 0.0)
    assert "hop micius-xinglong: 256 bits available" in (chain.refused or "")


def test_the_scenario_plans_each_hop_and_refuses_a_hop_without_a_satellite(
    tmp_path: Path,
) -> None:
    scenario = load_network_scenario(CHAIN)
    ids = [d.id for d in scenario.occ_config().demand]
    assert ids == [
        "micius-jinan1:micius-xinglong",
        "micius-jinan1:jinan1-xinglong",
        "jinan1-graz:jinan1-xinglong",
        "jinan1-graz:micius-xinglong",
        "jinan1-graz:micius-graz",
    ]
    # without `via`: the fewest hops over the key graph; two satellites meet at a station
    chains = [c.model_copy(update={"via": None}) for c in scenario.chains]
    routed = scenario.model_copy(update={"chains": chains})
    assert [routed.chain_path(c) for c in chains] == [
        ("micius", "graz", "jinan1"),
        ("jinan1", "graz"),
    ]
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        CHAIN.read_text().replace("endpoints: [jinan1, graz]", "endpoints: [jinan1, gr]")
    )
    from satqkd.config import ConfigError

    with pytest.raises(ConfigError, match="jinan1-graz: unknown node 'gr'"):
        load_network_scenario(unknown)
    bad = tmp_path / "bad.yaml"
    text = CHAIN.read_text().replace("via: [xinglong, micius]", "via: [xinglong, nanshan]")
    bad.write_text(text)
    with pytest.raises(
        ConfigError,
        match="hop xinglong-nanshan is neither a satellite and a station nor a fibre link",
    ):
        load_network_scenario(bad)


def test_a_hop_whose_two_ends_differ_files_nothing(tmp_path: Path) -> None:
    """A link whose two copies differ (a tampered or out-of-step store) never files a wrong
    key at the far end."""
    stores, credited, credited_bits = _setup(
        tmp_path, {("micius", "xinglong"): 512, ("jinan1", "xinglong"): 512}
    )
    station_copy = KeyStore(tmp_path / "jinan1" / "keys" / "ogs-xinglong")
    block = credited["jinan1", "xinglong"][0]
    bits = station_copy.load(block)
    bits[7] ^= 1
    station_copy.discard(block)
    station_copy.store(block, bits, "jinan1", 1, 0.0)
    station_copy.confirm(block)
    chain = _chain(("micius", "xinglong", "jinan1"), 512)
    assert not run_chain(chain, credited, credited_bits, stores, tmp_path / "chains", 3, 0.0)
    assert chain.refused is not None and "out of step" in chain.refused
    assert not (tmp_path / "chains").exists()


def test_a_chain_continues_over_a_fibre_hop(tmp_path: Path) -> None:
    from sim_backends.fibre_network import FibreLinkSpec, FibreNetwork

    stores, credited, credited_bits = _setup(tmp_path, {("micius", "graz"): 512})
    fibre = FibreNetwork(
        [FibreLinkSpec("graz", "vienna-bank", 1000.0, 1024)],
        {"graz": tmp_path / "fibre" / "graz", "vienna-bank": tmp_path / "fibre" / "vienna-bank"},
        seed=3,
        start_unix_s=0.0,
    )
    try:
        chain = _chain(("micius", "graz", "vienna-bank"), 512)
        chain.hops = [("micius", "graz")]
        fibre.advance_to(0.3)  # 300 bits made: one key in the pool
        assert not run_chain(
            chain, credited, credited_bits, stores, tmp_path / "chains", 3, 0.3, fibre=fibre
        )
        assert chain.refused == (
            "not enough link key on hop graz-vienna-bank: 256 bits available, 512 needed"
        )
        fibre.advance_to(2.0)
        assert run_chain(
            chain, credited, credited_bits, stores, tmp_path / "chains", 3, 2.0, fibre=fibre
        )
        assert chain.sha256_source == chain.sha256_target
        assert fibre.pool_bits("graz", "vienna-bank") == 1024 - 512
        assert _available(tmp_path, "micius", "graz") == (0, 0)
    finally:
        fibre.close()


@pytest.mark.slow
def test_the_chain_scenario_meets_both_chains_with_equal_digests(tmp_path: Path) -> None:
    from satqkd.cli import main

    out = tmp_path / "run"
    assert main(["sim", "network", str(CHAIN), "--seed", "3", "--out", str(out), "--quiet",
                 "--no-plots"]) == 0  # fmt: skip
    report = json.loads((out / "network-report.json").read_text())
    assert [(c["id"], c["met"], c["digests_equal"]) for c in report["chains"]] == [
        ("micius-jinan1", True, True),
        ("jinan1-graz", True, True),
    ]
