"""What only the Redis cache does: its URL, key expiry, and a Redis that is down or slow."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from services import REDIS, redis_down

from sourcery._caches import CacheEntry, open_cache
from sourcery._caches.redis import RedisCache, RedisSettings, parse_redis_url
from sourcery._core.clock import VectorClock
from sourcery._core.errors import ConfigurationError, DecodingError, StoreUnavailable
from sourcery._core.records import ActorRef

from .conftest import delete_prefixed, fresh_prefix

A = ActorRef("account", "a-1")
ENTRY = CacheEntry(
    actor=A, heads=(VectorClock({"w": 1}),), clock=VectorClock({"w": 2}), state=b"s", latest=7
)
PASSWORD = "s3cret-Pa55word"

# A guard so that a broken timeout fails the test instead of hanging the run; it says
# nothing about how fast a call must fail.
HANG_GUARD = 30


def _closed_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


_REDIS_DOWN = redis_down()
needs_redis = pytest.mark.skipif(_REDIS_DOWN is not None, reason=str(_REDIS_DOWN))


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own; ``raw`` deletes its keys after the test."""
    return fresh_prefix()


@pytest.fixture
async def raw(prefix: str) -> AsyncIterator[Redis]:
    """A plain client on the test server; the test's keys are deleted after."""
    client = Redis.from_url(REDIS)
    try:
        yield client
    finally:
        await client.aclose()
        await delete_prefixed(prefix)


# -- a Redis that is not there -------------------------------------------------------------


@pytest.mark.parametrize("port", [1, _closed_port()])
async def test_opening_works_while_nothing_listens_and_every_call_is_unavailable(
    port: int,
) -> None:
    cache = await open_cache(f"redis://127.0.0.1:{port}/0?timeout=0.05")
    assert isinstance(cache, RedisCache)
    try:
        async with asyncio.timeout(HANG_GUARD):
            with pytest.raises(StoreUnavailable) as got:
                await cache.get(A)
            assert isinstance(got.value.__cause__, RedisError | OSError)
            with pytest.raises(StoreUnavailable):
                await cache.put(ENTRY)
            with pytest.raises(StoreUnavailable):
                await cache.delete(A)
            with pytest.raises(StoreUnavailable):  # and again: no state stuck after a failure
                await cache.get(A)
    finally:
        await cache.aclose()


