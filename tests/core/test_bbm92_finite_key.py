"""Known-answer tests of the Tomamichel et al. (2012) bound (satqkd_core.bbm92_finite_key)."""

from __future__ import annotations

import math

import pytest

from satqkd_core.bbm92_finite_key import bbm92_key_length, statistical_deviation
from satqkd_core.bits import binary_entropy
from satqkd_core.errors import InputError


def _expected_rate(n: int, q: float, p_test: float, q_tol: float, eps_rob: float) -> float:
    """r = (1 - eps_rob) l / M(n, k) as in the paper's Eq. (3) and Table II.

    Table II's p_x column is read as the test basis's probability (it falls as n grows), so the
    key basis has 1 - p_test, k = n (p_test / (1 - p_test))^2 (the paper's p_x = 1 / (1 +
    sqrt(k/n)) for the key basis) and M = n / (1 - p_test)^2. Leakage 1.1 n h(Q) and the security
    rate eps / l = 1e-14 with eps_sec = eps_cor = eps / 2, solved for l by iteration.
    """
    p_key = 1.0 - p_test
    k = round(n * (p_test / p_key) ** 2)
    length = n
    for _ in range(60):
        eps = 1e-14 * length
        result = bbm92_key_length(
            n, k, q_tol, math.ceil(1.1 * n * binary_entropy(q)), eps / 2, eps / 2
        )
        length = result.key_length_bits
    return (1.0 - eps_rob) * length / (n / p_key**2)


@pytest.mark.parametrize(
    ("n", "q", "rate", "p_test", "q_tol", "eps_rob"),
    [
        (10**6, 0.010, 0.478, 0.125, 0.0173, 0.006),  # Table II, row 5
        (10**6, 0.025, 0.357, 0.137, 0.0321, 0.007),  # Table II, row 6
    ],
)
def test_table_ii_key_rates_for_a_million_bit_block(n, q, rate, p_test, q_tol, eps_rob):
    assert _expected_rate(n, q, p_test, q_tol, eps_rob) == pytest.approx(rate, rel=0.01)


def test_mu_is_the_papers_serfling_deviation():
    n, k, eps = 10**5, 10**4, 1e-10
    expected = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(4 / eps))
    assert statistical_deviation(n, k, eps) == pytest.approx(expected, rel=1e-15)
    assert statistical_deviation(n, k, eps) == pytest.approx(0.0518, abs=1e-4)


def test_rate_tends_to_one_minus_two_h_of_q():
    """Asymptotically (k ~ sqrt(n), leak = n h(Q)) l / n -> 1 - 2 h(Q) (the paper's Discussion)."""
    n, q = 10**12, 0.02
    result = bbm92_key_length(n, 10**9, q, math.ceil(n * binary_entropy(q)), 1e-10, 1e-15)
    assert result.key_length_bits / n == pytest.approx(1 - 2 * binary_entropy(q), abs=2e-3)


def test_the_key_shrinks_with_every_penalty():
    base = bbm92_key_length(50_000, 20_000, 0.03, 12_000, 1e-10, 1e-15).key_length_bits
    assert base > 0
    assert bbm92_key_length(50_000, 20_000, 0.04, 12_000, 1e-10, 1e-15).key_length_bits < base
    assert bbm92_key_length(50_000, 5_000, 0.03, 12_000, 1e-10, 1e-15).key_length_bits < base
    assert (
        bbm92_key_length(50_000, 20_000, 0.03, 13_000, 1e-10, 1e-15).key_length_bits == base - 1000
    )
    assert bbm92_key_length(50_000, 20_000, 0.03, 12_000, 1e-20, 1e-15).key_length_bits < base


def test_no_test_sample_or_too_much_noise_gives_no_key():
    assert bbm92_key_length(10_000, 0, 0.01, 0, 1e-10, 1e-15).key_length_bits == 0
    leak = math.ceil(1.1 * 10**6 * binary_entropy(0.11))
    assert bbm92_key_length(10**6, 10**5, 0.11, leak, 1e-10, 1e-15).key_length_bits == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_key_bits": -1}, "n_key_bits"),
        ({"qber_tolerance": 0.5}, "qber_tolerance"),
        ({"eps_sec": 0.0}, "eps_sec"),
        ({"eps_cor": 1.5}, "eps_cor"),
        ({"leak_ec_bits": 1.5}, "leak_ec_bits"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    args = {
        "n_key_bits": 1000,
        "k_test_bits": 100,
        "qber_tolerance": 0.02,
        "leak_ec_bits": 10,
        "eps_sec": 1e-10,
        "eps_cor": 1e-15,
        **kwargs,
    }
    with pytest.raises(InputError, match=message):
        bbm92_key_length(**args)
