"""The bank's read model: two projections of :mod:`sourcery.examples.bank` into tables.

``ledger`` is an event projection: each deposit and withdrawal moves an account's row in
``ledger`` once (a repeated event would count twice, a lost one not at all), and the
``largest_deposits`` table keeps the ten largest deposits ever made. ``balances`` is a
state projection: one row per account with its resolved state, equal to what
``Runtime.state`` returns once replicas have healed. Both run on SQLite and PostgreSQL::

    async with Runtime.open(url, [accounts]) as runtime, project(url, ledger) as running:
        await runtime.send(accounts("alice"), Deposit(100))
        await running.caught_up()
"""

from __future__ import annotations

from sourcery._core.actor import Event
from sourcery._core.records import ActorRef
from sourcery._readside.projection import Projection
from sourcery._readside.target import ProjectionTransaction
from sourcery.examples.bank import Account, Deposited, Withdrew, accounts

__all__ = ["LARGEST", "balances", "ledger"]

LARGEST = 10
"""How many deposits ``largest_deposits`` keeps."""

ledger = Projection("bank-ledger", [accounts])
balances = Projection("bank-balances", [accounts])


@ledger.setup
async def _ledger_tables(tx: ProjectionTransaction) -> None:
    await tx.execute(
        "CREATE TABLE IF NOT EXISTS ledger (account text PRIMARY KEY,"
        " balance bigint NOT NULL, movements bigint NOT NULL)"
    )
    await tx.execute(
        "CREATE TABLE IF NOT EXISTS largest_deposits (event_id text PRIMARY KEY,"
        " account text NOT NULL, amount bigint NOT NULL)"
    )


async def _move(tx: ProjectionTransaction, account: str, amount: int) -> None:
    await tx.execute(
        "INSERT INTO ledger (account, balance, movements) VALUES (?, ?, 1)"
        " ON CONFLICT (account) DO UPDATE SET balance = ledger.balance + excluded.balance,"
        " movements = ledger.movements + 1",
        (account, amount),
    )


@ledger.on(Deposited)
async def _deposited(event: Event[Deposited], tx: ProjectionTransaction) -> None:
    await _move(tx, event.actor.id, event.payload.amount)
    # The primary key refuses a deposit seen twice: the batch would fail, not count it.
    await tx.execute(
        "INSERT INTO largest_deposits (event_id, account, amount) VALUES (?, ?, ?)",
        (f"{event.id:032x}", event.actor.id, event.payload.amount),
    )
    await tx.execute(
        "DELETE FROM largest_deposits WHERE event_id NOT IN (SELECT event_id FROM"
        " largest_deposits ORDER BY amount DESC, event_id LIMIT ?)",
        (LARGEST,),
    )


@ledger.on(Withdrew)
async def _withdrew(event: Event[Withdrew], tx: ProjectionTransaction) -> None:
    await _move(tx, event.actor.id, -event.payload.amount)


@balances.setup
async def _balances_table(tx: ProjectionTransaction) -> None:
    await tx.execute(
        "CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, owner text NOT NULL,"
        " balance bigint NOT NULL, overdrafts bigint NOT NULL)"
    )


@balances.on_state(accounts)
async def _balance(
    actor: ActorRef[Account, object, object], state: Account, tx: ProjectionTransaction
) -> None:
    await tx.execute(
        "INSERT INTO balances (account, owner, balance, overdrafts) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (account) DO UPDATE SET owner = excluded.owner,"
        " balance = excluded.balance, overdrafts = excluded.overdrafts",
        (actor.id, state.owner, state.balance, state.overdrafts),
    )
