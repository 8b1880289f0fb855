"""The whole-period pulse shift found from detections on vacuum pulses (satqkd_core.pulse_shift):
the true shift is chosen with its margin, and no shift at all when the evidence is not clear."""

from __future__ import annotations

import numpy as np
import pytest

from satqkd_core.errors import InputError
from satqkd_core.pulse_shift import (
    MARGIN_SIGMA,
    PooledPulseShift,
    choose_pulse_shift,
    max_pulse_shift,
    resolve_pulse_shift,
)

N_PULSES = 2_000_000


def _frame(
    seed: int, true_shift: int, n_detections: int, background: float = 0.02, p_vacuum=0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(pattern intensities of the pass, the reported indices of one frame): detections on
    non-vacuum pulses plus a `background` fraction anywhere, reported `true_shift` pulses early
    (the station's sync off by whole periods)."""
    rng = np.random.default_rng(seed)
    intensity = rng.choice(3, size=N_PULSES, p=[0.7 - p_vacuum / 2, 0.3 - p_vacuum / 2, p_vacuum])
    intensity = intensity.astype(np.uint8)
    lit = np.flatnonzero(intensity != 2)
    n_signal = round(n_detections * (1 - background))
    pulses = np.concatenate(
        [
            rng.choice(lit[100:-100], n_signal, replace=False),
            rng.integers(100, N_PULSES - 100, n_detections - n_signal),
        ]
    )
    return intensity, np.unique(pulses - true_shift)


@pytest.mark.parametrize("true_shift", [-4, 0, 1, 5])
def test_the_true_shift_is_chosen_with_a_clear_margin(true_shift: int) -> None:
    intensity, reported = _frame(1, true_shift, 3000)
    decision = resolve_pulse_shift(reported, 5, N_PULSES, 0.1, lambda i: intensity[i])
    assert decision.shift == true_shift and decision.reason is None
    at = decision.candidates == true_shift
    # background only at the true shift; about p_vacuum of all detections at every other one
    assert decision.vacuum_hits[at][0] < 0.01 * decision.n_evidence
    assert np.all(decision.vacuum_hits[~at] > decision.threshold)
    assert decision.threshold < decision.expected_wrong - MARGIN_SIGMA * 15


def test_a_shift_beyond_the_candidates_is_never_chosen() -> None:
    """The clock offset is off by more than the mission's stated uncertainty: every candidate
    looks wrong, so the frame is ambiguous rather than sifted at 50 % error."""
    intensity, reported = _frame(2, 7, 3000)
    decision = resolve_pulse_shift(reported, 3, N_PULSES, 0.1, lambda i: intensity[i])
    assert decision.shift is None
    assert decision.reason is not None and decision.reason.startswith("pulse index ambiguous")
    assert "no shift in -3..3" in decision.reason


def test_too_few_detections_are_ambiguous() -> None:
    intensity, reported = _frame(3, 1, 60)
    decision = resolve_pulse_shift(reported, 2, N_PULSES, 0.1, lambda i: intensity[i])
    assert decision.shift is None and "pulse index ambiguous" in str(decision.reason)


def test_weak_frames_are_decided_by_the_evidence_pooled_over_the_pass() -> None:
    """A weak link (60 detections a frame) decides nothing frame by frame; the pass's frames
    together find the true shift, and a frame that decides alone keeps its own decision."""
    pool = PooledPulseShift(0.1)
    decisions, counted = [], 0
    for seed in range(10, 22):
        intensity, reported = _frame(seed, 2, 60)
        frame = resolve_pulse_shift(reported, 3, N_PULSES, 0.1, intensity.__getitem__)
        assert frame.shift is None  # too weak alone
        counted += frame.n_evidence
        decisions.append(pool.decide(frame))
    assert decisions[0].shift is None  # one weak frame: the pool is no wiser
    assert decisions[-1].shift == 2 and pool.last_shift == 2
    assert pool.n_evidence == counted == decisions[-1].n_evidence
    intensity, reported = _frame(40, -1, 3000)  # a strong frame at another shift decides alone
    strong = pool.decide(resolve_pulse_shift(reported, 3, N_PULSES, 0.1, lambda i: intensity[i]))
    assert strong.shift == -1 and pool.last_shift == -1


def test_heavy_background_makes_two_candidates_ambiguous() -> None:
    """Two candidates both clearly below a wrong shift's count: never pick one of them."""
    hits = np.array([300, 20, 25, 310])
    decision = choose_pulse_shift(np.arange(-1, 3), hits, 3000, 0.1)
    assert decision.shift is None and "2 shifts of -1..2" in str(decision.reason)


def test_no_vacuum_pulses_cannot_resolve_and_no_uncertainty_needs_nothing() -> None:
    intensity, reported = _frame(4, 0, 3000)
    none = resolve_pulse_shift(reported, 2, N_PULSES, 0.0, lambda i: intensity[i])
    assert none.shift is None and "no vacuum pulses" in str(none.reason)

    def never(index: np.ndarray) -> np.ndarray:
        raise AssertionError("no pattern look-up needed when no whole period can be off")

    assert resolve_pulse_shift(reported, 0, N_PULSES, 0.1, never).shift == 0


def test_max_pulse_shift_from_the_offset_uncertainty() -> None:
    assert max_pulse_shift(1234.0, 1000.0) == 1  # eagle1 at 1 GHz, the simulated offset
    assert max_pulse_shift(20_000.0, 1000.0) == 20  # a GPS-disciplined clock at 1 GHz
    assert max_pulse_shift(20_000.0, 10_000.0) == 2  # the same at 100 MHz
    assert max_pulse_shift(4_999.0, 10_000.0) == 0  # within half a period: nothing to resolve
    with pytest.raises(InputError, match="offset_uncertainty_ps"):
        max_pulse_shift(-1.0, 1000.0)
    with pytest.raises(InputError, match="candidate shifts"):
        max_pulse_shift(1e9, 1000.0)
    with pytest.raises(InputError, match="max_shift"):
        resolve_pulse_shift(np.zeros(3, np.int64), -1, N_PULSES, 0.1, lambda i: i)
