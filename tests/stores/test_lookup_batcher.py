"""The lookup batcher behind ``Store.message``: shared queries, and how failures reach
each caller."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from sourcery._core.errors import ClosedError, StoreError, StoreUnavailable
from sourcery._stores.groupcommit import LookupBatcher


async def test_keys_asked_together_go_out_in_one_query_each_key_once() -> None:
    queries: list[list[int]] = []

    async def fetch(keys: Sequence[int]) -> Mapping[int, str]:
        queries.append(list(keys))
        await asyncio.sleep(0)
        return {k: f"v{k}" for k in keys if k % 2 == 0}

    batcher: LookupBatcher[int, str] = LookupBatcher(fetch)
    asked = [1, 2, 3, 4, 2, 2, 5]
    found = await asyncio.gather(*(batcher.get(k) for k in asked))
    assert found == [None, "v2", None, "v4", "v2", "v2", None]
    assert queries == [[1, 2, 3, 4, 5]]
    assert batcher.queries == 1


async def test_a_key_asked_during_a_query_waits_for_the_next_one() -> None:
    # What a query finds was committed before it started: a key asked for later must not
    # join it, or it could miss a commit that returned between the two.
    store: dict[str, int] = {}
    started = asyncio.Event()
    release = asyncio.Event()
    queries: list[list[str]] = []

    async def fetch(keys: Sequence[str]) -> Mapping[str, int]:
        queries.append(list(keys))
        snapshot = dict(store)
        started.set()
        await release.wait()
        return {k: snapshot[k] for k in keys if k in snapshot}

    batcher: LookupBatcher[str, int] = LookupBatcher(fetch)
    first = batcher.get("a")
    await started.wait()
    store["a"] = 1  # committed while the first query is under way
    second = batcher.get("a")
    release.set()
    assert await first is None
    assert await second == 1
    assert queries == [["a"], ["a"]]


async def test_a_key_the_query_cannot_take_fails_only_its_own_callers() -> None:
    queries: list[list[str]] = []

    async def fetch(keys: Sequence[str]) -> Mapping[str, str]:
        queries.append(list(keys))
        if "bad" in keys:
            raise StoreError("cannot look that up")
        return {k: k.upper() for k in keys}

    batcher: LookupBatcher[str, str] = LookupBatcher(fetch)
    found = await asyncio.gather(
        *(batcher.get(k) for k in ["a", "bad", "b", "bad"]), return_exceptions=True
    )
    assert found[0] == "A" and found[2] == "B"
    assert isinstance(found[1], StoreError) and isinstance(found[3], StoreError)
    assert queries == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]


async def test_an_unavailable_store_fails_every_caller_at_once() -> None:
    queries: list[list[str]] = []

    async def fetch(keys: Sequence[str]) -> Mapping[str, str]:
        queries.append(list(keys))
        raise StoreUnavailable("gone")

    batcher: LookupBatcher[str, str] = LookupBatcher(fetch)
    found = await asyncio.gather(*(batcher.get(k) for k in "abc"), return_exceptions=True)
    assert all(isinstance(f, StoreUnavailable) for f in found)
    assert queries == [["a", "b", "c"]]


async def test_a_cancelled_caller_does_not_cancel_the_others_on_its_key() -> None:
    release = asyncio.Event()

    async def fetch(keys: Sequence[str]) -> Mapping[str, str]:
        await release.wait()
        return {k: k for k in keys}

    batcher: LookupBatcher[str, str] = LookupBatcher(fetch)
    waiting = [asyncio.ensure_future(batcher.get("k")) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    release.set()
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert done[1:] == ["k", "k"]


async def test_at_most_max_keys_per_query_and_every_key_answered() -> None:
    queries: list[int] = []

    async def fetch(keys: Sequence[int]) -> Mapping[int, int]:
        queries.append(len(keys))
        return {k: -k for k in keys}

    batcher: LookupBatcher[int, int] = LookupBatcher(fetch, max_keys=10)
    found = await asyncio.gather(*(batcher.get(k % 25) for k in range(100)))
    assert found == [-(k % 25) for k in range(100)]
    assert queries == [10, 10, 5]


async def test_a_cancelled_query_fails_its_callers_and_those_queued_with_closed() -> None:
    started = asyncio.Event()

    async def fetch(keys: Sequence[str]) -> Mapping[str, str]:
        started.set()
        await asyncio.Event().wait()
        return {}

    batcher: LookupBatcher[str, str] = LookupBatcher(fetch)
    first = batcher.get("a")
    await started.wait()
    queued = batcher.get("b")
    task = batcher._task
    assert task is not None
    task.cancel()
    for future in (first, queued):
        with pytest.raises(ClosedError):
            await future


async def test_a_query_cancelled_before_it_starts_fails_its_callers_with_closed() -> None:
    async def fetch(keys: Sequence[str]) -> Mapping[str, str]:
        return {k: k for k in keys}

    batcher: LookupBatcher[str, str] = LookupBatcher(fetch)
    asked = [batcher.get(k) for k in "ab"]
    await asyncio.sleep(0)  # the query task is under way, not yet querying
    task = batcher._task
    assert task is not None
    task.cancel()
    for future in asked:
        with pytest.raises(ClosedError):
            await future
