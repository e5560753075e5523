"""PostgreSQL going away under load: sends fail cleanly or are retried, nothing acked is lost."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict

import asyncpg
import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, postgres_down

from sourcery import Runtime, StoreUnavailable
from sourcery.examples.bank import Account, Deposit, accounts

pytestmark = pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down()))


async def _terminate(application: str) -> int:
    con = await asyncpg.connect(POSTGRES)
    try:
        killed = await con.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND pid <> pg_backend_pid()",
            application,
        )
    finally:
        await con.close()
    return len(killed)


async def test_killed_connections_lose_no_acknowledged_event() -> None:
    application = f"sourcery-fault-{uuid.uuid4().hex[:8]}"
    schema = f"{TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES}?schema={schema}&application_name={application}&pool_size=4"
    acked: dict[str, int] = defaultdict(int)
    failures: list[BaseException] = []
    unknown: dict[str, list[int]] = defaultdict(list)  # amounts of the sends that failed
    rng = random.Random(7)
    killed = 0
    done: list[int] = []

    async with Runtime.open(url, [accounts]) as rt:

        async def client(i: int) -> None:
            ref = accounts(f"acct-{i}")
            for _ in range(60):
                amount = rng.randint(1, 9)
                try:
                    await rt.send(ref, Deposit(amount))
                except StoreUnavailable as exc:
                    failures.append(exc)
                    unknown[ref.id].append(amount)
                    continue
                finally:
                    done.append(1)
                acked[ref.id] += amount

        async def saboteur() -> None:
            # Cut the connections at fixed points of the run, not after a wall-clock delay.
            nonlocal killed
            for mark in (100, 500, 900, 1300):
                while sum(done) < mark:
                    await asyncio.sleep(0)
                killed += await _terminate(application)

        await asyncio.gather(*(client(i) for i in range(40)), saboteur())
        assert killed > 0, "the test never cut a connection"
        # The runtime recovers by itself once the server answers again.
        after = await rt.send(accounts("acct-0"), Deposit(1))
        acked["acct-0"] += 1
        assert after.state.balance >= acked["acct-0"]

    # Every acknowledged deposit is there exactly once; a failed send may or may not have
    # committed (its outcome was unknown), but at most once: so each account's balance is
    # its acknowledged sum plus the amounts of some of its own failed sends.
    async with Runtime.open(url, [accounts]) as rt:
        for i in range(40):
            name = f"acct-{i}"
            state: Account = await rt.state(accounts(name))
            extra = state.balance - acked[name]
            assert extra in _subset_sums(unknown[name]), (name, extra, unknown[name])


def _subset_sums(amounts: list[int]) -> set[int]:
    """Every total that some of ``amounts`` (each used at most once) add up to."""
    sums = {0}
    for amount in amounts:
        sums |= {s + amount for s in sums}
    return sums


async def test_a_schema_named_like_a_keyword_works() -> None:
    from sourcery._stores import open_store
    from sourcery._stores.postgres import SCHEMA_VERSION

    url = f"{POSTGRES}?schema=user"
    try:
        store = await open_store(url)
        try:
            assert await store.schema_version() == SCHEMA_VERSION
        finally:
            await store.aclose()
    finally:
        con = await asyncpg.connect(POSTGRES)
        try:
            await con.execute('DROP SCHEMA IF EXISTS "user" CASCADE')
        finally:
            await con.close()
