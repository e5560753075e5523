"""One contract for every command queue: in-process (memory://) and RabbitMQ (amqp://)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from sourcery._core.errors import ClosedError, ConfigurationError
from sourcery._core.records import ActorRef
from sourcery._messaging.queues import CommandQueue, DeadLetter, Delivery, open_queue
from sourcery._messaging.queues.base import DELIVERY_LIMIT_ERROR

WAIT = 10.0
"""Upper bound for something that should happen at once (never reached when it works)."""


class Collector:
    """A consumer's handler that keeps every delivery for the test to look at."""

    def __init__(self) -> None:
        self.deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self.seen = 0

    async def __call__(self, delivery: Delivery) -> None:
        self.seen += 1
        await self.deliveries.put(delivery)

    async def next(self) -> Delivery:
        return await asyncio.wait_for(self.deliveries.get(), WAIT)

    async def take(self, n: int) -> list[Delivery]:
        return [await self.next() for _ in range(n)]

    async def nothing_more(self, within: float = 0.3) -> bool:
        try:
            await asyncio.wait_for(self.deliveries.get(), within)
        except TimeoutError:
            return True
        return False


async def take_any(n: int, *collectors: Collector) -> list[Delivery]:
    """``n`` deliveries, from whichever collectors get them."""
    got: list[Delivery] = []
    async with asyncio.timeout(WAIT):
        while len(got) < n:
            for collector in collectors:
                while not collector.deliveries.empty():
                    got.append(collector.deliveries.get_nowait())
            await asyncio.sleep(0.01)
    return got


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[CommandQueue]:
    queue = await open_queue(url)
    try:
        yield queue
    finally:
        await queue.aclose()


async def some_dead_letters(queue: CommandQueue) -> list[DeadLetter]:
    """The dead letters once there are some (RabbitMQ may show one a moment late)."""
    for _ in range(100):
        letters = await queue.dead_letters()
        if letters:
            return letters
        await asyncio.sleep(0.05)
    return await queue.dead_letters()


A = ActorRef("account", "a")
B = ActorRef("account", "b")


async def test_a_sent_command_is_delivered_once_with_its_properties(
    make_url: Callable[..., str],
) -> None:
    url = make_url()
    async with opened(url) as queue:
        assert isinstance(queue, CommandQueue)
        await queue.send(A, b"\x00body", message_id="m1", reply_to="somewhere")
        await queue.send(B, b"other", message_id="m2")
        collector = Collector()
        consumer = await queue.consume(collector)
        got = {d.message_id: d for d in await collector.take(2)}
        assert got["m1"].body == b"\x00body"
        assert got["m1"].reply_to == "somewhere"
        assert got["m1"].attempts == 1
        assert got["m2"].body == b"other"
        assert not got["m2"].reply_to
        for d in got.values():
            await d.ack()
        assert await collector.nothing_more()
        await consumer.cancel()
    # Acknowledged means gone: a new consumer gets nothing.
    async with opened(url) as queue:
        collector = Collector()
        await queue.consume(collector)
        assert await collector.nothing_more()


async def test_one_actors_commands_arrive_in_the_order_sent(make_url: Callable[..., str]) -> None:
    actors = [ActorRef("account", f"x{i}") for i in range(5)]
    async with opened(make_url(queues=3)) as queue:
        # Sent concurrently across actors, in order for each actor.
        async def send_all(actor: ActorRef) -> None:
            for n in range(40):
                await queue.send(actor, f"{actor.id}:{n}".encode(), message_id=f"{actor.id}-{n}")

        await asyncio.gather(*(send_all(a) for a in actors))
        collector = Collector()
        await queue.consume(collector)
        seen: dict[str, list[int]] = {a.id: [] for a in actors}
        for d in await collector.take(5 * 40):
            actor_id, n = d.body.decode().split(":")
            seen[actor_id].append(int(n))
            await d.ack()
        assert all(numbers == list(range(40)) for numbers in seen.values())


async def test_a_retried_command_comes_back_with_its_attempts_counted(
    make_url: Callable[..., str],
) -> None:
    async with opened(make_url(attempts=3)) as queue:
        assert queue.attempts == 3
        await queue.send(A, b"again", message_id="m1")
        collector = Collector()
        await queue.consume(collector)
        attempts = []
        for _ in range(3):
            d = await collector.next()
            assert d.message_id == "m1"
            attempts.append(d.attempts)
            await d.retry()
        d = await collector.next()
        await d.ack()
        assert attempts == [1, 2, 3]
        assert d.attempts == 4
        assert await collector.nothing_more()


