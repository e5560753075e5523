"""Copying records between replicas: idempotent, resumable, in both directions.

Records never change and every key is unique, so a copy is a plain union: any order, any
number of times. Each pull commits the copied records together with the destination's
checkpoint for that source, so an interrupted copy resumes exactly where it stopped. A pull
leaves out what the destination already holds (such as the records it sent the source
itself), so a sync after a sync copies nothing back: records are not echoed.
Cutting a link is a partition; restoring it heals, and the next read of a diverged actor
resolves its heads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sourcery._core.errors import ConfigurationError, SourceryError
from sourcery._core.records import (
    ActorRef,
    Checkpoint,
    Chunk,
    CommitBatch,
    EventRecord,
    MessageRecord,
    PackRecord,
    SnapshotRecord,
)
from sourcery._stores import Store

__all__ = ["DEFAULT_CHUNK", "Replicator", "SyncReport", "catch_up", "pull", "sync"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 2000
"""Events (and snapshots) per pull: one transaction at the destination."""

Touched = Callable[[set[ActorRef]], None]
"""Told which actors a pull brought records for, e.g. ``Runtime.forget``."""


async def pull(
    source: Store, destination: Store, *, limit: int = DEFAULT_CHUNK, touched: Touched | None = None
) -> int:
    """Copy the next chunk the destination lacks; return how many records it copied.

    Chunks that hold only records the destination has already are passed over (their
    checkpoint committed), so 0 means the destination has caught up with the source.
    """
    while True:
        copied, moved = await _pull(source, destination, limit=limit, touched=touched)
        if copied or not moved:
            return copied


async def _pull(
    source: Store, destination: Store, *, limit: int, touched: Touched | None
) -> tuple[int, bool]:
    """Records copied, and whether the checkpoint moved (there may be more to read)."""
    if limit < 1:
        raise ConfigurationError(f"limit must be at least 1, got {limit}")
    source_id = await source.identity()
    if source_id == await destination.identity():
        raise ConfigurationError("a store cannot replicate from itself")
    checkpoint = await destination.checkpoint(source_id)
    chunk = await source.read_since(
        checkpoint.events, checkpoint.snapshots, limit, checkpoint.messages
    )
    if chunk.restarted:
        log.warning("source %s no longer matches its checkpoint; copying it again", source_id)
    events, snapshots, messages = await _lacking(destination, chunk)
    copied = len(events) + 2 * len(snapshots) + len(messages)
    moved = (
        chunk.events_to != checkpoint.events
        or chunk.snapshots_to != checkpoint.snapshots
        or chunk.messages_to != checkpoint.messages
    )
    if not copied and not moved:
        return 0, False
    await destination.commit(
        CommitBatch(
            events=events,
            snapshots=snapshots,
            messages=messages,
            checkpoint=Checkpoint(
                source_id, chunk.events_to, chunk.snapshots_to, chunk.messages_to
            ),
        )
    )
    if touched is not None and copied:
        actors = {e.actor for e in events}
        actors.update(s.actor for s, _ in snapshots)
        touched(actors)
    return copied, moved


async def _lacking(
    destination: Store, chunk: Chunk
) -> tuple[list[EventRecord], list[tuple[SnapshotRecord, PackRecord]], list[MessageRecord]]:
    """The chunk's records that the destination does not hold yet (one look-up per actor
    for events, per record for snapshots and messages)."""
    dots: dict[ActorRef, list[tuple[str, int]]] = {}
    for e in chunk.events:
        dots.setdefault(e.actor, []).append((e.writer, e.n))
    held: set[tuple[ActorRef, str, int]] = set()
    for actor, wanted in dots.items():
        held.update((actor, e.writer, e.n) for e in await destination.events(actor, wanted))
    events = [e for e in chunk.events if (e.actor, e.writer, e.n) not in held]
    snapshots = [
        (s, pack)
        for s, pack in chunk.snapshots
        if await destination.snapshot(s.actor, s.clock) is None
    ]
    messages = [
        m for m in chunk.messages if await destination.message(m.actor, m.message_id) is None
    ]
    return events, snapshots, messages


async def catch_up(
    source: Store, destination: Store, *, limit: int = DEFAULT_CHUNK, touched: Touched | None = None
) -> int:
    """Pull until the destination has everything the source had; return records copied."""
    total = 0
    while True:
        copied, moved = await _pull(source, destination, limit=limit, touched=touched)
        total += copied
        if not moved:
            return total


@dataclass(frozen=True, slots=True)
class SyncReport:
    a_to_b: int
    b_to_a: int

    @property
    def records(self) -> int:
        return self.a_to_b + self.b_to_a


async def sync(
    a: Store,
    b: Store,
    *,
    limit: int = DEFAULT_CHUNK,
    touched_a: Touched | None = None,
    touched_b: Touched | None = None,
) -> SyncReport:
    """Exchange records both ways until each store holds what the other held."""
    a_to_b = await catch_up(a, b, limit=limit, touched=touched_b)
    b_to_a = await catch_up(b, a, limit=limit, touched=touched_a)
    return SyncReport(a_to_b, b_to_a)


class Replicator:
    """A continuous link between stores, as an async context manager.

    Every ``interval`` seconds it syncs each pair of stores in ``stores``; ``cut()`` stops
    copying (a partition) and ``restore()`` resumes it. A failing pull is logged and
    retried at the next round, so a store that goes away does not end the link.
    """

    def __init__(
        self,
        stores: Iterable[Store],
        *,
        interval: float = 0.1,
        limit: int = DEFAULT_CHUNK,
        touched: dict[int, Touched] | None = None,
    ) -> None:
        self.stores = list(stores)
        if len(self.stores) < 2:
            raise ConfigurationError("a replicator needs at least two stores")
        self.interval = interval
        self.limit = limit
        self._touched = touched or {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._connected.set()
        self._parked = False
        self.records_copied = 0
        self.rounds = 0
        self.errors = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def parked(self) -> bool:
        """Cut, with no round under way: nothing is copied until ``restore()``."""
        return self._parked and not self._connected.is_set()

    def cut(self) -> None:
        """Stop copying: the replicas are partitioned from each other."""
        self._connected.clear()

    def restore(self) -> None:
        """Resume copying; everything written meanwhile flows both ways."""
        self._connected.set()

    async def run_once(self) -> int:
        copied = 0
        for i, a in enumerate(self.stores):
            for j in range(i + 1, len(self.stores)):
                b = self.stores[j]
                report = await sync(
                    a,
                    b,
                    limit=self.limit,
                    touched_a=self._touched.get(i),
                    touched_b=self._touched.get(j),
                )
                copied += report.records
        self.records_copied += copied
        self.rounds += 1
        return copied

    async def _run(self) -> None:
        while True:
            if not self._connected.is_set():
                self._parked = True
                try:
                    await self._connected.wait()
                finally:
                    self._parked = False
            try:
                await self.run_once()
            except SourceryError as exc:
                self.errors += 1
                log.warning("replication round failed, retrying: %s", exc)
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Replicator:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
