"""The records a store keeps: plain bytes and numbers, no user types.

Stores and replication move these; only the runtime's codec turns them into user values.
Every record has a unique key and is never changed once written, so writing one twice is
a no-op and copying records between stores is a plain union.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic

import msgspec
from typing_extensions import TypeVar

from sourcery._core.clock import VectorClock
from sourcery._core.errors import DecodingError, InvalidActorRef

__all__ = [
    "BEGINNING",
    "MAX_ID_BYTES",
    "ActorRef",
    "Checkpoint",
    "Chunk",
    "CommitBatch",
    "Cursor",
    "EventRecord",
    "MessageRecord",
    "PackRecord",
    "SnapshotRecord",
    "check_text",
    "decode_events",
    "encode_events",
]

S = TypeVar("S", default=Any)
C = TypeVar("C", default=Any)
E = TypeVar("E", default=Any)

MAX_ID_BYTES = 255
"""Longest actor type, actor id, writer id or message id, in UTF-8 bytes."""


def check_text(value: object, what: str) -> str:
    """Return ``value`` if it can be a key in every store, else raise InvalidActorRef."""
    if not isinstance(value, str):
        raise InvalidActorRef(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidActorRef(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidActorRef(f"{what} is not valid UTF-8: {value!r}") from exc
    if size > MAX_ID_BYTES:
        raise InvalidActorRef(f"{what} is {size} bytes long; the limit is {MAX_ID_BYTES}")
    if "\x00" in value:
        raise InvalidActorRef(f"{what} must not contain NUL characters: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ActorRef(Generic[S, C, E]):
    """Names one actor: its type's name and its id.

    The type parameters (state, commands, events) exist only for the type checker: a ref
    made by ``ActorType.__call__`` carries its type's, so ``await rt.state(ref)`` is the
    state type. At run time, and for equality and hashing, a ref is its two strings.
    """

    type: str
    id: str

    def __post_init__(self) -> None:
        check_text(self.type, "actor type")
        check_text(self.id, "actor id")

    def __str__(self) -> str:
        return f"{self.type}/{self.id}"

    @classmethod
    def parse(cls, text: str) -> ActorRef:
        """Read ``type/id`` as the CLI shows it."""
        kind, sep, ident = text.partition("/")
        if not sep:
            raise InvalidActorRef(f"expected 'type/id', got {text!r}")
        return cls(kind, ident)


class EventRecord(msgspec.Struct, frozen=True, array_like=True):
    """One stored event: the envelope of DESIGN.md plus the encoded payload.

    Its key is ``(actor, writer, n)``, the event's dot; ``id`` is a 16-byte k-ordered id
    whose byte order is its time order.
    """

    actor_type: str
    actor_id: str
    writer: str
    n: int
    id: bytes
    timestamp: int
    initiated_by: str
    type: str
    version: int
    payload: bytes

    @property
    def actor(self) -> ActorRef:
        return ActorRef(self.actor_type, self.actor_id)

    @property
    def order(self) -> tuple[int, bytes]:
        """The replay order: ``(timestamp, id)``."""
        return (self.timestamp, self.id)


_events_encoder = msgspec.msgpack.Encoder()
_events_decoder = msgspec.msgpack.Decoder(list[EventRecord])


def encode_events(events: list[EventRecord]) -> bytes:
    return _events_encoder.encode(events)


def decode_events(data: bytes) -> list[EventRecord]:
    try:
        return _events_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodingError(f"malformed event pack: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A persisted actor state keyed by ``(actor, clock)``, naming its parents' clocks.

    ``timestamp`` is the latest timestamp of the events it covers, so a writer that loads it
    can stamp its own events later than anything the state reflects.
    """

    actor: ActorRef
    clock: VectorClock
    parents: tuple[VectorClock, ...]
    state: bytes
    timestamp: int


@dataclass(frozen=True, slots=True)
class PackRecord:
    """The events that turned a snapshot's parents into it: covered by its clock and by
    none of its parents' clocks. Same key as its snapshot, written with it."""

    actor: ActorRef
    clock: VectorClock
    events: tuple[EventRecord, ...]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """Remembers that a message was processed, so a re-send writes nothing."""

    actor: ActorRef
    message_id: str
    dots: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in one of a store's record streams, for resuming replication.

    ``seq`` is the source's own position (up to 128 bits: PostgreSQL packs its commit
    order there); ``check`` identifies the record at ``seq``: a source restored from an
    older copy no longer has it there, and the copy starts over instead of skipping records.
    """

    seq: int = 0
    check: bytes = b""


BEGINNING = Cursor()
"""The position before a store's first record."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a destination has copied a source's events and snapshots."""

    source: str
    events: Cursor = Cursor()
    snapshots: Cursor = Cursor()
    messages: Cursor = Cursor()


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records a source holds after a checkpoint, in the order it wrote them."""

    events: tuple[EventRecord, ...]
    snapshots: tuple[tuple[SnapshotRecord, PackRecord], ...]
    events_to: Cursor
    snapshots_to: Cursor
    restarted: bool = False
    """The checkpoint no longer matched the source, so this chunk starts from the beginning."""
    messages: tuple[MessageRecord, ...] = ()
    """Processed messages, so that a message re-sent to another replica is known there too."""
    messages_to: Cursor = Cursor()


@dataclass(slots=True)
class CommitBatch:
    """What one processed message, resolution or replicated chunk writes, all or nothing."""

    events: list[EventRecord] = field(default_factory=list)
    snapshots: list[tuple[SnapshotRecord, PackRecord]] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
