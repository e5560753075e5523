"""An actor type for the crash test: every command writes three events that must stay together.

The child process of ``test_crash.py`` imports it by module name, so it lives at the top of
``tests/`` (which is on ``sys.path``) and has no dependency on the test modules.
"""

from __future__ import annotations

import msgspec

from sourcery import ActorType

__all__ = ["Bump", "Part", "Progress", "decide", "evolve", "triples"]


class Progress(msgspec.Struct, frozen=True):
    messages: int = 0
    parts: int = 0
    last: str = ""


class Bump(msgspec.Struct, frozen=True):
    tag: str


class Part(msgspec.Struct, frozen=True):
    tag: str
    i: int


def decide(state: Progress, command: Bump) -> list[Part]:
    return [Part(command.tag, 1), Part(command.tag, 2), Part(command.tag, 3)]


def evolve(state: Progress, event: Part) -> Progress:
    # A part out of place (a half-written message, or one applied twice) cannot be folded.
    if event.i != state.parts % 3 + 1 or (event.i > 1 and event.tag != state.last):
        raise ValueError(f"part {event.i} of {event.tag!r} after {state!r}")
    done = state.messages + (event.i == 3)
    return Progress(messages=done, parts=state.parts + 1, last=event.tag)


triples: ActorType[Progress, Bump, Part] = ActorType(
    name="triple",
    initial=Progress(),
    decide=decide,
    evolve=evolve,
    commands=[Bump],
    events=[Part],
    snapshot_every=7,
)
