"""Resolution and replication figures: healing must cost the divergence, not the history."""

from __future__ import annotations

import time
from pathlib import Path

from sourcery import Runtime
from sourcery._stores import Store, open_store
from sourcery.replication import catch_up

from .workloads import Add, tally

Results = dict[str, float]

BATCH = 1000
"""Events per command while building history: one snapshot and one pack per command."""


async def _runtime(store: Store, every: int) -> Runtime:
    rt = Runtime(store, [tally(every)])
    await store.register_writer(rt.writer)
    return rt


async def bench_resolution(
    url: str, history: int, branches: tuple[int, ...], replica_url: str
) -> Results:
    """An actor with ``history`` events, then for each size two concurrent branches of that
    many events since their common ancestor, healed by a third writer's read."""
    results: Results = {}
    kind = tally(BATCH)
    ref = kind("ledger")
    store = await open_store(url)
    try:
        builder = await _runtime(store, BATCH)
        for _ in range(history // BATCH):
            await builder.send(ref, Add(BATCH))
        await builder.aclose()
        for size in branches:
            left = await _runtime(store, BATCH)
            right = await _runtime(store, BATCH)
            await left.state(ref)
            await right.state(ref)
            for _ in range(size // BATCH):
                await left.send(ref, Add(BATCH))
                await right.send(ref, Add(BATCH))
            heads = len(await store.heads(ref))
            healer = await _runtime(store, BATCH)
            before = (store.stats.snapshots_read, store.stats.packs_read)
            start = time.perf_counter()
            state = await healer.state(ref)
            elapsed = time.perf_counter() - start
            read = store.stats.snapshots_read - before[0] + store.stats.packs_read - before[1]
            assert heads == 2 and len(await store.heads(ref)) == 1
            assert healer.resolutions.events_merged == 2 * size
            for rt in (left, right, healer):
                await rt.aclose()
            results[f"resolve_{size}_events_per_branch_ms"] = elapsed * 1000
            results[f"resolve_{size}_records_read"] = read
            _ = state
        results["resolve_history_events"] = history

        replica = await open_store(replica_url)
        try:
            start = time.perf_counter()
            copied = await catch_up(store, replica, limit=5000)
            elapsed = time.perf_counter() - start
        finally:
            await replica.aclose()
        results["replication_records"] = copied
        results["replication_records_per_s"] = copied / elapsed
    finally:
        await store.aclose()
    return results


def paths(directory: Path) -> tuple[str, str]:
    return f"sqlite:///{directory / 'history.db'}", f"sqlite:///{directory / 'replica.db'}"
