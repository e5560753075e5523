"""The command queues' topology on RabbitMQ, declared idempotently in one place.

All names are under the URL's ``prefix``:

- ``<prefix>.commands.<i>``: durable quorum queues, each with a single active consumer (one
  worker at a time, in order), a generous ``x-delivery-limit`` and the dead-letter exchange
  as a safety net against a command that kills every worker.
- ``<prefix>.dead``: a fanout exchange and a quorum queue holding the dead letters; those
  a worker gives up on carry the error in ``x-sourcery-*`` headers.

Every process of a deployment must hash actors over the same number of command queues;
:func:`check_queue_count` refuses to start beside processes that use another.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
)

from sourcery._core.config import AmqpSettings
from sourcery._core.errors import ConfigurationError
from sourcery._io.driver_errors import amqp_channel

__all__ = ["DELIVERY_LIMIT_FACTOR", "check_queue_count", "declare", "queue_exists"]

DELIVERY_LIMIT_FACTOR = 4
"""The broker's own delivery limit is this many times ``attempts``: only for commands no
worker lives long enough to settle."""


def _queue_arguments(settings: AmqpSettings) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.attempts * DELIVERY_LIMIT_FACTOR,
        "x-dead-letter-exchange": settings.dead_letter_queue,
    }
    if settings.single_active:
        arguments["x-single-active-consumer"] = True
    return arguments


async def declare(
    channel: AbstractChannel, settings: AmqpSettings
) -> tuple[AbstractExchange, list[AbstractQueue]]:
    """Every exchange, queue and binding, on ``channel`` (a robust one restores them)."""
    s = settings
    dead = await channel.declare_exchange(
        s.dead_letter_queue, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_queue = await channel.declare_queue(
        s.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dead, "")
    queues: list[AbstractQueue] = []
    arguments = _queue_arguments(s)
    # The last first: once queue 0 exists, all of a deployment's queues do, even while
    # other processes declare them too (what check_queue_count relies on).
    for index in reversed(range(s.queues)):
        queue = await channel.declare_queue(
            s.command_queue(index), durable=True, arguments=arguments
        )
        queues.append(queue)
    queues.reverse()
    return dead, queues


async def check_queue_count(connection: AbstractConnection, settings: AmqpSettings) -> None:
    """Refuse to work beside processes that hash actors over another number of command
    queues: they send some actors to queues this one never sends them to, where two
    workers would run them at once. Checked before declaring anything, so a refused
    process leaves the broker as it was."""
    s = settings
    fewer = s.queues > 1 and (
        await queue_exists(connection, s.command_queue(0))
        and not await queue_exists(connection, s.command_queue(s.queues - 1))
    )
    if fewer or await queue_exists(connection, s.command_queue(s.queues)):
        raise ConfigurationError(
            f"other clients or workers of prefix {s.prefix!r} use "
            f"{'fewer' if fewer else 'more'} command queues than queues={s.queues}; every "
            "process of a deployment must use the same number"
        )


async def queue_exists(connection: AbstractConnection, name: str) -> bool:
    channel = await connection.channel()  # a refused passive declare closes it
    try:
        await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(*amqp_channel().lost, *amqp_channel().failed):
            await channel.close()
    return True
