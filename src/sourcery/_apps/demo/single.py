"""The single-store demo: every account opened, then random deposits and withdrawals from
many tasks at once; then the store reopened with a new writer and audited."""

from __future__ import annotations

import random
import time

from sourcery._apps.demo.audit import reopened
from sourcery._apps.demo.results import DemoResult
from sourcery._apps.demo.workload import (
    DEFAULT_SNAPSHOT_EVERY,
    Progress,
    Tally,
    bank,
    check_options,
    moves,
    opens,
    require_empty,
    send_all,
)
from sourcery._engine.runtime import Runtime

__all__ = ["run_demo"]


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
    """Run the workload on the (empty) store at ``url``; see the package docstring.

    ``n_commands`` counts the opening of each account, so it must be at least
    ``n_accounts``. ``progress`` is called with the number of commands done so far.
    """
    check_options(url, n_accounts, n_commands, concurrency)
    kind, refs = bank(n_accounts, snapshot_every)
    rng = random.Random(seed)
    tally = Tally()

    def tick() -> None:
        if progress is not None:
            progress(tally.done)

    async with Runtime.open(url, [kind]) as rt:
        await require_empty((rt, url))
        started = time.perf_counter()
        # The opens run first, so that no deposit overtakes its account's opening.
        for work in (opens(n_accounts), moves(n_accounts, n_commands - n_accounts, rng)):
            await send_all(rt, refs, work, tally, concurrency, tick)
        seconds = time.perf_counter() - started
        stats = rt.store.stats

    balances, events_stored, snapshots = await reopened(url, kind, refs)
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
