"""Density evolution for the BSC (satqkd_core.ldpc_density_evolution): known thresholds."""

from __future__ import annotations

import pytest

from satqkd_core.bits import binary_entropy
from satqkd_core.errors import InputError
from satqkd_core.ldpc_construction import DESIGN_CANDIDATES, MOTHER_CODES
from satqkd_core.ldpc_density_evolution import (
    DegreeDistribution,
    LlrGrid,
    bsc_threshold,
    evolve,
    main,
    optimise_variable_degrees,
)

COARSE = LlrGrid(step=0.1, max_llr=20.0)
REGULAR_3_6 = DegreeDistribution({3: 1.0}, {6: 1.0})


def test_regular_3_6_threshold_matches_richardson_urbanke():
    # Richardson & Urbanke (2001), Table II: BP threshold of the (3,6) ensemble on the BSC 0.084
    threshold = bsc_threshold(REGULAR_3_6, COARSE, low=0.080, high=0.088, tolerance=1e-3)
    assert threshold == pytest.approx(0.084, abs=0.0015)


def test_error_probability_falls_below_threshold_and_sticks_above():
    below = evolve(REGULAR_3_6, 0.080, COARSE)
    above = evolve(REGULAR_3_6, 0.090, COARSE)
    assert below.converged and below.error_probabilities[-1] < 1e-7
    assert not above.converged and above.error_probabilities[-1] > 0.01
    # BP never does worse than the channel it starts from
    assert max(above.error_probabilities) <= 0.090 + 1e-12


def test_optimisation_raises_the_rate_and_still_decodes():
    start = DegreeDistribution({3: 1.0}, {8: 1.0})  # rate 0.625, threshold ~0.06
    better = optimise_variable_degrees(
        start, 0.05, [2, 3, 4, 6, 8, 12], COARSE, trust=0.1, rounds=2
    )
    assert better.design_rate > start.design_rate + 0.005
    assert better.check == {8: 1.0}
    assert evolve(better, 0.05, COARSE).converged


def _crossover_at_efficiency(dist: DegreeDistribution, efficiency: float) -> float:
    """The p < 1/2 at which (1 - R) / h(p) = efficiency (h rises on (0, 1/2))."""
    target, low, high = (1.0 - dist.design_rate) / efficiency, 1e-6, 0.5
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if binary_entropy(middle) < target else (low, middle)
    return low


def test_5_percent_design_decodes_nearer_capacity_than_r70():
    # decision 0045: r70d_n64k (designed by the LP at p = 0.0513) decodes at f = 1.035 (its
    # DE threshold is at f 1.028), where r70_n64k (Elkouss 2009, threshold f 1.041) does not
    specs = {s.name: s for s in MOTHER_CODES + DESIGN_CANDIDATES}
    designed, old = (
        DegreeDistribution(specs[name].var_edge_fractions, specs[name].check_edge_fractions)
        for name in ("r70d_n64k", "r70_n64k")
    )
    assert 0.685 < designed.design_rate < old.design_rate  # plan_frames' pick at Q = 5 %
    p_designed = _crossover_at_efficiency(designed, 1.035)
    assert p_designed > 0.05
    assert evolve(designed, p_designed, COARSE).converged
    assert not evolve(old, _crossover_at_efficiency(old, 1.035), COARSE).converged


def test_design_rate_of_edge_distributions():
    assert REGULAR_3_6.design_rate == pytest.approx(0.5)
    mixed = DegreeDistribution({2: 0.5, 4: 0.5}, {10: 1.0})  # sum lambda/i = 3/8
    assert mixed.design_rate == pytest.approx(1.0 - 0.1 / 0.375)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: COARSE.channel(0.6), "crossover probability"),
        (lambda: DegreeDistribution({}, {6: 1.0}), "var degree distribution"),
        (lambda: DegreeDistribution({3: 1.0}, {1: 1.0}), "check degrees"),
        (lambda: LlrGrid(step=0.0), "step"),
        (lambda: bsc_threshold(REGULAR_3_6, COARSE, low=0.09, high=0.1), "lower bound"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_command_line_names_a_bad_check_distribution(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--design-at", "0.01", "--checks", "80-0.5"])
    assert stopped.value.code == 2
    assert "expected 'degree:fraction" in capsys.readouterr().err
