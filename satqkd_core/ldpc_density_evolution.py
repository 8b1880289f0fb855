"""Discretised density evolution of sum-product decoding on the BSC, and degree optimisation.

An offline design tool for the mother codes of satqkd_core/ldpc_construction.py (not used in
a pass). It follows the quantised density evolution of Richardson and Urbanke ("The capacity
of low-density parity-check codes under message-passing decoding", IEEE Trans. Inf. Theory
47, 599 (2001); "Modern Coding Theory", 2008, sec. 4.5) as used by Chung, Forney,
Richardson and Urbanke (IEEE Commun. Lett. 5, 58 (2001)):

- messages are log-likelihood ratios on a uniform grid of `step` up to +-`max_llr` (larger
  values saturate); under the all-zero codeword a density is a vector of probabilities;
- variable nodes add the channel LLR and d - 1 incoming messages: a convolution, done for the
  whole edge-perspective polynomial lambda at once in the Fourier domain;
- check nodes combine two messages by the exact rule 2 atanh(tanh(a/2) tanh(b/2)), quantised
  to the grid by a table (the pairwise "R" operation); a degree-d node applies it d - 2 times,
  done by binary powers. Magnitude and sign are carried as (p+ + p-, p+ - p-), whose pairwise
  products give the output's magnitude density and sign balance.

`bsc_threshold` finds the largest crossover probability at which the error probability of the
messages goes to zero. `optimise_variable_degrees` maximises the design rate for a fixed check
distribution by the linear program of Richardson, Shokrollahi and Urbanke ("Design of
capacity-approaching irregular low-density parity-check codes", IEEE Trans. Inf. Theory 47,
619 (2001), sec. III): the error probabilities of every candidate degree along the trajectory
of the current distribution are the constraints, the rate the objective, a trust region keeps
the linearisation valid, and the stability condition lambda_2 rho'(1) < 1 / B(p) is kept.

`python -m satqkd_core.ldpc_density_evolution --help` runs it from the command line.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from satqkd_core.bits import binary_entropy
from satqkd_core.errors import InputError

__all__ = [
    "DegreeDistribution",
    "Evolution",
    "LlrGrid",
    "bsc_threshold",
    "evolve",
    "main",
    "optimise_variable_degrees",
]


@dataclass(frozen=True)
class DegreeDistribution:
    """Edge-perspective degree distributions lambda (variables) and rho (checks)."""

    var: dict[int, float]
    check: dict[int, float]

    def __post_init__(self) -> None:
        for name, poly in (("var", self.var), ("check", self.check)):
            if not poly:
                raise InputError(f"{name} degree distribution must not be empty")
            if any(int(d) != d or d < 1 for d in poly):
                raise InputError(f"{name} degrees must be integers >= 1")
            if any(not w >= 0.0 for w in poly.values()) or not sum(poly.values()) > 0.0:
                raise InputError(f"{name} edge fractions must be >= 0 with a positive sum")
        if min(d for d, w in self.check.items() if w > 0) < 2:
            raise InputError("check degrees must be >= 2")

    def normalised(self) -> DegreeDistribution:
        """The same distribution with each polynomial summing to one (zeros dropped)."""
        return DegreeDistribution(_normalise(self.var), _normalise(self.check))

    @property
    def design_rate(self) -> float:
        """1 - (sum rho_j / j) / (sum lambda_i / i)."""
        lam, rho = _normalise(self.var), _normalise(self.check)
        return 1.0 - sum(w / d for d, w in rho.items()) / sum(w / d for d, w in lam.items())


def _normalise(poly: dict[int, float]) -> dict[int, float]:
    total = sum(poly.values())
    return {int(d): w / total for d, w in sorted(poly.items()) if w > 0.0}


# (p+ + p-, p+ - p-) over the magnitudes 0, step, ..., max_llr: a message density by its
# magnitude and its sign balance (the check node's natural form)
SignedMagnitudes = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class LlrGrid:
    """Quantisation of the LLR messages: values k * step for |k| <= max_llr / step."""

    step: float = 0.05
    max_llr: float = 25.0
    half: int = field(init=False)
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.step <= 1.0 or not math.isfinite(self.step):
            raise InputError(f"step must lie in (0, 1], got {self.step}")
        if not 1.0 < self.max_llr <= 36.0:
            raise InputError(f"max_llr must lie in (1, 36], got {self.max_llr}")
        half = round(self.max_llr / self.step)
        object.__setattr__(self, "half", half)
        t = np.tanh(np.arange(half + 1) * self.step / 2.0)
        combined = 2.0 * np.arctanh(np.minimum(np.outer(t, t), 1.0 - 1e-16))
        table = np.minimum(np.rint(combined / self.step), half).astype(np.int64).ravel()
        object.__setattr__(self, "_table", table)

    def channel(self, p: float) -> np.ndarray:
        """Density of the BSC(p) channel LLR under the all-zero word (2 half + 1 bins)."""
        if not 0.0 < p < 0.5:
            raise InputError(f"crossover probability must lie in (0, 0.5), got {p}")
        k = min(self.half, round(math.log((1.0 - p) / p) / self.step))
        density = np.zeros(2 * self.half + 1)
        density[self.half + k] += 1.0 - p
        density[self.half - k] += p
        return density

    def error_probability(self, density: np.ndarray) -> float:
        """P(message < 0) + P(message = 0) / 2."""
        return float(density[: self.half].sum() + 0.5 * density[self.half])

    def box_plus(self, x: SignedMagnitudes, y: SignedMagnitudes) -> SignedMagnitudes:
        """Check-node combination of two (magnitude density, sign balance) pairs."""
        size = self.half + 1
        a = np.bincount(self._table, np.outer(x[0], y[0]).ravel(), size)
        b = np.bincount(self._table, np.outer(x[1], y[1]).ravel(), size)
        return a, b


_STALL_WINDOW = 10  # iterations over which the error probability must fall


@dataclass
class Evolution:
    """Outcome of density evolution at one crossover probability."""

    converged: bool
    iterations: int
    error_probabilities: list[float]
    check_densities: list[np.ndarray]  # check-to-variable densities, per iteration (if kept)


def _check_update(grid: LlrGrid, density: np.ndarray, rho: dict[int, float]) -> np.ndarray:
    h = grid.half
    pos, neg = density[h:].copy(), np.zeros(h + 1)
    neg[1:] = density[h - 1 :: -1]
    base = (pos + neg, pos - neg)
    squares = [base]
    out_a, out_b = np.zeros(h + 1), np.zeros(h + 1)
    for degree, weight in rho.items():
        exponent, bit = degree - 1, 0
        result: SignedMagnitudes | None = None
        while exponent:
            while len(squares) <= bit:
                squares.append(grid.box_plus(squares[-1], squares[-1]))
            if exponent & 1:
                result = squares[bit] if result is None else grid.box_plus(result, squares[bit])
            exponent >>= 1
            bit += 1
        if result is None:  # degree 1 carries no check (DegreeDistribution refuses it)
            raise InputError(f"check degree {degree} must be >= 2")
        out_a += weight * result[0]
        out_b += weight * result[1]
    out = np.empty(2 * h + 1)
    out[h:] = 0.5 * (out_a + out_b)
    out[: h + 1] = (0.5 * (out_a - out_b))[::-1]
    out[h] = out_a[0]
    return np.maximum(out, 0.0)


class _VariableUpdate:
    """Variable-node step for one channel and a set of degrees, by FFT on a circular grid."""

    def __init__(self, grid: LlrGrid, channel: np.ndarray, max_degree: int) -> None:
        self.grid = grid
        self.size = 1 << math.ceil(math.log2(max_degree * (2 * grid.half + 1) + 1))
        self.channel_fft = np.fft.rfft(self._circular(channel))
        self.max_degree = max_degree

    def _circular(self, density: np.ndarray) -> np.ndarray:
        h, circ = self.grid.half, np.zeros(self.size)
        circ[: h + 1] = density[h:]
        circ[self.size - h :] = density[:h]
        return circ

    def _linear(self, spectrum: np.ndarray) -> np.ndarray:
        h, circ = self.grid.half, np.fft.irfft(spectrum, self.size)
        half = self.size // 2
        out = np.empty(2 * h + 1)
        out[h:] = circ[: h + 1]
        out[-1] += circ[h + 1 : half].sum()
        out[:h] = circ[self.size - h :]
        out[0] += circ[half : self.size - h].sum()
        out = np.maximum(out, 0.0)
        normalised: np.ndarray = out / float(out.sum())
        return normalised

    def powers(
        self, check_density: np.ndarray, degrees: list[int]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Spectra of channel * Q^(d-1) for each degree d, in ascending order of d."""
        spectrum = np.fft.rfft(self._circular(check_density))
        power = self.channel_fft.copy()
        done = 1
        for degree in sorted(degrees):
            while done < degree:
                power = power * spectrum
                done += 1
            yield degree, power

    def __call__(self, check_density: np.ndarray, lam: dict[int, float]) -> np.ndarray:
        total = np.zeros(self.size // 2 + 1, dtype=np.complex128)
        for degree, power in self.powers(check_density, list(lam)):
            total += lam[degree] * power
        return self._linear(total)

    def degree_errors(self, check_density: np.ndarray, degrees: list[int]) -> np.ndarray:
        """Error probability of a degree-d variable's outgoing message, for each d."""
        errors = {
            d: self.grid.error_probability(self._linear(s))
            for d, s in self.powers(check_density, degrees)
        }
        return np.array([errors[d] for d in degrees])


def evolve(
    distribution: DegreeDistribution,
    p: float,
    grid: LlrGrid | None = None,
    *,
    max_iterations: int = 2000,
    target_error: float = 1e-7,
    keep_densities: bool = False,
) -> Evolution:
    """Run density evolution on BSC(p) until the message error probability falls below
    `target_error` (converged), stops falling, or `max_iterations` pass."""
    grid = LlrGrid() if grid is None else grid
    dist = distribution.normalised()
    channel = grid.channel(p)
    update = _VariableUpdate(grid, channel, max(dist.var))
    message = channel
    errors = [grid.error_probability(message)]
    kept: list[np.ndarray] = []
    for iteration in range(1, max_iterations + 1):
        check = _check_update(grid, message, dist.check)
        if keep_densities:
            kept.append(check)
        message = update(check, dist.var)
        errors.append(grid.error_probability(message))
        if errors[-1] < target_error:
            return Evolution(True, iteration, errors, kept)
        if iteration > _STALL_WINDOW and errors[-1] >= errors[-1 - _STALL_WINDOW] * (1.0 - 1e-6):
            break  # at (or crawling towards) a fixed point with errors left
    return Evolution(False, len(errors) - 1, errors, kept)


def bsc_threshold(
    distribution: DegreeDistribution,
    grid: LlrGrid | None = None,
    *,
    low: float = 0.001,
    high: float = 0.2,
    tolerance: float = 1e-4,
    max_iterations: int = 2000,
) -> float:
    """Largest crossover probability (within `tolerance`, by bisection) at which density
    evolution converges; `low` must converge and `high` must not."""
    grid = LlrGrid() if grid is None else grid
    if not 0.0 < low < high < 0.5:
        raise InputError(f"need 0 < low < high < 0.5, got {low}, {high}")
    if not evolve(distribution, low, grid, max_iterations=max_iterations).converged:
        raise InputError(f"density evolution does not converge at the lower bound {low}")
    if evolve(distribution, high, grid, max_iterations=max_iterations).converged:
        raise InputError(f"density evolution converges at the upper bound {high}")
    while high - low > tolerance:
        middle = 0.5 * (low + high)
        if evolve(distribution, middle, grid, max_iterations=max_iterations).converged:
            low = middle
        else:
            high = middle
    return low


def optimise_variable_degrees(
    start: DegreeDistribution,
    p: float,
    degrees: list[int],
    grid: LlrGrid | None = None,
    *,
    rounds: int = 8,
    trust: float = 0.03,
    margin: float = 0.02,
    max_degree2_share: float = 0.9,
) -> DegreeDistribution:
    """Raise the design rate of `start` (check distribution kept) while DE still converges at
    p; `degrees` are the candidate variable degrees. Each round runs DE on the current
    distribution and solves an LP: maximise sum lambda_i / i subject to sum lambda_i e_i(l) <=
    max(x_l, (1 - margin) x_(l-1)) at every iteration l (e_i(l): error of a degree-i variable
    given the check densities of iteration l; x_l: the current trajectory, so every iteration
    still makes progress), |lambda - current| <= trust,
    stability, and fewer degree-2 variables than max_degree2_share checks."""
    from ortools.linear_solver import pywraplp  # type: ignore[import-untyped]

    grid = LlrGrid() if grid is None else grid
    current = start.normalised()
    run = evolve(current, p, grid, keep_densities=True)
    if not run.converged:
        raise InputError(f"the start distribution does not converge at p = {p}")
    rho = current.check
    bhattacharyya = 2.0 * math.sqrt(p * (1.0 - p))
    rho_prime = sum(w * (d - 1) for d, w in rho.items())
    inverse_check_mean = sum(w / d for d, w in rho.items())
    candidates = sorted(set(degrees) | set(current.var))
    for _ in range(rounds):
        update = _VariableUpdate(grid, grid.channel(p), max(candidates))
        rows = [update.degree_errors(q, candidates) for q in run.check_densities]
        solver = pywraplp.Solver.CreateSolver("GLOP")
        lam = {d: solver.NumVar(0.0, 1.0, f"l{d}") for d in candidates}
        solver.Add(sum(lam.values()) == 1.0)
        for d in candidates:
            solver.Add(lam[d] <= current.var.get(d, 0.0) + trust)
            solver.Add(lam[d] >= current.var.get(d, 0.0) - trust)
        errors = run.error_probabilities
        for row, before, after in zip(rows, errors[:-1], errors[1:], strict=True):
            if before > 1e-6:  # below, the stability condition governs
                bound = max(after, (1.0 - margin) * before)
                solver.Add(sum(e * lam[d] for d, e in zip(candidates, row, strict=True)) <= bound)
        if 2 in lam:
            solver.Add(lam[2] * rho_prime * bhattacharyya <= 0.999)
            solver.Add(lam[2] / 2.0 <= max_degree2_share * inverse_check_mean)
        solver.Maximize(sum(lam[d] / d for d in candidates))
        if solver.Solve() != pywraplp.Solver.OPTIMAL:
            break
        proposal = DegreeDistribution(
            {d: max(0.0, v.solution_value()) for d, v in lam.items()}, rho
        ).normalised()
        run = evolve(proposal, p, grid, keep_densities=True)
        if not run.converged or proposal.design_rate <= current.design_rate:
            break
        current = proposal
    return DegreeDistribution({d: round(w, 5) for d, w in current.var.items() if w >= 5e-5}, rho)


def _polynomial(text: str) -> dict[int, float]:
    try:
        pairs = [item.split(":") for item in text.split(",")]
        return {int(d): float(w) for d, w in pairs}
    except ValueError:
        raise InputError(f"expected 'degree:fraction,...', got {text!r}") from None


def design(
    checks: dict[int, float],
    p: float,
    degrees: list[int],
    grid: LlrGrid,
    start: dict[int, float],
    stages: int = 6,
) -> DegreeDistribution:
    """Lambda for these checks at crossover p: `stages` LP runs of 6 rounds from `start`,
    trust region 0.05 for the first three, 0.02 after (the runs of decision 0041)."""
    dist = DegreeDistribution(start, checks)
    for stage in range(stages):
        trust = 0.05 if stage < 3 else 0.02
        dist = optimise_variable_degrees(dist, p, degrees, grid, rounds=6, trust=trust)
    return dist


def main(argv: list[str] | None = None) -> int:
    """Command line: thresholds of the specs, or (--design-at) a new lambda and its threshold."""
    parser = argparse.ArgumentParser(prog="python -m satqkd_core.ldpc_density_evolution")
    parser.add_argument(
        "--spec",
        action="append",
        default=None,
        help="threshold of this MotherCodeSpec name (repeatable; default all)",
    )
    parser.add_argument("--step", type=float, default=0.05, help="LLR grid step")
    parser.add_argument("--max-llr", type=float, default=25.0, help="LLR saturation")
    parser.add_argument(
        "--design-at", type=float, default=None, help="design lambda for --checks at this p"
    )
    parser.add_argument("--checks", default="80:0.5,81:0.5", help="rho for --design-at")
    parser.add_argument(
        "--start", default="3:0.25,10:0.25,30:0.25,60:0.25", help="lambda to start from"
    )
    parser.add_argument("--stages", type=int, default=6, help="LP stages for --design-at")
    parser.add_argument(
        "--degrees",
        default="2,3,4,5,6,7,8,10,12,15,20,25,30,40,50,60",
        help="candidate variable degrees for --design-at",
    )
    args = parser.parse_args(argv)
    grid = LlrGrid(args.step, args.max_llr)
    if args.design_at is not None:
        degrees = [int(d) for d in args.degrees.split(",")]
        try:
            checks, start = _polynomial(args.checks), _polynomial(args.start)
            dist = design(checks, args.design_at, degrees, grid, start, args.stages)
        except InputError as error:
            parser.error(str(error))
        print(f"lambda = {dist.var}, rho = {checks}")
        named = [("designed", dist)]
    else:
        from satqkd_core.ldpc_construction import DESIGN_CANDIDATES, MOTHER_CODES

        wanted = args.spec
        specs = [s for s in MOTHER_CODES + DESIGN_CANDIDATES if wanted is None or s.name in wanted]
        if not specs:
            known = ", ".join(s.name for s in MOTHER_CODES + DESIGN_CANDIDATES)
            parser.error(f"no code spec named {', '.join(args.spec)} (known: {known})")
        named = [
            (s.name, DegreeDistribution(s.var_edge_fractions, s.check_edge_fractions))
            for s in specs
        ]
    for name, dist in named:
        threshold = bsc_threshold(dist, grid, low=0.002, high=0.2)
        limit = (1.0 - dist.design_rate) / binary_entropy(threshold)
        print(
            f"{name}: design rate {dist.design_rate:.4f}, BSC threshold "
            f"{threshold:.4f}, f at threshold {limit:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
