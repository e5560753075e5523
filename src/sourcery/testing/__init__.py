"""Given-when-then tests for your own actor types, with no store and no event loop.

    Scenario(accounts).given(Deposited(100)).when(Withdraw(30)).then(Withdrew(30))
    Scenario(accounts).when(Withdraw(1)).then_rejects(InsufficientFunds)

Besides comparing events, each check runs what the runtime would: the command must be a
declared type, the events must be declared and survive an encode/decode round trip, and
the resulting state must encode too, so a payload the store would refuse fails here first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from sourcery._core.actor import ActorType
from sourcery._core.codec import DEFAULT_MAX_PAYLOAD, Codec
from sourcery._core.errors import Rejected

__all__ = ["Scenario"]

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E")
R = TypeVar("R", bound=Rejected)

_NO_COMMAND: Any = object()


@dataclass(frozen=True)
class Scenario(Generic[S, C, E]):
    """An actor type, the events it has seen, and the command under test."""

    actor_type: ActorType[S, C, E]
    past: tuple[E, ...] = ()
    command: C = field(default=_NO_COMMAND)
    max_payload: int = DEFAULT_MAX_PAYLOAD

    def given(self, *events: E) -> Scenario[S, C, E]:
        return replace(self, past=self.past + events)

    def when(self, command: C) -> Scenario[S, C, E]:
        return replace(self, command=command)

    @property
    def _codec(self) -> Codec[S, C, E]:
        return Codec(self.actor_type, self.max_payload)

    def state(self) -> S:
        """The state after the given events."""
        codec = self._codec
        state = codec.fresh_initial()
        for event in self.past:
            self._round_trip(codec, event)
            state = self.actor_type.evolve(state, event)
        return state

    def _round_trip(self, codec: Codec[S, C, E], event: E) -> None:
        named = codec.event_type(event)
        if named is None:
            raise AssertionError(
                f"{type(event).__name__} is not an event type of {self.actor_type.name!r}"
            )
        name, version = named
        back = codec.decode_payload(name, version, codec.encode_payload(event))
        if back != event:
            raise AssertionError(f"{event!r} does not survive encoding: it decodes as {back!r}")

    def _decide(self) -> tuple[S, list[E]]:
        if self.command is _NO_COMMAND:
            raise AssertionError("call .when(command) before checking the outcome")
        if type(self.command) not in self.actor_type.commands:
            raise AssertionError(
                f"{type(self.command).__name__} is not a command of {self.actor_type.name!r}"
            )
        state = self.state()
        return state, list(self.actor_type.decide(state, self.command))

    def then(self, *expected: E) -> S:
        """Assert the command yields exactly ``expected``; return the state after them."""
        state, events = self._decide()
        if events != list(expected):
            raise AssertionError(f"expected events {list(expected)!r}\n     got events {events!r}")
        codec = self._codec
        for event in events:
            self._round_trip(codec, event)
            state = self.actor_type.evolve(state, event)
        codec.decode_state(codec.encode_state(state))
        return state

    def then_rejects(self, error: type[R], match: str | None = None) -> R:
        """Assert decide refuses the command with ``error``; return the rejection."""
        try:
            _, events = self._decide()
        except Rejected as exc:
            if not isinstance(exc, error):
                raise AssertionError(
                    f"expected {error.__name__}, got {type(exc).__name__}: {exc}"
                ) from exc
            if match is not None and not re.search(match, str(exc)):
                raise AssertionError(f"{exc!s} does not match {match!r}") from exc
            return exc
        raise AssertionError(f"expected {error.__name__}, got events {events!r}")
