"""The one map from each driver's exceptions to Sourcery's (httpx keeps one such map at its
transport boundary). Adapters never name a driver exception elsewhere: they use
``translated()`` or the ``lost`` tuples below, so what counts as "the service went away"
is decided here once per driver.

Drivers are optional extras, so each map is built on first use.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from sourcery._core.errors import (
    BrokerError,
    BrokerUnavailable,
    SourceryError,
    StoreError,
    StoreUnavailable,
)

__all__ = [
    "DriverErrors",
    "amqp",
    "amqp_channel",
    "amqp_refused_login",
    "describe",
    "postgres",
    "reason",
    "redis",
    "sqlite",
]

Errors = tuple[type[BaseException], ...]


def _always(_exc: BaseException) -> bool:
    return True


def describe(exc: BaseException) -> str:
    """One line in plain words: the exception's class and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def reason(exc: BaseException) -> str:
    """Why a connection failed, in plain words and on one line: the system's words for an
    OS error number (``Connection refused``), else the driver's message without its class
    and repr (aiormq's errors print as ``<AMQPConnectionError: (111, '...')>``)."""
    args = exc.args
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)  # asyncio's own strerror is "Connect call failed (...)"
    if args and isinstance(args[0], BaseException):
        return reason(args[0])
    if len(args) >= 1 and isinstance(args[0], int) and not isinstance(args[0], bool):
        try:
            return os.strerror(args[0])
        except ValueError:
            pass
    if args and isinstance(args[0], str) and args[0].strip():
        return " ".join(args[0].split())
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return describe(exc)


def amqp_refused_login(exc: BaseException) -> bool:
    """Whether RabbitMQ refused the user or password (retrying will not fix that)."""
    import aiormq

    refused = (aiormq.exceptions.AuthenticationError, aiormq.exceptions.ProbableAuthenticationError)
    return isinstance(exc, refused)


@dataclass(frozen=True, slots=True)
class DriverErrors:
    """What one driver raises, sorted into "gone" and "refused"."""

    lost: Errors
    """The service went away or the connection broke: retrying later may work."""
    failed: Errors
    """Any other error of the driver: the service refused the request."""
    unavailable: type[SourceryError]
    error: type[SourceryError]
    lost_if: Callable[[BaseException], bool] = field(default=_always)
    """Which of the ``lost`` errors really are (SQLite raises one class for a locked file
    and for a missing table)."""

    def is_lost(self, exc: BaseException) -> bool:
        return isinstance(exc, self.lost) and self.lost_if(exc)

    @contextmanager
    def translated(self, what: str, secrets: Sequence[str] = ()) -> Iterator[None]:
        """Re-raise the driver's errors as ours, one line, the cause chained; each of
        ``secrets`` (a password) is masked in the line."""
        try:
            yield
        except SourceryError:
            raise
        except self.failed + self.lost as exc:
            line = describe(exc)
            for secret in secrets:
                if secret:
                    line = line.replace(secret, "***")
            kind = self.unavailable if self.is_lost(exc) else self.error
            raise kind(f"{what}: {line}") from exc


@functools.cache
def postgres() -> DriverErrors:
    import asyncpg

    return DriverErrors(
        lost=(
            OSError,
            asyncio.TimeoutError,
            asyncpg.exceptions.InternalClientError,  # e.g. resetting a connection that was cut
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.CrashShutdownError,  # another backend crashed: all restart
            asyncpg.exceptions.CannotConnectNowError,
        ),
        failed=(asyncpg.exceptions.PostgresError,),
        unavailable=StoreUnavailable,
        error=StoreError,
    )


@functools.cache
def sqlite() -> DriverErrors:
    import sqlite3

    return DriverErrors(
        lost=(sqlite3.OperationalError,),
        failed=(sqlite3.Error,),
        unavailable=StoreUnavailable,
        error=StoreError,
        lost_if=_sqlite_transient,
    )


_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "readonly", "full")
"""Operational errors worth retrying later; the others (a missing table, say) are not."""


def _sqlite_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in _SQLITE_TRANSIENT)


@functools.cache
def amqp() -> DriverErrors:
    """RabbitMQ (aiormq, under aio-pika): ``lost`` is a connection that went or broke, or
    a channel used after it closed; a channel the broker closes because it refused a request
    is ``failed``. For work on one channel, see :func:`amqp_channel`."""
    import aiormq

    return DriverErrors(
        lost=(
            aiormq.exceptions.AMQPConnectionError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            OSError,
            asyncio.TimeoutError,
        ),
        failed=(aiormq.exceptions.AMQPError,),
        unavailable=BrokerUnavailable,
        error=BrokerError,
    )


@functools.cache
def amqp_channel() -> DriverErrors:
    """As :func:`amqp`, for work on one channel: there a channel the broker closed (whatever
    the reason: a refusal, a queue deleted under its consumer) is also ``lost``: that channel
    is gone, and a new one (the robust connection restores it) may do better."""
    import aiormq

    errors = amqp()
    return replace(errors, lost=(*errors.lost, aiormq.exceptions.ChannelClosed))


@functools.cache
def redis() -> DriverErrors:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    # Redis is only ever a cache, and a cache that refuses a call is as good as absent:
    # both kinds are "unavailable", so the runtime reads the store instead.
    return DriverErrors(
        lost=(RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError),
        failed=(RedisError,),
        unavailable=StoreUnavailable,
        error=StoreUnavailable,
    )
