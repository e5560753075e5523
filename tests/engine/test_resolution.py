"""Resolution: the latest common ancestor, every branch's events once, the same everywhere.

The first half drives the pure walks ``find_base`` and ``collect_events`` over snapshot
graphs built by hand (no store), counting what they ask for. The second half runs real
runtimes on in-memory SQLite stores: merged state, determinism across replicas and record
orders, the bank's merge hook, bounded work, no sibling explosion and lost local state.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import sqlite3
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sourcery import ActorRef, ActorType, Runtime, Store, StoreError, VectorClock, open_store
from sourcery._core.codec import Codec
from sourcery._core.history import fold, replay_order
from sourcery._core.merge import ROOT, collect_events, find_base, merge_writer, plan_merge
from sourcery._core.records import CommitBatch, Cursor, EventRecord, PackRecord, SnapshotRecord
from sourcery._engine.resolution import resolve
from sourcery.examples import bank
from sourcery.replication import catch_up, pull, sync

MEMORY = "sqlite://:memory:"

# -- an actor whose state is the exact sequence of events applied -------------------------


class Journal(msgspec.Struct, frozen=True):
    tokens: tuple[str, ...] = ()


class Note(msgspec.Struct, frozen=True):
    tokens: tuple[str, ...]


class Noted(msgspec.Struct, frozen=True):
    token: str


def journal_decide(state: Journal, command: Note) -> list[Noted]:
    return [Noted(t) for t in command.tokens]


def journal_evolve(state: Journal, event: Noted) -> Journal:
    return Journal((*state.tokens, event.token))


journals: ActorType[Journal, Note, Noted] = ActorType(
    name="journal",
    initial=Journal(),
    decide=journal_decide,
    evolve=journal_evolve,
    commands=[Note],
    events=[Noted],
)
CODEC: Codec[Journal, Note, Noted] = Codec(journals)
ACTOR = journals("j")


def journal_kind(snapshot_every: int) -> ActorType[Journal, Note, Noted]:
    return dataclasses.replace(journals, snapshot_every=snapshot_every)


# -- hand-built snapshot graphs -------------------------------------------------------------


class Graph:
    """Snapshots and packs of one actor, built by hand; states are the exact fold."""

    def __init__(self, *, states: bool = True) -> None:
        self.states = states
        self.snapshots: dict[VectorClock, SnapshotRecord] = {}
        self.packs: dict[VectorClock, PackRecord] = {}
        self.covered: dict[VectorClock, dict[tuple[str, int], EventRecord]] = {ROOT: {}}
        self.counters: Counter[str] = Counter()
        self.ts = 1_000

    def events(self, writer: str, k: int) -> list[EventRecord]:
        """``k`` new events of ``writer``, each later than every event made before."""
        made = []
        for _ in range(k):
            self.counters[writer] += 1
            n = self.counters[writer]
            self.ts += 1
            ident = (self.ts << 64) | (zlib.crc32(writer.encode()) << 16) | n
            token = f"{writer}{n}"
            made.append(
                EventRecord(
                    ACTOR.type,
                    ACTOR.id,
                    writer,
                    n,
                    ident.to_bytes(16, "big"),
                    self.ts,
                    f"m-{token}",
                    "Noted",
                    1,
                    CODEC.encode_payload(Noted(token)),
                )
            )
        return made

    def snap(
        self, parents: Sequence[SnapshotRecord], writer: str = "", k: int = 0
    ) -> SnapshotRecord:
        """A snapshot over ``parents`` plus ``k`` new events of ``writer``."""
        new = self.events(writer, k) if k else []
        clock = VectorClock.merge_all(p.clock for p in parents)
        for e in new:
            clock = clock.with_entry(e.writer, e.n)
        covered: dict[tuple[str, int], EventRecord] = {}
        for p in parents:
            covered.update(self.covered[p.clock])
        covered.update({(e.writer, e.n): e for e in new})
        state = b""
        if self.states:
            tokens = tuple(token(e) for e in sorted(covered.values(), key=replay_order))
            state = CODEC.encode_state(Journal(tokens))
        record = SnapshotRecord(
            actor=ACTOR,
            clock=clock,
            parents=tuple(sorted((p.clock for p in parents), key=VectorClock.to_bytes)),
            state=state,
            timestamp=max((e.timestamp for e in covered.values()), default=0),
        )
        assert clock not in self.snapshots, "two snapshots with one clock"
        self.snapshots[clock] = record
        self.packs[clock] = PackRecord(ACTOR, clock, tuple(new))
        self.covered[clock] = covered
        return record

    def chain(self, start: SnapshotRecord | None, writer: str, length: int) -> SnapshotRecord:
        node = start
        for _ in range(length):
            node = self.snap([node] if node is not None else [], writer, 1)
        assert node is not None
        return node

    def run(self, walk: Generator[Any, Any, Any], log: list[tuple[str, VectorClock]]) -> Any:
        """Answer the walk's requests from this graph, logging each one."""
        try:
            request = next(walk)
            while True:
                log.append(request)
                what, clock = request
                answer = self.snapshots.get(clock) if what == "snapshot" else self.packs.get(clock)
                request = walk.send(answer)
        except StopIteration as done:
            return done.value

    def base(
        self, heads: Sequence[SnapshotRecord], log: list[tuple[str, VectorClock]] | None = None
    ) -> VectorClock:
        result: VectorClock = self.run(find_base(heads), [] if log is None else log)
        return result

    def collect(
        self,
        heads: Sequence[SnapshotRecord],
        base: VectorClock,
        log: list[tuple[str, VectorClock]] | None = None,
        known: dict[VectorClock, SnapshotRecord | None] | None = None,
    ) -> list[list[EventRecord]]:
        result: list[list[EventRecord]] = self.run(
            collect_events(heads, base, known), [] if log is None else log
        )
        return result

    def beyond(self, head: SnapshotRecord, base: VectorClock) -> list[EventRecord]:
        """What collect_events must return for ``head``: its events ``base`` lacks."""
        events = self.covered[head.clock].values()
        return sorted((e for e in events if not base.covers(e.writer, e.n)), key=replay_order)


