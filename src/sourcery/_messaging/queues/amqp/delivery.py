"""One command delivered from a RabbitMQ queue, and the dead letters it may become."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, DeliveryMode

from sourcery._io.driver_errors import amqp_channel
from sourcery._messaging.queues.amqp.acks import Acks
from sourcery._messaging.queues.base import (
    ACTOR_HEADER,
    ATTEMPTS_HEADER,
    DELIVERY_LIMIT_ERROR,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    DeadLetter,
)

if TYPE_CHECKING:
    from sourcery._messaging.queues.amqp.queue import AmqpQueue

__all__ = ["AmqpDelivery", "dead_letter"]

log = logging.getLogger(__name__)


def _delivery_count(headers: dict[str, Any]) -> int:
    count = headers.get("x-delivery-count", 0)
    return count if isinstance(count, int) and count >= 0 else 0


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class AmqpDelivery:
    """One command from a RabbitMQ queue.

    Its ack goes out with the acks of the deliveries before it on its channel, as one
    ``basic.ack`` (see :class:`Acks`); ``ack`` returns once that frame is sent.
    """

    __slots__ = (
        "_acks",
        "_channel",
        "_message",
        "_queue",
        "_settled",
        "_tag",
        "attempts",
        "body",
        "message_id",
        "reply_to",
    )

    def __init__(self, queue: AmqpQueue, message: AbstractIncomingMessage) -> None:
        self._queue = queue
        # Kept: ``message.channel`` raises once the channel is closed (None: closed already).
        self._channel: Any = None
        with contextlib.suppress(aiormq.exceptions.ChannelInvalidStateError):
            self._channel = message.channel
        self._message = message
        self.body = message.body
        self.message_id = message.message_id or ""
        self.reply_to = message.reply_to
        # A quorum queue counts the earlier deliveries that came back unsettled.
        self.attempts = _delivery_count(message.headers) + 1
        self._settled = False
        # Registered as it arrives (before any await), so in delivery-tag order.
        self._tag = message.delivery_tag or 0
        self._acks = Acks.of(message, self._tag) if self._tag else None

    @property
    def live(self) -> bool:
        return not self._settled and self._channel is not None and not self._channel.is_closed

    async def ack(self) -> None:
        if self._settling() and self._acks is not None:
            await self._acks.ack(self._tag)

    async def retry(self) -> None:
        if self._settling():
            await self._settle(self._message.nack(requeue=True))

    async def dead(self, error_type: str, error: str, *, attempts: int | None = None) -> None:
        message = self._message
        headers: dict[str, Any] = {
            ERROR_TYPE_HEADER: error_type,
            ERROR_HEADER: error,
            ATTEMPTS_HEADER: self.attempts if attempts is None else attempts,
            ACTOR_HEADER: _text(message.headers.get(ACTOR_HEADER)),
        }
        copy = aio_pika.Message(
            self.body,
            headers=headers,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message.message_id,
        )
        await self._queue._publish_dead(copy)
        await self.ack()

    def _settling(self) -> bool:
        """Whether this is the first settlement (a second one is ignored, as before)."""
        if self._settled:
            log.debug("message %s was settled already", self.message_id)
            return False
        self._settled = True
        return True

    async def _settle(self, settling: Any) -> None:
        """A nack or reject: sent alone, right away; it then counts as settled for the
        acks around it (never before it is sent, so no ack covering it can overtake it)."""
        try:
            await settling
        except _unsettleable() as exc:
            # The channel it came on is gone: the broker gives it to a consumer again.
            log.debug("could not settle message %s: %r", self.message_id, exc)
        finally:
            if self._acks is not None:
                self._acks.settled(self._tag)


def _unsettleable() -> tuple[type[BaseException], ...]:
    """What settling a delivery raises when its channel is gone (or it was settled)."""
    return (*amqp_channel().lost, aio_pika.exceptions.MessageProcessError)


def dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    """A message of the dead-letter queue, as put there by :meth:`AmqpDelivery.dead` or by
    the broker itself (its delivery limit)."""
    headers = message.headers
    actor = _text(headers.get(ACTOR_HEADER))
    error_type = _text(headers.get(ERROR_TYPE_HEADER))
    if error_type:
        error = _text(headers.get(ERROR_HEADER))
        attempts = headers.get(ATTEMPTS_HEADER)
    else:
        # Dead-lettered by the broker itself (its delivery limit).
        reason = _text(headers.get("x-first-death-reason")) or "unknown"
        error_type = DELIVERY_LIMIT_ERROR
        error = f"dead-lettered by RabbitMQ ({reason})"
        attempts = _delivery_count(headers)
    return DeadLetter(
        message_id=message.message_id or "",
        body=message.body,
        actor=actor,
        error_type=error_type,
        error=error,
        attempts=attempts if isinstance(attempts, int) else 0,
    )
