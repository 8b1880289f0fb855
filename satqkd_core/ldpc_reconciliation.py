"""Rate-adaptive blind LDPC reconciliation between the payload (sender) and the ground (receiver).

Direct reconciliation: the payload holds the reference key and runs `LdpcSender`; the ground
station holds the noisy key and runs `LdpcReceiver`, which corrects it to the reference.

Protocol (messages are flat dicts of ints, floats, 1-D uint32 arrays and bytes; bit strings are
packed big-endian, as `np.packbits(..., bitorder="big")`):
0. receiver -> sender, `start_request()`: the layout seed and the QBER estimate the receiver
   decodes with; the sender is built from it (`LdpcSender.from_start_request`).
1. sender -> receiver, `first_messages()`: the code (id and digest), the frame shape (key,
   shortened and punctured symbols per frame, see `satqkd_core.ldpc_frames.plan_frames`), the
   blind step, the positions seed and the syndromes of every frame, in parts of consecutive frames
   (`MAX_SYNDROME_BYTES` of syndromes at most; the receiver decodes each part on arrival).
   The key is permuted with the shared positions seed and cut into frames of k bits; the tail
   of fewer than k bits is discarded at both ends. The sender spreads the key over the
   fewest frames that hold it (`fit_plan_to_key`), so the tail is shorter than the number of
   frames rather than up to a whole frame.
2. receiver: decodes every frame. While some frame fails and still has punctured symbols,
   `next_request()` asks for the values of up to `reveal_step` more of them for each failed
   frame (blind reconciliation, Martinez-Mateo, Elkouss, Martin, QIC 12, 791 (2012)), and the
   sender's `reply()` discloses them in the public reveal order; the receiver continues
   decoding from where it stopped. A frame that fails with nothing left to reveal is given up.
3. receiver -> sender, the final request: which frames decoded. Frames that did not are
   discarded by both ends (`kept_mask()`); the sender acknowledges and the exchange ends.

Leakage (Elkouss, Martinez-Mateo, Martin, QIC 11, 226 (2011), eq. 3): a frame's syndrome of
m bits tells at most m - p bits about its key bits when p of its symbols are punctured with
private uniform bits whose columns of H are independent (untainted puncturing makes them so:
no two share a check); every punctured value revealed later adds one bit, so a frame decoded
with p symbols still punctured has leaked exactly m - p. Nothing else is subtracted: frames
that fail keep counting (their syndromes were public), and requests carry only which frames
failed and how many symbols to reveal, never key-dependent data. `leak_bits` is this sum over
all frames, equal at both ends.

Dropped frames (decision 0018): which frames decode depends on the errors, so keeping only
the decoded frames is a post-selection. Both ends therefore keep the decoy statistics of every
frame (`framed_mask()`: the tail outside all frames is a selection fixed before any data is
seen), and charge `charged_leak_bits` = `leak_bits` + k bits for each failed frame (its key
bits are treated as disclosed: by the chain rule for min-entropy, H(X_kept | E) >=
H(X_framed | E) - |X_failed|) + `outcome_bits` per frame for its public outcome.

A frame's outcome (decision 0046) is public and depends on the errors: after how many reveal
rounds it decoded (0, 1, ..., R, with R = ceil(p0 / reveal_step)), or that it was given up
after the last: R + 2 values, so ceil(log2(R + 2)) bits per frame by the same chain rule (one
bit when nothing is punctured). The sender holds the receiver to that schedule: every request
asks each pending frame for exactly min(reveal_step, punctured symbols left).

On the wire every message is one dictionary message (`MESSAGE_NAMES`, declared in
`satqkd_core.dictionary`): `wire_message` gives its name and fields, `message_from_wire` the
message back (the name carries the kind; the dictionary's declaration carries the version).
"""

from __future__ import annotations

import math
import os
import secrets
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

import numpy as np

from satqkd_core.bits import as_bit_array, as_count, binary_entropy
from satqkd_core.cascade import reconciliation_efficiency
from satqkd_core.errors import InputError, ProtocolError
from satqkd_core.ldpc import (
    KNOWN_SYMBOL_LLR,
    DecodeResult,
    LdpcCode,
    channel_llr_magnitude,
    check_syndrome,
    decode_syndrome,
    mother_codes,
    rows_without,
)
from satqkd_core.ldpc_frames import (
    STEP_EFFICIENCY,
    FrameLayout,
    FramePlan,
    frame_layout,
    plan_frames,
    start_efficiency_for,
)
from satqkd_core.rng import derive_key

