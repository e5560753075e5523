"""Projections into real tables on SQLite and PostgreSQL: the bank's read model, failing
handlers that park and resume, and two runners of one projection."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from sourcery import (
    ConfigurationError,
    Event,
    Projection,
    ProjectionParked,
    ProjectionTransaction,
    Runtime,
    project,
)
from sourcery._readside.target import numbered
from sourcery.examples.bank import Deposit, Deposited, Open, accounts
from sourcery.examples.bank_views import balances, ledger

from .views import all_events, check_ledger, expected_ledger, ledger_view, random_command, rows

MakeUrl = Callable[[], str]


def test_placeholders_become_numbered_outside_quotes() -> None:
    assert numbered("a = ? AND b = '?' AND \"c?\" = ?") == "a = $1 AND b = '?' AND \"c?\" = $2"


async def bank_traffic(runtime: Runtime, seed: int, commands: int = 80) -> None:
    rng = random.Random(seed)
    names = [f"acct-{i}" for i in range(6)]
    for name in names:
        await runtime.send(accounts(name), Open(name.upper()))
    for _ in range(commands):
        await random_command(runtime, rng, names)


async def test_the_bank_read_model_equals_a_fold_and_the_states(make_url: MakeUrl) -> None:
    url = make_url()
    async with (
        Runtime.open(url, [accounts]) as runtime,
        project(url, ledger, batch=7) as running_ledger,
        project(url, balances, batch=5) as running_balances,
    ):
        await bank_traffic(runtime, seed=1)
        await running_ledger.caught_up(timeout=30)
        await running_balances.caught_up(timeout=30)
        status = await running_ledger.status()
        events = await check_ledger(url)
        assert status.state == "running" and status.lag == 0 and status.lag_seconds == 0
        assert status.events == len(events)
        table = await rows(url, "SELECT account, owner, balance, overdrafts FROM balances")
        assert len(table) == 6
        for account, owner, balance, overdrafts in table:
            state = await runtime.state(accounts(account))
            assert (owner, int(balance), int(overdrafts)) == (
                state.owner,
                state.balance,
                state.overdrafts,
            )


async def test_the_view_may_live_in_another_database(make_url: MakeUrl) -> None:
    url, target = make_url(), make_url()
    async with (
        Runtime.open(url, [accounts]) as runtime,
        project(url, ledger, target=target) as running,
    ):
        await bank_traffic(runtime, seed=2, commands=20)
        await running.caught_up(timeout=30)
    assert await ledger_view(target) == expected_ledger(await all_events(url))


async def test_two_runners_of_one_projection_apply_each_event_once(make_url: MakeUrl) -> None:
    url = make_url()
    async with (
        Runtime.open(url, [accounts]) as runtime,
        project(url, ledger, batch=3) as first,
        project(url, ledger, batch=4) as second,
    ):
        await bank_traffic(runtime, seed=3)
        await first.caught_up(timeout=30)
        await second.caught_up(timeout=30)
    await check_ledger(url)


def flaky_projection(bad: set[int]) -> Projection:
    flaky = Projection("flaky", [accounts])

    @flaky.setup
    async def table(tx: ProjectionTransaction) -> None:
        await tx.execute("CREATE TABLE IF NOT EXISTS amounts (amount bigint NOT NULL)")

    @flaky.on(Deposited)
    async def deposited(event: Event[Deposited], tx: ProjectionTransaction) -> None:
        await tx.execute("INSERT INTO amounts (amount) VALUES (?)", (event.payload.amount,))
        if event.payload.amount in bad:
            raise RuntimeError(f"cannot take {event.payload.amount}")

    return flaky


async def amounts(url: str) -> list[int]:
    return sorted(int(a) for (a,) in await rows(url, "SELECT amount FROM amounts"))


async def test_a_failing_handler_parks_then_skip_and_a_fix_resume(make_url: MakeUrl) -> None:
    url = make_url()
    bad = {13}
    flaky = flaky_projection(bad)
    acct = accounts("a")
    async with Runtime.open(url, [accounts]) as runtime:
        async with project(url, flaky, batch=10, max_failures=3, backoff=0.01) as running:
            for amount in (5, 13, 7):
                await runtime.send(acct, Deposit(amount))
            with pytest.raises(ProjectionParked, match="cannot take 13"):
                await running.caught_up(timeout=30)
            status = await running.status()
            other = (await runtime.send(acct, Deposit(1))).events[0]
            assert status.state == "parked" and status.failures == 3
            assert "cannot take 13" in status.error and status.lag == 2
            assert 0 < status.lag_seconds < 60
            assert await amounts(url) == [5]  # the failing event's writes rolled back
            assert status.failed_event is not None and status.failed_event != other.id
            with pytest.raises(ConfigurationError):
                await running.skip(other.id)
            await running.skip(status.failed_event)
            await running.caught_up(timeout=30)
            assert await amounts(url) == [1, 5, 7]
            await runtime.send(acct, Deposit(13))
            with pytest.raises(ProjectionParked):
                await running.caught_up(timeout=30)
        bad.clear()  # the fix: a restart tries the parked event again
        async with project(url, flaky, batch=10, max_failures=3, backoff=0.01) as running:
            await running.caught_up(timeout=30)
            status = await running.status()
            assert status.state == "running" and status.failed_event is None
            assert await amounts(url) == [1, 5, 7, 13]


async def test_a_failing_handler_is_retried_with_backoff(make_url: MakeUrl) -> None:
    url = make_url()
    bad = {13}
    flaky = flaky_projection(bad)
    async with (
        Runtime.open(url, [accounts]) as runtime,
        project(url, flaky, max_failures=1000, backoff=0.02) as running,
    ):
        await runtime.send(accounts("a"), Deposit(13))
        for _ in range(200):
            status = await running.status()
            if status.state == "failing" and status.failures >= 2:
                break
            await asyncio.sleep(0.02)
        assert status.state == "failing" and "cannot take 13" in status.error
        bad.clear()
        await running.caught_up(timeout=30)
        status = await running.status()
        assert status.state == "running" and status.failures == 0
        assert await amounts(url) == [13]


async def test_queued_writes_run_in_order_and_a_bad_one_is_found(make_url: MakeUrl) -> None:
    url = make_url()
    queued = Projection("queued", [accounts])

    @queued.setup
    async def table(tx: ProjectionTransaction) -> None:
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS queued (amount bigint NOT NULL CHECK (amount <> 13))"
        )

    @queued.on(Deposited)
    async def deposited(event: Event[Deposited], tx: ProjectionTransaction) -> None:
        tx.add("INSERT INTO queued (amount) VALUES (?)", (event.payload.amount,))

    async with Runtime.open(url, [accounts]) as runtime:
        ids = {}
        for amount in range(1, 21):
            ids[amount] = (await runtime.send(accounts("q"), Deposit(amount))).events[0].id
        async with project(url, queued, batch=50, max_failures=2, backoff=0.01) as running:
            with pytest.raises(ProjectionParked, match=r"(?i)check"):
                await running.caught_up(timeout=30)
            status = await running.status()
            assert status.failed_event == ids[13] and status.lag == 8
            found = sorted(int(a) for (a,) in await rows(url, "SELECT amount FROM queued"))
            assert found == list(range(1, 13))
            await running.skip(ids[13])
            await running.caught_up(timeout=30)
    found = sorted(int(a) for (a,) in await rows(url, "SELECT amount FROM queued"))
    assert found == [a for a in range(1, 21) if a != 13]
