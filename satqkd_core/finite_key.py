"""Finite-key secret key length for decoy-state BB84 with two decoys.

Implements Lim, Curty, Walenta, Xu, Zbinden, "Concise security bounds for practical
decoy-state quantum key distribution", PRA 89, 022307 (2014), arXiv:1311.7129: main-text
Eqs. (1)-(5) with the paper's own Hoeffding finite-size terms (Appendix A, Eqs. A1-A10, with
every error term set to eps_sec / 21 as in Eq. B4).

Notation follows the paper: X is the key basis, Z the test basis; intensity index 0, 1, 2 is
mu_1 (signal), mu_2 (decoy), mu_3 (vacuum or weak decoy), with mu_1 > mu_2 + mu_3 and
mu_2 > mu_3 >= 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from satqkd_core.errors import InputError

BOUNDS = ("hoeffding",)

# Tolerance on sum(p_k) == 1: JSON decimals such as 0.7 + 0.2 + 0.1 miss 1 by one ulp.
_PROBABILITY_SUM_TOLERANCE = 1e-9

# Mean photon number per pulse above which an intensity is not a weak-coherent QKD source (and
# exp(mu) in the decoy bounds would overflow near 710).
MAX_INTENSITY = 100.0

# Counts are 64-bit event counters; anything larger is a corrupted file, not an observation.
MAX_COUNT = 2**63 - 1


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format_list(values: Sequence[object]) -> str:
    return "[" + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values) + "]"


def _check_triple_of_numbers(values: object, field: str) -> tuple[float, float, float]:
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise InputError(f"{field}: must be a list of 3 numbers, got {values!r}")
    out = []
    for i, v in enumerate(values):
        if not _is_number(v) or not math.isfinite(v):
            raise InputError(f"{field}[{i}]: must be a finite number, got {v!r}")
        out.append(float(v))
    return out[0], out[1], out[2]


def _check_intensities(values: object, field: str) -> tuple[float, float, float]:
    mu1, mu2, mu3 = _check_triple_of_numbers(values, field)
    shown = _format_list(list(cast("Sequence[object]", values)))
    # Eqs. (2)-(3) need both orderings (Sec. II of the paper): mu_1 > mu_2 + mu_3 bounds the
    # multi-photon terms, mu_2 > mu_3 keeps the decoy denominators positive.
    if not (mu3 >= 0.0 and mu1 > mu2 + mu3):
        raise InputError(f"{field}: need mu_1 > mu_2 + mu_3 >= 0, got {shown}")
    if not mu2 > mu3:
        raise InputError(f"{field}: need mu_2 > mu_3, got {shown}")
    if mu1 > MAX_INTENSITY:
        raise InputError(
            f"{field}: mean photon numbers must be at most {MAX_INTENSITY:g}, got {shown}"
        )
    return mu1, mu2, mu3


def _check_probabilities(values: object, field: str) -> tuple[float, float, float]:
    p = _check_triple_of_numbers(values, field)
    for i, pk in enumerate(p):
        # p_k appears as a divisor in n^{+/-}_k, so a zero probability is not usable.
        if not 0.0 < pk <= 1.0:
            shown = cast("Sequence[object]", values)[i]
            raise InputError(f"{field}[{i}]: must be in (0, 1], got {shown!r}")
    total = math.fsum(p)
    if abs(total - 1.0) > _PROBABILITY_SUM_TOLERANCE:
        raise InputError(f"{field}: must sum to 1 (got {total:.12g})")
    return p


def _check_count(value: object, field: str) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # JSON writers may print large counts as 1e6
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"{field}: must be a non-negative integer, got {value!r}")
    if value > MAX_COUNT:
        bits = value.bit_length()
        raise InputError(f"{field}: must be at most 2**63 - 1, got a {bits}-bit number")
    return value


def _check_counts(values: object, field: str, index_style: str) -> tuple[int, int, int]:
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise InputError(f"{field}: must be a list of 3 non-negative integers, got {values!r}")
    c = [_check_count(v, index_style.format(field=field, i=i)) for i, v in enumerate(values)]
    return c[0], c[1], c[2]


def _check_errors_within(
    detections: tuple[int, int, int], errors: tuple[int, int, int], det_field: str, err_field: str
) -> None:
    for i in range(3):
        if errors[i] > detections[i]:
            raise InputError(
                f"{err_field}[{i}]: must not exceed {det_field}[{i}] "
                f"({errors[i]} > {detections[i]})"
            )


def _check_epsilon(value: object, field: str) -> float:
    if not _is_number(value) or not 0.0 < value < 1.0:
        raise InputError(f"{field}: must be a number in (0, 1), got {value!r}")
    return float(value)


def _check_bounds_name(value: object, field: str) -> str:
    if value not in BOUNDS:
        raise InputError(f"{field}: must be one of {_format_list(BOUNDS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class DecoyStatistics:
    """Observed detections and bit errors per basis and intensity for one post-processing block."""

    intensities: tuple[float, float, float]
    probabilities: tuple[float, float, float]
    x_detections: tuple[int, int, int]
    x_errors: tuple[int, int, int]
    z_detections: tuple[int, int, int]
    z_errors: tuple[int, int, int]

    def __post_init__(self) -> None:
        style = "{field}[{i}]"
        rates = {
            "intensities": _check_intensities(self.intensities, "intensities"),
            "probabilities": _check_probabilities(self.probabilities, "probabilities"),
        }
        counts = {
            "x_detections": _check_counts(self.x_detections, "x_detections", style),
            "x_errors": _check_counts(self.x_errors, "x_errors", style),
            "z_detections": _check_counts(self.z_detections, "z_detections", style),
            "z_errors": _check_counts(self.z_errors, "z_errors", style),
        }
        for basis in ("x", "z"):
            det, err = f"{basis}_detections", f"{basis}_errors"
            _check_errors_within(counts[det], counts[err], det, err)
        checked: dict[str, object] = {**rates, **counts}
        for name, value in checked.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class FiniteKeyResult:
    """Decoy-state bounds and the extractable secret key length for one block."""

    s_x0: float
    s_x1: float
    s_z0: float
    s_z1: float
    v_z1: float
    phi_x: float
    key_length_bits: int
    bounds: str

    def as_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict (the output fields of docs/keyrate.md)."""
        return {
            "s_x0": self.s_x0,
            "s_x1": self.s_x1,
            "s_z0": self.s_z0,
            "s_z1": self.s_z1,
            "v_z1": self.v_z1,
            "phi_x": self.phi_x,
            "key_length_bits": self.key_length_bits,
            "bounds": self.bounds,
        }