def token(e: EventRecord) -> str:
    return msgspec.msgpack.decode(e.payload, type=Noted).token


def assert_newer_than(base: VectorClock, log: Iterable[tuple[str, VectorClock]]) -> None:
    """Every request is for the base itself or for something the base does not cover."""
    for what, clock in log:
        assert clock == base or not clock <= base, f"{what} {clock!r} is older than the base"


def both_orders(graph: Graph, heads: list[SnapshotRecord]) -> VectorClock:
    bases = {graph.base(order) for order in (heads, heads[::-1])}
    assert len(bases) == 1, f"the base depends on the order of the heads: {bases}"
    return bases.pop()


# -- find_base and collect_events -----------------------------------------------------------


def test_linear_history() -> None:
    g = Graph()
    s1 = g.snap([], "a", 2)
    s2 = g.snap([s1], "a", 2)
    s3 = g.snap([s2], "a", 2)
    log: list[tuple[str, VectorClock]] = []
    assert g.base([s3], log) == s3.clock
    assert len(log) <= 1
    assert g.base([s3, s1]) == s1.clock
    assert g.base([s1, s3]) == s1.clock
    assert g.base([s2, s3]) == s2.clock

    log = []
    (events,) = g.collect([s3], s1.clock, log)
    assert events == g.beyond(s3, s1.clock)
    assert [(e.writer, e.n) for e in events] == [("a", 3), ("a", 4), ("a", 5), ("a", 6)]
    assert {c for what, c in log if what == "pack"} == {s2.clock, s3.clock}
    assert_newer_than(s1.clock, log)
    (everything,) = g.collect([s3], ROOT)
    assert len(everything) == 6


def test_two_branches_from_a_common_snapshot() -> None:
    g = Graph()
    common = g.chain(None, "a", 5)
    x = g.chain(common, "a", 3)
    y = g.chain(common, "b", 3)
    log: list[tuple[str, VectorClock]] = []
    base = g.base([x, y], log)
    assert base == common.clock
    assert g.base([y, x]) == common.clock
    assert_newer_than(base, log)
    log = []
    per_head = g.collect([x, y], base, log)
    assert per_head == [g.beyond(x, base), g.beyond(y, base)]
    assert [(e.writer, e.n) for e in per_head[0]] == [("a", 6), ("a", 7), ("a", 8)]
    assert [(e.writer, e.n) for e in per_head[1]] == [("b", 1), ("b", 2), ("b", 3)]
    assert_newer_than(base, log)
    assert {c for what, c in log if what == "pack"} == {c for c in g.snapshots if not c <= base}


