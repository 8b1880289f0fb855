"""The OS CSPRNG entropy source: lengths, counting by purpose prefix, request checks, its place
in the registry (a host service, allowed in production) and the refusal of seeded sources."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.entropy import (
    MAX_DRAW_BYTES,
    InsecureEntropyError,
    check_draw,
    purpose_prefix,
    refuse_seeded_in_production,
)
from drivers.entropy_os import OsEntropySource
from drivers.interfaces import DeviceDisconnected, EntropyFailure
from drivers.registry import DRIVERS
from satqkd.assembly import assemble_node
from satqkd.config import ConfigError
from satqkd.instruments_config import validate_instruments
from satqkd_core.errors import InputError
from satqkd_runtime.clock import RealClock
from sim_backends.entropy import SeededEntropySource


async def test_reads_give_the_lengths_asked_and_count_by_purpose_prefix() -> None:
    source = OsEntropySource("entropy")
    await source.connect()
    sizes = [0, 1, 32, 1000]
    outputs = [await source.read(n, f"pattern-key/plan {n}") for n in sizes]
    assert [len(out) for out in outputs] == sizes
    assert len(set(outputs[1:])) == 3
    await source.read(16, "pa-seed")
    await source.read(4, "cascade/seed/round 2")
    assert source.drawn_bytes == {"pattern-key": 1033, "pa-seed": 16, "cascade": 4}
    status = await source.status()
    assert status.healthy and status.detail["drawn_bytes"] == 1053
    assert not source.seeded
    big = await source.read(3 << 20, "bulk")  # drawn in a worker thread
    assert len(big) == 3 << 20
    await source.close()
    with pytest.raises(DeviceDisconnected, match="entropy: not connected"):
        await source.read(1, "after")


async def test_a_failing_kernel_generator_is_an_entropy_failure(monkeypatch) -> None:
    source = OsEntropySource("entropy")
    await source.connect()

    def broken(n: int) -> bytes:
        raise OSError("getrandom failed")

    monkeypatch.setattr("drivers.entropy_os.os.urandom", broken)
    with pytest.raises(EntropyFailure, match=r"os\.urandom failed: getrandom failed"):
        await source.read(8, "key")
    with pytest.raises(EntropyFailure, match="unavailable"):
        await source.connect()


@pytest.mark.parametrize(
    ("n_bytes", "purpose", "message"),
    [
        (-1, "key", "n_bytes must be in 0.."),
        (MAX_DRAW_BYTES + 1, "key", "n_bytes must be in 0.."),
        (1.5, "key", "n_bytes must be an int, got float"),
        (True, "key", "n_bytes must be an int, got bool"),
        (1, "", "purpose must be a non-empty string"),
        (1, "/plan 3", "purpose must start with a name before any '/'"),
        (1, None, "purpose must be a non-empty string"),
    ],
)
async def test_bad_requests_are_refused_in_one_line(n_bytes, purpose, message: str) -> None:
    source = OsEntropySource("entropy")
    await source.connect()
    with pytest.raises(InputError, match=message):
        await source.read(n_bytes, purpose)
    assert source.drawn_bytes == {}


@settings(max_examples=100, deadline=None)
@given(name=st.text(min_size=1).filter(lambda t: "/" not in t and t.strip()), rest=st.text())
def test_the_prefix_is_the_text_before_the_first_slash(name: str, rest: str) -> None:
    assert purpose_prefix(f"{name}/{rest}") == name
    assert purpose_prefix(name) == name
    assert check_draw(0, f"{name}/{rest}") == name


def test_os_entropy_is_a_host_service_and_the_seeded_source_a_simulation() -> None:
    spec = DRIVERS["os_entropy"]
    assert spec.kind == "entropy" and spec.in_process_only and spec.host_service
    assert spec.driver_class is OsEntropySource
    assert spec.driver_class.__module__.startswith("drivers.")  # a daemon sees it
    sim = DRIVERS["sim_entropy"]
    assert sim.in_process_only and not sim.host_service
    assert sim.driver_class.__module__.startswith("sim_backends.")


def test_a_bench_names_it_in_process_and_says_so_when_it_does_not() -> None:
    good = {"driver": "os_entropy", "resource": "in-process://os_entropy"}
    bench = validate_instruments({"name": "b", "instruments": {"entropy": good}}, "b.yaml")
    assert bench.instruments["entropy"].kind == "entropy"
    bad = {"driver": "os_entropy", "resource": "serial:///dev/ttyACM1"}
    with pytest.raises(ConfigError) as raised:
        validate_instruments({"name": "b", "instruments": {"entropy": bad}}, "b.yaml")
    assert str(raised.value) == (
        "b.yaml: instruments.entropy: driver os_entropy is provided by the host and has no "
        "transport: its resource is in-process://os_entropy"
    )


@pytest.mark.parametrize("node", ["payload", "station"])
async def test_both_nodes_assemble_it_in_their_entropy_slot(node: str) -> None:
    entry = {"driver": "os_entropy", "resource": "in-process://os_entropy"}
    bench = validate_instruments({"name": "b", "instruments": {"rng": entry}}, "b.yaml")
    async with contextlib.AsyncExitStack() as stack:
        built = await assemble_node(bench, node, clock=RealClock(), stack=stack)
        assert isinstance(built.entropy, OsEntropySource)
        assert built.entry_names == {"entropy": "rng"}
        assert len(await built.entropy.read(32, "key")) == 32
    empty = validate_instruments(
        {"name": "b", "instruments": {"g": {"driver": "ptu_gimbal", "resource": "tcp://h:1"}}},
        "b.yaml",
    )
    async with contextlib.AsyncExitStack() as stack:
        assert (await assemble_node(empty, "payload", clock=None, stack=stack)).entropy is None


async def test_seeded_sources_are_refused_unless_allowed() -> None:
    real = OsEntropySource("entropy")
    refuse_seeded_in_production(real, allow_insecure=False)  # nothing to refuse
    seeded = SeededEntropySource("sim-entropy", seed=7)
    refuse_seeded_in_production(seeded, allow_insecure=True)
    with pytest.raises(InsecureEntropyError) as raised:
        refuse_seeded_in_production(seeded, allow_insecure=False)
    assert str(raised.value) == (
        "sim-entropy is a seeded simulation source: its output is predictable; "
        "give --insecure-seeded-entropy only for tests"
    )
    assert isinstance(raised.value, InputError)
