"""Tests for satqkd_core.finite_key: Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014)."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd_core.errors import InputError
from satqkd_core.finite_key import (
    BOUNDS,
    DecoyStatistics,
    FiniteKeyResult,
    binary_entropy,
    estimate_leak_ec_bits,
    finite_key_length,
    parse_keyrate_request,
)


def lim2014_by_hand(mu, p, nx, mz_errors, nz, eps_sec, eps_cor, leak):
    """The paper's Eqs. (1)-(5) written out once more, independently of the module."""
    mu1, mu2, mu3 = mu
    p1, p2, p3 = p
    ln_term = math.log(21 / eps_sec)
    # tau_n = sum_k p_k e^{-k} k^n / n!  (text under Eq. 2)
    tau0 = p1 * math.exp(-mu1) + p2 * math.exp(-mu2) + p3 * math.exp(-mu3)
    tau1 = p1 * math.exp(-mu1) * mu1 + p2 * math.exp(-mu2) * mu2 + p3 * math.exp(-mu3) * mu3

    def bounds_s0_s1(n1, n2, n3):
        d = math.sqrt((n1 + n2 + n3) / 2 * ln_term)
        n1_plus = math.exp(mu1) / p1 * (n1 + d)
        n2_minus = math.exp(mu2) / p2 * (n2 - d)
        n2_plus = math.exp(mu2) / p2 * (n2 + d)
        n3_minus = math.exp(mu3) / p3 * (n3 - d)
        n3_plus = math.exp(mu3) / p3 * (n3 + d)
        s0 = tau0 * (mu2 * n3_minus - mu3 * n2_plus) / (mu2 - mu3)  # Eq. (2)
        s0 = max(s0, 0.0)
        s1 = (
            tau1
            * mu1
            * (n2_minus - n3_plus - (mu2**2 - mu3**2) / mu1**2 * (n1_plus - s0 / tau0))
            / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
        )  # Eq. (3)
        return s0, max(s1, 0.0)

    s_x0, s_x1 = bounds_s0_s1(*nx)
    s_z0, s_z1 = bounds_s0_s1(*nz)
    m1, m2, m3 = mz_errors
    dm = math.sqrt((m1 + m2 + m3) / 2 * ln_term)
    m2_plus = math.exp(mu2) / p2 * (m2 + dm)
    m3_minus = math.exp(mu3) / p3 * (m3 - dm)
    v_z1 = max(tau1 * (m2_plus - m3_minus) / (mu2 - mu3), 0.0)  # Eq. (4)
    b = v_z1 / s_z1
    c, d = s_z1, s_x1
    gamma = math.sqrt(
        (c + d)
        * (1 - b)
        * b
        / (c * d * math.log(2))
        * math.log2((c + d) / (c * d * (1 - b) * b) * 21**2 / eps_sec**2)
    )  # Eq. (5)
    phi = min(b + gamma, 0.5)
    h = -phi * math.log2(phi) - (1 - phi) * math.log2(1 - phi)
    length = (
        s_x0 + s_x1 * (1 - h) - leak - 6 * math.log2(21 / eps_sec) - math.log2(2 / eps_cor)
    )  # Eq. (1)
    return s_x0, s_x1, s_z0, s_z1, v_z1, phi, max(math.floor(length), 0)


# Counts from a 100 MHz-class downlink model (30 dB loss, 1 % misalignment, dark counts).
KNOWN_CASES = {
    # Positive key; s_X0 > 0 while s_Z0 clips to 0.
    "positive_key": dict(
        mu=(0.8, 0.1, 0.0),
        p=(0.5, 0.25, 0.25),
        nx=(5181901, 351981, 32000),
        mx=(83180, 19200, 16000),
        nz=(323869, 21999, 2000),
        mz=(5199, 1200, 1000),
        eps_sec=1e-9,
        eps_cor=1e-15,
        leak=958823,
    ),
    # Single photons are seen but the block is too small/noisy: l = 0.
    "no_key": dict(
        mu=(0.8, 0.1, 0.0),
        p=(0.5, 0.25, 0.25),
        nx=(100085, 6312, 63),
        mx=(3100, 220, 31),
        nz=(100085, 6312, 63),
        mz=(3100, 220, 31),
        eps_sec=1e-9,
        eps_cor=1e-15,
        leak=24915,
    ),
    # mu_3 > 0 (weak second decoy) exercises the mu_3 terms of Eqs. (2)-(4).
    "weak_decoy": dict(
        mu=(0.6, 0.2, 0.01),
        p=(0.6, 0.3, 0.1),
        nx=(3584614, 617271, 19600),
        mx=(82288, 23518, 5047),
        nz=(658398, 113376, 3600),
        mz=(15114, 4320, 927),
        eps_sec=1e-10,
        eps_cor=1e-15,
        leak=858286,
    ),
}


