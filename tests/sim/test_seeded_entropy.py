"""The seeded simulation entropy source: a seed reproduces every draw, draws differ by seed,
purpose and draw number, and concurrent draws of different purposes get the same bytes in
any order."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.interfaces import DeviceDisconnected
from drivers.registry import DRIVERS
from satqkd.assembly import assemble_node
from satqkd.instruments_config import validate_instruments
from satqkd_core.errors import InputError
from satqkd_runtime.clock import RealClock
from sim_backends.entropy import SeededEntropySource, seeded_draw

_purposes = st.lists(
    st.tuples(
        st.sampled_from(["pattern-key/p1", "pa-seed", "ldpc/fill", "é/∞"]), st.integers(0, 80)
    ),
    max_size=30,
)


async def _draw_all(seed: int, draws: list[tuple[str, int]]) -> list[bytes]:
    source = SeededEntropySource("sim", seed)
    await source.connect()
    return [await source.read(n, purpose) for purpose, n in draws]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**64), draws=_purposes)
def test_the_same_seed_and_sequence_give_the_same_bytes(seed: int, draws) -> None:
    first = asyncio.run(_draw_all(seed, draws))
    assert first == asyncio.run(_draw_all(seed, draws))
    assert [len(out) for out in first] == [n for _, n in draws]


@settings(max_examples=60, deadline=None)
@given(draws=_purposes, order=st.randoms(use_true_random=False))
def test_draws_of_different_purposes_do_not_depend_on_their_order(draws, order) -> None:
    """Interleave the purposes' draws in any order: each purpose's k-th draw is unchanged."""
    shuffled = list(enumerate(draws))
    order.shuffle(shuffled)
    by_purpose: dict[str, list[int]] = {}
    for index, (purpose, _) in enumerate(draws):
        by_purpose.setdefault(purpose, []).append(index)
    # keep each purpose's own draws in their original relative order (that order is the numbering)
    slots = {purpose: iter(indices) for purpose, indices in by_purpose.items()}
    reordered = [next(slots[draws[i][0]]) for i, _ in shuffled]
    outputs = asyncio.run(_draw_all(3, [draws[i] for i in reordered]))
    in_order = asyncio.run(_draw_all(3, draws))
    assert dict(zip(reordered, outputs, strict=True)) == dict(enumerate(in_order))


async def test_concurrent_tasks_get_the_same_bytes_whatever_the_schedule() -> None:
    async def task(source: SeededEntropySource, purpose: str, delays: list[float]) -> list[bytes]:
        out = []
        for delay in delays:
            await asyncio.sleep(delay)
            out.append(await source.read(24, purpose))
        return out

    results = []
    for delays_a, delays_b in (([0, 0.01, 0], [0.005, 0, 0.02]), ([0.02, 0, 0], [0, 0, 0])):
        source = SeededEntropySource("sim", seed=11)
        await source.connect()
        results.append(
            await asyncio.gather(
                task(source, "pattern-key/plan 1", delays_a), task(source, "pa-seed", delays_b)
            )
        )
    assert results[0] == results[1]


async def test_seed_purpose_and_draw_number_all_change_the_output() -> None:
    source = SeededEntropySource("sim", seed=1)
    await source.connect()
    first, second = await source.read(32, "key"), await source.read(32, "key")
    other = await source.read(32, "key/2")
    assert len({first, second, other}) == 3
    assert first == seeded_draw(1, "key", 0, 32) and second == seeded_draw(1, "key", 1, 32)
    assert seeded_draw(2, "key", 0, 32) != first
    assert seeded_draw(b"1", "key", 0, 32) != first  # an int seed and bytes never collide
    assert seeded_draw(1, "key", 0, 64)[:32] == first  # SHAKE: a longer draw extends it
    assert source.drawn_bytes == {"key": 96}
    assert source.draws_of("key") == 2 and source.draws_of("key/2") == 1
    assert source.seeded


def test_the_output_is_shake256_of_the_length_prefixed_fields() -> None:
    def field(data: bytes) -> bytes:
        return struct.pack(">Q", len(data)) + data

    message = (
        field(b"satqkd seeded entropy v1")
        + field(b"i42")
        + field(b"pa-seed")
        + struct.pack(">Q", 5)
    )
    assert seeded_draw(42, "pa-seed", 5, 40) == hashlib.shake_256(message).digest(40)


async def test_mistakes_are_refused_in_one_line() -> None:
    with pytest.raises(InputError, match="seed must be an int >= 0 or bytes"):
        SeededEntropySource("sim", seed=-1)
    source = SeededEntropySource("sim")
    with pytest.raises(DeviceDisconnected, match="sim: not connected"):
        await source.read(1, "key")
    await source.connect()
    with pytest.raises(InputError, match="purpose must be a non-empty string"):
        await source.read(1, "")
    with pytest.raises(InputError, match="index must be an int >= 0"):
        seeded_draw(0, "key", -1, 4)


async def test_registered_in_process_only_and_built_from_a_bench() -> None:
    spec = DRIVERS["sim_entropy"]
    assert spec.kind == "entropy" and spec.in_process_only and spec.emulator is None
    entry = {"driver": "sim_entropy", "resource": "in-process://entropy", "options": {"seed": 9}}
    bench = validate_instruments({"name": "b", "instruments": {"entropy": entry}}, "b.yaml")
    async with contextlib.AsyncExitStack() as stack:
        built = await assemble_node(bench, "station", clock=RealClock(), stack=stack)
        assert isinstance(built.entropy, SeededEntropySource)
        assert await built.entropy.read(8, "key") == seeded_draw(9, "key", 0, 8)
        assert built.paths["entropy"] == "in-process"
