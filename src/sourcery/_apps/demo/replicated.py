"""The replicated demo, phase by phase: accounts opened on replica A and copied to B; a
partition in which both replicas accept commands without syncing; the heal, in which
reads resolve the divergent accounts on each replica independently; then the audit of
both replicas."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sourcery._apps.demo.audit import actor_history_svg, census, side
from sourcery._apps.demo.results import PhaseDone, ReplicatedDemoResult
from sourcery._apps.demo.workload import (
    DEFAULT_SNAPSHOT_EVERY,
    Finals,
    Progress,
    Tally,
    bank,
    check_options,
    moves,
    opens,
    read_all,
    require_empty,
    send_all,
)
from sourcery._core.records import ActorRef
from sourcery._engine.replication import SyncReport, sync
from sourcery._engine.runtime import Runtime
from sourcery.examples.bank import Command, Deposit

__all__ = ["run_replicated_demo"]


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
    on_phase: Callable[[PhaseDone], None] | None = None,
) -> ReplicatedDemoResult:
    """Partition two replicas under load, heal them, and audit both; see the package docstring.

    Phase 1 opens every account on replica A and gives it an opening deposit (while the
    command budget allows one per account and leaves three quarters for phase 2), then
    syncs A to B. Phase 2 splits the remaining commands between A and B, run concurrently,
    ``concurrency`` at a time on each, with no sync. Phase 3 syncs, reads every account on
    both replicas (resolving divergent heads), syncs again and reads again.
    ``progress`` is called with the number of commands done so far (phases 1 and 2), and
    ``on_phase`` as each phase ends, with its figures.
    """

    def done(number: int, seconds: float, **figures: int) -> None:
        if on_phase is not None:
            on_phase(PhaseDone(number, seconds, figures))

    for url in (url_a, url_b):
        check_options(url, n_accounts, n_commands, concurrency, reopens=False)
    kind, refs = bank(n_accounts, snapshot_every)
    plan = _plan(n_accounts, n_commands, seed)
    started = time.perf_counter()
    async with Runtime.open(url_a, [kind]) as rt_a, Runtime.open(url_b, [kind]) as rt_b:
        await require_empty((rt_a, url_a), (rt_b, url_b))
        run = _Replicas(rt_a, rt_b, refs, concurrency, progress)
        opening = await _open_accounts(run, plan)
        opening_commands = run.tally_a.done
        phase1 = time.perf_counter()
        done(
            1,
            phase1 - started,
            accounts=n_accounts,
            commands=opening_commands,
            copied=opening.a_to_b,
        )
        await _partition(run, plan)
        phase2 = time.perf_counter()
        done(
            2,
            phase2 - phase1,
            commands_a=run.tally_a.done - opening_commands,
            commands_b=run.tally_b.done,
        )
        healed = await _heal(run)
        finished = time.perf_counter()
        done(
            3,
            finished - phase2,
            a_to_b=healed.heal.a_to_b,
            b_to_a=healed.heal.b_to_a,
            siblings=healed.siblings,
            settled=healed.settle.records,
        )
        phases = (phase1 - started, phase2 - phase1, finished - phase2)
        return await _audit(run, (url_a, url_b), opening, opening_commands, healed, phases)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The commands of each phase, drawn from one seed."""

    deposits: list[tuple[int, Command]]
    """Phase 1 on A, after the opens: one opening deposit for each of the first accounts."""
    work_a: Iterator[tuple[int, Command]]
    work_b: Iterator[tuple[int, Command]]
    """Phase 2: what A and B each accept during the partition."""


