"""Replication: a union of records that is idempotent, resumable and safe against a source
restored from an older copy; the Replicator's partitions; the heads index it maintains."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import shutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from sourcery import ActorRef, ConfigurationError, Runtime, Store, VectorClock, open_store
from sourcery._core.records import CommitBatch, Cursor, EventRecord, PackRecord, SnapshotRecord
from sourcery.examples import bank
from sourcery.replication import Replicator, catch_up, pull, sync

MEMORY = "sqlite://:memory:"
accounts = dataclasses.replace(bank.accounts, snapshot_every=3)
RECORD_TABLES = ("events", "snapshots", "packs", "heads", "actor_writers")

Records = tuple[frozenset[EventRecord], frozenset[tuple[SnapshotRecord, PackRecord]]]


async def records(store: Store) -> Records:
    """Every event and snapshot (with its pack) the store holds, whatever their order."""
    events: list[EventRecord] = []
    snapshots: list[tuple[SnapshotRecord, PackRecord]] = []
    ev, sn = Cursor(), Cursor()
    while True:
        chunk = await store.read_since(ev, sn, 500)
        if not chunk.events and not chunk.snapshots:
            return frozenset(events), frozenset(snapshots)
        events.extend(chunk.events)
        snapshots.extend(chunk.snapshots)
        ev, sn = chunk.events_to, chunk.snapshots_to


def weight(held: Records) -> int:
    """What ``pull`` counts for these records: an event is one, a snapshot and pack two."""
    return len(held[0]) + 2 * len(held[1])


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The record tables of a SQLite store, without the store's own row numbers."""
    con = sqlite3.connect(path)
    try:
        out = {}
        for table in RECORD_TABLES:
            columns = [row[1] for row in con.execute(f"PRAGMA table_info({table})")]
            keep = ", ".join(c for c in columns if c != "seq")
            out[table] = sorted(con.execute(f"SELECT {keep} FROM {table}").fetchall())
        return out
    finally:
        con.close()


def maximal(snapshots: list[SnapshotRecord]) -> set[VectorClock]:
    return {s.clock for s in snapshots if not any(o.clock > s.clock for o in snapshots)}


@dataclasses.dataclass
class Replica:
    store: Store
    rt: Runtime


MakeReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def replicas() -> AsyncIterator[MakeReplica]:
    """A runtime on a fresh store (in memory unless a URL is given), closed after the test."""
    async with AsyncExitStack() as stack:

        async def make(url: str = MEMORY, writer: str | None = None) -> Replica:
            store = await open_store(url)
            stack.push_async_callback(store.aclose)
            rt = Runtime(store, [accounts], writer=writer)
            await store.register_writer(rt.writer)
            stack.push_async_callback(rt.aclose)
            return Replica(store, rt)

        yield make


async def deposit(r: Replica, ref: ActorRef, times: int, amount: int = 1) -> None:
    for _ in range(times):
        await r.rt.send(ref, bank.Deposit(amount))


async def write_with(url: str, refs: list[ActorRef], times: int, amount: int = 1) -> None:
    """Open the store at ``url`` with a new writer, deposit, close."""
    async with Runtime.open(url, [accounts]) as rt:
        for ref in refs:
            for _ in range(times):
                await rt.send(ref, bank.Deposit(amount))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.01)


# -- what a pull copies -------------------------------------------------------------------------


async def test_pull_copies_only_what_the_destination_lacks(replicas: MakeReplica) -> None:
    a = await replicas(writer="wa")
    b = await replicas(writer="wb")
    refs = [accounts("x"), accounts("y")]
    for ref in refs:
        await deposit(a, ref, 7)
    held = await records(a.store)
    first = await sync(a.store, b.store)
    assert first.a_to_b == weight(held)
    assert await records(b.store) == held
    assert await records(a.store) == held  # what came back was there already
    again = await sync(a.store, b.store)
    assert (again.a_to_b, again.b_to_a) == (0, 0)

    # New records on one side: the pull reads and copies just those.
    await deposit(a, refs[0], 4)
    new_a = weight(await records(a.store)) - weight(held)
    assert new_a == 4 + 2 * 1  # 7 + 4 events: one more snapshot of x
    read_before = a.store.stats.events_read
    assert await pull(a.store, b.store) == new_a
    assert a.store.stats.events_read - read_before == 4
    assert await records(a.store) == await records(b.store)
    assert await pull(a.store, b.store) == 0
    again = await sync(a.store, b.store)
    assert again.a_to_b == 0
    again = await sync(a.store, b.store)
    assert (again.a_to_b, again.b_to_a) == (0, 0)


