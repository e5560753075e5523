"""PostgreSQL and Redis figures, next to the raw driver measured in the same run."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from sourcery import ActorRef, Runtime
from sourcery._core.ids import IdGenerator, id_to_bytes
from sourcery.examples.bank import Deposit, accounts

from .workloads import Add, tally

Results = dict[str, float]

POSTGRES = os.environ.get("SOURCERY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SOURCERY_BENCH_REDIS", "redis://127.0.0.1:6379/0")


async def _drop(schema: str) -> None:
    import asyncpg

    con = await asyncpg.connect(POSTGRES)
    try:
        await con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await con.close()


async def bench_postgres(actors: int, commands: int) -> Results:
    """Commands/s through the runtime, and the raw ``executemany`` insert rate."""
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES}?schema={schema}&pool_size=4"
    per_actor = commands // actors
    try:
        async with Runtime.open(url, [accounts]) as rt:
            refs = [accounts(f"acct-{i}") for i in range(actors)]
            await asyncio.gather(*(rt.state(ref) for ref in refs))  # cold loads aside

            async def client(ref: ActorRef) -> None:
                for _ in range(per_actor):
                    await rt.send(ref, Deposit(1))

            start = time.perf_counter()
            await asyncio.gather(*(client(ref) for ref in refs))
            elapsed = time.perf_counter() - start
        sent = per_actor * actors

        con = await asyncpg.connect(POSTGRES)
        try:
            await con.execute(f"SET search_path TO {schema}")
            ids = IdGenerator()
            rows = [
                (
                    "account",
                    f"raw-{i % actors}",
                    "raw-writer",
                    i // actors + 1,
                    id_to_bytes(ids.new()),
                    int(time.time() * 1000),
                    f"m-{i}",
                    "Deposited",
                    1,
                    b"\x81\xa6amount\x01",
                )
                for i in range(sent)
            ]
            sql = (
                "INSERT INTO events (actor_type, actor_id, writer, n, id, timestamp,"
                " initiated_by, type, version, payload) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
            )
            start = time.perf_counter()
            for offset in range(0, sent, 1000):
                async with con.transaction():
                    await con.executemany(sql, rows[offset : offset + 1000])
            raw = sent / (time.perf_counter() - start)
        finally:
            await con.close()
    finally:
        await _drop(schema)
    ours = sent / elapsed
    return {
        "postgres_commands_per_s": ours,
        "postgres_raw_inserts_per_s": raw,
        "postgres_ratio_to_raw": ours / raw,
    }


async def bench_cache(actors: int) -> Results:
    """Cold loads by a new worker of actors that each have 99 events after their snapshot
    (the most a threshold of 100 leaves): validated Redis cache hits against the store."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES}?schema={schema}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    cache = f"{REDIS}?prefix={prefix}&timeout=1"
    kind = tally(100)
    refs = [kind(f"warm-{i}") for i in range(actors)]
    results: Results = {}
    try:
        async with Runtime.open(url, [kind], cache=cache) as rt:
            for ref in refs:
                await rt.send(ref, Add(100))  # a snapshot
                await rt.send(ref, Add(99))  # then 99 loose events
        for label, with_cache in (("cache_hit", True), ("store", False)):
            async with Runtime.open(url, [kind], cache=cache if with_cache else None) as rt:
                await rt.state(kind("someone-else"))  # connections up before timing
                start = time.perf_counter()
                for ref in refs:
                    await rt.state(ref)
                elapsed = time.perf_counter() - start
                results[f"cold_load_{label}_ms"] = elapsed * 1000 / actors
                results[f"cold_load_{label}_events_read"] = rt.store.stats.events_read
                if with_cache:
                    results["cold_load_cache_hits"] = rt.cache_hits
    finally:
        await _drop(schema)
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS)
        try:
            keys = [key async for key in client.scan_iter(f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
    return results
