"""Workers as real processes on a real broker and a shared PostgreSQL store.

Three ``sourcery worker`` processes consume one deployment's command queues while clients
send 20,000 commands to 1,000 actors and wait for each confirmation; one worker is killed
with SIGKILL twice. Every confirmed command must then be applied exactly once, in the order
its client sent it, and without a fault no actor may ever get a second head. With isolation
broken on purpose (no single active consumer) two workers write the same actors at once:
siblings appear, and the next reader heals them.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from private_broker import PrivateBroker
from services import (
    AMQP,
    POSTGRES,
    TEST_SCHEMA_PREFIX,
    amqp_down,
    amqp_prefix,
    amqp_url,
    postgres_down,
)
from worker_app import Append, Log, logs

from sourcery import ActorRef, Runtime
from sourcery._core.errors import BrokerError
from sourcery._core.records import SnapshotRecord
from sourcery._messaging.client import Client
from sourcery._stores import Store, open_store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
    pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down())),
    pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down())),
]

TESTS_DIR = Path(__file__).resolve().parents[1]
GUARD = 240.0
"""A guard against a hung run, not a speed check."""


def postgres_url() -> tuple[str, str]:
    schema = f"{TEST_SCHEMA_PREFIX}w{uuid.uuid4().hex[:12]}"
    return f"{POSTGRES}?schema={schema}", schema


class Workers:
    """``sourcery worker worker_app:logs`` processes, each logging to a file of its own."""

    def __init__(self, tmp: Path, store: str, broker: str) -> None:
        self.tmp = tmp
        self.store = store
        self.broker = broker
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed = 0
        self.victims: list[str] = []

    def start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p
        )
        log = (self.tmp / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sourcery",
                "worker",
                "worker_app:logs",
                "--store",
                self.store,
                "--broker",
                self.broker,
                "--name",
                f"w{len(self.procs)}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill_busiest(self) -> None:
        """SIGKILL the live worker that used the most CPU: the one holding queues."""
        victim = max(self.alive(), key=_cpu_ticks)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        self.killed += 1
        self.victims.append(f"w{self.procs.index(victim)}")

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {i} (exit {p.poll()}):\n" + (self.tmp / f"worker-{i}.log").read_text()
            for i, p in enumerate(self.procs)
        )

    def stop(self) -> None:
        for p in self.alive():
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def _cpu_ticks(proc: subprocess.Popen[bytes]) -> int:
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])  # utime + stime


@contextmanager
def workers(tmp: Path, store: str, broker: str, count: int) -> Iterator[Workers]:
    group = Workers(tmp, store, broker)
    for _ in range(count):
        group.start()
    try:
        yield group
    finally:
        group.stop()


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.aclose()


async def event_count(store_url: str, schema: str) -> int:
    import asyncpg

    con = await asyncpg.connect(POSTGRES)
    try:
        value = await con.fetchval(f'SELECT count(*) FROM "{schema}".events')
    except asyncpg.exceptions.UndefinedTableError:
        return 0  # no worker has created the schema yet (they start slowly on a busy machine)
    finally:
        await con.close()
    return int(value)


async def writer_names(schema: str) -> set[str]:
    import asyncpg

    con = await asyncpg.connect(POSTGRES)
    try:
        rows = await con.fetch(
            f"SELECT DISTINCT split_part(writer, '.', 1) FROM \"{schema}\".events"
        )
    finally:
        await con.close()
    return {row[0] for row in rows}


async def wait_for_events(store_url: str, schema: str, expected: int, group: Workers) -> None:
    deadline = time.monotonic() + GUARD
    while (count := await event_count(store_url, schema)) < expected:
        assert time.monotonic() < deadline, (
            f"{count} of {expected} events after {GUARD}s\n{group.logs()}"
        )
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # room for a command applied twice to show


def linear(snapshots: list[SnapshotRecord]) -> bool:
    """Whether the snapshots form one chain: never two heads at any time."""
    parents = [s.parents for s in snapshots]
    if any(len(p) > 1 for p in parents):
        return False
    named = [p[0] for p in parents if p]
    roots = sum(1 for p in parents if not p)
    return roots <= 1 and len(set(named)) == len(named)


async def send_all(
    broker: str, actors: int, per_actor: int, clients: int, stop_after: dict[int, asyncio.Event]
) -> dict[str, list[int]]:
    """Each actor gets ``per_actor`` commands in sequence, each sent only once the previous
    one was confirmed; returns the confirmed sequence numbers per actor. ``stop_after[k]``
    is set once ``k`` commands were confirmed."""
    confirmed: dict[str, list[int]] = {f"a{i}": [] for i in range(actors)}
    done = 0

    async def one_actor(client: Client, client_name: str, actor: str) -> None:
        nonlocal done
        for seq in range(per_actor):
            await client.send(
                logs(actor), Append(client_name, seq), message_id=f"{actor}:{client_name}:{seq}"
            )
            confirmed[actor].append(seq)
            done += 1
            for k, event in stop_after.items():
                if done >= k:
                    event.set()

    async def one_client(k: int) -> None:
        async with Client.open(broker) as client:
            await asyncio.gather(
                *(one_actor(client, f"c{k}", f"a{i}") for i in range(k, actors, clients))
            )

    await asyncio.gather(*(one_client(k) for k in range(clients)))
    return confirmed


async def check_applied(store_url: str, confirmed: dict[str, list[int]], *, chains: bool) -> None:
    """Every confirmed command applied exactly once, in its client's order."""
    async with opened(store_url) as store:
        rt = Runtime(store, [logs])
        async with rt:
            for actor, seqs in confirmed.items():
                state: Log = await rt.state(logs(actor))
                got = [seq for _, seq in state.entries]
                assert got == seqs, f"{actor}: applied {got}, confirmed {seqs}"
                if chains:
                    snapshots = await store.snapshots(ActorRef("log", actor))
                    assert snapshots, f"{actor} never snapshotted"
                    assert linear(snapshots), f"{actor} got two heads"