async def test_a_second_sync_copies_nothing_after_both_sides_wrote(
    replicas: MakeReplica,
) -> None:
    a = await replicas(writer="wa")
    b = await replicas(writer="wb")
    await deposit(a, accounts("x"), 2)
    await deposit(b, accounts("y"), 2)
    await sync(a.store, b.store)
    assert await records(a.store) == await records(b.store)
    held = await records(a.store)
    again = await sync(a.store, b.store)
    assert await records(a.store) == await records(b.store) == held  # nothing changed ...
    assert (again.a_to_b, again.b_to_a) == (0, 0)  # ... and a's copies of b's stay at a


async def test_a_sync_sends_back_nothing_it_just_received(replicas: MakeReplica) -> None:
    a = await replicas(writer="wa")
    b = await replicas(writer="wb")
    await deposit(a, accounts("x"), 2)
    await deposit(b, accounts("y"), 2)
    own = []
    for replica in (a, b):
        empty = await open_store(MEMORY)
        try:
            own.append(await catch_up(replica.store, empty))
        finally:
            await empty.aclose()
    report = await sync(a.store, b.store)
    assert [report.a_to_b, report.b_to_a] == own  # each record crossed once, no echo


async def test_a_lost_checkpoint_copies_everything_again_and_changes_nothing(
    tmp_path: Path, replicas: MakeReplica
) -> None:
    a = await replicas(f"sqlite:///{tmp_path / 'a.db'}")
    for ref in (accounts("x"), accounts("y"), accounts("z")):
        await deposit(a, ref, 5)
    b_path = tmp_path / "b.db"
    b = await open_store(f"sqlite:///{b_path}")
    try:
        total = await catch_up(a.store, b, limit=4)
        assert total == weight(await records(a.store))
    finally:
        await b.aclose()
    before = dump(b_path)
    con = sqlite3.connect(b_path)
    with con:
        assert con.execute("DELETE FROM checkpoints").rowcount == 1
    con.close()
    b = await open_store(f"sqlite:///{b_path}")
    try:
        assert await catch_up(a.store, b, limit=4) == 0  # read again, all held already
        assert await catch_up(a.store, b, limit=4) == 0
    finally:
        await b.aclose()
    assert dump(b_path) == before


async def test_an_interrupted_copy_resumes_where_it_stopped(tmp_path: Path) -> None:
    a_url = f"sqlite:///{tmp_path / 'a.db'}"
    b_url = f"sqlite:///{tmp_path / 'b.db'}"
    refs = [accounts(f"r{i}") for i in range(4)]
    await write_with(a_url, refs, 30)  # 120 events, 40 snapshots
    a = await open_store(a_url)
    try:
        held = await records(a)
        b = await open_store(b_url)
        try:
            copied = [await pull(a, b, limit=7) for _ in range(3)]
            assert all(0 < c <= 7 + 2 * 7 for c in copied)
            partial = await records(b)
            assert partial[0] < held[0] and partial[1] < held[1]
            # Heads of a partial copy are those of what arrived.
            for ref in refs:
                assert {h.clock for h in await b.heads(ref)} == maximal(await b.snapshots(ref))
        finally:
            await b.aclose()  # just stop; nothing but the checkpoint remembers
        b = await open_store(b_url)
        try:
            rest = await catch_up(a, b, limit=7)
            assert sum(copied) + rest == weight(held)
            assert await records(b) == held
            for ref in refs:
                assert await b.heads(ref) == await a.heads(ref)
        finally:
            await b.aclose()
    finally:
        await a.aclose()


