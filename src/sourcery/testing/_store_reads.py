"""The contract on reading: frontier and loose events, lookups by key, message records,
hostile strings and bytes, and what survives a reopen."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sourcery._core.clock import VectorClock
from sourcery._core.errors import StoreError
from sourcery._core.records import (
    ActorRef,
    CommitBatch,
    EventRecord,
    MessageRecord,
    PackRecord,
    SnapshotRecord,
)
from sourcery._stores.base import Store
from sourcery.testing._store_kit import (
    EMPTY,
    HOSTILE,
    PAYLOADS,
    A,
    B,
    Reopen,
    StoreHarness,
    _actor_numbers,
    all_events,
    by_dot,
    clock,
    clocks,
    dump,
    event,
    head_clocks,
    snap_key,
    snapshot,
    writers,
)

__all__ = ["ReadContract"]


class ReadContract(StoreHarness):
    # -- frontier and loose events ------------------------------------------------

    async def test_frontier_is_the_highest_counter_per_writer(self, store: Store) -> None:
        assert await store.frontier(A) == EMPTY
        # Replication may deliver a writer's events in any order.
        await store.commit(CommitBatch(events=[event(A, "w1", 3), event(A, "w2", 1)]))
        await store.commit(CommitBatch(events=[event(A, "w1", 1), event(A, "w1", 2)]))
        await store.commit(CommitBatch(events=[event(B, "w1", 7), event(B, "w3", 1)]))
        assert await store.frontier(A) == clock(w1=3, w2=1)
        assert await store.frontier(B) == clock(w1=7, w3=1)

    # Each backend's class runs this one method (differing executors, by design); every
    # example writes actors of its own, so the shared store fixture is harmless.
    @settings(
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,
        ]
    )
    @given(
        tops=st.dictionaries(writers(), st.integers(0, 8), min_size=1),
        covered=clocks(10),
        data=st.data(),
    )
    async def test_loose_events_are_exactly_those_the_clock_does_not_cover(
        self, store: Store, tops: dict[str, int], covered: VectorClock, data: st.DataObject
    ) -> None:
        actor = ActorRef("loose", f"actor-{next(_actor_numbers)}")
        evs = [event(actor, w, n) for w, top in tops.items() for n in range(1, top + 1)]
        # Stored in any order, in any number of batches; another actor's events alongside.
        evs = data.draw(st.permutations(evs))
        cuts = sorted(data.draw(st.lists(st.integers(0, len(evs)), max_size=4)))
        for lo, hi in itertools.pairwise([0, *cuts, len(evs)]):
            other = ActorRef("loose", f"other-{next(_actor_numbers)}")
            await store.commit(CommitBatch(events=[*evs[lo:hi], event(other, "a", 1)]))

        read = store.stats.events_read
        loose = await store.loose_events(actor, covered)

        assert by_dot(loose) == by_dot(e for e in evs if not covered.covers(e.writer, e.n))
        assert len(loose) == len({(e.writer, e.n) for e in loose})
        assert store.stats.events_read - read == len(loose)
        assert await store.frontier(actor) == VectorClock(tops)

    async def test_loose_events_read_only_what_they_return(self, store: Store) -> None:
        history = [event(A, "w1", n) for n in range(1, 1001)]
        for i in range(0, len(history), 250):
            await store.commit(CommitBatch(events=history[i : i + 250]))
        covered = clock(w1=1000)
        await store.commit(CommitBatch(snapshots=[snapshot(A, covered, events=history)]))
        # A concurrent writer committed before the snapshot was taken; the snapshot missed it.
        loose = [event(A, "w1", 1001), event(A, "w2", 1), event(A, "w2", 2)]
        await store.commit(CommitBatch(events=loose))

        read = store.stats.events_read
        found = await store.loose_events(A, covered)
        assert by_dot(found) == by_dot(loose)
        assert store.stats.events_read - read == 3

        read = store.stats.events_read
        assert await store.loose_events(A, clock(w1=1001, w2=2)) == []
        assert await store.loose_events(A, clock(w1=5000, w2=9, w9=1)) == []
        assert store.stats.events_read == read

    # -- lookups ------------------------------------------------

    async def test_snapshot_and_pack_are_found_by_exact_clock(self, store: Store) -> None:
        evs = [event(A, "w1", 1), event(A, "w1", 2), event(A, "w2", 1)]
        s1 = snapshot(A, clock(w1=2), events=evs[:2], state=b"\x00state one\xff")
        s2 = snapshot(A, clock(w1=2, w2=1), [clock(w1=2)], events=evs[2:])
        await store.commit(CommitBatch(events=evs, snapshots=[s1, s2]))

        for snap, pack in (s1, s2):
            found = await store.snapshot(A, snap.clock)
            assert found is not None and snap_key(found) == snap_key(snap)
            assert await store.pack(A, snap.clock) == pack
        for missing in (clock(w1=1), clock(w1=3), clock(w2=1), EMPTY, clock(w1=2, w2=1, w3=1)):
            assert await store.snapshot(A, missing) is None
            assert await store.pack(A, missing) is None
        assert await store.snapshot(B, clock(w1=2)) is None
        assert await store.pack(B, clock(w1=2)) is None

    async def test_snapshots_lists_every_snapshot_oldest_first(self, store: Store) -> None:
        chain = [clock(w1=1), clock(w1=2), clock(w1=2, w2=1), clock(w1=5, w2=1)]
        for i, vc in enumerate(chain):
            await store.commit(CommitBatch(snapshots=[snapshot(A, vc, chain[i - 1 : i])]))
        assert [s.clock for s in await store.snapshots(A)] == chain

        # Arriving out of order (as replication may deliver them), parents still come first.
        late = [clock(w1=9, w2=3), clock(w1=9, w2=1), clock(w1=6, w2=1)]
        for vc in late:
            await store.commit(CommitBatch(snapshots=[snapshot(A, vc)]))
        listed = [s.clock for s in await store.snapshots(A)]
        assert sorted(listed, key=repr) == sorted(chain + late, key=repr)
        for i, j in itertools.combinations(range(len(listed)), 2):
            assert not listed[j] < listed[i], f"{listed[j]} is older than {listed[i]}"
        assert await store.snapshots(B) == []

    async def test_events_by_dots(self, store: Store) -> None:
        evs = [event(A, "w1", 1), event(A, "w1", 2), event(A, "w2", 1)]
        await store.commit(CommitBatch(events=[*evs, event(B, "w1", 3)]))
        assert by_dot(await store.events(A, [("w1", 2), ("w2", 1)])) == by_dot(evs[1:])
        assert by_dot(await store.events(A, [("w1", 1), ("w1", 3), ("w9", 1)])) == [evs[0]]
        assert await store.events(A, [("w1", 3)]) == []  # B's dot, not A's
        assert await store.events(A, []) == []
        assert await store.events(B, [("w1", 1)]) == []

    async def test_message_records(self, store: Store) -> None:
        with_events = MessageRecord(A, "m-1", (("w1", 1), ("w2", 4)))
        without = MessageRecord(A, "m-2", ())
        await store.commit(CommitBatch(events=[event(A, "w1", 1)], messages=[with_events, without]))
        assert await store.message(A, "m-1") == with_events
        assert await store.message(A, "m-2") == without
        assert await store.message(A, "m-3") is None
        assert await store.message(B, "m-1") is None

    async def test_actors_lists_the_actors_with_events(self, store: Store) -> None:
        assert await store.actors() == []
        refs = [ActorRef(kind, f"id-{i}") for kind in ("account", "cart") for i in range(5)]
        await store.commit(CommitBatch(events=[event(r, "w1", 1) for r in refs]))
        await store.commit(CommitBatch(events=[event(r, "w1", 2) for r in refs]))
        listed = await store.actors()
        assert sorted(listed, key=str) == sorted(refs, key=str)
        few = await store.actors(limit=3)
        assert len(few) == 3 and set(few) <= set(refs)

    async def test_actors_page_on_after_the_last_listed(self, store: Store) -> None:
        refs = [ActorRef(kind, f"id-{i}") for kind in ("account", "cart") for i in range(7)]
        await store.commit(CommitBatch(events=[event(r, "w1", 1) for r in refs]))
        pages: list[list[ActorRef]] = []
        after: ActorRef | None = None
        while page := await store.actors(limit=4, after=after):
            assert len(page) <= 4
            pages.append(page)
            after = page[-1]
        listed = [ref for page in pages for ref in page]
        assert len(pages) == 4
        assert listed == await store.actors(limit=100)  # the same order, nothing twice
        assert sorted(listed, key=str) == sorted(refs, key=str)

        # -- hostile strings and bytes

    async def test_hostile_strings_round_trip_exactly(self, store: Store) -> None:
        assert all(len(s.encode()) <= 255 for s in HOSTILE)
        assert len(set(HOSTILE)) == len(HOSTILE)
        refs = [
            ActorRef(kind, ident) for kind, ident in zip(HOSTILE, reversed(HOSTILE), strict=True)
        ]
        refs += [ActorRef("account", s) for s in HOSTILE]
        assert len(set(refs)) == len(refs)

        for s in HOSTILE:
            await store.register_writer(s)
        for s in HOSTILE:  # claimed exactly as given, so each one again is refused
            with pytest.raises(StoreError):
                await store.register_writer(s)

        written: dict[ActorRef, tuple[list[EventRecord], SnapshotRecord, PackRecord]] = {}
        for ref in refs:
            # Every hostile string as a writer id, message id, event type and payload.
            evs = [event(ref, s, 1, payload=s.encode(), initiated_by=s, type=s) for s in HOSTILE]
            vc = VectorClock({s: 1 for s in HOSTILE})
            snap, pack = snapshot(
                ref, vc, [VectorClock({HOSTILE[3]: 1})], events=evs, state=str(ref).encode()
            )
            messages = [MessageRecord(ref, s, ((s, 1), (HOSTILE[0], 1))) for s in HOSTILE]
            await store.commit(CommitBatch(events=evs, snapshots=[(snap, pack)], messages=messages))
            written[ref] = (evs, snap, pack)

        assert sorted(await store.actors(limit=10_000), key=repr) == sorted(refs, key=repr)
        for ref, (evs, snap, pack) in written.items():
            assert await all_events(store, ref) == by_dot(evs)
            assert by_dot(await store.events(ref, [(s, 1) for s in HOSTILE])) == by_dot(evs)
            assert await store.frontier(ref) == snap.clock
            assert [snap_key(h) for h in await store.heads(ref)] == [snap_key(snap)]
            found_snap = await store.snapshot(ref, snap.clock)
            assert found_snap is not None and snap_key(found_snap) == snap_key(snap)
            assert await store.pack(ref, snap.clock) == pack
            for s in HOSTILE:
                assert await store.message(ref, s) == MessageRecord(
                    ref, s, ((s, 1), (HOSTILE[0], 1))
                )
        # Every table is still there and still writable.
        await store.commit(
            CommitBatch(events=[event(A, "w1", 1)], snapshots=[snapshot(A, clock(w1=1))])
        )
        assert len(await all_events(store, A)) == 1

    async def test_payload_bytes_round_trip_exactly(self, store: Store) -> None:
        evs = [event(A, "w1", n, payload=p) for n, p in enumerate(PAYLOADS, start=1)]
        snaps = [
            snapshot(A, clock(w1=n), events=evs[n - 1 : n], state=p)
            for n, p in enumerate(PAYLOADS, start=1)
        ]
        await store.commit(CommitBatch(events=evs, snapshots=snaps))
        assert [e.payload for e in await all_events(store, A)] == PAYLOADS
        assert [e.payload for e in await store.events(A, [("w1", 2), ("w1", 4)])] == [
            PAYLOADS[1],
            PAYLOADS[3],
        ]
        assert [s.state for s in await store.snapshots(A)] == PAYLOADS
        for n, p in enumerate(PAYLOADS, start=1):
            pack = await store.pack(A, clock(w1=n))
            assert pack is not None and [e.payload for e in pack.events] == [p]

    # -- persistence ------------------------------------------------

    @pytest.mark.usefixtures("requires_persistence")
    async def test_records_survive_a_reopen(self, store: Store, reopen: Reopen) -> None:
        evs = [event(A, "w1", 1), event(A, "w1", 2), event(A, "w2", 1)]
        base = snapshot(A, clock(w1=1), events=evs[:1])
        left = snapshot(A, clock(w1=2), [clock(w1=1)], events=evs[1:2])
        right = snapshot(A, clock(w1=1, w2=1), [clock(w1=1)], events=evs[2:])
        await store.commit(
            CommitBatch(
                events=[*evs, event(B, "w3", 1)],
                snapshots=[base, left, right],
                messages=[MessageRecord(A, "m-1", (("w1", 1),))],
            )
        )
        before = await dump(store, A, ["m-1", "m-2"])
        await store.aclose()

        again = await reopen()
        assert await dump(again, A, ["m-1", "m-2"]) == before
        assert head_clocks(await again.heads(A)) == {clock(w1=2), clock(w1=1, w2=1)}
        assert sorted(await again.actors(), key=str) == [A, B]
        # And it keeps working: a merge replaces both heads.
        merged = snapshot(A, clock(w1=2, w2=1), [clock(w1=2), clock(w1=1, w2=1)])
        await again.commit(CommitBatch(snapshots=[merged]))
        assert head_clocks(await again.heads(A)) == {clock(w1=2, w2=1)}

    # -- message lookups ------------------------------------------------

    async def test_concurrent_message_lookups_share_queries_and_each_gets_its_own_answer(
        self,
        store: Store,
    ) -> None:
        actors = [ActorRef("account", f"lookup-{i}") for i in range(40)]
        stored = {
            (ref, f"m-{j}"): MessageRecord(ref, f"m-{j}", (("w1", i * 10 + j),) if j % 2 else ())
            for i, ref in enumerate(actors)
            for j in range(5)
        }
        await store.commit(CommitBatch(messages=list(stored.values())))
        # Hits, misses (an unknown id, a known id of another actor, an unknown actor), and the
        # same key asked for several times at once.
        asked = list(stored) * 2 + [(ref, "m-5") for ref in actors]
        asked += [(ActorRef("account", "nobody"), "m-1"), (ActorRef("other", "lookup-1"), "m-1")]
        before = store.stats.message_queries
        found = await asyncio.gather(*(store.message(ref, m) for ref, m in asked))
        assert found == [stored.get(key) for key in asked]
        assert 1 <= store.stats.message_queries - before < len(asked) // 10

    async def test_a_message_lookup_sees_every_commit_that_returned_before_it(
        self, store: Store
    ) -> None:
        async def commit_then_find(i: int) -> MessageRecord | None:
            ref = ActorRef("account", f"seen-{i}")
            await store.commit(
                CommitBatch(
                    events=[event(ref, "w1", 1)], messages=[MessageRecord(ref, "m", (("w1", 1),))]
                )
            )
            return await store.message(ref, "m")

        found = await asyncio.gather(*(commit_then_find(i) for i in range(60)))
        assert found == [
            MessageRecord(ActorRef("account", f"seen-{i}"), "m", (("w1", 1),)) for i in range(60)
        ]

    async def test_concurrent_lookups_of_hostile_strings_each_find_exactly_their_own(
        self,
        store: Store,
    ) -> None:
        refs = [ActorRef("account", s) for s in HOSTILE] + [ActorRef(s, "x") for s in HOSTILE]
        stored = {
            (ref, s): MessageRecord(ref, s, ((s, i + 1),))
            for i, ref in enumerate(refs)
            for s in HOSTILE[i % 3 :: 3]
        }
        await store.commit(CommitBatch(messages=list(stored.values())))
        asked = [(ref, s) for ref in refs for s in HOSTILE]
        found = await asyncio.gather(*(store.message(ref, m) for ref, m in asked))
        assert found == [stored.get(key) for key in asked]
        assert sum(f is not None for f in found) == len(stored)

    async def test_a_lookup_the_store_cannot_make_fails_alone(self, store: Store) -> None:
        ref = ActorRef("account", "a")
        await store.commit(CommitBatch(messages=[MessageRecord(ref, "m-1", (("w1", 1),))]))
        # A NUL character: PostgreSQL refuses it in text, SQLite takes it (and finds nothing).
        asked = ["m-1", "m\x00bad", "m-2", "m-1"]
        found = await asyncio.gather(
            *(store.message(ref, m) for m in asked), return_exceptions=True
        )
        assert found[0] == found[3] == MessageRecord(ref, "m-1", (("w1", 1),))
        assert found[2] is None
        assert found[1] is None or isinstance(found[1], StoreError)

    async def test_a_cancelled_lookup_leaves_the_others_answered(self, store: Store) -> None:
        ref = ActorRef("account", "a")
        await store.commit(CommitBatch(messages=[MessageRecord(ref, "m-1", ())]))
        tasks = [asyncio.ensure_future(store.message(ref, m)) for m in ("m-1", "m-1", "m-2", "m-1")]
        await asyncio.sleep(0)
        tasks[1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert [done[0], done[2], done[3]] == [MessageRecord(ref, "m-1", ()), None, done[0]]
        assert await store.message(ref, "m-1") == MessageRecord(ref, "m-1", ())
