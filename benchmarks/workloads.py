"""Actor types used only by the benchmarks."""

from __future__ import annotations

import msgspec

from sourcery import ActorType


class Add(msgspec.Struct, frozen=True):
    events: int


class Added(msgspec.Struct, frozen=True):
    amount: int


class Tally(msgspec.Struct, frozen=True):
    total: int = 0


def decide(state: Tally, command: Add) -> list[Added]:
    return [Added(1)] * command.events


def evolve(state: Tally, event: Added) -> Tally:
    return Tally(state.total + event.amount)


def tally(snapshot_every: int = 100) -> ActorType[Tally, Add, Added]:
    """A counter whose one command writes any number of events."""
    return ActorType(
        name="tally",
        initial=Tally(),
        decide=decide,
        evolve=evolve,
        commands=[Add],
        events=[Added],
        snapshot_every=snapshot_every,
    )
