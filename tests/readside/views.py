"""Reading the projections' tables back, and what they should hold, for the tests."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from sourcery import Outcome, Runtime, open_store
from sourcery._core.codec import Codec
from sourcery._core.records import BEGINNING, EventRecord
from sourcery._readside.target import open_target
from sourcery.examples.bank import (
    Account,
    BankEvent,
    Deposit,
    Deposited,
    InsufficientFunds,
    Withdraw,
    Withdrew,
    accounts,
)
from sourcery.examples.bank_views import LARGEST

CODEC = Codec(accounts)


async def random_command(
    runtime: Runtime, rng: random.Random, names: list[str], deposits: float = 0.6, most: int = 500
) -> Outcome[Account, BankEvent] | None:
    """A deposit or a withdrawal to one of ``names``; None if refused for lack of funds."""
    actor = accounts(rng.choice(names))
    amount = rng.randint(1, most)
    try:
        if rng.random() < deposits:
            return await runtime.send(actor, Deposit(amount))
        return await runtime.send(actor, Withdraw(amount))
    except InsufficientFunds:
        return None


async def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    target = await open_target(url)
    try:
        async with target.transaction() as tx:
            return await tx.fetch(sql, params)
    finally:
        await target.aclose()


async def all_events(url: str) -> list[EventRecord]:
    store = await open_store(url)
    found: list[EventRecord] = []
    position = BEGINNING
    try:
        while page := await store.read_events(position, 1000):
            found.extend(r for _, r in page)
            position = page[-1][0]
    finally:
        await store.aclose()
    return found


def expected_ledger(events: list[EventRecord]) -> dict[str, tuple[int, int]]:
    """account -> (balance, movements): a fold of every stored deposit and withdrawal."""
    balance: Counter[str] = Counter()
    moves: Counter[str] = Counter()
    for record in events:
        payload = CODEC.decode_payload(record.type, record.version, record.payload)
        if isinstance(payload, Deposited):
            balance[record.actor_id] += payload.amount
        elif isinstance(payload, Withdrew):
            balance[record.actor_id] -= payload.amount
        else:
            continue
        moves[record.actor_id] += 1
    return {a: (balance[a], moves[a]) for a in moves}


def expected_largest(events: list[EventRecord]) -> list[tuple[str, str, int]]:
    deposits = []
    for record in events:
        payload = CODEC.decode_payload(record.type, record.version, record.payload)
        if isinstance(payload, Deposited):
            deposits.append((record.id.hex(), record.actor_id, payload.amount))
    deposits.sort(key=lambda d: (-d[2], d[0]))
    return deposits[:LARGEST]


async def ledger_view(url: str) -> dict[str, tuple[int, int]]:
    found = await rows(url, "SELECT account, balance, movements FROM ledger")
    return {a: (int(b), int(m)) for a, b, m in found}


async def largest_view(url: str) -> list[tuple[str, str, int]]:
    found = await rows(
        url, "SELECT event_id, account, amount FROM largest_deposits ORDER BY amount DESC, event_id"
    )
    return [(e, a, int(m)) for e, a, m in found]


async def check_ledger(url: str) -> list[EventRecord]:
    """The ledger tables equal a fold of every stored event (none twice, none missing);
    the events."""
    events = await all_events(url)
    assert await ledger_view(url) == expected_ledger(events)
    assert await largest_view(url) == expected_largest(events)
    return events
