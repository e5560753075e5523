"""The demo's workload: the bank accounts, the commands sent to them, and the tasks that
send them and count what happened.

Commands come as ``(account index, command)`` pairs from an iterator that ``concurrency``
tasks share: each takes the next pair when it is free, so the store sees that many
commands under way at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from sourcery._core.actor import ActorType
from sourcery._core.clock import VectorClock
from sourcery._core.config import parse_sqlite_url
from sourcery._core.errors import ConfigurationError
from sourcery._core.records import ActorRef
from sourcery._engine.runtime import Runtime
from sourcery.examples.bank import (
    Account,
    BankEvent,
    Command,
    Deposit,
    InsufficientFunds,
    Open,
    Withdraw,
    accounts,
)

__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "Bank",
    "Finals",
    "Progress",
    "Tally",
    "account_id",
    "bank",
    "check_options",
    "moves",
    "opens",
    "read_all",
    "require_empty",
    "send_all",
]

DEFAULT_SNAPSHOT_EVERY = 5
"""The demo snapshots far more often than the default 100, so that a short run shows
snapshots, and so that the two sides of a partition build divergent branches of them."""

Progress = Callable[[int], None]
"""Called with the number of commands done so far."""

Bank = ActorType[Account, Command, BankEvent]

Finals = dict[ActorRef, tuple[Account, VectorClock]]
"""Every account's state and clock, as one replica reads them."""


def account_id(i: int) -> str:
    """The id of the demo's ``i``-th account (0-based): ``acct-00001`` and so on."""
    return f"acct-{i + 1:05d}"


def bank(n_accounts: int, snapshot_every: int) -> tuple[Bank, list[ActorRef]]:
    """The bank's account type, snapshotting every ``snapshot_every`` events, and the
    demo's accounts."""
    kind = dataclasses.replace(accounts, snapshot_every=snapshot_every)
    return kind, [kind(account_id(i)) for i in range(n_accounts)]


def check_options(
    url: str, n_accounts: int, n_commands: int, concurrency: int, *, reopens: bool = True
) -> None:
    """Refuse a workload that cannot run: raise :class:`ConfigurationError`."""
    if n_accounts < 1:
        raise ConfigurationError(f"the demo needs at least one account, got {n_accounts}")
    if n_commands < n_accounts:
        raise ConfigurationError(
            f"the demo opens every account first, so it needs at least {n_accounts} "
            f"commands, got {n_commands}"
        )
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, got {concurrency}")
    if reopens and urlsplit(url).scheme == "sqlite" and parse_sqlite_url(url).memory:
        raise ConfigurationError("the demo reopens its store to audit it; use a file, not memory")


async def require_empty(*runtimes: tuple[Runtime, str]) -> None:
    """Refuse stores that hold actors already: the audit counts on a fresh start."""
    for rt, url in runtimes:
        if await rt.store.actors(limit=1):
            kind = "an empty store" if len(runtimes) == 1 else "empty stores"
            raise ConfigurationError(f"the demo needs {kind}; {url} already holds actors")


@dataclass(slots=True)
class Tally:
    """What one replica's commands did, counted as their outcomes arrive."""

    accepted: int = 0
    rejected: int = 0
    events: int = 0
    deposited: int = 0
    withdrawn: int = 0
    done: int = 0


def opens(n_accounts: int) -> Iterator[tuple[int, Command]]:
    """One ``Open`` per account."""
    for i in range(n_accounts):
        yield i, Open(owner=f"owner {i + 1}")


def moves(n_accounts: int, n: int, rng: random.Random) -> Iterator[tuple[int, Command]]:
    """Random deposits and withdrawals; about a third of the withdrawals are too large."""
    for _ in range(n):
        i = rng.randrange(n_accounts)
        if rng.random() < 0.5:
            yield i, Deposit(rng.randint(1, 100))
        else:
            yield i, Withdraw(rng.randint(1, 150))


async def send_all(
    rt: Runtime,
    refs: list[ActorRef],
    work: Iterator[tuple[int, Command]],
    tally: Tally,
    concurrency: int,
    tick: Callable[[], None],
) -> None:
    """Send ``work`` from ``concurrency`` tasks sharing one iterator, counting outcomes."""

    async def worker() -> None:
        for i, command in work:
            try:
                outcome = await rt.send(refs[i], command)
            except InsufficientFunds:
                tally.rejected += 1
            else:
                tally.accepted += 1
                tally.events += len(outcome.events)
                if isinstance(command, Deposit):
                    tally.deposited += command.amount
                elif isinstance(command, Withdraw):
                    tally.withdrawn += command.amount
            tally.done += 1
            tick()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def read_all(rt: Runtime, refs: list[ActorRef], concurrency: int) -> Finals:
    """Every account's state and clock, reloaded from the store (resolving its heads)."""
    found: Finals = {}
    todo = iter(refs)

    async def worker() -> None:
        for ref in todo:
            state = await rt.state(ref, refresh=True)
            assert isinstance(state, Account)
            found[ref] = (state, await rt.clock(ref))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return found
