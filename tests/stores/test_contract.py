"""The contract every store implementation must keep (see ``sourcery._stores.base.Store``).

Each test runs once per implementation in ``conftest.FACTORIES``; none of them knows which
implementation it runs against.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import clocks, counters, writers

from sourcery._core.clock import VectorClock
from sourcery._core.errors import ClosedError, InvalidActorRef, StoreError
from sourcery._core.ids import id_to_bytes, new_id
from sourcery._core.records import (
    ActorRef,
    CommitBatch,
    EventRecord,
    MessageRecord,
    PackRecord,
    SnapshotRecord,
)
from sourcery._stores import Store

Reopen = Callable[[], Awaitable[Store]]

# -- building records ----------------------------------------------------------------------

A = ActorRef("account", "a-1")
B = ActorRef("account", "b-2")
EMPTY = VectorClock.empty()

_timestamps = itertools.count(1_700_000_000_000)


def event(
    actor: ActorRef,
    writer: str,
    n: int,
    *,
    payload: bytes | None = None,
    initiated_by: str = "msg-1",
    type: str = "Deposited",
) -> EventRecord:
    """A new event with dot ``(writer, n)``; a fresh id each call, so never equal to another."""
    return EventRecord(
        actor_type=actor.type,
        actor_id=actor.id,
        writer=writer,
        n=n,
        id=id_to_bytes(new_id()),
        timestamp=next(_timestamps),
        initiated_by=initiated_by,
        type=type,
        version=1,
        payload=f"{writer}:{n}".encode() if payload is None else payload,
    )


def clock(**entries: int) -> VectorClock:
    return VectorClock(entries)


def snapshot(
    actor: ActorRef,
    vc: VectorClock,
    parents: Iterable[VectorClock] = (),
    *,
    events: Iterable[EventRecord] = (),
    state: bytes | None = None,
) -> tuple[SnapshotRecord, PackRecord]:
    snap = SnapshotRecord(
        actor=actor,
        clock=vc,
        parents=tuple(parents),
        state=repr(vc).encode() if state is None else state,
        timestamp=next(_timestamps),
    )
    return snap, PackRecord(actor=actor, clock=vc, events=tuple(events))


def dots_of(events: Iterable[EventRecord]) -> list[tuple[str, int]]:
    return sorted((e.writer, e.n) for e in events)


def by_dot(events: Iterable[EventRecord]) -> list[EventRecord]:
    return sorted(events, key=lambda e: (e.writer, e.n))


def snap_key(s: SnapshotRecord) -> tuple[Any, ...]:
    """A snapshot as comparable data; the order of its parents carries no meaning."""
    return (s.actor, s.clock, frozenset(s.parents), s.state, s.timestamp)


def head_clocks(heads: Iterable[SnapshotRecord]) -> set[VectorClock]:
    return {h.clock for h in heads}


async def all_events(store: Store, actor: ActorRef) -> list[EventRecord]:
    return by_dot(await store.loose_events(actor, EMPTY))


async def dump(store: Store, actor: ActorRef, message_ids: Sequence[str] = ()) -> dict[str, Any]:
    """Everything the store tells about one actor."""
    snapshots = await store.snapshots(actor)
    return {
        "events": await all_events(store, actor),
        "frontier": await store.frontier(actor),
        "snapshots": [snap_key(s) for s in snapshots],
        "heads": sorted((snap_key(h) for h in await store.heads(actor)), key=repr),
        "packs": [await store.pack(actor, s.clock) for s in snapshots],
        "messages": [await store.message(actor, m) for m in message_ids],
        "listed": actor in await store.actors(limit=10_000),
    }


async def assert_nothing_of(store: Store, actor: ActorRef, message_ids: Sequence[str]) -> None:
    assert await dump(store, actor, message_ids) == {
        "events": [],
        "frontier": EMPTY,
        "snapshots": [],
        "heads": [],
        "packs": [],
        "messages": [None] * len(message_ids),
        "listed": False,
    }


# -- atomicity and conflicts ---------------------------------------------------------------


@pytest.mark.parametrize("others", [0, 1, 6])
async def test_a_conflicting_batch_writes_nothing_and_its_group_still_commits(
    store: Store, others: int
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


async def test_two_batches_claiming_one_new_dot_in_one_group_one_wins(store: Store) -> None:
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


async def test_a_batch_conflicting_with_itself_writes_nothing(store: Store) -> None:
    batch = CommitBatch(
        events=[event(A, "w1", 1), event(A, "w1", 2), event(A, "w1", 2, payload=b"other")],
        snapshots=[snapshot(A, clock(w1=2))],
        messages=[MessageRecord(A, "m", (("w1", 1), ("w1", 2)))],
    )
    with pytest.raises(StoreError):
        await store.commit(batch)
    await assert_nothing_of(store, A, ["m"])


async def test_writing_the_same_records_twice_is_a_no_op(store: Store) -> None:
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


async def test_a_batch_repeating_stored_events_writes_only_the_new_ones(store: Store) -> None:
    old = [event(A, "w1", 1), event(A, "w1", 2)]
    await store.commit(CommitBatch(events=old))
    new = event(A, "w1", 3)
    await store.commit(CommitBatch(events=[*old, new]))
    assert await all_events(store, A) == [*old, new]
    assert await store.frontier(A) == clock(w1=3)


# -- group commit ---------------------------------------------------------------------------


async def test_concurrent_commits_share_transactions_and_are_readable_when_done(
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


# -- heads ------------------------------------------------------------------------------------


async def test_the_first_snapshot_is_the_head(store: Store) -> None:
    assert await store.heads(A) == []
    s, pack = snapshot(A, clock(w1=1), state=b"first state")
    await store.commit(CommitBatch(events=[event(A, "w1", 1)], snapshots=[(s, pack)]))
    assert [snap_key(h) for h in await store.heads(A)] == [snap_key(s)]
    assert await store.heads(B) == []


async def test_a_dominating_snapshot_replaces_the_head(store: Store) -> None:
    s1 = snapshot(A, clock(w1=1))
    s2 = snapshot(A, clock(w1=3, w2=1), [clock(w1=1)])
    await store.commit(CommitBatch(snapshots=[s1]))
    await store.commit(CommitBatch(snapshots=[s2]))
    assert [snap_key(h) for h in await store.heads(A)] == [snap_key(s2[0])]


async def test_concurrent_snapshots_are_both_heads_until_merged(store: Store) -> None:
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


async def test_a_snapshot_dominated_by_a_head_does_not_become_one(store: Store) -> None:
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


async def test_heads_in_one_batch_and_across_actors(store: Store) -> None:
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


# -- frontier and loose events ----------------------------------------------------------------


async def test_frontier_is_the_highest_counter_per_writer(store: Store) -> None:
    assert await store.frontier(A) == EMPTY
    # Replication may deliver a writer's events in any order.
    await store.commit(CommitBatch(events=[event(A, "w1", 3), event(A, "w2", 1)]))
    await store.commit(CommitBatch(events=[event(A, "w1", 1), event(A, "w1", 2)]))
    await store.commit(CommitBatch(events=[event(B, "w1", 7), event(B, "w3", 1)]))
    assert await store.frontier(A) == clock(w1=3, w2=1)
    assert await store.frontier(B) == clock(w1=7, w3=1)


_actor_numbers = itertools.count()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    tops=st.dictionaries(writers(), counters(8), min_size=1),
    covered=clocks(10),
    data=st.data(),
)
async def test_loose_events_are_exactly_those_the_clock_does_not_cover(
    store: Store, tops: dict[str, int], covered: VectorClock, data: st.DataObject
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


async def test_loose_events_read_only_what_they_return(store: Store) -> None:
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


# -- lookups -------------------------------------------------------------------------------------


async def test_snapshot_and_pack_are_found_by_exact_clock(store: Store) -> None:
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


async def test_snapshots_lists_every_snapshot_oldest_first(store: Store) -> None:
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


async def test_events_by_dots(store: Store) -> None:
    evs = [event(A, "w1", 1), event(A, "w1", 2), event(A, "w2", 1)]
    await store.commit(CommitBatch(events=[*evs, event(B, "w1", 3)]))
    assert by_dot(await store.events(A, [("w1", 2), ("w2", 1)])) == by_dot(evs[1:])
    assert by_dot(await store.events(A, [("w1", 1), ("w1", 3), ("w9", 1)])) == [evs[0]]
    assert await store.events(A, [("w1", 3)]) == []  # B's dot, not A's
    assert await store.events(A, []) == []
    assert await store.events(B, [("w1", 1)]) == []


async def test_message_records(store: Store) -> None:
    with_events = MessageRecord(A, "m-1", (("w1", 1), ("w2", 4)))
    without = MessageRecord(A, "m-2", ())
    await store.commit(CommitBatch(events=[event(A, "w1", 1)], messages=[with_events, without]))
    assert await store.message(A, "m-1") == with_events
    assert await store.message(A, "m-2") == without
    assert await store.message(A, "m-3") is None
    assert await store.message(B, "m-1") is None


async def test_actors_lists_the_actors_with_events(store: Store) -> None:
    assert await store.actors() == []
    refs = [ActorRef(kind, f"id-{i}") for kind in ("account", "cart") for i in range(5)]
    await store.commit(CommitBatch(events=[event(r, "w1", 1) for r in refs]))
    await store.commit(CommitBatch(events=[event(r, "w1", 2) for r in refs]))
    listed = await store.actors()
    assert sorted(listed, key=str) == sorted(refs, key=str)
    few = await store.actors(limit=3)
    assert len(few) == 3 and set(few) <= set(refs)


# -- writers -----------------------------------------------------------------------------------


async def test_a_writer_id_can_be_claimed_once(store: Store) -> None:
    await store.register_writer("w-1")
    await store.register_writer("w-2")
    with pytest.raises(StoreError):
        await store.register_writer("w-1")
    with pytest.raises(StoreError):
        await store.register_writer("w-2")
    await store.register_writer("W-1")  # a different id


@pytest.mark.usefixtures("requires_persistence")
async def test_a_writer_id_stays_claimed_across_a_reopen(store: Store, reopen: Reopen) -> None:
    await store.register_writer("w-1")
    await store.aclose()
    again = await reopen()
    with pytest.raises(StoreError):
        await again.register_writer("w-1")
    await again.register_writer("w-2")


# -- closing -------------------------------------------------------------------------------------

Operation = Callable[[Store], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "register_writer": lambda s: s.register_writer("w-late"),
    "commit": lambda s: s.commit(CommitBatch(events=[event(A, "w1", 1)])),
    "commit-empty": lambda s: s.commit(CommitBatch()),
    "heads": lambda s: s.heads(A),
    "frontier": lambda s: s.frontier(A),
    "loose_events": lambda s: s.loose_events(A, EMPTY),
    "events": lambda s: s.events(A, [("w1", 1)]),
    "snapshot": lambda s: s.snapshot(A, clock(w1=1)),
    "pack": lambda s: s.pack(A, clock(w1=1)),
    "snapshots": lambda s: s.snapshots(A),
    "message": lambda s: s.message(A, "m"),
    "actors": lambda s: s.actors(),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_operations_after_aclose_raise_closed_error(
    store: Store, operation: Operation
) -> None:
    await store.commit(CommitBatch(events=[event(A, "w1", 1)]))
    await store.aclose()
    await store.aclose()
    with pytest.raises(ClosedError):
        await operation(store)
    await store.aclose()


async def test_aclose_writes_what_is_queued(store: Store) -> None:
    evs = [event(A, "w1", n) for n in range(1, 51)]
    pending = [store.commit(CommitBatch(events=[e])) for e in evs]
    await store.aclose()
    assert await asyncio.gather(*pending) == [None] * len(evs)


@pytest.mark.usefixtures("requires_persistence")
async def test_aclose_writes_what_is_queued_durably(store: Store, reopen: Reopen) -> None:
    evs = [event(A, "w1", n) for n in range(1, 51)]
    pending = [store.commit(CommitBatch(events=[e])) for e in evs]
    await store.aclose()
    await asyncio.gather(*pending)
    again = await reopen()
    assert await all_events(again, A) == evs


# -- hostile strings and bytes ------------------------------------------------------------------

HOSTILE = [
    "'",
    '"',
    'it\'s "quoted"',
    "'; DROP TABLE events; --",
    '"); DELETE FROM snapshots; --',
    "back\\slash\\",
    "\\x00",
    "%_*?[]",
    "line\nbreak\ttab\rreturn",
    "emoji 🎉👩‍👩‍👧",
    "\u202eright-to-left",
    "é",  # precomposed
    "e\u0301",  # the same letter, decomposed: a different id
    "E\u0301",
    "trailing space ",
    "trailing space",
    "x" * 255,
    "é" * 127 + "x",  # 255 bytes
    "🎉" * 63 + "abc",  # 255 bytes
]


async def test_hostile_strings_round_trip_exactly(store: Store) -> None:
    assert all(len(s.encode()) <= 255 for s in HOSTILE)
    assert len(set(HOSTILE)) == len(HOSTILE)
    refs = [ActorRef(kind, ident) for kind, ident in zip(HOSTILE, reversed(HOSTILE), strict=True)]
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
            assert await store.message(ref, s) == MessageRecord(ref, s, ((s, 1), (HOSTILE[0], 1)))
    # Every table is still there and still writable.
    await store.commit(
        CommitBatch(events=[event(A, "w1", 1)], snapshots=[snapshot(A, clock(w1=1))])
    )
    assert len(await all_events(store, A)) == 1


PAYLOADS = [
    b"",
    b"\x00",
    b"\x00\x00ab\x00",
    bytes(range(256)),
    b"\xff\xfe\xfd not utf-8 \xc3\x28 \xed\xa0\x80",
    b"'; DROP TABLE events; --",
    b"\\\x00'\"",
    bytes(range(256)) * 4096,  # 1 MiB
]


async def test_payload_bytes_round_trip_exactly(store: Store) -> None:
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


@pytest.mark.parametrize(
    "bad",
    ["", "a\x00b", "\x00", "x" * 256, "é" * 128, "🎉" * 64, "\ud800", "ok\udfff"],
    ids=[
        "empty",
        "nul",
        "only-nul",
        "256-ascii",
        "256-bytes-2",
        "256-bytes-4",
        "lone-high",
        "lone-low",
    ],
)
def test_actor_ref_rejects_what_no_store_can_hold(bad: str) -> None:
    with pytest.raises(InvalidActorRef):
        ActorRef("account", bad)
    with pytest.raises(InvalidActorRef):
        ActorRef(bad, "id-1")


@pytest.mark.parametrize("bad", [None, b"id", 1])
def test_actor_ref_rejects_non_strings(bad: object) -> None:
    with pytest.raises(InvalidActorRef):
        ActorRef("account", bad)  # type: ignore[arg-type]


def test_actor_ref_accepts_255_bytes() -> None:
    for s in ("x" * 255, "é" * 127 + "x", "🎉" * 63 + "abc"):
        assert ActorRef(s, s).id == s


# -- persistence ------------------------------------------------------------------------------


@pytest.mark.usefixtures("requires_persistence")
async def test_records_survive_a_reopen(store: Store, reopen: Reopen) -> None:
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


# -- replication streams ------------------------------------------------------------------------


async def test_read_since_streams_every_record_once_in_write_order(store: Store) -> None:
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


# -- the event order publishers and subscriptions read ---------------------------------------


async def test_read_events_gives_every_event_once_in_commit_order_with_positions(
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


async def test_a_batch_with_only_a_checkpoint_commits(store: Store) -> None:
    from sourcery._core.records import Checkpoint, Cursor

    assert await store.checkpoint("publish:x") == Checkpoint("publish:x")
    saved = Checkpoint("publish:x", events=Cursor(2**100 + 7, b"\x01" * 16))
    await store.commit(CommitBatch(checkpoint=saved))
    assert await store.checkpoint("publish:x") == saved
    moved = Checkpoint("publish:x", events=Cursor(2**100 + 9, b"\x02" * 16))
    await store.commit(CommitBatch(checkpoint=moved))
    assert await store.checkpoint("publish:x") == moved
    assert await store.read_events(Cursor(), 10) == []


# -- message lookups -----------------------------------------------------------------------


async def test_concurrent_message_lookups_share_queries_and_each_gets_its_own_answer(
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


async def test_a_message_lookup_sees_every_commit_that_returned_before_it(store: Store) -> None:
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


async def test_a_lookup_the_store_cannot_make_fails_alone(store: Store) -> None:
    ref = ActorRef("account", "a")
    await store.commit(CommitBatch(messages=[MessageRecord(ref, "m-1", (("w1", 1),))]))
    # A NUL character: PostgreSQL refuses it in text, SQLite takes it (and finds nothing).
    asked = ["m-1", "m\x00bad", "m-2", "m-1"]
    found = await asyncio.gather(*(store.message(ref, m) for m in asked), return_exceptions=True)
    assert found[0] == found[3] == MessageRecord(ref, "m-1", (("w1", 1),))
    assert found[2] is None
    assert found[1] is None or isinstance(found[1], StoreError)


async def test_a_cancelled_lookup_leaves_the_others_answered(store: Store) -> None:
    ref = ActorRef("account", "a")
    await store.commit(CommitBatch(messages=[MessageRecord(ref, "m-1", ())]))
    tasks = [asyncio.ensure_future(store.message(ref, m)) for m in ("m-1", "m-1", "m-2", "m-1")]
    await asyncio.sleep(0)
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [done[0], done[2], done[3]] == [MessageRecord(ref, "m-1", ()), None, done[0]]
    assert await store.message(ref, "m-1") == MessageRecord(ref, "m-1", ())
