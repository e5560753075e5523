"""Workers and clients end to end, through the in-process queue and a real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sourcery.actor import ActorType
from sourcery.client import Client
from sourcery.clock import VectorClock
from sourcery.errors import CommandFailed, Rejected
from sourcery.examples.bank import Account, Deposit, Open, Withdraw, accounts
from sourcery.queues import CommandQueue, Consumer, DeadLetter, Delivery, open_queue
from sourcery.records import ActorRef
from sourcery.runtime import Runtime
from sourcery.stores import open_store
from sourcery.topics import open_bus
from sourcery.wire import Reply, decode_reply
from sourcery.worker import Worker

WAIT = 10.0

# -- an actor type whose decide or evolve can be made to fail ------------------------------


class Append(msgspec.Struct, frozen=True):
    n: int


class Explode(msgspec.Struct, frozen=True):
    where: str
    """"decide" or "evolve"."""


class Appended(msgspec.Struct, frozen=True):
    n: int


class Broken(msgspec.Struct, frozen=True):
    """An event evolve cannot apply."""


DECIDED: Counter[str] = Counter()
"""How often decide ran per command kind, across the test session."""


def decide(state: tuple[int, ...], command: Append | Explode) -> list[Appended | Broken]:
    match command:
        case Append(n):
            if n < 0:
                raise Rejected(f"negative: {n}")
            return [Appended(n)]
        case Explode(where):
            DECIDED[where] += 1
            if where == "decide":
                raise ZeroDivisionError("decide blew up")
            return [Broken()]
    raise AssertionError(command)  # pragma: no cover


def evolve(state: tuple[int, ...], event: Appended | Broken) -> tuple[int, ...]:
    if isinstance(event, Broken):
        raise ValueError("evolve cannot apply Broken")
    return (*state, event.n)


logs: ActorType[tuple[int, ...], Append | Explode, Appended | Broken] = ActorType(
    name="log",
    initial=(),
    decide=decide,
    evolve=evolve,
    commands=[Append, Explode],
    events=[Appended, Broken],
)

APP: list[ActorType[Any, Any, Any]] = [accounts, logs]


# -- brokers and workers -----------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready(), WAIT)
    try:
        yield worker
    finally:
        worker.stop()
        await task


@asynccontextmanager
async def worker_on(store: str, broker: str, **options: Any) -> AsyncIterator[Worker]:
    async with (
        Worker.open(APP, store=store, broker=broker, **options) as worker,
        running(worker),
    ):
        yield worker


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``; fail the test if it never holds."""
    async with asyncio.timeout(WAIT * 3):
        while not condition():
            await asyncio.sleep(0.02)


async def dead_letters(client: Client, n: int) -> list[DeadLetter]:
    """The dead letters once there are ``n`` (a dead letter is written before the reply, but
    RabbitMQ may show it a moment later)."""
    for _ in range(200):
        letters = await client.queue.dead_letters()
        if len(letters) >= n:
            return letters
        await asyncio.sleep(0.05)
    return await client.queue.dead_letters()


A1 = accounts("a1")


# -- replies -----------------------------------------------------------------------------


