"""The contract on writing: atomic batches, conflicts and duplicates, group commit,
concurrent writers, heads, writer ids and closing."""

from __future__ import annotations

import asyncio

import pytest

from sourcery._core.errors import ClosedError, StoreError
from sourcery._core.records import ActorRef, CommitBatch, EventRecord, MessageRecord
from sourcery._stores.base import Store
from sourcery.testing._store_kit import (
    OPERATIONS,
    A,
    B,
    Operation,
    Reopen,
    StoreHarness,
    all_events,
    assert_nothing_of,
    by_dot,
    clock,
    dots_of,
    dump,
    event,
    head_clocks,
    snap_key,
    snapshot,
)

__all__ = ["WriteContract"]


class WriteContract(StoreHarness):
    # -- atomicity and conflicts ------------------------------------------------

    @pytest.mark.parametrize("others", [0, 1, 6])
    async def test_a_conflicting_batch_writes_nothing_and_its_group_still_commits(
        self, store: Store, others: int
    ) -> None:
        stored = event(A, "w1", 1)
        await store.commit(CommitBatch(events=[stored]))

        # The bad batch: new events of A and of B, a snapshot and a message of B, and one
        # event that claims A's stored dot with other content.
        y = ActorRef("account", "y")
        y_events = [event(y, "w2", 1), event(y, "w2", 2)]
        bad = CommitBatch(
            events=[*y_events, event(A, "w1", 2), event(A, "w1", 1, payload=b"not the same")],
            snapshots=[snapshot(y, clock(w2=2), events=y_events)],
            messages=[MessageRecord(y, "m-bad", (("w2", 1), ("w2", 2)))],
        )
        good_actors = [ActorRef("account", f"good-{i}") for i in range(others)]
        goods: list[CommitBatch] = []
        for g in good_actors:
            evs = [event(g, "w3", 1), event(g, "w3", 2)]
            goods.append(
                CommitBatch(
                    events=evs,
                    snapshots=[snapshot(g, clock(w3=2), events=evs)],
                    messages=[MessageRecord(g, "m-good", (("w3", 1), ("w3", 2)))],
                )
            )
        batches = [*goods[: others // 2], bad, *goods[others // 2 :]]

        results = await asyncio.gather(*(store.commit(b) for b in batches), return_exceptions=True)

        errors = [r for r in results if r is not None]
        assert len(errors) == 1 and isinstance(errors[0], StoreError), results
        assert results[others // 2] is errors[0]
        # Nothing of the bad batch: A keeps exactly its stored event, y has nothing at all.
        assert await all_events(store, A) == [stored]
        assert await store.frontier(A) == clock(w1=1)
        await assert_nothing_of(store, y, ["m-bad"])
        # Everything of the good ones.
        for g, batch in zip(good_actors, goods, strict=True):
            assert await all_events(store, g) == by_dot(batch.events)
            assert [snap_key(h) for h in await store.heads(g)] == [snap_key(batch.snapshots[0][0])]
            assert await store.pack(g, clock(w3=2)) == batch.snapshots[0][1]
            assert await store.message(g, "m-good") == batch.messages[0]

    async def test_two_batches_claiming_one_new_dot_in_one_group_one_wins(
        self, store: Store
    ) -> None:
        first, second = event(A, "w1", 1, payload=b"first"), event(A, "w1", 1, payload=b"second")
        results = await asyncio.gather(
            store.commit(CommitBatch(events=[first, event(A, "w2", 1)])),
            store.commit(CommitBatch(events=[second, event(A, "w3", 1)])),
            return_exceptions=True,
        )
        failed = [isinstance(r, StoreError) for r in results]
        assert sorted(failed) == [False, True], results
        winner = first if results[0] is None else second
        winner_other = "w2" if results[0] is None else "w3"
        stored = await all_events(store, A)
        assert dots_of(stored) == sorted([("w1", 1), (winner_other, 1)])
        assert await store.events(A, [("w1", 1)]) == [winner]

    async def test_a_batch_conflicting_with_itself_writes_nothing(self, store: Store) -> None:
        batch = CommitBatch(
            events=[event(A, "w1", 1), event(A, "w1", 2), event(A, "w1", 2, payload=b"other")],
            snapshots=[snapshot(A, clock(w1=2))],
            messages=[MessageRecord(A, "m", (("w1", 1), ("w1", 2)))],
        )
        with pytest.raises(StoreError):
            await store.commit(batch)
        await assert_nothing_of(store, A, ["m"])

    async def test_writing_the_same_records_twice_is_a_no_op(self, store: Store) -> None:
        evs = [event(A, "w1", n) for n in (1, 2, 3)] + [event(A, "w2", 1)]
        s1 = snapshot(A, clock(w1=2), events=evs[:2])
        s2 = snapshot(A, clock(w1=3, w2=1), [clock(w1=2)], events=evs[2:])
        msg = MessageRecord(A, "m-1", (("w1", 1), ("w1", 2)))
        batch = CommitBatch(events=evs, snapshots=[s1, s2], messages=[msg])
        await store.commit(batch)
        before = await dump(store, A, ["m-1"])
        assert len(before["events"]) == 4 and len(before["snapshots"]) == 2

        await store.commit(batch)
        await asyncio.gather(*(store.commit(batch) for _ in range(3)))  # in one group
        # Equal records built anew, one record per batch, in another order.
        copies = [EventRecord(*(getattr(e, f) for f in EventRecord.__struct_fields__)) for e in evs]
        await asyncio.gather(
            *(store.commit(CommitBatch(events=[e])) for e in reversed(copies)),
            store.commit(CommitBatch(snapshots=[s2])),
            store.commit(CommitBatch(snapshots=[s1])),
            store.commit(CommitBatch(messages=[MessageRecord(A, "m-1", msg.dots)])),
        )
        assert await dump(store, A, ["m-1"]) == before

    async def test_a_batch_repeating_stored_events_writes_only_the_new_ones(
        self, store: Store
    ) -> None:
        old = [event(A, "w1", 1), event(A, "w1", 2)]
        await store.commit(CommitBatch(events=old))
        new = event(A, "w1", 3)
        await store.commit(CommitBatch(events=[*old, new]))
        assert await all_events(store, A) == [*old, new]
        assert await store.frontier(A) == clock(w1=3)

    # -- group commit ------------------------------------------------

    async def test_concurrent_commits_share_transactions_and_are_readable_when_done(
        self,
        store: Store,
    ) -> None:
        transactions, batches = store.stats.transactions, store.stats.batches
        actors = [ActorRef("group", f"g-{i}") for i in range(200)]

        async def one(actor: ActorRef) -> None:
            evs = [event(actor, "w1", 1), event(actor, "w1", 2)]
            batch = CommitBatch(
                events=evs,
                snapshots=[snapshot(actor, clock(w1=2), events=evs)],
                messages=[MessageRecord(actor, "m", (("w1", 1), ("w1", 2)))],
            )
            await store.commit(batch)
            # Nothing else ran in this task since the commit completed: it must be readable now.
            assert await store.events(actor, [("w1", 1), ("w1", 2)]) == evs
            assert await store.message(actor, "m") == batch.messages[0]
            assert head_clocks(await store.heads(actor)) == {clock(w1=2)}

        await asyncio.gather(*(one(a) for a in actors))

        assert store.stats.batches - batches == 200
        assert 0 < store.stats.transactions - transactions < store.stats.batches - batches

    # -- heads ------------------------------------------------

    async def test_the_first_snapshot_is_the_head(self, store: Store) -> None:
        assert await store.heads(A) == []
        s, pack = snapshot(A, clock(w1=1), state=b"first state")
        await store.commit(CommitBatch(events=[event(A, "w1", 1)], snapshots=[(s, pack)]))
        assert [snap_key(h) for h in await store.heads(A)] == [snap_key(s)]
        assert await store.heads(B) == []

    async def test_a_dominating_snapshot_replaces_the_head(self, store: Store) -> None:
        s1 = snapshot(A, clock(w1=1))
        s2 = snapshot(A, clock(w1=3, w2=1), [clock(w1=1)])
        await store.commit(CommitBatch(snapshots=[s1]))
        await store.commit(CommitBatch(snapshots=[s2]))
        assert [snap_key(h) for h in await store.heads(A)] == [snap_key(s2[0])]

    async def test_concurrent_snapshots_are_both_heads_until_merged(self, store: Store) -> None:
        base = clock(w1=1)
        left, right = clock(w1=3), clock(w1=1, w2=2)
        await store.commit(CommitBatch(snapshots=[snapshot(A, base)]))
        await asyncio.gather(
            store.commit(CommitBatch(snapshots=[snapshot(A, left, [base])])),
            store.commit(CommitBatch(snapshots=[snapshot(A, right, [base])])),
        )
        assert head_clocks(await store.heads(A)) == {left, right}

        # One that dominates only the left head replaces only that one.
        further = clock(w1=4)
        await store.commit(CommitBatch(snapshots=[snapshot(A, further, [left])]))
        assert head_clocks(await store.heads(A)) == {further, right}

        merged = further | right
        await store.commit(CommitBatch(snapshots=[snapshot(A, merged, [further, right])]))
        assert head_clocks(await store.heads(A)) == {merged}

    async def test_a_snapshot_dominated_by_a_head_does_not_become_one(self, store: Store) -> None:
        # Replication may bring a child before its parent.
        parent, child = clock(w1=2), clock(w1=5, w2=1)
        await store.commit(CommitBatch(snapshots=[snapshot(A, child, [parent])]))
        await store.commit(CommitBatch(snapshots=[snapshot(A, parent)]))
        assert head_clocks(await store.heads(A)) == {child}
        assert {s.clock for s in await store.snapshots(A)} == {parent, child}

        # Dominated by one of two heads, concurrent with the other: still not a head.
        sibling = clock(w3=1)
        await store.commit(CommitBatch(snapshots=[snapshot(A, sibling)]))
        assert head_clocks(await store.heads(A)) == {child, sibling}
        await store.commit(CommitBatch(snapshots=[snapshot(A, clock(w1=4))]))
        assert head_clocks(await store.heads(A)) == {child, sibling}

    async def test_heads_in_one_batch_and_across_actors(self, store: Store) -> None:
        # Parent and child in one batch, in either order; another actor's snapshots apart.
        await store.commit(
            CommitBatch(
                snapshots=[
                    snapshot(A, clock(w1=2), [clock(w1=1)]),
                    snapshot(A, clock(w1=1)),
                    snapshot(B, clock(w1=1)),
                    snapshot(B, clock(w1=2), [clock(w1=1)]),
                ]
            )
        )
        assert head_clocks(await store.heads(A)) == {clock(w1=2)}
        assert head_clocks(await store.heads(B)) == {clock(w1=2)}
        await store.commit(CommitBatch(snapshots=[snapshot(B, clock(w1=3), [clock(w1=2)])]))
        assert head_clocks(await store.heads(A)) == {clock(w1=2)}
        assert head_clocks(await store.heads(B)) == {clock(w1=3)}

    # -- writers ------------------------------------------------

    async def test_a_writer_id_can_be_claimed_once(self, store: Store) -> None:
        await store.register_writer("w-1")
        await store.register_writer("w-2")
        with pytest.raises(StoreError):
            await store.register_writer("w-1")
        with pytest.raises(StoreError):
            await store.register_writer("w-2")
        await store.register_writer("W-1")  # a different id

    @pytest.mark.usefixtures("requires_persistence")
    async def test_a_writer_id_stays_claimed_across_a_reopen(
        self, store: Store, reopen: Reopen
    ) -> None:
        await store.register_writer("w-1")
        await store.aclose()
        again = await reopen()
        with pytest.raises(StoreError):
            await again.register_writer("w-1")
        await again.register_writer("w-2")

    @pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
    async def test_operations_after_aclose_raise_closed_error(
        self, store: Store, operation: Operation
    ) -> None:
        await store.commit(CommitBatch(events=[event(A, "w1", 1)]))
        await store.aclose()
        await store.aclose()
        with pytest.raises(ClosedError):
            await operation(store)
        await store.aclose()

    async def test_aclose_writes_what_is_queued(self, store: Store) -> None:
        evs = [event(A, "w1", n) for n in range(1, 51)]
        pending = [store.commit(CommitBatch(events=[e])) for e in evs]
        await store.aclose()
        assert await asyncio.gather(*pending) == [None] * len(evs)

    @pytest.mark.usefixtures("requires_persistence")
    async def test_aclose_writes_what_is_queued_durably(self, store: Store, reopen: Reopen) -> None:
        evs = [event(A, "w1", n) for n in range(1, 51)]
        pending = [store.commit(CommitBatch(events=[e])) for e in evs]
        await store.aclose()
        await asyncio.gather(*pending)
        again = await reopen()
        assert await all_events(again, A) == evs

    # -- two stores on one database (two processes) ------------------------------------

    async def test_two_stores_writing_one_actor_concurrently_lose_nothing(
        self, store: Store, reopen: Reopen
    ) -> None:
        other = await reopen()
        base = clock(w1=1)
        await store.commit(CommitBatch(events=[event(A, "w1", 1)], snapshots=[snapshot(A, base)]))
        mine = [event(A, "w1", n) for n in range(2, 22)]
        theirs = [event(A, "w2", n) for n in range(1, 21)]
        left, right = clock(w1=21), clock(w1=1, w2=20)
        await asyncio.gather(
            *(store.commit(CommitBatch(events=[e])) for e in mine),
            *(other.commit(CommitBatch(events=[e])) for e in theirs),
            store.commit(CommitBatch(snapshots=[snapshot(A, left, [base], events=mine)])),
            other.commit(CommitBatch(snapshots=[snapshot(A, right, [base], events=theirs)])),
        )
        for s in (store, other):
            assert dots_of(await all_events(s, A)) == dots_of([event(A, "w1", 1), *mine, *theirs])
            assert await s.frontier(A) == clock(w1=21, w2=20)
            assert head_clocks(await s.heads(A)) == {left, right}

    async def test_two_stores_claiming_one_dot_one_wins(self, store: Store, reopen: Reopen) -> None:
        other = await reopen()
        first, second = event(A, "w1", 1, payload=b"first"), event(A, "w1", 1, payload=b"second")
        results = await asyncio.gather(
            store.commit(CommitBatch(events=[first, event(A, "w2", 1)])),
            other.commit(CommitBatch(events=[second, event(A, "w3", 1)])),
            return_exceptions=True,
        )
        assert sorted(isinstance(r, StoreError) for r in results) == [False, True], results
        winner, winner_other = (first, "w2") if results[0] is None else (second, "w3")
        for s in (store, other):
            assert await s.events(A, [("w1", 1)]) == [winner]
            assert dots_of(await all_events(s, A)) == sorted([("w1", 1), (winner_other, 1)])

    async def test_two_stores_writing_the_same_records_write_them_once(
        self, store: Store, reopen: Reopen
    ) -> None:
        other = await reopen()
        evs = [event(A, "w1", n) for n in (1, 2, 3)]
        batch = CommitBatch(
            events=evs,
            snapshots=[snapshot(A, clock(w1=3), events=evs)],
            messages=[MessageRecord(A, "m-1", (("w1", 1), ("w1", 2), ("w1", 3)))],
        )
        await asyncio.gather(*(s.commit(batch) for s in (store, other) for _ in range(3)))
        once = await dump(store, A, ["m-1"])
        assert once["events"] == by_dot(evs) and len(once["snapshots"]) == 1
        assert await dump(other, A, ["m-1"]) == once
