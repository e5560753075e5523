"""Isolation broken on purpose: two writers process messages for the same actors at once.

Two runtimes with different writer ids share one store (one SQLite file through two
connections, or one store object) and neither tells the other what it wrote, so both build
snapshots of the same actors: siblings. Reading through a third runtime must heal them: every
acknowledged event applied exactly once, one head per actor afterwards, and the two writers
agreeing with it once they reload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from partition_actor import Append, Log, duplicates, log_kind

from sourcery import ActorRef, Runtime, Store, VectorClock, open_store

ACTORS = 20
MESSAGES = 9
"""Messages per writer per actor."""

kind = log_kind(3)
REFS = [kind(f"acct-{k}") for k in range(ACTORS)]


@contextlib.asynccontextmanager
async def two_writers(tmp_path: Path, shared: bool) -> AsyncIterator[tuple[Runtime, Runtime]]:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    if not shared:
        async with Runtime.open(url, [kind]) as a, Runtime.open(url, [kind]) as b:
            yield a, b
        return
    store = await open_store(url)
    try:
        a = Runtime(store, [kind], writer="writer-a")
        await store.register_writer(a.writer)
        b = Runtime(store, [kind], writer="writer-b")
        await store.register_writer(b.writer)
        yield a, b
        await a.aclose()
        await b.aclose()
    finally:
        await store.aclose()


async def work(rt: Runtime, name: str, k: int, reload_every: int) -> list[str]:
    """Send this actor its messages one after another; return the acknowledged tokens."""
    acked: list[str] = []
    ref = REFS[k]
    for i in range(MESSAGES):
        if reload_every and i % reload_every == reload_every - 1:
            # What a redelivery to a fresh mailbox does: load the actor again, and resolve
            # whatever siblings the other writer has made meanwhile.
            rt.forget([ref])
        tokens = (f"{name}-{k}-{i}a", f"{name}-{k}-{i}b") if i % 2 else (f"{name}-{k}-{i}",)
        out = await rt.send(ref, Append(tokens))
        assert not duplicates(out.state.tokens), out.state
        acked.extend(tokens)
        await asyncio.sleep(0)
    return acked


async def read_all(rt: Runtime, refs: list[ActorRef]) -> list[tuple[Log, VectorClock]]:
    return [(await rt.state(ref), await rt.clock(ref)) for ref in refs]


async def heads_per_actor(store: Store) -> list[int]:
    return [len(await store.heads(ref)) for ref in REFS]


@pytest.mark.parametrize("shared", [False, True], ids=["two-connections", "one-store"])
@pytest.mark.parametrize("reload_every", [0, 3], ids=["never-reload", "reload"])
async def test_concurrent_writers_heal_to_one_history(
    tmp_path: Path, shared: bool, reload_every: int
) -> None:
    async with two_writers(tmp_path, shared) as (a, b):
        assert a.writer != b.writer
        # Every actor gets messages from both writers, interleaved: A0 B0 A1 B1 ...
        jobs = [
            work(rt, name, k, reload_every)
            for k in range(ACTORS)
            for name, rt in (("a", a), ("b", b))
        ]
        results = await asyncio.gather(*jobs)
        acked: dict[ActorRef, list[str]] = {ref: [] for ref in REFS}
        for i, tokens in enumerate(results):
            acked[REFS[i // 2]].extend(tokens)

        # Isolation really was broken: the writers made siblings (and, reloading, healed
        # some of them already while the other writer went on).
        diverged = sum(n > 1 for n in await heads_per_actor(a.store))
        healed_on_the_way = a.resolutions.divergences + b.resolutions.divergences
        if reload_every:
            assert healed_on_the_way > 0  # siblings formed, and reloading writers healed them
        else:
            assert diverged > 0  # siblings formed, and nobody healed them yet
            assert healed_on_the_way == 0

        async with Runtime.open(f"sqlite:///{tmp_path / 'one.db'}", [kind]) as third:
            healed = await read_all(third, REFS)
            for ref, (state, clock) in zip(REFS, healed, strict=True):
                assert not duplicates(state.tokens), (ref, duplicates(state.tokens))
                assert sorted(state.tokens) == sorted(acked[ref]), ref
                assert clock.get(a.writer) and clock.get(b.writer), (ref, clock)
            assert third.resolutions.divergences >= diverged
            assert await heads_per_actor(third.store) == [1] * ACTORS

            # A second reader finds nothing left to heal.
            again = await Runtime.open(f"sqlite:///{tmp_path / 'one.db'}", [kind])
            try:
                assert await read_all(again, REFS) == healed
                assert again.resolutions.divergences == 0
            finally:
                await again.aclose()

        # Both writers agree once they reload: by forget, or by refresh.
        a.forget(REFS)
        assert await read_all(a, REFS) == healed
        for ref in REFS:
            await b.state(ref, refresh=True)
        assert await read_all(b, REFS) == healed
        assert await heads_per_actor(a.store) == [1] * ACTORS

        # And they go on writing on the healed history.
        out = await a.send(REFS[0], Append(("after",)))
        assert out.state.tokens[-1] == "after"
        assert sorted(out.state.tokens) == sorted([*acked[REFS[0]], "after"])
