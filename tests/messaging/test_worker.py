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

from sourcery._core.actor import ActorType
from sourcery._core.clock import VectorClock
from sourcery._core.errors import BrokerError, CommandFailed, Rejected
from sourcery._core.records import ActorRef
from sourcery._engine.runtime import Runtime
from sourcery._messaging.client import Client
from sourcery._messaging.queues import CommandQueue, Consumer, DeadLetter, Delivery, open_queue
from sourcery._messaging.topics import open_bus
from sourcery._messaging.wire import Reply, decode_reply, encode_command
from sourcery._messaging.worker import Worker
from sourcery._stores import open_store
from sourcery.examples.bank import Account, Deposit, Open, Withdraw, accounts

WAIT = 10.0

# -- an actor type whose decide or evolve can be made to fail ------------------------------


class Append(msgspec.Struct, frozen=True):
    n: int


class Explode(msgspec.Struct, frozen=True):
    where: str
    """"decide" or "evolve"."""


class Flaky(msgspec.Struct, frozen=True):
    """Fails the first time it is decided (per ``key``), then appends 0."""

    key: str


class Appended(msgspec.Struct, frozen=True):
    n: int


class Broken(msgspec.Struct, frozen=True):
    """An event evolve cannot apply."""


DECIDED: Counter[str] = Counter()
"""How often decide ran per command kind (per key for Flaky), across the test session."""


def decide(state: tuple[int, ...], command: Append | Explode | Flaky) -> list[Appended | Broken]:
    match command:
        case Append(n):
            if n < 0:
                raise Rejected(f"negative: {n}")
            return [Appended(n)]
        case Flaky(key):
            DECIDED[key] += 1
            if DECIDED[key] == 1:
                raise ConnectionResetError("a transient failure")
            return [Appended(0)]
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


