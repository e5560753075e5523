"""Catch-up subscriptions: stored events, then live ones, with no gap and no duplicate at
the seam, resumable from any position, and never skipping a late-committing transaction."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import msgspec
import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, amqp_down, amqp_url, postgres_down

from sourcery import Runtime
from sourcery._core.ids import id_to_bytes, new_id
from sourcery._core.records import BEGINNING, CommitBatch, Cursor, EventRecord
from sourcery._messaging.publishing import Publisher
from sourcery._messaging.subscriptions import CatchUpSubscription, subscribe
from sourcery._messaging.topics import Delivery, EventBus, open_bus
from sourcery._stores import Store, open_store
from sourcery.examples.bank import Deposit, Deposited, Open, accounts

ENVIRONMENTS: dict[str, tuple[Callable[[Path], str], Callable[[], str]]] = {
    "sqlite+memory": (
        lambda tmp: f"sqlite:///{tmp / 's.db'}",
        lambda: f"memory://{uuid.uuid4().hex}",
    ),
    "postgres+amqp": (
        lambda _tmp: f"{POSTGRES}?schema={TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:16]}",
        amqp_url,
    ),
}


@pytest.fixture(params=sorted(ENVIRONMENTS))
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "postgres+amqp":
        reason = postgres_down() or amqp_down()
        if reason:
            pytest.skip(reason)
    store, bus = ENVIRONMENTS[request.param]
    return store(tmp_path), bus()


@pytest.fixture
async def bus(urls: tuple[str, str]) -> AsyncIterator[EventBus]:
    opened = await open_bus(urls[1])
    try:
        yield opened
    finally:
        await opened.aclose()


async def take(sub: CatchUpSubscription, n: int, timeout: float = 15.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.append(await anext(sub))
    return got


async def deposit_all(rt: Runtime, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await rt.send(accounts(f"a{i % 3}"), Deposit(amount=i + 1))


async def test_the_seam_has_no_gap_and_no_duplicate(urls: tuple[str, str], bus: EventBus) -> None:
    async with Runtime.open(urls[0], [accounts]) as rt:
        await deposit_all(rt, 10)
        publisher = Publisher(rt.store, bus)
        async with subscribe(rt.store, bus, ["account.*"]) as sub:
            first = await anext(sub)  # bound, and reading the store
            # Published after the binding: all ten are in the live queue too.
            assert await publisher.publish_pending() == 10
            await deposit_all(rt, 5, start=10)
            assert await publisher.publish_pending() == 5
            rest = await take(sub, 14)  # the store may already hold the five new ones
            waiting = asyncio.create_task(anext(sub))
            async with asyncio.timeout(10):
                while not sub.live:
                    await asyncio.sleep(0.01)
            await deposit_all(rt, 1, start=15)
            assert await publisher.publish_pending() == 1
            rest.append(await asyncio.wait_for(waiting, 10))
            # Every live copy of what the store gave was dropped; the last came live.
            assert sub.live and sub.dropped == 15
        stored = await rt.store.read_events(BEGINNING, 100)
    assert [(d.position, d.record) for d in [first, *rest]] == stored


async def test_concurrent_publishers_only_duplicate_and_subscribers_drop_them(
    urls: tuple[str, str], bus: EventBus
) -> None:
    async with Runtime.open(urls[0], [accounts]) as rt:
        async with (
            subscribe(rt.store, bus, ["#"]) as sub,
            Publisher.running(rt.store, bus, interval=0.01, batch=3),
            Publisher.running(rt.store, bus, interval=0.01, batch=7),
        ):
            writing = asyncio.create_task(deposit_all(rt, 60))
            got = await take(sub, 60)
            await writing
        stored = await rt.store.read_events(BEGINNING, 1000)
    assert [(d.position, d.record) for d in got] == stored


async def test_resuming_from_a_position_gives_exactly_the_rest(
    urls: tuple[str, str], bus: EventBus
) -> None:
    async with Runtime.open(urls[0], [accounts]) as rt:
        await rt.send(accounts("x"), Open(owner="o"))
        await deposit_all(rt, 9)
        async with subscribe(rt.store, bus, ["account.Deposited"], types=[accounts]) as sub:
            head = await take(sub, 4)
        async with subscribe(
            rt.store, bus, ["account.Deposited"], after=head[-1].position, types=[accounts]
        ) as sub:
            tail = await take(sub, 5)
            assert not sub.live or sub.dropped == 0
    assert [d.event.payload for d in head + tail if d.event] == [Deposited(i + 1) for i in range(9)]
    assert all(d.type == "Deposited" for d in head + tail)


# -- PostgreSQL: late commits are delayed, never skipped --------------------------------------


def late_event(n: int) -> EventRecord:
    return EventRecord(
        actor_type="account",
        actor_id="late",
        writer="held-open",
        n=n,
        id=id_to_bytes(new_id()),
        timestamp=1,
        initiated_by=f"late-{n}",
        type="Deposited",
        version=1,
        payload=b"\x81\xa6amount\x01",
    )


@pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down()))
async def test_concurrent_writers_and_a_transaction_held_open_never_make_a_reader_skip() -> None:
    url = f"{POSTGRES}?schema={TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:16]}"
    bus = await open_bus(f"memory://{uuid.uuid4().hex}")
    store: Store = await open_store(url)
    schema = url.rsplit("=", 1)[1]
    held = await asyncpg.connect(POSTGRES, server_settings={"search_path": schema})
    runtimes = [await Runtime.open(url, [accounts], writer=f"w{i}") for i in range(4)]
    try:
        # A transaction takes its id and a sequence number first, and commits last.
        tx = held.transaction()
        await tx.start()
        await held.execute(
            "INSERT INTO events (actor_type, actor_id, writer, n, id, timestamp, initiated_by,"
            " type, version, payload) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
            *msgspec.structs.astuple(late_event(1)),
        )
        async with (
            subscribe(store, bus, ["#"]) as sub,
            Publisher.running(store, bus, interval=0.01),
        ):
            # Four runtimes (own pools) commit concurrently; none waits for the held one.
            async with asyncio.timeout(20):
                await asyncio.gather(
                    *(deposit_all(rt, 25, start=100 * i) for i, rt in enumerate(runtimes))
                )
            committed = await store.read_events(BEGINNING, 1000)
            assert committed == []  # visible, but not yet safe to pass: the late one is open
            reader = asyncio.create_task(take(sub, 101))
            await asyncio.sleep(0.2)
            assert not reader.done()
            await tx.commit()
            got = await reader
        stored = await store.read_events(BEGINNING, 1000)
    finally:
        for rt in runtimes:
            await rt.aclose()
        await held.close()
        await store.aclose()
        await bus.aclose()
    assert len(stored) == 101
    assert [(d.position, d.record) for d in got] == stored
    assert got[0].record.writer == "held-open"  # it took its position first
    positions = [d.position.seq for d in got]
    assert positions == sorted(set(positions))


@pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down()))
async def test_a_reader_polling_while_many_connections_commit_gets_every_event_once() -> None:
    url = f"{POSTGRES}?schema={TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:16]}"
    runtimes = [await Runtime.open(url, [accounts], writer=f"w{i}") for i in range(6)]
    reader_store = await open_store(url)
    read: list[tuple[Cursor, EventRecord]] = []
    try:
        done = asyncio.Event()

        async def poll() -> None:
            after = BEGINNING
            while True:
                finished = done.is_set()
                page = await reader_store.read_events(after, 17)
                read.extend(page)
                if page:
                    after = page[-1][0]
                elif finished:
                    return

        reading = asyncio.create_task(poll())
        await asyncio.gather(
            *(deposit_all(rt, 40, start=1000 * i) for i, rt in enumerate(runtimes))
        )
        done.set()
        async with asyncio.timeout(20):
            await reading
        stored = await reader_store.read_events(BEGINNING, 10_000)
    finally:
        for rt in runtimes:
            await rt.aclose()
        await reader_store.aclose()
    assert len(stored) == 240
    assert read == stored


async def test_a_checkpoint_commit_alone_is_enough_to_resume(tmp_path: Path) -> None:
    from sourcery._core.records import Checkpoint

    bus = await open_bus(f"memory://{uuid.uuid4().hex}")
    async with bus, Runtime.open(f"sqlite:///{tmp_path / 's.db'}", [accounts]) as rt:
        await deposit_all(rt, 6)
        async with subscribe(rt.store, bus, ["#"]) as sub:
            seen = await take(sub, 3)
        await rt.store.commit(CommitBatch(checkpoint=Checkpoint("sub:x", events=seen[-1].position)))
        saved = (await rt.store.checkpoint("sub:x")).events
        async with subscribe(rt.store, bus, ["#"], after=saved) as sub:
            rest = await take(sub, 3)
        stored = await rt.store.read_events(BEGINNING, 100)
    assert [(d.position, d.record) for d in seen + rest] == stored


# -- a subscriber process killed with SIGKILL and started again --------------------------------

TESTS_DIR = Path(__file__).resolve().parents[1]


def start_subscriber(tmp: Path, store_url: str, bus_url: str, run: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    with (tmp / f"err{run}.txt").open("wb") as err:
        return subprocess.Popen(
            [
                sys.executable,
                str(TESTS_DIR / "events_subscriber.py"),
                store_url,
                bus_url,
                str(tmp / "out.txt"),
                str(tmp / "checkpoint.txt"),
                str(run),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )


def lines(tmp: Path) -> list[list[str]]:
    path = tmp / "out.txt"
    if not path.exists():
        return []
    return [row for line in path.read_text().splitlines() if len(row := line.split()) == 5]


async def wait_for_lines(tmp: Path, proc: subprocess.Popen[bytes], count: int) -> None:
    async with asyncio.timeout(30):
        while len({row[1] for row in lines(tmp)}) < count:
            if proc.poll() is not None:
                err = (tmp / "err1.txt").read_text() + (tmp / "err2.txt").read_text()
                pytest.fail(f"the subscriber exited ({proc.returncode}): {err[-3000:]}")
            await asyncio.sleep(0.02)


@pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down()))
async def test_a_subscriber_killed_and_resumed_sees_every_event_in_store_order(
    tmp_path: Path,
) -> None:
    store_url, bus_url = f"sqlite:///{tmp_path / 's.db'}", amqp_url()
    total = 300
    (tmp_path / "err2.txt").write_text("")  # read if the first run fails
    async with await open_bus(bus_url) as bus, Runtime.open(store_url, [accounts]) as rt:
        await deposit_all(rt, 100)
        async with Publisher.running(rt.store, bus, interval=0.01) as publisher:
            first = start_subscriber(tmp_path, store_url, bus_url, 1)
            try:
                writing = asyncio.create_task(deposit_all(rt, total - 100, start=100))
                await wait_for_lines(tmp_path, first, 150)
                os.kill(first.pid, signal.SIGKILL)
                assert first.wait(10) == -signal.SIGKILL
            finally:
                if first.poll() is None:
                    first.kill()
            killed_at = len(lines(tmp_path))
            second = start_subscriber(tmp_path, store_url, bus_url, 2)
            try:
                await writing
                publisher.wake()
                await wait_for_lines(tmp_path, second, total)
            finally:
                second.kill()
                second.wait(10)
        stored = await rt.store.read_events(BEGINNING, 10_000)
    rows = lines(tmp_path)
    assert 150 <= killed_at < total
    assert {int(r[1]) for r in rows} == {p.seq for p, _ in stored}  # every event, at least once
    for run in ("1", "2"):
        positions = [int(r[1]) for r in rows if r[0] == run]
        assert positions == sorted(set(positions))  # store order, no duplicate within a run
        per_actor: dict[str, list[int]] = {}
        for r in rows:
            if r[0] == run:
                per_actor.setdefault(r[2], []).append(int(r[4]))
        assert all(ns == sorted(ns) for ns in per_actor.values())
    # The second run resumed at the checkpoint: at most the line being saved came again.
    first_run = [int(r[1]) for r in rows if r[0] == "1"]
    second_run = [int(r[1]) for r in rows if r[0] == "2"]
    following = min(p.seq for p, _ in stored if p.seq > first_run[-1])
    assert second_run[0] in (first_run[-1], following)
