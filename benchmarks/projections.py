"""Events projected into a real table per second, beside the raw rate of reading the same
events and inserting the same rows with plain ``executemany`` in the same run."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sourcery import Event, Projection, ProjectionTransaction, Runtime, open_store, project
from sourcery._core.records import BEGINNING
from sourcery._readside.target import open_target

from .workloads import Add, Added, tally

Results = dict[str, float]

KIND = tally(1000)
_ROWS = "CREATE TABLE IF NOT EXISTS {table} (event_id text, actor text, amount bigint)"

rows = Projection("bench-rows", [KIND])


@rows.setup
async def _table(tx: ProjectionTransaction) -> None:
    await tx.execute(_ROWS.format(table="projected"))


@rows.on(Added)
async def _added(event: Event[Added], tx: ProjectionTransaction) -> None:
    tx.add(
        "INSERT INTO projected (event_id, actor, amount) VALUES (?, ?, ?)",
        (f"{event.id:032x}", event.actor.id, event.payload.amount),
    )


async def _fill(url: str, events: int) -> None:
    async with Runtime.open(url, [KIND]) as rt:
        for i in range(events // 1000):
            await rt.send(KIND(f"t{i % 50}"), Add(1000))


async def _raw(url: str, batch: int) -> float:
    """Seconds to read every event and insert its row, ``batch`` per transaction."""
    store = await open_store(url)
    target = await open_target(url)
    try:
        async with target.transaction() as tx:
            await tx.execute(_ROWS.format(table="raw_rows"))
        start = time.perf_counter()
        position = BEGINNING
        while page := await store.read_events(position, batch):
            position = page[-1][0]
            data: list[tuple[Any, ...]] = [
                (r.id.hex(), r.actor_id, 1) for _, r in page if r.type == "Added"
            ]
            async with target.transaction() as tx:
                await tx.executemany(
                    "INSERT INTO raw_rows (event_id, actor, amount) VALUES (?, ?, ?)", data
                )
        return time.perf_counter() - start
    finally:
        await target.aclose()
        await store.aclose()


async def bench_projection(url: str, name: str, events: int, batch: int = 500) -> Results:
    """``events`` events projected one row each, and the raw rate, on the store at ``url``."""
    await _fill(url, events)
    raw = await _raw(url, batch)
    start = time.perf_counter()
    async with project(url, rows, batch=batch) as running:
        await running.caught_up()
    projected = time.perf_counter() - start
    return {
        f"{name}_projection_events_per_s": events / projected,
        f"{name}_projection_raw_per_s": events / raw,
        f"{name}_projection_ratio_to_raw": raw / projected,
    }


async def bench_postgres_projection(base: str, events: int) -> Results:
    """As :func:`bench_projection`, in a schema of its own, dropped afterwards."""
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        return await bench_projection(f"{base}?schema={schema}", "postgres", events)
    finally:
        con = await asyncpg.connect(base)
        try:
            await con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await con.close()