def test_branches_from_root_when_both_sides_created_the_actor() -> None:
    g = Graph()
    x = g.chain(None, "a", 2)
    y = g.chain(None, "b", 3)
    assert both_orders(g, [x, y]) == ROOT
    per_head = g.collect([x, y], ROOT)
    assert [len(p) for p in per_head] == [2, 3]
    assert per_head == [g.beyond(x, ROOT), g.beyond(y, ROOT)]


def test_three_heads() -> None:
    g = Graph()
    c = g.chain(None, "a", 4)
    h1 = g.chain(c, "a", 2)
    d = g.chain(c, "b", 2)
    h2 = g.chain(d, "b", 1)
    h3 = g.chain(d, "c", 3)
    for heads in ([h1, h2, h3], [h3, h2, h1], [h2, h1, h3]):
        log: list[tuple[str, VectorClock]] = []
        assert g.base(heads, log) == c.clock
        assert_newer_than(c.clock, log)
    assert both_orders(g, [h2, h3]) == d.clock
    per_head = g.collect([h1, h2, h3], c.clock)
    assert per_head == [g.beyond(h, c.clock) for h in (h1, h2, h3)]
    # b's two events are on two branches: each is returned for both, and merged once.
    assert [len(p) for p in per_head] == [2, 3, 5]


@pytest.mark.parametrize("tie", [True, False], ids=["equal-totals", "unequal-totals"])
def test_criss_cross_base_is_deterministic(tie: bool) -> None:
    g = Graph()
    c = g.chain(None, "a", 3)
    x = g.snap([c], "x", 2)
    y = g.snap([c], "y", 2 if tie else 3)
    # Two merges of the same two parents, each with its own new events, then extended.
    m1 = g.snap([x, y], "p", 1)
    m2 = g.snap([x, y], "q", 1)
    h1 = g.chain(m1, "p", 2)
    h2 = g.chain(m2, "q", 2)
    expected = max((x.clock, y.clock), key=lambda k: (k.total(), k.to_bytes()))
    for heads in ([h1, h2], [h2, h1]):
        log: list[tuple[str, VectorClock]] = []
        assert g.base(heads, log) == expected
        assert_newer_than(expected, log)
    per_head = g.collect([h1, h2], expected)
    assert per_head == [g.beyond(h1, expected), g.beyond(h2, expected)]
    # The other merge parent's events are on both sides, so the plan keeps them once.
    base_state = CODEC.decode_state(g.snapshots[expected].state)
    plan = plan_merge(journals, CODEC, [h1, h2], base_state, expected, per_head)
    merged = CODEC.decode_state(plan.snapshot.state)
    everything = g.covered[h1.clock] | g.covered[h2.clock]
    assert sorted(merged.tokens) == sorted(token(e) for e in everything.values())
    assert len(set(merged.tokens)) == len(merged.tokens)
    assert plan.snapshot.clock == merged_clock([h1, h2])


def test_the_walk_is_bounded_by_the_divergence() -> None:
    g = Graph(states=False)
    old = g.chain(None, "a", 1_000)
    x = g.chain(old, "a", 3)
    y = g.chain(old, "b", 3)
    log: list[tuple[str, VectorClock]] = []
    nodes: dict[VectorClock, SnapshotRecord | None] = {}
    base = g.run(find_base([x, y], nodes), log)
    assert base == old.clock
    collect_log: list[tuple[str, VectorClock]] = []
    per_head = g.collect([x, y], base, collect_log, nodes)
    assert [len(p) for p in per_head] == [3, 3]
    # The two snapshots below each head and the base; the six branch packs.
    assert len(log) <= 5
    assert sorted(c.total() for what, c in collect_log if what == "pack") == [
        1_001,
        1_001,
        1_002,
        1_002,
        1_003,
        1_003,
    ]
    requests = len(log) + len(collect_log)
    assert requests <= 12, f"{requests} requests for a divergence of 3 + 3 snapshots"
    assert_newer_than(base, log + collect_log)