def binary_entropy(p: float) -> float:
    """Return the binary entropy h(p) in bits, with h(0) = h(1) = 0."""
    if not _is_number(p) or not 0.0 <= p <= 1.0:
        raise InputError(f"p: must be a number in [0, 1], got {p!r}")
    if p == 0.0 or p == 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


def _photon_number_probabilities(
    mu: tuple[float, float, float], p: tuple[float, float, float]
) -> tuple[float, float]:
    """Return (tau_0, tau_1): probability that Alice sends 0 or 1 photons (text below Eq. 2)."""
    tau0 = math.fsum(pk * math.exp(-muk) for muk, pk in zip(mu, p, strict=True))
    tau1 = math.fsum(pk * math.exp(-muk) * muk for muk, pk in zip(mu, p, strict=True))
    return tau0, tau1


def _hoeffding_range(
    counts: tuple[int, int, int],
    mu: tuple[float, float, float],
    p: tuple[float, float, float],
    eps_sec: float,
) -> tuple[list[float], list[float]]:
    """Return (lower, upper) lists of e^{mu_k}/p_k (c_k -/+ delta): the n^{+/-} below Eq. (2)."""
    # delta(n, eps) = sqrt(n/2 ln(1/eps)) from Eq. (A1), with eps = eps_sec/21 (Eq. B4).
    delta = math.sqrt(sum(counts) / 2.0 * math.log(21.0 / eps_sec))
    lower = [math.exp(mu[k]) / p[k] * (counts[k] - delta) for k in range(3)]
    upper = [math.exp(mu[k]) / p[k] * (counts[k] + delta) for k in range(3)]
    return lower, upper


