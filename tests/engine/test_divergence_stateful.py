"""Partitions, writer restarts and heals between 2-3 replicas keep DESIGN's invariants 2-4.

Each replica is an in-memory SQLite store with a runtime on it. The machine sends commands
anywhere, cuts and restores links, syncs (fully or one small pull at a time), restarts
writers and reads. Every event carries a token the test made up, and the actor's state is
the list of tokens it applied, so at the end, once every link is healed and the replicas
are quiet, the test can check that:

* every acknowledged token is in every replica's state exactly once, and nothing else is
  (invariant 2);
* every replica reports the same state and vector clock for every actor (invariant 3);
* two fresh stores that received the same records in other orders resolve them to the same
  state and clock, and resolving again, syncing again and re-reading change nothing
  (invariant 4), leaving one head per actor everywhere.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec
import pytest
from hypothesis import event as note_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule
from partition_actor import Append, Appended, Log, duplicates, log_kind

from sourcery import ActorRef, ActorType, Runtime, Store, VectorClock, open_store
from sourcery._core.records import CommitBatch, Cursor, EventRecord, PackRecord, SnapshotRecord
from sourcery.replication import catch_up, pull, sync

MEMORY = "sqlite://:memory:"
ACTORS = 3


T = TypeVar("T")
P = ParamSpec("P")
M = TypeVar("M", bound="DivergenceMachine")


@dataclass
class Replica:
    store: Store
    runtime: Runtime
    generation: int = 0
    messages: dict[str, tuple[int, tuple[str, ...]]] | None = None
    """Message ids sent here (with an id) -> (actor, tokens)."""


def step(fn: Callable[Concatenate[M, P], None]) -> Callable[Concatenate[M, P], None]:
    """Mark the machine broken while a rule runs, so teardown skips the final check after
    a failing rule (and reports that rule's error, not a follow-up one)."""

    @functools.wraps(fn)
    def wrapper(self: M, /, *args: P.args, **kwargs: P.kwargs) -> None:
        self.healthy = False
        fn(self, *args, **kwargs)
        self.healthy = True

    return wrapper


async def all_records(
    store: Store,
) -> tuple[list[EventRecord], list[tuple[SnapshotRecord, PackRecord]]]:
    """Every event and snapshot (with its pack) the store holds, in the order it wrote them."""
    events: list[EventRecord] = []
    snapshots: list[tuple[SnapshotRecord, PackRecord]] = []
    ev, sn = Cursor(), Cursor()
    while True:
        chunk = await store.read_since(ev, sn, 500)
        if not chunk.events and not chunk.snapshots:
            return events, snapshots
        events.extend(chunk.events)
        snapshots.extend(chunk.snapshots)
        ev, sn = chunk.events_to, chunk.snapshots_to


def record_set(
    records: tuple[list[EventRecord], list[tuple[SnapshotRecord, PackRecord]]],
) -> tuple[frozenset[EventRecord], frozenset[tuple[SnapshotRecord, PackRecord]]]:
    """The records as sets, whole: two stores that made the same merged snapshot on their
    own must have made the same bytes."""
    events, snapshots = records
    return frozenset(events), frozenset(snapshots)


def differences(
    a: tuple[frozenset[EventRecord], frozenset[tuple[SnapshotRecord, PackRecord]]],
    b: tuple[frozenset[EventRecord], frozenset[tuple[SnapshotRecord, PackRecord]]],
) -> str:
    """What one store holds and the other does not, for an assertion message."""
    lines = [f"event only in first: {e}" for e in sorted(a[0] - b[0], key=repr)]
    lines += [f"event only in second: {e}" for e in sorted(b[0] - a[0], key=repr)]
    lines += [f"snapshot only in first: {s}" for s in sorted(a[1] - b[1], key=repr)]
    lines += [f"snapshot only in second: {s}" for s in sorted(b[1] - a[1], key=repr)]
    return "\n".join(lines)


class DivergenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.healthy = True
        self.replicas: list[Replica] = []
        self.extra_stores: list[Store] = []
        self.cut_links: set[frozenset[int]] = set()
        self.kind: ActorType[Log, Append, Any] = log_kind(3)
        self.refs: list[ActorRef] = []
        self.acked: list[list[str]] = [[] for _ in range(ACTORS)]
        """Per actor, every token whose send returned, wherever it was sent."""
        self.local: list[list[set[str]]] = []
        """Per replica and actor, the tokens acknowledged by that replica's store."""
        self.tokens = 0
        self.in_flight: set[str] = set()
        self.messages = 0
        self.divergences = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    # -- set-up --------------------------------------------------------------------------

    async def _new_runtime(self, store: Store, writer: str) -> Runtime:
        runtime = Runtime(store, [self.kind], writer=writer)
        await store.register_writer(runtime.writer)
        return runtime

    async def _replica(self, r: int) -> Replica:
        store = await open_store(MEMORY)
        try:
            runtime = await self._new_runtime(store, f"r{r}-g0")
        except BaseException:
            await store.aclose()
            raise
        return Replica(store, runtime, messages={})

    @initialize(
        replicas=st.integers(2, 3),
        actors=st.integers(2, ACTORS),
        snapshot_every=st.integers(2, 5),
        merge_hook=st.booleans(),
    )
    @step
    def start(self, replicas: int, actors: int, snapshot_every: int, merge_hook: bool) -> None:
        self.kind = log_kind(snapshot_every, merge_hook=merge_hook)
        self.refs = [self.kind(f"k{k}") for k in range(actors)]
        for r in range(replicas):
            self.replicas.append(self.run(self._replica(r)))
            self.local.append([set() for _ in range(ACTORS)])

    def _pair(self, r: int, offset: int) -> tuple[int, int]:
        n = len(self.replicas)
        r %= n
        return r, (r + 1 + offset % (n - 1)) % n

    def _linked(self, r: int, s: int) -> bool:
        return frozenset((r, s)) not in self.cut_links

    # -- rules ---------------------------------------------------------------------------

    @rule(
        r=st.integers(0, 2),
        k=st.integers(0, ACTORS - 1),
        count=st.integers(1, 3),
        with_id=st.booleans(),
    )
    @step
    def send(self, r: int, k: int, count: int, with_id: bool) -> None:
        self.run(self._send(r, k, count, with_id))

    async def _send(self, r: int, k: int, count: int, with_id: bool) -> None:
        r %= len(self.replicas)
        k %= len(self.refs)
        replica = self.replicas[r]
        tokens = tuple(f"t{self.tokens + i}" for i in range(count))
        self.tokens += count
        message_id = None
        if with_id:
            message_id = f"m{self.messages}"
            self.messages += 1
        # Sent but not yet acknowledged: another replica may see it (through a sync that
        # runs meanwhile) before this send returns.
        self.in_flight.update(tokens)
        out = await replica.runtime.send(self.refs[k], Append(tokens), message_id=message_id)
        self.in_flight.difference_update(tokens)
        assert not out.duplicate
        assert tuple(e.payload.token for e in out.events) == tokens
        self.acked[k].extend(tokens)
        self.local[r][k].update(tokens)
        if message_id is not None:
            assert replica.messages is not None
            replica.messages[message_id] = (k, tokens)
        self.check_view(r, k, out.state)

    @rule(r=st.integers(0, 2), k=st.integers(0, ACTORS - 1), count=st.integers(2, 6))
    @step
    def burst(self, r: int, k: int, count: int) -> None:
        """Several one-event commands in a row: enough to cross the snapshot threshold."""
        self.run(self._sends(r, k, count))

    async def _sends(self, r: int, k: int, count: int) -> None:
        for _ in range(count):
            await self._send(r, k, 1, False)

    @rule(
        r=st.integers(0, 2),
        offset=st.integers(0, 1),
        k=st.integers(0, ACTORS - 1),
        count=st.integers(1, 4),
    )
    @step
    def send_while_syncing(self, r: int, offset: int, k: int, count: int) -> None:
        """Both ends of a link write to one actor while records arrive (and the actor is
        forgotten) under their feet."""
        r, s = self._pair(r, offset)
        a, b = self.replicas[r], self.replicas[s]
        jobs: list[Coroutine[Any, Any, object]] = [
            self._sends(r, k, count),
            self._sends(s, k, count),
        ]
        if self._linked(r, s):
            jobs.append(
                sync(a.store, b.store, touched_a=a.runtime.forget, touched_b=b.runtime.forget)
            )

        async def together() -> None:
            await asyncio.gather(*jobs)

        self.run(together())

    @precondition(lambda self: any(rep.messages for rep in self.replicas))
    @rule(data=st.data())
    @step
    def redeliver(self, data: st.DataObject) -> None:
        """A message sent again to the replica that processed it writes nothing."""
        r = data.draw(st.sampled_from([i for i, rep in enumerate(self.replicas) if rep.messages]))
        replica = self.replicas[r]
        assert replica.messages is not None
        message_id = data.draw(st.sampled_from(sorted(replica.messages)))
        k, tokens = replica.messages[message_id]
        out = self.run(replica.runtime.send(self.refs[k], Append(tokens), message_id=message_id))
        assert out.duplicate
        assert tuple(e.payload.token for e in out.events) == tokens

    @rule(r=st.integers(0, 2), offset=st.integers(0, 1))
    @step
    def cut(self, r: int, offset: int) -> None:
        self.cut_links.add(frozenset(self._pair(r, offset)))

    @precondition(lambda self: bool(self.cut_links))
    @rule(r=st.integers(0, 2), offset=st.integers(0, 1))
    @step
    def restore(self, r: int, offset: int) -> None:
        self.cut_links.discard(frozenset(self._pair(r, offset)))

    @rule(r=st.integers(0, 2), offset=st.integers(0, 1))
    @step
    def sync(self, r: int, offset: int) -> None:
        r, s = self._pair(r, offset)
        if not self._linked(r, s):
            return
        a, b = self.replicas[r], self.replicas[s]
        self.run(sync(a.store, b.store, touched_a=a.runtime.forget, touched_b=b.runtime.forget))

    @rule(r=st.integers(0, 2), offset=st.integers(0, 1), limit=st.integers(1, 3))
    @step
    def pull_some(self, r: int, offset: int, limit: int) -> None:
        """One small chunk from s to r: a copy interrupted half-way."""
        r, s = self._pair(r, offset)
        if not self._linked(r, s):
            return
        dest, source = self.replicas[r], self.replicas[s]
        self.run(pull(source.store, dest.store, limit=limit, touched=dest.runtime.forget))

    @rule(r=st.integers(0, 2), close=st.booleans())
    @step
    def restart_writer(self, r: int, close: bool) -> None:
        """The writer process dies (or stops cleanly); a new one takes over the store."""
        replica = self.replicas[r % len(self.replicas)]
        if close:
            self.run(replica.runtime.aclose())
        self.divergences += replica.runtime.resolutions.divergences
        replica.generation += 1
        replica.runtime = self.run(
            self._new_runtime(replica.store, f"r{r % len(self.replicas)}-g{replica.generation}")
        )

    @rule(r=st.integers(0, 2), k=st.integers(0, ACTORS - 1), refresh=st.booleans())
    @step
    def read(self, r: int, k: int, refresh: bool) -> None:
        r %= len(self.replicas)
        k %= len(self.refs)
        state = self.run(self.replicas[r].runtime.state(self.refs[k], refresh=refresh))
        self.check_view(r, k, state)

    # -- checks --------------------------------------------------------------------------

    def check_view(self, r: int, k: int, state: Log) -> None:
        """What one replica sees at any time: its own acknowledged tokens, each once, and
        nothing that was never acknowledged."""
        assert not duplicates(state.tokens), (r, k, state)
        seen = set(state.tokens)
        assert self.local[r][k] <= seen, ("lost", r, k, sorted(self.local[r][k] - seen))
        unacked = seen - set(self.acked[k]) - self.in_flight
        assert not unacked, ("unacknowledged", r, k, sorted(unacked))

    async def _sync_all(self) -> None:
        """Sync every pair (links healed) until a whole round moves no record."""
        for _ in range(10):
            moved = 0
            for r, a in enumerate(self.replicas):
                for b in self.replicas[r + 1 :]:
                    report = await sync(
                        a.store,
                        b.store,
                        touched_a=a.runtime.forget,
                        touched_b=b.runtime.forget,
                    )
                    moved += report.records
            if not moved:
                return
        raise AssertionError("replication did not quiesce")

    async def _read_all(self, runtime: Runtime) -> list[tuple[Log, VectorClock]]:
        return [(await runtime.state(ref), await runtime.clock(ref)) for ref in self.refs]

    async def _fresh_store(self) -> Store:
        store = await open_store(MEMORY)
        self.extra_stores.append(store)
        return store

    async def final_check(self) -> None:
        self.cut_links.clear()
        await self._sync_all()

        # Every replica holds the same records now (compared whole at the end).
        records = [await all_records(rep.store) for rep in self.replicas]
        sets = [record_set(rec) for rec in records]
        for r, other in enumerate(sets):
            assert other[0] == sets[0][0], f"replicas 0 and {r} hold different events"
            keys = {(s.actor, s.clock) for s, _ in other[1]}
            assert keys == {(s.actor, s.clock) for s, _ in sets[0][1]}, (0, r)

        # Before anyone resolves: the same records, arrived in other orders, elsewhere.
        pulled = await self._fresh_store()
        for rep in reversed(self.replicas):
            await catch_up(rep.store, pulled)
        shuffled = await self._fresh_store()
        events, snapshots = records[-1]
        for snapshot, pack in reversed(snapshots):
            await shuffled.commit(CommitBatch(snapshots=[(snapshot, pack)]))
        for event in reversed(events):
            await shuffled.commit(CommitBatch(events=[event]))
        most = max([len(await pulled.heads(ref)) for ref in self.refs])
        note_event(f"heads of the most diverged actor before healing: {min(most, 3)}")
        during = self.divergences + sum(r.runtime.resolutions.divergences for r in self.replicas)
        note_event(f"resolutions during the run: {min(during, 5)}")
        elsewhere = [
            await self._read_all(await self._new_runtime(store, f"fresh-{i}"))
            for i, store in enumerate((pulled, shuffled))
        ]

        # Every replica resolves on its own.
        views = [await self._read_all(rep.runtime) for rep in self.replicas]
        for r, view in enumerate(views):
            for k, (state, clock) in enumerate(view):
                assert not duplicates(state.tokens), (r, k, duplicates(state.tokens))
                assert sorted(state.tokens) == sorted(self.acked[k]), (r, k, state, clock)
        for r, view in enumerate(views):
            assert view == views[0], f"replica {r} disagrees with replica 0"
        for i, view in enumerate(elsewhere):
            assert view == views[0], f"fresh store {i} resolved differently"

        # One key, one record: the same snapshots everywhere, byte for byte.
        for r, other in enumerate(sets):
            assert other == sets[0], f"replicas 0 and {r} differ:\n{differences(sets[0], other)}"

        # Resolving again, syncing again and re-reading change nothing.
        await self._sync_all()
        for r, rep in enumerate(self.replicas):
            assert await self._read_all(rep.runtime) == views[0], r
            for ref in self.refs:
                heads = await rep.store.heads(ref)
                has_snapshots = bool(await rep.store.snapshots(ref))
                assert len(heads) == int(has_snapshots), (r, ref, heads)
            fresh = await self._new_runtime(rep.store, f"r{r}-check")
            assert await self._read_all(fresh) == views[0], r
        await self._sync_all()
        sets = [record_set(await all_records(rep.store)) for rep in self.replicas]
        for r, other in enumerate(sets):
            assert other == sets[0], (
                f"resolved differently at 0 and {r}:\n{differences(sets[0], other)}"
            )

    def teardown(self) -> None:
        try:
            if self.healthy and self.replicas:
                self.run(self.final_check())
        finally:
            try:
                for store in [rep.store for rep in self.replicas] + self.extra_stores:
                    self.run(store.aclose())
            finally:
                self.loop.close()


TestDivergence = DivergenceMachine.TestCase
TestDivergence.settings = settings(max_examples=100, stateful_step_count=80, deadline=None)
TestDivergence.pytestmark = [pytest.mark.slow]  # type: ignore[attr-defined]


async def test_redelivery_to_another_replica_after_sync_is_not_applied_twice() -> None:
    kind = log_kind(3)
    ref = kind("k")
    stores = [await open_store(MEMORY), await open_store(MEMORY)]
    try:
        a, b = (Runtime(store, [kind], writer=w) for store, w in zip(stores, "ab", strict=True))
        for rt in (a, b):
            await rt.store.register_writer(rt.writer)
        await a.send(ref, Append(("t1",)), message_id="m1")
        await sync(stores[0], stores[1], touched_a=a.forget, touched_b=b.forget)
        assert (await b.state(ref)).tokens == ("t1",)
        out = await b.send(ref, Append(("t1",)), message_id="m1")
        assert out.duplicate
        assert out.state.tokens == ("t1",)
    finally:
        for store in stores:
            await store.aclose()


def _event(writer: str, n: int, timestamp: int) -> EventRecord:
    token = f"{writer}{n}"
    return EventRecord(
        "log",
        "k",
        writer,
        n,
        ((timestamp << 64) | n).to_bytes(16, "big"),
        timestamp,
        f"message-{token}",
        "Appended",
        1,
        msgspec.msgpack.encode(Appended(token)),
    )


def _snapshot(
    clock: dict[str, int], parents: list[dict[str, int]], pack: list[EventRecord], tokens: str
) -> tuple[SnapshotRecord, PackRecord]:
    vc = VectorClock(clock)
    snapshot = SnapshotRecord(
        actor=ActorRef("log", "k"),
        clock=vc,
        parents=tuple(VectorClock(p) for p in parents),
        state=msgspec.msgpack.encode(Log(tokens=tuple(tokens.split()))),
        timestamp=max(e.timestamp for e in pack),
    )
    return snapshot, PackRecord(ActorRef("log", "k"), vc, tuple(pack))


async def test_merged_state_does_not_depend_on_the_merge_path() -> None:
    """Writer a made A {a:1} and P1 {a:2}; b loaded A and made P2 {a:1, b:1}; c never saw
    either and made P3 {c:1}, with an earlier wall clock than theirs. Replica 0 gets P1 and
    P3 first and merges them, then gets P2; replica 1 gets all three at once."""
    kind = log_kind(100, merge_hook=False)
    ref = kind("k")
    a1, a2, b1, c1 = _event("a", 1, 10), _event("a", 2, 11), _event("b", 1, 12), _event("c", 1, 5)
    base = _snapshot({"a": 1}, [], [a1], "a1")
    p1 = _snapshot({"a": 2}, [{"a": 1}], [a2], "a1 a2")
    p2 = _snapshot({"a": 1, "b": 1}, [{"a": 1}], [b1], "a1 b1")
    p3 = _snapshot({"c": 1}, [], [c1], "c1")
    stores = [await open_store(MEMORY), await open_store(MEMORY)]
    try:
        r0, r1 = (Runtime(store, [kind], writer=w) for store, w in zip(stores, "xy", strict=True))
        for rt in (r0, r1):
            await rt.store.register_writer(rt.writer)
        await stores[0].commit(CommitBatch(events=[a1, a2, c1], snapshots=[base, p1, p3]))
        assert (await r0.state(ref)).tokens == ("c1", "a1", "a2")  # merged P1 and P3
        await stores[0].commit(CommitBatch(events=[b1], snapshots=[p2]))
        r0.forget([ref])
        await stores[1].commit(CommitBatch(events=[a1, a2, b1, c1], snapshots=[base, p1, p2, p3]))
        # Each replica resolves what it has; then they exchange everything.
        for _ in range(3):  # reading may resolve again; let those merges travel too
            views = [(await rt.state(ref), await rt.clock(ref)) for rt in (r0, r1)]
            await sync(stores[0], stores[1], touched_a=r0.forget, touched_b=r1.forget)
        views = [(await rt.state(ref), await rt.clock(ref)) for rt in (r0, r1)]
        assert sorted(views[0][0].tokens) == ["a1", "a2", "b1", "c1"]
        # Both replicas hold every record: they must agree on state and clock, for good.
        assert views[0] == views[1]
        assert [len(await store.heads(ref)) for store in stores] == [1, 1]
    finally:
        for store in stores:
            await store.aclose()
