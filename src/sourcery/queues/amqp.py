"""Command queues on RabbitMQ.

Topology (all names under the URL's ``prefix``, declared idempotently in one place):

- ``<prefix>.commands``: a consistent-hash exchange; the routing key is ``type/id``, so
  one actor's commands always go to the same queue.
- ``<prefix>.commands.<i>``: durable quorum queues bound with weight 1, each with a single
  active consumer (one worker at a time, in order), a generous ``x-delivery-limit`` and
  the dead-letter exchange as a safety net against a command that kills every worker.
- ``<prefix>.dead``: a fanout exchange and a quorum queue holding the dead letters; those
  a worker gives up on carry the error in ``x-sourcery-*`` headers.

Sends are persistent, mandatory and confirmed: ``send`` returns once the queue holds the
command on disk. The connection is robust (aio-pika restores channels, queues and
consumers after a broker restart); a send while the broker is away waits for it up to
``send_timeout`` and then raises :class:`BrokerUnavailable`. Deliveries that were in flight
when the connection broke are redelivered by the broker; the worker recognises them by
message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    ConsumerTag,
    DeliveryMode,
)

from ..config import AmqpSettings, parse_amqp_url, redact
from ..errors import BrokerError, BrokerUnavailable, ClosedError
from ..records import ActorRef
from .base import (
    ACTOR_HEADER,
    ATTEMPTS_HEADER,
    DELIVERY_LIMIT_ERROR,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    DeadLetter,
    Handler,
    routing_key,
)

__all__ = ["AmqpQueue"]

log = logging.getLogger(__name__)

DEFAULT_SEND_TIMEOUT = 30.0
"""How long a send waits for a broker that went away before raising BrokerUnavailable."""
DEFAULT_RECONNECT_INTERVAL = "1"
"""Seconds between reconnection attempts, unless the URL sets ``reconnect_interval``."""
DELIVERY_LIMIT_FACTOR = 4
"""The broker's own delivery limit is this many times ``attempts``: only for commands no
worker lives long enough to settle."""

_LOST = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
)
"""What a lost connection or channel raises."""


def _delivery_count(headers: dict[str, Any]) -> int:
    count = headers.get("x-delivery-count", 0)
    return count if isinstance(count, int) and count >= 0 else 0


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class AmqpDelivery:
    """One command from a RabbitMQ queue."""

    __slots__ = ("_message", "_queue", "attempts", "body", "message_id", "reply_to")

    def __init__(self, queue: AmqpQueue, message: AbstractIncomingMessage) -> None:
        self._queue = queue
        self._message = message
        self.body = message.body
        self.message_id = message.message_id or ""
        self.reply_to = message.reply_to
        # A quorum queue counts the earlier deliveries that came back unsettled.
        self.attempts = _delivery_count(message.headers) + 1

    async def ack(self) -> None:
        await self._settle(self._message.ack())

    async def retry(self) -> None:
        await self._settle(self._message.nack(requeue=True))

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        message = self._message
        headers: dict[str, Any] = {
            ERROR_TYPE_HEADER: error_type,
            ERROR_HEADER: error,
            ATTEMPTS_HEADER: self.attempts if attempts is None else attempts,
            ACTOR_HEADER: message.routing_key or "",
        }
        copy = aio_pika.Message(
            self.body,
            headers=headers,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message.message_id,
        )
        await self._queue._publish_dead(copy)
        await self.ack()

    async def _settle(self, settling: Any) -> None:
        try:
            await settling
        except (*_LOST, aio_pika.exceptions.MessageProcessError) as exc:
            # The channel it came on is gone: the broker gives it to a consumer again.
            log.debug("could not settle message %s: %r", self.message_id, exc)


class _AmqpConsumer:
    def __init__(self, queue: AmqpQueue, tags: list[tuple[AbstractQueue, ConsumerTag]]) -> None:
        self._queue = queue
        self._tags = tags

    async def cancel(self) -> None:
        tags, self._tags = self._tags, []
        for queue, tag in tags:
            try:
                await queue.cancel(tag)
            except _LOST as exc:
                log.debug("could not cancel consumer %s: %r", tag, exc)
        # Deliveries that arrived before the cancellation was confirmed are already on
        # their way to the handler (aio-pika hands each over in a task): let them start.
        for _ in range(3):
            await asyncio.sleep(0)


class AmqpQueue:
    """A :class:`~sourcery.queues.CommandQueue` on RabbitMQ. Open with ``await
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
        self._commands: AbstractRobustExchange | None = None
        self._dead: AbstractRobustExchange | None = None
        self._replier: AbstractRobustChannel | None = None
        self._consumers: list[AbstractRobustChannel] = []
        self._reply_queue: str | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, send_timeout: float = DEFAULT_SEND_TIMEOUT) -> AmqpQueue:
        """Connect and declare the topology (idempotent)."""
        settings = parse_amqp_url(url)
        target = settings.url
        if "reconnect_interval" not in urlsplit(target).query:
            glue = "&" if urlsplit(target).query else "?"
            target = f"{target}{glue}reconnect_interval={DEFAULT_RECONNECT_INTERVAL}"
        try:
            connection = await aio_pika.connect_robust(target, timeout=send_timeout)
        except (TimeoutError, *_LOST, aiormq.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(
                f"cannot connect to RabbitMQ at {redact(settings.url)}: {exc!r}"
            ) from exc
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

    # -- topology ------------------------------------------------------------------------

    def _queue_arguments(self) -> dict[str, Any]:
        s = self.settings
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": s.attempts * DELIVERY_LIMIT_FACTOR,
            "x-dead-letter-exchange": s.dead_letter_queue,
        }
        if s.single_active:
            arguments["x-single-active-consumer"] = True
        return arguments

    async def _declare(
        self, channel: AbstractRobustChannel
    ) -> tuple[AbstractRobustExchange, AbstractRobustExchange, list[AbstractQueue]]:
        """Every exchange, queue and binding, on ``channel`` (restored with it)."""
        s = self.settings
        dead = await channel.declare_exchange(
            s.dead_letter_queue, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await channel.declare_queue(
            s.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead, "")
        commands = await channel.declare_exchange(
            s.commands_exchange, aio_pika.ExchangeType.X_CONSISTENT_HASH, durable=True
        )
        queues: list[AbstractQueue] = []
        arguments = self._queue_arguments()
        for index in range(s.queues):
            queue = await channel.declare_queue(
                s.command_queue(index), durable=True, arguments=arguments
            )
            await queue.bind(commands, "1")  # the binding key is the weight
            queues.append(queue)
        return commands, dead, queues

    async def _channel(self, *, confirms: bool) -> AbstractRobustChannel:
        if self._closed:
            raise ClosedError("the command queue is closed")
        try:
            channel = await self._connection.channel(
                publisher_confirms=confirms, on_return_raises=confirms
            )
        except _LOST as exc:
            raise BrokerUnavailable(f"cannot open a RabbitMQ channel: {exc!r}") from exc
        assert isinstance(channel, AbstractRobustChannel)
        return channel

    async def _publishing(self) -> tuple[AbstractRobustExchange, AbstractRobustExchange]:
        if self._commands is None or self._dead is None:
            async with self._lock:
                if self._commands is None or self._dead is None:
                    channel = await self._channel(confirms=True)
                    try:
                        commands, dead, _ = await self._declare(channel)
                    except aiormq.exceptions.AMQPError as exc:
                        raise BrokerError(f"cannot declare the command queues: {exc}") from exc
                    self._publisher, self._commands, self._dead = channel, commands, dead
        return self._commands, self._dead

    async def _replying(self) -> AbstractRobustChannel:
        if self._replier is None:
            async with self._lock:
                if self._replier is None:
                    self._replier = await self._channel(confirms=False)
        return self._replier

    # -- sending -------------------------------------------------------------------------

    async def send(
        self, actor: ActorRef, body: bytes, *, message_id: str, reply_to: str | None = None
    ) -> None:
        commands, _ = await self._publishing()
        message = aio_pika.Message(
            body,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message_id,
            reply_to=reply_to,
        )
        await self._confirmed(commands, message, routing_key(actor))

    async def _publish_dead(self, message: aio_pika.Message) -> None:
        _, dead = await self._publishing()
        await self._confirmed(dead, message, "")

    async def _confirmed(
        self, exchange: AbstractRobustExchange, message: aio_pika.Message, key: str
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
                task = asyncio.current_task()
                if self._closed and (task is None or not task.cancelling()):
                    raise ClosedError("the command queue was closed while sending") from None
                raise
            except _LOST as exc:
                # Unknown whether it arrived: send it again once the channel is back (the
                # message id makes a second copy harmless).
                log.info("connection lost while sending, retrying: %r", exc)
                await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    # -- consuming -----------------------------------------------------------------------

    async def consume(self, handler: Handler) -> _AmqpConsumer:
        channel = await self._channel(confirms=False)
        self._consumers.append(channel)
        try:
            await channel.set_qos(prefetch_count=self.settings.prefetch)
            _, _, queues = await self._declare(channel)

            async def on_message(message: AbstractIncomingMessage) -> None:
                await handler(AmqpDelivery(self, message))

            tags = [(queue, await queue.consume(on_message)) for queue in queues]
        except aiormq.exceptions.AMQPError as exc:
            raise BrokerError(f"cannot consume the command queues: {exc}") from exc
        return _AmqpConsumer(self, tags)

    # -- replies -------------------------------------------------------------------------

    async def reply(self, reply_to: str, body: bytes, *, correlation_id: str) -> None:
        channel = await self._replying()
        message = aio_pika.Message(body, correlation_id=correlation_id)
        try:
            await channel.default_exchange.publish(message, reply_to, mandatory=False)
        except _LOST as exc:
            log.debug("could not reply to %s: %r", reply_to, exc)

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
                letters.append(_dead_letter(message))
        finally:
            # Closing the channel gives every message it holds back to the queue.
            with contextlib.suppress(*_LOST):
                await channel.close()
        return letters

    # -- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(*_LOST, aiormq.exceptions.AMQPError):
            await self._connection.close()


def _dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers
    error_type = _text(headers.get(ERROR_TYPE_HEADER))
    if error_type:
        error = _text(headers.get(ERROR_HEADER))
        attempts = headers.get(ATTEMPTS_HEADER)
        actor = _text(headers.get(ACTOR_HEADER))
    else:
        # Dead-lettered by the broker itself (its delivery limit).
        reason = _text(headers.get("x-first-death-reason")) or "unknown"
        error_type = DELIVERY_LIMIT_ERROR
        error = f"dead-lettered by RabbitMQ ({reason})"
        attempts = _delivery_count(headers)
        actor = message.routing_key or ""
    return DeadLetter(
        message_id=message.message_id or "",
        body=message.body,
        actor=actor,
        error_type=error_type,
        error=error,
        attempts=attempts if isinstance(attempts, int) else 0,
    )