async def test_a_dead_command_is_kept_with_its_error_and_not_delivered_again(
    make_url: Callable[..., str],
) -> None:
    url = make_url()
    async with opened(url) as queue:
        assert await queue.dead_letters() == []
        await queue.send(A, b"poison", message_id="m1")
        await queue.send(B, b"fine", message_id="m2")
        collector = Collector()
        await queue.consume(collector)
        for d in await collector.take(2):
            if d.message_id == "m1":
                await d.retry()
            else:
                await d.ack()
        d = await collector.next()
        assert (d.message_id, d.attempts) == ("m1", 2)
        await d.dead("HandlerError", "evolve failed: ZeroDivisionError('x')")
        assert await collector.nothing_more()
        letters = await queue.dead_letters()
        assert len(letters) == 1
        letter = letters[0]
        assert letter.message_id == "m1"
        assert letter.body == b"poison"
        assert letter.actor == "account/a"
        assert letter.error_type == "HandlerError"
        assert letter.error == "evolve failed: ZeroDivisionError('x')"
        assert letter.attempts == 2
        # Reading them does not remove them.
        assert await queue.dead_letters() == letters
    async with opened(url) as queue:
        assert await queue.dead_letters() == letters


async def test_dead_letters_come_oldest_first_up_to_a_limit(make_url: Callable[..., str]) -> None:
    async with opened(make_url(queues=1)) as queue:
        for n in range(5):
            await queue.send(A, b"x", message_id=f"m{n}")
        collector = Collector()
        await queue.consume(collector)
        for d in await collector.take(5):
            await d.dead("DecodingError", d.message_id)
        assert [x.message_id for x in await queue.dead_letters(limit=3)] == ["m0", "m1", "m2"]
        assert len(await queue.dead_letters()) == 5


async def test_deliveries_a_closed_consumer_left_unsettled_go_to_the_next(
    make_url: Callable[..., str],
) -> None:
    url = make_url(queues=2)
    async with opened(url) as second:
        first = await open_queue(url)
        try:
            one = Collector()
            await first.consume(one)
            for n in range(6):
                await first.send(ActorRef("account", f"s{n}"), b"x", message_id=f"m{n}")
            taken = await one.take(6)  # the only consumer yet: active on every queue
            two = Collector()
            await second.consume(two)
            await taken[0].ack()
            assert await two.nothing_more()
        finally:
            await first.aclose()  # as if its process died: five left unsettled
        redelivered = await two.take(5)
        left = sorted(d.message_id for d in taken[1:])
        assert sorted(d.message_id for d in redelivered) == left
        assert all(d.attempts == 2 for d in redelivered)
        for d in redelivered:
            await d.ack()
        assert await two.nothing_more()


async def test_a_delivery_is_live_until_settled_or_taken_back(
    make_url: Callable[..., str],
) -> None:
    # A worker must not run a delivery that is no longer live: the queue has given it, and
    # the actor's later commands, to another consumer.
    url = make_url(queues=2)
    first = await open_queue(url)
    try:
        one = Collector()
        await first.consume(one)
        for n in range(3):
            await first.send(ActorRef("account", f"l{n}"), b"x", message_id=f"m{n}")
        taken = await one.take(3)
        assert [d.live for d in taken] == [True, True, True]
        await taken[0].ack()
        await taken[1].retry()
        assert [d.live for d in taken] == [False, False, True]
    finally:
        await first.aclose()  # as if its connection were lost: the third taken back
    assert taken[2].live is False
    async with opened(url) as second:
        two = Collector()
        await second.consume(two)
        back = await two.take(2)
        assert sorted(d.message_id for d in back) == ["m1", "m2"]
        assert all(d.live for d in back)
        for d in back:
            await d.ack()


