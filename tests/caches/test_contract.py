"""The contract every cache implementation must keep (see ``sourcery._caches.base.Cache``).

Each test runs once per implementation in ``conftest.FACTORIES``; none of them knows which
implementation it runs against. The in-process cache's own behaviour (its bound, its URL)
is tested at the end of this file, outside the contract.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest

from sourcery._caches import Cache, CacheEntry, open_cache
from sourcery._caches.memory import DEFAULT_MAX_ENTRIES, MemoryCache
from sourcery._core.clock import VectorClock
from sourcery._core.errors import ClosedError, ConfigurationError, DecodingError
from sourcery._core.records import MAX_ID_BYTES, ActorRef

WriteRaw = Callable[[ActorRef, bytes], Awaitable[None]]

A = ActorRef("account", "a-1")
B = ActorRef("account", "b-2")

_states = itertools.count()


def entry(actor: ActorRef, *, heads: int = 1, state: bytes | None = None) -> CacheEntry:
    """An entry for ``actor`` whose state differs from every other this module made."""
    clock = VectorClock({"w-1": 3, "w-2": 5})
    return CacheEntry(
        actor=actor,
        heads=tuple(VectorClock({"w-1": n + 1}) for n in range(heads)),
        clock=clock,
        state=state if state is not None else f"state-{next(_states)}".encode(),
        latest=1_700_000_000_000,
    )


# Pairs that a naive "type:id" (or "type/id") join would send to the same key.
COLLIDING = [
    (ActorRef("a:b", "c"), ActorRef("a", "b:c")),
    (ActorRef("a/b", "c"), ActorRef("a", "b/c")),
    (ActorRef("a", "1:b:c"), ActorRef("1:a", "b:c")),
    (ActorRef("a b", "c"), ActorRef("a", "b c")),
    (ActorRef("ä", "x"), ActorRef("a", "\u0308x")),  # same text once normalised; not equal
]

HOSTILE = [
    ActorRef("account", "with:colons:"),
    ActorRef("account", ":"),
    ActorRef("account", "with spaces and\ttabs\nand newlines"),
    ActorRef("account", "ünïcødé ✓ 口座 🦀"),
    ActorRef("account", "*"),  # glob characters, for a backend that lists keys by pattern
    ActorRef("account", "[a-z]?"),
    ActorRef("account", "%41%00"),
    ActorRef("account", "x" * MAX_ID_BYTES),
    ActorRef("account", "é" * (MAX_ID_BYTES // 2)),
    ActorRef("account", "x" * (MAX_ID_BYTES - 1)),
    ActorRef("account:x" * 28, "y"),
    ActorRef("Account", "a-1"),  # case matters
    ActorRef("account", "A-1"),
    A,
    B,
]


# -- round trips ------------------------------------------------------------------------------


async def test_missing_is_none(cache: Cache) -> None:
    assert await cache.get(A) is None


async def test_put_then_get_gives_an_equal_entry(cache: Cache) -> None:
    e = entry(A)
    await cache.put(e)
    assert await cache.get(A) == e
    assert await cache.get(A) == e  # reading does not consume it


async def test_an_entry_without_heads_or_state_round_trips(cache: Cache) -> None:
    e = CacheEntry(actor=A, heads=(), clock=VectorClock(), state=b"", latest=0)
    await cache.put(e)
    assert await cache.get(A) == e


async def test_a_large_state_round_trips(cache: Cache) -> None:
    e = entry(A, state=bytes(range(256)) * 4096)  # 1 MiB, every byte value
    await cache.put(e)
    assert await cache.get(A) == e


async def test_what_get_returns_is_a_copy(cache: Cache) -> None:
    e = entry(A)
    await cache.put(e)
    got = await cache.get(A)
    assert got == e
    assert got is not e


async def test_put_replaces_the_previous_entry(cache: Cache) -> None:
    first, second = entry(A), entry(A, heads=2)
    await cache.put(first)
    await cache.put(second)
    assert await cache.get(A) == second


async def test_delete_forgets_the_entry(cache: Cache) -> None:
    await cache.put(entry(A))
    await cache.delete(A)
    assert await cache.get(A) is None


async def test_delete_of_a_missing_entry_is_a_no_op(cache: Cache) -> None:
    await cache.delete(A)
    await cache.delete(A)
    assert await cache.get(A) is None


async def test_put_after_delete_keeps_the_new_entry(cache: Cache) -> None:
    await cache.put(entry(A))
    await cache.delete(A)
    e = entry(A)
    await cache.put(e)
    assert await cache.get(A) == e


# -- actors are independent -------------------------------------------------------------------


async def test_entries_of_different_actors_are_independent(cache: Cache) -> None:
    a, b = entry(A), entry(B)
    await cache.put(a)
    await cache.put(b)
    assert await cache.get(A) == a
    assert await cache.get(B) == b

    b2 = entry(B)
    await cache.put(b2)
    assert await cache.get(A) == a  # replacing B's entry leaves A's

    await cache.delete(A)
    assert await cache.get(A) is None
    assert await cache.get(B) == b2  # deleting A's entry leaves B's


@pytest.mark.parametrize(("first", "second"), COLLIDING, ids=[f"{x}|{y}" for x, y in COLLIDING])
async def test_actors_a_naive_key_would_confuse_stay_distinct(
    cache: Cache, first: ActorRef, second: ActorRef
) -> None:
    assert first != second
    e1, e2 = entry(first), entry(second)
    await cache.put(e1)
    assert await cache.get(second) is None
    await cache.put(e2)
    assert await cache.get(first) == e1
    assert await cache.get(second) == e2
    await cache.delete(first)
    assert await cache.get(first) is None
    assert await cache.get(second) == e2


async def test_hostile_actor_ids_each_keep_their_own_entry(cache: Cache) -> None:
    entries = {ref: entry(ref) for ref in HOSTILE}
    assert len(entries) == len(HOSTILE)
    for e in entries.values():
        await cache.put(e)
    for ref, e in entries.items():
        assert await cache.get(ref) == e, ref
    for ref in HOSTILE[::2]:
        await cache.delete(ref)
    for i, ref in enumerate(HOSTILE):
        expected = None if i % 2 == 0 else entries[ref]
        assert await cache.get(ref) == expected, ref


# -- damaged entries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda good: b"not msgpack at all \xc1", id="garbage"),
        pytest.param(lambda good: b"", id="empty"),
        pytest.param(lambda good: good[: len(good) // 2], id="truncated"),
        pytest.param(lambda good: good[:-3] + b"xyz", id="tail-overwritten"),
        pytest.param(
            lambda good: good.replace(b"precious", b"Precious"), id="one-byte-of-state-flipped"
        ),
    ],
)
async def test_a_damaged_entry_raises_decoding_error(
    cache: Cache, write_raw: WriteRaw, damage: object
) -> None:
    assert callable(damage)
    e = entry(A, state=b"the precious state")
    good = e.to_bytes()
    bad = damage(good)
    assert isinstance(bad, bytes) and bad != good
    await cache.put(e)
    await write_raw(A, bad)
    with pytest.raises(DecodingError):
        await cache.get(A)


async def test_an_entry_of_another_actor_under_this_key_is_refused(
    cache: Cache, write_raw: WriteRaw
) -> None:
    await write_raw(A, entry(B).to_bytes())
    with pytest.raises(DecodingError):
        await cache.get(A)


async def test_a_damaged_entry_can_be_replaced(cache: Cache, write_raw: WriteRaw) -> None:
    await write_raw(A, b"\x00garbage")
    e = entry(A)
    await cache.put(e)
    assert await cache.get(A) == e


async def test_a_damaged_entry_does_not_affect_other_actors(
    cache: Cache, write_raw: WriteRaw
) -> None:
    b = entry(B)
    await cache.put(b)
    await write_raw(A, b"\x00garbage")
    assert await cache.get(B) == b


async def test_the_raw_hook_writes_what_get_reads(cache: Cache, write_raw: WriteRaw) -> None:
    """The damage tests mean something only if the hook writes where the cache reads."""
    e = entry(A)
    await write_raw(A, e.to_bytes())
    assert await cache.get(A) == e


# -- closing ----------------------------------------------------------------------------------


async def test_every_call_after_aclose_raises_closed_error(cache: Cache) -> None:
    await cache.put(entry(A))
    await cache.aclose()
    with pytest.raises(ClosedError):
        await cache.get(A)
    with pytest.raises(ClosedError):
        await cache.put(entry(A))
    with pytest.raises(ClosedError):
        await cache.delete(A)


async def test_aclose_is_idempotent(cache: Cache) -> None:
    await cache.aclose()
    await cache.aclose()
    with pytest.raises(ClosedError):
        await cache.get(A)


async def test_aclose_of_an_unused_cache(cache_url: str) -> None:
    unused = await open_cache(cache_url)
    await unused.aclose()
    with pytest.raises(ClosedError):
        await unused.get(A)


async def test_a_new_cache_on_the_same_url_works_after_another_closed(cache_url: str) -> None:
    first = await open_cache(cache_url)
    await first.put(entry(A))
    await first.aclose()
    second = await open_cache(cache_url)
    try:
        e = entry(B)
        await second.put(e)
        assert await second.get(B) == e
    finally:
        await second.aclose()


async def test_the_cache_meets_the_protocol(cache: Cache) -> None:
    assert isinstance(cache, Cache)


# -- the in-process cache's own behaviour (not part of the contract) --------------------------


async def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = await open_cache("memory://?max_entries=2")
    c = ActorRef("account", "c-3")
    a, b = entry(A), entry(B)
    await cache.put(a)
    await cache.put(b)
    assert await cache.get(A) == a  # A is now the most recently used
    await cache.put(entry(c))
    assert await cache.get(B) is None  # so B went
    assert await cache.get(A) == a
    assert await cache.get(c) is not None
    await cache.aclose()


async def test_memory_cache_replacing_an_entry_does_not_evict() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.put(entry(A))
    await cache.put(entry(B))
    for _ in range(5):
        await cache.put(entry(A))
    assert len(cache) == 2
    assert await cache.get(B) is not None
    await cache.aclose()


async def test_memory_cache_stays_within_its_bound() -> None:
    cache = MemoryCache(max_entries=10)
    refs = [ActorRef("account", str(i)) for i in range(100)]
    for ref in refs:
        await cache.put(entry(ref))
    assert len(cache) == 10
    assert [await cache.get(r) is not None for r in refs] == [False] * 90 + [True] * 10
    await cache.aclose()


def test_memory_cache_url_defaults() -> None:
    assert MemoryCache.from_url("memory://").max_entries == DEFAULT_MAX_ENTRIES == 10_000
    assert MemoryCache.from_url("memory://?max_entries=7").max_entries == 7


@pytest.mark.parametrize(
    "url",
    [
        "memory://?max_entrie=5",
        "memory://?max_entries=0",
        "memory://?max_entries=-1",
        "memory://?max_entries=ten",
        "memory://?max_entries=",
        "memory://?max_entries=1&max_entries=2",
        "memory://somehost",
        "memory:///a/path",
        "redis://127.0.0.1",
    ],
)
def test_memory_cache_refuses_a_bad_url(url: str) -> None:
    with pytest.raises(ConfigurationError):
        MemoryCache.from_url(url)


async def test_memory_cache_keeps_bytes_not_objects() -> None:
    """A caller changing what it got back cannot change what the cache holds."""
    cache = MemoryCache()
    e = entry(A)
    await cache.put(e)
    assert all(isinstance(v, bytes) for v in cache._raw.values())
    got = await cache.get(A)
    assert got is not None
    object.__setattr__(got, "state", b"changed by the caller")
    assert await cache.get(A) == e
    await cache.aclose()
