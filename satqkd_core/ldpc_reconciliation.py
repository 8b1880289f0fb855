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

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

import numpy as np

from satqkd_core.bits import as_bit_array, as_count
from satqkd_core.cascade import reconciliation_efficiency
from satqkd_core.errors import ProtocolError
from satqkd_core.ldpc import (
    KNOWN_SYMBOL_LLR,
    DecodeResult,
    LdpcCode,
    channel_llr_magnitude,
    decode_syndrome,
    rows_without,
)
from satqkd_core.ldpc_frames import FrameLayout, FramePlan, frame_layout
from satqkd_core.ldpc_protocol import (
    KIND_FINAL,
    KIND_FINAL_ACK,
    KIND_FIRST,
    KIND_REVEAL_REPLY,
    KIND_REVEAL_REQUEST,
    KIND_START,
    MAX_SYNDROME_BYTES,
    MESSAGE_NAMES,
    MESSAGE_VERSION,
    charged_leak,
    checked_kind,
    code_family,
    field_int,
    fit_plan_to_key,
    kept_mask_of,
    message_from_wire,
    outcome_bits,
    packed_bits,
    positions_seed,
    unpacked_bits,
    wire_message,
)
from satqkd_core.ldpc_sender import LdpcSender

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

# Iterations of one decoding attempt (a blind round). A frame stops once it stalls: early in a
# round that will be followed by more reveals (the decoder resumes from its messages, so
# little is lost), later when nothing is left to reveal and the frame would be given up.
# (Decision 0040: counting only a 10 % fall of the unsatisfied checks as progress before the
# last round saved 0-9 % of the iterations at no worse f, but lost a frame that the patient
# rule decodes when the QBER is underestimated; not adopted.)
ROUND_MAX_ITERATIONS = 200
ROUND_STALL_ITERATIONS = 8
LAST_ROUND_STALL_ITERATIONS = 32


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
        self._codes = code_family(codes)
        self._seed = as_count(seed, "seed")
        self._positions_seed = positions_seed(seed)
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
        message = checked_kind(message, KIND_FIRST)
        plan, frames = self._first_header(message)
        if self._started and (plan, frames) != (self.plan, self.frames):
            raise ProtocolError("first message parts disagree on the code or frame shape")
        first = field_int(message, "first_frame")
        count = field_int(message, "frame_count")
        if first != self._frames_received:
            raise ProtocolError(
                f"expected the part from frame {self._frames_received}, got {first}"
            )
        if count < 0 or first + count > frames or (count == 0 and frames > 0):
            raise ProtocolError(f"frame_count {count} from frame {first} does not fit {frames}")
        m = plan.code.m
        syndromes = unpacked_bits(message, "syndromes", count * m).reshape(count, m)
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
        if field_int(message, "positions_seed") != self._positions_seed:
            raise ProtocolError("positions_seed does not match this pass's seed")
        key_bits = field_int(message, "key_bits")
        if key_bits != self._key.size:
            raise ProtocolError(f"key_bits {key_bits} != the noisy key's {self._key.size}")
        k = field_int(message, "frame_key_bits")
        shortened = field_int(message, "shortened")
        punctured = field_int(message, "punctured")
        step = field_int(message, "reveal_step")
        if min(k, shortened, punctured) < 0 or k < 1 or step < 1:
            raise ProtocolError("frame shape fields must be non-negative and k, step >= 1")
        if k + shortened + punctured != code.n or punctured > code.rate_adaptive_symbols:
            raise ProtocolError("frame shape does not fit the code")
        frames = field_int(message, "frames")
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
            "frame_ok": packed_bits(self.frame_ok),
        }

    def apply_reply(self, reply: dict[str, Any]) -> None:
        """Take the sender's answer: decode on with the revealed values, or finish."""
        if not self.first_complete or self.done:
            raise ProtocolError("no reply is expected now")
        if not isinstance(reply, dict):
            raise ProtocolError(f"reply must be a dict, got {type(reply).__name__}")
        round_index = field_int(reply, "round")
        if round_index == self._round:
            return  # re-delivery of the reply already applied
        if round_index != self._round + 1:
            raise ProtocolError(f"expected a reply to round {self._round + 1}, got {round_index}")
        if field_int(reply, "kind") == KIND_FINAL_ACK:
            checked_kind(reply, KIND_FINAL_ACK)
            if not self._final_sent or np.any(self._pending):
                raise ProtocolError("final acknowledgement before the final request")
            self._round = round_index
            self.done = True
            return
        reply = checked_kind(reply, KIND_REVEAL_REPLY)
        pending = np.flatnonzero(self._pending)
        counts = np.minimum(self.plan.punctured - self._revealed[pending], self.plan.reveal_step)
        total = int(counts.sum())
        if field_int(reply, "revealed_bits") != total:
            raise ProtocolError(f"revealed_bits must be {total}")
        values = unpacked_bits(reply, "values", total)
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
        return kept_mask_of(self.layout, self.plan.frame_key_bits, self.frame_ok, self._key.size)

    def framed_mask(self) -> np.ndarray:
        """Bits of the key that lie in a frame (decoded or not): whose statistics count."""
        if not self._started:
            return np.zeros(self._key.size, dtype=bool)
        every = np.ones(self.frames, dtype=bool)
        return kept_mask_of(self.layout, self.plan.frame_key_bits, every, self._key.size)

    @property
    def charged_leak_bits(self) -> int:
        """Get: the leak the key length is charged once done (see the module docstring)."""
        if not self._started:
            return int(self.leak_bits)
        return charged_leak(self.leak_bits, self.frames, self.frame_ok, self.plan)

    def _code_for(self, message: dict[str, Any]) -> LdpcCode:
        code_id = field_int(message, "code_id")
        matches = [c for c in self._codes if c.code_id == code_id]
        if not matches:
            raise ProtocolError(f"unknown code_id {code_id}")
        if field_int(message, "code_digest") != matches[0].digest:
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
