"""Finite-key secret key length for entanglement-based QKD (BBM92) without decoy states.

Bound: Tomamichel, Lim, Gisin, Renner, "Tight finite-key analysis for quantum cryptography",
Nat. Commun. 3, 634 (2012), arXiv:1103.4130, Theorem 2 / Eq. (2), valid against general
(coherent) attacks, from the entropic uncertainty relation for smooth entropies:

    l <= n (q - h(Q_tol + mu)) - leak_EC - log2(2 / (eps_sec^2 eps_cor)),
    mu = sqrt( (n + k) / (n k) * (k + 1) / k * ln(4 / eps_sec) ),

where n is the number of sifted key-basis (X) bits, k the number of sifted test-basis (Z) bits
(all of them disclosed for parameter estimation), Q_tol the error rate tolerated in the test
basis (the protocol aborts when the observed Z error rate exceeds it), q the preparation
quality (q = 1 for a maximally entangled source measured in two mutually unbiased bases: the
entanglement-based source of the paper's "Device Model", measured by the payload), leak_EC the
bits disclosed by error correction and verification, eps_sec the secrecy and eps_cor the
correctness parameter. h is the binary entropy. The paper's (k + 1) / k factor and ln(4/eps_sec)
come from its Supplementary Note 2 (Serfling's bound for sampling without replacement).

Assumption of the paper kept here: the detection probability does not depend on the basis
choices (passive basis choice with balanced detectors); see docs/bbm92.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from satqkd_core.bits import binary_entropy
from satqkd_core.errors import InputError

__all__ = ["Bbm92KeyLength", "bbm92_key_length", "statistical_deviation"]


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return value


def _fraction(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name}: must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low < number < high):
        raise InputError(f"{name}: must lie in ({low:g}, {high:g}), got {value!r}")
    return number


@dataclass(frozen=True)
class Bbm92KeyLength:
    """The terms of Eq. (2) for one block, and the eps_sec-secret key length (0: no key)."""

    n_key_bits: int
    k_test_bits: int
    qber_tolerance: float
    mu: float
    leak_ec_bits: int
    key_length_bits: int


def statistical_deviation(n_key_bits: int, k_test_bits: int, eps_sec: float) -> float:
    """Get mu of Eq. (2): how far the key-basis error rate may exceed the tested one."""
    n = _count(n_key_bits, "n_key_bits", 1)
    k = _count(k_test_bits, "k_test_bits", 1)
    eps = _fraction(eps_sec, "eps_sec", 0.0, 1.0)
    return math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(4.0 / eps))


def bbm92_key_length(
    n_key_bits: int,
    k_test_bits: int,
    qber_tolerance: float,
    leak_ec_bits: int,
    eps_sec: float,
    eps_cor: float,
    preparation_quality: float = 1.0,
) -> Bbm92KeyLength:
    """Get the Tomamichel et al. (2012) Eq. (2) key length for a block that passed the test
    (observed test-basis error rate <= qber_tolerance; the caller aborts otherwise)."""
    n = _count(n_key_bits, "n_key_bits", 0)
    k = _count(k_test_bits, "k_test_bits", 0)
    q_tol = _fraction(qber_tolerance, "qber_tolerance", -1e-300, 0.5)
    leak = _count(leak_ec_bits, "leak_ec_bits", 0)
    eps_s = _fraction(eps_sec, "eps_sec", 0.0, 1.0)
    eps_c = _fraction(eps_cor, "eps_cor", 0.0, 1.0)
    q = _fraction(preparation_quality, "preparation_quality", 0.0, 1.0 + 1e-12)
    if n == 0 or k == 0:
        # Nothing to extract from, or nothing tested: no key (mu is unbounded without a sample).
        return Bbm92KeyLength(n, k, q_tol, math.inf, leak, 0)
    mu = statistical_deviation(n, k, eps_s)
    # h grows on [0, 1/2]; beyond it the bound gives no key, so clip the argument there.
    entropy = binary_entropy(min(q_tol + mu, 0.5))
    length = n * (q - entropy) - leak - math.log2(2.0 / (eps_s**2 * eps_c))
    return Bbm92KeyLength(n, k, q_tol, mu, leak, max(math.floor(length), 0))
