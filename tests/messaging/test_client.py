"""The client: sends, requests and their replies, timeouts, closing, a lost connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from private_broker import PrivateBroker
from services import memory_queue_url

from sourcery._core.errors import (
    BrokerUnavailable,
    ClosedError,
    CommandTimeout,
    ConfigurationError,
    PayloadTooLarge,
)
from sourcery._messaging.client import Client
from sourcery._messaging.queues import CommandQueue, Delivery, open_queue
from sourcery._messaging.queues.amqp import AmqpQueue
from sourcery._messaging.wire import CommandDecoder, Reply, encode_reply
from sourcery._messaging.worker import Worker
from sourcery.examples.bank import Account, Deposit, Open, accounts

WAIT = 10.0
A1 = accounts("a1")


@asynccontextmanager
async def worker_on(store: str, broker: str) -> AsyncIterator[Worker]:
    async with Worker.open(accounts, store=store, broker=broker) as worker:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.ready(), WAIT)
        try:
            yield worker
        finally:
            worker.stop()
            await task


async def test_send_returns_the_message_id_of_what_it_queued(
    make_broker: Callable[..., str],
) -> None:
    broker = make_broker()
    async with Client.open(broker) as client:
        assert await client.send(A1, Deposit(3), message_id="mine") == "mine"
        made = await client.send(A1, Deposit(4))
        later = await client.send(A1, Deposit(5))
        got: asyncio.Queue[Delivery] = asyncio.Queue()

        async def keep(delivery: Delivery) -> None:
            await got.put(delivery)

        await client.queue.consume(keep)
        deliveries = [await asyncio.wait_for(got.get(), WAIT) for _ in range(3)]
    decoder = CommandDecoder([accounts])
    commands = []
    for d in deliveries:
        envelope = decoder.envelope(d.body)
        assert d.message_id == envelope.message_id
        commands.append((envelope.message_id, decoder.command(envelope)))
    assert commands == [
        ("mine", (A1, Deposit(3))),
        (made, (A1, Deposit(4))),
        (later, (A1, Deposit(5))),
    ]
    assert made != later and len(made) == 32
    assert made < later  # k-ordered


async def test_many_concurrent_requests_each_get_their_own_reply(
    tmp_path: Path, make_broker: Callable[..., str]
) -> None:
    broker = make_broker()
    actors = [accounts(f"c{n}") for n in range(50)]
    async with worker_on(f"sqlite:///{tmp_path / 's.db'}", broker) as worker:
        async with Client.open(broker) as client:
            replies = await asyncio.gather(
                *(
                    client.request(a, Deposit(k + 1), message_id=f"{a.id}-{k}", timeout=WAIT)
                    for k in range(6)
                    for a in actors
                )
            )
        assert [r.message_id for r in replies] == [f"{a.id}-{k}" for k in range(6) for a in actors]
        assert all(
            r.status == "ok" and r.actor == a for r, a in zip(replies, actors * 6, strict=True)
        )
        states = [await worker.runtime.state(a) for a in actors]
    assert all(s == Account(balance=21) for s in states)


async def test_a_request_nobody_answers_times_out_and_stays_queued(
    tmp_path: Path, make_broker: Callable[..., str]
) -> None:
    broker = make_broker()
    async with Client.open(broker) as client:
        with pytest.raises(CommandTimeout) as caught:
            await client.request(A1, Deposit(9), message_id="late", timeout=0.2)
        assert isinstance(caught.value, TimeoutError)
        assert "late" in str(caught.value)
        async with worker_on(f"sqlite:///{tmp_path / 's.db'}", broker) as worker:
            # A later request with the same id gets the answer of the queued one.
            reply = await client.request(A1, Deposit(9), message_id="late", timeout=WAIT)
            assert reply.status in ("ok", "duplicate")
            assert await worker.runtime.state(A1) == Account(balance=9)


async def test_a_malformed_reply_is_ignored_and_the_real_one_still_counts(
    make_broker: Callable[..., str],
) -> None:
    broker = make_broker()
    async with Client.open(broker) as client:
        replier = await open_queue(broker)
        try:
            got: asyncio.Queue[Delivery] = asyncio.Queue()

            async def keep(delivery: Delivery) -> None:
                await got.put(delivery)

            await replier.consume(keep)
            request = asyncio.create_task(client.request(A1, Open("x"), message_id="r1"))
            delivery = await asyncio.wait_for(got.get(), WAIT)
            assert delivery.reply_to
            await replier.reply(delivery.reply_to, b"\xc1junk", correlation_id="r1")
            real = Reply(message_id="r1", actor_type="account", actor_id="a1", status="ok")
            await replier.reply(delivery.reply_to, encode_reply(real), correlation_id="r1")
            assert await asyncio.wait_for(request, WAIT) == real
            await delivery.ack()
        finally:
            await replier.aclose()


async def test_closing_fails_waiting_requests_and_refuses_new_ones(
    make_broker: Callable[..., str],
) -> None:
    client = await Client.open(make_broker())
    waiting = asyncio.create_task(client.request(A1, Open("x"), timeout=WAIT))
    while not client._waiting:
        await asyncio.sleep(0.01)
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(ClosedError):
        await waiting
    with pytest.raises(ClosedError):
        await client.send(A1, Open("x"))


class CancelledByClose:
    """A queue whose broker client, like aiormq, cancels the calls it has under way when
    the connection closes: ``replies`` waits until ``aclose`` and then raises
    CancelledError, though nobody cancelled the caller's task."""

    def __init__(self, queue: CommandQueue) -> None:
        self.queue = queue
        self.closed = asyncio.Event()
        self.entered = asyncio.Event()

    async def replies(self, handler: Callable[[str, bytes], None]) -> str:
        self.entered.set()
        await self.closed.wait()
        raise asyncio.CancelledError

    async def aclose(self) -> None:
        self.closed.set()
        await self.queue.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


