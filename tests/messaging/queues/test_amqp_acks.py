"""Acks of RabbitMQ deliveries go out together (one ``basic.ack`` with ``multiple`` for a
settled run of delivery tags): whatever the order the commands finish in, every delivery
is settled exactly once, a nack is never overtaken by an ack covering it, and tags of a
channel that is gone are never acked on another one.

The deliveries here come from a consumer of the test's own, wrapped as ``consume`` wraps
them, so the test decides when and in which order each is settled.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import pytest
from services import amqp_down, amqp_url

from sourcery._core.records import ActorRef
from sourcery._messaging.queues.amqp import AmqpDelivery, AmqpQueue

pytestmark = pytest.mark.skipif(amqp_down() is not None, reason=str(amqp_down()))

ACTOR = ActorRef("account", "a")
WAIT = 30  # seconds before a test that waits for a delivery gives up (it hangs otherwise)


class Consumer:
    """Deliveries of the single command queue, received and left unsettled."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel
        self.received: asyncio.Queue[AmqpDelivery] = asyncio.Queue()

    async def take(self, count: int) -> list[AmqpDelivery]:
        async with asyncio.timeout(WAIT):
            return [await self.received.get() for _ in range(count)]


@asynccontextmanager
async def consuming(queue: AmqpQueue, prefetch: int) -> AsyncIterator[Consumer]:
    connection = await aio_pika.connect(queue.settings.url)
    try:
        channel = await connection.channel()
        consumer = Consumer(channel)
        await channel.set_qos(prefetch_count=prefetch)
        source = await channel.get_queue(queue.settings.command_queue(0), ensure=False)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            consumer.received.put_nowait(AmqpDelivery(queue, message))

        await source.consume(on_message)
        yield consumer
    finally:
        await connection.close()


