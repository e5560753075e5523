"""How records become column values and back, the same for every SQL backend.

Values read back are checked on the way in: a damaged row is a DecodingError, never a
wrong record or a builtin error from deep inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from sourcery._core.clock import VectorClock
from sourcery._core.errors import DecodingError
from sourcery._core.records import ActorRef, EventRecord, SnapshotRecord

__all__ = [
    "EVENT_COLUMNS",
    "MessageKey",
    "decode_dots",
    "encode_dots",
    "encode_parents",
    "event_from_row",
    "message_check",
    "replaced_heads",
    "snapshot_check",
    "snapshot_from_row",
]

EVENT_COLUMNS = (
    "actor_type, actor_id, writer, n, id, timestamp, initiated_by, type, version, payload"
)
"""The events table's record columns, in the order of EventRecord's fields."""

MessageKey = tuple[str, str, str]
"""A message record's key: actor id, actor type, message id."""

_encoder = msgspec.msgpack.Encoder()
_parents_decoder = msgspec.msgpack.Decoder(list[bytes])
_dots_decoder = msgspec.msgpack.Decoder(list[tuple[str, int]])


def event_from_row(values: Sequence[Any]) -> EventRecord:
    """The record of the EVENT_COLUMNS values of one row, their types checked."""
    try:
        return msgspec.convert(tuple(values), EventRecord)
    except msgspec.ValidationError as exc:
        raise DecodingError(f"a damaged event row: {exc}") from exc


def encode_parents(parents: Sequence[VectorClock]) -> bytes:
    return _encoder.encode(sorted(p.to_bytes() for p in parents))


def snapshot_from_row(
    actor: ActorRef, clock: bytes, parents: bytes, state: bytes, timestamp: int
) -> SnapshotRecord:
    try:
        parent_clocks = tuple(VectorClock.from_bytes(p) for p in _parents_decoder.decode(parents))
    except msgspec.DecodeError as exc:
        raise DecodingError(f"malformed parents of a snapshot of {actor}") from exc
    return SnapshotRecord(
        actor=actor,
        clock=VectorClock.from_bytes(clock),
        parents=parent_clocks,
        state=state,
        timestamp=timestamp,
    )


def encode_dots(dots: Sequence[tuple[str, int]]) -> bytes:
    return _encoder.encode(list(dots))


def decode_dots(data: bytes, what: str) -> tuple[tuple[str, int], ...]:
    try:
        return tuple(_dots_decoder.decode(data))
    except msgspec.DecodeError as exc:
        raise DecodingError(f"malformed {what}") from exc


def replaced_heads(heads: Sequence[bytes], clock: VectorClock) -> list[bytes] | None:
    """The stored heads a new snapshot with ``clock`` replaces, or None if it is no head
    (a head covers it already: it arrived after a descendant, as replication allows)."""
    current = [(key, VectorClock.from_bytes(key)) for key in heads]
    if any(head >= clock for _, head in current):
        return None
    return [key for key, head in current if head < clock]


def snapshot_check(kind: str, ident: str, clock: bytes) -> bytes:
    """What a replication cursor remembers of the snapshot it stopped at."""
    return b"\x00".join((kind.encode(), ident.encode(), clock))


def message_check(kind: str, ident: str, message_id: str) -> bytes:
    """What a replication cursor remembers of the message record it stopped at."""
    return b"\x00".join((kind.encode(), ident.encode(), message_id.encode()))