async def test_a_redis_that_accepts_but_never_answers_is_unavailable() -> None:
    """A hung server: the call's timeout, not the server, decides when the call ends."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = await open_cache(f"redis://127.0.0.1:{port}/0?timeout=0.05")
    try:
        async with asyncio.timeout(HANG_GUARD):
            with pytest.raises(StoreUnavailable):
                await cache.get(A)
            with pytest.raises(StoreUnavailable):
                await cache.put(ENTRY)
    finally:
        await cache.aclose()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_the_password_is_never_in_an_unavailable_error() -> None:
    url = f"redis://user:{PASSWORD}@127.0.0.1:1/0?timeout=0.05"
    cache = await open_cache(url)
    try:
        with pytest.raises(StoreUnavailable) as got:
            await cache.get(A)
        assert PASSWORD not in str(got.value)
        assert "127.0.0.1:1" in str(got.value)
        assert PASSWORD not in repr(cache)
    finally:
        await cache.aclose()


# -- expiry and keys -------------------------------------------------------------------------


@needs_redis
async def test_entries_expire_after_the_configured_ttl(prefix: str, raw: Redis) -> None:
    cache = await open_cache(f"{REDIS}?prefix={prefix}&ttl=1&timeout=2")
    assert isinstance(cache, RedisCache)
    try:
        await cache.put(ENTRY)
        assert 0 < await raw.ttl(cache.key(A)) <= 1
        assert await cache.get(A) == ENTRY
        deadline = asyncio.get_running_loop().time() + 10
        while await raw.exists(cache.key(A)):  # Redis removes it after a second or so
            assert asyncio.get_running_loop().time() < deadline, "the entry never expired"
            await asyncio.sleep(0.05)
        assert await cache.get(A) is None
    finally:
        await cache.aclose()


@needs_redis
async def test_the_default_ttl_is_an_hour(prefix: str, raw: Redis) -> None:
    cache = await open_cache(f"{REDIS}?prefix={prefix}&timeout=2")
    assert isinstance(cache, RedisCache)
    try:
        await cache.put(ENTRY)
        ttl = await raw.ttl(cache.key(A))
        assert 3500 < ttl <= 3600
    finally:
        await cache.aclose()


@needs_redis
async def test_a_zero_ttl_keeps_entries_without_expiry(prefix: str, raw: Redis) -> None:
    cache = await open_cache(f"{REDIS}?prefix={prefix}&ttl=0&timeout=2")
    assert isinstance(cache, RedisCache)
    try:
        await cache.put(ENTRY)
        assert await raw.ttl(cache.key(A)) == -1  # exists, no expiry
    finally:
        await cache.aclose()


@needs_redis
async def test_keys_live_under_the_prefix_and_nothing_else_is_written(
    prefix: str, raw: Redis
) -> None:
    cache = await open_cache(f"{REDIS}?prefix={prefix}&timeout=2")
    assert isinstance(cache, RedisCache)
    try:
        await cache.put(ENTRY)
        keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
        assert keys == [cache.key(A).encode()]
        assert cache.key(A).startswith(prefix + ":")
    finally:
        await cache.aclose()


@needs_redis
async def test_caches_with_different_prefixes_do_not_see_each_other(raw: Redis) -> None:
    one, two = fresh_prefix(), fresh_prefix()
    first = await open_cache(f"{REDIS}?prefix={one}&timeout=2")
    second = await open_cache(f"{REDIS}?prefix={two}&timeout=2")
    try:
        await first.put(ENTRY)
        assert await second.get(A) is None
        assert await first.get(A) == ENTRY
    finally:
        await first.aclose()
        await second.aclose()
        await delete_prefixed(one)
        await delete_prefixed(two)


@needs_redis
async def test_a_key_holding_another_redis_type_is_a_damaged_entry(prefix: str, raw: Redis) -> None:
    cache = await open_cache(f"{REDIS}?prefix={prefix}&timeout=2")
    assert isinstance(cache, RedisCache)
    try:
        await raw.rpush(cache.key(A), b"x")
        with pytest.raises(DecodingError):
            await cache.get(A)
        await cache.put(ENTRY)  # and a put replaces it
        assert await cache.get(A) == ENTRY
    finally:
        await cache.aclose()


def test_keys_are_unambiguous() -> None:
    cache = RedisCache(parse_redis_url("redis://127.0.0.1/0?prefix=p"))
    refs = [
        ActorRef("a:b", "c"),
        ActorRef("a", "b:c"),
        ActorRef("1:a", "b"),
        ActorRef("a", "1:a:b"),
        ActorRef("é", "x"),
        ActorRef("ab", "x"),
    ]
    keys = [cache.key(r) for r in refs]
    assert len(set(keys)) == len(refs)
    assert all(k.startswith("p:") for k in keys)


# -- the URL ---------------------------------------------------------------------------------


def test_url_defaults() -> None:
    s = parse_redis_url("redis://")
    assert s == RedisSettings()
    assert (s.host, s.port, s.db, s.prefix, s.ttl, s.timeout) == (
        "localhost",
        6379,
        0,
        "sourcery",
        3600,
        0.05,
    )
    assert s.password is None and s.username is None and not s.ssl


def test_url_with_everything() -> None:
    s = parse_redis_url(
        f"rediss://me:{PASSWORD}@cache.example:6380/3?prefix=app:one&ttl=0&timeout=0.25"
    )
    assert (s.host, s.port, s.db, s.username, s.password, s.ssl) == (
        "cache.example",
        6380,
        3,
        "me",
        PASSWORD,
        True,
    )
    assert (s.prefix, s.ttl, s.timeout) == ("app:one", 0, 0.25)
    assert PASSWORD not in repr(s)


def test_a_percent_encoded_password_is_decoded() -> None:
    assert parse_redis_url("redis://:p%40ss%3Aw@h/0").password == "p@ss:w"


@pytest.mark.parametrize(
    "query",
    [
        "unknown=1",
        "ttl=ten",
        "ttl=-1",
        "ttl=1.5",
        "ttl=",
        "timeout=soon",
        "timeout=0",
        "timeout=-0.1",
        "timeout=nan",
        "timeout=inf",
        "timeout=",
        "prefix=",
        "ttl=1&ttl=2",
        "socket_timeout=1",
    ],
)
async def test_a_bad_parameter_is_a_configuration_error(query: str) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:6379/0?{query}"
    with pytest.raises(ConfigurationError) as got:
        await open_cache(url)
    assert PASSWORD not in str(got.value)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
        f"redis://:{PASSWORD}@127.0.0.1:6379/zero",
        f"redis://:{PASSWORD}@127.0.0.1:6379/0/1",
        f"redis://:{PASSWORD}@127.0.0.1:6379/-1",
        f"redis://:{PASSWORD}@127.0.0.1:6379/0#frag",
    ],
)
async def test_a_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as got:
        await open_cache(url)
    assert PASSWORD not in str(got.value)


def test_a_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        parse_redis_url("memory://")
