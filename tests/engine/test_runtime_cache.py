"""The runtime with a cache: hits skip the replay, and no entry can produce a wrong state."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sourcery import Runtime
from sourcery._caches import Cache, CacheEntry, open_cache
from sourcery._stores import Store, open_store
from sourcery.examples import bank
from sourcery.examples.bank import Account, Deposit, Withdraw

KIND = dataclasses.replace(bank.accounts, snapshot_every=10)
REF = KIND("alice")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'cache.db'}")
    yield opened
    await opened.aclose()


@pytest.fixture
async def cache() -> AsyncIterator[Cache]:
    opened = await open_cache("memory://")
    yield opened
    await opened.aclose()


async def runtime(store: Store, cache: Cache | None) -> Runtime:
    rt = Runtime(store, [KIND], cache=cache)
    await store.register_writer(rt.writer)
    return rt


async def settle(rt: Runtime) -> None:
    """Wait for the write-behind of cache entries."""
    await rt.aclose()


async def fill(store: Store, cache: Cache | None, deposits: int) -> Account:
    rt = await runtime(store, cache)
    out = None
    for i in range(deposits):
        out = await rt.send(REF, Deposit(i + 1))
    await settle(rt)
    assert out is not None
    state: Account = out.state
    return state


async def test_a_hit_skips_the_replay_and_gives_the_same_state(store: Store, cache: Cache) -> None:
    expected = await fill(store, cache, 25)  # 2 snapshots, 5 loose events
    assert await cache.get(REF) is not None
    rt = await runtime(store, cache)
    before = store.stats.events_read
    assert await rt.state(REF) == expected
    assert rt.cache_hits == 1
    assert store.stats.events_read == before  # nothing replayed
    # Carry on to the next snapshot: the events since the head are read back then.
    for _ in range(5):
        await rt.send(REF, Withdraw(1))
    await settle(rt)
    heads = await store.heads(REF)
    assert len(heads) == 1 and heads[0].clock.total() == 30
    pack = await store.pack(REF, heads[0].clock)
    assert pack is not None and len(pack.events) == 10
    plain = await runtime(store, None)
    assert await plain.state(REF) == Account(balance=expected.balance - 5)


async def test_a_stale_entry_is_ignored_and_replaced(store: Store, cache: Cache) -> None:
    await fill(store, cache, 12)
    stale = await cache.get(REF)
    assert stale is not None
    expected = await fill(store, None, 3)  # another worker, no cache: the entry is now stale
    assert expected.balance == sum(range(1, 13)) + 6
    rt = await runtime(store, cache)
    assert await rt.state(REF) == expected
    assert rt.cache_hits == 0
    await settle(rt)
    fresh = await cache.get(REF)
    assert fresh is not None and fresh.clock != stale.clock


async def test_an_entry_claiming_events_the_store_lacks_is_ignored(
    store: Store, cache: Cache
) -> None:
    expected = await fill(store, cache, 4)
    entry = await cache.get(REF)
    assert entry is not None
    lying = dataclasses.replace(
        entry,
        clock=entry.clock.increment("someone-else"),
        state=KIND_CODEC.encode_state(Account(balance=10**6)),
    )
    await cache.put(lying)
    rt = await runtime(store, cache)
    assert await rt.state(REF) == expected
    assert rt.cache_hits == 0


async def test_an_entry_on_other_heads_is_ignored(store: Store, cache: Cache) -> None:
    expected = await fill(store, cache, 15)
    entry = await cache.get(REF)
    assert entry is not None and entry.heads
    await cache.put(dataclasses.replace(entry, heads=(), state=b"\x80"))
    rt = await runtime(store, cache)
    assert await rt.state(REF) == expected
    assert rt.cache_hits == 0


async def test_a_damaged_entry_is_ignored_and_replaced(
    store: Store, cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    expected = await fill(store, cache, 5)
    raw = getattr(cache, "_raw", None)
    assert isinstance(raw, dict) and raw, "the memory cache keeps its encoded entries in _raw"
    key = next(iter(raw))
    raw[key] = raw[key][:-3] + b"xyz"
    rt = await runtime(store, cache)
    with caplog.at_level(logging.WARNING, logger="sourcery"):
        assert await rt.state(REF) == expected
    assert rt.cache_hits == 0
    assert any("damaged cache entry" in r.message for r in caplog.records)
    await settle(rt)
    assert isinstance(await cache.get(REF), CacheEntry)


KIND_CODEC = __import__("sourcery._core.codec", fromlist=["Codec"]).Codec(KIND)


# -- a Redis of our own, to stop and start ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    yield port, procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _start_redis(port: int, procs: list[subprocess.Popen[bytes]], tmp: Path) -> None:
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs.append(proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


async def test_a_redis_that_goes_away_and_comes_back(
    store: Store,
    tmp_path: Path,
    redis_server: tuple[int, list[subprocess.Popen[bytes]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, procs = redis_server
    _start_redis(port, procs, tmp_path)
    cache = await open_cache(f"redis://127.0.0.1:{port}/0?timeout=0.2")
    try:
        await fill(store, cache, 3)
        assert await cache.get(REF) is not None
        procs[-1].kill()
        procs[-1].wait()
        rt = await runtime(store, cache)
        with caplog.at_level(logging.WARNING, logger="sourcery"):
            for _ in range(20):
                out = await rt.send(REF, Deposit(1))  # commands keep working from the store
                rt.forget([REF])  # every command loads again, asking the cache each time
        assert out.state == Account(balance=6 + 20)
        unavailable = [r for r in caplog.records if "cache is unavailable" in r.message]
        assert len(unavailable) == 1, [r.message for r in caplog.records]
        assert rt.cache_hits == 0

        _start_redis(port, procs, tmp_path)
        deadline = time.monotonic() + 15
        while rt.cache_hits == 0:
            assert time.monotonic() < deadline, "the cache never came back"
            await asyncio.sleep(0.2)
            await rt.send(REF, Deposit(1))
            await asyncio.sleep(0.1)  # let the entry be written behind
            rt.forget([REF])
            await rt.state(REF)
        assert any("cache is back" in r.message for r in caplog.records)
        await rt.aclose()
    finally:
        await cache.aclose()