async def test_three_workers_apply_every_confirmed_command_once_through_two_kills(
    tmp_path: Path,
) -> None:
    store_url, schema = postgres_url()
    broker = amqp_url(queues=8)
    actors, per_actor = 1000, 20
    total = actors * per_actor
    first, second = asyncio.Event(), asyncio.Event()
    with workers(tmp_path, store_url, broker, 3) as group:
        sending = asyncio.create_task(
            send_all(broker, actors, per_actor, 4, {total // 3: first, 2 * total // 3: second})
        )
        for moment in (first, second):
            await asyncio.wait_for(moment.wait(), GUARD)
            await asyncio.to_thread(group.kill_busiest)
            group.start()  # a replacement, so that three keep running
        confirmed = await asyncio.wait_for(sending, GUARD)
        await wait_for_events(store_url, schema, total, group)
        assert group.killed == 2
    assert sum(len(s) for s in confirmed.values()) == total
    assert await event_count(store_url, schema) == total
    # The workers killed were busy: they had written events (writer ids are `name.<random>`).
    assert set(group.victims) <= await writer_names(schema), group.victims
    # Killed workers leave no concurrent writer behind: the history stays a chain.
    await check_applied(store_url, confirmed, chains=True)


async def test_without_faults_no_actor_ever_gets_two_heads(tmp_path: Path) -> None:
    store_url, schema = postgres_url()
    broker = amqp_url(queues=8)
    actors, per_actor = 300, 12
    with workers(tmp_path, store_url, broker, 3) as group:
        confirmed = await asyncio.wait_for(send_all(broker, actors, per_actor, 3, {}), GUARD)
        await wait_for_events(store_url, schema, actors * per_actor, group)
    await check_applied(store_url, confirmed, chains=True)


async def test_broken_isolation_makes_siblings_that_the_next_reader_heals(
    tmp_path: Path,
) -> None:
    store_url, schema = postgres_url()
    # One queue, no single active consumer: both workers take commands of the same actors.
    prefix = amqp_prefix()
    broker = amqp_url(prefix, queues=1, single_active=0, prefetch=50)
    actors, per_actor = 10, 60
    with workers(tmp_path, store_url, broker, 2) as group:
        await consuming(f"{prefix}.commands.0", 2)  # both, before the first command
        async with Client.open(broker) as client:
            await asyncio.gather(
                *(
                    client.send(logs(f"a{i}"), Append("c", seq), message_id=f"a{i}:{seq}")
                    for seq in range(per_actor)
                    for i in range(actors)
                )
            )
        await wait_for_events(store_url, schema, actors * per_actor, group)
    refs = [ActorRef("log", f"a{i}") for i in range(actors)]
    async with opened(store_url) as store:
        forked = [ref for ref in refs if len(await store.heads(ref)) > 1]
    assert forked, "two consumers on one queue should have written concurrent branches"
    async with opened(store_url) as store:
        rt = Runtime(store, [logs])
        async with rt:
            for ref in refs:
                state: Log = await rt.state(ref)
                assert sorted(seq for _, seq in state.entries) == list(range(per_actor)), ref
            for ref in forked:
                assert len(await store.heads(ref)) == 1, f"{ref} was not healed"
    async with opened(store_url) as store:
        rt = Runtime(store, [logs])
        async with rt:  # a second reader sees the same merged state
            for ref in refs:
                state = await rt.state(ref)
                assert len(state.entries) == per_actor


FAULT_ACTORS = 50
FAULT_AFTER = 300
"""Commands confirmed before a broker fault, and again after it before the client stops."""


async def consuming(queue: str, count: int) -> None:
    """Wait until ``count`` consumers take deliveries from ``queue`` (the broker says so)."""
    import aio_pika
    from aio_pika.exceptions import ChannelNotFoundEntity

    deadline = time.monotonic() + GUARD
    connection = await aio_pika.connect(AMQP, timeout=10)
    async with connection:
        while True:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                result = declared.declaration_result
                if (result.consumer_count or 0) >= count:
                    return
            except ChannelNotFoundEntity:
                pass  # no worker has declared it yet
            finally:
                if not channel.is_closed:
                    await channel.close()
            assert time.monotonic() < deadline, f"fewer than {count} consumers on {queue}"
            await asyncio.sleep(0.05)


async def connected(group: Workers) -> None:
    """Wait until every worker has connected to the broker (it says so in its log)."""
    deadline = time.monotonic() + GUARD
    files = [group.tmp / f"worker-{i}.log" for i in range(len(group.procs))]
    while not all(" running " in f.read_text() for f in files):
        assert group.alive() == group.procs, group.logs()
        assert time.monotonic() < deadline, group.logs()
        await asyncio.sleep(0.1)


async def run_through_a_broker_fault(
    tmp_path: Path, broker: str, fault: Callable[[Workers], Awaitable[None]]
) -> None:
    """Two workers on the private broker and a client that sends each of 50 actors its
    commands in order (each once the previous one was confirmed), and goes on while
    ``fault(workers)`` hits the broker once 300 commands were confirmed; it stops 300
    confirmed commands after the fault. Every command must then be confirmed, applied
    exactly once and in order, and both workers still be running."""
    store_url, schema = postgres_url()
    confirmed: dict[str, list[int]] = {f"a{i}": [] for i in range(FAULT_ACTORS)}
    counts = {"before": 0, "during": 0, "after": 0, "refused": 0}
    phase = "before"
    done = asyncio.Event()

    async def one_actor(client: Client, actor: str) -> None:
        seq = 0
        while not done.is_set():
            while True:  # until confirmed, even once done: a refused copy may be queued
                try:
                    await client.send(logs(actor), Append("c", seq), message_id=f"{actor}:{seq}")
                    break
                except BrokerError:
                    counts["refused"] += 1
                    await asyncio.sleep(0.2)  # the same id again: applied at most once
            confirmed[actor].append(seq)
            counts[phase] += 1
            seq += 1
            await asyncio.sleep(random.uniform(0.05, 0.15))

    async def confirmed_at_least(when: str, count: int, group: Workers) -> None:
        deadline = time.monotonic() + GUARD
        while counts[when] < count:
            assert time.monotonic() < deadline, f"{counts} commands confirmed\n{group.logs()}"
            await asyncio.sleep(0.1)

    async def inject(group: Workers) -> None:
        nonlocal phase
        await confirmed_at_least("before", FAULT_AFTER, group)
        phase = "during"
        await fault(group)
        phase = "after"
        await confirmed_at_least("after", FAULT_AFTER, group)  # the client is back
        done.set()

    with workers(tmp_path, store_url, broker, 2) as group:
        await connected(group)  # one that starts while the broker is down gives up
        async with Client.open(broker) as client:
            await asyncio.wait_for(
                asyncio.gather(
                    inject(group), *(one_actor(client, f"a{i}") for i in range(FAULT_ACTORS))
                ),
                GUARD,
            )
        total = sum(len(seqs) for seqs in confirmed.values())
        await wait_for_events(store_url, schema, total, group)  # the workers are back
        assert all(p.poll() is None for p in group.procs), group.logs()
    assert await event_count(store_url, schema) == total
    await check_applied(store_url, confirmed, chains=False)


async def test_the_broker_dropping_every_connection_loses_no_confirmed_command(
    tmp_path: Path, private_broker: PrivateBroker
) -> None:
    async def drop(group: Workers) -> None:  # every connection, the client's and the workers'
        await asyncio.to_thread(private_broker.drop_connections)

    await run_through_a_broker_fault(tmp_path, private_broker.url(queues=4), drop)


async def test_a_broker_restart_loses_no_confirmed_command(
    tmp_path: Path, private_broker: PrivateBroker
) -> None:
    prefix = amqp_prefix()
    queues = 4
    waiting: list[int] = []

    async def restart(group: Workers) -> None:
        # Paused workers let confirmed commands pile up in the queues: at the restart only
        # the broker's disk holds them. The workers go on while it is down.
        paused = group.alive()

        def resume() -> None:
            for p in paused:
                p.send_signal(signal.SIGCONT)

        for p in paused:
            p.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + GUARD
            names = [f"{prefix}.commands.{i}" for i in range(queues)]
            while not waiting or waiting[-1] < 100:
                assert time.monotonic() < deadline, f"only {waiting} commands queued"
                await asyncio.sleep(0.05)
                waiting.append(await private_broker.ready(*names))
            # Every process of the node ends, then a new one starts.
            await asyncio.to_thread(private_broker.restart, resume)
        finally:
            resume()

    restarts = private_broker.restarts
    broker = private_broker.url(prefix=prefix, queues=queues)
    await run_through_a_broker_fault(tmp_path, broker, restart)
    assert private_broker.restarts == restarts + 1
    # Confirmed commands waited in the queues when the node stopped: all were applied.
    assert waiting[-1] >= 100
