"""The cache implementations the contract suite runs against.

Every test in ``test_contract.py`` runs once per entry of :data:`FACTORIES`. A backend
joins the suite by adding one :class:`CacheFactory`: how to open a fresh, empty cache, how
to write raw bytes where an actor's entry lives (to play a damaged entry), and how to
clean up after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from services import REDIS, redis_down

from sourcery._caches import Cache, open_cache
from sourcery._caches.memory import MemoryCache
from sourcery._caches.redis import RedisCache
from sourcery._core.records import ActorRef

TEST_PREFIX = "sourcery-test-"


def fresh_prefix() -> str:
    return f"{TEST_PREFIX}{uuid.uuid4().hex[:16]}"


async def delete_prefixed(prefix: str) -> None:
    """Delete every key under ``prefix`` (test prefixes are hex, so no glob characters)."""
    client = Redis.from_url(REDIS)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def write_redis_raw(cache: Cache, actor: ActorRef, data: bytes) -> None:
    assert isinstance(cache, RedisCache)
    client = Redis.from_url(REDIS)
    try:
        await client.set(cache.key(actor), data)
    finally:
        await client.aclose()


async def write_memory_raw(cache: Cache, actor: ActorRef, data: bytes) -> None:
    assert isinstance(cache, MemoryCache)
    cache._raw[actor] = data  # the documented test hook: the encoded entries


@dataclass(frozen=True, slots=True)
class CacheFactory:
    """How to get a fresh, empty cache of one implementation."""

    id: str
    """The pytest id of this implementation."""
    make_url: Callable[[], str]
    """A URL naming a fresh, empty cache."""
    write_raw: Callable[[Cache, ActorRef, bytes], Awaitable[None]]
    """Store ``bytes`` where the cache keeps ``actor``'s entry, bypassing its encoding."""
    cleanup: Callable[[str], Awaitable[None]]
    """Remove what a test left behind, given the cache's URL."""
    unavailable: Callable[[], str | None] = lambda: None
    """A reason to skip every test of this implementation (e.g. no server answers)."""


async def _nothing(_url: str) -> None:
    return None


async def _cleanup_redis(url: str) -> None:
    from sourcery._caches.redis import parse_redis_url

    prefix = parse_redis_url(url).prefix
    assert prefix.startswith(TEST_PREFIX), prefix
    await delete_prefixed(prefix)


FACTORIES: tuple[CacheFactory, ...] = (
    CacheFactory(
        id="memory",
        make_url=lambda: "memory://",
        write_raw=write_memory_raw,
        cleanup=_nothing,
    ),
    CacheFactory(
        id="redis",
        make_url=lambda: f"{REDIS}?prefix={fresh_prefix()}&timeout=2",
        write_raw=write_redis_raw,
        cleanup=_cleanup_redis,
        unavailable=redis_down,
    ),
)


@pytest.fixture(params=FACTORIES, ids=[f.id for f in FACTORIES])
def cache_factory(request: pytest.FixtureRequest) -> CacheFactory:
    factory: CacheFactory = request.param
    reason = factory.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return factory


@pytest.fixture
async def cache_url(cache_factory: CacheFactory) -> AsyncIterator[str]:
    """This test's cache URL; what was written under it is removed after the test."""
    url = cache_factory.make_url()
    try:
        yield url
    finally:
        await cache_factory.cleanup(url)


@pytest.fixture
async def cache(cache_url: str) -> AsyncIterator[Cache]:
    """A fresh, empty cache, closed after the test."""
    opened = await open_cache(cache_url)
    try:
        yield opened
    finally:
        await opened.aclose()


WriteRaw = Callable[[ActorRef, bytes], Awaitable[None]]


@pytest.fixture
def write_raw(cache_factory: CacheFactory, cache: Cache) -> WriteRaw:
    """Put raw bytes where ``cache`` keeps an actor's entry, as a damaged entry would be."""

    async def _write(actor: ActorRef, data: bytes) -> None:
        await cache_factory.write_raw(cache, actor, data)

    return _write
