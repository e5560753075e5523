"""Publishing committed events on topics, and subscribing to them.

``open_bus(url)`` picks the implementation: ``memory://[name]`` (in-process, the embedded
default) or ``amqp://…`` (a RabbitMQ topic exchange). Both match routing keys
``<actor type>.<event type>`` against patterns with ``*`` (one word) and ``#`` (any words).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sourcery._core.config import redact
from sourcery._core.errors import ConfigurationError
from sourcery._messaging.topics.base import Delivery, EventBus, Subscription, routing_key
from sourcery._messaging.topics.memory import MemoryBus
from sourcery._messaging.topics.patterns import check_pattern, matches

__all__ = [
    "Delivery",
    "EventBus",
    "MemoryBus",
    "Subscription",
    "check_pattern",
    "matches",
    "open_bus",
    "routing_key",
]


async def open_bus(url: str | None = None) -> EventBus:
    """Open the bus a URL names; ``None`` or ``memory://`` is the in-process default."""
    if not url:
        return MemoryBus()
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBus.from_url(url)
    if scheme in ("amqp", "amqps"):
        try:
            from sourcery._messaging.topics.amqp import AmqpBus
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "RabbitMQ needs the aio-pika driver: pip install 'sourcery[amqp]'"
            ) from exc
        return await AmqpBus.open(url)
    raise ConfigurationError(f"no event bus for URL scheme {scheme!r} in {redact(url)!r}")
