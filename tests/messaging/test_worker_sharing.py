"""Two ``sourcery worker`` processes share one deployment's command queues (``share=1``).

Both take commands (each a fair part), every confirmed command is applied exactly once and
in its client's order, and no actor ever gets two heads; when one is killed with SIGKILL in
the middle of a run, the other takes over all the queues and nothing confirmed is lost;
so it does when one is stopped (SIGTERM), each queue handed over once its commands are done.
Who holds which queue is read from the workers' own presence messages.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import pytest
from services import POSTGRES, amqp_down, amqp_url, postgres_down

from messaging.test_worker_processes import (
    GUARD,
    Workers,
    check_applied,
    event_count,
    postgres_url,
    send_all,
    wait_for_events,
    workers,
)
from sourcery._core.config import parse_amqp_url

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
    pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down())),
    pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down())),
]

QUEUES = 8
INTERVAL = 0.25


class Presence:
    """The leases each worker process says it holds (by process id)."""

    def __init__(self) -> None:
        self.held: dict[int, tuple[float, frozenset[int]]] = {}

    def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        data = json.loads(message.body)
        pid = int(str(data["id"]).split("-")[0])
        self.held[pid] = (time.monotonic(), frozenset(data["held"]))

    def now(self) -> dict[int, int]:
        """Leases per process, of those heard of lately."""
        recent = time.monotonic() - 4 * INTERVAL
        return {pid: len(held) for pid, (at, held) in self.held.items() if at > recent and held}

    async def until(self, expected: dict[int, int], group: Workers) -> None:
        """Wait until each of these processes holds that many leases, and nobody else any."""
        deadline = time.monotonic() + GUARD
        while self.now() != expected:
            assert time.monotonic() < deadline, f"leases {self.held}\n{group.logs()}"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def presence(broker: str) -> AsyncIterator[Presence]:
    settings = parse_amqp_url(broker)
    seen = Presence()
    connection = await aio_pika.connect(settings.url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            settings.workers_exchange, aio_pika.ExchangeType.FANOUT, durable=False
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            seen.on_message(message)

        await queue.consume(on_message, no_ack=True)
        yield seen


async def applied_by(schema: str) -> dict[str, int]:
    """Events written per worker name (writer ids are ``name.<random>``)."""
    import asyncpg

    con = await asyncpg.connect(POSTGRES)
    try:
        rows = await con.fetch(
            f"SELECT split_part(writer, '.', 1) AS name, count(*) AS n "
            f'FROM "{schema}".events GROUP BY 1'
        )
    finally:
        await con.close()
    return {row["name"]: int(row["n"]) for row in rows}


@asynccontextmanager
async def two_workers(tmp: Path, store_url: str) -> AsyncIterator[tuple[str, Workers, Presence]]:
    """Two sharing workers on fresh queues, once each holds half of them."""
    broker = amqp_url(queues=QUEUES, share_interval=INTERVAL)
    async with presence(broker) as seen:
        with workers(tmp, store_url, broker, 2) as group:
            first, second = group.procs
            await seen.until({first.pid: QUEUES // 2, second.pid: QUEUES // 2}, group)
            yield broker, group, seen


async def test_two_workers_share_the_queues_and_apply_every_command_once_in_order(
    tmp_path: Path,
) -> None:
    store_url, schema = postgres_url()
    actors, per_actor = 200, 10
    total = actors * per_actor
    async with two_workers(tmp_path, store_url) as (broker, group, _):
        confirmed = await asyncio.wait_for(send_all(broker, actors, per_actor, 2, {}), GUARD)
        await wait_for_events(store_url, schema, total, group)
    assert await event_count(store_url, schema) == total
    by = await applied_by(schema)
    print(f"events per worker: {by}")
    assert set(by) == {"w0", "w1"}, by
    assert all(n > total // 5 for n in by.values()), f"one worker did most: {by}"
    await check_applied(store_url, confirmed, chains=True)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_a_departed_workers_queues_go_to_the_other_and_nothing_is_lost(
    tmp_path: Path, how: signal.Signals
) -> None:
    """Killed, its queues wait for the broker to notice; stopped (SIGTERM), it hands each
    over once its commands are done. Either way no actor gets a second head."""
    store_url, schema = postgres_url()
    actors, per_actor = 200, 12
    total = actors * per_actor
    third = asyncio.Event()
    async with two_workers(tmp_path, store_url) as (broker, group, seen):
        victim, survivor = group.procs
        sending = asyncio.create_task(send_all(broker, actors, per_actor, 2, {total // 3: third}))
        await asyncio.wait_for(third.wait(), GUARD)
        deadline = time.monotonic() + GUARD
        while True:  # both at work before one goes
            by = await applied_by(schema)
            if min(by.get("w0", 0), by.get("w1", 0)) >= 20:
                break
            assert time.monotonic() < deadline, f"{by}\n{group.logs()}"
            await asyncio.sleep(0.1)
        victim.send_signal(how)
        assert await asyncio.to_thread(victim.wait, 30) == (-how if how == signal.SIGKILL else 0)
        await seen.until({survivor.pid: QUEUES}, group)
        confirmed = await asyncio.wait_for(sending, GUARD)
        await wait_for_events(store_url, schema, total, group)
        assert survivor.poll() is None, group.logs()
    assert sum(len(s) for s in confirmed.values()) == total
    assert await event_count(store_url, schema) == total
    await check_applied(store_url, confirmed, chains=True)
