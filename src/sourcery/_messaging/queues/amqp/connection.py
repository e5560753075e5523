"""Connecting the command queues to RabbitMQ: one robust connection, reconnecting by itself.

aio-pika's robust connection restores its channels, queues and consumers after a broker
restart; it tries again every ``reconnect_interval`` seconds (the URL's, else one).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from sourcery._core.config import AmqpSettings, redact
from sourcery._core.errors import BrokerError, BrokerUnavailable
from sourcery._io.driver_errors import amqp, amqp_refused_login, reason

__all__ = ["DEFAULT_RECONNECT_INTERVAL", "DEFAULT_SEND_TIMEOUT", "connect", "reconnect_interval"]

DEFAULT_SEND_TIMEOUT = 30.0
"""How long a send waits for a broker that went away before raising BrokerUnavailable."""
DEFAULT_RECONNECT_INTERVAL = "1"
"""Seconds between reconnection attempts, unless the URL sets ``reconnect_interval``."""


def reconnect_interval(url: str) -> float:
    """Seconds between reconnections: the URL's ``reconnect_interval``, else the default."""
    value = dict(parse_qsl(urlsplit(url).query)).get("reconnect_interval")
    try:
        return max(0.1, float(value or DEFAULT_RECONNECT_INTERVAL))
    except ValueError:
        return float(DEFAULT_RECONNECT_INTERVAL)


def _with_reconnect_interval(url: str) -> str:
    """``url`` with the default ``reconnect_interval`` if it sets none."""
    query = urlsplit(url).query
    if "reconnect_interval" in query:
        return url
    glue = "&" if query else "?"
    return f"{url}{glue}reconnect_interval={DEFAULT_RECONNECT_INTERVAL}"


async def connect(settings: AmqpSettings, *, timeout: float) -> AbstractRobustConnection:
    """The robust connection; BrokerError for a refused user or password (it will not fix
    itself), BrokerUnavailable for anything else that fails."""
    try:
        return await aio_pika.connect_robust(
            _with_reconnect_interval(settings.url), timeout=timeout
        )
    except (*amqp().lost, *amqp().failed) as exc:
        where = redact(settings.url)
        if amqp_refused_login(exc):
            raise BrokerError(f"RabbitMQ at {where} refused the user or password") from exc
        raise BrokerUnavailable(f"cannot connect to RabbitMQ at {where}: {reason(exc)}") from exc
