"""The demo's audit: what the stores hold once the commands are done, read back through
fresh reads, and the picture of the most diverged account.

Nothing here trusts the counts the workload kept; the results set the two side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

from sourcery._apps.demo.results import Side
from sourcery._apps.demo.workload import Bank, Finals, Tally
from sourcery._apps.history_svg import render
from sourcery._core.clock import VectorClock
from sourcery._core.records import ActorRef, PackRecord
from sourcery._engine.runtime import Runtime
from sourcery._stores import Store
from sourcery.examples.bank import Account

__all__ = ["Census", "actor_history_svg", "census", "reopened", "side"]


async def reopened(url: str, kind: Bank, refs: list[ActorRef]) -> tuple[int, int, int]:
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


@dataclass(frozen=True, slots=True)
class Census:
    """The snapshots one store holds, and its most diverged account."""

    snapshots: int
    merges: int
    """Snapshots with two or more parents."""
    most_diverged: ActorRef | None
    most_diverged_merges: int
    most_diverged_snapshots: int


async def census(store: Store, refs: list[ActorRef], overdrafts: dict[ActorRef, int]) -> Census:
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
    return Census(snapshots, merges, chosen, best[0], best[2])


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


def side(name: str, url: str, rt: Runtime, tally: Tally, final: Finals, counted: Census) -> Side:
    """One replica's part of the result: what it accepted, read and resolved."""
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
        snapshots=counted.snapshots,
        merges=counted.merges,
        divergences=rt.resolutions.divergences,
        resolved=rt.resolutions.resolved,
        events_merged=rt.resolutions.events_merged,
        compensations=rt.resolutions.compensations,
    )
