"""The seam between the shared SQL algorithms and one database.

An algorithm is a :data:`Plan`: a generator that yields :class:`Query` objects and is sent
each one's result, so it never touches a connection (as h11 never touches a socket). A
:class:`Dialect` holds only what differs between databases: how a table is created, where
a row stands in the ordered feed, how one actor's writes are serialized, and the few
statements each database does best its own way. Statements are written with ``?``
placeholders; a dialect that numbers them (``$1``) rewrites them once per text.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sourcery._core.records import ActorRef, EventRecord, MessageRecord

if TYPE_CHECKING:
    from sourcery._stores.sql.schema import Table

__all__ = ["Dialect", "Mode", "Plan", "Positions", "Query", "WriterKey", "run"]

T = TypeVar("T")

WriterKey = tuple[str, str, str]
"""A row of the writers-per-actor index: actor id, actor type, writer."""


class Mode(enum.Enum):
    """What a statement's result is, as the plan receives it."""

    ROWS = enum.auto()
    """Every row, each a sequence of column values."""
    ROW = enum.auto()
    """The first row, or None."""
    COUNT = enum.auto()
    """How many rows the statement changed."""
    EXECUTE = enum.auto()
    """Nothing (DDL, locks)."""
    MANY = enum.auto()
    """The statement run once per argument tuple; how many rows changed, where the driver
    says (SQLite), else None."""


@dataclass(frozen=True, slots=True)
class Query:
    sql: str
    args: Sequence[Any] = ()
    mode: Mode = Mode.ROWS


Plan = Generator[Query, Any, T]
"""An algorithm: it yields statements and is sent each one's result (see :class:`Mode`)."""


def run(plan: Plan[T], execute: Any) -> T:
    """Drive ``plan`` with a synchronous ``execute(query) -> result`` (SQLite's thread)."""
    try:
        query = next(plan)
        while True:
            query = plan.send(execute(query))
    except StopIteration as done:
        result: T = done.value
        return result


class Positions(Protocol):
    """Where a row stands in the order a store wrote its rows, as one integer.

    Each method takes the table alias prefix (``""`` or ``"s."``)."""

    width: int
    """How many columns :meth:`columns` selects."""

    def columns(self, p: str) -> str: ...

    def after(self, p: str) -> str:
        """A condition: rows after the position bound by :meth:`args`, and only rows that
        nothing committing later can precede."""

    def at(self, p: str) -> str:
        """A condition: the row at the position bound by :meth:`args`."""

    def order(self, p: str) -> str: ...

    def args(self, position: int) -> tuple[Any, ...]: ...

    def position(self, values: Sequence[Any]) -> int:
        """The position of the :meth:`columns` values of one row."""


class Dialect(Protocol):
    """What one database does its own way; everything else is in the shared plans."""

    name: str
    positions: Positions
    random_id: str
    """An SQL expression for a random hex string (the store's identity)."""
    version_query: str
    """Selects the schema version the database records (one row, one column)."""
    renumbered: dict[int, int]
    """Schema versions an older release recorded under another number."""

    def create_table(self, table: Table) -> list[str]: ...

    def record_version(self, version: int) -> Query: ...

    def lock_actor(self, actor: ActorRef) -> Query | None:
        """A lock held to the end of the transaction while the actor's heads change, where
        writers can run concurrently (None where one writer runs at a time)."""

    def write_rows(
        self,
        events: Sequence[EventRecord],
        messages: Sequence[MessageRecord],
        writers: list[WriterKey],
    ) -> Plan[Sequence[EventRecord]]:
        """Insert the events, message records and new writers-per-actor rows, skipping
        those already stored; return the events that may not have been inserted (their
        dot was taken), for the caller to compare with what is stored."""

    def events_by_dots(self, actor: ActorRef, dots: Sequence[tuple[str, int]]) -> Plan[list[Any]]:
        """The EVENT_COLUMNS rows of the actor's events with these dots."""

    def find_messages(self, keys: Sequence[tuple[str, str, str]]) -> Plan[list[Any]]:
        """Rows of (actor id, actor type, message id, dots) for the keys that exist."""