def _stats(case):
    return DecoyStatistics(case["mu"], case["p"], case["nx"], case["mx"], case["nz"], case["mz"])


@pytest.mark.parametrize("name", sorted(KNOWN_CASES))
def test_known_answers_match_the_paper_equations_by_hand(name):
    case = KNOWN_CASES[name]
    expected = lim2014_by_hand(
        case["mu"], case["p"], case["nx"], case["mz"], case["nz"],
        case["eps_sec"], case["eps_cor"], case["leak"],
    )  # fmt: skip
    result = finite_key_length(_stats(case), case["eps_sec"], case["eps_cor"], case["leak"])
    got = (result.s_x0, result.s_x1, result.s_z0, result.s_z1, result.v_z1, result.phi_x)
    for g, e in zip(got, expected[:6], strict=True):
        assert g == pytest.approx(e, rel=1e-12, abs=1e-9)
    assert result.key_length_bits == expected[6]
    assert result.bounds == "hoeffding"


def test_known_answers_have_the_intended_character():
    positive = finite_key_length(_stats(KNOWN_CASES["positive_key"]), 1e-9, 1e-15, 958823)
    assert positive.s_x0 > 0 and positive.s_z0 == 0.0
    assert 0 < positive.phi_x < 0.5
    # Pinned figures (from the hand computation above) to catch silent regressions.
    assert positive.s_x0 == pytest.approx(66911.25378586, rel=1e-9)
    assert positive.s_x1 == pytest.approx(2312707.42004209, rel=1e-9)
    assert positive.v_z1 == pytest.approx(7693.01791462, rel=1e-9)
    assert positive.phi_x == pytest.approx(0.07406198437, rel=1e-9)
    assert positive.key_length_bits == 539622

    no_key = finite_key_length(_stats(KNOWN_CASES["no_key"]), 1e-9, 1e-15, 24915)
    assert no_key.s_x1 > 0 and 0 < no_key.phi_x < 0.5
    assert no_key.key_length_bits == 0


def test_no_single_photons_gives_phase_error_half_and_no_key():
    stats = DecoyStatistics((0.8, 0.1, 0.0), (0.5, 0.25, 0.25), (10, 1, 0), (0, 0, 0),
                            (10, 1, 0), (0, 0, 0))  # fmt: skip
    result = finite_key_length(stats, 1e-9, 1e-15, 0)
    assert result.s_x1 == 0.0 and result.s_z1 == 0.0
    assert result.phi_x == 0.5
    assert result.key_length_bits == 0


def test_no_single_photon_errors_still_charges_the_sampling_deviation():
    """With v_Z1 = 0 the literal Eq. (5) gives phi_X = 0; the bound charges the deviation of
    one error's worth instead (decision 0010), so phi_X > 0 and the key is shorter."""
    stats = DecoyStatistics((0.8, 0.1, 0.0), (0.5, 0.25, 0.25),
                            (400_000, 30_000, 2_000), (0, 0, 0),
                            (100_000, 8_000, 500), (0, 0, 0))  # fmt: skip
    result = finite_key_length(stats, 1e-9, 1e-15, 0)
    assert result.v_z1 == 0.0 and result.s_z1 > 0 and result.s_x1 > 0
    c, d, b = result.s_z1, result.s_x1, 1.0 / result.s_z1
    gamma = math.sqrt(
        (c + d) * (1 - b) * b / (c * d * math.log(2))
        * math.log2((c + d) / (c * d * (1 - b) * b) * 21**2 / 1e-9**2)
    )  # fmt: skip
    assert result.phi_x == pytest.approx(gamma, rel=1e-12)
    assert 0.0 < result.phi_x < 0.05
    h = -gamma * math.log2(gamma) - (1 - gamma) * math.log2(1 - gamma)
    literal = result.s_x0 + result.s_x1 - 6 * math.log2(21 / 1e-9) - math.log2(2 / 1e-15)
    assert result.key_length_bits == max(math.floor(literal - result.s_x1 * h), 0)
    assert result.key_length_bits < math.floor(literal)


def test_as_dict_is_json_ready_with_contract_keys():
    result = finite_key_length(_stats(KNOWN_CASES["positive_key"]), 1e-9, 1e-15, 958823)
    d = result.as_dict()
    for key in ("s_x0", "s_x1", "s_z1", "v_z1", "phi_x", "key_length_bits", "bounds"):
        assert key in d
    assert isinstance(d["key_length_bits"], int)
    assert d["bounds"] == "hoeffding"
    assert isinstance(result, FiniteKeyResult)
    assert BOUNDS == ("hoeffding",)


