"""Reproducible construction of the LDPC mother codes shipped in satqkd_core/data/ldpc/.

`python -m satqkd_core.ldpc_construction --write` rebuilds every file from the specs below;
the same spec always gives the same matrix (all choices come from counter-based random words,
`satqkd_core.rng`, keyed by the spec's seed).

Graph: progressive edge growth (Hu, Eleftheriou, Arnold, "Regular and irregular progressive
edge-growth Tanner graphs", IEEE Trans. Inf. Theory 51, 386 (2005)), variables in increasing
degree; each new edge of variable v goes to a check as far from v as the current graph allows
(unreached by a breadth-first expansion from v, or else first reached at its last level),
choosing among those the check furthest below its target degree (the check-degree targets
of Richter's "detailed check node degree distribution" refinement), ties broken by a random word.

Rate-adaptive symbols: untainted puncturing (Elkouss, Martinez-Mateo, Martin, IEEE Wireless
Commun. Lett. 1, 585 (2012)): variables are taken in increasing size of their two-step
neighbourhood, each one excluding every variable that shares a check with it, so that no check
holds two of them. At most `max_adaptive_fraction` * n of them are used (d of the frame).

Degree distributions (edge perspective, lambda_i = fraction of edges on degree-i variables):
see MOTHER_CODES; the provenance of each is given there.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from satqkd_core.bits import as_count
from satqkd_core.errors import InputError
from satqkd_core.ldpc import LdpcCode
from satqkd_core.rng import derive_key, random_u64

__all__ = [
    "DESIGN_CANDIDATES",
    "MOTHER_CODES",
    "MotherCodeSpec",
    "build_code",
    "check_degree_targets",
    "main",
    "node_degrees",
    "peg_edges",
    "peg_edges_reference",
    "second_neighbourhood_sizes",
    "second_neighbourhood_sizes_reference",
    "untainted_selection",
    "untainted_selection_reference",
    "write_mother_codes",
]

_CHECK_SLACK = 8  # a check may exceed its target degree by this much in the PEG fallback


@dataclass(frozen=True)
class MotherCodeSpec:
    """Everything that determines one shipped mother code.

    `typical_efficiency` and `efficiency_spread` are the mean and spread of the efficiency at
    which frames of this code decode in blind reconciliation, measured with
    benchmarks/bench_ldpc.py; they only set the blind window (not part of the graph).
    """

    name: str
    code_id: int
    n: int
    rate: float
    var_edge_fractions: dict[int, float]
    check_edge_fractions: dict[int, float]
    max_adaptive_fraction: float
    seed: int
    source: str
    typical_efficiency: float = 1.15
    efficiency_spread: float = 0.04


# Elkouss, Leverrier, Alleaume, Boutros, ISIT 2009, Table I (optimised for the BSC by
# differential evolution with discretised density evolution).
_ELKOUSS_2009 = "Elkouss et al., ISIT 2009, Table I"
# fmt: off
_LAMBDA_R50 = {
    2: 0.14438, 3: 0.19026, 4: 0.01836, 5: 0.00233, 6: 0.04697, 8: 0.053943, 9: 0.05590,
    10: 0.01290, 11: 0.00162, 14: 0.06159, 15: 0.13115, 17: 0.01481, 47: 0.00879, 49: 0.00650,
    55: 0.00210, 56: 0.00099, 57: 0.11178, 58: 0.06238, 59: 0.05094, 66: 0.02230,
}
_RHO_R50 = {10: 0.47575, 12: 0.46847, 13: 0.02952, 14: 0.02626}
_LAMBDA_R60 = {
    2: 0.11040, 3: 0.20804, 8: 0.14163, 9: 0.14858, 26: 0.14438, 27: 0.08909, 46: 0.00748,
    71: 0.15038,
}
_RHO_R60 = {2: 0.00036, 10: 0.13063, 13: 0.31068, 18: 0.49341, 19: 0.064915}
_LAMBDA_R70 = {
    2: 0.05343, 3: 0.29406, 6: 0.00896, 9: 0.15571, 12: 0.12189, 25: 0.19872, 46: 0.09572,
    62: 0.02741, 65: 0.04056, 73: 0.00354,
}
_RHO_R70 = {20: 0.76922, 21: 0.23077}
_LAMBDA_R80 = {
    2: 0.09420, 3: 0.18088, 6: 0.11972, 7: 0.08550, 8: 0.09816, 17: 0.07194, 26: 0.34960,
}
_RHO_R80 = {29: 0.58807, 30: 0.41193}
# Designed here for the rates the low QBERs need (rate 0.853 for Q ~ 2 %, 0.915 for Q ~ 1 %):
# differential evolution over lambda at a fixed QBER, maximising the rate reachable with a
# concentrated check degree, scored by an EXIT recursion that is exact at the variable nodes
# (BSC channel mixture plus Gaussian check messages) and exact in mutual information at the
# check nodes (tanh-moment series), with the number of degree-2 variables kept below 0.9 m so
# that they form no cycles among themselves (error floors). Thresholds of that recursion are
# optimistic at these check degrees; the choice between candidates was made by simulation of
# n = 2^15 PEG codes (see docs/decisions/0004-ldpc-reconciliation.md).
_DESIGNED = "designed for this project (EXIT/DE search, verified by simulation)"
_LAMBDA_R85 = {
    2: 0.04402, 3: 0.2793, 4: 0.01245, 5: 0.01119, 6: 0.00419, 7: 0.02896, 8: 0.07705,
    10: 0.06983, 12: 0.12797, 15: 0.06968, 20: 0.10863, 25: 0.02703, 30: 0.03531, 40: 0.1044,
}
_RHO_R85 = {40: 0.38, 41: 0.62}
_LAMBDA_R91 = {
    2: 0.02475, 3: 0.28797, 4: 0.0177, 5: 0.01697, 6: 0.00797, 7: 0.02864, 8: 0.0862,
    10: 0.04768, 12: 0.23052, 15: 0.01692, 20: 0.14563, 30: 0.02677, 40: 0.06229,
}
_RHO_R91 = {70: 0.27, 71: 0.73}
# fmt: on

# Designed by discretised density evolution (satqkd_core/ldpc_density_evolution.py, decision
# 0041): lambda maximising the design rate at a fixed BSC crossover probability for a check
# distribution concentrated on two adjacent degrees, by the iterated linear program of
# Richardson, Shokrollahi and Urbanke (2001), degree-2 variables <= 0.9 m. Candidates are
# built and measured with benchmarks/ldpc_code_trials.py; one is shipped only if it beats the
# shipped code at its QBER (docs/performance.md, "LDPC codes by density evolution").
_DE_DESIGN = "density evolution + LP (decisions 0041, 0045)"
# fmt: off
_LAMBDA_R91D = {
    2: 0.02236, 3: 0.23975, 8: 0.1181, 10: 0.25892, 30: 0.29561, 40: 0.06527,
}
_RHO_R91D = {80: 0.5, 81: 0.5}
_LAMBDA_R85D = {
    2: 0.03565, 3: 0.22164, 10: 0.29926, 12: 0.03027, 30: 0.10708, 40: 0.09867, 50: 0.01474,
    60: 0.19269,
}
_RHO_R85D = {50: 0.5, 51: 0.5}
_LAMBDA_R70D = {
    2: 0.08004, 3: 0.20066, 7: 0.02308, 8: 0.09072, 10: 0.11607, 15: 0.08124, 20: 0.02846,
    30: 0.05, 60: 0.32972,
}
_RHO_R70D = {22: 0.5, 23: 0.5}
# fmt: on

_N = 1 << 16
# fmt: off
MOTHER_CODES: tuple[MotherCodeSpec, ...] = (
    MotherCodeSpec("r50_n64k", 1, _N, 0.5, _LAMBDA_R50, _RHO_R50, 0.12, 1001, _ELKOUSS_2009,
                   1.09, 0.02),
    MotherCodeSpec("r60_n64k", 2, _N, 0.6, _LAMBDA_R60, _RHO_R60, 0.10, 1002, _ELKOUSS_2009,
                   1.09, 0.025),
    MotherCodeSpec("r70_n64k", 3, _N, 0.7, _LAMBDA_R70, _RHO_R70, 0.08, 1003, _ELKOUSS_2009,
                   1.10, 0.03),
    MotherCodeSpec("r80_n64k", 4, _N, 0.8, _LAMBDA_R80, _RHO_R80, 0.06, 1004, _ELKOUSS_2009,
                   1.10, 0.03),
    MotherCodeSpec("r85_n64k", 5, _N, 0.853, _LAMBDA_R85, _RHO_R85, 0.05, 1005, _DESIGNED,
                   1.12, 0.04),
    MotherCodeSpec("r91_n64k", 6, _N, 0.915, _LAMBDA_R91, _RHO_R91, 0.05, 1006, _DESIGNED,
                   1.16, 0.05),
    # DE threshold 0.0102 at design rate 0.9133 (f at threshold 1.055; r91_n64k: 0.0092, 1.125)
    MotherCodeSpec("r91d_n64k", 7, _N, 0.9133, _LAMBDA_R91D, _RHO_R91D, 0.05, 1007, _DE_DESIGN,
                   1.12, 0.05),
    # DE threshold 0.0203 at design rate 0.8519 (f at threshold 1.036; r85_n64k: 0.0190, 1.082);
    # at Q = 2 %: window 1.09 / 0.04 lost 2 frames of 3000 (decision 0041), 1.09 / 0.05 none
    # of 3000 at f 1.086 (decision 0045)
    MotherCodeSpec("r85d_n64k", 8, _N, 0.8519, _LAMBDA_R85D, _RHO_R85D, 0.05, 1008, _DE_DESIGN,
                   1.09, 0.05),
    # DE threshold 0.0518 at design rate 0.6978 (f at threshold 1.028; r70_n64k: 0.0504, 1.041),
    # designed at p = 0.0513 so that the rate stays below r70's 0.700 (plan_frames picks the
    # rate nearest 1 - 1.1 h(Q), 0.685 at Q = 5 %); decision 0045
    MotherCodeSpec("r70d_n64k", 9, _N, 0.6978, _LAMBDA_R70D, _RHO_R70D, 0.08, 1009, _DE_DESIGN,
                   1.08, 0.03),
)
# fmt: on

# Specs designed but not shipped (benchmarks/ldpc_code_trials.py builds and measures them);
# none at present (decision 0045 shipped r85d_n64k and r70d_n64k).
DESIGN_CANDIDATES: tuple[MotherCodeSpec, ...] = ()


# ---------------------------------------------------------------------------------------------
# Degree sequences


def node_degrees(edge_fractions: dict[int, float], count: int) -> np.ndarray:
    """Degrees of `count` nodes (ascending) realising an edge-perspective distribution."""
    total = as_count(count, "count", minimum=1)
    if not edge_fractions:
        raise InputError("edge_fractions must not be empty")
    degrees = np.array(sorted(edge_fractions), dtype=np.int64)
    if int(degrees.min()) < 1:
        raise InputError("degrees must be >= 1")
    weights = np.array([edge_fractions[d] for d in degrees], dtype=np.float64)
    if np.any(weights < 0) or weights.sum() <= 0:
        raise InputError("edge fractions must be >= 0 with a positive sum")
    # node fraction of degree i is (lambda_i / i) / sum_j (lambda_j / j)
    node_share = weights / degrees
    node_share /= node_share.sum()
    exact = node_share * total
    counts = np.floor(exact).astype(np.int64)
    remainder = total - int(counts.sum())
    # largest remainders first, ties to the lower degree: deterministic
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    return np.repeat(degrees, counts)


def check_degree_targets(
    edge_fractions: dict[int, float], count: int, total_edges: int
) -> np.ndarray:
    """Target degrees of `count` checks with the given distribution summing to `total_edges`."""
    targets = node_degrees(edge_fractions, count)
    edges = as_count(total_edges, "total_edges", minimum=count)
    surplus = edges - int(targets.sum())
    # spread the correction one edge per check, lowest targets first when adding
    order = np.argsort(targets, kind="stable")
    if surplus < 0:
        order = order[::-1]
    step = 1 if surplus > 0 else -1
    i = 0
    while surplus != 0:
        c = order[i % count]
        if step > 0 or targets[c] > 2:
            targets[c] += step
            surplus -= step
        i += 1
    return targets


# ---------------------------------------------------------------------------------------------
# Progressive edge growth (kernel and reference)


@numba.njit(cache=True)
def _expand_from(
    v: int,
    k: int,
    var_ptr: np.ndarray,
    var_checks: np.ndarray,
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    check_fill: np.ndarray,
    check_seen: np.ndarray,
    var_seen: np.ndarray,
    stamp: int,
    level: np.ndarray,
    upcoming: np.ndarray,
) -> tuple[bool, int]:
    """Kernel helper: breadth-first levels from v; (every check reached, last level's size).

    Marks reached checks with `stamp`; when every check is reached, upcoming[:size] holds the
    checks first reached at the last level, in the order they were found.
    """
    m = check_seen.shape[0]
    var_seen[v] = stamp
    level_size = 0
    for t in range(k):
        c = var_checks[var_ptr[v] + t]
        check_seen[c] = stamp
        level[level_size] = c
        level_size += 1
    reached = level_size
    while level_size > 0:
        size = 0
        for t in range(level_size):
            c = level[t]
            for u in range(check_fill[c]):
                w = check_vars[check_ptr[c] + u]
                if var_seen[w] == stamp:
                    continue
                var_seen[w] = stamp
                # only variables before v have edges, and all of theirs are placed
                for s in range(var_ptr[w], var_ptr[w + 1]):
                    c2 = var_checks[s]
                    if check_seen[c2] != stamp:
                        check_seen[c2] = stamp
                        upcoming[size] = c2
                        size += 1
                        if reached + size == m:
                            # the rest of the level can add nothing: stop early
                            return True, size
        if size == 0:
            return False, 0
        reached += size
        for t in range(size):
            level[t] = upcoming[t]
        level_size = size
    return False, 0


@numba.njit(cache=True)
def _largest_deficit(
    pool: np.ndarray,
    pool_size: int,
    check_targets: np.ndarray,
    check_fill: np.ndarray,
    candidates: np.ndarray,
) -> tuple[int, int]:
    """Kernel helper: checks of pool[:pool_size] furthest below target -> (count, deficit)."""
    count = 0
    best = -(1 << 62)
    for t in range(pool_size):
        c = pool[t]
        deficit = check_targets[c] - check_fill[c]
        if deficit > best:
            best = deficit
            count = 0
        if deficit == best:
            candidates[count] = c
            count += 1
    return count, best


@numba.njit(cache=True)
def peg_edges(
    var_degrees: np.ndarray, check_targets: np.ndarray, tie_words: np.ndarray
) -> np.ndarray:
    """Kernel: PEG graph; returns the check of every edge, variables in order (int32[E])."""
    n = var_degrees.shape[0]
    m = check_targets.shape[0]
    var_ptr = np.zeros(n + 1, dtype=np.int64)
    for v in range(n):
        var_ptr[v + 1] = var_ptr[v] + var_degrees[v]
    check_ptr = np.zeros(m + 1, dtype=np.int64)
    for c in range(m):
        check_ptr[c + 1] = check_ptr[c] + check_targets[c] + _CHECK_SLACK
    var_checks = np.full(var_ptr[n], -1, dtype=np.int32)
    check_vars = np.full(check_ptr[m], -1, dtype=np.int32)
    check_fill = np.zeros(m, dtype=np.int64)
    check_seen = np.zeros(m, dtype=np.int64)
    var_seen = np.zeros(n, dtype=np.int64)
    level = np.empty(m, dtype=np.int32)
    upcoming = np.empty(m, dtype=np.int32)
    pool = np.empty(m, dtype=np.int32)
    candidates = np.empty(m, dtype=np.int32)
    edge = 0
    for v in range(n):
        for k in range(var_degrees[v]):
            stamp = edge + 1
            saturated, size = _expand_from(
                v, k, var_ptr, var_checks, check_ptr, check_vars, check_fill,
                check_seen, var_seen, stamp, level, upcoming,
            )  # fmt: skip
            if saturated:
                count, best = _largest_deficit(
                    upcoming, size, check_targets, check_fill, candidates
                )
            else:  # the checks the expansion never reached
                size = 0
                for c in range(m):
                    if check_seen[c] != stamp:
                        pool[size] = c
                        size += 1
                count, best = _largest_deficit(pool, size, check_targets, check_fill, candidates)
            if count == 0 or best <= 0:
                # every farthest check is full: any check not yet on v with the largest deficit
                size = 0
                for c in range(m):
                    adjacent = False
                    for t in range(k):
                        if var_checks[var_ptr[v] + t] == c:
                            adjacent = True
                    if not adjacent:
                        pool[size] = c
                        size += 1
                count, best = _largest_deficit(pool, size, check_targets, check_fill, candidates)
            c = candidates[np.int64(tie_words[edge] % np.uint64(count))]
            if check_fill[c] >= check_targets[c] + _CHECK_SLACK:
                raise ValueError("PEG: a check exceeded its target degree plus slack")
            var_checks[var_ptr[v] + k] = c
            check_vars[check_ptr[c] + check_fill[c]] = v
            check_fill[c] += 1
            edge += 1
    return var_checks


def peg_edges_reference(
    var_degrees: np.ndarray, check_targets: np.ndarray, tie_words: np.ndarray
) -> np.ndarray:
    """Reference of `peg_edges` (sets and lists, same choices)."""
    n, m = len(var_degrees), len(check_targets)
    var_adj: list[list[int]] = [[] for _ in range(n)]
    check_adj: list[list[int]] = [[] for _ in range(m)]
    targets = [int(t) for t in check_targets]
    edge = 0

    def pick(pool: list[int]) -> list[int]:
        deficits = {c: targets[c] - len(check_adj[c]) for c in pool}
        top = max(deficits.values()) if deficits else None
        return [c for c in pool if deficits[c] == top] if top is not None and top > 0 else []

    for v in range(n):
        for _ in range(int(var_degrees[v])):
            seen_checks = set(var_adj[v])
            seen_vars = {v}
            level = list(var_adj[v])  # in the order the kernel lists them
            upcoming: list[int] = []
            saturated = False
            while level:
                upcoming = []
                for c in level:
                    for w in check_adj[c]:
                        if w in seen_vars:
                            continue
                        seen_vars.add(w)
                        for c2 in var_adj[w]:
                            if c2 not in seen_checks:
                                seen_checks.add(c2)
                                upcoming.append(c2)
                if not upcoming:
                    break
                if len(seen_checks) == m:
                    saturated = True
                    break
                level = upcoming
            if saturated:
                candidates = pick(upcoming)
            else:
                candidates = pick([c for c in range(m) if c not in seen_checks])
            if not candidates:
                pool = [c for c in range(m) if c not in var_adj[v]]
                deficits = {c: targets[c] - len(check_adj[c]) for c in pool}
                top = max(deficits.values())
                candidates = [c for c in pool if deficits[c] == top]
            c = candidates[int(tie_words[edge]) % len(candidates)]
            if len(check_adj[c]) >= targets[c] + _CHECK_SLACK:
                raise ValueError("PEG: a check exceeded its target degree plus slack")
            var_adj[v].append(c)
            check_adj[c].append(v)
            edge += 1
    return np.array([c for row in var_adj for c in row], dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# Untainted puncturing (kernels and references)


@numba.njit(cache=True)
def second_neighbourhood_sizes(
    var_ptr: np.ndarray, var_checks: np.ndarray, check_ptr: np.ndarray, check_vars: np.ndarray
) -> np.ndarray:
    """Kernel: number of distinct variables sharing a check with each variable (itself included)."""
    n = var_ptr.shape[0] - 1
    seen = np.full(n, -1, dtype=np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    for v in range(n):
        size = 0
        for s in range(var_ptr[v], var_ptr[v + 1]):
            c = var_checks[s]
            for e in range(check_ptr[c], check_ptr[c + 1]):
                w = check_vars[e]
                if seen[w] != v:
                    seen[w] = v
                    size += 1
        sizes[v] = size
    return sizes


def second_neighbourhood_sizes_reference(
    var_ptr: np.ndarray, var_checks: np.ndarray, check_ptr: np.ndarray, check_vars: np.ndarray
) -> np.ndarray:
    """Reference of `second_neighbourhood_sizes`."""
    n = len(var_ptr) - 1
    sizes = []
    for v in range(n):
        members: set[int] = set()
        for c in var_checks[var_ptr[v] : var_ptr[v + 1]]:
            members.update(int(w) for w in check_vars[check_ptr[c] : check_ptr[c + 1]])
        sizes.append(len(members))
    return np.array(sizes, dtype=np.int64)


@numba.njit(cache=True)
def untainted_selection(
    order: np.ndarray,
    var_ptr: np.ndarray,
    var_checks: np.ndarray,
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    limit: int,
) -> np.ndarray:
    """Kernel: take variables in `order` while no check of theirs holds a taken one (int32[])."""
    n = var_ptr.shape[0] - 1
    eligible = np.ones(n, dtype=np.bool_)
    taken = np.empty(min(limit, n), dtype=np.int32)
    count = 0
    for i in range(order.shape[0]):
        if count >= limit:
            break
        v = order[i]
        if not eligible[v]:
            continue
        taken[count] = v
        count += 1
        for s in range(var_ptr[v], var_ptr[v + 1]):
            c = var_checks[s]
            for e in range(check_ptr[c], check_ptr[c + 1]):
                eligible[check_vars[e]] = False
    return taken[:count]


def untainted_selection_reference(
    order: np.ndarray,
    var_ptr: np.ndarray,
    var_checks: np.ndarray,
    check_ptr: np.ndarray,
    check_vars: np.ndarray,
    limit: int,
) -> np.ndarray:
    """Reference of `untainted_selection`."""
    taken: list[int] = []
    blocked: set[int] = set()
    for v in (int(x) for x in order):
        if len(taken) >= limit:
            break
        if v in blocked:
            continue
        taken.append(v)
        for c in var_checks[var_ptr[v] : var_ptr[v + 1]]:
            blocked.update(int(w) for w in check_vars[check_ptr[c] : check_ptr[c + 1]])
    return np.array(taken, dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# Building and writing codes


def build_code(spec: MotherCodeSpec) -> LdpcCode:
    """Construct the mother code of a spec (PEG graph, then untainted puncturing order)."""
    n = as_count(spec.n, "n", minimum=4)
    if not 0.0 < spec.rate < 1.0:
        raise InputError(f"rate must lie in (0, 1), got {spec.rate}")
    if not 0.0 <= spec.max_adaptive_fraction < 1.0:
        raise InputError("max_adaptive_fraction must lie in [0, 1)")
    m = round(n * (1.0 - spec.rate))
    degrees = node_degrees(spec.var_edge_fractions, n)
    if int(degrees.max()) > m:
        raise InputError(f"variable degree {int(degrees.max())} exceeds m = {m}")
    targets = check_degree_targets(spec.check_edge_fractions, m, int(degrees.sum()))
    edges = int(degrees.sum())
    peg_words = random_u64(derive_key(spec.seed, "ldpc.peg"), np.arange(edges, dtype=np.int64))
    var_checks = peg_edges(degrees, targets, peg_words)
    var_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(degrees, out=var_ptr[1:])
    # CSR for the neighbourhood computations
    columns = np.repeat(np.arange(n, dtype=np.int32), degrees)
    by_row = np.argsort(var_checks, kind="stable")
    check_vars = columns[by_row]
    check_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(var_checks, minlength=m), out=check_ptr[1:])
    sizes = second_neighbourhood_sizes(var_ptr, var_checks, check_ptr, check_vars)
    tie = random_u64(derive_key(spec.seed, "ldpc.puncture"), np.arange(n, dtype=np.int64))
    order = np.lexsort((tie, sizes)).astype(np.int64)
    limit = int(spec.max_adaptive_fraction * n)
    puncture_order = untainted_selection(order, var_ptr, var_checks, check_ptr, check_vars, limit)
    return LdpcCode.from_var_checks(
        name=spec.name,
        code_id=spec.code_id,
        m=m,
        var_degrees=degrees,
        var_checks=var_checks,
        puncture_order=puncture_order,
        design_rate=spec.rate,
        typical_efficiency=spec.typical_efficiency,
        efficiency_spread=spec.efficiency_spread,
    )


def write_mother_codes(folder: Path, specs: tuple[MotherCodeSpec, ...] | None = None) -> list[Path]:
    """Build every spec and write it as <folder>/<name>.npz; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in MOTHER_CODES if specs is None else specs:
        code = build_code(spec)
        path = folder / f"{spec.name}.npz"
        code.save(str(path))
        written.append(path)
        print(
            f"{spec.name}: n={code.n} m={code.m} edges={code.edges} "
            f"d={code.rate_adaptive_symbols} digest={code.digest:#018x}",
            file=sys.stderr,
        )
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: list the specs, or (--write) rebuild the shipped data files."""
    parser = argparse.ArgumentParser(prog="python -m satqkd_core.ldpc_construction")
    parser.add_argument("--write", action="store_true", help="rebuild satqkd_core/data/ldpc/")
    parser.add_argument("--only", default=None, help="build only the spec with this name")
    parser.add_argument("--folder", default=None, help="write here instead of the package data")
    args = parser.parse_args(argv)
    specs = tuple(s for s in MOTHER_CODES if args.only in (None, s.name))
    if not specs:
        parser.error(f"no spec named {args.only!r}")
    if not args.write:
        for spec in specs:
            print(f"{spec.name}: id {spec.code_id}, n {spec.n}, rate {spec.rate} ({spec.source})")
        return 0
    folder = Path(args.folder) if args.folder else Path(__file__).parent / "data" / "ldpc"
    write_mother_codes(folder, specs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
