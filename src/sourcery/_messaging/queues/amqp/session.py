"""One connection of a sharing consumer, and the leases, consumers and deliveries that live
and die with it (see :mod:`.leases` for why they must die together)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    ConsumerTag,
)
from aiormq.abc import DeliveredMessage

from sourcery._core.config import AmqpSettings
from sourcery._io.driver_errors import amqp
from sourcery._messaging.queues.base import Delivery, Handler

__all__ = ["SETTLE_YIELDS", "Session", "ending"]

log = logging.getLogger(__name__)

SETTLE_YIELDS = 5
"""Loop turns after a consumer is cancelled, for the deliveries that arrived before the
cancellation was confirmed to reach the handler (aiormq hands each over in a task)."""


def ending() -> tuple[type[BaseException], ...]:
    """What a lost connection, a closed channel or a broker's refusal raises: each ends the
    connection, and the consumer starts over on a new one."""
    errors = amqp()
    return (*errors.lost, *errors.failed)


@dataclass(eq=False)
class Session:
    """One connection, and the leases, consumers and deliveries that live and die with it."""

    settings: AmqpSettings
    connection: AbstractConnection
    control: AbstractChannel
    exchange: AbstractExchange
    """The workers' presence exchange."""
    ttl: float
    """Seconds a presence message lives."""
    wake: Callable[[], None]
    """Called when the session is lost."""
    held: set[int] = field(default_factory=set)
    channels: dict[int, AbstractChannel] = field(default_factory=dict)
    """The channel of each held lease's consumer (one per queue)."""
    queues: dict[int, AbstractQueue] = field(default_factory=dict)
    releasing: set[int] = field(default_factory=set)
    tags: dict[int, ConsumerTag] = field(default_factory=dict)
    unsettled: dict[int, int] = field(default_factory=dict)
    idle: dict[int, asyncio.Event] = field(default_factory=dict)
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(
        cls,
        settings: AmqpSettings,
        worker: str,
        *,
        timeout: float,
        ttl: float,
        wake: Callable[[], None],
        heard: Callable[[bytes], None],
    ) -> Session:
        """Connect, and hear the workers' presence (``heard``) on a queue of ``worker``'s."""
        connection = await aio_pika.connect(settings.url, timeout=timeout)
        try:
            control = await connection.channel(publisher_confirms=False)
            exchange = await control.declare_exchange(
                settings.workers_exchange, aio_pika.ExchangeType.FANOUT, durable=False
            )
            presence = await control.declare_queue(
                f"{settings.workers_exchange}.{worker}",
                exclusive=True,
                auto_delete=True,
                arguments={"x-message-ttl": int(ttl * 1000)},
            )
            await presence.bind(exchange, "")
            session = cls(settings, connection, control, exchange, ttl, wake)

            def lost(*_: object) -> None:
                session._lose()

            connection.close_callbacks.add(lost)
            control.close_callbacks.add(lost)

            async def on_presence(message: AbstractIncomingMessage) -> None:
                heard(message.body)

            await presence.consume(on_presence, no_ack=True)
        except BaseException:
            with contextlib.suppress(*ending(), asyncio.TimeoutError):
                await asyncio.wait_for(connection.close(), 5)
            raise
        return session

    def _lose(self) -> None:
        self.lost.set()
        self.wake()

    async def close(self) -> None:
        self.lost.set()
        with contextlib.suppress(*ending(), asyncio.TimeoutError):
            await asyncio.wait_for(self.connection.close(), 5)

    def forget(self) -> None:
        """After a loss: nothing of that connection is held any more."""
        self.held.clear()
        self.tags.clear()
        self.releasing.clear()
        self.channels.clear()
        self.queues.clear()
        for event in self.idle.values():
            event.set()  # its deliveries are void: nobody waits for them

    async def announce(self, body: bytes) -> None:
        """Publish a presence message."""
        message = aio_pika.Message(body, expiration=self.ttl, content_type="application/json")
        await self.exchange.publish(message, "")

    # -- unsettled deliveries ------------------------------------------------------------

    def started(self, index: int) -> None:
        self.unsettled[index] = self.unsettled.get(index, 0) + 1
        self._idle(index).clear()

    def settled(self, index: int) -> None:
        left = self.unsettled[index] = self.unsettled.get(index, 1) - 1
        if left <= 0:
            self._idle(index).set()

    def _idle(self, index: int) -> asyncio.Event:
        event = self.idle.get(index)
        if event is None:
            event = self.idle[index] = asyncio.Event()
            event.set()
        return event

    async def all_settled(self, index: int) -> None:
        for _ in range(SETTLE_YIELDS):
            await asyncio.sleep(0)
        await self._idle(index).wait()

    # -- leases --------------------------------------------------------------------------

    async def claim(
        self, index: int, handler: Handler, wrap: Callable[[AbstractIncomingMessage], Delivery]
    ) -> bool:
        """Try to take lease ``index``; if it is ours, consume its queue on the channel
        that took it, each delivery ``wrap``-ped and tracked, to ``handler``."""
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            await channel.declare_queue(
                self.settings.lease_queue(index), exclusive=True, durable=False
            )
        except aiormq.exceptions.ChannelLockedResource:
            # Another connection holds it; the broker closed this channel.
            return False
        self.held.add(index)
        self.channels[index] = channel
        self.unsettled.setdefault(index, 0)

        def closed(*_: object) -> None:
            if self.channels.get(index) is channel:  # not closed by a release: start over
                self._lose()

        channel.close_callbacks.add(closed)
        # A consumer the broker cancels by itself (its queue deleted): start over too.
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(closed)
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        # Declared by AmqpQueue.open (and again by its robust channel after a restart).
        queue = await channel.get_queue(self.settings.command_queue(index), ensure=False)
        self.queues[index] = queue
        lost = self.lost
        tenure = object()  # this turn as the queue's consumer (Runtime.send's ``tenure``)

        async def on_message(message: DeliveredMessage) -> None:
            if lost.is_set():
                # Read after its connection was lost (e.g. from a buffer, after a pause):
                # void, and already the next owner's; not started here.
                return
            incoming = cast(AbstractIncomingMessage, _Incoming(message))
            await handler(_Tracked(wrap(incoming), self, index, tenure))

        # Straight on aiormq's channel, which hands each delivery over in a task of its
        # own, in arrival order: aio-pika's consume would add a second task and an
        # IncomingMessage (every property parsed) per delivery.
        consuming = await underlay.basic_consume(queue.name, on_message)
        self.tags[index] = consuming.consumer_tag or ""
        return True

    async def stop_consuming(self, index: int) -> None:
        """Cancel the consumer on queue ``index`` (its lease stays held)."""
        tag = self.tags.pop(index, None)
        queue = self.queues.get(index)
        if tag is not None and queue is not None:
            await queue.cancel(tag)

    async def release(self, index: int) -> bool:
        """Stop consuming queue ``index``, wait for its deliveries, then free its lease;
        False if it was being released already, or not held, or the session was lost."""
        if index in self.releasing or index not in self.held:
            return False
        self.releasing.add(index)
        try:
            await self.stop_consuming(index)
            await self.all_settled(index)
            if self.lost.is_set():
                return False
            # Closing its channel gives back anything delivered that never reached the
            # handler (none is expected): the next owner starts from it, in order.
            channel = self.channels.pop(index, None)
            self.queues.pop(index, None)
            if channel is not None:
                await channel.close()
            await self.control.queue_delete(self.settings.lease_queue(index))
            self.held.discard(index)
            return True
        finally:
            self.releasing.discard(index)