def test_binary_entropy_values():
    assert binary_entropy(0.0) == 0.0
    assert binary_entropy(1.0) == 0.0
    assert binary_entropy(0.5) == pytest.approx(1.0)
    assert binary_entropy(0.11) == pytest.approx(0.4999, abs=1e-3)
    with pytest.raises(InputError, match="p: must be a number in"):
        binary_entropy(1.5)


def test_estimate_leak_ec_bits():
    assert estimate_leak_ec_bits(1000, 0.0) == 0
    h_002 = -0.02 * math.log2(0.02) - 0.98 * math.log2(0.98)
    assert estimate_leak_ec_bits(10_000, 0.02, 1.16) == math.ceil(1.16 * 10_000 * h_002)
    with pytest.raises(InputError, match="n_bits"):
        estimate_leak_ec_bits(-1, 0.02)
    with pytest.raises(InputError, match="qber"):
        estimate_leak_ec_bits(10, 1.2)
    with pytest.raises(InputError, match="efficiency"):
        estimate_leak_ec_bits(10, 0.1, 0.9)


# ---- monotonicity (hypothesis) --------------------------------------------------------------


def model_statistics(mu, p, n_pulses, eta, dark, misalignment, q_x):
    """Expected counts of a downlink model: click and error probabilities per pulse."""
    counts = {}
    for basis, q in (("x", q_x * q_x), ("z", (1 - q_x) ** 2)):
        det, err = [], []
        for muk, pk in zip(mu, p, strict=True):
            click = 1 - (1 - dark) * math.exp(-eta * muk)
            wrong = dark / 2 + misalignment * (1 - math.exp(-eta * muk))
            det.append(round(n_pulses * pk * q * click))
            err.append(min(round(n_pulses * pk * q * wrong), det[-1]))
        counts[basis] = (tuple(det), tuple(err))
    return DecoyStatistics(tuple(mu), tuple(p), *counts["x"], *counts["z"])


@st.composite
def modelled_statistics(draw):
    """Counts from the downlink model, so that the bounds are informative (not all clipped)."""
    mu1 = draw(st.floats(0.4, 0.9))
    mu2 = draw(st.floats(0.05, 0.25))
    mu3 = draw(st.sampled_from([0.0, 0.0, 0.005, 0.02]))
    p1 = draw(st.floats(0.4, 0.75))
    p2 = draw(st.floats(0.1, 0.9 - p1))
    return model_statistics(
        mu=(mu1, mu2, mu3),
        p=(p1, p2, 1.0 - p1 - p2),
        n_pulses=10 ** draw(st.floats(8.5, 10.5)),
        eta=10 ** draw(st.floats(-3.5, -2.0)),
        dark=10 ** draw(st.floats(-7.0, -5.0)),
        misalignment=draw(st.floats(0.0, 0.04)),
        q_x=draw(st.floats(0.5, 0.9)),
    )


def _leak_for(stats):
    n = sum(stats.x_detections)
    return estimate_leak_ec_bits(n, sum(stats.x_errors) / n if n else 0.0)


def test_model_yields_positive_keys_in_its_typical_range():
    # Guards the properties below against a generator that only ever yields l = 0.
    positive = 0
    for n_pulses in (1e9, 1e10):
        for eta in (1e-3, 3e-3):
            for misalignment in (0.005, 0.02):
                stats = model_statistics((0.8, 0.1, 0.0), (0.5, 0.25, 0.25), n_pulses, eta,
                                         1e-6, misalignment, 0.7)  # fmt: skip
                result = finite_key_length(stats, 1e-9, 1e-15, _leak_for(stats))
                positive += result.key_length_bits > 0
    assert positive >= 5


@settings(max_examples=150, deadline=None)
@given(
    stats=modelled_statistics(),
    where=st.sampled_from([0, 1]),
    extra=st.integers(1, 5000),
)
def test_more_test_basis_errors_never_lengthen_the_key(stats, where, extra):
    # Extra Z errors at signal or decoy intensity raise v_Z1 (Eq. 4) and phi_X (Eq. 5). Extra
    # errors at mu_3 are excluded: the decoy method subtracts them, so they may lower v_Z1.
    z_errors = list(stats.z_errors)
    z_errors[where] = min(z_errors[where] + extra, stats.z_detections[where])
    worse = DecoyStatistics(stats.intensities, stats.probabilities, stats.x_detections,
                            stats.x_errors, stats.z_detections, tuple(z_errors))  # fmt: skip
    leak = _leak_for(stats)
    base = finite_key_length(stats, 1e-9, 1e-15, leak)
    after = finite_key_length(worse, 1e-9, 1e-15, leak)
    assert after.v_z1 >= base.v_z1
    assert after.phi_x >= base.phi_x
    assert after.key_length_bits <= base.key_length_bits