logs: ActorType[tuple[int, ...], Append | Explode | Flaky, Appended | Broken] = ActorType(
    name="log",
    initial=(),
    decide=decide,
    evolve=evolve,
    commands=[Append, Explode, Flaky],
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
        untyped: ActorRef = A1  # the type checker would refuse Close() for an account
        with pytest.raises(CommandFailed) as caught:
            await client.request(untyped, Close(), message_id="c1", timeout=WAIT)
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


class Abandoned:
    """A handler that takes deliveries and never settles them."""

    def __init__(self, message_ids: set[str]) -> None:
        self.message_ids = message_ids
        self.attempts: dict[str, int] = {}
        self.all_taken = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.attempts[delivery.message_id] = delivery.attempts
        if set(self.attempts) >= self.message_ids:
            self.all_taken.set()


async def abandon(broker: str, message_ids: set[str]) -> dict[str, int]:
    """A consumer takes these commands and goes away without settling them, as a worker
    killed under them would; return each one's ``attempts`` as it was delivered."""
    queue = await open_queue(broker)
    taker = Abandoned(message_ids)
    try:
        await queue.consume(taker)
        await asyncio.wait_for(taker.all_taken.wait(), WAIT)
    finally:
        await queue.aclose()  # the queue takes them back: their next delivery counts one more
    return taker.attempts


async def test_deliveries_that_were_not_failures_do_not_count_against_a_command(
    store: str, make_broker: Callable[..., str]
) -> None:
    """Commands delivered 3 times to consumers that went away (killed workers, dropped
    connections): a worker counts only their own failures. One that fails once is applied;
    one that always fails goes to the dead letters after exactly ``attempts`` failures."""
    broker = make_broker(attempts=3)
    key = f"flaky-{uuid.uuid4().hex}"
    before = DECIDED["decide"]
    flaky, broken = logs("r1"), logs("r2")
    async with Client.open(broker) as client:
        await client.send(flaky, Flaky(key), message_id="f1")
        await client.send(broken, Explode("decide"), message_id="x1")
        delivered = [await abandon(broker, {"f1", "x1"}) for _ in range(3)]
        assert delivered == [{"f1": n, "x1": n} for n in (1, 2, 3)]
        async with worker_on(store, broker) as worker:
            await until(lambda: worker.stats.applied + worker.stats.dead == 2)
            letters = await dead_letters(client, 1)
            state = await worker.runtime.state(flaky)
    assert state == (0,)
    assert DECIDED[key] == 2
    assert DECIDED["decide"] - before == 3
    assert [(x.message_id, x.error_type, x.attempts) for x in letters] == [
        ("x1", "HandlerError", 3)
    ]
    assert (worker.stats.applied, worker.stats.dead, worker.stats.retried) == (1, 1, 3)


class Faulty:
    """A delivery that records how it is settled; with ``fails="ack"`` its ack raises
    (after acking)."""

    def __init__(self, delivery: Delivery, settles: list[str], fails: str) -> None:
        self.delivery = delivery
        self.settles = settles
        self.fails = fails

    async def ack(self) -> None:
        self.settles.append("ack")
        await self.delivery.ack()
        if self.fails == "ack":
            raise RuntimeError("the ack went wrong")

    async def retry(self) -> None:
        self.settles.append("retry")
        await self.delivery.retry()

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        self.settles.append("dead")
        await self.delivery.dead(error_type, error, attempts=attempts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.delivery, name)


class FaultyQueue:
    """A command queue whose deliveries are :class:`Faulty`; with ``fails="reply"``, every
    reply raises."""

    def __init__(self, queue: CommandQueue, fails: str) -> None:
        self.queue = queue
        self.attempts = queue.attempts
        self.fails = fails
        self.settles: dict[str, list[str]] = {}

    async def consume(self, handler: Callable[[Delivery], Coroutine[Any, Any, None]]) -> Consumer:
        async def wrapped(delivery: Delivery) -> None:
            settles = self.settles.setdefault(delivery.message_id, [])
            await handler(Faulty(delivery, settles, self.fails))

        return await self.queue.consume(wrapped)

    async def reply(self, reply_to: str, body: bytes, *, correlation_id: str) -> None:
        if self.fails == "reply":
            raise BrokerError("the reply channel is gone")
        await self.queue.reply(reply_to, body, correlation_id=correlation_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


@pytest.mark.parametrize("fails", ["reply", "ack"])
async def test_a_failing_reply_or_ack_is_logged_and_never_settles_a_command_twice(
    store: str, make_broker: Callable[..., str], fails: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(attempts=2)
    queue = FaultyQueue(await open_queue(broker), fails)
    sender = await open_queue(broker)
    replies: list[str] = []
    try:
        address = await sender.replies(lambda cid, body: replies.append(cid))
        cases: list[tuple[ActorRef, object, str]] = [
            (A1, Open("ann"), "o1"),
            (logs("l5"), Explode("decide"), "x1"),
        ]
        for actor, command, message_id in cases:
            body = encode_command(actor, command, message_id)
            await sender.send(actor, body, message_id=message_id, reply_to=address)
        async with Runtime.open(store, APP) as runtime:
            worker = Worker(runtime, queue, APP)
            async with running(worker):
                await until(lambda: "ack" in queue.settles.get("o1", ()))
                await until(lambda: "dead" in queue.settles.get("x1", ()))
            # Stopped: every delivery it took is settled, and nothing more can happen.
            state = await runtime.state(A1)
        letters = await sender.dead_letters()
    finally:
        await sender.aclose()
        await queue.queue.aclose()
    assert queue.settles == {"o1": ["ack"], "x1": ["retry", "dead"]}
    assert (worker.stats.applied, worker.stats.duplicates, worker.stats.dead) == (1, 0, 1)
    assert worker.stats.retried == 1
    assert state == Account(owner="ann")
    assert [(x.message_id, x.attempts) for x in letters] == [("x1", 2)]
    logged = {r.getMessage() for r in caplog.records if r.exc_info}
    if fails == "reply":
        assert "could not reply to command o1" in logged
        assert "could not reply to command x1" in logged
    else:
        assert "could not settle command o1 (ack)" in logged


class TakenBack:
    """A delivery the queue has taken back (as when its channel is lost): no longer live,
    whatever its channel says; records any settle."""

    def __init__(self, delivery: Delivery, settles: list[str]) -> None:
        self.delivery = delivery
        self.settles = settles
        self.live = False

    async def ack(self) -> None:
        self.settles.append("ack")

    async def retry(self) -> None:
        self.settles.append("retry")

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        self.settles.append("dead")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.delivery, name)


async def test_a_delivery_taken_back_is_neither_run_nor_settled(
    store: str, make_broker: Callable[..., str]
) -> None:
    """Another worker may run it (and the actor's later commands) already: running it here
    as well would put two writers on the actor."""
    broker = make_broker()
    actor = logs("tb")
    settles: list[str] = []
    async with Client.open(broker) as client:
        await client.send(actor, Append(1), message_id="t1")
        queue = await open_queue(broker)

        async def taken_back(handler: Callable[[Delivery], Coroutine[Any, Any, None]]) -> Any:
            async def wrapped(delivery: Delivery) -> None:
                await handler(TakenBack(delivery, settles))

            return await consume(wrapped)

        consume, queue.consume = queue.consume, taken_back  # type: ignore[method-assign]
        try:
            async with Runtime.open(store, APP) as runtime:
                worker = Worker(runtime, queue, APP)
                async with running(worker):
                    await until(lambda: worker.stats.abandoned == 1)
                assert await runtime.state(actor) == ()
        finally:
            await queue.aclose()  # its delivery goes back to the queue, as it really would
        assert settles == []
        assert (worker.stats.applied, worker.stats.retried, worker.stats.dead) == (0, 0, 0)
        async with worker_on(store, broker) as second:
            await until(lambda: second.stats.applied == 1)
            assert await second.runtime.state(actor) == (1,)
            assert second.stats.duplicates == 0


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
