"""The payload's on-board sifting with a station whose indices are whole pulse periods off
(decision 0038): it sifts at the true pulses and names the shift in SIFT_RESULT, or keeps
nothing of a frame and says it is ambiguous. The real pattern (SourceSequencer), no daemons."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace
from typing import Any

import numpy as np

from firmware_shims.source_sequencer import SourceSequencer
from satqkd_core.detection_report import encode_detection_report
from satqkd_core.pass_decisions import ProtocolParameters
from satqkd_payload.session import PayloadSession

PROBABILITIES = (0.75, 0.125, 0.125)  # whole eighths, an eagle1-like vacuum share
PARAMS = ProtocolParameters(
    intensities=(0.5, 0.15, 0.0),
    probabilities=PROBABILITIES,
    eps_sec=1e-9,
    eps_cor=1e-15,
    qber_abort_threshold=0.11,
    ec_efficiency_estimate=1.16,
)
N_PULSES = 10**9  # 1 s at 1 GHz


class _Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, name: str, **fields: Any) -> None:
        self.sent.append((name, fields))


def _sift(max_shift: int, true_shift: int, n: int = 4000) -> tuple[dict[str, Any], int]:
    """One frame of `n` detections of lit pulses, reported `true_shift` pulses early with the
    station's basis and bit as sent; (the SIFT_RESULT, Z errors against the payload's bits)."""
    sequencer = SourceSequencer(None, PROBABILITIES, 0.5)
    sequencer.load_pass(1, hashlib.sha256(b"pulse-shift-test").digest())
    rng = np.random.default_rng(5)
    pulses = np.unique(rng.integers(100, N_PULSES - 100, 12_000))
    sent = sequencer.pattern_of(1, pulses)
    lit = sent.intensity != 2
    pulses = pulses[lit][:n]
    basis, bit = sent.basis[lit][:n], sent.bit[lit][:n]
    channel = _Channel()
    session = PayloadSession(
        plan_id=1,
        station="graz",
        pattern=lambda index: sequencer.pattern_of(1, index),
        channel=channel,  # type: ignore[arg-type]
        keystore=None,  # type: ignore[arg-type]
        params=PARAMS,
        entropy=None,  # type: ignore[arg-type]
        max_pulse_shift=max_shift,
        n_pulses=N_PULSES,
    )
    report = encode_detection_report(pulses - true_shift, basis.astype(np.uint8))
    fields = {"plan_id": 1, "chunk": 0, "n_detections": pulses.size, "report": report}
    envelope = SimpleNamespace(spec=SimpleNamespace(name="DETECTION_REPORT"), fields=fields)
    asyncio.run(session.handle(envelope))  # type: ignore[arg-type]
    ((name, reply),) = channel.sent
    assert name == "SIFT_RESULT"
    keep = np.unpackbits(np.frombuffer(reply["keep"], np.uint8))[: pulses.size].astype(bool)
    own_z = bit[keep][basis[keep] == 1]
    payload_z = np.unpackbits(np.frombuffer(reply["z_bits"], np.uint8))[: own_z.size]
    return reply, int(np.count_nonzero(own_z != payload_z))


def test_indices_one_pulse_off_are_shifted_back_and_sift_without_error() -> None:
    reply, z_errors = _sift(max_shift=20, true_shift=1)
    assert reply["pulse_shift"] == 1 and not reply["pulse_index_ambiguous"]
    assert reply["n_kept"] == 4000  # the station measured in the basis sent: all kept
    assert z_errors == 0  # at a wrong shift half of them would differ


def test_an_offset_beyond_the_candidates_keeps_nothing_and_says_so() -> None:
    reply, _ = _sift(max_shift=1, true_shift=3)
    assert reply["pulse_index_ambiguous"] and reply["pulse_shift"] == 0
    assert reply["n_kept"] == 0


def test_a_frame_without_detections_is_not_ambiguous() -> None:
    """A frame with nothing detected (before the signal arrives) has nothing to sift wrongly: it
    must not count as ambiguous, or a late-locking pass aborts on its empty frames."""
    reply, _ = _sift(max_shift=20, true_shift=1, n=0)
    assert not reply["pulse_index_ambiguous"] and reply["n_kept"] == 0