def test_a_head_that_merged_a_young_lineage_does_not_walk_the_old_history() -> None:
    """One side merged the long history with a young one created during a partition
    (from ROOT); the other side extended the long history meanwhile. Their ancestor is the
    long history's head; nothing older, and nothing of the young lineage's past, is read."""
    g = Graph(states=False)
    c = g.chain(None, "a", 300)
    young = g.chain(None, "z", 1)
    merged = g.snap([c, young])
    h1 = g.chain(c, "a", 2)
    for heads in ([h1, merged], [merged, h1]):
        log: list[tuple[str, VectorClock]] = []
        assert g.base(heads, log) == c.clock
        assert len(log) <= 6, f"{len(log)} snapshots read"
        assert_newer_than(c.clock, log)


def test_a_merged_history_branching_again_walks_from_the_merge() -> None:
    g = Graph()
    c = g.chain(None, "a", 50)
    x = g.chain(c, "a", 2)
    y = g.chain(c, "b", 2)
    m = g.snap([x, y])
    x2 = g.chain(m, "a", 2)
    y2 = g.chain(m, "b", 2)
    log: list[tuple[str, VectorClock]] = []
    assert g.base([x2, y2], log) == m.clock
    assert_newer_than(m.clock, log)
    assert len(log) <= 6


def test_a_missing_snapshot_is_a_store_error() -> None:
    g = Graph()
    c = g.chain(None, "a", 2)
    x = g.chain(c, "a", 2)
    y = g.chain(c, "b", 2)
    del g.snapshots[c.clock]
    with pytest.raises(StoreError):
        g.base([x, y])
    del g.packs[y.clock]
    with pytest.raises(StoreError):
        g.collect([x, y], c.clock)


def test_plan_merge_folds_the_ancestor_and_each_event_once_in_order() -> None:
    g = Graph()
    c = g.chain(None, "a", 3)
    # Interleave the branches' events in time, so the order of the fold shows.
    x, y = c, c
    for _ in range(3):
        x = g.snap([x], "a", 2)
        y = g.snap([y], "b", 1)
    base = both_orders(g, [x, y])
    per_head = g.collect([x, y], base)
    base_state = CODEC.decode_state(g.snapshots[base].state)
    plan = plan_merge(journals, CODEC, [x, y], base_state, base, per_head)
    branch_events = sorted(
        {(e.writer, e.n): e for p in per_head for e in p}.values(), key=replay_order
    )
    expected = fold(journal_evolve, base_state, (Noted(token(e)) for e in branch_events))
    assert CODEC.decode_state(plan.snapshot.state) == expected
    assert plan.merged_events == 9
    assert plan.snapshot.parents == tuple(sorted((x.clock, y.clock), key=VectorClock.to_bytes))
    # The same plan whichever order the heads and their events come in.
    again = plan_merge(journals, CODEC, [y, x], base_state, base, per_head[::-1])
    assert again.snapshot == plan.snapshot
    assert again.pack == plan.pack


# -- runtimes on stores -----------------------------------------------------------------------


@dataclasses.dataclass
class Replica:
    store: Store
    rt: Runtime


MakeReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def replicas() -> AsyncIterator[MakeReplica]:
    """Make a runtime on a fresh in-memory store; both are closed after the test."""
    async with AsyncExitStack() as stack:

        async def make(
            writer: str | None = None,
            kinds: Sequence[ActorType[Any, Any, Any]] = (journals,),
            url: str = MEMORY,
        ) -> Replica:
            store = await open_store(url)
            stack.push_async_callback(store.aclose)
            rt = Runtime(store, kinds, writer=writer)
            await store.register_writer(rt.writer)
            stack.push_async_callback(rt.aclose)
            return Replica(store, rt)

        yield make


async def note(r: Replica, ref: ActorRef, *tokens: str) -> None:
    await r.rt.send(ref, Note(tokens))


