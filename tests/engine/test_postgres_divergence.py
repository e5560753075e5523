"""Divergence on PostgreSQL: concurrent writers on one database, replicas in separate ones."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence

import msgspec
import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, postgres_down

from sourcery import ActorRef, ActorType, Runtime, VectorClock
from sourcery._stores import Store, open_store
from sourcery.replication import sync

pytestmark = pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down()))


class Note(msgspec.Struct, frozen=True):
    token: str


class Noted(msgspec.Struct, frozen=True):
    token: str


class Journal(msgspec.Struct, frozen=True):
    tokens: tuple[str, ...] = ()


def decide(state: Journal, command: Note) -> Sequence[Noted]:
    return [Noted(command.token)]


def evolve(state: Journal, event: Noted) -> Journal:
    return Journal((*state.tokens, event.token))


journal = ActorType(
    name="journal",
    initial=Journal(),
    decide=decide,
    evolve=evolve,
    commands=[Note],
    events=[Noted],
    snapshot_every=3,
)
ACTORS = [journal(f"j{i}") for i in range(12)]


def pg_url() -> str:
    return f"{POSTGRES}?schema={TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}&pool_size=3"


async def write(rt: Runtime, prefix: str, count: int, seed: int) -> dict[ActorRef, list[str]]:
    rng = random.Random(seed)
    acked: dict[ActorRef, list[str]] = {ref: [] for ref in ACTORS}

    async def one(i: int) -> None:
        ref = rng.choice(ACTORS)
        token = f"{prefix}-{i}"
        await rt.send(ref, Note(token))
        acked[ref].append(token)

    for start in range(0, count, 20):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 20))))
    return acked


def merge(*parts: dict[ActorRef, list[str]]) -> dict[ActorRef, list[str]]:
    out: dict[ActorRef, list[str]] = {ref: [] for ref in ACTORS}
    for part in parts:
        for ref, tokens in part.items():
            out[ref].extend(tokens)
    return out


async def check(store: Store, rt: Runtime, acked: dict[ActorRef, list[str]]) -> None:
    for ref in ACTORS:
        state = await rt.state(ref, refresh=True)
        assert sorted(state.tokens) == sorted(acked[ref]), ref  # each exactly once
        assert len(await store.heads(ref)) <= 1


async def test_two_writers_on_one_database_heal() -> None:
    url = pg_url()
    async with Runtime.open(url, [journal]) as a, Runtime.open(url, [journal]) as b:
        # Isolation broken on purpose: both process the same actors at the same time.
        got = await asyncio.gather(write(a, "a", 120, 1), write(b, "b", 120, 2))
        siblings = [len(await a.store.heads(ref)) for ref in ACTORS]
        assert max(siblings) >= 2, "the writers never diverged; the test proves nothing"
        acked = merge(*got)
    async with Runtime.open(url, [journal]) as reader:
        await check(reader.store, reader, acked)
        assert reader.resolutions.resolved >= 1


async def test_replicas_in_separate_databases_converge() -> None:
    a_url, b_url = pg_url(), pg_url()
    async with Runtime.open(a_url, [journal]) as a, Runtime.open(b_url, [journal]) as b:
        first = await write(a, "before", 30, 3)
        await sync(a.store, b.store, touched_a=a.forget, touched_b=b.forget)
        # Partition: both sides write, nothing is copied.
        during = await asyncio.gather(write(a, "a", 60, 4), write(b, "b", 60, 5))
        await sync(a.store, b.store, touched_a=a.forget, touched_b=b.forget)
        acked = merge(first, *during)
        await check(a.store, a, acked)
        await check(b.store, b, acked)
        await sync(a.store, b.store, touched_a=a.forget, touched_b=b.forget)
        for ref in ACTORS:
            assert await a.state(ref, refresh=True) == await b.state(ref, refresh=True)
            assert await a.clock(ref) == await b.clock(ref)


async def test_sqlite_and_postgres_replicas_exchange_records() -> None:
    pg = pg_url()
    async with Runtime.open(pg, [journal]) as a, Runtime.open("sqlite://:memory:", [journal]) as b:
        acked = merge(*await asyncio.gather(write(a, "pg", 40, 6), write(b, "lite", 40, 7)))
        await sync(a.store, b.store, touched_a=a.forget, touched_b=b.forget)
        await check(a.store, a, acked)
        await check(b.store, b, acked)
        await sync(a.store, b.store, touched_a=a.forget, touched_b=b.forget)
        for ref in ACTORS:
            assert await a.state(ref, refresh=True) == await b.state(ref, refresh=True)
            assert await a.clock(ref) == await b.clock(ref)


async def test_postgres_replication_never_skips_a_late_commit() -> None:
    """A transaction that started first but commits last is still copied."""
    import asyncpg

    url = pg_url()
    source = await open_store(url)
    destination = await open_store("sqlite://:memory:")
    try:
        async with Runtime.open(url, [journal]) as rt:
            await rt.send(ACTORS[0], Note("first"))
        schema = url.split("schema=")[1].split("&")[0]
        late = await asyncpg.connect(POSTGRES)
        try:
            await late.execute(f"SET search_path TO {schema}")
            tx = late.transaction()
            await tx.start()
            await late.execute(
                "INSERT INTO events (actor_type, actor_id, writer, n, id, timestamp,"
                " initiated_by, type, version, payload) VALUES ('journal', 'late', 'slow', 1,"
                " $1, 1, 'm', 'Noted', 1, $2)",
                b"\x00" * 16,
                msgspec.msgpack.encode(Noted("late")),
            )
            async with Runtime.open(url, [journal]) as rt:
                await rt.send(ACTORS[1], Note("second"))  # commits while the other is open
            await sync(source, destination)
            copied = await destination.loose_events(journal("late"), journal_clock())
            assert copied == []  # not visible yet, and not skipped either:
            await tx.commit()
        finally:
            await late.close()
        await sync(source, destination)
        copied = await destination.loose_events(journal("late"), journal_clock())
        assert [e.writer for e in copied] == ["slow"]
        second = await destination.loose_events(ACTORS[1], journal_clock())
        assert len(second) == 1
    finally:
        await source.aclose()
        await destination.aclose()


def journal_clock() -> VectorClock:
    return VectorClock()
