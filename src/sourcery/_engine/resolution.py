"""Driving the merge algorithms of ``sourcery._core.merge`` against a store.

Only reads happen here: the runtime commits the plan it gets back, so one module writes an
actor's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sourcery._core.actor import ActorType
from sourcery._core.clock import VectorClock
from sourcery._core.codec import Codec
from sourcery._core.errors import StoreError
from sourcery._core.merge import ROOT, Plan, Walk, collect_events, find_base, plan_merge
from sourcery._core.records import ActorRef, EventRecord, PackRecord, SnapshotRecord
from sourcery._stores import Store

__all__ = ["ResolutionStats", "resolve"]

S = TypeVar("S")
E = TypeVar("E")


async def _drive(walk: Walk, actor: ActorRef, store: Store) -> Any:
    """Answer a walk's requests from the store until it returns."""
    try:
        request = next(walk)
        while True:
            what, clock = request
            answer: SnapshotRecord | PackRecord | None
            if what == "pack":
                answer = await store.pack(actor, clock)
            else:
                answer = await store.snapshot(actor, clock)
            request = walk.send(answer)
    except StopIteration as done:
        return done.value


async def resolve(
    store: Store,
    spec: ActorType[S, Any, E],
    codec: Codec[S, Any, E],
    heads: Sequence[SnapshotRecord],
) -> Plan:
    """Work out the merge of ``heads``: the snapshot, its pack and compensating events.

    Reads only the snapshots and packs newer than the common ancestor. Nothing is written.
    """
    actor = heads[0].actor
    heads = sorted(heads, key=lambda h: h.clock.to_bytes())
    nodes: dict[VectorClock, SnapshotRecord | None] = {}
    base_clock: VectorClock = await _drive(find_base(heads, nodes), actor, store)
    if base_clock == ROOT:
        # A fresh copy: an evolve that changes its input in place must not change the
        # initial state every other actor starts from.
        base_state = codec.fresh_initial()
    else:
        base = nodes.get(base_clock) or await store.snapshot(actor, base_clock)
        if base is None:
            raise StoreError(f"the common ancestor of {actor} vanished")
        base_state = codec.decode_state(base.state)
    per_head: list[list[EventRecord]] = await _drive(
        collect_events(heads, base_clock, nodes), actor, store
    )
    return plan_merge(spec, codec, heads, base_state, base_clock, per_head)


@dataclass(slots=True)
class ResolutionStats:
    """What a runtime has healed since it opened."""

    divergences: int = 0
    """Loads that found an actor with several heads."""
    resolved: int = 0
    """Merged snapshots this runtime wrote (another replica may have written the same)."""
    events_merged: int = 0
    compensations: int = 0

    def record(self, plan: Plan) -> None:
        self.resolved += 1
        self.events_merged += plan.merged_events
        self.compensations += len(plan.compensations)
