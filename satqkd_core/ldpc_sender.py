"""The payload's side of blind LDPC reconciliation: `LdpcSender`.

It holds the reference key, sends every frame's syndrome and, when the receiver asks, the
values of punctured symbols in the public reveal order; it counts the leak. The protocol, and
what each message discloses, is described in `satqkd_core.ldpc_reconciliation`.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np

from satqkd_core.bits import as_bit_array, as_count
from satqkd_core.errors import InputError, ProtocolError
from satqkd_core.ldpc import LdpcCode, check_syndrome
from satqkd_core.ldpc_frames import FrameLayout, FramePlan, frame_layout, plan_frames
from satqkd_core.ldpc_protocol import (
    KIND_FINAL,
    KIND_FINAL_ACK,
    KIND_FIRST,
    KIND_REVEAL_REPLY,
    KIND_REVEAL_REQUEST,
    MAX_SYNDROME_BYTES,
    MESSAGE_VERSION,
    charged_leak,
    checked_kind,
    code_family,
    field_array,
    field_int,
    fit_plan_to_key,
    kept_mask_of,
    packed_bits,
    positions_seed,
    request_fingerprint,
    start_parameters,
    unpacked_bits,
)

__all__ = ["LdpcSender"]


class LdpcSender:
    """Payload side: discloses syndromes and, on request, punctured values; counts the leak.

    The punctured symbols are filled with private random bits: the leak bound m - p relies on
    them being uniform and unknown to an eavesdropper, so they are `fill`, bytes drawn from
    the node's entropy source (at least `fill_bits_needed` bits; the first ones are used, one
    bit per punctured symbol, never expanded), or by default the operating system's CSPRNG.
    `frame_ok` is known after the final request.
    """

    def __init__(
        self,
        reference_key: np.ndarray,
        qber_estimate: float,
        seed: int,
        eps_frame: float = 1e-3,
        *,
        codes: tuple[LdpcCode, ...] | None = None,
        fill: bytes | None = None,
    ) -> None:
        key = as_bit_array(reference_key, "reference_key", allow_empty=True)
        self._codes = code_family(codes)
        self.plan: FramePlan = fit_plan_to_key(
            plan_frames(qber_estimate, self._codes, eps_frame=eps_frame), key.size, qber_estimate
        )
        self._positions_seed = positions_seed(seed)
        self.layout: FrameLayout = frame_layout(self.plan, self._positions_seed, key.size)
        code, k = self.plan.code, self.plan.frame_key_bits
        self.frames = key.size // k
        self._key_bits = key.size
        self._punctured_values = _private_bits((self.frames, self.plan.punctured), fill)
        self._syndromes = np.empty((self.frames, code.m), dtype=np.uint8)
        word = np.zeros(code.n, dtype=np.uint8)
        for f in range(self.frames):
            word[self.layout.key_positions] = key[self.layout.key_order[f * k : (f + 1) * k]]
            word[self.layout.punctured_positions] = self._punctured_values[f]
            self._syndromes[f] = check_syndrome(code.check_ptr, code.check_vars, word)
        self._revealed = np.zeros(self.frames, dtype=np.int64)
        self._active = np.ones(self.frames, dtype=bool)  # frames the receiver may still ask for
        self.frame_ok = np.zeros(self.frames, dtype=bool)
        self.leak_bits = self.frames * (code.m - self.plan.punctured)
        self.done = False
        self._round = 0
        self._last: tuple[int, int, bytes, dict[str, Any]] | None = None

    @classmethod
    def from_start_request(
        cls,
        reference_key: np.ndarray,
        request: dict[str, Any],
        *,
        eps_frame: float = 1e-3,
        codes: tuple[LdpcCode, ...] | None = None,
        fill: bytes | None = None,
    ) -> LdpcSender:
        """Build the sender the receiver's start request asks for (its seed and QBER estimate)."""
        as_bit_array(reference_key, "reference_key", allow_empty=True)
        seed, qber = start_parameters(request, eps_frame, codes)
        return cls(reference_key, qber, seed, eps_frame, codes=codes, fill=fill)

    @staticmethod
    def fill_bits_needed(
        key_bits: int,
        request: dict[str, Any],
        *,
        eps_frame: float = 1e-3,
        codes: tuple[LdpcCode, ...] | None = None,
    ) -> int:
        """Get: the private fill bits a sender built from this start request punctures with
        (frames x punctured symbols per frame), so the caller can draw exactly that many."""
        _, qber = start_parameters(request, eps_frame, codes)
        n = as_count(key_bits, "key_bits")
        plan = fit_plan_to_key(plan_frames(qber, code_family(codes), eps_frame=eps_frame), n, qber)
        return (n // plan.frame_key_bits) * plan.punctured

    @property
    def charged_leak_bits(self) -> int:
        """Get: the leak the key length is charged once done (see the module docstring)."""
        return charged_leak(self.leak_bits, self.frames, self.frame_ok, self.plan)

    def framed_mask(self) -> np.ndarray:
        """Bits of the reference key that lie in a frame (decoded or not)."""
        every = np.ones(self.frames, dtype=bool)
        return kept_mask_of(self.layout, self.plan.frame_key_bits, every, self._key_bits)

    def first_message(self) -> dict[str, Any]:
        """Get the opening message in one part: code, frame shape, seed, every syndrome."""
        return self._first_part(0, self.frames)

    def first_messages(self, max_syndrome_bytes: int = MAX_SYNDROME_BYTES) -> list[dict[str, Any]]:
        """Get the opening message in parts of consecutive frames, each with at most
        `max_syndrome_bytes` of packed syndromes (one empty part when no frame fits)."""
        limit = as_count(max_syndrome_bytes, "max_syndrome_bytes")
        m = self.plan.code.m
        if 8 * limit < m:
            raise InputError(f"max_syndrome_bytes must hold one frame's {math.ceil(m / 8)} bytes")
        per_part = 8 * limit // m
        starts = range(0, self.frames, per_part) if self.frames else range(1)
        return [self._first_part(s, min(per_part, self.frames - s)) for s in starts]

    def _first_part(self, first_frame: int, frame_count: int) -> dict[str, Any]:
        return {
            "version": MESSAGE_VERSION,
            "kind": KIND_FIRST,
            "code_id": self.plan.code.code_id,
            "code_digest": self.plan.code.digest,
            "key_bits": self._key_bits,
            "frames": self.frames,
            "frame_key_bits": self.plan.frame_key_bits,
            "shortened": self.plan.shortened,
            "punctured": self.plan.punctured,
            "reveal_step": self.plan.reveal_step,
            "positions_seed": self._positions_seed,
            "first_frame": first_frame,
            "frame_count": frame_count,
            "syndromes": packed_bits(self._syndromes[first_frame : first_frame + frame_count]),
        }

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a reveal request with punctured values, or acknowledge the final request."""
        if not isinstance(request, dict):
            raise ProtocolError(f"request must be a dict, got {type(request).__name__}")
        kind = field_int(request, "kind")
        round_index = field_int(request, "round")
        fingerprint = request_fingerprint(request)
        if self._last is not None and self._last[:3] == (kind, round_index, fingerprint):
            return self._last[3]  # re-delivery of the last request: same answer, no new leak
        if kind == KIND_FINAL:
            answer = self._apply_final(checked_kind(request, KIND_FINAL), round_index)
        else:
            answer = self._reveal(checked_kind(request, KIND_REVEAL_REQUEST), round_index)
        self._last = (kind, round_index, fingerprint, answer)
        return answer

    def kept_mask(self) -> np.ndarray:
        """Bits of the reference key that survive: those of frames the receiver decoded."""
        return kept_mask_of(self.layout, self.plan.frame_key_bits, self.frame_ok, self._key_bits)

    def _reveal(self, request: dict[str, Any], round_index: int) -> dict[str, Any]:
        if self.done:
            raise ProtocolError("reconciliation already finished")
        if round_index != self._round + 1:
            raise ProtocolError(f"expected round {self._round + 1}, got {round_index}")
        frames = field_array(request, "frames", np.uint32).astype(np.int64)
        counts = field_array(request, "counts", np.uint32).astype(np.int64)
        if frames.size == 0 or frames.size != counts.size:
            raise ProtocolError("frames and counts must be non-empty and of equal length")
        if np.any(frames >= self.frames) or np.any(np.diff(frames) <= 0):
            raise ProtocolError("frames must be increasing indices of existing frames")
        if not np.all(self._active[frames]):
            raise ProtocolError("a requested frame was already finished by the receiver")
        left = self.plan.punctured - self._revealed[frames]
        if np.any(left < 1) or np.any(counts != np.minimum(left, self.plan.reveal_step)):
            # the schedule the outcome charge assumes (at most R rounds per frame)
            raise ProtocolError(
                f"counts must be min(reveal_step {self.plan.reveal_step}, the frame's punctured "
                "symbols left) for every requested frame"
            )
        self._active[:] = False
        self._active[frames] = True
        pieces = [
            self._punctured_values[f, self._revealed[f] : self._revealed[f] + c]
            for f, c in zip(frames.tolist(), counts.tolist(), strict=True)
        ]
        self._revealed[frames] += counts
        self.leak_bits += int(counts.sum())
        self._round = round_index
        return {
            "version": MESSAGE_VERSION,
            "kind": KIND_REVEAL_REPLY,
            "round": round_index,
            "revealed_bits": int(counts.sum()),
            "values": packed_bits(np.concatenate(pieces)),
        }

    def _apply_final(self, request: dict[str, Any], round_index: int) -> dict[str, Any]:
        if self.done:
            raise ProtocolError("reconciliation already finished")
        if round_index != self._round + 1:
            raise ProtocolError(f"expected round {self._round + 1}, got {round_index}")
        self.frame_ok = unpacked_bits(request, "frame_ok", self.frames).astype(bool)
        self._active[:] = False
        self.done = True
        self._round = round_index
        return {"version": MESSAGE_VERSION, "kind": KIND_FINAL_ACK, "round": round_index}


def _private_bits(shape: tuple[int, int], fill: bytes | None) -> np.ndarray:
    count = shape[0] * shape[1]
    if fill is None:
        # the OS CSPRNG: revealed fill bits must not let anyone predict the unrevealed ones
        fill = secrets.token_bytes((count + 7) // 8)
    if not isinstance(fill, bytes | bytearray):
        raise InputError(f"fill must be bytes, got {type(fill).__name__}")
    if 8 * len(fill) < count:
        raise InputError(f"fill holds {8 * len(fill)} bits, the frames puncture {count}")
    raw = np.frombuffer(bytes(fill), dtype=np.uint8)
    return np.unpackbits(raw, count=count).reshape(shape)
