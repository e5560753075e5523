"""What an operator asks of the projections of a database, without running them: their
status, and a deliberate skip of the event one is parked at."""

from __future__ import annotations

import time

from sourcery._core.records import Cursor
from sourcery._readside import tracking
from sourcery._readside.target import open_target
from sourcery._readside.tracking import ProjectionStatus, Tracked
from sourcery._stores import Store, open_store

__all__ = ["count_after", "describe_status", "skip_event", "statuses"]


async def count_after(store: Store, position: Cursor, bound: int = 100_000) -> tuple[int, int]:
    """Events in the store after ``position`` (counted up to ``bound``), and the
    timestamp of the first of them (0 if none)."""
    count = first = 0
    while count < bound and (page := await store.read_events(position, min(1000, bound))):
        first = first or page[0][1].timestamp
        count += len(page)
        position = page[-1][0]
    return min(count, bound), first


async def describe_status(
    store: Store, name: str, tracked: Tracked, lag_bound: int = 100_000
) -> ProjectionStatus:
    """A projection's row, with its lag behind ``store``."""
    lag, oldest = await count_after(store, tracked.position, lag_bound)
    now = time.time_ns() // 1_000_000
    return ProjectionStatus(
        name=name,
        state=tracked.state,
        position=tracked.position,
        events=tracked.events,
        lag=lag,
        lag_seconds=max(0, now - oldest) / 1000 if lag else 0.0,
        failures=tracked.failures,
        error=tracked.error,
        failed_event=int(tracked.failed_event) if tracked.failed_event else None,
        updated=tracked.updated,
    )


async def statuses(store_url: str, target_url: str | None = None) -> list[ProjectionStatus]:
    """The status of every projection kept in ``target_url`` (default: the store's)."""
    store = await open_store(store_url)
    try:
        target = await open_target(target_url or store_url)
        try:
            async with target.transaction() as tx:
                rows = [(n, await tracking.load(tx, n)) for n in await tracking.names(tx)]
        finally:
            await target.aclose()
        return [await describe_status(store, n, t) for n, t in rows if t is not None]
    finally:
        await store.aclose()


async def skip_event(target_url: str, name: str, event_id: int) -> bool:
    """Move projection ``name`` past event ``event_id`` if it is parked there; a running
    runner of it picks the move up. False if it was not parked at that event."""
    target = await open_target(target_url)
    try:
        async with target.transaction() as tx:
            return await tracking.skip(tx, name, event_id)
    finally:
        await target.aclose()