__all__ = [
    "MAX_SYNDROME_BYTES",
    "MESSAGE_NAMES",
    "MESSAGE_VERSION",
    "LdpcReceiver",
    "LdpcSender",
    "fit_plan_to_key",
    "message_from_wire",
    "outcome_bits",
    "reconciliation_efficiency",
    "wire_message",
]

MESSAGE_VERSION = 1
KIND_FIRST = 1
KIND_REVEAL_REQUEST = 2
KIND_REVEAL_REPLY = 3
KIND_FINAL = 4
KIND_FINAL_ACK = 5
KIND_START = 6
# Dictionary message of each kind (satqkd_core.dictionary declares their fields).
MESSAGE_NAMES: dict[int, str] = {
    KIND_START: "LDPC_START",
    KIND_FIRST: "LDPC_SYNDROMES",
    KIND_REVEAL_REQUEST: "LDPC_REVEAL_REQUEST",
    KIND_REVEAL_REPLY: "LDPC_REVEAL_REPLY",
    KIND_FINAL: "LDPC_FINAL",
    KIND_FINAL_ACK: "LDPC_FINAL_ACK",
}
_KINDS_BY_NAME: dict[str, int] = {name: kind for kind, name in MESSAGE_NAMES.items()}
# Syndromes per LDPC_SYNDROMES message at most: a 1e8-bit block (~2000 frames of up to 4 kB of
# syndrome each) goes in several ~1 MB messages rather than one of 8 MB through the broker.
MAX_SYNDROME_BYTES = 1 << 20
# Iterations of one decoding attempt (a blind round). A frame stops once it stalls: early in a
# round that will be followed by more reveals (the decoder resumes from its messages, so
# little is lost), later when nothing is left to reveal and the frame would be given up.
# (Decision 0040: counting only a 10 % fall of the unsatisfied checks as progress before the
# last round saved 0-9 % of the iterations at no worse f, but lost a frame that the patient
# rule decodes when the QBER is underestimated; not adopted.)
ROUND_MAX_ITERATIONS = 200
ROUND_STALL_ITERATIONS = 8
LAST_ROUND_STALL_ITERATIONS = 32


def _positions_seed(seed: object) -> int:
    """Shared seed of the frame layout, from the pass seed (63 bits: fits every codec int)."""
    return derive_key(as_count(seed, "seed"), "ldpc.positions") & ((1 << 63) - 1)


def _codes(codes: tuple[LdpcCode, ...] | None) -> tuple[LdpcCode, ...]:
    family = mother_codes() if codes is None else tuple(codes)
    if not family or not all(isinstance(c, LdpcCode) for c in family):
        raise InputError("codes must be a non-empty sequence of LdpcCode")
    if len({c.code_id for c in family}) != len(family):
        raise InputError("codes must have distinct code_id values")
    return family


def _packed(bits: np.ndarray) -> bytes:
    return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="big").tobytes()


def _unpacked(message: dict[str, Any], field: str, count: int) -> np.ndarray:
    value = _field_array(message, field, np.uint8)
    if value.size != (count + 7) // 8:
        raise ProtocolError(f"{field} must hold {(count + 7) // 8} bytes, got {value.size}")
    return np.unpackbits(value, count=count, bitorder="big")


def _field_int(message: dict[str, Any], field: str) -> int:
    if field not in message:
        raise ProtocolError(f"message lacks field {field!r}")
    value = message[field]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ProtocolError(f"{field} must be an integer, got {type(value).__name__}")
    return int(value)


def _field_array(message: dict[str, Any], field: str, dtype: type) -> np.ndarray:
    if field not in message:
        raise ProtocolError(f"message lacks field {field!r}")
    value = message[field]
    if isinstance(value, bytes | bytearray) and dtype is np.uint8:
        return np.frombuffer(bytes(value), dtype=np.uint8)
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise ProtocolError(f"{field} must be a 1-D numpy array")
    if value.size and value.dtype != np.dtype(dtype):
        raise ProtocolError(f"{field} must have dtype {np.dtype(dtype).name}, got {value.dtype}")
    return np.ascontiguousarray(value, dtype=dtype)