async def test_one_active_consumer_per_queue_and_a_takeover_when_it_stops(
    make_url: Callable[..., str],
) -> None:
    url = make_url(queues=4)
    async with opened(url) as first, opened(url) as second:
        one, two = Collector(), Collector()
        consumer = await first.consume(one)
        await second.consume(two)
        actors = [ActorRef("account", f"t{n}") for n in range(20)]
        for n, actor in enumerate(actors):
            await first.send(actor, b"x", message_id=f"before{n}")
        # Each to one of them (RabbitMQ workers share the queues; in-process, the first).
        before = await take_any(20, one, two)
        assert sorted(d.message_id for d in before) == sorted(f"before{n}" for n in range(20))
        for d in before:
            await d.ack()
        assert await one.nothing_more() and await two.nothing_more()
        await consumer.cancel()
        for n, actor in enumerate(actors):
            await second.send(actor, b"x", message_id=f"after{n}")
        after = await two.take(20)
        assert sorted(d.message_id for d in after) == sorted(f"after{n}" for n in range(20))
        for d in after:
            await d.ack()
        assert await one.nothing_more()


async def test_a_consumer_holds_at_most_prefetch_unsettled_per_queue(
    make_url: Callable[..., str],
) -> None:
    async with opened(make_url(queues=1, prefetch=3)) as queue:
        for n in range(10):
            await queue.send(A, b"x", message_id=f"m{n}")
        collector = Collector()
        await queue.consume(collector)
        first = await collector.take(3)
        assert await collector.nothing_more()
        await first[0].ack()
        (fourth,) = await collector.take(1)
        assert fourth.message_id == "m3"


async def test_replies_reach_the_address_replies_gave(make_url: Callable[..., str]) -> None:
    url = make_url()
    async with opened(url) as client, opened(url) as worker:
        got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        address = await client.replies(lambda cid, body: got.put_nowait((cid, body)))
        await worker.reply(address, b"answer", correlation_id="m1")
        assert await asyncio.wait_for(got.get(), WAIT) == ("m1", b"answer")
        # A reply to nobody is dropped without error.
        await worker.reply(address + "-gone", b"lost", correlation_id="m2")


async def test_many_concurrent_sends_are_each_delivered_once(make_url: Callable[..., str]) -> None:
    # 16 queues of 256 unacknowledged each: the 500 sends fit before the first ack.
    async with opened(make_url(queues=16)) as queue:
        await asyncio.gather(
            *(
                queue.send(ActorRef("account", f"c{n % 37}"), b"x", message_id=f"m{n}")
                for n in range(500)
            )
        )
        collector = Collector()
        await queue.consume(collector)
        ids = []
        for d in await collector.take(500):
            ids.append(d.message_id)
            await d.ack()
        assert sorted(ids) == sorted(f"m{n}" for n in range(500))
        assert await collector.nothing_more()


async def test_closed_queues_refuse_work(make_url: Callable[..., str]) -> None:
    queue = await open_queue(make_url())
    await queue.aclose()
    await queue.aclose()  # idempotent
    with pytest.raises(ClosedError):
        await queue.send(A, b"x", message_id="m1")


@pytest.mark.parametrize(
    "url",
    ["memory://x?queues=0", "memory://x?nope=1", "memory://x?attempts=two", "ftp://x"],
)
async def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        await open_queue(url)


async def test_the_queue_itself_gives_up_on_endless_redeliveries(
    make_url: Callable[..., str],
) -> None:
    """The safety net for a command no worker survives: after many more deliveries than
    ``attempts``, it goes to the dead letters without any worker deciding so."""
    async with opened(make_url(attempts=1)) as queue:
        await queue.send(A, b"crash", message_id="m1")
        collector = Collector()
        await queue.consume(collector)
        counts = []
        while True:
            try:
                d = await collector.next()
            except TimeoutError:
                break
            counts.append(d.attempts)
            await d.retry()
            if await queue.dead_letters():
                break
        letters = await some_dead_letters(queue)
        assert [x.message_id for x in letters] == ["m1"]
        assert letters[0].error_type == DELIVERY_LIMIT_ERROR
        assert counts[:4] == [1, 2, 3, 4]
        assert 4 <= len(counts) <= 6


async def test_a_dead_letter_keeps_the_failures_its_worker_counted(
    make_url: Callable[..., str],
) -> None:
    """Deliveries are not failures (a consumer that went away also makes one): the worker
    says how many times the command failed, and the dead letter keeps that."""
    async with opened(make_url(queues=1)) as queue:
        await queue.send(A, b"poison", message_id="m1")
        collector = Collector()
        await queue.consume(collector)
        d = await collector.next()
        assert d.attempts == 1
        await d.dead("HandlerError", "boom", attempts=7)
        letters = await some_dead_letters(queue)
        assert [(x.message_id, x.error_type, x.attempts) for x in letters] == [
            ("m1", "HandlerError", 7)
        ]
