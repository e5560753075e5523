"""Workers sharing RabbitMQ command queues through leases (``share=1``, the default)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
import pytest
from services import amqp_down, amqp_url

from sourcery._core.config import parse_amqp_url
from sourcery._core.records import ActorRef
from sourcery._messaging.queues import Delivery
from sourcery._messaging.queues.amqp import AmqpQueue
from sourcery._messaging.queues.amqp.leases import LeasedConsumer, shares

if TYPE_CHECKING:
    from private_broker import PrivateBroker

pytestmark = pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down()))

GUARD = 30.0
"""A guard against a hang, not a speed check."""
INTERVAL = 0.2


def url(**params: object) -> str:
    return amqp_url(None, share_interval=INTERVAL, **params)


async def until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(GUARD):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"{what} (waited {GUARD} s)")


class Acker:
    """Acks every delivery after ``hold`` seconds; keeps what it got."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.got: list[str] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.got.append(delivery.message_id)
        if self.hold:
            await asyncio.sleep(self.hold)
        await delivery.ack()


@asynccontextmanager
async def consumer(url: str, handler: Any) -> AsyncIterator[tuple[AmqpQueue, LeasedConsumer]]:
    queue = await AmqpQueue.open(url)
    try:
        leased = await queue.consume(handler)
        assert isinstance(leased, LeasedConsumer)
        yield queue, leased
    finally:
        await queue.aclose()


async def send(queue: AmqpQueue, count: int, actors: int, tag: str) -> None:
    for n in range(count):
        actor = ActorRef("account", f"{tag}{n % actors}")
        await queue.send(actor, f"{actor.id}:{n}".encode(), message_id=f"{tag}-{n}")


def test_shares_spread_the_queues_evenly() -> None:
    assert shares({"b", "a", "c"}, 8) == {"a": 3, "b": 3, "c": 2}
    assert shares(["x"], 4) == {"x": 4}
    assert sum(shares({f"w{i}" for i in range(5)}, 16).values()) == 16


async def test_two_consumers_share_the_queues_and_each_command_goes_to_one() -> None:
    address = url(queues=8)
    one, two = Acker(), Acker()
    async with consumer(address, one) as (queue, first), consumer(address, two) as (_, second):
        await until(
            lambda: len(first.consuming) == len(second.consuming) == 4,
            "the two consumers never took 4 queues each",
        )
        assert first.held.isdisjoint(second.held)
        assert first.held | second.held == set(range(8))
        await send(queue, 200, 50, "s")
        await until(lambda: len(one.got) + len(two.got) >= 200, "not all delivered")
        await asyncio.sleep(0.2)
    assert one.got and two.got
    assert sorted(one.got + two.got) == sorted(f"s-{n}" for n in range(200))


async def test_a_stopping_consumer_hands_its_queues_to_the_other() -> None:
    address = url(queues=4)
    one, two = Acker(), Acker()
    async with consumer(address, two) as (queue, second):
        async with consumer(address, one) as (_, first):
            await until(lambda: len(first.held) == len(second.held) == 2, "never balanced")
            await first.cancel()
            await until(lambda: len(second.consuming) == 4, "the queues were not handed over")
            assert first.held == frozenset()
            await send(queue, 40, 20, "h")
            await until(lambda: len(two.got) >= 40, "not all delivered")
        assert not any(m.startswith("h-") for m in one.got)
        assert sorted(two.got) == sorted(f"h-{n}" for n in range(40))


async def test_a_lease_held_by_another_connection_keeps_its_queue_from_a_consumer() -> None:
    address = url(queues=2)
    settings = parse_amqp_url(address)
    holder = await aio_pika.connect(settings.url)
    try:
        channel = await holder.channel()
        await channel.declare_queue(settings.lease_queue(0), exclusive=True)
        # A second connection cannot claim it: the broker refuses and closes the channel.
        other = await aio_pika.connect(settings.url)
        async with other:
            probe = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelLockedResource):
                await probe.declare_queue(settings.lease_queue(0), exclusive=True)
        got = Acker()
        async with consumer(address, got) as (queue, leased):
            assert leased.held == {1}
            await send(queue, 30, 30, "l")
            passive = await channel.declare_queue(settings.command_queue(0), passive=True)
            waiting = passive.declaration_result.message_count or 0
            assert waiting > 0, "no command went to the queue the lease keeps"
            await until(lambda: len(got.got) == 30 - waiting, "queue 1 was not consumed")
            await asyncio.sleep(3 * INTERVAL)
            assert len(got.got) == 30 - waiting and 0 not in leased.consuming
            await holder.close()  # the lease goes with its connection: now it is free
            await until(lambda: len(got.got) == 30, "the freed queue was not taken over")
            assert leased.held == {0, 1}
        assert sorted(got.got) == sorted(f"l-{n}" for n in range(30))
    finally:
        await holder.close()