def _vacuum_and_single_photon_lower_bounds(
    detections: tuple[int, int, int],
    mu: tuple[float, float, float],
    p: tuple[float, float, float],
    eps_sec: float,
) -> tuple[float, float]:
    """Return (s_0, s_1) lower bounds on vacuum and single-photon detections, Eqs. (2)-(3)."""
    mu1, mu2, mu3 = mu
    tau0, tau1 = _photon_number_probabilities(mu, p)
    n_minus, n_plus = _hoeffding_range(detections, mu, p, eps_sec)
    # Eq. (2).
    s0 = tau0 * (mu2 * n_minus[2] - mu3 * n_plus[1]) / (mu2 - mu3)
    # Clip: the true vacuum count is >= 0, so max(0, bound) is still a valid lower bound; it is
    # applied before Eq. (3), where s_0 enters with a positive coefficient.
    s0 = max(s0, 0.0)
    # Eq. (3).
    multi_photon_weight = (mu2**2 - mu3**2) / mu1**2
    multi_photon_term = multi_photon_weight * (n_plus[0] - s0 / tau0)
    numerator = tau1 * mu1 * (n_minus[1] - n_plus[2] - multi_photon_term)
    s1 = numerator / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
    # Clip: a negative lower bound carries no information; the true count is >= 0.
    return s0, max(s1, 0.0)


def _single_photon_error_upper_bound(
    errors: tuple[int, int, int],
    mu: tuple[float, float, float],
    p: tuple[float, float, float],
    eps_sec: float,
) -> float:
    """Return v_1, the upper bound on bit errors among single-photon detections, Eq. (4)."""
    _, mu2, mu3 = mu
    _, tau1 = _photon_number_probabilities(mu, p)
    m_minus, m_plus = _hoeffding_range(errors, mu, p, eps_sec)
    v1 = tau1 * (m_plus[1] - m_minus[2]) / (mu2 - mu3)
    # Clip: an error count is >= 0; a negative upper bound only arises from the vacuum term.
    return max(v1, 0.0)


def _gamma(a: float, b: float, c: float, d: float) -> float:
    """Return the random-sampling deviation gamma(a, b, c, d) of Eq. (5)."""
    if b <= 0.0:
        # b (1-b) log(1 / (b (1-b))) -> 0 as b -> 0, so this is the formula's limit.
        return 0.0
    spread = (c + d) * (1.0 - b) * b / (c * d * math.log(2.0))
    log_term = math.log2((c + d) / (c * d * (1.0 - b) * b) * 21.0**2 / a**2)
    # Clip: a negative log term means the deviation is below resolution, never negative.
    return math.sqrt(spread * max(log_term, 0.0))


def _phase_error_rate_upper_bound(v_z1: float, s_z1: float, s_x1: float, eps_sec: float) -> float:
    """Return phi_X, the upper bound on the single-photon phase error rate in X, Eq. (5)."""
    # Clip to 0.5: with no single-photon events in either basis nothing can be inferred, and a
    # phase error rate above 1/2 means no secrecy, so h(phi) = 1 is the conservative value.
    if s_z1 <= 0.0 or s_x1 <= 0.0:
        return 0.5
    b = v_z1 / s_z1
    # Eq. (5)'s deviation has the shape b (1 - b) log(1 / (b (1 - b))), which goes to 0 with b:
    # read literally it charges no sampling deviation at all when v_Z1 = 0, as if a test sample
    # without (bounded) errors proved the key basis free of phase errors. Evaluate the deviation
    # at no less than one error's worth, b = 1 / s_Z1 (the resolution of the observed rate). This
    # equals the paper wherever v_Z1 >= 1 and is conservative below (decision 0010).
    b_deviation = max(b, 1.0 / s_z1)
    if b_deviation >= 0.5:
        return 0.5
    return min(b + _gamma(eps_sec, b_deviation, s_z1, s_x1), 0.5)