async def test_a_request_is_applied_and_answered_and_a_repeat_is_a_duplicate(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker()
    async with worker_on(store, broker) as worker, Client.open(broker) as client:
        opened = await client.request(A1, Open("ann"), timeout=WAIT)
        assert (opened.status, opened.events, opened.actor) == ("ok", ("Opened",), A1)
        first = await client.request(A1, Deposit(5), message_id="d1", timeout=WAIT)
        assert (first.message_id, first.status, first.events) == ("d1", "ok", ("Deposited",))
        again = await client.request(A1, Deposit(5), message_id="d1", timeout=WAIT)
        assert (again.status, again.events) == ("duplicate", ("Deposited",))
        assert again.ok
        assert await worker.runtime.state(A1) == Account(owner="ann", balance=5)
        assert (worker.stats.applied, worker.stats.duplicates) == (2, 1)
        assert await client.queue.dead_letters() == []


async def test_a_rejected_command_is_answered_not_retried_nor_dead(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker()
    async with worker_on(store, broker) as worker, Client.open(broker) as client:
        with pytest.raises(CommandFailed) as caught:
            await client.request(A1, Withdraw(50), timeout=WAIT)
        reply = caught.value.reply
        assert isinstance(reply, Reply)
        assert (reply.status, reply.error_type) == ("rejected", "InsufficientFunds")
        assert "less than 50" in reply.error
        assert (worker.stats.rejected, worker.stats.retried, worker.stats.dead) == (1, 0, 0)
        assert await client.queue.dead_letters() == []
        assert await worker.runtime.state(A1) == Account()


class Close(msgspec.Struct, frozen=True):
    """Not a command of any actor type the worker runs."""


async def test_an_unknown_command_goes_to_the_dead_letters_at_once(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker(attempts=3)
    async with worker_on(store, broker) as worker, Client.open(broker) as client:
        with pytest.raises(CommandFailed) as caught:
            await client.request(A1, Close(), message_id="c1", timeout=WAIT)
        with pytest.raises(CommandFailed) as other:
            await client.request(ActorRef("ghost", "g"), Open("x"), timeout=WAIT)
        letters = await dead_letters(client, 2)
    reply = caught.value.reply
    assert isinstance(reply, Reply)
    assert (reply.status, reply.error_type) == ("failed", "UnknownCommand")
    assert isinstance(other.value.reply, Reply)
    assert other.value.reply.error_type == "UnknownActorType"
    by_id = {x.message_id: x for x in letters}
    assert by_id["c1"].error_type == "UnknownCommand"
    assert by_id["c1"].attempts == 1
    assert by_id["c1"].actor == "account/a1"
    assert worker.stats.retried == 0
    assert worker.stats.dead == 2


async def test_malformed_bytes_go_to_the_dead_letters_with_a_failed_reply(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker()
    async with worker_on(store, broker) as worker:
        raw = await open_queue(broker)
        try:
            replies: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
            address = await raw.replies(lambda cid, body: replies.put_nowait((cid, body)))
            await raw.send(A1, b"\xc1 not msgpack", message_id="bad", reply_to=address)
            cid, body = await asyncio.wait_for(replies.get(), WAIT)
            for _ in range(200):
                letters = await raw.dead_letters()
                if letters:
                    break
                await asyncio.sleep(0.05)
        finally:
            await raw.aclose()
    reply = decode_reply(body)
    assert (cid, reply.message_id, reply.status) == ("bad", "bad", "failed")
    assert reply.error_type == "DecodingError"
    assert [(x.message_id, x.body, x.error_type) for x in letters] == [
        ("bad", b"\xc1 not msgpack", "DecodingError")
    ]
    assert worker.stats.dead == 1


@pytest.mark.parametrize("where", ["decide", "evolve"])
async def test_a_failing_handler_is_retried_attempts_times_then_dead_with_its_error(
    store: str, make_broker: Callable[..., str], where: str
) -> None:
    broker = make_broker(attempts=3)
    before = DECIDED[where]
    actor = logs("l1")
    async with worker_on(store, broker) as worker, Client.open(broker) as client:
        await client.request(actor, Append(1), timeout=WAIT)
        with pytest.raises(CommandFailed) as caught:
            await client.request(actor, Explode(where), message_id="x1", timeout=WAIT)
        letters = await dead_letters(client, 1)
        after = await client.request(actor, Append(2), timeout=WAIT)
        state = await worker.runtime.state(actor, refresh=True)
    reply = caught.value.reply
    assert isinstance(reply, Reply)
    assert (reply.status, reply.error_type) == ("failed", "HandlerError")
    assert DECIDED[where] - before == 3
    assert worker.stats.retried == 2
    assert [(x.message_id, x.error_type, x.attempts) for x in letters] == [
        ("x1", "HandlerError", 3)
    ]
    assert ("decide blew up" if where == "decide" else "evolve cannot apply") in letters[0].error
    assert after.status == "ok"
    assert state == (1, 2)  # nothing of the failed command was stored


# -- redelivery --------------------------------------------------------------------------


async def test_a_command_committed_before_is_not_applied_again(
    store: str, make_broker: Callable[..., str]
) -> None:
    """A worker that committed and died before its ack: the redelivered message finds its
    message id in the store."""
    broker = make_broker()
    async with Runtime.open(store, APP) as runtime:
        await runtime.send(A1, Deposit(7), message_id="m1")
    async with worker_on(store, broker) as worker, Client.open(broker) as client:
        reply = await client.request(A1, Deposit(7), message_id="m1", timeout=WAIT)
        assert (reply.status, reply.events) == ("duplicate", ("Deposited",))
        assert await worker.runtime.state(A1) == Account(balance=7)


class AckLost:
    """A delivery whose ack is lost on the way."""

    def __init__(self, delivery: Delivery, acked: asyncio.Event) -> None:
        self.delivery = delivery
        self.acked = acked

    async def ack(self) -> None:
        self.acked.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.delivery, name)


class LosesAcks:
    """A command queue whose acks never reach the broker: a worker that dies after commit."""

    def __init__(self, queue: CommandQueue) -> None:
        self.queue = queue
        self.attempts = queue.attempts
        self.committed = asyncio.Event()

    async def consume(self, handler: Callable[[Delivery], Coroutine[Any, Any, None]]) -> Consumer:
        async def forgetful(delivery: Delivery) -> None:
            await handler(AckLost(delivery, self.committed))

        return await self.queue.consume(forgetful)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


async def test_a_redelivery_after_commit_is_recognised_by_its_message_id(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker()
    async with Client.open(broker) as client:
        # The first worker commits, replies, and "dies" before its ack arrives.
        queue = LosesAcks(await open_queue(broker))
        runtime = await Runtime.open(store, APP)
        first = Worker(runtime, queue, APP)
        async with running(first):
            reply = await client.request(A1, Deposit(3), message_id="m1", timeout=WAIT)
            assert reply.status == "ok"
            await asyncio.wait_for(queue.committed.wait(), WAIT)
        await queue.queue.aclose()  # the broker takes the unacknowledged command back
        await runtime.aclose()
        async with worker_on(store, broker) as second:
            await until(lambda: second.stats.duplicates > 0)
            assert (second.stats.duplicates, second.stats.applied) == (1, 0)
            assert await second.runtime.state(A1) == Account(balance=3)
    opened = await open_store(store)
    try:
        events = await opened.loose_events(A1, VectorClock())
    finally:
        await opened.aclose()
    assert [e.type for e in events] == ["Deposited"]


# -- several workers ---------------------------------------------------------------------


async def test_one_worker_is_active_per_queue_and_another_takes_over(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker(queues=4)
    actors = [accounts(f"w{n}") for n in range(12)]
    async with (
        Client.open(broker) as client,
        Worker.open(APP, store=store, broker=broker) as first,
        Worker.open(APP, store=store, broker=broker) as second,
    ):
        first_run = asyncio.create_task(first.run())
        await first.ready()
        async with running(second):
            # The first to subscribe is the active consumer of every queue.
            await asyncio.gather(*(client.request(a, Deposit(1), timeout=WAIT) for a in actors))
            assert (first.stats.applied, second.stats.applied) == (12, 0)
            first.stop()  # the first one leaves; the second takes its queues over
            await first_run
            await asyncio.gather(*(client.request(a, Deposit(2), timeout=WAIT) for a in actors))
            assert (first.stats.applied, second.stats.applied) == (12, 12)
            states = [await second.runtime.state(a, refresh=True) for a in actors]
    assert all(s.balance == 3 for s in states)


async def test_a_stopped_worker_finishes_what_it_took_and_the_next_does_the_rest(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker(queues=4, prefetch=20)
    actors = [accounts(f"s{n}") for n in range(10)]
    n_each = 60
    async with Client.open(broker) as client:
        sends = [
            client.send(a, Deposit(1), message_id=f"{a.id}-{k}")
            for k in range(n_each)
            for a in actors
        ]
        await asyncio.gather(*sends)
        async with Worker.open(APP, store=store, broker=broker) as first:
            async with running(first):
                async with asyncio.timeout(WAIT):
                    while first.stats.applied < 20:
                        await asyncio.sleep(0)
            # run() returned: nothing it took is left unsettled
            assert first.inflight == 0
            done_first = first.stats.applied
        async with worker_on(store, broker) as second:
            total = n_each * len(actors)
            await until(lambda: first.stats.applied + second.stats.applied >= total)
            balances = [(await second.runtime.state(a, refresh=True)).balance for a in actors]
    assert done_first < n_each * len(actors)
    assert balances == [n_each] * len(actors)


async def test_one_actors_commands_are_applied_in_the_order_sent(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker(queues=3)
    actors = [logs(f"o{n}") for n in range(6)]

    async def send_in_order(client: Client, actor: ActorRef) -> None:
        for n in range(40):
            await client.send(actor, Append(n))

    async with Client.open(broker) as client:
        await asyncio.gather(*(send_in_order(client, a) for a in actors))
        async with worker_on(store, broker) as worker:
            await until(lambda: worker.stats.applied >= 6 * 40)
            states = [await worker.runtime.state(a) for a in actors]
    assert states == [tuple(range(40))] * 6


# -- publishing --------------------------------------------------------------------------


async def test_a_worker_with_an_event_bus_publishes_what_it_committed(
    store: str, make_broker: Callable[..., str]
) -> None:
    broker = make_broker()
    events = f"memory://events-{uuid.uuid4().hex}"
    bus = await open_bus(events)
    try:
        async with (
            bus.subscribe(["account.*"], queue="audit") as subscription,
            Worker.open(APP, store=store, broker=broker, events=events) as worker,
            running(worker),
            Client.open(broker) as client,
        ):
            await client.request(A1, Open("ann"), message_id="o1", timeout=WAIT)
            await client.request(A1, Deposit(4), message_id="d1", timeout=WAIT)
            await client.request(logs("l9"), Append(1), timeout=WAIT)
            got = [await asyncio.wait_for(anext(subscription), WAIT) for _ in range(2)]
    finally:
        await bus.aclose()
    assert [(d.routing_key, d.initiated_by) for d in got] == [
        ("account.Opened", "o1"),
        ("account.Deposited", "d1"),
    ]
    assert worker.publisher is not None and worker.publisher.published == 3