async def all_events(store: Store) -> list[EventRecord]:
    events: list[EventRecord] = []
    ev, sn = Cursor(), Cursor()
    while True:
        chunk = await store.read_since(ev, sn, 500)
        if not chunk.events and not chunk.snapshots:
            return events
        events.extend(chunk.events)
        ev, sn = chunk.events_to, chunk.snapshots_to


async def diverge(make: MakeReplica, kind: ActorType[Any, Any, Any]) -> tuple[Replica, Replica]:
    """Two replicas sharing a history of ``ACTOR``, then each writing its own branch."""
    a = await make("wa", [kind])
    b = await make("wb", [kind])
    for i in range(7):
        await note(a, ACTOR, f"c{i}")
    await sync(a.store, b.store)
    b.rt.forget([ACTOR])
    for i in range(6):  # interleaved in time, so the replay order matters
        await note(a, ACTOR, f"a{i}")
        if i % 3 != 2:
            await note(b, ACTOR, f"b{i}")
    assert len(await a.store.heads(ACTOR)) == 1
    assert len(await b.store.heads(ACTOR)) == 1
    return a, b


async def expected_merge(
    store: Store, heads: list[SnapshotRecord]
) -> tuple[Journal, list[EventRecord]]:
    """The ancestor's state plus every event the heads cover once, in (timestamp, id)
    order; and the loose events (covered by no head), in that order too."""
    nodes: dict[VectorClock, SnapshotRecord] = {}

    async def answer(walk: Generator[Any, Any, Any]) -> Any:
        try:
            what, clock = next(walk)
            while True:
                found: Any = (
                    await store.snapshot(ACTOR, clock)
                    if what == "snapshot"
                    else await store.pack(ACTOR, clock)
                )
                if isinstance(found, SnapshotRecord):
                    nodes[clock] = found
                what, clock = walk.send(found)
        except StopIteration as done:
            return done.value

    base: VectorClock = await answer(find_base(heads))
    base_state = journals.initial if base == ROOT else CODEC.decode_state(nodes[base].state)
    top = VectorClock.merge_all(h.clock for h in heads)
    events = sorted(await all_events(store), key=replay_order)
    branch = [e for e in events if not base.covers(e.writer, e.n) and top.covers(e.writer, e.n)]
    loose = [e for e in events if not top.covers(e.writer, e.n)]
    merged = fold(journal_evolve, base_state, (Noted(token(e)) for e in branch))
    return merged, loose


@pytest.mark.parametrize("loose", [False, True], ids=["no-loose-events", "loose-events"])
async def test_merged_state_is_the_fold_of_ancestor_and_branches(
    replicas: MakeReplica, loose: bool
) -> None:
    # With snapshot_every=1 every event is in a snapshot; with 3 some are loose.
    a, b = await diverge(replicas, journal_kind(3 if loose else 1))
    await sync(a.store, b.store)
    heads = await a.store.heads(ACTOR)
    assert len(heads) == 2
    merged, loose_events = await expected_merge(a.store, heads)
    assert bool(loose_events) == loose
    state = await a.rt.state(ACTOR, refresh=True)
    (head,) = await a.store.heads(ACTOR)
    assert CODEC.decode_state(head.state) == merged
    # Loose events (covered by no head) follow the merged state, in (timestamp, id) order.
    assert state == fold(journal_evolve, merged, (Noted(token(e)) for e in loose_events))
    tokens = [token(e) for e in await all_events(a.store)]
    assert sorted(state.tokens) == sorted(tokens)
    assert len(set(state.tokens)) == len(state.tokens)
    assert a.rt.resolutions.resolved == 1
    assert head.parents == tuple(sorted((h.clock for h in heads), key=VectorClock.to_bytes))
    assert head.clock == merged_clock(heads)


