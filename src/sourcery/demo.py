"""The demo workload: many bank accounts, many concurrent commands, then an audit.

Opens every account, sends random deposits and withdrawals from ``concurrency`` tasks at
once (withdrawals larger than the balance are rejected, as they should be), closes the
runtime, reopens the store with a new writer and checks that the money is all there: the
sum of the balances read back equals what was deposited minus what was withdrawn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from .actor import ActorType
from .config import parse_sqlite_url
from .errors import ConfigurationError
from .examples.bank import (
    Account,
    BankEvent,
    Command,
    Deposit,
    InsufficientFunds,
    Open,
    Withdraw,
    accounts,
)
from .records import ActorRef
from .runtime import Runtime

__all__ = ["DEFAULT_SNAPSHOT_EVERY", "DemoResult", "account_id", "run_demo"]

DEFAULT_SNAPSHOT_EVERY = 10
"""The demo snapshots more often than the default 100, so that a short run shows some."""

Progress = Callable[[int], None]


def account_id(i: int) -> str:
    """The id of the demo's ``i``-th account (0-based): ``acct-00001`` and so on."""
    return f"acct-{i + 1:05d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    """What a demo run did, and what the audit after reopening the store found."""

    url: str
    accounts: int
    commands: int
    accepted: int
    rejected: int
    events: int
    """Events written by the run."""
    events_stored: int
    """Events the reopened store holds (the sum of every account's frontier)."""
    snapshots: int
    """Snapshots the reopened store holds."""
    transactions: int
    batches: int
    seconds: float
    deposited: int
    withdrawn: int
    balances: int
    """The sum of every account's balance, read back after reopening the store."""

    @property
    def money_in(self) -> int:
        return self.deposited - self.withdrawn

    @property
    def conserved(self) -> bool:
        """The balances read back add up to the money that went in."""
        return self.money_in == self.balances

    @property
    def ok(self) -> bool:
        """Money conserved, and every event written was read back exactly once."""
        return self.conserved and self.events == self.events_stored

    @property
    def commands_per_second(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0

    @property
    def average_batch(self) -> float:
        """Commands that shared one transaction, on average."""
        return self.batches / self.transactions if self.transactions else 0.0


@dataclass(slots=True)
class _Tally:
    accepted: int = 0
    rejected: int = 0
    events: int = 0
    deposited: int = 0
    withdrawn: int = 0
    done: int = 0


def _opens(n_accounts: int) -> Iterator[tuple[int, Command]]:
    for i in range(n_accounts):
        yield i, Open(owner=f"owner {i + 1}")


def _moves(n_accounts: int, n: int, rng: random.Random) -> Iterator[tuple[int, Command]]:
    """Random deposits and withdrawals; about a third of the withdrawals are too large."""
    for _ in range(n):
        i = rng.randrange(n_accounts)
        if rng.random() < 0.5:
            yield i, Deposit(rng.randint(1, 100))
        else:
            yield i, Withdraw(rng.randint(1, 150))


async def run_demo(
    url: str,
    *,
    n_accounts: int = 1000,
    n_commands: int = 20_000,
    concurrency: int = 200,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    seed: int | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the workload on the (empty) store at ``url``; see the module docstring.

    ``n_commands`` counts the opening of each account, so it must be at least
    ``n_accounts``. ``progress`` is called with the number of commands done so far.
    """
    if n_accounts < 1:
        raise ConfigurationError(f"the demo needs at least one account, got {n_accounts}")
    if n_commands < n_accounts:
        raise ConfigurationError(
            f"the demo opens every account first, so it needs at least {n_accounts} "
            f"commands, got {n_commands}"
        )
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, got {concurrency}")
    if urlsplit(url).scheme == "sqlite" and parse_sqlite_url(url).memory:
        raise ConfigurationError("the demo reopens its store to audit it; use a file, not memory")
    kind = dataclasses.replace(accounts, snapshot_every=snapshot_every)
    refs = [kind(account_id(i)) for i in range(n_accounts)]
    rng = random.Random(seed)
    tally = _Tally()

    async with Runtime.open(url, [kind]) as rt:
        if await rt.store.actors(limit=1):
            raise ConfigurationError(f"the demo needs an empty store; {url} already holds actors")

        async def worker(work: Iterator[tuple[int, Command]]) -> None:
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
                if progress is not None:
                    progress(tally.done)

        started = time.perf_counter()
        # The opens run first, so that no deposit overtakes its account's opening. The
        # workers share one iterator: each takes the next command when it is free.
        for work in (_opens(n_accounts), _moves(n_accounts, n_commands - n_accounts, rng)):
            await asyncio.gather(*(worker(work) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        stats = rt.store.stats

    balances, events_stored, snapshots = await _audit(url, kind, refs)
    return DemoResult(
        url=url,
        accounts=n_accounts,
        commands=tally.done,
        accepted=tally.accepted,
        rejected=tally.rejected,
        events=tally.events,
        events_stored=events_stored,
        snapshots=snapshots,
        transactions=stats.transactions,
        batches=stats.batches,
        seconds=seconds,
        deposited=tally.deposited,
        withdrawn=tally.withdrawn,
        balances=balances,
    )


async def _audit(
    url: str, kind: ActorType[Account, Command, BankEvent], refs: list[ActorRef]
) -> tuple[int, int, int]:
    """Reopen the store with a fresh writer; sum balances, stored events and snapshots."""
    async with Runtime.open(url, [kind]) as rt:
        balances = 0
        events = 0
        snapshots = 0
        for ref in refs:
            state = await rt.state(ref)
            assert isinstance(state, Account)
            balances += state.balance
            events += (await rt.store.frontier(ref)).total()
            snapshots += len(await rt.store.snapshots(ref))
    return balances, events, snapshots
