"""The demo workloads: many bank accounts, many concurrent commands, then an audit.

:func:`run_replicated_demo` is the showcase: two replicas (two stores, a runtime on each)
that are partitioned while both keep accepting deposits and withdrawals, then healed. Their
accounts diverge, the next reads resolve every divergence deterministically (recording an
``Overdrawn`` event where the two sides' withdrawals together overdrew an account), and
the audit checks that no money appeared or vanished and that both replicas agree on every
account's state and vector clock.

:func:`run_demo` is the single-store workload: it opens every account, sends random
deposits and withdrawals from ``concurrency`` tasks at once (withdrawals larger than the
balance are rejected, as they should be), closes the runtime, reopens the store with a new
writer and checks that the sum of the balances read back equals what was deposited minus
what was withdrawn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from sourcery._apps.history_svg import render
from sourcery._core.actor import ActorType
from sourcery._core.clock import VectorClock
from sourcery._core.config import parse_sqlite_url
from sourcery._core.errors import ConfigurationError
from sourcery._core.records import ActorRef, PackRecord
from sourcery._engine.replication import SyncReport, sync
from sourcery._engine.runtime import Runtime
from sourcery._stores import Store
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
    "DemoResult",
    "ReplicatedDemoResult",
    "Side",
    "account_id",
    "actor_history_svg",
    "run_demo",
    "run_replicated_demo",
]

DEFAULT_SNAPSHOT_EVERY = 5
"""The demo snapshots far more often than the default 100, so that a short run shows
snapshots, and so that the two sides of a partition build divergent branches of them."""

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
    _check_options(url, n_accounts, n_commands, concurrency)
    kind = dataclasses.replace(accounts, snapshot_every=snapshot_every)
    refs = [kind(account_id(i)) for i in range(n_accounts)]
    rng = random.Random(seed)
    tally = _Tally()

    async with Runtime.open(url, [kind]) as rt:
        if await rt.store.actors(limit=1):
            raise ConfigurationError(f"the demo needs an empty store; {url} already holds actors")

        def tick() -> None:
            if progress is not None:
                progress(tally.done)

        started = time.perf_counter()
        # The opens run first, so that no deposit overtakes its account's opening. The
        # workers share one iterator: each takes the next command when it is free.
        for work in (_opens(n_accounts), _moves(n_accounts, n_commands - n_accounts, rng)):
            await _send_all(rt, refs, work, tally, concurrency, tick)
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


# -- two replicas, a partition, and the heal -----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Side:
    """One replica of the replicated demo: what it accepted, and what it held at the end."""

    name: str
    url: str
    commands: int
    accepted: int
    rejected: int
    deposited: int
    withdrawn: int
    balances: int
    """The sum of every account's balance as this replica reads it at the end."""
    overdrafts: int
    """``Overdrawn`` events in the final states: compensations recorded by merges."""
    snapshots: int
    merges: int
    """Snapshots with two or more parents: divergences healed, by any replica."""
    divergences: int
    """Reads of this replica's runtime that found several heads (``resolutions``)."""
    resolved: int
    events_merged: int
    compensations: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicatedDemoResult:
    """What a replicated demo run did, and what its audit found."""

    accounts: int
    commands: int
    a: Side
    b: Side
    opening_commands: int
    """Commands of phase 1, all on A (opens and opening deposits)."""
    opening: SyncReport
    """Phase 1: the opened accounts copied from A to B."""
    heal: SyncReport
    """Phase 3: the first exchange after the partition."""
    settle: SyncReport
    """Phase 3: the exchange after both replicas resolved what they read."""
    siblings: int
    """Accounts with several heads (divergent snapshots) right after the heal exchange."""
    disagreements: tuple[str, ...]
    """Accounts whose state or clock differ between the replicas at the end."""
    most_diverged: ActorRef | None
    most_diverged_snapshots: int
    most_diverged_merges: int
    history_svg: str
    """A picture of the most diverged account's history (see ``history_svg``)."""
    seconds: float
    phase_seconds: tuple[float, float, float]

    @property
    def sides(self) -> tuple[Side, Side]:
        return (self.a, self.b)

    @property
    def accepted(self) -> int:
        return self.a.accepted + self.b.accepted

    @property
    def rejected(self) -> int:
        return self.a.rejected + self.b.rejected

    @property
    def deposited(self) -> int:
        return self.a.deposited + self.b.deposited

    @property
    def withdrawn(self) -> int:
        return self.a.withdrawn + self.b.withdrawn

    @property
    def money_in(self) -> int:
        """What both replicas acknowledged: deposited minus withdrawn, on either side."""
        return self.deposited - self.withdrawn

    @property
    def conserved(self) -> bool:
        """Each replica's balances add up to the money acknowledged on both sides."""
        return all(side.balances == self.money_in for side in self.sides)

    @property
    def agree(self) -> bool:
        return not self.disagreements

    @property
    def divergences(self) -> int:
        return self.a.divergences + self.b.divergences

    @property
    def ok(self) -> bool:
        return self.conserved and self.agree