async def test_resolution_is_the_same_on_every_replica_and_record_order(
    replicas: MakeReplica,
) -> None:
    kind = journal_kind(3)
    a, b = await diverge(replicas, kind)
    c = await replicas("wc", [kind])
    d = await replicas("wd", [kind])
    # c gets a's records then b's, in small chunks; d gets them one by one, b first, mixed.
    await catch_up(a.store, c.store, limit=3)
    await catch_up(b.store, d.store, limit=2)
    await catch_up(b.store, c.store, limit=5)
    while await pull(b.store, d.store, limit=1) + await pull(a.store, d.store, limit=1):
        pass
    await sync(a.store, b.store, limit=4)
    for r in (a, b):
        r.rt.forget([ACTOR])
    results = []
    for r in (c, d, b, a):
        state = await r.rt.state(ACTOR)
        (head,) = await r.store.heads(ACTOR)
        assert r.rt.resolutions.resolved == 1
        results.append((state, head, await r.rt.clock(ACTOR)))
    first = results[0]
    for other in results[1:]:
        assert other == first
    merged = first[1]
    assert merged.parents and len(merged.parents) == 2

    # Resolving again, or re-reading, or syncing the merges, changes nothing.
    snapshots = len(await c.store.snapshots(ACTOR))
    old_heads = [await c.store.snapshot(ACTOR, p) for p in merged.parents]
    assert all(h is not None for h in old_heads)
    again = await resolve(c.store, kind, Codec(kind), [h for h in old_heads if h is not None])
    assert again.snapshot == merged
    await c.store.commit(
        CommitBatch(events=list(again.compensations), snapshots=[(again.snapshot, again.pack)])
    )
    assert len(await c.store.snapshots(ACTOR)) == snapshots
    assert await c.rt.state(ACTOR, refresh=True) == first[0]
    assert await c.store.heads(ACTOR) == [merged]
    assert c.rt.resolutions.divergences == 1  # the reload saw one; resolve() only plans
    await sync(c.store, d.store)
    assert await c.store.heads(ACTOR) == [merged]
    assert await d.store.heads(ACTOR) == [merged]
    assert len(await c.store.snapshots(ACTOR)) == snapshots


async def test_bank_merge_hook_records_one_overdraft_everywhere(replicas: MakeReplica) -> None:
    kind = dataclasses.replace(bank.accounts, snapshot_every=2)
    ref = kind("acc")
    a = await replicas("wa", [kind])
    b = await replicas("wb", [kind])
    await a.rt.send(ref, bank.Open("ann"))
    await a.rt.send(ref, bank.Deposit(100))
    await sync(a.store, b.store)
    b.rt.forget([ref])
    # A partition: each side sees 100 and withdraws, each closing a snapshot.
    await a.rt.send(ref, bank.Withdraw(70))
    await a.rt.send(ref, bank.Deposit(1))
    await b.rt.send(ref, bank.Withdraw(60))
    await b.rt.send(ref, bank.Deposit(2))
    await sync(a.store, b.store)
    assert len(await a.store.heads(ref)) == 2
    for r in (a, b):
        r.rt.forget([ref])
        state = await r.rt.state(ref)
        assert state == bank.Account(owner="ann", balance=-27, overdrafts=1)
        assert r.rt.resolutions.compensations == 1

    def overdrafts(events: list[EventRecord]) -> list[EventRecord]:
        return [e for e in events if e.type == "Overdrawn"]

    made_a = overdrafts(await all_events(a.store))
    made_b = overdrafts(await all_events(b.store))
    assert len(made_a) == len(made_b) == 1
    assert made_a == made_b  # same dot, same id, same payload
    assert msgspec.msgpack.decode(made_a[0].payload, type=bank.Overdrawn) == bank.Overdrawn(-27)
    await sync(a.store, b.store)
    for r in (a, b):
        heads = await r.store.heads(ref)
        assert len(heads) == 1
        assert len(overdrafts(await all_events(r.store))) == 1
        r.rt.forget([ref])
        assert (await r.rt.state(ref)).overdrafts == 1
    # A merge that stays above zero records nothing.
    await a.rt.send(ref, bank.Deposit(500))
    await a.rt.send(ref, bank.Deposit(1))
    await sync(a.store, b.store)
    b.rt.forget([ref])
    await a.rt.send(ref, bank.Withdraw(10))
    await a.rt.send(ref, bank.Deposit(1))
    await b.rt.send(ref, bank.Withdraw(20))
    await b.rt.send(ref, bank.Deposit(1))
    await sync(a.store, b.store)
    a.rt.forget([ref])
    assert await a.rt.state(ref) == bank.Account(owner="ann", balance=446, overdrafts=1)


