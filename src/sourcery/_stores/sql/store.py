"""The :class:`~sourcery._stores.base.Store` both SQL backends are: group commit, batched
message lookups, counters and the closed state, over the shared plans. A backend adds
only its dialect and how it runs a plan on its connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

from sourcery._core.clock import VectorClock
from sourcery._core.errors import ClosedError
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
from sourcery._stores.base import StoreStats
from sourcery._stores.groupcommit import GroupCommitter, LookupBatcher
from sourcery._stores.sql import feed, reads, writes
from sourcery._stores.sql.dialect import Dialect, Plan, WriterKey
from sourcery._stores.sql.rows import MessageKey, decode_dots

__all__ = ["SqlStore"]

T = TypeVar("T")

_KNOWN_WRITERS_LIMIT = 200_000


class SqlStore:
    """A store on an SQL database; subclasses say how a plan runs on a connection."""

    dialect: ClassVar[Dialect]

    def __init__(self) -> None:
        self.stats = StoreStats()
        self._committer = GroupCommitter(self._flush)
        self._messages: LookupBatcher[MessageKey, bytes] = LookupBatcher(self._find_messages)
        self._known_writers: set[WriterKey] = set()
        self._closed = False

    # -- what a backend provides ---------------------------------------------------------

    async def _run(self, plan: Plan[T], *, consistent: bool = False, write: bool = False) -> T:
        """Run a plan outside any transaction of ours: all its reads in one snapshot if
        ``consistent``; on the connection that writes if ``write``."""
        raise NotImplementedError

    async def _transact(self, make: Callable[[], Plan[T]]) -> T:
        """Run a plan in one transaction, retried (made anew) where the backend can."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Close every connection."""
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> SqlStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        await self._committer.aclose()
        self._closed = True
        await self._release()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the store is closed")

    @property
    def transactions(self) -> int:
        return self._committer.transactions

    # -- writing -------------------------------------------------------------------------

    async def register_writer(self, writer: str) -> None:
        await self._run(writes.register_writer(writer), write=True)

    def commit(self, batch: CommitBatch) -> asyncio.Future[None]:
        return self._committer.commit(batch)

    async def _flush(self, batches: Sequence[CommitBatch]) -> None:
        known = self._known_writers
        added = await self._transact(lambda: writes.flush(self.dialect, batches, known))
        if len(known) > _KNOWN_WRITERS_LIMIT:
            known.clear()
        known.update(added)
        self.stats.transactions += 1
        self.stats.batches += len(batches)

    # -- reading one actor ---------------------------------------------------------------

    async def heads(self, actor: ActorRef) -> list[SnapshotRecord]:
        found = await self._run(reads.heads(actor))
        self.stats.snapshots_read += len(found)
        return found

    async def frontier(self, actor: ActorRef) -> VectorClock:
        return await self._run(reads.frontier(actor))

    async def loose_events(self, actor: ActorRef, clock: VectorClock) -> list[EventRecord]:
        found = await self._run(reads.loose_events(actor, clock))
        self.stats.events_read += len(found)
        return found

    async def events(self, actor: ActorRef, dots: Sequence[tuple[str, int]]) -> list[EventRecord]:
        found = await self._run(reads.events(self.dialect, actor, list(dots)))
        self.stats.events_read += len(found)
        return found

    async def snapshot(self, actor: ActorRef, clock: VectorClock) -> SnapshotRecord | None:
        found = await self._run(reads.snapshot(actor, clock))
        if found is not None:
            self.stats.snapshots_read += 1
        return found

    async def pack(self, actor: ActorRef, clock: VectorClock) -> PackRecord | None:
        found = await self._run(reads.pack(actor, clock))
        if found is not None:
            self.stats.packs_read += 1
        return found

    async def message(self, actor: ActorRef, message_id: str) -> MessageRecord | None:
        self._check_open()
        data = await self._messages.get((actor.id, actor.type, message_id))
        if data is None:
            return None
        dots = decode_dots(data, f"message record {message_id!r} of {actor}")
        return MessageRecord(actor=actor, message_id=message_id, dots=dots)

    async def _find_messages(self, keys: Sequence[MessageKey]) -> dict[MessageKey, bytes]:
        self.stats.message_queries += 1
        return await self._run(reads.find_messages(self.dialect, keys))

    # -- inspection ----------------------------------------------------------------------

    async def schema_version(self) -> int:
        return await self._run(reads.schema_version(self.dialect))

    async def snapshots(self, actor: ActorRef) -> list[SnapshotRecord]:
        return await self._run(reads.snapshots(self.dialect, actor))

    async def actors(self, limit: int = 100, after: ActorRef | None = None) -> list[ActorRef]:
        return await self._run(reads.actors(limit, after))

    # -- replication and the ordered feed ------------------------------------------------

    async def identity(self) -> str:
        return await self._run(reads.identity())

    async def checkpoint(self, source: str) -> Checkpoint:
        return await self._run(reads.checkpoint(source))

    async def read_since(
        self, events: Cursor, snapshots: Cursor, limit: int, messages: Cursor = BEGINNING
    ) -> Chunk:
        plan = feed.read_since(self.dialect, events, snapshots, limit, messages)
        chunk = await self._run(plan, consistent=True)
        self.stats.events_read += len(chunk.events)
        self.stats.snapshots_read += len(chunk.snapshots)
        self.stats.packs_read += len(chunk.snapshots)
        return chunk

    async def read_events(self, after: Cursor, limit: int) -> list[tuple[Cursor, EventRecord]]:
        found = await self._run(feed.read_events(self.dialect, after, limit))
        self.stats.events_read += len(found)
        return found
