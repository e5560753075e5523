"""An actor type for the worker process tests: its state is every command it applied, in order.

Worker processes load it as ``worker_app:logs`` (``tests/`` is on their ``PYTHONPATH``), so
it has no dependency on the test modules. A command applied twice, lost or reordered shows
in the state.
"""

from __future__ import annotations

import msgspec

from sourcery import ActorType

__all__ = ["Append", "Appended", "Log", "logs"]


class Append(msgspec.Struct, frozen=True):
    client: str
    seq: int


class Appended(msgspec.Struct, frozen=True):
    client: str
    seq: int


class Log(msgspec.Struct, frozen=True):
    entries: tuple[tuple[str, int], ...] = ()


def decide(state: Log, command: Append) -> list[Appended]:
    return [Appended(command.client, command.seq)]


def evolve(state: Log, event: Appended) -> Log:
    return Log((*state.entries, (event.client, event.seq)))


logs: ActorType[Log, Append, Appended] = ActorType(
    name="log",
    initial=Log(),
    decide=decide,
    evolve=evolve,
    commands=[Append],
    events=[Appended],
    snapshot_every=5,
)