async def test_resolving_reads_only_the_divergence(replicas: MakeReplica) -> None:
    kind = journal_kind(10)
    a = await replicas("wa", [kind])
    b = await replicas("wb", [kind])
    for i in range(200):
        await note(a, ACTOR, *(f"old{i}.{j}" for j in range(10)))
    assert len(await a.store.snapshots(ACTOR)) == 200
    await sync(a.store, b.store)
    b.rt.forget([ACTOR])
    for side, r in (("x", a), ("y", b)):
        for i in range(2):
            await note(r, ACTOR, *(f"{side}{i}.{j}" for j in range(10)))
        await note(r, ACTOR, f"{side}-loose1", f"{side}-loose2", f"{side}-loose3")
    await sync(a.store, b.store)
    assert len(await a.store.heads(ACTOR)) == 2

    before = dataclasses.replace(a.store.stats)
    state = await a.rt.state(ACTOR, refresh=True)
    after = a.store.stats
    assert len(state.tokens) == 2_000 + 2 * 23
    assert a.rt.resolutions.resolved == 1
    snapshots = after.snapshots_read - before.snapshots_read
    packs = after.packs_read - before.packs_read
    events = after.events_read - before.events_read
    # 2 heads + 2 branch snapshots + the base (+ its parent at most), and 4 branch packs.
    assert snapshots + packs <= 12, (snapshots, packs)
    assert events == 6  # the loose events, nothing else
    (head,) = await a.store.heads(ACTOR)
    assert head.clock.total() == 2_020 + 20 + 1  # both branches, and the merge's own entry
    assert head.clock.get(a.rt.writer) == 2_020 and head.clock.get(b.rt.writer) == 20


@pytest.mark.parametrize("stores", [1, 2], ids=["one-store", "two-synced-stores"])
async def test_stale_writers_never_multiply_siblings(replicas: MakeReplica, stores: int) -> None:
    kind = journal_kind(2)
    first = await replicas("w1", [kind])
    if stores == 1:
        rt2 = Runtime(first.store, [kind], writer="w2")
        await first.store.register_writer("w2")
        second = Replica(first.store, rt2)
    else:
        second = await replicas("w2", [kind])
    rng = random.Random(7)
    acked: list[str] = []
    most = 0
    try:
        for i in range(100):
            for who, r in (("p", first), ("q", second)):
                tokens = tuple(f"{who}{i}.{j}" for j in range(rng.choice((1, 1, 2, 3))))
                await r.rt.send(ACTOR, Note(tokens))
                acked.extend(tokens)
                if stores == 2 and rng.random() < 0.6:
                    await sync(first.store, second.store)
                if rng.random() < 0.3:
                    r.rt.forget([ACTOR])
                for s in {id(first.store): first.store, id(second.store): second.store}.values():
                    heads = await s.heads(ACTOR)
                    assert len(heads) <= 2, f"step {i}: {len(heads)} heads"
                    most = max(most, len(heads))
        if stores == 2:
            await sync(first.store, second.store)
        for r in (first, second):
            r.rt.forget([ACTOR])
            state = await r.rt.state(ACTOR)
            assert Counter(state.tokens) == Counter(acked)
            assert len(set(state.tokens)) == len(state.tokens)
        if stores == 2:
            assert await first.rt.state(ACTOR) == await second.rt.state(ACTOR)
        assert most == 2, "the writers never diverged: the test proves nothing"
        assert first.rt.resolutions.resolved + second.rt.resolutions.resolved > 10
    finally:
        if stores == 1:
            await second.rt.aclose()


# -- lost local state -----------------------------------------------------------------------


def assert_no_dot_reused(*stores_events: list[EventRecord]) -> None:
    by_dot: dict[tuple[str, str, str, int], set[bytes]] = {}
    for events in stores_events:
        for e in events:
            by_dot.setdefault((e.actor_type, e.actor_id, e.writer, e.n), set()).add(e.id)
    reused = {dot: ids for dot, ids in by_dot.items() if len(ids) > 1}
    assert not reused, f"dots given to two events: {reused}"