def finite_key_length(
    stats: DecoyStatistics,
    eps_sec: float,
    eps_cor: float,
    leak_ec_bits: int,
    bounds: str = "hoeffding",
) -> FiniteKeyResult:
    """Return the Lim et al. (2014) decoy-state bounds and eps_sec-secret key length, Eq. (1)."""
    if not isinstance(stats, DecoyStatistics):
        raise InputError(f"stats: must be a DecoyStatistics, got {type(stats).__name__}")
    eps_sec = _check_epsilon(eps_sec, "eps_sec")
    eps_cor = _check_epsilon(eps_cor, "eps_cor")
    leak_ec_bits = _check_count(leak_ec_bits, "leak_ec_bits")
    bounds = _check_bounds_name(bounds, "bounds")

    mu, p = stats.intensities, stats.probabilities
    s_x0, s_x1 = _vacuum_and_single_photon_lower_bounds(stats.x_detections, mu, p, eps_sec)
    s_z0, s_z1 = _vacuum_and_single_photon_lower_bounds(stats.z_detections, mu, p, eps_sec)
    v_z1 = _single_photon_error_upper_bound(stats.z_errors, mu, p, eps_sec)
    phi_x = _phase_error_rate_upper_bound(v_z1, s_z1, s_x1, eps_sec)

    # Eq. (1).
    length = (
        s_x0
        + s_x1 * (1.0 - binary_entropy(phi_x))
        - leak_ec_bits
        - 6.0 * math.log2(21.0 / eps_sec)
        - math.log2(2.0 / eps_cor)
    )
    # Clip: a negative length means no secret key can be extracted from this block.
    key_length_bits = max(math.floor(length), 0)
    return FiniteKeyResult(
        s_x0=s_x0,
        s_x1=s_x1,
        s_z0=s_z0,
        s_z1=s_z1,
        v_z1=v_z1,
        phi_x=phi_x,
        key_length_bits=key_length_bits,
        bounds=bounds,
    )


def estimate_leak_ec_bits(n_bits: int, qber: float, efficiency: float = 1.16) -> int:
    """Return f n h(Q) rounded up: assumed EC leakage, for the pre-EC feasibility check only."""
    n_bits = _check_count(n_bits, "n_bits")
    if not _is_number(qber) or not 0.0 <= qber <= 1.0:
        raise InputError(f"qber: must be a number in [0, 1], got {qber!r}")
    if not _is_number(efficiency) or not (math.isfinite(efficiency) and efficiency >= 1.0):
        raise InputError(f"efficiency: must be a finite number >= 1, got {efficiency!r}")
    return math.ceil(efficiency * n_bits * binary_entropy(float(qber)))


def _require(obj: Mapping[str, Any], key: str, prefix: str = "") -> Any:
    if key not in obj:
        raise InputError(f"missing field: {prefix}{key}")
    return obj[key]


def _parse_basis(
    obj: Mapping[str, Any], basis: str
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    section = _require(obj, basis)
    if not isinstance(section, Mapping):
        raise InputError(f"{basis}: must be an object with detections and errors, got {section!r}")
    style = "{field}[{i}]"
    detections = _check_counts(
        _require(section, "detections", f"{basis}."), f"{basis}.detections", style
    )
    errors = _check_counts(_require(section, "errors", f"{basis}."), f"{basis}.errors", style)
    _check_errors_within(detections, errors, f"{basis}.detections", f"{basis}.errors")
    return detections, errors


def parse_keyrate_request(obj: object) -> tuple[DecoyStatistics, float, float, int, str]:
    """Validate a docs/keyrate.md request; return (stats, eps_sec, eps_cor, leak, bounds)."""
    if not isinstance(obj, Mapping):
        raise InputError(f"request: must be a JSON object, got {type(obj).__name__}")
    intensities = _check_intensities(_require(obj, "intensities"), "intensities")
    probabilities = _check_probabilities(_require(obj, "probabilities"), "probabilities")
    x_detections, x_errors = _parse_basis(obj, "x")
    z_detections, z_errors = _parse_basis(obj, "z")
    eps_sec = _check_epsilon(_require(obj, "eps_sec"), "eps_sec")
    eps_cor = _check_epsilon(_require(obj, "eps_cor"), "eps_cor")
    leak_ec_bits = _check_count(_require(obj, "leak_ec_bits"), "leak_ec_bits")
    bounds = _check_bounds_name(obj.get("bounds", "hoeffding"), "bounds")
    stats = DecoyStatistics(
        intensities=intensities,
        probabilities=probabilities,
        x_detections=x_detections,
        x_errors=x_errors,
        z_detections=z_detections,
        z_errors=z_errors,
    )
    return stats, eps_sec, eps_cor, leak_ec_bits, bounds
