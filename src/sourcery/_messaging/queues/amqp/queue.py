"""The command queues on RabbitMQ: sending, consuming, replies and dead letters.

Sends are persistent, mandatory and confirmed: ``send`` returns once the queue holds the
command on disk. The sender picks the queue of an actor with
:func:`~sourcery._messaging.queues.base.queue_index` and publishes to it through the
default exchange, so one actor's commands always go to the same queue, across broker
restarts too (RabbitMQ's consistent-hash exchange rebuilds its ring on a restart and then
routes most keys elsewhere). A send while the broker is away waits for it (the connection
is robust, see :mod:`.connection`) up to ``send_timeout`` and then raises
:class:`BrokerUnavailable`. Deliveries that were in flight when the connection broke are
redelivered by the broker; the worker recognises them by message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    ConsumerTag,
    DeliveryMode,
)

from sourcery._core.config import AmqpSettings, parse_amqp_url
from sourcery._core.errors import BrokerError, BrokerUnavailable, ClosedError
from sourcery._core.records import ActorRef
from sourcery._io.driver_errors import amqp_channel
from sourcery._messaging.queues.amqp.connection import (
    DEFAULT_SEND_TIMEOUT,
    connect,
    reconnect_interval,
)
from sourcery._messaging.queues.amqp.delivery import AmqpDelivery, dead_letter
from sourcery._messaging.queues.amqp.leases import LeasedConsumer
from sourcery._messaging.queues.amqp.topology import check_queue_count, declare, queue_exists
from sourcery._messaging.queues.base import (
    ACTOR_HEADER,
    DeadLetter,
    Handler,
    cancelled_by_close,
    queue_index,
    routing_key,
)

__all__ = ["AmqpQueue"]

log = logging.getLogger(__name__)


class _AmqpConsumer:
    def __init__(self, queue: AmqpQueue, tags: list[tuple[AbstractQueue, ConsumerTag]]) -> None:
        self._queue = queue
        self._tags = tags

    async def cancel(self) -> None:
        tags, self._tags = self._tags, []
        for queue, tag in tags:
            try:
                await queue.cancel(tag)
            except amqp_channel().lost as exc:
                log.debug("could not cancel consumer %s: %r", tag, exc)
        # Deliveries that arrived before the cancellation was confirmed are already on
        # their way to the handler (aio-pika hands each over in a task): let them start.
        for _ in range(3):
            await asyncio.sleep(0)


class AmqpQueue:
    """A :class:`~sourcery._messaging.queues.CommandQueue` on RabbitMQ. Open with ``await
    AmqpQueue.open(url)``."""

    def __init__(
        self,
        settings: AmqpSettings,
        connection: AbstractRobustConnection,
        *,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.send_timeout = send_timeout
        self._connection = connection
        self._lock = asyncio.Lock()
        self._publisher: AbstractRobustChannel | None = None
        self._dead: AbstractExchange | None = None
        self._replier: AbstractRobustChannel | None = None
        self._consumers: list[AbstractRobustChannel] = []
        self._leased: list[LeasedConsumer] = []
        self._reconnect_interval = reconnect_interval(settings.url)
        self._reply_queue: str | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, send_timeout: float = DEFAULT_SEND_TIMEOUT) -> AmqpQueue:
        """Connect and declare the topology (idempotent)."""
        settings = parse_amqp_url(url)
        connection = await connect(settings, timeout=send_timeout)
        queue = cls(settings, connection, send_timeout=send_timeout)
        try:
            await queue._publishing()
        except BaseException:
            await connection.close()
            raise
        return queue

    @property
    def attempts(self) -> int:
        return self.settings.attempts

    @property
    def closed(self) -> bool:
        return self._closed

    # -- channels ------------------------------------------------------------------------

    async def _channel(self, *, confirms: bool) -> AbstractRobustChannel:
        if self._closed:
            raise ClosedError("the command queue is closed")
        try:
            channel = await self._connection.channel(
                publisher_confirms=confirms, on_return_raises=confirms
            )
        except amqp_channel().lost as exc:
            raise BrokerUnavailable(f"cannot open a RabbitMQ channel: {exc!r}") from exc
        assert isinstance(channel, AbstractRobustChannel)
        return channel

    async def _publishing(self) -> tuple[AbstractRobustChannel, AbstractExchange]:
        """The confirming channel (commands go through its default exchange, straight to
        their queue) and the dead-letter exchange."""
        if self._publisher is None or self._dead is None:
            async with self._lock:
                if self._publisher is None or self._dead is None:
                    await check_queue_count(self._connection, self.settings)
                    channel = await self._channel(confirms=True)
                    try:
                        dead, _ = await declare(channel, self.settings)
                    except amqp_channel().failed as exc:
                        raise BrokerError(f"cannot declare the command queues: {exc}") from exc
                    self._publisher, self._dead = channel, dead
        return self._publisher, self._dead

    async def _queue_exists(self, name: str) -> bool:
        return await queue_exists(self._connection, name)

    async def _replying(self) -> AbstractRobustChannel:
        if self._replier is None:
            async with self._lock:
                if self._replier is None:
                    try:
                        self._replier = await self._channel(confirms=False)
                    except RuntimeError as exc:
                        # aio-pika, while the connection is down: "Connection was not opened".
                        error = f"cannot open a RabbitMQ channel: {exc!r}"
                        raise BrokerUnavailable(error) from exc
        return self._replier

    # -- sending -------------------------------------------------------------------------

    async def send(
        self, actor: ActorRef, body: bytes, *, message_id: str, reply_to: str | None = None
    ) -> None:
        channel, _ = await self._publishing()
        key = routing_key(actor)
        message = aio_pika.Message(
            body,
            headers={ACTOR_HEADER: key},
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message_id,
            reply_to=reply_to,
        )
        queue = self.settings.command_queue(queue_index(key, self.settings.queues))
        await self._confirmed(channel.default_exchange, message, queue)

    async def _publish_dead(self, message: aio_pika.Message) -> None:
        _, dead = await self._publishing()
        await self._confirmed(dead, message, "")

    async def _confirmed(
        self, exchange: AbstractExchange, message: aio_pika.Message, key: str
    ) -> None:
        """Publish until confirmed; wait out a lost connection up to ``send_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_timeout
        while True:
            if self._closed:
                raise ClosedError("the command queue is closed")
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await exchange.publish(message, key, mandatory=True)
                return
            except aiormq.exceptions.DeliveryError as exc:
                raise BrokerError(
                    f"RabbitMQ refused command {message.message_id!r}: {exc!r}"
                ) from exc
            except TimeoutError as exc:
                raise BrokerUnavailable(
                    f"RabbitMQ did not confirm command {message.message_id!r} within "
                    f"{self.send_timeout:g} s"
                ) from exc
            except asyncio.CancelledError:
                if cancelled_by_close(self._closed):
                    raise ClosedError("the command queue was closed while sending") from None
                raise
            except amqp_channel().lost as exc:
                # Unknown whether it arrived: send it again once the channel is back (the
                # message id makes a second copy harmless).
                log.info("connection lost while sending, retrying: %r", exc)
                await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    # -- consuming -----------------------------------------------------------------------

    async def consume(self, handler: Handler) -> _AmqpConsumer | LeasedConsumer:
        """With ``share`` (the default), consume the queues whose leases this consumer
        holds, balanced with the other workers (see :mod:`sourcery._messaging.queues.amqp.leases`);
        otherwise every queue, on the robust connection."""
        if self.settings.share:
            if self._closed:
                raise ClosedError("the command queue is closed")
            leased = LeasedConsumer(
                self.settings,
                handler,
                lambda message: AmqpDelivery(self, message),
                connect_timeout=self.send_timeout,
                reconnect_interval=self._reconnect_interval,
            )
            await leased.start()
            self._leased.append(leased)
            return leased
        channel = await self._channel(confirms=False)
        self._consumers.append(channel)
        try:
            await channel.set_qos(prefetch_count=self.settings.prefetch)
            _, queues = await declare(channel, self.settings)

            async def on_message(message: AbstractIncomingMessage) -> None:
                await handler(AmqpDelivery(self, message))

            tags = [(queue, await queue.consume(on_message)) for queue in queues]
        except amqp_channel().failed as exc:
            raise BrokerError(f"cannot consume the command queues: {exc}") from exc
        return _AmqpConsumer(self, tags)

    # -- replies -------------------------------------------------------------------------

    async def reply(self, reply_to: str, body: bytes, *, correlation_id: str) -> None:
        """Best effort: a reply lost with the connection is logged, never raised (the
        command is done; the client's request times out and it may ask again)."""
        message = aio_pika.Message(body, correlation_id=correlation_id)
        try:
            channel = await self._replying()
            await channel.default_exchange.publish(message, reply_to, mandatory=False)
        except _unanswerable() as exc:
            log.info("could not reply to %s: %r", reply_to, exc)

    async def replies(self, handler: Callable[[str, bytes], None]) -> str:
        if self._reply_queue is not None:
            raise BrokerError("this command queue receives replies already")
        channel = await self._replying()
        name = f"{self.settings.prefix}.replies.{secrets.token_hex(8)}"
        queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)

        async def on_reply(message: AbstractIncomingMessage) -> None:
            handler(message.correlation_id or "", message.body)

        await queue.consume(on_reply, no_ack=True)
        self._reply_queue = name
        return name

    # -- dead letters --------------------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        await self._publishing()
        channel = await self._channel(confirms=False)
        letters: list[DeadLetter] = []
        try:
            queue = await channel.get_queue(self.settings.dead_letter_queue, ensure=False)
            while len(letters) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letters.append(dead_letter(message))
        finally:
            # Closing the channel gives every message it holds back to the queue.
            with contextlib.suppress(*amqp_channel().lost):
                await channel.close()
        return letters

    # -- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        leased, self._leased = self._leased, []
        for consumer in leased:
            await consumer.aclose()
        with contextlib.suppress(*amqp_channel().lost, *amqp_channel().failed):
            await self._connection.close()


def _unanswerable() -> tuple[type[BaseException], ...]:
    """What a reply that cannot be sent (the connection or its channel is gone) raises."""
    return (BrokerUnavailable, *amqp_channel().lost)
