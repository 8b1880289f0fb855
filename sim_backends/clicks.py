"""Pieces of click generation shared by the honest channel and the PNS attack.

Both draw their random numbers from the same counter layout per candidate pulse
(`DRAWS_PER_CANDIDATE` words, counter `j * DRAWS_PER_CANDIDATE + slot`), route a polarisation
state to the receiver's four detectors the same way, and turn a per-candidate click mask into
timestamps the same way (slot 10 + 2 d feeds detector d's jitter). Keeping them here keeps the
two generators consistent: an attacked pass and an honest one differ only in what the attack
changes.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from satqkd_core import rng

__all__ = [
    "DRAWS_PER_CANDIDATE",
    "clicks_from_mask_reference",
    "clicks_from_masks",
    "fill_route",
    "gaussian",
    "gaussian_reference",
    "route_reference",
]

DRAWS_PER_CANDIDATE = 32  # counter words reserved per candidate pulse (slots used: 0-17)


@numba.njit(cache=True, inline="always")
def gaussian(key: np.uint64, key2: np.uint64, counter: np.uint64) -> float:
    """Get a standard normal draw from two counter words (Box-Muller; 1 - u keeps log finite)."""
    u1 = rng.word_to_unit(rng.counter_word(key, key2, counter))
    u2 = rng.word_to_unit(rng.counter_word(key, key2, counter + np.uint64(1)))
    return math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)


def gaussian_reference(key: int, counter: int) -> float:
    """Get the same draw as `gaussian` in plain Python."""
    u1 = rng.word_to_unit_reference(rng.counter_word_reference(key, counter))
    u2 = rng.word_to_unit_reference(rng.counter_word_reference(key, counter + 1))
    return math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)


@numba.njit(cache=True, inline="always")
def fill_route(
    route: np.ndarray,
    state_basis: np.int64,
    state_bit: np.int64,
    receiver_x_probability: float,
    polarisation_error: float,
) -> None:
    """Set route[2 arm + bit]: the probability that a photon in the state reaches that detector
    (passive basis choice, then the analyser; the wrong basis splits evenly)."""
    for arm in range(2):
        arm_probability = receiver_x_probability if arm == 0 else 1.0 - receiver_x_probability
        right = 1.0 - polarisation_error if arm == state_basis else 0.5
        route[2 * arm + state_bit] = arm_probability * right
        route[2 * arm + 1 - state_bit] = arm_probability * (1.0 - right)


def route_reference(
    state_basis: int, state_bit: int, receiver_x_probability: float, polarisation_error: float
) -> list[float]:
    """Get the same routing probabilities as `fill_route` in plain Python."""
    route = [0.0] * 4
    for arm in range(2):
        arm_probability = receiver_x_probability if arm == 0 else 1.0 - receiver_x_probability
        right = 1.0 - polarisation_error if arm == state_basis else 0.5
        route[2 * arm + state_bit] = arm_probability * right
        route[2 * arm + 1 - state_bit] = arm_probability * (1.0 - right)
    return route


@numba.njit(cache=True)
def clicks_from_masks(
    key: np.uint64,
    key2: np.uint64,
    masks: np.ndarray,
    offsets: np.ndarray,
    period_ps: float,
    delay_ps: float,
    delay_rate: float,
    clock_offset_ps: float,
    jitter_ps: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Get the clicks (time rel. to emission start, detector, candidate) of per-candidate
    detector masks: arrival from the pulse's emission time, delay and delay rate, plus jitter."""
    total_clicks = 0
    for j in range(masks.shape[0]):
        for d in range(4):
            total_clicks += (masks[j] >> d) & 1
    times = np.empty(total_clicks, dtype=np.float64)
    detectors = np.empty(total_clicks, dtype=np.uint8)
    groups = np.empty(total_clicks, dtype=np.int64)
    k = 0
    for j in range(masks.shape[0]):
        if masks[j] == 0:
            continue
        base = np.uint64(j) * np.uint64(DRAWS_PER_CANDIDATE)
        elapsed = offsets[j] * period_ps
        arrival = elapsed + delay_rate * elapsed + delay_ps + clock_offset_ps
        for d in range(4):
            if (masks[j] >> d) & 1:
                jitter = 0.0
                if jitter_ps > 0.0:
                    jitter = jitter_ps * gaussian(key, key2, base + np.uint64(10 + 2 * d))
                times[k] = arrival + jitter
                detectors[k] = d
                groups[k] = j
                k += 1
    return times, detectors, groups


def clicks_from_mask_reference(
    clicks: tuple[list, list, list],
    key: int,
    j: int,
    mask: int,
    offset: int,
    period_ps: float,
    delay_ps: float,
    delay_rate: float,
    clock_offset_ps: float,
    jitter_ps: float,
) -> None:
    """Append candidate j's clicks to (times, detectors, groups), as `clicks_from_masks` does."""
    times, detectors, groups = clicks
    elapsed = int(offset) * period_ps
    arrival = elapsed + delay_rate * elapsed + delay_ps + clock_offset_ps
    base = j * DRAWS_PER_CANDIDATE
    for d in range(4):
        if (mask >> d) & 1:
            jitter = jitter_ps * gaussian_reference(key, base + 10 + 2 * d) if jitter_ps else 0
            times.append(arrival + jitter)
            detectors.append(d)
            groups.append(j)


def clicks_reference_arrays(clicks: tuple[list, list, list]) -> tuple[np.ndarray, ...]:
    """Get (times, detectors, groups) lists as the kernel's arrays."""
    times, detectors, groups = clicks
    return (
        np.array(times, dtype=np.float64),
        np.array(detectors, dtype=np.uint8),
        np.array(groups, dtype=np.int64),
    )
