"""An actor type whose state is the exact record of every event applied to it.

Each event carries a token the test made up and never reuses, so the state tells whether
every acknowledged event was applied exactly once. Merges (resolutions) are recorded too,
by a merge hook, as ``Merged`` events that hold no token.

The child processes of ``test_partition_processes.py`` import it by module name, so it lives
at the top of ``tests/`` (which is on ``sys.path``) and depends on no test module.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence

import msgspec

from sourcery import ActorType, Branch

__all__ = [
    "Append",
    "Appended",
    "Log",
    "Merged",
    "decide",
    "duplicates",
    "evolve",
    "log_kind",
    "logs",
]


class Log(msgspec.Struct, frozen=True):
    tokens: tuple[str, ...] = ()
    """Every token applied, in replay order."""
    merges: int = 0
    """How many merge hooks recorded a ``Merged`` event in this history."""


class Append(msgspec.Struct, frozen=True):
    tokens: tuple[str, ...]


class Appended(msgspec.Struct, frozen=True):
    token: str


class Merged(msgspec.Struct, frozen=True):
    heads: int


LogEvent = Appended | Merged


def decide(state: Log, command: Append) -> list[LogEvent]:
    return [Appended(token) for token in command.tokens]


def evolve(state: Log, event: LogEvent) -> Log:
    match event:
        case Appended(token):
            return Log(tokens=(*state.tokens, token), merges=state.merges)
        case Merged():
            return Log(tokens=state.tokens, merges=state.merges + 1)
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


def on_merge(state: Log, branches: Sequence[Branch[Log, LogEvent]]) -> list[LogEvent]:
    """Record every merge, so that compensating events take part in every test."""
    return [Merged(len(branches))]


logs: ActorType[Log, Append, LogEvent] = ActorType(
    name="log",
    initial=Log(),
    decide=decide,
    evolve=evolve,
    commands=[Append],
    events=[Appended, Merged],
    snapshot_every=3,
    on_merge=on_merge,
)


def log_kind(snapshot_every: int, *, merge_hook: bool = True) -> ActorType[Log, Append, LogEvent]:
    """``logs`` with another snapshot threshold, with or without the merge hook."""
    return dataclasses.replace(
        logs, snapshot_every=snapshot_every, on_merge=on_merge if merge_hook else None
    )


def duplicates(tokens: Iterable[str]) -> list[str]:
    """The tokens that occur more than once."""
    return sorted(t for t, c in Counter(tokens).items() if c > 1)