def _field_float(message: dict[str, Any], field: str) -> float:
    if field not in message:
        raise ProtocolError(f"message lacks field {field!r}")
    value = message[field]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise ProtocolError(f"{field} must be a number, got {type(value).__name__}")
    return float(value)


def wire_message(message: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Get the dictionary name and the fields of a protocol message (kind and version dropped)."""
    kind = message.get("kind")
    if kind not in MESSAGE_NAMES or message.get("version") != MESSAGE_VERSION:
        raise InputError(f"message: not an LDPC protocol message (kind {kind!r})")
    return MESSAGE_NAMES[kind], {k: v for k, v in message.items() if k not in ("kind", "version")}


def message_from_wire(name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Get the protocol message carried by a received dictionary message (extra fields kept)."""
    kind = _KINDS_BY_NAME.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ProtocolError(f"{name!r} is not an LDPC reconciliation message")
    return {**fields, "version": MESSAGE_VERSION, "kind": kind}


def _check_kind(message: object, kind: int) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a dict, got {type(message).__name__}")
    if _field_int(message, "version") != MESSAGE_VERSION:
        raise ProtocolError(f"unsupported message version {message['version']}")
    if _field_int(message, "kind") != kind:
        raise ProtocolError(f"expected message kind {kind}, got {message['kind']}")
    return message


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
        self._codes = _codes(codes)
        self.plan: FramePlan = fit_plan_to_key(
            plan_frames(qber_estimate, self._codes, eps_frame=eps_frame), key.size, qber_estimate
        )
        self._positions_seed = _positions_seed(seed)
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
        seed, qber = _start_parameters(request, eps_frame, codes)
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
        _, qber = _start_parameters(request, eps_frame, codes)
        n = as_count(key_bits, "key_bits")
        plan = fit_plan_to_key(plan_frames(qber, _codes(codes), eps_frame=eps_frame), n, qber)
        return (n // plan.frame_key_bits) * plan.punctured

    @property
    def charged_leak_bits(self) -> int:
        """Get: the leak the key length is charged once done (see the module docstring)."""
        return _charged_leak(self.leak_bits, self.frames, self.frame_ok, self.plan)

    def framed_mask(self) -> np.ndarray:
        """Bits of the reference key that lie in a frame (decoded or not)."""
        every = np.ones(self.frames, dtype=bool)
        return _kept_mask(self.layout, self.plan.frame_key_bits, every, self._key_bits)

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
            "syndromes": _packed(self._syndromes[first_frame : first_frame + frame_count]),
        }

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a reveal request with punctured values, or acknowledge the final request."""
        if not isinstance(request, dict):
            raise ProtocolError(f"request must be a dict, got {type(request).__name__}")
        kind = _field_int(request, "kind")
        round_index = _field_int(request, "round")
        fingerprint = _request_fingerprint(request)
        if self._last is not None and self._last[:3] == (kind, round_index, fingerprint):
            return self._last[3]  # re-delivery of the last request: same answer, no new leak
        if kind == KIND_FINAL:
            answer = self._apply_final(_check_kind(request, KIND_FINAL), round_index)
        else:
            answer = self._reveal(_check_kind(request, KIND_REVEAL_REQUEST), round_index)
        self._last = (kind, round_index, fingerprint, answer)
        return answer

    def kept_mask(self) -> np.ndarray:
        """Bits of the reference key that survive: those of frames the receiver decoded."""
        return _kept_mask(self.layout, self.plan.frame_key_bits, self.frame_ok, self._key_bits)

    def _reveal(self, request: dict[str, Any], round_index: int) -> dict[str, Any]:
        if self.done:
            raise ProtocolError("reconciliation already finished")
        if round_index != self._round + 1:
            raise ProtocolError(f"expected round {self._round + 1}, got {round_index}")
        frames = _field_array(request, "frames", np.uint32).astype(np.int64)
        counts = _field_array(request, "counts", np.uint32).astype(np.int64)
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
            "values": _packed(np.concatenate(pieces)),
        }

    def _apply_final(self, request: dict[str, Any], round_index: int) -> dict[str, Any]:
        if self.done:
            raise ProtocolError("reconciliation already finished")
        if round_index != self._round + 1:
            raise ProtocolError(f"expected round {self._round + 1}, got {round_index}")
        self.frame_ok = _unpacked(request, "frame_ok", self.frames).astype(bool)
        self._active[:] = False
        self.done = True
        self._round = round_index
        return {"version": MESSAGE_VERSION, "kind": KIND_FINAL_ACK, "round": round_index}


def fit_plan_to_key(plan: FramePlan, key_bits: int, qber_estimate: float) -> FramePlan:
    """Spread a key of `key_bits` evenly over the fewest frames that hold it.

    A plan's frame of k key bits is the longest its blind window allows; cutting a key into
    such frames drops a tail of up to k - 1 bits (~4 % of a one-minute pass). Frames of
    k' = N // ceil(N / k) <= k bits drop fewer than ceil(N / k) bits instead. Symbols a frame
    no longer fills with key bits become punctured rather than shortened, as many as keep the
    first syndrome at the code's start efficiency, (m - p') / (k' h) <= start, so the exchange
    costs the same per key bit (Elkouss et al., QIC 11, 226 (2011), eq. 6: puncturing and
    shortening trade freely while the modulated rate stays in range). The plan stays as it is
    where that would need more punctured symbols than the code has untainted ones, or where
    its own cut already drops fewer bits.
    """
    total = as_count(key_bits, "key_bits")
    k = plan.frame_key_bits
    if total < k or total % k == 0:
        return plan
    frames = -(-total // k)
    fitted_k = total // frames
    if total - (total // fitted_k) * fitted_k >= total % k:
        return plan  # the planned cut already drops next to nothing
    code, entropy = plan.code, binary_entropy(float(qber_estimate))
    start = start_efficiency_for(code)
    punctured = max(plan.punctured, math.ceil(code.m - start * fitted_k * entropy))
    if punctured > code.rate_adaptive_symbols or fitted_k + punctured > code.n:
        return plan
    step = max(1, math.ceil(STEP_EFFICIENCY * fitted_k * entropy))
    return FramePlan(code, fitted_k, code.n - fitted_k - punctured, punctured, step)


def _start_parameters(
    request: dict[str, Any], eps_frame: float, codes: tuple[LdpcCode, ...] | None
) -> tuple[int, float]:
    """The (seed, QBER estimate) of a start request; ProtocolError if it cannot be served."""
    if not 0.0 < float(eps_frame) < 0.5:
        raise InputError(f"eps_frame must lie in (0, 0.5), got {eps_frame}")
    request = _check_kind(request, KIND_START)
    seed = _field_int(request, "seed")
    if not 0 <= seed < 2**63:
        raise ProtocolError(f"seed must lie in [0, 2^63), got {seed}")
    qber = _field_float(request, "qber_estimate")
    if not 0.0 < qber < 0.5:
        raise ProtocolError(f"qber_estimate must lie in (0, 0.5), got {qber}")
    try:
        plan_frames(qber, _codes(codes), eps_frame=eps_frame)
    except InputError as exc:  # the peer's QBER estimate: no shipped code serves it
        raise ProtocolError(f"no frame plan for the start request: {exc}") from None
    return seed, qber


def outcome_bits(plan: FramePlan) -> int:
    """Bits charged per frame for its public outcome: decoded after 0..R reveal rounds, or
    given up after the last (R + 2 values, R = ceil(punctured / reveal_step))."""
    rounds = -(-plan.punctured // plan.reveal_step)
    return (rounds + 1).bit_length()  # ceil(log2(rounds + 2))


def _charged_leak(leak_bits: int, frames: int, frame_ok: np.ndarray, plan: FramePlan) -> int:
    failed = int(frames - np.count_nonzero(frame_ok))
    return int(leak_bits) + failed * plan.frame_key_bits + int(frames) * outcome_bits(plan)


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


def _request_fingerprint(request: dict[str, Any]) -> bytes:
    parts = []
    for field in ("frames", "counts", "frame_ok"):
        value = request.get(field)
        if isinstance(value, np.ndarray):
            parts.append(field.encode() + value.tobytes())
        elif isinstance(value, bytes | bytearray):
            parts.append(field.encode() + bytes(value))
    return b"|".join(parts)


def _kept_mask(layout: FrameLayout, k: int, frame_ok: np.ndarray, key_bits: int) -> np.ndarray:
    mask = np.zeros(key_bits, dtype=bool)
    for f in np.flatnonzero(frame_ok):
        mask[layout.key_order[f * k : (f + 1) * k]] = True
    return mask


# threads the receiver decodes frames on by default (the decoder kernel releases the GIL)
DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
# frames per decoding thread started ahead of the one applied next (each holds ~4 MB of state)
FRAMES_IN_FLIGHT = 4


class LdpcReceiver:
    """Ground side: decodes every frame, asks for punctured values until done, keeps the rest.

    `corrected_key` holds the corrected bits of decoded frames (the noisy bits elsewhere);
    `frame_ok`, `leak_bits` and `round_trips` (reveal exchanges) describe the outcome.
    """

    def __init__(
        self,
        noisy_key: np.ndarray,
        qber_estimate: float,
        seed: int,
        *,
        codes: tuple[LdpcCode, ...] | None = None,
        threads: int | None = None,
    ) -> None:
        self._key = as_bit_array(noisy_key, "noisy_key", allow_empty=True)
        # frames decode on this many threads (the decoder releases the GIL); same results
        self._threads = (
            DECODE_THREADS if threads is None else as_count(threads, "threads", minimum=1)
        )
        self._channel = channel_llr_magnitude(qber_estimate)
        self._qber_estimate = float(qber_estimate)
        self._codes = _codes(codes)
        self._seed = as_count(seed, "seed")
        self._positions_seed = _positions_seed(seed)
        self.corrected_key = self._key.copy()
        self.plan: FramePlan  # set by the first part of the opening message
        self.layout: FrameLayout
        self.frames = 0
        self.frame_ok = np.zeros(0, dtype=bool)
        self.leak_bits = 0
        self.round_trips = 0
        self.decoder_iterations = 0
        self.done = False
        self._started = False
        self._frames_received = 0
        self._round = 0
        self._final_sent = False

    def start_request(self) -> dict[str, Any]:
        """Get the message that asks the sender to start: layout seed and QBER estimate."""
        return {
            "version": MESSAGE_VERSION,
            "kind": KIND_START,
            "seed": self._seed,
            "qber_estimate": self._qber_estimate,
        }

    @property
    def first_complete(self) -> bool:
        """Get: whether every part of the opening message has been applied."""
        return self._started and self._frames_received == self.frames

    @property
    def link_round_trips(self) -> int:
        """Get: request/answer exchanges on the link so far: the start (answered by the
        syndromes), each reveal round, and the final request (answered by the ack)."""
        return int(self._started) + self.round_trips + int(self.done)

    def apply_first(self, message: dict[str, Any]) -> None:
        """Take one part of the sender's opening message (parts in order) and decode its frames."""
        if self.first_complete:
            raise ProtocolError("the first message was already applied")
        message = _check_kind(message, KIND_FIRST)
        plan, frames = self._first_header(message)
        if self._started and (plan, frames) != (self.plan, self.frames):
            raise ProtocolError("first message parts disagree on the code or frame shape")
        first = _field_int(message, "first_frame")
        count = _field_int(message, "frame_count")
        if first != self._frames_received:
            raise ProtocolError(
                f"expected the part from frame {self._frames_received}, got {first}"
            )
        if count < 0 or first + count > frames or (count == 0 and frames > 0):
            raise ProtocolError(f"frame_count {count} from frame {first} does not fit {frames}")
        m = plan.code.m
        syndromes = _unpacked(message, "syndromes", count * m).reshape(count, m)
        if not self._started:
            self.plan = plan
            self.layout = frame_layout(plan, self._positions_seed, self._key.size)
            # the shortened symbols are 0 in every frame: decode without their edges
            self._rows = rows_without(plan.code, self.layout.shortened_positions)
            self.frames = frames
            self._syndromes = np.zeros((frames, m), dtype=np.uint8)
            self.frame_ok = np.zeros(frames, dtype=bool)
            self._revealed = np.zeros(frames, dtype=np.int64)
            self._revealed_values = np.zeros((frames, plan.punctured), dtype=np.uint8)
            self._messages: dict[int, np.ndarray] = {}  # decoder state of pending frames
            self._pending = np.ones(frames, dtype=bool)
            self.leak_bits = frames * (m - plan.punctured)
            self._started = True
        self._syndromes[first : first + count] = syndromes
        self._frames_received = first + count
        self._decode(np.arange(first, first + count))

    def _first_header(self, message: dict[str, Any]) -> tuple[FramePlan, int]:
        code = self._code_for(message)
        if _field_int(message, "positions_seed") != self._positions_seed:
            raise ProtocolError("positions_seed does not match this pass's seed")
        key_bits = _field_int(message, "key_bits")
        if key_bits != self._key.size:
            raise ProtocolError(f"key_bits {key_bits} != the noisy key's {self._key.size}")
        k = _field_int(message, "frame_key_bits")
        shortened = _field_int(message, "shortened")
        punctured = _field_int(message, "punctured")
        step = _field_int(message, "reveal_step")
        if min(k, shortened, punctured) < 0 or k < 1 or step < 1:
            raise ProtocolError("frame shape fields must be non-negative and k, step >= 1")
        if k + shortened + punctured != code.n or punctured > code.rate_adaptive_symbols:
            raise ProtocolError("frame shape does not fit the code")
        frames = _field_int(message, "frames")
        if frames != self._key.size // k:
            raise ProtocolError(f"frames {frames} != {self._key.size} // {k}")
        return FramePlan(code, k, shortened, punctured, step), frames

    def next_request(self) -> dict[str, Any] | None:
        """Get the next request for the sender, or None once the exchange is over."""
        if not self.first_complete:
            raise ProtocolError("apply the first message (every part) before asking for a request")
        if self.done:
            return None
        pending = np.flatnonzero(self._pending)
        if pending.size:
            left = self.plan.punctured - self._revealed[pending]
            counts = np.minimum(left, self.plan.reveal_step)
            return {
                "version": MESSAGE_VERSION,
                "kind": KIND_REVEAL_REQUEST,
                "round": self._round + 1,
                "frames": pending.astype(np.uint32),
                "counts": counts.astype(np.uint32),
            }
        self._final_sent = True
        return {
            "version": MESSAGE_VERSION,
            "kind": KIND_FINAL,
            "round": self._round + 1,
            "frame_ok": _packed(self.frame_ok),
        }

    def apply_reply(self, reply: dict[str, Any]) -> None:
        """Take the sender's answer: decode on with the revealed values, or finish."""
        if not self.first_complete or self.done:
            raise ProtocolError("no reply is expected now")
        if not isinstance(reply, dict):
            raise ProtocolError(f"reply must be a dict, got {type(reply).__name__}")
        round_index = _field_int(reply, "round")
        if round_index == self._round:
            return  # re-delivery of the reply already applied
        if round_index != self._round + 1:
            raise ProtocolError(f"expected a reply to round {self._round + 1}, got {round_index}")
        if _field_int(reply, "kind") == KIND_FINAL_ACK:
            _check_kind(reply, KIND_FINAL_ACK)
            if not self._final_sent or np.any(self._pending):
                raise ProtocolError("final acknowledgement before the final request")
            self._round = round_index
            self.done = True
            return
        reply = _check_kind(reply, KIND_REVEAL_REPLY)
        pending = np.flatnonzero(self._pending)
        counts = np.minimum(self.plan.punctured - self._revealed[pending], self.plan.reveal_step)
        total = int(counts.sum())
        if _field_int(reply, "revealed_bits") != total:
            raise ProtocolError(f"revealed_bits must be {total}")
        values = _unpacked(reply, "values", total)
        offset = 0
        for f, c in zip(pending.tolist(), counts.tolist(), strict=True):
            start = int(self._revealed[f])
            self._revealed_values[f, start : start + c] = values[offset : offset + c]
            self._revealed[f] += c
            offset += c
        self.leak_bits += total
        self.round_trips += 1
        self._round = round_index
        self._decode(pending)

    @property
    def revealed_counts(self) -> np.ndarray:
        """Get: how many punctured values each frame has had revealed so far (a copy)."""
        return self._revealed.copy()

    @property
    def decoded_edges(self) -> int:
        """Get: the edges a decoder iteration updates (the code's less the shortened symbols')."""
        if not self._started:
            raise ProtocolError("no frame plan yet: apply the first message")
        return self._rows.edges

    def kept_mask(self) -> np.ndarray:
        """Bits of the key that survive: those of decoded frames (failed frames are dropped)."""
        if not self._started:
            return np.zeros(self._key.size, dtype=bool)
        return _kept_mask(self.layout, self.plan.frame_key_bits, self.frame_ok, self._key.size)

    def framed_mask(self) -> np.ndarray:
        """Bits of the key that lie in a frame (decoded or not): whose statistics count."""
        if not self._started:
            return np.zeros(self._key.size, dtype=bool)
        every = np.ones(self.frames, dtype=bool)
        return _kept_mask(self.layout, self.plan.frame_key_bits, every, self._key.size)

    @property
    def charged_leak_bits(self) -> int:
        """Get: the leak the key length is charged once done (see the module docstring)."""
        if not self._started:
            return int(self.leak_bits)
        return _charged_leak(self.leak_bits, self.frames, self.frame_ok, self.plan)

    def _code_for(self, message: dict[str, Any]) -> LdpcCode:
        code_id = _field_int(message, "code_id")
        matches = [c for c in self._codes if c.code_id == code_id]
        if not matches:
            raise ProtocolError(f"unknown code_id {code_id}")
        if _field_int(message, "code_digest") != matches[0].digest:
            raise ProtocolError(f"code {code_id} differs from the sender's (digest mismatch)")
        return matches[0]

    def _decode(self, frames: np.ndarray) -> None:
        """Decode the given frames and apply each outcome in frame order, so the result does not
        depend on the number of threads.

        With several threads, up to FRAMES_IN_FLIGHT per thread are decoding or decoded and
        waiting: as soon as the oldest is applied the next frame starts, so a slow frame holds
        up no thread (batches with a barrier left a core idle while a batch's slowest frame
        finished), and the decoder state held at once stays bounded."""
        order = frames.tolist()
        if self._threads == 1:
            for f in order:
                self._apply_decoded(f, *self._decode_frame(f))
            return
        upcoming = iter(order)
        with ThreadPoolExecutor(max_workers=self._threads) as pool:
            in_flight: deque[tuple[int, Future[tuple[DecodeResult, np.ndarray, bool]]]] = deque(
                (f, pool.submit(self._decode_frame, f))
                for f in islice(upcoming, FRAMES_IN_FLIGHT * self._threads)
            )
            while in_flight:
                f, decoding = in_flight.popleft()
                self._apply_decoded(f, *decoding.result())
                following = next(upcoming, None)
                if following is not None:
                    in_flight.append((following, pool.submit(self._decode_frame, following)))

    def _decode_frame(self, f: int) -> tuple[DecodeResult, np.ndarray, bool]:
        """One frame's decoding this round: (result, its messages, whether it was the last)."""
        code, k, layout = self.plan.code, self.plan.frame_key_bits, self.layout
        llr = np.empty(code.n, dtype=np.float64)
        noisy = self._key[layout.key_order[f * k : (f + 1) * k]]
        llr[layout.key_positions] = (1.0 - 2.0 * noisy) * self._channel
        llr[layout.shortened_positions] = KNOWN_SYMBOL_LLR
        llr[layout.punctured_positions] = 0.0
        shown = int(self._revealed[f])
        llr[layout.punctured_positions[:shown]] = (
            1.0 - 2.0 * self._revealed_values[f, :shown]
        ) * KNOWN_SYMBOL_LLR
        stored = self._messages.get(f)
        if stored is None:
            messages = np.zeros(self._rows.edges, dtype=np.float64)
        else:
            messages = stored.astype(np.float64)
        last_chance = shown >= self.plan.punctured  # nothing left to reveal: be patient
        result = decode_syndrome(
            code,
            self._syndromes[f],
            llr,
            messages,
            rows=self._rows,
            max_iterations=ROUND_MAX_ITERATIONS,
            stall_iterations=LAST_ROUND_STALL_ITERATIONS if last_chance else ROUND_STALL_ITERATIONS,
        )
        return result, messages, last_chance

    def _apply_decoded(
        self, f: int, result: DecodeResult, messages: np.ndarray, last_chance: bool
    ) -> None:
        k, layout = self.plan.frame_key_bits, self.layout
        self.decoder_iterations += result.iterations
        if result.converged:
            self.frame_ok[f] = True
            self._pending[f] = False
            self._messages.pop(f, None)
            self.corrected_key[layout.key_order[f * k : (f + 1) * k]] = result.word[
                layout.key_positions
            ]
        elif last_chance:
            self._pending[f] = False  # given up: discarded at both ends
            self._messages.pop(f, None)
        else:
            # kept for the next round in float32: half the memory (~1.6 MB per 2^16 frame)
            self._messages[f] = messages.astype(np.float32)