def sqlite_events(path: Path) -> list[EventRecord]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT actor_type, actor_id, writer, n, id, timestamp, initiated_by, type,"
            " version, payload FROM events"
        ).fetchall()
    finally:
        con.close()
    return [EventRecord(*row) for row in rows]


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def check_everything_everywhere(
    a: Store, b: Store, kind: ActorType[Any, Any, Any], acked: dict[ActorRef, list[str]]
) -> None:
    for store in (a, b):
        reader = Runtime(store, [kind])
        await store.register_writer(reader.writer)
        try:
            for ref, tokens in acked.items():
                state = await reader.state(ref)
                assert Counter(state.tokens) == Counter(tokens), (ref, state.tokens)
        finally:
            await reader.aclose()
    assert_no_dot_reused(await all_events(a), await all_events(b))


async def test_a_named_writer_on_a_wiped_store_does_not_reuse_its_dots() -> None:
    kind = journal_kind(3)
    ref = kind("x")
    b = await open_store(MEMORY)
    try:
        for generation in range(2):
            async with Runtime.open(MEMORY, [kind], writer="writer-1") as rt:
                await rt.send(ref, Note((f"g{generation}",)))
                await sync(rt.store, b)  # the second generation's sync fails here
                assert_no_dot_reused(await all_events(rt.store), await all_events(b))
    finally:
        await b.aclose()


@pytest.mark.parametrize("medium", ["file", "memory"])
async def test_a_wiped_replica_never_reuses_a_dot(tmp_path: Path, medium: str) -> None:
    kind = journal_kind(3)
    refs = [kind("x"), kind("y")]
    acked: dict[ActorRef, list[str]] = {ref: [] for ref in refs}
    path = tmp_path / "a.db"
    url = f"sqlite:///{path}" if medium == "file" else MEMORY
    b = await open_store(MEMORY)
    try:
        for generation in range(3):
            async with Runtime.open(url, [kind]) as rt:
                for i in range(5):
                    for ref in refs:
                        await rt.send(ref, Note((f"g{generation}.{i}",)))
                        acked[ref].append(f"g{generation}.{i}")
                if generation < 2:
                    await sync(rt.store, b)
                    if medium == "file":
                        await rt.aclose()
                        remove_db(path)  # the local state is gone
                else:
                    await sync(rt.store, b)
                    await sync(rt.store, b)
                    await check_everything_everywhere(rt.store, b, kind, acked)
    finally:
        await b.aclose()


async def test_a_replica_restored_from_an_old_copy_never_reuses_a_dot(tmp_path: Path) -> None:
    kind = journal_kind(3)
    refs = [kind("x"), kind("y")]
    acked: dict[ActorRef, list[str]] = {ref: [] for ref in refs}
    path = tmp_path / "a.db"
    saved = tmp_path / "a-saved.db"
    url = f"sqlite:///{path}"
    b = await open_store(f"sqlite:///{tmp_path / 'b.db'}")

    async def write(step: str, count: int, *, then_sync: bool) -> str:
        async with Runtime.open(url, [kind]) as rt:
            for i in range(count):
                for ref in refs:
                    await rt.send(ref, Note((f"{step}.{i}",)))
                    acked[ref].append(f"{step}.{i}")
            if then_sync:
                await sync(rt.store, b)
            return await rt.store.identity()

    try:
        first = await write("before-copy", 4, then_sync=False)
        shutil.copy(path, saved)
        assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
        await write("after-copy", 5, then_sync=True)
        remove_db(path)
        shutil.copy(saved, path)
        again = await write("after-restore", 7, then_sync=False)
        assert again == first  # the same store, as far as its identity goes
        lost = {e.id for e in sqlite_events(saved)}
        async with Runtime.open(url, [kind]) as rt:
            await sync(rt.store, b)
            await sync(rt.store, b)
            await check_everything_everywhere(rt.store, b, kind, acked)
        assert_no_dot_reused(sqlite_events(path), sqlite_events(tmp_path / "b.db"))
        assert lost <= {e.id for e in sqlite_events(path)}
    finally:
        await b.aclose()


def merged_clock(heads: Sequence[SnapshotRecord]) -> VectorClock:
    """A merge covers every head, plus its own entry (one, when it compensates nothing)."""
    writer, _ = merge_writer(heads)
    return VectorClock.merge_all(h.clock for h in heads).with_entry(writer, 1)
