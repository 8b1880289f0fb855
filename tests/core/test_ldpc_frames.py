"""Tests for satqkd_core.ldpc_frames_kernel: several frames decoded in lockstep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.ldpc import (
    KNOWN_SYMBOL_LLR,
    LdpcCode,
    bp_decode,
    channel_llr_magnitude,
    compute_syndrome,
    decode_syndrome,
    phi_tables,
)
from satqkd_core.ldpc_construction import MotherCodeSpec, build_code
from satqkd_core.ldpc_frames_kernel import (
    LANES,
    bp_decode_frames,
    bp_decode_frames_reference,
    decode_syndromes,
)
from tests.core.test_ldpc import _random_code


@settings(max_examples=80, deadline=None)
@given(
    case=st.tuples(st.integers(2, 40), st.integers(1, 39), st.integers(0, 2**32 - 1)),
    frames=st.integers(1, 2 * LANES + 3),
    iterations=st.integers(1, 12),
    ratio=st.sampled_from([1.0, 0.95, 0.5]),
    alone_below=st.sampled_from([0, 3, LANES + 1]),
    single=st.booleans(),
)
def test_lockstep_kernel_equals_bp_decode_frame_by_frame(
    case: tuple[int, int, int],
    frames: int,
    iterations: int,
    ratio: float,
    alone_below: int,
    single: bool,
) -> None:
    """Every frame's iterations, verdict, messages and posteriors are bp_decode's exactly,
    whichever lane it ran in, whether it refilled a lane or finished alone; the
    plain-Python reference (bp_decode_reference frame by frame) agrees too."""
    n, m, seed = case
    m = min(m, n - 1)
    code = _random_code(n, m, seed, max_degree=4)
    rng = np.random.default_rng(seed + 3)
    syndromes = rng.integers(0, 2, (frames, m)).astype(np.uint8)
    llr = rng.normal(0.0, 3.0, (frames, n))
    llr[rng.random((frames, n)) < 0.2] = 0.0  # punctured symbols
    llr[rng.random((frames, n)) < 0.1] = KNOWN_SYMBOL_LLR  # shortened ones
    warm = rng.normal(0.0, 1.0, (frames, code.edges)) * (rng.random((frames, 1)) < 0.5)
    dtype = np.float32 if single else np.float64  # the receiver keeps float32 between rounds
    start = warm.astype(dtype)
    stalls = rng.integers(0, 5, frames)
    check_vars = code.check_vars.view(np.uint32)
    messages, posterior = start.copy(), np.empty((frames, n))
    got_iterations = np.zeros(frames, dtype=np.int64)
    got_converged = np.zeros(frames, dtype=np.bool_)
    sweeps, alone = bp_decode_frames(
        code.check_ptr,
        check_vars,
        syndromes,
        llr,
        messages,
        posterior,
        iterations,
        stalls,
        ratio,
        alone_below,
        got_iterations,
        got_converged,
    )
    assert LANES * sweeps + alone >= got_iterations.sum()
    coarse, fine = phi_tables()
    for g in range(frames):
        alone_messages, alone_posterior = start[g].astype(np.float64), np.empty(n)
        expected = bp_decode(
            code.check_ptr,
            check_vars,
            syndromes[g],
            llr[g],
            alone_messages,
            alone_posterior,
            iterations,
            int(stalls[g]),
            ratio,
            coarse,
            fine,
        )
        assert (int(got_iterations[g]), bool(got_converged[g])) == expected
        assert np.array_equal(messages[g], alone_messages.astype(dtype))
        assert np.array_equal(posterior[g], alone_posterior)
    reference_messages, reference_posterior = start.copy(), np.empty((frames, n))
    reference_iterations = np.zeros(frames, dtype=np.int64)
    reference_converged = np.zeros(frames, dtype=np.bool_)
    bp_decode_frames_reference(
        code.check_ptr,
        check_vars,
        syndromes,
        llr,
        reference_messages,
        reference_posterior,
        iterations,
        stalls,
        ratio,
        reference_iterations,
        reference_converged,
    )
    assert np.array_equal(got_iterations, reference_iterations)
    assert np.array_equal(got_converged, reference_converged)
    assert np.array_equal(messages, reference_messages)
    assert np.array_equal(posterior, reference_posterior)


@pytest.fixture(scope="module")
def code() -> LdpcCode:
    return build_code(
        MotherCodeSpec(
            name="test_frames_r70",
            code_id=7,
            n=720,
            rate=0.7,
            var_edge_fractions={2: 0.2, 3: 0.5, 6: 0.3},
            check_edge_fractions={11: 0.5, 12: 0.5},
            max_adaptive_fraction=0.05,
            seed=11,
            source="test",
        )
    )


def test_frames_decode_as_each_alone_and_correct_their_words(code: LdpcCode) -> None:
    """A batch larger than the lanes, frames at several error rates (some undecodable): each
    frame comes out as decode_syndrome gives it, the decodable ones corrected."""
    rng = np.random.default_rng(21)
    frames = 2 * LANES + 5
    words = rng.integers(0, 2, (frames, code.n)).astype(np.uint8)
    rates = np.resize([0.005, 0.01, 0.02, 0.25], frames)
    noisy = words ^ (rng.random((frames, code.n)) < rates[:, None]).astype(np.uint8)
    llr = (1.0 - 2.0 * noisy) * channel_llr_magnitude(0.01)
    syndromes = np.stack([compute_syndrome(code, w) for w in words])
    result = decode_syndromes(code, syndromes, llr, stall_iterations=6)
    assert result.lane_iterations >= result.iterations.sum()
    for g in range(frames):
        alone = decode_syndrome(code, syndromes[g], llr[g], stall_iterations=6)
        assert (result.iterations[g], result.converged[g]) == (alone.iterations, alone.converged)
        assert np.array_equal(result.words[g], alone.word)
    assert result.converged[rates <= 0.01].all() and not result.converged[rates == 0.25].any()
    assert np.array_equal(result.words[result.converged], words[result.converged])


def test_decode_syndromes_validates_inputs(code: LdpcCode) -> None:
    syndromes = np.zeros((3, code.m), dtype=np.uint8)
    llr = np.zeros((3, code.n))
    with pytest.raises(InputError, match="syndromes must have shape"):
        decode_syndromes(code, syndromes[:, :-1], llr)
    with pytest.raises(InputError, match="syndromes"):
        decode_syndromes(code, syndromes + 2, llr)
    with pytest.raises(InputError, match="channel_llr must be an array of shape"):
        decode_syndromes(code, syndromes, llr[:2])
    with pytest.raises(InputError, match="channel_llr must be finite"):
        decode_syndromes(code, syndromes, np.full((3, code.n), np.inf))
    with pytest.raises(InputError, match="channel_llr must hold floats"):
        decode_syndromes(code, syndromes, llr.astype(np.int64))
    with pytest.raises(InputError, match="messages must be a float64 or float32"):
        decode_syndromes(code, syndromes, llr, np.zeros((3, code.edges), dtype=np.float16))
    with pytest.raises(InputError, match="messages must be contiguous with shape"):
        decode_syndromes(code, syndromes, llr, np.zeros((3, code.edges + 1)))
    with pytest.raises(InputError, match="messages must be finite"):
        decode_syndromes(code, syndromes, llr, np.full((3, code.edges), np.nan))
    with pytest.raises(InputError, match="stall_iterations must be an integer"):
        decode_syndromes(code, syndromes, llr, stall_iterations=np.array([1, 2]))
    with pytest.raises(InputError, match="stall_iterations must be >= 0"):
        decode_syndromes(code, syndromes, llr, stall_iterations=-1)
    with pytest.raises(InputError, match="stall_ratio"):
        decode_syndromes(code, syndromes, llr, stall_ratio=0.0)
    with pytest.raises(InputError, match="max_iterations"):
        decode_syndromes(code, syndromes, llr, max_iterations=0)
    empty = decode_syndromes(code, syndromes[:0], llr[:0])
    assert empty.iterations.size == 0 and empty.lane_iterations == 0