@pytest.mark.parametrize("rewritten", [2, 20], ids=["fewer-records", "more-records"])
async def test_a_source_restored_from_an_older_copy_is_copied_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rewritten: int
) -> None:
    a_path = tmp_path / "a.db"
    a_url = f"sqlite:///{a_path}"
    refs = [accounts("x")]
    await write_with(a_url, refs, 6)  # 6 events, 2 snapshots
    shutil.copy(a_path, tmp_path / "a-old.db")
    await write_with(a_url, refs, 12)  # now 18 events, 6 snapshots
    b = await open_store(MEMORY)
    try:
        a = await open_store(a_url)
        identity = await a.identity()
        await catch_up(a, b, limit=5)
        await a.aclose()
        for suffix in ("-wal", "-shm"):
            Path(f"{a_path}{suffix}").unlink(missing_ok=True)
        shutil.copy(tmp_path / "a-old.db", a_path)
        # Other records now sit where the lost ones were (or nothing does).
        await write_with(a_url, refs, rewritten, amount=1000)
        a = await open_store(a_url)
        try:
            assert await a.identity() == identity
            checkpoint = await b.checkpoint(identity)
            chunk = await a.read_since(checkpoint.events, checkpoint.snapshots, 5)
            assert chunk.restarted
            with caplog.at_level(logging.WARNING, logger="sourcery._engine.replication"):
                await catch_up(a, b, limit=5)
            assert "no longer matches its checkpoint" in caplog.text
            mine, theirs = await records(a), await records(b)
            assert mine[0] <= theirs[0] and mine[1] <= theirs[1], "new records were skipped"
            assert await catch_up(a, b, limit=5) == 0
            checkpoint = await b.checkpoint(identity)
            assert not (await a.read_since(checkpoint.events, checkpoint.snapshots, 5)).restarted
            # The restored source takes back what it lost from the other replica.
            await catch_up(b, a)
            assert await records(a) == await records(b)
        finally:
            await a.aclose()
    finally:
        await b.aclose()


async def test_a_store_cannot_replicate_to_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    await write_with(url, [accounts("x")], 2)
    one = await open_store(url)
    other = await open_store(url)  # another handle on the same store: the same identity
    try:
        for source, destination in ((one, one), (one, other)):
            with pytest.raises(ConfigurationError):
                await pull(source, destination)
            with pytest.raises(ConfigurationError):
                await sync(source, destination)
            with pytest.raises(ConfigurationError):
                Replicator([source])
        fresh = await open_store(MEMORY)
        try:
            with pytest.raises(ConfigurationError):
                await pull(one, fresh, limit=0)
            assert await records(fresh) == (frozenset(), frozenset())
        finally:
            await fresh.aclose()
    finally:
        await other.aclose()
        await one.aclose()


# -- notifications and the heads index -----------------------------------------------------


async def test_touched_is_told_which_actors_were_copied(replicas: MakeReplica) -> None:
    a = await replicas(writer="wa")
    b = await replicas(writer="wb")
    written = [accounts("x"), accounts("y"), accounts("z")]
    for i, ref in enumerate(written):
        await deposit(a, ref, i + 1)
    seen: list[set[ActorRef]] = []
    await catch_up(a.store, b.store, limit=2, touched=seen.append)
    assert set().union(*seen) == set(written)
    assert all(s for s in seen)
    seen.clear()
    assert await pull(a.store, b.store, touched=seen.append) == 0
    assert seen == []

    # With the runtime's forget, a cached actor shows what arrived without a refresh.
    ref = written[2]
    assert await b.rt.state(ref) == bank.Account(balance=3)
    await deposit(a, ref, 4, amount=10)
    await deposit(a, written[0], 1)
    await catch_up(a.store, b.store, touched=b.rt.forget)
    assert await b.rt.state(ref) == bank.Account(balance=43)


def snapshot_graph() -> list[tuple[SnapshotRecord, PackRecord]]:
    """A small history with a fork, a merge, and two heads at the end."""
    actor = ActorRef("account", "h")

    def make(clock: dict[str, int], *parents: VectorClock) -> tuple[SnapshotRecord, PackRecord]:
        vc = VectorClock(clock)
        return (
            SnapshotRecord(actor, vc, tuple(sorted(parents, key=VectorClock.to_bytes)), b"s", 1),
            PackRecord(actor, vc, ()),
        )

    s1 = make({"a": 1})
    s2 = make({"a": 2}, s1[0].clock)
    s3 = make({"a": 1, "b": 1}, s1[0].clock)
    m = make({"a": 2, "b": 1}, s2[0].clock, s3[0].clock)
    s4 = make({"a": 3, "b": 1}, m[0].clock)
    s5 = make({"a": 2, "b": 2}, m[0].clock)
    s6 = make({"c": 1})
    return [s1, s2, s3, m, s4, s5, s6]