@settings(max_examples=150, deadline=None)
@given(stats=modelled_statistics(), extra=st.integers(1, 50_000))
def test_more_key_basis_errors_never_lengthen_the_key(stats, extra):
    # X errors enter through the error-correction leakage lambda_EC of Eq. (1).
    x_errors = list(stats.x_errors)
    x_errors[0] = min(x_errors[0] + extra, stats.x_detections[0] // 2)
    x_errors[0] = max(x_errors[0], stats.x_errors[0])
    worse = DecoyStatistics(stats.intensities, stats.probabilities, stats.x_detections,
                            tuple(x_errors), stats.z_detections, stats.z_errors)  # fmt: skip
    base = finite_key_length(stats, 1e-9, 1e-15, _leak_for(stats))
    after = finite_key_length(worse, 1e-9, 1e-15, _leak_for(worse))
    assert after.key_length_bits <= base.key_length_bits


@settings(max_examples=150, deadline=None)
@given(
    stats=modelled_statistics(),
    log_eps=st.tuples(st.floats(-15.0, -3.0), st.floats(-15.0, -3.0)).map(sorted),
)
def test_larger_eps_sec_never_shortens_the_key(stats, log_eps):
    small_eps, large_eps = 10 ** log_eps[0], 10 ** log_eps[1]
    leak = _leak_for(stats)
    strict = finite_key_length(stats, small_eps, 1e-15, leak)
    loose = finite_key_length(stats, large_eps, 1e-15, leak)
    assert loose.key_length_bits >= strict.key_length_bits
    assert loose.s_x1 >= strict.s_x1
    assert loose.phi_x <= strict.phi_x


@settings(max_examples=100, deadline=None)
@given(stats=modelled_statistics())
def test_bounds_are_physical(stats):
    result = finite_key_length(stats, 1e-9, 1e-15, _leak_for(stats))
    assert result.s_x0 >= 0 and result.s_x1 >= 0 and result.s_z0 >= 0 and result.s_z1 >= 0
    assert result.v_z1 >= 0
    assert 0 <= result.phi_x <= 0.5
    assert result.key_length_bits >= 0
    # Vacuum plus single-photon detections cannot exceed all detections by more than the
    # Hoeffding slack (both are lower bounds on disjoint subsets of the X detections).
    assert result.s_x0 + result.s_x1 <= 1.5 * sum(stats.x_detections) + 1


# ---- validation ------------------------------------------------------------------------------

VALID_REQUEST = {
    "intensities": [0.8, 0.1, 0.0],
    "probabilities": [0.5, 0.25, 0.25],
    "x": {"detections": [5181901, 351981, 32000], "errors": [83180, 19200, 16000]},
    "z": {"detections": [323869, 21999, 2000], "errors": [5199, 1200, 1000]},
    "eps_sec": 1e-9,
    "eps_cor": 1e-15,
    "leak_ec_bits": 958823,
    "bounds": "hoeffding",
}


def test_parse_valid_request_round_trips_to_the_known_answer():
    stats, eps_sec, eps_cor, leak, bounds = parse_keyrate_request(copy.deepcopy(VALID_REQUEST))
    assert stats == _stats(KNOWN_CASES["positive_key"])
    assert (eps_sec, eps_cor, leak, bounds) == (1e-9, 1e-15, 958823, "hoeffding")
    assert finite_key_length(stats, eps_sec, eps_cor, leak, bounds).key_length_bits == 539622


def test_parse_defaults_bounds_and_accepts_integral_floats():
    request = copy.deepcopy(VALID_REQUEST)
    del request["bounds"]
    request["leak_ec_bits"] = 958823.0
    request["x"]["detections"][0] = 5.181901e6
    stats, _, _, leak, bounds = parse_keyrate_request(request)
    assert bounds == "hoeffding" and leak == 958823 and stats.x_detections[0] == 5181901


def _with(path, value):
    request = copy.deepcopy(VALID_REQUEST)
    target = request
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return request


_DELETE = object()

VALIDATION_CASES = [
    (("x", "detections", 1), -3, r"^x\.detections\[1\]: must be a non-negative integer, got -3$"),
    (("z", "errors", 2), 1.5, r"^z\.errors\[2\]: must be a non-negative integer, got 1\.5$"),
    (("x", "errors", 0), "7", r"^x\.errors\[0\]: must be a non-negative integer, got '7'$"),
    (("x", "errors", 0), True, r"^x\.errors\[0\]: must be a non-negative integer"),
    (("z", "errors", 1), 30000, r"^z\.errors\[1\]: must not exceed z\.detections\[1\]"),
    (("x", "detections"), [1, 2], r"^x\.detections: must be a list of 3"),
    (("x",), [1, 2, 3], r"^x: must be an object"),
    (
        ("intensities",),
        [0.1, 0.2, 0.0],
        r"^intensities: need mu_1 > mu_2 \+ mu_3 >= 0, got \[0\.1, 0\.2, 0\.0\]$",
    ),
    (("intensities",), [0.8, 0.1, -0.01], r"^intensities: need mu_1 > mu_2 \+ mu_3 >= 0"),
    (("intensities",), [0.8, 0.1, 0.1], r"^intensities: need mu_2 > mu_3"),
    (("intensities",), [0.8, 0.0, 0.0], r"^intensities: need mu_2 > mu_3"),
    (("intensities",), [0.8, "a", 0.0], r"^intensities\[1\]: must be a finite number"),
    (("intensities",), [0.8, 0.1], r"^intensities: must be a list of 3 numbers"),
    (("probabilities",), [0.5, 0.3, 0.1], r"^probabilities: must sum to 1 \(got 0\.9\)$"),
    (("probabilities",), [0.5, 0.5, 0.0], r"^probabilities\[2\]: must be in \(0, 1\]"),
    (("eps_sec",), 0.0, r"^eps_sec: must be a number in \(0, 1\), got 0\.0$"),
    (("eps_sec",), 2, r"^eps_sec: must be a number in \(0, 1\)"),
    (("eps_cor",), "1e-15", r"^eps_cor: must be a number in \(0, 1\)"),
    (("leak_ec_bits",), -1, r"^leak_ec_bits: must be a non-negative integer, got -1$"),
    (("bounds",), "chernoff-ish", r"^bounds: must be one of \[.hoeffding.\]"),
    (("eps_sec",), _DELETE, r"^missing field: eps_sec$"),
    (("eps_cor",), _DELETE, r"^missing field: eps_cor$"),
    (("leak_ec_bits",), _DELETE, r"^missing field: leak_ec_bits$"),
    (("intensities",), _DELETE, r"^missing field: intensities$"),
    (("probabilities",), _DELETE, r"^missing field: probabilities$"),
    (("z",), _DELETE, r"^missing field: z$"),
    (("x", "errors"), _DELETE, r"^missing field: x\.errors$"),
    (("z", "detections"), _DELETE, r"^missing field: z\.detections$"),
]


@pytest.mark.parametrize(("path", "value", "message"), VALIDATION_CASES)
def test_parse_rejects_bad_fields_naming_them(path, value, message):
    with pytest.raises(InputError, match=message):
        parse_keyrate_request(_with(path, value))


def test_parse_rejects_non_object():
    with pytest.raises(InputError, match=r"^request: must be a JSON object, got list$"):
        parse_keyrate_request([1, 2, 3])


def test_decoy_statistics_validates_with_attribute_names():
    case = KNOWN_CASES["positive_key"]
    with pytest.raises(InputError, match=r"^z_errors\[0\]: must not exceed z_detections\[0\]"):
        DecoyStatistics(case["mu"], case["p"], case["nx"], case["mx"], case["nz"],
                        (400000, 0, 0))  # fmt: skip
    with pytest.raises(InputError, match=r"^x_detections\[2\]: must be a non-negative"):
        DecoyStatistics(case["mu"], case["p"], (1, 2, -1), case["mx"], case["nz"], case["mz"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps_sec": 1.0}, r"^eps_sec: must be a number in \(0, 1\)"),
        ({"eps_cor": -1e-15}, r"^eps_cor: must be a number in \(0, 1\)"),
        ({"leak_ec_bits": -5}, r"^leak_ec_bits: must be a non-negative integer"),
        ({"bounds": "asymptotic"}, r"^bounds: must be one of"),
    ],
)
def test_finite_key_length_validates_arguments(kwargs, message):
    args = {"eps_sec": 1e-9, "eps_cor": 1e-15, "leak_ec_bits": 0, "bounds": "hoeffding"}
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        finite_key_length(_stats(KNOWN_CASES["positive_key"]), **args)
    with pytest.raises(InputError, match=r"^stats: must be a DecoyStatistics"):
        finite_key_length({"not": "stats"}, 1e-9, 1e-15, 0)  # type: ignore[arg-type]