async def send(queue: AmqpQueue, count: int) -> list[str]:
    ids = [f"m-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    for message_id in ids:
        await queue.send(ACTOR, message_id.encode(), message_id=message_id)
    return ids


def frames(deliveries: list[AmqpDelivery]) -> int:
    """Ack frames sent on the channel these deliveries came on."""
    acks = {id(d._acks): d._acks for d in deliveries if d._acks is not None}
    assert len(acks) == 1
    return next(iter(acks.values())).frames


async def assert_all_settled(queue: AmqpQueue) -> None:
    """Nothing unsettled is left: a consumer that comes now gets a new command first (the
    broker gives the deliveries a closed channel left unsettled back before newer ones)."""
    (marker,) = await send(queue, 1)
    async with consuming(queue, prefetch=100) as consumer:
        (first,) = await consumer.take(1)
        assert (first.message_id, first.attempts) == (marker, 1)
        await first.ack()


@pytest.fixture
async def queue() -> AsyncIterator[AmqpQueue]:
    opened = await AmqpQueue.open(amqp_url(queues=1))
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_acks_in_any_order_settle_exactly_those_acked_with_fewer_frames(
    queue: AmqpQueue,
) -> None:
    ids = await send(queue, 60)
    async with consuming(queue, prefetch=40) as consumer:
        first = await consumer.take(40)  # the prefetch: no more until some are acked
        assert [d.message_id for d in first] == ids[:40]
        rng = random.Random(5)
        # Half of them, in two waves, each in any order, as commands finish: tags 1-7, then
        # tags 8-16 with four scattered above tag 17, which stays unsettled.
        low, high = list(range(7)), [*range(7, 16), *rng.sample(range(17, 40), 4)]
        for wave in (low, high):
            rng.shuffle(wave)
            await asyncio.gather(*(first[i].ack() for i in wave))
        # Each wave's run from the lowest unsettled tag is one ``multiple`` ack; only the
        # four above tag 17 go alone: 6 frames for 20 acks (20 if each went alone).
        assert frames(first) <= 8
        # The acks reached the broker: it delivers more into the freed prefetch.
        rest = await consumer.take(20)
        assert [d.message_id for d in rest] == ids[40:]
    # The channel closed with the others unsettled: exactly those come back (an ack that
    # covered one of them too early would have lost it).
    unsettled = {ids[i] for i in set(range(40)) - {*low, *high}} | set(ids[40:])
    async with consuming(queue, prefetch=100) as consumer:
        again = await consumer.take(40)
        assert {d.message_id for d in again} == unsettled
        assert {d.attempts for d in again} == {2}
        await asyncio.gather(*(d.ack() for d in reversed(again)))
        assert frames(again) == 1
        # A second settlement of a delivery is ignored: nothing reaches the broker, which
        # would close the channel (PRECONDITION_FAILED, unknown delivery tag).
        await again[0].ack()
        await again[1].retry()
        await consumer.channel.set_qos(prefetch_count=100)  # a round trip: still open
        (later,) = await send(queue, 1)
        (last,) = await consumer.take(1)
        assert last.message_id == later and last.live
        await last.ack()
        assert frames([*again, last]) == 2
    await assert_all_settled(queue)  # ``last`` too was acked, on that same channel


async def test_retry_and_dead_between_acks_settle_each_delivery_once(queue: AmqpQueue) -> None:
    ids = await send(queue, 30)
    roles = {i: "retry" if i % 3 == 0 else "dead" if i % 5 == 0 else "ack" for i in range(1, 31)}
    async with consuming(queue, prefetch=100) as consumer:
        deliveries = dict(zip(range(1, 31), await consumer.take(30), strict=True))
        assert [d.message_id for d in deliveries.values()] == ids
        for i in (30, 3, 15, 9):  # out of order, and none of them waits for an ack
            await deliveries[i].retry()
        for i, role in roles.items():
            if role == "retry" and i not in (30, 3, 15, 9):
                await deliveries[i].retry()
        for i, role in roles.items():
            if role == "dead":
                await deliveries[i].dead("HandlerError", f"failed {i}")
        # Every ack above a nacked tag, and the first unsettled one below them all.
        acks = [i for i, role in roles.items() if role == "ack"]
        await asyncio.gather(*(deliveries[i].ack() for i in acks))
        # Each dead letter's ack went alone (tag 1 was unsettled); then one covered the rest.
        assert frames(list(deliveries.values())) == 4 + 1
        retried = sorted(i for i, role in roles.items() if role == "retry")
        again = await consumer.take(len(retried))
        assert sorted(d.message_id for d in again) == sorted(ids[i - 1] for i in retried)
        assert {d.attempts for d in again} == {2}
        await asyncio.gather(*(d.ack() for d in again))
        assert frames(list(deliveries.values())) == 4 + 1 + 1
    letters = await queue.dead_letters()
    dead = [i for i, role in roles.items() if role == "dead"]
    assert sorted(letter.message_id for letter in letters) == sorted(ids[i - 1] for i in dead)
    await assert_all_settled(queue)


async def test_acks_for_a_channel_that_is_gone_are_dropped_and_redelivered(
    queue: AmqpQueue,
) -> None:
    ids = await send(queue, 10)
    async with consuming(queue, prefetch=100) as consumer:
        old = await consumer.take(10)
    async with consuming(queue, prefetch=100) as consumer:
        again = await consumer.take(10)
        assert [d.message_id for d in again] == ids
        assert {d.attempts for d in again} == {2}
        # The old channel is closed: settling its deliveries is no error, and their tags
        # (1-10, the numbers of ``again`` on this channel) are never acked here.
        await asyncio.gather(*(d.ack() for d in old[:5]))
        await asyncio.gather(*(d.retry() for d in old[5:]))
        await consumer.channel.set_qos(prefetch_count=100)  # a round trip: still open
        assert all(d.live for d in again)
    # Left unsettled, all ten come back once more.
    async with consuming(queue, prefetch=100) as consumer:
        third = await consumer.take(10)
        assert [d.message_id for d in third] == ids
        assert {d.attempts for d in third} == {3}
        await asyncio.gather(*(d.ack() for d in third[1:]))
        await third[0].ack()
    await assert_all_settled(queue)


async def test_acks_behind_a_slow_command_go_out_without_it(queue: AmqpQueue) -> None:
    ids = await send(queue, 10)
    async with consuming(queue, prefetch=100) as consumer:
        deliveries = await consumer.take(10)
        # The first is still being worked on: the acks after it do not wait for it.
        await asyncio.gather(*(d.ack() for d in deliveries[1:]))
        await deliveries[2].ack()  # settled already: nothing more is sent
        assert frames(deliveries) == 9
    # The channel closed with only the first unsettled: only that one comes back.
    async with consuming(queue, prefetch=100) as consumer:
        (again,) = await consumer.take(1)
        assert (again.message_id, again.attempts) == (ids[0], 2)
        await again.ack()
    await assert_all_settled(queue)
