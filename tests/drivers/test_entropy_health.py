"""SP 800-90B health tests and SHA-256 conditioning (drivers/entropy_health.py): cutoffs equal
the standard's, the vectorised tests agree sample for sample with a literal transcription of
sections 4.4.1 and 4.4.2 whatever the chunking, and conditioning hashes ceil(320 / H) raw bytes
per 32 output bytes."""

from __future__ import annotations

import hashlib
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.entropy_health import (
    STARTUP_SAMPLES,
    HealthTests,
    apt_cutoff,
    condition_sha256,
    raw_bytes_per_block,
    rct_cutoff,
)
from drivers.interfaces import EntropyFailure
from satqkd_core.errors import InputError

# --- cutoffs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "cutoff"), [(0.5, 41), (1, 21), (2, 11), (4, 6), (7, 4), (8, 4)])
def test_repetition_count_cutoff_is_one_plus_ceil_20_over_h(h: float, cutoff: int) -> None:
    assert rct_cutoff(h) == cutoff == 1 + math.ceil(20 / h)


def test_repetition_count_cutoff_uses_the_decimal_written() -> None:
    # 20 / 0.2 is 100.00000000000001 in binary floating point; the standard means 100
    assert rct_cutoff(0.2) == 101
    assert rct_cutoff(7, alpha_exponent=40) == 1 + math.ceil(40 / 7)


@pytest.mark.parametrize(
    ("h", "binary", "cutoff"),
    [
        (0.5, False, 410),  # W = 512, H = 0.5 (also Go's crypto/internal/entropy)
        (8, False, 13),  # W = 512, H = 8 (also the nRF54 TRNG's default register value)
        (0.5, True, 793),  # W = 1024, H = 0.5 (the nRF54L15's default window cutoff)
        (1, True, 589),  # W = 1024, H = 1: binary samples at one bit each
    ],
)
def test_adaptive_proportion_cutoff_matches_published_values(
    h: float, binary: bool, cutoff: int
) -> None:
    assert apt_cutoff(h, binary=binary) == cutoff


def _critbinom_exact(window: int, h: int, alpha_exponent: int = 20) -> int:
    """An independent exact CRITBINOM for integer H: p = 2^-H is rational, so Fractions."""
    p = Fraction(1, 2**h)
    alpha = Fraction(1, 2**alpha_exponent)
    cdf = Fraction(0)
    for k in range(window + 1):
        cdf += math.comb(window, k) * p**k * (1 - p) ** (window - k)
        if cdf >= 1 - alpha:
            return k
    return window


@pytest.mark.parametrize("h", [1, 2, 3, 4, 5, 6, 7, 8])
def test_adaptive_proportion_cutoff_is_one_plus_critbinom(h: int) -> None:
    assert apt_cutoff(h) == 1 + _critbinom_exact(512, h)
    if h == 1:
        assert apt_cutoff(h, binary=True) == 1 + _critbinom_exact(1024, h)


@pytest.mark.parametrize(
    ("h", "per_block"), [(8, 40), (7, 46), (6.4, 50), (1, 320), (0.5, 640), (7.9, 41)]
)
def test_conditioning_takes_ceil_320_over_h_raw_bytes_per_block(h: float, per_block: int) -> None:
    assert raw_bytes_per_block(h) == per_block


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rct_cutoff(0), r"in \(0, 8\]"),
        (lambda: rct_cutoff(8.5), r"in \(0, 8\]"),
        (lambda: apt_cutoff(2, binary=True), r"binary sample must be in \(0, 1\]"),
        (lambda: rct_cutoff(7, alpha_exponent=10), "alpha_exponent must be in 20..40"),
        (lambda: raw_bytes_per_block(float("nan")), "must be a number"),
        (lambda: condition_sha256(b"abc", 2), "not a multiple of 2"),
    ],
)
def test_bad_figures_are_refused_in_one_line(call, message: str) -> None:
    with pytest.raises(InputError, match=message):
        call()


def test_conditioning_is_sha256_of_consecutive_chunks() -> None:
    raw = bytes(range(200)) * 3
    out = condition_sha256(raw, 40)
    assert len(out) == 32 * 15
    assert out[32:64] == hashlib.sha256(raw[40:80]).digest()


