"""Blind LDPC reconciliation's messages and the rules both ends share.

The protocol (`satqkd_core.ldpc_reconciliation`) runs between `LdpcSender`
(`satqkd_core.ldpc_sender`) and `LdpcReceiver`. This module holds what both need: the message
kinds and their dictionary names, strict parsing of received fields (`ProtocolError` naming the
field), the start request's parameters, how a key is spread over frames (`fit_plan_to_key`),
and the leak both ends charge (`charged_leak`, `outcome_bits`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from satqkd_core.bits import as_count, binary_entropy
from satqkd_core.errors import InputError, ProtocolError
from satqkd_core.ldpc import LdpcCode, mother_codes
from satqkd_core.ldpc_frames import (
    STEP_EFFICIENCY,
    FrameLayout,
    FramePlan,
    plan_frames,
    start_efficiency_for,
)
from satqkd_core.rng import derive_key

__all__ = [
    "KIND_FINAL",
    "KIND_FINAL_ACK",
    "KIND_FIRST",
    "KIND_REVEAL_REPLY",
    "KIND_REVEAL_REQUEST",
    "KIND_START",
    "MAX_SYNDROME_BYTES",
    "MESSAGE_NAMES",
    "MESSAGE_VERSION",
    "charged_leak",
    "checked_kind",
    "code_family",
    "field_array",
    "field_float",
    "field_int",
    "fit_plan_to_key",
    "kept_mask_of",
    "message_from_wire",
    "outcome_bits",
    "packed_bits",
    "positions_seed",
    "request_fingerprint",
    "start_parameters",
    "unpacked_bits",
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


def positions_seed(seed: object) -> int:
    """Shared seed of the frame layout, from the pass seed (63 bits: fits every codec int)."""
    return derive_key(as_count(seed, "seed"), "ldpc.positions") & ((1 << 63) - 1)


def code_family(codes: tuple[LdpcCode, ...] | None) -> tuple[LdpcCode, ...]:
    """The mother codes to choose from (the shipped ones for None), validated."""
    family = mother_codes() if codes is None else tuple(codes)
    if not family or not all(isinstance(c, LdpcCode) for c in family):
        raise InputError("codes must be a non-empty sequence of LdpcCode")
    if len({c.code_id for c in family}) != len(family):
        raise InputError("codes must have distinct code_id values")
    return family


def packed_bits(bits: np.ndarray) -> bytes:
    """Bits (0/1, any shape) packed big-endian into bytes, as they travel."""
    return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="big").tobytes()


def unpacked_bits(message: dict[str, Any], field: str, count: int) -> np.ndarray:
    """`count` bits packed in a received field; ProtocolError unless it holds that many bytes."""
    value = field_array(message, field, np.uint8)
    if value.size != (count + 7) // 8:
        raise ProtocolError(f"{field} must hold {(count + 7) // 8} bytes, got {value.size}")
    return np.unpackbits(value, count=count, bitorder="big")


def field_int(message: dict[str, Any], field: str) -> int:
    """A received integer field; ProtocolError naming the field if absent or not an integer."""
    if field not in message:
        raise ProtocolError(f"message lacks field {field!r}")
    value = message[field]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ProtocolError(f"{field} must be an integer, got {type(value).__name__}")
    return int(value)


def field_array(message: dict[str, Any], field: str, dtype: type) -> np.ndarray:
    """A received 1-D array field of `dtype` (bytes for uint8); ProtocolError naming the field."""
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


def field_float(message: dict[str, Any], field: str) -> float:
    """A received number field; ProtocolError naming the field if absent or not a number."""
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


def checked_kind(message: object, kind: int) -> dict[str, Any]:
    """The message, if it is a dict of this protocol version and kind; ProtocolError otherwise."""
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a dict, got {type(message).__name__}")
    if field_int(message, "version") != MESSAGE_VERSION:
        raise ProtocolError(f"unsupported message version {message['version']}")
    if field_int(message, "kind") != kind:
        raise ProtocolError(f"expected message kind {kind}, got {message['kind']}")
    return message


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


def start_parameters(
    request: dict[str, Any], eps_frame: float, codes: tuple[LdpcCode, ...] | None
) -> tuple[int, float]:
    """The (seed, QBER estimate) of a start request; ProtocolError if it cannot be served."""
    if not 0.0 < float(eps_frame) < 0.5:
        raise InputError(f"eps_frame must lie in (0, 0.5), got {eps_frame}")
    request = checked_kind(request, KIND_START)
    seed = field_int(request, "seed")
    if not 0 <= seed < 2**63:
        raise ProtocolError(f"seed must lie in [0, 2^63), got {seed}")
    qber = field_float(request, "qber_estimate")
    if not 0.0 < qber < 0.5:
        raise ProtocolError(f"qber_estimate must lie in (0, 0.5), got {qber}")
    try:
        plan_frames(qber, code_family(codes), eps_frame=eps_frame)
    except InputError as exc:  # the peer's QBER estimate: no shipped code serves it
        raise ProtocolError(f"no frame plan for the start request: {exc}") from None
    return seed, qber


def outcome_bits(plan: FramePlan) -> int:
    """Bits charged per frame for its public outcome: decoded after 0..R reveal rounds, or
    given up after the last (R + 2 values, R = ceil(punctured / reveal_step))."""
    rounds = -(-plan.punctured // plan.reveal_step)
    return (rounds + 1).bit_length()  # ceil(log2(rounds + 2))


def charged_leak(leak_bits: int, frames: int, frame_ok: np.ndarray, plan: FramePlan) -> int:
    """The leak charged once done: syndromes and reveals, each failed frame's key bits, and
    `outcome_bits` per frame (the module docstring of `satqkd_core.ldpc_reconciliation`)."""
    failed = int(frames - np.count_nonzero(frame_ok))
    return int(leak_bits) + failed * plan.frame_key_bits + int(frames) * outcome_bits(plan)


def request_fingerprint(request: dict[str, Any]) -> bytes:
    """Bytes that tell a re-delivered request from a new one of the same kind and round."""
    parts = []
    for field in ("frames", "counts", "frame_ok"):
        value = request.get(field)
        if isinstance(value, np.ndarray):
            parts.append(field.encode() + value.tobytes())
        elif isinstance(value, bytes | bytearray):
            parts.append(field.encode() + bytes(value))
    return b"|".join(parts)


def kept_mask_of(layout: FrameLayout, k: int, frame_ok: np.ndarray, key_bits: int) -> np.ndarray:
    """Key bits that lie in the frames flagged in `frame_ok` (k key bits per frame)."""
    mask = np.zeros(key_bits, dtype=bool)
    for f in np.flatnonzero(frame_ok):
        mask[layout.key_order[f * k : (f + 1) * k]] = True
    return mask
