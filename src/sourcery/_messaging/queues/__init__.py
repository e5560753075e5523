"""Command queues, chosen by URL: ``memory://NAME`` (in-process) or ``amqp://…`` (RabbitMQ)."""

from __future__ import annotations

from urllib.parse import urlsplit

from sourcery._core.config import redact
from sourcery._core.errors import ConfigurationError
from sourcery._messaging.queues.base import (
    CommandQueue,
    Consumer,
    DeadLetter,
    Delivery,
    routing_key,
)

__all__ = ["CommandQueue", "Consumer", "DeadLetter", "Delivery", "open_queue", "routing_key"]


async def open_queue(url: str) -> CommandQueue:
    """Open the command queue a URL names; declares the broker's queues if need be."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from sourcery._messaging.queues.memory import MemoryQueue

        return MemoryQueue.from_url(url)
    if scheme in ("amqp", "amqps"):
        try:
            from sourcery._messaging.queues.amqp import AmqpQueue
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "RabbitMQ command queues need aio-pika: pip install 'sourcery[amqp]'"
            ) from exc
        return await AmqpQueue.open(url)
    raise ConfigurationError(f"no command queue for URL scheme {scheme!r} in {redact(url)!r}")