def _plan(n_accounts: int, n_commands: int, seed: int | None) -> _Plan:
    rng = random.Random(seed)
    openings = min(n_accounts, (n_commands - n_accounts) // 4)
    rest = n_commands - n_accounts - openings
    work_a = moves(n_accounts, rest - rest // 2, random.Random(rng.getrandbits(64)))
    work_b = moves(n_accounts, rest // 2, random.Random(rng.getrandbits(64)))
    deposits: list[tuple[int, Command]] = [
        (i, Deposit(rng.randint(50, 150))) for i in range(openings)
    ]
    return _Plan(deposits, work_a, work_b)


@dataclass(slots=True)
class _Replicas:
    """The two replicas' runtimes, and what every phase needs of them."""

    a: Runtime
    b: Runtime
    refs: list[ActorRef]
    concurrency: int
    progress: Progress | None
    tally_a: Tally = field(default_factory=Tally)
    tally_b: Tally = field(default_factory=Tally)

    def tick(self) -> None:
        if self.progress is not None:
            self.progress(self.tally_a.done + self.tally_b.done)

    async def send(self, rt: Runtime, work: Iterator[tuple[int, Command]], tally: Tally) -> None:
        await send_all(rt, self.refs, work, tally, self.concurrency, self.tick)

    async def exchange(self) -> SyncReport:
        """Sync the stores; each runtime forgets the accounts the other side touched."""
        return await sync(
            self.a.store, self.b.store, touched_a=self.a.forget, touched_b=self.b.forget
        )

    async def read_both(self) -> tuple[Finals, Finals]:
        return await asyncio.gather(
            read_all(self.a, self.refs, self.concurrency),
            read_all(self.b, self.refs, self.concurrency),
        )


async def _open_accounts(run: _Replicas, plan: _Plan) -> SyncReport:
    """Phase 1: one replica, then a copy. The opens go first, so that no deposit
    overtakes its account's opening."""
    await run.send(run.a, opens(len(run.refs)), run.tally_a)
    await run.send(run.a, iter(plan.deposits), run.tally_a)
    return await run.exchange()


async def _partition(run: _Replicas, plan: _Plan) -> None:
    """Phase 2: both sides accept what their own state allows, with no sync between."""
    await asyncio.gather(
        run.send(run.a, plan.work_a, run.tally_a), run.send(run.b, plan.work_b, run.tally_b)
    )


@dataclass(frozen=True, slots=True)
class _Healed:
    heal: SyncReport
    siblings: int
    """Accounts with several heads right after the first exchange."""
    settle: SyncReport
    final_a: Finals
    final_b: Finals


async def _heal(run: _Replicas) -> _Healed:
    """Phase 3: exchange, then read everything on both sides. The reads resolve divergent
    heads on each replica independently; both write the same merge records, so the
    second exchange changes nothing that the final reads could see differently."""
    heal = await run.exchange()
    siblings = 0
    for ref in run.refs:
        if len(await run.a.store.heads(ref)) > 1:
            siblings += 1
    await run.read_both()
    settle = await run.exchange()
    final_a, final_b = await run.read_both()
    return _Healed(heal, siblings, settle, final_a, final_b)


async def _audit(
    run: _Replicas,
    urls: tuple[str, str],
    opening: SyncReport,
    opening_commands: int,
    healed: _Healed,
    phases: tuple[float, float, float],
) -> ReplicatedDemoResult:
    """Audit both replicas: each side's counts, where they disagree, and the most diverged
    account (chosen on A) with its picture."""
    final_a, final_b = healed.final_a, healed.final_b
    overdrafts = {ref: state.overdrafts for ref, (state, _) in final_a.items()}
    census_a, census_b = await asyncio.gather(
        census(run.a.store, run.refs, overdrafts), census(run.b.store, run.refs, overdrafts)
    )
    chosen = census_a.most_diverged
    return ReplicatedDemoResult(
        accounts=len(run.refs),
        commands=run.tally_a.done + run.tally_b.done,
        a=side("A", urls[0], run.a, run.tally_a, final_a, census_a),
        b=side("B", urls[1], run.b, run.tally_b, final_b, census_b),
        opening_commands=opening_commands,
        opening=opening,
        heal=healed.heal,
        settle=healed.settle,
        siblings=healed.siblings,
        disagreements=tuple(str(ref) for ref in run.refs if final_a[ref] != final_b[ref]),
        most_diverged=chosen,
        most_diverged_snapshots=census_a.most_diverged_snapshots,
        most_diverged_merges=census_a.most_diverged_merges,
        history_svg=await actor_history_svg(run.a.store, chosen) if chosen is not None else "",
        seconds=sum(phases),
        phase_seconds=phases,
    )
