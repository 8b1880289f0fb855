"""A connected seeded entropy source for tests that build daemons or sessions by hand."""

from __future__ import annotations

from sim_backends.entropy import SeededEntropySource


async def seeded_entropy(seed: int, name: str = "entropy") -> SeededEntropySource:
    """Get: a connected seeded (predictable, test-only) entropy source."""
    source = SeededEntropySource(name, seed)
    await source.connect()
    return source


def seeded_entropy_now(seed: int, name: str = "entropy") -> SeededEntropySource:
    """Get: the same, connected without an event loop (its connect never waits, so running
    the coroutine one step completes it): for tests that build sessions synchronously."""
    source = SeededEntropySource(name, seed)
    step = source.connect()
    try:
        step.send(None)
    except StopIteration:
        return source
    raise RuntimeError("SeededEntropySource.connect unexpectedly waited")
