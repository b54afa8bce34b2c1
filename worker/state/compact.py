"""What a finished code shrinks to after the replay window, shared by both state stores.

A ``done`` record keeps its full Result only for the replay window
(``WECOM_REPLAY_WINDOW``): a redelivery of the same command is plausible for
minutes, not for the 72 h a code must be remembered. After the window a record
keeps what single use and a late replay need, packed in a few bytes (the
*kept outcome*):

* byte 0, flags: bit 0 the code was spent, bit 1 it may have been sent;
* byte 1, the kind: status and ``error.code`` together (:data:`KINDS`);
* bytes 2-5, errcode (signed, big-endian; :data:`NO_ERRCODE` for none);
* byte 6, attempts (capped at 255);
* bytes 7-12, finished_at in milliseconds;
* bytes 13-16, finished_at - received_at in milliseconds;
* the rest, the first command's id (:func:`pack_command_id`).

A replay after the window is rebuilt from it (:func:`late_replay`): the same
status, errcode and ``error.code``, ``invalid_users`` empty and an ``errmsg``
saying the details are no longer kept; its times are the first answer's, to the
millisecond. The record itself is found by a 12-byte digest of (corp_id,
response_code) (:func:`code_digest`).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from typing import Final

import msgspec

from wecom_card_contracts import ErrorCode, Result, ResultError, Status, encode_result
from worker.ports import AlreadyUsed, Claimed, ClaimOutcome, CodeKey, Replay

__all__ = [
    "KINDS",
    "Kept",
    "code_digest",
    "command_matches",
    "decide_kept",
    "kept_command_name",
    "late_replay",
    "pack_command_id",
    "pack_kept",
    "unpack_kept",
]

# Index = the kind byte. Append only: the index is stored.
KINDS: Final[tuple[tuple[Status, ErrorCode | None], ...]] = (
    ("ok", None),
    ("partial", None),
    ("failed", "wecom_error"),
    ("failed", "retries_exhausted"),
    ("indeterminate", "outcome_unknown"),
    ("failed", None),
    ("indeterminate", None),
    ("rejected", "invalid_command"),
    ("rejected", "unknown_app"),
    ("expired", "expired_code"),
    ("duplicate", "code_already_used"),
)
_KIND_OF: Final = {pair: index for index, pair in enumerate(KINDS)}
_UNKNOWN_KIND: Final = KINDS.index(("indeterminate", None))
NO_ERRCODE: Final = -(2**31)
_HEAD: Final = struct.Struct(">BBiB")  # flags, kind, errcode, attempts; then the times
_TIMES: Final = struct.Struct(">HII")  # finished_at ms (48 bits: high 16, low 32), - received_at
HEAD_BYTES: Final = _HEAD.size + _TIMES.size  # where the command id starts
SPENT: Final = 1
MAYBE_SPENT: Final = 2

CODE_DIGEST_BYTES: Final = 12
# Command ids up to this many UTF-8 bytes are kept as they are: duplicates name them exactly.
RAW_ID_BYTES: Final = 32
_ID_DIGEST_BYTES: Final = 16
_ID_PREFIX_BYTES: Final = 16


class _KeptError(msgspec.Struct):
    code: str | None = None


class _Stored(msgspec.Struct):
    """The fields of a stored Result that outlive the replay window; the rest is ignored."""

    status: str | None = None
    errcode: int | None = None
    attempts: int = 0
    finished_at: float | None = None
    received_at: float | None = None
    error: _KeptError | None = None


_STORED_DECODER: Final = msgspec.json.Decoder(_Stored)


class Kept(msgspec.Struct, frozen=True):
    """A kept outcome, unpacked."""

    spent: bool
    maybe_spent: bool
    status: Status
    error_code: ErrorCode | None
    errcode: int | None
    attempts: int
    finished_at: float
    received_at: float
    command: bytes  # pack_command_id of the first command


def code_digest(corp_id: str, response_code: str) -> bytes:
    """12 bytes naming one (corp_id, response_code); the length prefix keeps any two apart.

    96 bits: among the 44 million codes one corp at WeCom's ceiling leaves in 73 h,
    two share a digest with odds of about 1e-14.
    """
    corp = corp_id.encode()
    data = len(corp).to_bytes(2, "big") + corp + response_code.encode()
    return hashlib.blake2b(data, digest_size=CODE_DIGEST_BYTES).digest()


def pack_command_id(command_id: str) -> bytes:
    """The command id as kept: ``=`` + a short id, ``u`` + 16 bytes for a UUID, else a digest.

    A long id is kept as ``#`` + a 16-byte digest + its first 16 bytes: equal
    ids pack equal, and a duplicate still names the first command by its prefix.
    """
    raw = command_id.encode()
    if len(raw) <= RAW_ID_BYTES:
        return b"=" + raw
    if len(raw) == 36:
        try:
            parsed = uuid.UUID(command_id)
        except ValueError:
            pass
        else:
            if str(parsed) == command_id:
                return b"u" + parsed.bytes
    digest = hashlib.blake2b(raw, digest_size=_ID_DIGEST_BYTES).digest()
    return b"#" + digest + raw[:_ID_PREFIX_BYTES]


def command_matches(packed: bytes, command_id: str) -> bool:
    """Whether ``command_id`` is the command kept as ``packed``."""
    return pack_command_id(command_id) == packed


def kept_command_name(packed: bytes) -> str:
    """The first command's id as far as it is kept (a long one ends in ``…``)."""
    tag, body = packed[:1], packed[1:]
    if tag == b"u":
        return str(uuid.UUID(bytes=body))
    if tag == b"#":
        return body[_ID_DIGEST_BYTES:].decode(errors="ignore") + "…"
    return body.decode(errors="replace")