# --- the tests against a literal transcription of the standard ---------------------------------


def _reference_first_failures(
    samples: list[int], rct: int, apt: int, window: int
) -> tuple[int | None, int | None]:
    """The index of the sample at which each test first fails (SP 800-90B 4.4.1 and 4.4.2 as
    written: one step per sample), or None."""
    rct_at = apt_at = None
    a, b = samples[0], 1
    for i, x in enumerate(samples[1:], start=1):
        if x == a:
            b += 1
            if b >= rct:
                rct_at = i
                break
        else:
            a, b = x, 1
    for start in range(0, len(samples), window):
        a, b = samples[start], 1
        if b >= apt:
            apt_at = start
            break
        for i in range(start + 1, min(start + window, len(samples))):
            if samples[i] == a:
                b += 1
                if b >= apt:
                    apt_at = i
                    break
        if apt_at is not None:
            break
    return rct_at, apt_at


# runs of values (the repetition count test's prey) or one value dominant without long runs
# (the adaptive proportion test's)
_runs = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 14)), min_size=1, max_size=400).map(
    lambda pairs: [value for value, length in pairs for _ in range(length)]
)
_dominant = st.lists(st.sampled_from([0, 0, 0, 1, 2, 3, 4, 5]), min_size=1, max_size=1600)


@settings(max_examples=300, deadline=None)
@given(
    samples=st.one_of(_runs, _dominant),
    h=st.sampled_from([0.9, 1.0, 2.0]),
    cuts=st.lists(st.integers(1, 1600)),
)
def test_vectorised_tests_fail_where_the_standard_does_whatever_the_chunks(
    samples: list[int], h: float, cuts: list[int]
) -> None:
    monitor = HealthTests(h)
    rct_at, apt_at = _reference_first_failures(
        samples, monitor.rct_cutoff, monitor.apt_cutoff, monitor.apt_window
    )
    edges = sorted({0, len(samples), *(c for c in cuts if c < len(samples))})
    failed_in = None
    for lo, hi in itertools.pairwise(edges):
        try:
            monitor.check(np.asarray(samples[lo:hi], dtype=np.uint8))
        except EntropyFailure as failure:
            failed_in, message = (lo, hi), str(failure)
            break
    first = min((at for at in (rct_at, apt_at) if at is not None), default=None)
    if first is None:
        assert failed_in is None
        return
    assert failed_in is not None and failed_in[0] <= first < failed_in[1]
    lo, hi = failed_in
    expected = "repetition count" if rct_at is not None and rct_at < hi else "adaptive proportion"
    assert expected in message
    with pytest.raises(EntropyFailure, match=expected):  # it stays failed
        monitor.check(np.zeros(1, np.uint8))


def test_start_up_failures_say_so() -> None:
    monitor = HealthTests(8)
    with pytest.raises(EntropyFailure, match="start-up test: repetition count test"):
        monitor.check(bytes([9, 9, 9, 9]))
    fine = HealthTests(8)
    fine.check(np.random.default_rng(1).integers(0, 256, STARTUP_SAMPLES, dtype=np.uint8))
    assert fine.started
    with pytest.raises(EntropyFailure, match=r"^entropy source: repetition count test"):
        fine.check(bytes([7] * 4))


def test_a_biased_source_fails_the_adaptive_proportion_test_only() -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(1, 256, 4096, dtype=np.uint8)
    data[::3] = 0  # a third of the bytes, never two in a row
    monitor = HealthTests(7)
    with pytest.raises(EntropyFailure, match=r"adaptive proportion test .* window of 512"):
        monitor.check(data)


def test_binary_samples_use_the_1024_window() -> None:
    monitor = HealthTests(1, binary=True)
    assert (monitor.apt_window, monitor.apt_cutoff, monitor.rct_cutoff) == (1024, 589, 21)
    bits = np.random.default_rng(2).integers(0, 2, 20_000, dtype=np.uint8)
    monitor.check(bits)
    with pytest.raises(InputError, match="binary samples must be 0 or 1"):
        monitor.check(np.array([2], np.uint8))
