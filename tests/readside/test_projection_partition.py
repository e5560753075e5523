"""Projections on replicas cut apart, written on both sides, then healed: the state
projection equals ``Runtime.state`` for every actor, the event projection holds every
acknowledged event (and each merge's compensations) exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from sourcery import (
    ActorRef,
    ActorType,
    Event,
    Projection,
    ProjectionTransaction,
    Runtime,
    project,
)
from sourcery._core.records import BEGINNING, CommitBatch
from sourcery.examples.bank import (
    Deposit,
    Deposited,
    Open,
    Opened,
    Overdrawn,
    Withdrew,
    accounts,
)
from sourcery.examples.bank_views import balances, ledger
from sourcery.replication import sync

from .views import all_events, expected_ledger, ledger_view, random_command, rows

NAMES = [f"p{i}" for i in range(8)]
SMALL_SNAPSHOTS = dataclasses.replace(accounts, snapshot_every=3)
"""The same accounts, snapshotting often, so that both sides' snapshots become heads."""

log = Projection("log", [accounts])


@log.setup
async def _table(tx: ProjectionTransaction) -> None:
    await tx.execute("CREATE TABLE IF NOT EXISTS seen (event_id text NOT NULL, kind text NOT NULL)")


@log.on(Opened, Deposited, Withdrew, Overdrawn)
async def _seen(event: Event[Any], tx: ProjectionTransaction) -> None:
    await tx.execute("INSERT INTO seen (event_id, kind) VALUES (?, ?)", (str(event.id), event.type))


async def one_side(runtime: Runtime, seed: int) -> list[int]:
    """Commands on one replica while it is cut off; the ids of the events acknowledged."""
    rng = random.Random(seed)
    acknowledged: list[int] = []
    for _ in range(60):
        outcome = await random_command(runtime, rng, NAMES, deposits=0.5, most=90)
        if outcome is not None:
            acknowledged.extend(e.id for e in outcome.events)
    return acknowledged


async def check_states(url: str) -> int:
    """The balances table equals what a runtime on the replica reads; compensations made."""
    table = {
        a: (o, int(b), int(d))
        for a, o, b, d in await rows(
            url, "SELECT account, owner, balance, overdrafts FROM balances"
        )
    }
    assert sorted(table) == NAMES
    async with Runtime.open(url, [SMALL_SNAPSHOTS]) as reader:
        for name in NAMES:
            state = await reader.state(accounts(name))
            assert table[name] == (state.owner, state.balance, state.overdrafts), name
        return reader.resolutions.divergences


async def test_a_partition_heals_into_the_projections(make_url: Callable[[], str]) -> None:
    urls = [make_url(), make_url()]
    async with (
        Runtime.open(urls[0], [SMALL_SNAPSHOTS]) as a,
        Runtime.open(urls[1], [SMALL_SNAPSHOTS]) as b,
    ):
        for name in NAMES:
            await a.send(accounts(name), Open(name))
            await a.send(accounts(name), Deposit(100))
        stores = [a.store, b.store]
        await sync(a.store, b.store)
        b.forget(accounts(n) for n in NAMES)
        runners = [project(u, p, batch=5) for u in urls for p in (ledger, balances, log)]
        for runner in runners:
            await runner.start()
        try:
            # Cut: each side writes alone, while the projections follow it.
            mine = await asyncio.gather(one_side(a, 1), one_side(b, 2))
            # Heal: the records cross in small chunks, so events land out of replay order.
            await sync(stores[0], stores[1], limit=4)
            for runner in runners:
                await runner.caught_up(timeout=60)
            divergences = [await check_states(u) for u in urls]  # heals, adds compensations
            assert sum(divergences) > 0
            for runner in runners:
                await runner.caught_up(timeout=60)
            for url in urls:
                await check_states(url)
                events = await all_events(url)
                assert await ledger_view(url) == expected_ledger(events)
                seen = Counter(e for (e, _) in await rows(url, "SELECT event_id, kind FROM seen"))
                assert set(seen.values()) == {1}  # nothing twice
                stored = {str(int.from_bytes(r.id, "big")) for r in events}
                assert set(seen) == stored  # every stored event, compensations included
                assert {str(i) for ids in mine for i in ids} <= set(seen)
        finally:
            for runner in runners:
                await runner.aclose()
    overdrawn = [r for u in urls for r in await all_events(u) if r.type == "Overdrawn"]
    print(f"divergences healed {divergences}, compensations {len(overdrawn)}")


class Add(msgspec.Struct, frozen=True):
    tag: str


class Added(msgspec.Struct, frozen=True):
    tag: str


class Trail(msgspec.Struct, frozen=True):
    tags: tuple[str, ...] = ()


trails: ActorType[Trail, Add, Added] = ActorType(
    name="trail",
    initial=Trail(),
    decide=lambda state, command: [Added(command.tag)],
    evolve=lambda state, event: Trail((*state.tags, event.tag)),  # order matters
    commands=[Add],
    events=[Added],
    snapshot_every=2,
)
trail_view = Projection("trails", [trails])


@trail_view.setup
async def _trails_table(tx: ProjectionTransaction) -> None:
    await tx.execute("CREATE TABLE IF NOT EXISTS trails (id text PRIMARY KEY, tags text NOT NULL)")


@trail_view.on_state(trails)
async def _trail(actor: ActorRef[Trail, Any, Any], state: Trail, tx: ProjectionTransaction) -> None:
    await tx.execute(
        "INSERT INTO trails (id, tags) VALUES (?, ?)"
        " ON CONFLICT (id) DO UPDATE SET tags = excluded.tags",
        (actor.id, ",".join(state.tags)),
    )


async def test_a_snapshot_arriving_after_its_events_updates_the_state(
    make_url: Callable[[], str],
) -> None:
    """Heads change without a new event: the state projection follows the snapshots."""
    urls = [make_url(), make_url()]
    actor = trails("x")
    async with (
        Runtime.open(urls[0], [trails]) as a,
        Runtime.open(urls[1], [trails]) as b,
        project(urls[0], trail_view) as running,
    ):
        for n in (1, 2):  # interleaved in time; each side snapshots its two events
            await a.send(actor, Add(f"a{n}"))
            await asyncio.sleep(0.003)
            await b.send(actor, Add(f"b{n}"))
            await asyncio.sleep(0.003)
        chunk = await b.store.read_since(BEGINNING, BEGINNING, 100)
        assert chunk.snapshots
        await a.store.commit(CommitBatch(events=list(chunk.events)))
        await running.caught_up(timeout=30)
        before = await rows(urls[0], "SELECT tags FROM trails")
        assert before == [("a1,a2,b1,b2",)]  # A's head, then B's events as loose ones
        await a.store.commit(CommitBatch(snapshots=list(chunk.snapshots)))
        await running.caught_up(timeout=30)
        async with Runtime.open(urls[0], [trails]) as reader:
            state = await reader.state(actor)
        assert state.tags == ("a1", "b1", "a2", "b2")  # two heads, merged in replay order
        assert await rows(urls[0], "SELECT tags FROM trails") == [(",".join(state.tags),)]