async def test_heads_are_right_after_snapshots_arrive_out_of_order() -> None:
    graph = snapshot_graph()
    actor = graph[0][0].actor
    expected = maximal([s for s, _ in graph])
    assert len(expected) == 3
    rng = random.Random(3)
    orders = [list(p) for p in itertools.islice(itertools.permutations(graph), 0, 5040, 97)]
    orders += [rng.sample(graph, len(graph)) for _ in range(10)]
    for order in orders:
        source = await open_store(MEMORY)
        destination = await open_store(MEMORY)
        try:
            for record in order:  # child before parent, as they come
                await source.commit(CommitBatch(snapshots=[record]))
            assert {h.clock for h in await source.heads(actor)} == expected
            while await pull(source, destination, limit=1):
                held = await destination.snapshots(actor)
                assert {h.clock for h in await destination.heads(actor)} == maximal(held)
            assert {h.clock for h in await destination.heads(actor)} == expected
        finally:
            await destination.aclose()
            await source.aclose()


async def test_heads_are_right_when_two_sources_interleave(replicas: MakeReplica) -> None:
    a = await replicas(writer="wa")
    b = await replicas(writer="wb")
    ref = accounts("x")
    await deposit(a, ref, 6)
    await sync(a.store, b.store)
    b.rt.forget([ref])
    await deposit(a, ref, 7)
    await deposit(b, ref, 5)
    d = await open_store(MEMORY)
    try:
        while await pull(b.store, d, limit=1) + await pull(a.store, d, limit=1):
            held = await d.snapshots(ref)
            assert {h.clock for h in await d.heads(ref)} == maximal(held)
        assert len(await d.heads(ref)) == 2
    finally:
        await d.aclose()


# -- the Replicator -------------------------------------------------------------------------


async def test_replicator_cut_and_restore(replicas: MakeReplica) -> None:
    a = await replicas(writer="wa")
    b = await replicas(writer="wb")
    ref = accounts("x")
    interval = 0.01

    async def converged() -> bool:
        sa, sb = await a.rt.state(ref), await b.rt.state(ref)
        ca, cb = await a.rt.clock(ref), await b.rt.clock(ref)
        return sa == sb and ca == cb and sa.balance == expected

    expected = 0
    async with Replicator(
        [a.store, b.store], interval=interval, touched={0: a.rt.forget, 1: b.rt.forget}
    ) as link:
        await a.rt.send(ref, bank.Deposit(100))
        expected = 100
        await eventually(converged)

        link.cut()
        assert not link.connected

        # Let a round under way when the link was cut finish, then nothing may move.
        async def parked() -> bool:
            return link.parked

        await eventually(parked)
        rounds, copied = link.rounds, link.records_copied
        held_a, held_b = await records(a.store), await records(b.store)
        await deposit(a, ref, 4, amount=5)
        await deposit(b, ref, 4, amount=7)
        assert link.parked  # waiting for restore(): no round can start
        assert (link.rounds, link.records_copied) == (rounds, copied)
        assert await records(b.store) != await records(a.store)
        now_a, now_b = await records(a.store), await records(b.store)
        assert not (now_a[0] - held_a[0]) & now_b[0], "a's new events reached b"
        assert not (now_b[0] - held_b[0]) & now_a[0], "b's new events reached a"
        assert (await b.rt.state(ref)).balance == 128  # b's own writes only

        link.restore()
        assert link.connected
        expected = 100 + 20 + 28
        await eventually(converged)
        await eventually(lambda: _same_records(a.store, b.store))
        assert link.records_copied > copied
    assert len(await a.store.heads(ref)) == 1
    assert await a.store.heads(ref) == await b.store.heads(ref)


async def _same_records(a: Store, b: Store) -> bool:
    return await records(a) == await records(b)
