"""The contract on the ordered feeds: what replication copies (``read_since``) and what
publishers and subscriptions follow (``read_events``), with checkpoints."""

from __future__ import annotations

import asyncio
from typing import Any

from sourcery._core.records import BEGINNING, ActorRef, CommitBatch, Cursor, EventRecord
from sourcery._stores.base import EventFeed, Store
from sourcery.testing._store_kit import (
    A,
    B,
    Reopen,
    StoreHarness,
    clock,
    dots_of,
    event,
    snapshot,
)

__all__ = ["FeedContract"]


class FeedContract(StoreHarness):
    # -- replication streams ------------------------------------------------

    async def test_read_since_streams_every_record_once_in_write_order(self, store: Store) -> None:
        from sourcery._core.records import BEGINNING, MessageRecord

        first = CommitBatch(
            events=[event(A, "w1", 1)],
            messages=[MessageRecord(actor=A, message_id="m-1", dots=(("w1", 1),))],
        )
        second = CommitBatch(
            events=[event(B, "w1", 1)],
            messages=[MessageRecord(actor=B, message_id="m-2", dots=())],
        )
        await store.commit(first)
        await store.commit(second)
        chunk = await store.read_since(BEGINNING, BEGINNING, 1, BEGINNING)
        assert [e.actor for e in chunk.events] == [A]
        assert [m.message_id for m in chunk.messages] == ["m-1"]
        assert chunk.messages[0].dots == (("w1", 1),)
        rest = await store.read_since(chunk.events_to, chunk.snapshots_to, 10, chunk.messages_to)
        assert [e.actor for e in rest.events] == [B]
        assert [(m.actor, m.message_id) for m in rest.messages] == [(B, "m-2")]
        done = await store.read_since(rest.events_to, rest.snapshots_to, 10, rest.messages_to)
        assert (done.events, done.snapshots, done.messages, done.restarted) == ((), (), (), False)

    # -- the event order publishers and subscriptions read ------------------

    async def test_read_events_gives_every_event_once_in_commit_order_with_positions(
        self,
        store: Store,
    ) -> None:
        from sourcery._core.records import BEGINNING

        batches = [
            [event(A, "w1", 1), event(B, "w1", 1)],
            [event(A, "w1", 2)],
            [event(B, "w2", 1), event(A, "w2", 1), event(A, "w1", 3)],
        ]
        for batch in batches:
            await store.commit(CommitBatch(events=batch))
        # A snapshot-only and a repeated batch add no event to the stream.
        await store.commit(CommitBatch(snapshots=[snapshot(A, clock(w1=1))]))
        await store.commit(CommitBatch(events=batches[1]))
        read: list[tuple[Any, EventRecord]] = []
        after = BEGINNING
        while page := await store.read_events(after, 2):
            assert len(page) <= 2
            read.extend(page)
            after = page[-1][0]
        # Batches come out in commit order (inside a batch, any order).
        assert [dots_of(e for _, e in read[i:j]) for i, j in ((0, 2), (2, 3), (3, 6))] == [
            dots_of(b) for b in batches
        ]
        assert [e for _, e in read[2:3]] == batches[1]
        positions = [p for p, _ in read]
        assert [p.seq for p in positions] == sorted({p.seq for p in positions})
        assert all(p.check == e.id for p, e in read)
        # Resuming from any position gives exactly the rest.
        for i, (position, _) in enumerate(read):
            assert await store.read_events(position, 100) == read[i + 1 :]
        assert await store.read_events(BEGINNING, 0) == []

    async def test_a_batch_with_only_a_checkpoint_commits(self, store: Store) -> None:
        from sourcery._core.records import Checkpoint, Cursor

        assert await store.checkpoint("publish:x") == Checkpoint("publish:x")
        saved = Checkpoint("publish:x", events=Cursor(2**100 + 7, b"\x01" * 16))
        await store.commit(CommitBatch(checkpoint=saved))
        assert await store.checkpoint("publish:x") == saved
        moved = Checkpoint("publish:x", events=Cursor(2**100 + 9, b"\x02" * 16))
        await store.commit(CommitBatch(checkpoint=moved))
        assert await store.checkpoint("publish:x") == moved
        assert await store.read_events(Cursor(), 10) == []

    async def test_concurrent_commits_each_reach_the_feed_once(self, store: Store) -> None:
        batches = [[event(ActorRef("feed", f"f-{i}"), "w1", n) for n in (1, 2)] for i in range(60)]
        await asyncio.gather(*(store.commit(CommitBatch(events=b)) for b in batches))
        read = await _drain(store, sum(len(b) for b in batches))
        assert sorted(e.id for _, e in read) == sorted(e.id for b in batches for e in b)
        for batch in batches:  # a batch's own events keep their order
            ids = [e.id for _, e in read if e.actor == batch[0].actor]
            assert ids == [e.id for e in batch]

    async def test_a_follower_never_skips_an_event_two_stores_commit_meanwhile(
        self, store: Store, reopen: Reopen
    ) -> None:
        other = await reopen()
        written: list[EventRecord] = []

        async def write(s: Store, writer: str) -> None:
            for n in range(1, 31):
                e = event(A, writer, n)
                await s.commit(CommitBatch(events=[e]))
                written.append(e)

        follower = asyncio.ensure_future(_drain(other, 60))
        await asyncio.gather(write(store, "w1"), write(other, "w2"))
        read = await follower
        assert sorted(e.id for _, e in read) == sorted(e.id for e in written)
        for writer in ("w1", "w2"):  # one writer's commits, in the order they returned
            assert [e.n for _, e in read if e.writer == writer] == list(range(1, 31))


async def _drain(
    store: EventFeed, count: int, patience: float = 30.0
) -> list[tuple[Cursor, EventRecord]]:
    """Follow ``read_events`` from the beginning, page by page, until ``count`` events came;
    positions must only grow and no event may come twice."""
    read: list[tuple[Cursor, EventRecord]] = []
    after = BEGINNING
    async with asyncio.timeout(patience):
        while len(read) < count:
            page = await store.read_events(after, 7)
            if not page:
                await asyncio.sleep(0.01)
                continue
            assert all(p.seq > after.seq for p, _ in page)
            assert [p.seq for p, _ in page] == sorted({p.seq for p, _ in page})
            read.extend(page)
            after = page[-1][0]
    assert len({e.id for _, e in read}) == len(read) == count
    return read
