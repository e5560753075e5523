"""The RabbitMQ bus: one durable topic exchange ``<prefix>.events``.

Every event goes out persistent, under routing key ``<actor type>.<event type>``, and
``publish`` returns only once the broker confirmed all of them. A subscription binds its
own queue to the exchange, one binding per pattern: a named one gets a durable queue
``<prefix>.events.<name>`` that keeps events while nobody listens; an anonymous one gets
an exclusive queue that goes with its connection.

A lost connection is not papered over: publishing raises BrokerUnavailable, and an open
subscription's iterator raises it (an exclusive queue may have lost messages with the
connection; catch-up subscriptions then read those from the store). The next call
connects again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Self

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from sourcery._core.config import AmqpSettings, parse_amqp_url, redact
from sourcery._core.errors import (
    BrokerError,
    BrokerUnavailable,
    ClosedError,
    ConfigurationError,
    DecodingError,
)
from sourcery._core.records import Cursor, EventRecord
from sourcery._io.driver_errors import amqp
from sourcery._messaging.topics.base import (
    Delivery,
    check_queue_name,
    decode_message,
    encode_message,
    routing_key,
)
from sourcery._messaging.topics.patterns import check_pattern

__all__ = ["AmqpBus"]

log = logging.getLogger(__name__)


class AmqpBus:
    """An :class:`~sourcery._messaging.topics.base.EventBus` on a RabbitMQ topic exchange."""

    def __init__(self, settings: AmqpSettings) -> None:
        self.settings = settings
        self.url = redact(settings.url)
        self.name = f"amqp:{settings.prefix}"
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()
        self._subscriptions: set[_AmqpSubscription] = set()
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> AmqpBus:
        """Connect and declare the exchange, so that a wrong URL fails here."""
        bus = cls(parse_amqp_url(url))
        try:
            await bus._publishing()
        except BaseException:
            await bus.aclose()
            raise
        return bus

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception as exc:  # closing a dead connection: nothing left to release
                log.debug("closing the AMQP connection failed: %r", exc)

    def _translated(self, what: str) -> AbstractContextManager[None]:
        """aio-pika's errors become the library's own, with the cause chained."""
        return amqp().translated(f"{what} on {self.url} failed")

    async def _connect(self) -> AbstractConnection:
        """The bus's connection, made again if it was lost. Callers hold ``_lock``."""
        if self._closed:
            raise ClosedError("the bus is closed")
        connection = self._connection
        if connection is None or connection.is_closed:
            self._channel = self._exchange = None
            with self._translated("connecting"):
                connection = await aio_pika.connect(self.settings.url)
            self._connection = connection
        return connection

    async def _declare(self, channel: AbstractChannel) -> AbstractExchange:
        with self._translated("declaring the events exchange"):
            return await channel.declare_exchange(
                self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )

    async def _publishing(self) -> AbstractExchange:
        async with self._lock:
            connection = await self._connect()
            if self._exchange is None or self._channel is None or self._channel.is_closed:
                with self._translated("opening a channel"):
                    self._channel = await connection.channel(publisher_confirms=True)
                self._exchange = await self._declare(self._channel)
            return self._exchange

    async def publish(self, events: Sequence[tuple[Cursor, EventRecord]]) -> None:
        if not events:
            return
        messages = [
            (
                routing_key(record),
                aio_pika.Message(
                    encode_message(position, record),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="application/msgpack",
                    type=record.type,
                    message_id=record.id.hex(),
                    timestamp=record.timestamp / 1000,
                    headers={
                        "x-sourcery-position": str(position.seq),
                        "x-sourcery-actor": f"{record.actor_type}/{record.actor_id}",
                        "x-sourcery-version": record.version,
                    },
                ),
            )
            for position, record in events
        ]
        exchange = await self._publishing()
        with self._translated("publishing events"):
            # Confirms come back asynchronously; waiting for them all at once keeps the
            # round trips off the critical path. Unroutable (no subscriber) is fine.
            await asyncio.gather(
                *(exchange.publish(m, routing_key=key, mandatory=False) for key, m in messages)
            )

    def subscribe(self, patterns: Sequence[str], *, queue: str | None = None) -> _AmqpSubscription:
        if isinstance(patterns, str):
            raise ConfigurationError("patterns is a sequence of patterns, not one str")
        checked = [check_pattern(p) for p in patterns]
        if not checked:
            raise ConfigurationError("a subscription needs at least one pattern")
        if queue is not None:
            check_queue_name(queue)
        return _AmqpSubscription(self, checked, queue)


_CLOSED: Any = object()


class _AmqpSubscription:
    def __init__(self, bus: AmqpBus, patterns: list[str], name: str | None) -> None:
        self._bus = bus
        self._patterns = patterns
        self._name = name
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._unacked: AbstractIncomingMessage | None = None
        self._closed = False
        self.dropped = 0
        """Messages on the exchange that were not well-formed events (logged, rejected)."""

    @property
    def queue_name(self) -> str | None:
        return None if self._queue is None else self._queue.name

    async def __aenter__(self) -> _AmqpSubscription:
        bus = self._bus
        if self._channel is not None or self._closed:
            raise BrokerError("a subscription is bound once")
        settings = bus.settings
        async with bus._lock:
            connection = await bus._connect()
        try:
            with bus._translated("subscribing"):
                channel = await connection.channel(publisher_confirms=False)
                self._channel = channel
                channel.close_callbacks.add(self._on_close)
                await channel.set_qos(prefetch_count=settings.prefetch)
                exchange = await bus._declare(channel)
                if self._name is None:
                    queue = await channel.declare_queue(
                        f"{settings.events_exchange}.anonymous-{uuid.uuid4().hex}",
                        exclusive=True,
                        auto_delete=True,
                    )
                else:
                    queue = await channel.declare_queue(
                        f"{settings.events_exchange}.{self._name}", durable=True
                    )
                for pattern in self._patterns:
                    await queue.bind(exchange, routing_key=pattern)
                self._queue = queue
                await queue.consume(self._on_message)
        except BaseException:
            await self.aclose()
            raise
        bus._subscriptions.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    def _on_close(self, _channel: object, exc: BaseException | None = None) -> None:
        self._inbox.put_nowait(_CLOSED)

    async def aclose(self) -> None:
        """Stop consuming; unacknowledged messages go back to the queue."""
        if self._closed:
            return
        self._closed = True
        self._bus._subscriptions.discard(self)
        channel, self._channel = self._channel, None
        self._inbox.put_nowait(_CLOSED)
        if channel is not None and not channel.is_closed:
            try:
                await channel.close()
            except Exception as exc:  # the channel died with its connection
                log.debug("closing a subscription channel failed: %r", exc)

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        if self._queue is None and not self._closed:
            raise BrokerError("use the subscription with 'async with' first")
        unacked, self._unacked = self._unacked, None
        if unacked is not None and not self._closed:
            with self._bus._translated("acknowledging an event"):
                await unacked.ack()
        while True:
            message = await self._inbox.get()
            if message is _CLOSED:
                if self._closed:
                    self._inbox.put_nowait(_CLOSED)
                    raise ClosedError("the subscription is closed")
                self._closed = True
                raise BrokerUnavailable(f"the subscription's channel on {self._bus.url} closed")
            try:
                delivery = decode_message(message.body, message.routing_key)
            except DecodingError as exc:
                self.dropped += 1
                log.warning(
                    "dropping a message on %s that is not an event: %s",
                    self._bus.settings.events_exchange,
                    exc,
                )
                with self._bus._translated("rejecting a message"):
                    await message.reject(requeue=False)
                continue
            self._unacked = message
            return delivery
