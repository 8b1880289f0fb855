"""Tests for satqkd_core.ldpc and satqkd_core.ldpc_construction: codes, decoder, rate plans."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.bits import binary_entropy
from satqkd_core.errors import InputError
from satqkd_core.ldpc import (
    KNOWN_SYMBOL_LLR,
    LdpcCode,
    available_codes,
    bp_decode,
    bp_decode_reference,
    channel_llr_magnitude,
    check_syndrome,
    check_syndrome_reference,
    code_by_id,
    compute_syndrome,
    decode_syndrome,
    load_code,
    mother_codes,
    phi_tables,
    rows_without,
)
from satqkd_core.ldpc_construction import (
    MOTHER_CODES,
    MotherCodeSpec,
    build_code,
    check_degree_targets,
    node_degrees,
    peg_edges,
    peg_edges_reference,
    second_neighbourhood_sizes,
    second_neighbourhood_sizes_reference,
    untainted_selection,
    untainted_selection_reference,
)
from satqkd_core.ldpc_frames import (
    frame_layout,
    plan_frames,
    start_efficiency_for,
    window_end_efficiency,
)


def _random_code(n: int, m: int, seed: int, max_degree: int = 3) -> LdpcCode:
    """A small random code: every variable on 1..max_degree distinct checks, no empty check."""
    rng = np.random.default_rng(seed)
    degrees = rng.integers(1, min(max_degree, m) + 1, n)
    columns = [rng.choice(m, size=int(d), replace=False) for d in degrees]
    used = np.zeros(m, dtype=bool)
    for column in columns:
        used[column] = True
    for c in np.flatnonzero(~used):  # give an empty check a variable that lacks it
        for v in rng.permutation(n):
            if c not in columns[v]:
                columns[v] = np.append(columns[v], c)
                break
    degrees = np.array([len(col) for col in columns])
    return LdpcCode.from_var_checks(
        name="random",
        code_id=0,
        m=m,
        var_degrees=degrees,
        var_checks=np.concatenate(columns),
        puncture_order=np.zeros(0, dtype=np.int64),
        design_rate=1.0 - m / n,
    )


def _dense(code: LdpcCode) -> np.ndarray:
    h = np.zeros((code.m, code.n), dtype=np.uint8)
    for c in range(code.m):
        h[c, code.check_vars[code.check_ptr[c] : code.check_ptr[c + 1]]] = 1
    return h


_SMALL_SPEC = MotherCodeSpec(
    name="test_r70",
    code_id=7,
    n=720,
    rate=0.7,
    var_edge_fractions={2: 0.2, 3: 0.5, 6: 0.3},
    check_edge_fractions={11: 0.5, 12: 0.5},
    max_adaptive_fraction=0.05,
    seed=11,
    source="test",
)


@pytest.fixture(scope="module")
def small_code() -> LdpcCode:
    return build_code(_SMALL_SPEC)


# ---- kernels against their references ---------------------------------------------------------

code_case = st.tuples(st.integers(2, 40), st.integers(1, 39), st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(case=code_case)
def test_syndrome_kernel_matches_reference(case: tuple[int, int, int]) -> None:
    n, m, seed = case
    m = min(m, n - 1)
    code = _random_code(n, m, seed)
    word = np.random.default_rng(seed).integers(0, 2, n).astype(np.uint8)
    got = check_syndrome(code.check_ptr, code.check_vars, word)
    assert np.array_equal(got, check_syndrome_reference(code.check_ptr, code.check_vars, word))
    assert np.array_equal(got, (_dense(code).astype(np.int64) @ word) % 2)


@settings(max_examples=120, deadline=None)
@given(
    case=code_case,
    iterations=st.integers(1, 12),
    stall=st.integers(0, 4),
    ratio=st.sampled_from([1.0, 0.95, 0.5]),
)
def test_bp_decode_matches_reference(
    case: tuple[int, int, int], iterations: int, stall: int, ratio: float
) -> None:
    n, m, seed = case
    m = min(m, n - 1)
    code = _random_code(n, m, seed, max_degree=4)
    rng = np.random.default_rng(seed + 1)
    syndrome = rng.integers(0, 2, m).astype(np.uint8)
    llr = rng.normal(0.0, 3.0, n)
    llr[rng.random(n) < 0.2] = 0.0  # punctured symbols
    llr[rng.random(n) < 0.1] = KNOWN_SYMBOL_LLR * rng.choice([-1.0, 1.0])  # shortened ones
    start = rng.normal(0.0, 1.0, code.edges) * (rng.random() < 0.5)  # warm or cold start
    coarse, fine = phi_tables()
    messages, reference_messages = start.copy(), start.copy()
    posterior, reference_posterior = np.empty(n), np.empty(n)
    args = (code.check_ptr, code.check_vars.view(np.uint32), syndrome, llr)
    got = bp_decode(*args, messages, posterior, iterations, stall, ratio, coarse, fine)
    expected = bp_decode_reference(
        *args, reference_messages, reference_posterior, iterations, stall, ratio, coarse, fine
    )
    assert got == expected
    assert np.array_equal(messages, reference_messages)
    assert np.array_equal(posterior, reference_posterior)


degree_case = st.tuples(st.integers(1, 60), st.integers(1, 20), st.integers(0, 2**32 - 1))


@settings(max_examples=120, deadline=None)
@given(case=degree_case)
def test_peg_kernel_matches_reference(case: tuple[int, int, int]) -> None:
    n, m, seed = case
    rng = np.random.default_rng(seed)
    degrees = np.sort(rng.integers(1, min(4, m) + 1, n)).astype(np.int64)
    edges = int(degrees.sum())
    if edges < m:
        m = edges
    targets = np.full(m, edges // m, dtype=np.int64)
    targets[: edges % m] += 1
    words = rng.integers(0, 2**63, edges, dtype=np.int64).astype(np.uint64)
    got = peg_edges(degrees, targets, words)
    assert np.array_equal(got, peg_edges_reference(degrees, targets, words))
    # each variable's checks are distinct
    offsets = np.concatenate([[0], np.cumsum(degrees)])
    for v in range(n):
        column = got[offsets[v] : offsets[v + 1]]
        assert np.unique(column).size == column.size


@settings(max_examples=120, deadline=None)
@given(case=code_case, limit=st.integers(0, 50))
def test_untainted_kernels_match_reference(case: tuple[int, int, int], limit: int) -> None:
    n, m, seed = case
    m = min(m, n - 1)
    code = _random_code(n, m, seed)
    arrays = (code.var_ptr, code.var_checks, code.check_ptr, code.check_vars)
    sizes = second_neighbourhood_sizes(*arrays)
    assert np.array_equal(sizes, second_neighbourhood_sizes_reference(*arrays))
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    chosen = untainted_selection(order, *arrays, limit)
    assert np.array_equal(chosen, untainted_selection_reference(order, *arrays, limit))
    assert chosen.size <= limit
    # untainted: no check holds two chosen variables
    per_check = np.zeros(m, dtype=np.int64)
    for v in chosen:
        per_check[code.var_checks[code.var_ptr[v] : code.var_ptr[v + 1]]] += 1
    assert per_check.max(initial=0) <= 1


def test_kernels_on_edge_sizes() -> None:
    code = _random_code(2, 1, 3)  # one check, two variables
    word = np.array([1, 1], dtype=np.uint8)
    assert check_syndrome(code.check_ptr, code.check_vars, word).tolist() == [
        int(code.check_degrees()[0] == 1)
    ]
    result = decode_syndrome(code, np.array([1], dtype=np.uint8), np.array([4.0, -0.5]))
    assert result.converged and result.word.tolist() == [0, 1]
    assert (
        untainted_selection(
            np.arange(2), code.var_ptr, code.var_checks, code.check_ptr, code.check_vars, 0
        ).size
        == 0
    )


# ---- construction -----------------------------------------------------------------------------


def test_node_degrees_follow_the_edge_distribution() -> None:
    degrees = node_degrees({2: 0.5, 4: 0.5}, 3000)
    assert degrees.size == 3000 and np.all(np.diff(degrees) >= 0)
    # node fractions 2/3 and 1/3: edge shares 0.5 each
    assert np.count_nonzero(degrees == 2) == 2000
    targets = check_degree_targets({6: 1.0}, 1000, int(degrees.sum()))
    assert int(targets.sum()) == int(degrees.sum()) and targets.max() - targets.min() <= 1
    with pytest.raises(InputError, match="edge_fractions"):
        node_degrees({}, 10)


def test_build_code_is_reproducible_and_untainted(small_code: LdpcCode) -> None:
    again = build_code(_SMALL_SPEC)
    assert again.digest == small_code.digest
    assert np.array_equal(again.var_checks, small_code.var_checks)
    other = build_code(dataclasses.replace(_SMALL_SPEC, seed=12))
    assert other.digest != small_code.digest
    assert small_code.m == 216 and small_code.n == 720
    assert 0 < small_code.rate_adaptive_symbols <= 36
    per_check = np.zeros(small_code.m, dtype=np.int64)
    for v in small_code.puncture_order:
        per_check[small_code.var_checks[small_code.var_ptr[v] : small_code.var_ptr[v + 1]]] += 1
    assert per_check.max() == 1


def test_save_and_load_round_trip(small_code: LdpcCode, tmp_path) -> None:
    path = tmp_path / "code.npz"
    small_code.save(str(path))
    loaded = LdpcCode.load(path)
    assert loaded.digest == small_code.digest and loaded.name == small_code.name
    assert np.array_equal(loaded.check_vars, small_code.check_vars)
    with np.load(path) as data:
        fields = dict(data)
    fields["digest"] = np.uint64(small_code.digest ^ 1)
    np.savez(tmp_path / "bad.npz", **fields)
    with pytest.raises(InputError, match="corrupt"):
        LdpcCode.load(tmp_path / "bad.npz")


def test_code_validation_names_the_argument() -> None:
    base = dict(name="x", code_id=1, m=2, design_rate=0.5, puncture_order=np.zeros(0, int))
    with pytest.raises(InputError, match="var_checks holds"):
        LdpcCode.from_var_checks(var_degrees=np.array([1, 1, 1]), var_checks=np.array([0]), **base)
    with pytest.raises(InputError, match="same check twice"):
        LdpcCode.from_var_checks(
            var_degrees=np.array([2, 1, 1]), var_checks=np.array([0, 0, 1, 1]), **base
        )
    with pytest.raises(InputError, match="at least one variable"):
        LdpcCode.from_var_checks(
            var_degrees=np.array([1, 1, 1]), var_checks=np.array([0, 0, 0]), **base
        )
    with pytest.raises(InputError, match="puncture_order"):
        LdpcCode.from_var_checks(
            var_degrees=np.array([1, 1, 1]),
            var_checks=np.array([0, 1, 1]),
            **{**base, "puncture_order": np.array([5])},
        )


# ---- shipped codes ----------------------------------------------------------------------------


def test_shipped_codes_match_their_specs() -> None:
    names = available_codes()
    assert set(names) == {spec.name for spec in MOTHER_CODES}
    codes = mother_codes()
    assert [c.code_id for c in codes] == sorted(spec.code_id for spec in MOTHER_CODES)
    for spec, code in zip(sorted(MOTHER_CODES, key=lambda s: s.code_id), codes, strict=True):
        assert code.name == spec.name and code.n == spec.n
        assert code.typical_efficiency == spec.typical_efficiency
        assert code.efficiency_spread == spec.efficiency_spread
        assert code.m == round(spec.n * (1 - spec.rate))
        assert code_by_id(code.code_id) is code
        # untainted: punctured columns have disjoint supports, hence full rank
        per_check = np.bincount(
            np.concatenate(
                [
                    code.var_checks[code.var_ptr[v] : code.var_ptr[v + 1]]
                    for v in code.puncture_order
                ]
            ),
            minlength=code.m,
        )
        assert per_check.max() == 1
        assert code.rate_adaptive_symbols <= spec.max_adaptive_fraction * spec.n
    assert load_code(names[0]) is load_code(names[0])
    with pytest.raises(InputError, match="no LDPC code named"):
        load_code("nonexistent")
    with pytest.raises(InputError, match="code_id"):
        code_by_id(10**6)


# ---- decoding ---------------------------------------------------------------------------------


def test_decoder_corrects_a_noisy_word(small_code: LdpcCode) -> None:
    rng = np.random.default_rng(5)
    word = rng.integers(0, 2, small_code.n).astype(np.uint8)
    noisy = word ^ (rng.random(small_code.n) < 0.01).astype(np.uint8)
    llr = (1.0 - 2.0 * noisy) * channel_llr_magnitude(0.01)
    result = decode_syndrome(small_code, compute_syndrome(small_code, word), llr)
    assert result.converged and np.array_equal(result.word, word)
    assert 1 <= result.iterations < 50
    # a hopeless word (half the bits flipped) is abandoned once it stalls
    hopeless = word ^ (rng.random(small_code.n) < 0.3).astype(np.uint8)
    llr = (1.0 - 2.0 * hopeless) * channel_llr_magnitude(0.01)
    result = decode_syndrome(
        small_code, compute_syndrome(small_code, word), llr, stall_iterations=5
    )
    assert not result.converged and result.iterations < 200


def test_stall_ratio_gives_up_a_plateau_sooner(small_code: LdpcCode) -> None:
    rng = np.random.default_rng(9)
    word = rng.integers(0, 2, small_code.n).astype(np.uint8)
    hopeless = word ^ (rng.random(small_code.n) < 0.2).astype(np.uint8)
    llr = (1.0 - 2.0 * hopeless) * channel_llr_magnitude(0.01)
    syndrome = compute_syndrome(small_code, word)
    patient = decode_syndrome(small_code, syndrome, llr, stall_iterations=6)
    strict = decode_syndrome(small_code, syndrome, llr, stall_iterations=6, stall_ratio=0.5)
    assert not patient.converged and not strict.converged
    assert strict.iterations < patient.iterations
    # a decodable word still decodes when small improvements do not count as progress
    noisy = word ^ (rng.random(small_code.n) < 0.01).astype(np.uint8)
    llr = (1.0 - 2.0 * noisy) * channel_llr_magnitude(0.01)
    result = decode_syndrome(small_code, syndrome, llr, stall_iterations=6, stall_ratio=0.9)
    assert result.converged and np.array_equal(result.word, word)


def test_warm_start_continues_a_decoding(small_code: LdpcCode) -> None:
    rng = np.random.default_rng(8)
    word = rng.integers(0, 2, small_code.n).astype(np.uint8)
    noisy = word ^ (rng.random(small_code.n) < 0.03).astype(np.uint8)
    llr = (1.0 - 2.0 * noisy) * channel_llr_magnitude(0.03)
    syndrome = compute_syndrome(small_code, word)
    once = decode_syndrome(small_code, syndrome, llr, stall_iterations=0)
    assert once.converged
    messages = np.zeros(small_code.edges)
    first = decode_syndrome(small_code, syndrome, llr, messages, max_iterations=1)
    if not first.converged:
        assert np.any(messages != 0.0)  # the state was kept
        rest = decode_syndrome(small_code, syndrome, llr, messages, stall_iterations=0)
        assert rest.converged and np.array_equal(rest.word, word)


@pytest.mark.parametrize("qber", [0.01, 0.04, 0.12])
def test_decoding_without_known_zeros_decides_alike(small_code: LdpcCode, qber: float) -> None:
    """Leaving out the edges of symbols known to be 0 (a frame's shortened ones) decides every
    bit as the whole graph does, in as many iterations, failing frames too (0.12)."""
    rng = np.random.default_rng(int(qber * 1000))
    zeros = np.sort(rng.choice(small_code.n, small_code.n // 6, replace=False))
    rows = rows_without(small_code, zeros)
    left = np.ones(small_code.n, dtype=bool)
    left[zeros] = False
    assert rows.edges == int(left[small_code.check_vars].sum()) < small_code.edges
    assert np.all(left[rows.check_vars])
    for trial in range(4):
        word = rng.integers(0, 2, small_code.n).astype(np.uint8)
        word[zeros] = 0
        noisy = word ^ (rng.random(small_code.n) < qber).astype(np.uint8)
        llr = (1.0 - 2.0 * noisy) * channel_llr_magnitude(qber)
        llr[zeros] = KNOWN_SYMBOL_LLR
        syndrome = compute_syndrome(small_code, word)
        whole = decode_syndrome(small_code, syndrome, llr, stall_iterations=8)
        pruned = decode_syndrome(small_code, syndrome, llr, rows=rows, stall_iterations=8)
        assert np.array_equal(pruned.word, whole.word), trial
        assert (pruned.converged, pruned.iterations) == (whole.converged, whole.iterations)
        assert pruned.converged == (qber < 0.1)


def test_pruned_rows_refuse_what_they_do_not_fit(small_code: LdpcCode) -> None:
    other = build_code(dataclasses.replace(_SMALL_SPEC, seed=_SMALL_SPEC.seed + 1))
    rows = rows_without(small_code, np.arange(5))
    syndrome = np.zeros(small_code.m, dtype=np.uint8)
    llr = np.ones(small_code.n)
    with pytest.raises(InputError, match="rows must be rows_without"):
        decode_syndrome(other, syndrome, llr, rows=rows)
    llr[3] = -1.0  # a symbol said to be 0 whose channel says 1
    with pytest.raises(InputError, match="left out of rows must be > 0"):
        decode_syndrome(small_code, syndrome, llr, rows=rows)
    with pytest.raises(InputError, match="messages must be contiguous"):
        decode_syndrome(small_code, syndrome, np.ones(small_code.n), np.zeros(small_code.edges),
                        rows=rows)  # fmt: skip
    with pytest.raises(InputError, match="zero_positions must lie"):
        rows_without(small_code, np.array([small_code.n]))
    with pytest.raises(InputError, match="zero_positions must be a 1-D integer"):
        rows_without(small_code, np.array([0.5]))


def test_decode_validates_inputs(small_code: LdpcCode) -> None:
    syndrome = np.zeros(small_code.m, dtype=np.uint8)
    llr = np.zeros(small_code.n)
    with pytest.raises(InputError, match="syndrome must hold"):
        decode_syndrome(small_code, syndrome[:-1], llr)
    with pytest.raises(InputError, match="channel_llr must have shape"):
        decode_syndrome(small_code, syndrome, llr[:-1])
    with pytest.raises(InputError, match="channel_llr must be finite"):
        decode_syndrome(small_code, syndrome, np.full(small_code.n, np.nan))
    with pytest.raises(InputError, match="channel_llr must hold floats"):
        decode_syndrome(small_code, syndrome, np.zeros(small_code.n, dtype=np.int64))
    with pytest.raises(InputError, match="messages must"):
        decode_syndrome(small_code, syndrome, llr, np.zeros(3))
    with pytest.raises(InputError, match="messages must be a float64"):
        decode_syndrome(small_code, syndrome, llr, np.zeros(small_code.edges, dtype=np.float32))
    with pytest.raises(InputError, match="max_iterations"):
        decode_syndrome(small_code, syndrome, llr, max_iterations=0)
    with pytest.raises(InputError, match="stall_ratio"):
        decode_syndrome(small_code, syndrome, llr, stall_ratio=1.5)
    with pytest.raises(InputError, match="word must hold"):
        compute_syndrome(small_code, np.zeros(3, dtype=np.uint8))
    with pytest.raises(InputError, match="qber"):
        channel_llr_magnitude(0.5)


def test_phi_tables_follow_the_function() -> None:
    coarse, fine = phi_tables()
    assert np.all(np.diff(coarse) < 0) and np.all(np.diff(fine) < 0)
    x = 3.0
    assert coarse[int(x * 256)] == pytest.approx(-math.log(math.tanh((x + 0.5 / 256) / 2)))
    assert not coarse.flags.writeable


# ---- rate adaptation --------------------------------------------------------------------------


@pytest.mark.parametrize("qber", [0.005, 0.01, 0.02, 0.05, 0.08, 0.11])
def test_plans_for_shipped_codes(qber: float) -> None:
    plan = plan_frames(qber, mother_codes())
    code = plan.code
    assert plan.frame_key_bits + plan.shortened + plan.punctured == code.n
    assert 0 <= plan.punctured <= code.rate_adaptive_symbols
    assert plan.shortened >= 0 and plan.reveal_step >= 1
    # the window reaches from the start (or the code's best) to the eps_frame end
    assert plan.efficiency(0, qber) >= window_end_efficiency(code, 1e-3) - 1e-9
    start = plan.efficiency(plan.punctured, qber)
    wanted = start_efficiency_for(code)
    assert wanted - 1e-3 <= start <= wanted + 1e-9 or plan.punctured == code.rate_adaptive_symbols
    assert 1.0 < wanted < code.typical_efficiency
    leak = code.m - plan.punctured
    assert leak == pytest.approx(start * plan.frame_key_bits * binary_entropy(qber))


def test_plan_validation() -> None:
    codes = mother_codes()
    with pytest.raises(InputError, match="qber_estimate"):
        plan_frames(0.0, codes)
    with pytest.raises(InputError, match="codes"):
        plan_frames(0.02, ())
    with pytest.raises(InputError, match="eps_frame"):
        plan_frames(0.02, codes, eps_frame=0.0)
    assert window_end_efficiency(codes[0], 1e-6) > window_end_efficiency(codes[0], 1e-3)


def test_frame_layout_partitions_every_frame(small_code: LdpcCode) -> None:
    plan = plan_frames(0.03, (small_code,))
    layout = frame_layout(plan, 1234, 5000)
    everything = np.concatenate(
        [layout.punctured_positions, layout.shortened_positions, layout.key_positions]
    )
    assert np.array_equal(np.sort(everything), np.arange(small_code.n))
    assert layout.key_positions.size == plan.frame_key_bits
    assert np.array_equal(np.sort(layout.key_order), np.arange(5000))
    # punctured symbols are revealed last-punctured first
    assert np.array_equal(
        layout.punctured_positions, small_code.puncture_order[: plan.punctured][::-1]
    )
    again = frame_layout(plan, 1234, 5000)
    assert np.array_equal(again.shortened_positions, layout.shortened_positions)
    other = frame_layout(plan, 1235, 5000)
    assert not np.array_equal(other.key_order, layout.key_order)