class _Tracked:
    """A delivery counted as unsettled on its queue until it is acked, retried or dead."""

    __slots__ = (
        "_delivery",
        "_index",
        "_session",
        "attempts",
        "body",
        "message_id",
        "reply_to",
        "tenure",
    )

    def __init__(self, delivery: Delivery, session: Session, index: int, tenure: object) -> None:
        self._delivery = delivery
        self.tenure = tenure
        """The same object for every delivery of one turn of this consumer on the queue."""
        self._session: Session | None = session
        self._index = index
        self.body = delivery.body
        self.message_id = delivery.message_id
        self.attempts = delivery.attempts
        self.reply_to = delivery.reply_to
        session.started(index)

    @property
    def live(self) -> bool:
        return self._session is not None and self._delivery.live

    def _done(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.settled(self._index)

    async def ack(self) -> None:
        try:
            await self._delivery.ack()
        finally:
            self._done()

    async def retry(self) -> None:
        try:
            await self._delivery.retry()
        finally:
            self._done()

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        try:
            if attempts is None:
                await self._delivery.dead(error_type, error)
            else:
                await self._delivery.dead(error_type, error, attempts=attempts)
        finally:
            self._done()


class _Incoming:
    """What :class:`AmqpDelivery` reads of an ``IncomingMessage``, taken from aiormq's
    delivery as it is (the channel, for settling, only while it is open)."""

    __slots__ = ("_channel", "body", "delivery_tag", "headers", "message_id", "reply_to")

    def __init__(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        self._channel = message.channel
        self.body = message.body
        self.delivery_tag = message.delivery_tag
        self.headers = properties.headers or {}
        self.message_id = properties.message_id
        self.reply_to = properties.reply_to

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError
        return self._channel

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        if self.delivery_tag is not None:
            await self.channel.basic_nack(self.delivery_tag, multiple=multiple, requeue=requeue)