class Overlap:
    """Handlers of several consumers that record, per actor, which consumer holds an
    unsettled delivery, and any delivery started while another consumer held one."""

    def __init__(self) -> None:
        self.holding: dict[str, dict[str, int]] = {}
        self.overlaps: list[tuple[str, str, str]] = []
        self.started: dict[str, list[int]] = {}
        self.by: dict[str, set[str]] = {}

    def handler(self, name: str) -> Callable[[Delivery], Any]:
        async def handle(delivery: Delivery) -> None:
            actor, n = delivery.body.decode().split(":")
            holders = self.holding.setdefault(actor, {})
            others = [h for h, count in holders.items() if h != name and count > 0]
            if others:
                self.overlaps.append((actor, name, others[0]))
            holders[name] = holders.get(name, 0) + 1
            self.started.setdefault(actor, []).append(int(n))
            self.by.setdefault(actor, set()).add(name)
            await asyncio.sleep(random.uniform(0.05, 0.3))
            await delivery.ack()
            holders[name] -= 1

        return handle


async def send_concurrently(queue: AmqpQueue, per_actor: int, actors: int, tag: str) -> None:
    """Each actor's commands in order, all actors at once: a backlog builds up."""

    async def one(actor: ActorRef) -> None:
        for n in range(per_actor):
            await queue.send(actor, f"{actor.id}:{n}".encode(), message_id=f"{actor.id}-{n}")

    await asyncio.gather(*(one(ActorRef("account", f"{tag}{i}")) for i in range(actors)))


async def test_no_delivery_starts_on_a_second_consumer_while_the_first_holds_one() -> None:
    # Handlers hold their deliveries for a while and the queues keep a backlog (prefetch
    # 10): a new owner that started too early would start an actor's next command while
    # the previous one is still held.
    address = url(queues=4, prefetch=10)
    record = Overlap()
    async with consumer(address, record.handler("a")) as (queue, a):
        sending = asyncio.create_task(send_concurrently(queue, 20, 25, "o"))
        await until(lambda: len(record.started) >= 12, "nothing consumed")
        async with consumer(address, record.handler("b")) as (_, b):
            await until(lambda: len(a.held) == len(b.held) == 2, "never balanced")
            await a.cancel()  # hands everything to b, while commands keep coming
            await until(lambda: len(b.consuming) == 4, "not handed over")
            async with consumer(address, record.handler("c")) as (_, c):
                await until(lambda: len(b.held) == len(c.held) == 2, "never balanced")
                await asyncio.wait_for(sending, GUARD)
                await until(
                    lambda: sum(len(s) for s in record.started.values()) >= 500,
                    "not all delivered",
                )
    assert record.overlaps == []
    moved = [actor for actor, names in record.by.items() if len(names) > 1]
    assert moved, "no queue changed hands during the run"
    for actor, numbers in record.started.items():
        assert numbers == sorted(numbers), f"{actor} started out of order"
    assert sum(len(s) for s in record.started.values()) == 500


class Holder:
    """Keeps every delivery unsettled, for the test to settle."""

    def __init__(self) -> None:
        self.got: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.got.append(delivery)


async def test_after_a_lost_connection_a_consumer_holds_nothing_then_starts_over(
    private_broker: PrivateBroker,
) -> None:
    name = f"leases-{uuid.uuid4().hex}"
    address = private_broker.url(share_interval=INTERVAL, name=name)
    holder = Holder()
    async with consumer(address, holder) as (queue, leased):
        assert leased.held == {0, 1}
        await send(queue, 6, 6, "r")
        await until(lambda: len(holder.got) == 6, "not delivered")
        assert private_broker.close_connections(name)
        # The leases went with the connection, and nothing restored a consumer without them.
        await until(lambda: not leased.held, "a lease outlived its connection")
        assert not leased.consuming
        await until(lambda: len(holder.got) == 12, "not redelivered after the reconnection")
        assert leased.held == {0, 1}
        old, new = holder.got[:6], holder.got[6:]
        assert sorted(d.message_id for d in new) == sorted(d.message_id for d in old)
        assert all(d.attempts == 2 for d in new)
        for d in old:
            await d.ack()  # void: its channel is gone, and its tags are not the new one's
        kept = {new[0].message_id, new[3].message_id}
        for d in new:
            if d.message_id not in kept:
                await d.ack()
    # A fresh consumer gets again exactly the two left unsettled. Markers to the same
    # actors come after them in their queues: once the markers are in, all is.
    fresh = Holder()
    async with consumer(address, fresh) as (queue, _):
        for n in range(6):
            await queue.send(ActorRef("account", f"r{n}"), b"", message_id=f"marker-{n}")
        await until(lambda: sum(d.body == b"" for d in fresh.got) == 6, "markers not delivered")
        again = [d for d in fresh.got if d.body]
        assert sorted(d.message_id for d in again) == sorted(kept)
        assert all(d.attempts == 3 for d in again)