async def test_a_request_under_way_when_the_client_closes_gets_closed_error() -> None:
    queue = CancelledByClose(await open_queue(memory_queue_url()))
    client = Client(queue, owns=True)
    waiting = asyncio.create_task(client.request(A1, Open("x"), timeout=WAIT))
    await asyncio.wait_for(queue.entered.wait(), WAIT)
    await client.aclose()
    with pytest.raises(ClosedError, match="closed while sending"):
        await waiting
    assert not waiting.cancelled()


async def test_too_large_a_command_is_refused_before_sending(
    make_broker: Callable[..., str],
) -> None:
    async with Client.open(make_broker(), max_message=64) as client:
        with pytest.raises(PayloadTooLarge):
            await client.send(A1, Open("x" * 100))


async def test_the_broker_url_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SOURCERY_BROKER", raising=False)
    with pytest.raises(ConfigurationError, match="SOURCERY_BROKER"):
        Client.open()
    url = memory_queue_url()
    monkeypatch.setenv("SOURCERY_BROKER", url)
    async with Client.open() as client:
        await client.send(A1, Open("x"))
    async with Client.open(url) as other:
        assert isinstance(other.queue, type(client.queue))


async def test_an_unreachable_broker_is_broker_unavailable() -> None:
    with pytest.raises(BrokerUnavailable, match="cannot connect"):
        await AmqpQueue.open("amqp://guest:guest@127.0.0.1:1/?prefix=nowhere")


async def test_after_a_lost_connection_sends_wait_for_the_reconnection_and_workers_resume(
    tmp_path: Path, private_broker: PrivateBroker
) -> None:
    # The private node closes the client's and the worker's connections, as a restart would.
    broker = private_broker.url()
    client_name = f"client-{uuid.uuid4().hex}"
    worker_name = f"worker-{uuid.uuid4().hex}"
    async with (
        Client.open(f"{broker}&name={client_name}") as client,
        worker_on(f"sqlite:///{tmp_path / 's.db'}", f"{broker}&name={worker_name}") as worker,
    ):
        assert (await client.request(A1, Deposit(1), timeout=WAIT)).status == "ok"
        assert private_broker.close_connections(client_name)
        assert private_broker.close_connections(worker_name)
        # Sent while both connections are being restored: confirmed once they are back.
        ids = await asyncio.gather(*(client.send(A1, Deposit(1)) for _ in range(20)))
        assert len(set(ids)) == 20
        reply = await client.request(A1, Deposit(1), timeout=WAIT * 2)
        assert reply.status == "ok"
        async with asyncio.timeout(WAIT):
            while worker.stats.applied < 22:
                await asyncio.sleep(0.05)
        assert (await worker.runtime.state(A1)).balance == 22
