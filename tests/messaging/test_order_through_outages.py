"""Each actor's order, kept through store and broker restarts (DESIGN invariant 7).

Three ``sourcery worker`` processes work while one sender per actor sends its commands in
sequence (each once the previous one was confirmed by the broker). A private PostgreSQL
server is crashed and restarted (``pg_ctl stop -m immediate``), or a private RabbitMQ node
is stopped and started, several times, with commands in flight. Afterwards every actor's
applied commands must be exactly its confirmed ones, in the order they were confirmed:
nothing lost, nothing doubled, nothing overtaken.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from private_broker import PrivateBroker
from private_postgres import PrivatePostgres, postgres_missing, private_server
from services import POSTGRES, TEST_SCHEMA_PREFIX, amqp_down, amqp_url, postgres_down
from worker_app import Append, logs

from messaging.test_worker_processes import Workers, check_applied, connected, workers
from sourcery._core.errors import BrokerError
from sourcery._messaging.client import Client

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down())),
    pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down())),
]

GUARD = 120.0
"""A guard against a hung run, not a speed check."""
ACTORS = 100
RESTARTS = 3
BETWEEN = 400
"""Commands confirmed before the first restart, between two, and after the last one."""


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    reason = postgres_missing()
    if reason is not None:
        pytest.skip(reason)
    with private_server() as server:
        yield server


def schema_url(server: str) -> tuple[str, str]:
    schema = f"{TEST_SCHEMA_PREFIX}o{uuid.uuid4().hex[:12]}"
    return f"{server}?schema={schema}", schema


async def event_count(server: str, schema: str) -> int:
    import asyncpg

    try:
        con = await asyncpg.connect(server, timeout=5)
    except (OSError, asyncpg.exceptions.PostgresError):
        return -1  # the server is restarting
    try:
        value = await con.fetchval(f'SELECT count(*) FROM "{schema}".events')
    except asyncpg.exceptions.UndefinedTableError:
        return 0
    finally:
        await con.close()
    return int(value)


async def applied_by(server: str, schema: str, actor: str) -> str:
    """Who applied the actor's commands, in replay order: evidence when the order is off."""
    import asyncpg

    con = await asyncpg.connect(server, timeout=5)
    try:
        rows = await con.fetch(
            f'SELECT initiated_by, writer, n, timestamp FROM "{schema}".events '
            "WHERE actor_id = $1 ORDER BY timestamp, id",
            actor,
        )
    finally:
        await con.close()
    return "\n".join(f"  {r[0]} by {r[1]} #{r[2]} at {r[3]}" for r in rows)


async def run_through_restarts(
    tmp_path: Path,
    store: tuple[str, str, str],
    broker: str,
    restart: Callable[[], Awaitable[None]],
) -> None:
    """Three workers; a sender per actor; ``restart()`` ``RESTARTS`` times under load."""
    store_url, server, schema = store
    confirmed: dict[str, list[int]] = {f"a{i}": [] for i in range(ACTORS)}
    total = 0
    done = asyncio.Event()

    async def one_actor(client: Client, actor: str) -> None:
        nonlocal total
        seq = 0
        while not done.is_set():
            while True:  # until confirmed, even once done: a refused copy may be queued
                try:
                    await client.send(logs(actor), Append("c", seq), message_id=f"{actor}:{seq}")
                    break
                except BrokerError:
                    await asyncio.sleep(0.2)  # the same id again: applied at most once
            confirmed[actor].append(seq)
            total += 1
            seq += 1
            await asyncio.sleep(random.uniform(0.0, 0.01))

    async def confirmed_at_least(count: int, group: Workers) -> None:
        deadline = time.monotonic() + GUARD
        while total < count:
            assert time.monotonic() < deadline, f"{total} commands confirmed\n{group.logs()}"
            await asyncio.sleep(0.05)

    async def inject(group: Workers) -> None:
        for k in range(RESTARTS):
            await confirmed_at_least(BETWEEN * (k + 1), group)
            await restart()
        await confirmed_at_least(BETWEEN * (RESTARTS + 1), group)
        done.set()

    with workers(tmp_path, store_url, broker, 3) as group:
        await connected(group)
        async with Client.open(broker) as client:
            await asyncio.wait_for(
                asyncio.gather(inject(group), *(one_actor(client, a) for a in confirmed)), GUARD
            )
        deadline = time.monotonic() + GUARD
        while (count := await event_count(server, schema)) < total:
            assert time.monotonic() < deadline, f"{count} of {total} events\n{group.logs()}"
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # room for a command applied twice to show
        assert all(p.poll() is None for p in group.procs), group.logs()
        logs_text = group.logs()
    assert await event_count(server, schema) == total
    try:
        await check_applied(store_url, confirmed, chains=False)
    except AssertionError as exc:
        actor = str(exc).split(":", 1)[0]
        evidence = await applied_by(server, schema, actor) if actor in confirmed else ""
        raise AssertionError(f"{exc}\n{evidence}\n{logs_text[-20000:]}") from exc


async def test_postgres_restarts_keep_each_actors_order(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    store_url, schema = schema_url(private_postgres.url)
    restarts = private_postgres.restarts

    async def restart() -> None:
        await asyncio.sleep(random.uniform(0.0, 0.2))
        await asyncio.to_thread(private_postgres.restart, lambda: time.sleep(1.0))

    await run_through_restarts(
        tmp_path, (store_url, private_postgres.url, schema), amqp_url(queues=4), restart
    )
    assert private_postgres.restarts == restarts + RESTARTS


async def test_broker_restarts_keep_each_actors_order(
    tmp_path: Path, private_broker: PrivateBroker
) -> None:
    schema = f"{TEST_SCHEMA_PREFIX}o{uuid.uuid4().hex[:12]}"
    restarts = private_broker.restarts

    async def restart() -> None:
        # RabbitMQ's application stopped and started in its node, or the whole node.
        await asyncio.sleep(random.uniform(0.0, 0.2))
        whole = private_broker.restarts % 2 == 1
        await asyncio.to_thread(private_broker.restart if whole else private_broker.restart_app)

    await run_through_restarts(
        tmp_path,
        (f"{POSTGRES}?schema={schema}", POSTGRES, schema),
        private_broker.url(queues=16),
        restart,
    )
    assert private_broker.restarts == restarts + RESTARTS
