"""The store interfaces, one per capability, and the counters every store keeps.

A store holds immutable records (events, snapshots, packs) plus two indexes it maintains
itself from what it holds: the heads of each actor and the highest counter per writer (the
frontier), which together make loading an actor cost its head plus its loose events.

As eventsourcing layers its recorders, the interface is split by what a caller needs:
:class:`ActorRecords` (what the runtime reads and writes per actor), :class:`ReplicationSource`
and :class:`ReplicationSink` (copying records between stores), :class:`EventFeed` (the
ordered feed publishing and subscriptions follow) and :class:`Inspection`. :class:`Store`
is all of them: what every backend implements.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sourcery._core.clock import VectorClock
from sourcery._core.records import (
    BEGINNING,
    ActorRef,
    Checkpoint,
    Chunk,
    CommitBatch,
    Cursor,
    EventRecord,
    MessageRecord,
    PackRecord,
    SnapshotRecord,
)

__all__ = [
    "ActorRecords",
    "EventFeed",
    "Inspection",
    "ReplicationSink",
    "ReplicationSource",
    "Store",
    "StoreResource",
    "StoreStats",
]


@dataclass(slots=True)
class StoreStats:
    """Records read and transactions written since the store was opened."""

    events_read: int = 0
    snapshots_read: int = 0
    packs_read: int = 0
    transactions: int = 0
    batches: int = 0
    message_queries: int = 0
    """Queries for message records: concurrent ``message`` calls share one."""


@runtime_checkable
class StoreResource(Protocol):
    """What every capability shares: counters, and a connection to release."""

    stats: StoreStats

    async def aclose(self) -> None:
        """Write what is queued, then release every connection. Idempotent."""


@runtime_checkable
class ActorRecords(StoreResource, Protocol):
    """One actor's records: what the runtime loads and commits. Every write is idempotent;
    nothing is updated in place."""

    async def register_writer(self, writer: str) -> None:
        """Claim ``writer`` for this process; raise StoreError if it was ever claimed."""

    def commit(self, batch: CommitBatch) -> Awaitable[None]:
        """Write the batch atomically; the awaitable completes only once it is durable.

        Concurrent calls may share one transaction. It fails with StoreError (and writes
        nothing of this batch) if a record conflicts with another under the same key. The
        write goes on if its awaiter is cancelled; shield it to learn the outcome.
        """

    async def heads(self, actor: ActorRef) -> list[SnapshotRecord]:
        """The actor's snapshots that no other snapshot of it dominates."""

    async def frontier(self, actor: ActorRef) -> VectorClock:
        """For each writer, the highest counter of this actor's stored events."""

    async def loose_events(self, actor: ActorRef, clock: VectorClock) -> list[EventRecord]:
        """The actor's events not covered by ``clock``, found without scanning history."""

    async def events(self, actor: ActorRef, dots: Sequence[tuple[str, int]]) -> list[EventRecord]:
        """The actor's events with these dots (those that exist)."""

    async def snapshot(self, actor: ActorRef, clock: VectorClock) -> SnapshotRecord | None:
        """The snapshot with exactly this clock."""

    async def pack(self, actor: ActorRef, clock: VectorClock) -> PackRecord | None:
        """The event pack of the snapshot with exactly this clock."""

    async def message(self, actor: ActorRef, message_id: str) -> MessageRecord | None:
        """The record of an already processed message, if any.

        It sees every record committed before it was called. Concurrent calls may share
        one query; one that the store cannot look up fails alone."""


@runtime_checkable
class ReplicationSource(StoreResource, Protocol):
    """A store records are copied from."""

    async def identity(self) -> str:
        """A random id made when the store was created; a wiped store gets a new one."""

    async def read_since(
        self, events: Cursor, snapshots: Cursor, limit: int, messages: Cursor = BEGINNING
    ) -> Chunk:
        """Up to ``limit`` events, snapshots (with packs) and message records written after
        the cursors, in the order this store wrote them. A cursor that no longer matches
        this store (restored from an older copy) restarts its stream from the beginning."""


@runtime_checkable
class ReplicationSink(StoreResource, Protocol):
    """A store records are copied to: it commits them with how far it got."""

    async def identity(self) -> str:
        """A random id made when the store was created; a wiped store gets a new one."""

    async def checkpoint(self, source: str) -> Checkpoint:
        """How far this store has copied from ``source``; committed with the records."""

    def commit(self, batch: CommitBatch) -> Awaitable[None]:
        """As :meth:`ActorRecords.commit`; a batch's checkpoint commits with its records."""


@runtime_checkable
class EventFeed(StoreResource, Protocol):
    """Every stored event once, in store order: what publishers and subscriptions follow."""

    async def read_events(self, after: Cursor, limit: int) -> list[tuple[Cursor, EventRecord]]:
        """Up to ``limit`` events after position ``after``, in store order, each with its
        position (``seq`` grows along the order; ``check`` is the event's id).

        A reader that resumes from the last position it got never skips an event, even one
        whose transaction commits after a later one: a store returns an event only once
        nothing can appear before it any more.
        """


@runtime_checkable
class Inspection(StoreResource, Protocol):
    """What a person looking at a store asks; not on the hot path."""

    async def schema_version(self) -> int:
        """The version of the schema the store holds (opening it migrated it)."""

    async def actors(self, limit: int = 100, after: ActorRef | None = None) -> list[ActorRef]:
        """Up to ``limit`` actors this store holds events of, for inspection, in the store's
        order of ``(type, id)``; ``after`` pages on from the last actor of a listing."""

    async def snapshots(self, actor: ActorRef) -> list[SnapshotRecord]:
        """Every snapshot of the actor, oldest first. For inspection, not the hot path."""


@runtime_checkable
class Store(ActorRecords, ReplicationSource, ReplicationSink, EventFeed, Inspection, Protocol):
    """Every capability: what each backend implements and the runtime uses."""
