"""Tests of the payload source sequencer emulation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_shims.source_sequencer import (
    SourceSequencer,
    pattern_words,
    pattern_words_reference,
    sequence_pulses,
    sequence_pulses_reference,
)
from satqkd_core.errors import InputError
from satqkd_core.rng import derive_key

MICIUS_PROBABILITIES = (0.5, 0.25, 0.25)  # Liao et al., Nature 549, 43 (2017)


@settings(max_examples=150, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    indices=st.lists(st.integers(min_value=0, max_value=2**63 - 1), max_size=40),
)
def test_words_match_reference(key: bytes, indices: list[int]) -> None:
    index = np.array(indices, dtype=np.int64)
    np.testing.assert_array_equal(pattern_words(key, index), pattern_words_reference(key, index))


@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=130),
    cuts=st.tuples(
        st.integers(min_value=0, max_value=2**32), st.integers(min_value=0, max_value=2**32)
    ),
    basis_threshold=st.integers(min_value=0, max_value=2**31),
)
def test_mapping_matches_reference(
    words: list[int], cuts: tuple[int, int], basis_threshold: int
) -> None:
    low, high = sorted(cuts)
    array = np.array(words, dtype=np.uint64)
    pattern = sequence_pulses(array, low, high, basis_threshold)
    ref_basis, ref_bit, ref_intensity = sequence_pulses_reference(array, low, high, basis_threshold)
    np.testing.assert_array_equal(pattern.basis, ref_basis)
    np.testing.assert_array_equal(pattern.bit, ref_bit)
    np.testing.assert_array_equal(pattern.intensity, ref_intensity)


def test_words_are_aes_256_in_counter_mode() -> None:
    """FIPS-197 appendix C.3: AES-256 of block 00112233...ff under key 000102...1f; pulse
    n = 2 * 0x00112233445566778899aabbccddeeff is the first half of that block."""
    key = bytes(range(32))
    block = 0x00112233445566778899AABBCCDDEEFF
    expected = bytes.fromhex("8ea2b7ca516745bfeafc49904b496089")
    # counter b covers pulses 2b and 2b + 1; the index must fit int64, so use the low bits
    # of the FIPS block through the reference, which takes Python integers
    words = pattern_words_reference(key, [2 * block, 2 * block + 1])
    assert int(words[0]).to_bytes(8, "big") + int(words[1]).to_bytes(8, "big") == expected


@pytest.mark.parametrize("n", [0, 1, 9, 64, 129])
def test_public_pattern_matches_reference_on_edge_lengths(n: int) -> None:
    key = derive_key(1, "edge")
    sequencer = SourceSequencer(key, MICIUS_PROBABILITIES, 0.5)
    index = np.arange(n, dtype=np.int64) * 1_000_003
    pattern = sequencer.pattern(index)
    ref = sequence_pulses_reference(
        pattern_words_reference(key.to_bytes(32, "big"), index),
        sequencer.signal_threshold,
        sequencer.decoy_threshold,
        sequencer.basis_x_threshold,
    )
    for got, want in zip((pattern.basis, pattern.bit, pattern.intensity), ref, strict=True):
        assert got.dtype == np.uint8 and got.shape == (n,)
        np.testing.assert_array_equal(got, want)


def _chi_square(observed: np.ndarray, probabilities: np.ndarray) -> float:
    expected = observed.sum() * probabilities
    return float(np.sum((observed - expected) ** 2 / expected))


def test_frequencies_match_probabilities() -> None:
    probabilities = np.array([0.6, 0.3, 0.1])
    sequencer = SourceSequencer(derive_key(2024, "frequencies"), tuple(probabilities), 0.9)
    pattern = sequencer.pattern(np.arange(400_000, dtype=np.int64) + 10**10)
    # Chi-square thresholds at p ~ 1e-4 for 2 and 1 degrees of freedom: 18.4 and 15.1.
    assert _chi_square(np.bincount(pattern.intensity, minlength=3), probabilities) < 18.4
    assert _chi_square(np.bincount(pattern.basis, minlength=2), np.array([0.9, 0.1])) < 15.1
    assert _chi_square(np.bincount(pattern.bit, minlength=2), np.array([0.5, 0.5])) < 15.1
    # Basis, bit and intensity are independent: 12-cell contingency table, 11 dof -> 37.4.
    cell = pattern.intensity.astype(int) * 4 + pattern.basis * 2 + pattern.bit
    joint = np.array([p * b * 0.5 for p in probabilities for b in (0.9, 0.1) for _ in (0, 1)])
    assert _chi_square(np.bincount(cell, minlength=12), joint) < 37.4


def test_pattern_is_deterministic_and_independent_of_batching() -> None:
    key = derive_key(5, "batching")
    sequencer = SourceSequencer(key, MICIUS_PROBABILITIES, 0.5)
    index = np.arange(6_000_000_000, 6_000_010_000, dtype=np.int64)
    whole = sequencer.pattern(index)
    again = SourceSequencer(key, MICIUS_PROBABILITIES, 0.5).pattern(index)
    pieces = [sequencer.pattern(chunk) for chunk in np.array_split(index, [1, 7, 300, 4096])]
    permutation = np.random.default_rng(0).permutation(index.shape[0])
    shuffled = sequencer.pattern(index[permutation])
    for name in ("basis", "bit", "intensity"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(again, name))
        np.testing.assert_array_equal(
            getattr(whole, name), np.concatenate([getattr(p, name) for p in pieces])
        )
        np.testing.assert_array_equal(getattr(whole, name)[permutation], getattr(shuffled, name))
    other = SourceSequencer(key + 1, MICIUS_PROBABILITIES, 0.5).pattern(index)
    assert np.mean(other.bit == whole.bit) < 0.55


def test_degenerate_probabilities() -> None:
    sequencer = SourceSequencer(derive_key(9, "degenerate"), (0.7, 0.0, 0.3), 1.0)
    pattern = sequencer.pattern(np.arange(50_000, dtype=np.int64))
    assert 1 not in set(np.unique(pattern.intensity).tolist())
    assert np.all(pattern.basis == 0)
    only_vacuum = SourceSequencer(1, (0.0, 0.0, 1.0), 0.0).pattern(np.arange(1000))
    assert np.all(only_vacuum.intensity == 2) and np.all(only_vacuum.basis == 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, MICIUS_PROBABILITIES, 0.5), "pattern_key"),
        ((2**64, MICIUS_PROBABILITIES, 0.5), "pattern_key"),
        ((1, (0.5, 0.5), 0.5), "3 entries"),
        ((1, (0.5, 0.6, -0.1), 0.5), ">= 0"),
        ((1, (0.5, 0.25, 0.2), 0.5), "sum to 1"),
        ((1, MICIUS_PROBABILITIES, 1.5), "basis_x_probability"),
    ],
)
def test_constructor_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(InputError, match=message):
        SourceSequencer(*args)


@pytest.mark.parametrize("index", [np.array([-1]), np.array([[1, 2]]), np.array([0.5])])
def test_pattern_rejects_bad_indices(index: np.ndarray) -> None:
    with pytest.raises(InputError, match="pulse_index"):
        SourceSequencer(1, MICIUS_PROBABILITIES, 0.5).pattern(index)


def test_passes_have_their_own_keys_and_forgotten_keys_cannot_be_read() -> None:
    sequencer = SourceSequencer(None, MICIUS_PROBABILITIES, 0.5)
    with pytest.raises(InputError, match="no pass is active"):
        sequencer.pattern(np.arange(4))
    sequencer.load_pass(1, bytes(range(32)))
    sequencer.load_pass(2, bytes(range(1, 33)))
    with pytest.raises(InputError, match="already has a pattern key"):
        sequencer.load_pass(2, bytes(32))
    index = np.arange(100_000, dtype=np.int64)
    sequencer.activate(2)
    emitted = sequencer.pattern(index)
    first, second = sequencer.pattern_of(1, index), sequencer.pattern_of(2, index)
    np.testing.assert_array_equal(emitted.bit, second.bit)
    assert 0.48 < np.mean(first.bit == second.bit) < 0.52
    sequencer.forget(2)
    with pytest.raises(InputError, match="plan 2"):
        sequencer.pattern_of(2, index)
    with pytest.raises(InputError, match="no pass is active"):
        sequencer.pattern(index)
    with pytest.raises(InputError, match="32 bytes"):
        sequencer.load_pass(3, bytes(16))