def pack_kept(
    result: bytes, command_id: str, *, spent: bool, maybe_spent: bool, finished_at: float
) -> bytes:
    """The kept outcome of a stored Result; ``finished_at`` when the Result has no times.

    A stored value that is not a Result with a known status (the pipeline never
    writes one) is kept as ``indeterminate``: what happened is not known.
    """
    try:
        stored = _STORED_DECODER.decode(result)
    except msgspec.DecodeError:
        stored = _Stored()
    error_code = stored.error.code if stored.error else None
    kind = _KIND_OF.get((stored.status, error_code))  # type: ignore[arg-type]
    if kind is None:
        kind = _KIND_OF.get((stored.status, None), _UNKNOWN_KIND)  # type: ignore[arg-type]
    errcode = (
        NO_ERRCODE
        if stored.errcode is None
        else max(NO_ERRCODE + 1, min(stored.errcode, 2**31 - 1))
    )
    flags = (SPENT if spent else 0) | (MAYBE_SPENT if maybe_spent or spent else 0)
    finished = stored.finished_at if stored.finished_at is not None else finished_at
    received = stored.received_at if stored.received_at is not None else finished
    millis = max(0, min(round(finished * 1000), 2**48 - 1))
    took = max(0, min(millis - round(received * 1000), 2**32 - 1))
    head = _HEAD.pack(flags, kind, errcode, min(max(stored.attempts, 0), 255))
    times = _TIMES.pack(millis >> 32, millis & 0xFFFFFFFF, took)
    return head + times + pack_command_id(command_id)


def unpack_kept(packed: bytes) -> Kept:
    """A kept outcome's fields."""
    flags, kind, errcode, attempts = _HEAD.unpack_from(packed)
    high, low, took = _TIMES.unpack_from(packed, _HEAD.size)
    millis = (high << 32) | low
    status, error_code = KINDS[kind] if kind < len(KINDS) else KINDS[_UNKNOWN_KIND]
    return Kept(
        spent=bool(flags & SPENT),
        maybe_spent=bool(flags & MAYBE_SPENT),
        status=status,
        error_code=error_code,
        errcode=None if errcode == NO_ERRCODE else errcode,
        attempts=attempts,
        finished_at=millis / 1000,
        received_at=(millis - took) / 1000,
        command=packed[HEAD_BYTES:],
    )


def late_replay(kept: Kept, command_id: str, response_code: str, window_seconds: float) -> bytes:
    """The stored-Result JSON a replay after the window re-sends: status and errcode only."""
    note = (
        f"details of this result are no longer kept: replay window of {window_seconds:g} s passed"
    )
    error = None if kept.error_code is None else ResultError(code=kept.error_code, message=note)
    prefix = "ok" if kept.errcode == 0 else None
    result = Result(
        command_id=command_id,
        correlation_id=command_id,
        status=kept.status,
        response_code=response_code,
        errcode=kept.errcode,
        errmsg=f"{prefix} ({note})" if prefix else note,
        error=error,
        attempts=kept.attempts,
        received_at=kept.received_at,
        finished_at=kept.finished_at,
    )
    return encode_result(result)


def decide_kept(
    packed: bytes, key: CodeKey, command_id: str, window_seconds: float
) -> ClaimOutcome:
    """What a claim by ``command_id`` gets from a kept outcome (a record past the window).

    A :class:`Claimed` answer means the caller takes the code over (the earlier
    command did not spend it).
    """
    kept = unpack_kept(packed)
    if command_matches(kept.command, command_id):
        return Replay(late_replay(kept, command_id, key.response_code, window_seconds))
    if kept.spent:
        return AlreadyUsed(kept_command_name(kept.command))
    return Claimed(maybe_spent=kept.maybe_spent)