def _check_options(
    url: str, n_accounts: int, n_commands: int, concurrency: int, *, reopens: bool = True
) -> None:
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


async def _send_all(
    rt: Runtime,
    refs: list[ActorRef],
    work: Iterator[tuple[int, Command]],
    tally: _Tally,
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


async def _read_all(
    rt: Runtime, refs: list[ActorRef], concurrency: int
) -> dict[ActorRef, tuple[Account, VectorClock]]:
    """Every account's state and clock, reloaded from the store (resolving its heads)."""
    found: dict[ActorRef, tuple[Account, VectorClock]] = {}
    todo = iter(refs)

    async def worker() -> None:
        for ref in todo:
            state = await rt.state(ref, refresh=True)
            assert isinstance(state, Account)
            found[ref] = (state, await rt.clock(ref))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return found


async def _census(
    store: Store, refs: list[ActorRef], overdrafts: dict[ActorRef, int]
) -> tuple[int, int, ActorRef | None, int, int]:
    """Snapshots and merges in the store, and the most diverged account: the one with the
    most merges, then the most compensations (``overdrafts``), then the most snapshots."""
    snapshots = merges = 0
    best: tuple[int, int, int] = (-1, -1, -1)
    chosen: ActorRef | None = None
    for ref in refs:
        history = await store.snapshots(ref)
        joined = sum(1 for s in history if len(s.parents) >= 2)
        snapshots += len(history)
        merges += joined
        key = (joined, overdrafts.get(ref, 0), len(history))
        if key > best:
            best = key
            chosen = ref
    return snapshots, merges, chosen, best[0], best[2]


async def actor_history_svg(store: Store, actor: ActorRef) -> str:
    """The SVG picture of ``actor``'s history as ``store`` holds it."""
    snapshots = await store.snapshots(actor)
    packs: dict[VectorClock, PackRecord | None] = {
        s.clock: await store.pack(actor, s.clock) for s in snapshots
    }
    heads = await store.heads(actor)
    covered = VectorClock.merge_all(h.clock for h in heads)
    loose = await store.loose_events(actor, covered)
    return render(str(actor), snapshots, packs, [h.clock for h in heads], loose_events=len(loose))


async def run_replicated_demo(
    url_a: str,
    url_b: str,
    *,
    n_accounts: int = 1000,
    n_commands: int = 20_000,
    concurrency: int = 200,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    seed: int | None = None,
    progress: Progress | None = None,
) -> ReplicatedDemoResult:
    """Partition two replicas under load, heal them, and audit both; see the module docstring.

    Phase 1 opens every account on replica A and gives it an opening deposit (while the
    command budget allows one per account and leaves three quarters for phase 2), then
    syncs A to B. Phase 2 splits the remaining commands between A and B, run concurrently,
    ``concurrency`` at a time on each, with no sync. Phase 3 syncs, reads every account on
    both replicas (resolving divergent heads), syncs again and reads again.
    ``progress`` is called with the number of commands done so far (phases 1 and 2).
    """
    for url in (url_a, url_b):
        _check_options(url, n_accounts, n_commands, concurrency, reopens=False)
    kind = dataclasses.replace(accounts, snapshot_every=snapshot_every)
    refs = [kind(account_id(i)) for i in range(n_accounts)]
    rng = random.Random(seed)
    openings = min(n_accounts, (n_commands - n_accounts) // 4)
    rest = n_commands - n_accounts - openings
    work_a = _moves(n_accounts, rest - rest // 2, random.Random(rng.getrandbits(64)))
    work_b = _moves(n_accounts, rest // 2, random.Random(rng.getrandbits(64)))
    deposits = [(i, Deposit(rng.randint(50, 150))) for i in range(openings)]
    tally_a, tally_b = _Tally(), _Tally()

    def tick() -> None:
        if progress is not None:
            progress(tally_a.done + tally_b.done)

    started = time.perf_counter()
    async with Runtime.open(url_a, [kind]) as rt_a, Runtime.open(url_b, [kind]) as rt_b:
        for rt, url in ((rt_a, url_a), (rt_b, url_b)):
            if await rt.store.actors(limit=1):
                raise ConfigurationError(f"the demo needs empty stores; {url} already holds actors")
        store_a, store_b = rt_a.store, rt_b.store

        async def exchange() -> SyncReport:
            return await sync(store_a, store_b, touched_a=rt_a.forget, touched_b=rt_b.forget)

        # Phase 1: one replica, then a copy. The opens go first, so that no deposit
        # overtakes its account's opening.
        await _send_all(rt_a, refs, _opens(n_accounts), tally_a, concurrency, tick)
        await _send_all(rt_a, refs, iter(deposits), tally_a, concurrency, tick)
        opening_commands = tally_a.done
        opening = await exchange()
        phase1 = time.perf_counter()

        # Phase 2: the partition. Both sides accept what their own state allows.
        await asyncio.gather(
            _send_all(rt_a, refs, work_a, tally_a, concurrency, tick),
            _send_all(rt_b, refs, work_b, tally_b, concurrency, tick),
        )
        phase2 = time.perf_counter()

        # Phase 3: heal. The reads resolve divergent heads, on each replica independently;
        # both write the same merge records, so the second exchange changes nothing.
        heal = await exchange()
        siblings = 0
        for ref in refs:
            if len(await store_a.heads(ref)) > 1:
                siblings += 1
        await asyncio.gather(_read_all(rt_a, refs, concurrency), _read_all(rt_b, refs, concurrency))
        settle = await exchange()
        final_a, final_b = await asyncio.gather(
            _read_all(rt_a, refs, concurrency), _read_all(rt_b, refs, concurrency)
        )
        finished = time.perf_counter()

        disagreements = tuple(str(ref) for ref in refs if final_a[ref] != final_b[ref])
        overdrafts = {ref: state.overdrafts for ref, (state, _) in final_a.items()}
        census_a, census_b = await asyncio.gather(
            _census(store_a, refs, overdrafts), _census(store_b, refs, overdrafts)
        )
        chosen = census_a[2]
        svg = await actor_history_svg(store_a, chosen) if chosen is not None else ""

        def side(
            name: str,
            url: str,
            rt: Runtime,
            tally: _Tally,
            final: dict[ActorRef, tuple[Account, VectorClock]],
            census: tuple[int, int, ActorRef | None, int, int],
        ) -> Side:
            return Side(
                name=name,
                url=url,
                commands=tally.done,
                accepted=tally.accepted,
                rejected=tally.rejected,
                deposited=tally.deposited,
                withdrawn=tally.withdrawn,
                balances=sum(state.balance for state, _ in final.values()),
                overdrafts=sum(state.overdrafts for state, _ in final.values()),
                snapshots=census[0],
                merges=census[1],
                divergences=rt.resolutions.divergences,
                resolved=rt.resolutions.resolved,
                events_merged=rt.resolutions.events_merged,
                compensations=rt.resolutions.compensations,
            )

        a = side("A", url_a, rt_a, tally_a, final_a, census_a)
        b = side("B", url_b, rt_b, tally_b, final_b, census_b)

    return ReplicatedDemoResult(
        accounts=n_accounts,
        commands=tally_a.done + tally_b.done,
        a=a,
        b=b,
        opening_commands=opening_commands,
        opening=opening,
        heal=heal,
        settle=settle,
        siblings=siblings,
        disagreements=disagreements,
        most_diverged=chosen,
        most_diverged_snapshots=census_a[4],
        most_diverged_merges=census_a[3],
        history_svg=svg,
        seconds=finished - started,
        phase_seconds=(phase1 - started, phase2 - phase1, finished - phase2),
    )
