"""A cache in Redis, shared by the workers of a replica.

URL: ``redis://[[user]:password@]host[:port][/db][?prefix=sourcery&ttl=3600&timeout=0.05]``
(``rediss://`` for TLS).

- ``prefix``: the start of every key this cache writes (default ``sourcery``).
- ``ttl``: seconds an entry lives after it was written; 0 keeps it until Redis evicts it
  (default 3600).
- ``timeout``: the most seconds one call may wait for Redis, to connect and to answer
  (default 0.05). A slow or absent Redis must cost a command almost nothing: the runtime then
  works from the store alone.

Opening never touches the network, so a runtime starts while Redis is down; every call
that cannot reach Redis raises StoreUnavailable, with the driver's error chained.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from sourcery._caches.base import CacheEntry
from sourcery._core.config import redact, unique_params
from sourcery._core.errors import ClosedError, ConfigurationError, DecodingError
from sourcery._core.records import ActorRef
from sourcery._io import driver_errors

__all__ = ["RedisCache", "RedisSettings", "parse_redis_url"]

T = TypeVar("T")

DEFAULT_PREFIX = "sourcery"
DEFAULT_TTL = 3600
DEFAULT_TIMEOUT = 0.05


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """What a ``redis://`` cache URL says."""

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    prefix: str = DEFAULT_PREFIX
    ttl: int = DEFAULT_TTL
    """Seconds; 0 = no expiry."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds to connect, and seconds to wait for each answer."""


def parse_redis_url(url: str) -> RedisSettings:
    """Parse a cache URL; anything this code does not understand is a ConfigurationError."""
    shown = redact(url)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a redis URL: {shown!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigurationError(f"bad port in redis URL {shown!r}") from None
    path = parts.path.strip("/")
    if not path:
        db = 0
    elif path.isdigit() and path.isascii():
        db = int(path)
    else:
        raise ConfigurationError(f"the path of redis URL {shown!r} must be a database number")
    if parts.fragment:
        raise ConfigurationError(f"redis URL {shown!r} must not have a fragment")

    prefix, ttl, timeout = DEFAULT_PREFIX, DEFAULT_TTL, DEFAULT_TIMEOUT
    seen: set[str] = set()
    for key, value in unique_params(url, parts.query):
        if key in seen:
            raise ConfigurationError(f"redis URL parameter {key!r} given twice in {shown!r}")
        seen.add(key)
        if key == "prefix":
            if not value:
                raise ConfigurationError("the redis cache prefix must not be empty")
            prefix = value
        elif key == "ttl":
            try:
                ttl = int(value)
            except ValueError:
                raise ConfigurationError(
                    f"ttl must be a whole number of seconds, got {value!r}"
                ) from None
            if ttl < 0:
                raise ConfigurationError(f"ttl must not be negative, got {ttl}")
        elif key == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                raise ConfigurationError(f"timeout must be seconds, got {value!r}") from None
            if not math.isfinite(timeout) or timeout <= 0:
                raise ConfigurationError(f"timeout must be a positive number, got {value!r}")
        else:
            raise ConfigurationError(f"unknown redis URL parameter {key!r} in {shown!r}")

    return RedisSettings(
        host=parts.hostname or "localhost",
        port=port,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ssl=parts.scheme == "rediss",
        prefix=prefix,
        ttl=ttl,
        timeout=timeout,
    )


class RedisCache:
    """A :class:`~sourcery._caches.base.Cache` in Redis. Open it with :meth:`open`."""

    def __init__(self, settings: RedisSettings, *, url: str = "") -> None:
        self.settings = settings
        self._shown = (
            redact(url) if url else f"redis://{settings.host}:{settings.port}/{settings.db}"
        )
        self._client: Redis | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> RedisCache:
        """Parse ``url``; no connection is made until the first call, so Redis may be down."""
        return cls(parse_redis_url(url), url=url)

    # -- keys --------------------------------------------------------------------------

    def key(self, actor: ActorRef) -> str:
        """The Redis key of ``actor``'s entry: ``prefix:<bytes in type>:type:id``.

        The length of the type says where it ends, so no two actors share a key whatever
        characters (``:`` included) their type and id hold.
        """
        return f"{self.settings.prefix}:{len(actor.type.encode())}:{actor.type}:{actor.id}"

    # -- calls -------------------------------------------------------------------------

    def _connection(self) -> Redis:
        if self._closed:
            raise ClosedError(f"the redis cache at {self._shown} is closed")
        if self._client is None:
            s = self.settings
            self._client = Redis(
                host=s.host,
                port=s.port,
                db=s.db,
                username=s.username,
                password=s.password,
                ssl=s.ssl,
                socket_timeout=s.timeout,
                socket_connect_timeout=s.timeout,
                retry=Retry(NoBackoff(), 0),  # one try: a retry is a slow command
                decode_responses=False,
            )
        return self._client

    async def _call(self, what: str, call: Callable[[Redis], Awaitable[T]]) -> T:
        client = self._connection()
        with driver_errors.redis().translated(
            f"the redis cache at {self._shown} could not {what}", [self.settings.password or ""]
        ):
            return await call(client)

    async def get(self, actor: ActorRef) -> CacheEntry | None:
        key = self.key(actor)

        async def call(client: Redis) -> object:
            try:
                value: object = await client.get(key)
            except ResponseError as exc:
                if str(exc).startswith("WRONGTYPE"):
                    return exc  # the key holds a list, a hash...: damaged, not unavailable
                raise
            return value

        data = await self._call("read an entry", call)
        if data is None:
            return None
        if isinstance(data, ResponseError):
            raise DecodingError(f"the cache key of {actor} holds no string: {data}") from data
        if not isinstance(data, bytes):
            raise DecodingError(f"the cache entry of {actor} is not bytes: {type(data).__name__}")
        entry = CacheEntry.from_bytes(data)
        if entry.actor != actor:
            raise DecodingError(f"the cache entry kept for {actor} belongs to {entry.actor}")
        return entry

    async def put(self, entry: CacheEntry) -> None:
        key = self.key(entry.actor)
        data = entry.to_bytes()
        ttl = self.settings.ttl or None

        async def call(client: Redis) -> None:
            await client.set(key, data, ex=ttl)

        await self._call("write an entry", call)

    async def delete(self, actor: ActorRef) -> None:
        key = self.key(actor)

        async def call(client: Redis) -> None:
            await client.delete(key)

        await self._call("delete an entry", call)

    async def aclose(self) -> None:
        """Close the connections. Idempotent; later calls raise ClosedError."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            errors = driver_errors.redis()
            with contextlib.suppress(*errors.failed, *errors.lost):  # a cache loses nothing
                await client.aclose()

    async def __aenter__(self) -> RedisCache:
        self._connection()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<RedisCache {self._shown}{state}>"
