"""The service store: PostgreSQL through an asyncpg pool.

Every key starts with the actor id, so the tables can be distributed by actor (as Citus
does) without a redesign. Concurrent commands share one transaction (group commit), and
their events, message records and writers-per-actor rows go in with one statement
(``INSERT … SELECT FROM unnest(…)``). Every value is a bound parameter.

Positions in the ordered feed are ``(transaction id, sequence)`` and a reader only takes
rows of transactions older than every transaction still running (``pg_snapshot_xmin``), so
a transaction that commits late can never be skipped — and no writer waits for another.
Every write is idempotent, so a transaction cut by a lost connection is simply retried.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from sourcery._core.config import redact, unique_params
from sourcery._core.errors import ClosedError, ConfigurationError, StoreUnavailable
from sourcery._core.records import ActorRef, EventRecord, MessageRecord
from sourcery._io import driver_errors
from sourcery._stores.sql.dialect import Mode, Plan, Positions, Query, WriterKey
from sourcery._stores.sql.rows import EVENT_COLUMNS, encode_dots
from sourcery._stores.sql.schema import SCHEMA_VERSION, Table, checked_version
from sourcery._stores.sql.store import SqlStore
from sourcery._stores.sql.writes import migrate

if TYPE_CHECKING:
    Connection = asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]

__all__ = [
    "DIALECT",
    "SCHEMA_VERSION",
    "PostgresDialect",
    "PostgresSettings",
    "PostgresStore",
    "parse_postgres_url",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TYPES = {"text": "text", "int": "bigint", "int32": "integer", "bytes": "bytea"}
_LOW = 2**64 - 1
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    dsn: str
    """The URL asyncpg connects with (without Sourcery's own parameters)."""
    schema: str = "public"
    pool_size: int = 10
    retries: int = 5
    """How often a write cut by a lost connection is retried before failing."""


def parse_postgres_url(url: str) -> PostgresSettings:
    """``postgresql://user@host:port/db?schema=name&pool_size=10&retries=5``."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a postgresql URL: {redact(url)!r}")
    schema, pool_size, retries = "public", 10, 5
    passed: list[tuple[str, str]] = []
    for key, value in unique_params(url, parts.query):
        if key == "schema":
            if not _IDENTIFIER.match(value):
                raise ConfigurationError(f"schema must be a lowercase identifier, got {value!r}")
            schema = value
        elif key in ("pool_size", "retries"):
            try:
                number = int(value)
            except ValueError:
                raise ConfigurationError(f"{key} must be an int, got {value!r}") from None
            if number < (1 if key == "pool_size" else 0):
                raise ConfigurationError(f"{key} is out of range: {number}")
            if key == "pool_size":
                pool_size = number
            else:
                retries = number
        elif key in ("sslmode", "application_name", "connect_timeout"):
            passed.append((key, value))
        else:
            raise ConfigurationError(f"unknown postgresql URL parameter {key!r}")
    dsn = urlunsplit(parts._replace(query=urlencode(passed)))
    return PostgresSettings(dsn=dsn, schema=schema, pool_size=pool_size, retries=retries)


class TxPositions:
    """A row's position is (transaction id, sequence), as one integer ``tx << 64 | seq``.
    Only rows of transactions older than every one still running are read, so a
    transaction that commits late is read after, never skipped."""

    width = 2

    def columns(self, p: str) -> str:
        return f"{p}tx::text, {p}seq"

    def after(self, p: str) -> str:
        return f"({p}tx, {p}seq) > (?::text::xid8, ?) AND {p}tx < {_HORIZON}"

    def at(self, p: str) -> str:
        return f"{p}tx = ?::text::xid8 AND {p}seq = ?"

    def order(self, p: str) -> str:
        return f"{p}tx, {p}seq"

    def args(self, position: int) -> tuple[Any, ...]:
        return (str(position >> 64), position & _LOW)

    def position(self, values: Sequence[Any]) -> int:
        return (int(values[0]) << 64) | int(values[1])


def _arrays(*kinds: str) -> str:
    return ", ".join(f"?::{kind}[]" for kind in kinds)


_EVENT_ARRAYS = _arrays(
    "text", "text", "text", "bigint", "bytea", "bigint", "text", "text", "integer", "bytea"
)
_INSERT_MESSAGES = (
    "INSERT INTO messages (actor_id, actor_type, message_id, dots)"
    f" SELECT * FROM unnest({_arrays('text', 'text', 'text', 'bytea')}) ON CONFLICT DO NOTHING"
)
_WRITE_EVENTS = (
    # One round trip for what a group commit writes besides snapshots: the writers-per-actor
    # rows, the message records, and the events, whose inserted dots come back (a dot
    # already taken is checked afterwards, in the same transaction).
    "WITH writers AS (INSERT INTO actor_writers (actor_id, actor_type, writer)"
    f" SELECT * FROM unnest({_arrays('text', 'text', 'text')}) ON CONFLICT DO NOTHING),"
    f" messages AS ({_INSERT_MESSAGES})"
    f" INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM unnest({_EVENT_ARRAYS})"
    " ON CONFLICT DO NOTHING RETURNING actor_id, actor_type, writer, n"
)


class PostgresDialect:
    """PostgreSQL's side of the shared SQL: concurrent writers, so heads change under a
    per-actor lock; arrays bound as parameters, so a group is one statement."""

    name = "postgresql"
    positions: Positions = TxPositions()
    random_id = "md5(random()::text || clock_timestamp()::text)"
    version_query = "SELECT max(version) FROM sourcery_schema"
    renumbered = {1: 2}

    def create_table(self, table: Table) -> list[str]:
        lines = [f"{name} {_TYPES[kind]} NOT NULL" for name, kind in table.columns]
        if table.feed:
            lines += ["tx xid8 NOT NULL DEFAULT pg_current_xact_id()", "seq bigserial NOT NULL"]
        lines.append(f"PRIMARY KEY ({', '.join(table.key)})")
        found = [f"CREATE TABLE {table.name} ({', '.join(lines)})"]
        if table.feed:
            found.append(f"CREATE INDEX {table.name}_position ON {table.name} (tx, seq)")
        return found

    def record_version(self, version: int) -> Query:
        return Query("INSERT INTO sourcery_schema (version) VALUES (?)", (version,), Mode.COUNT)

    def lock_actor(self, actor: ActorRef) -> Query | None:
        return Query(
            "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
            (f"{actor.type}/{actor.id}",),
            Mode.EXECUTE,
        )

    def write_rows(
        self,
        events: Sequence[EventRecord],
        messages: Sequence[MessageRecord],
        writers: list[WriterKey],
    ) -> Plan[Sequence[EventRecord]]:
        message_columns = (
            [m.actor.id for m in messages],
            [m.actor.type for m in messages],
            [m.message_id for m in messages],
            [encode_dots(m.dots) for m in messages],
        )
        if not events:
            yield Query(_INSERT_MESSAGES, message_columns, Mode.EXECUTE)
            return ()
        columns = list(zip(*(msgspec.structs.astuple(e) for e in events), strict=True))
        writer_columns = ([w[0] for w in writers], [w[1] for w in writers], [w[2] for w in writers])
        inserted = yield Query(_WRITE_EVENTS, (*writer_columns, *message_columns, *columns))
        if len(inserted) == len(events):
            return ()
        # Some dots were taken already, or twice in this group.
        fresh = {tuple(row) for row in inserted}
        keys = Counter((e.actor_id, e.actor_type, e.writer, e.n) for e in events)
        return [
            e
            for e in events
            if (key := (e.actor_id, e.actor_type, e.writer, e.n)) not in fresh or keys[key] > 1
        ]

    def events_by_dots(self, actor: ActorRef, dots: Sequence[tuple[str, int]]) -> Plan[list[Any]]:
        rows: list[Any] = yield Query(
            f"SELECT {EVENT_COLUMNS} FROM events"
            " JOIN unnest(?::text[], ?::bigint[]) AS d(dw, dn) ON writer = d.dw AND n = d.dn"
            " WHERE actor_id = ? AND actor_type = ?",
            ([w for w, _ in dots], [n for _, n in dots], actor.id, actor.type),
        )
        return rows

    def find_messages(self, keys: Sequence[tuple[str, str, str]]) -> Plan[list[Any]]:
        if len(keys) == 1:
            row = yield Query(
                "SELECT actor_id, actor_type, message_id, dots FROM messages"
                " WHERE actor_id = ? AND actor_type = ? AND message_id = ?",
                keys[0],
                Mode.ROW,
            )
            return [] if row is None else [row]
        rows: list[Any] = yield Query(
            "SELECT m.actor_id, m.actor_type, m.message_id, m.dots FROM messages m"
            " JOIN unnest(?::text[], ?::text[], ?::text[]) AS k(actor_id, actor_type,"
            " message_id) ON m.actor_id = k.actor_id AND m.actor_type = k.actor_type"
            " AND m.message_id = k.message_id",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        )
        return rows


DIALECT = PostgresDialect()


@functools.lru_cache(maxsize=1024)
def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2…`` (no statement holds a literal ``?``)."""
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def _drive(con: Connection, plan: Plan[T]) -> T:
    """Run a plan's statements on one connection, one round trip each."""
    result: Any = None
    try:
        while True:
            query = plan.send(result)
            sql, mode = _numbered(query.sql), query.mode
            if mode is Mode.ROWS:
                result = await con.fetch(sql, *query.args)
            elif mode is Mode.ROW:
                result = await con.fetchrow(sql, *query.args)
            elif mode is Mode.MANY:
                await con.executemany(sql, query.args)
                result = None
            else:
                status = await con.execute(sql, *query.args)
                result = int(status.rsplit(" ", 1)[-1]) if mode is Mode.COUNT else None
    except StopIteration as done:
        value: T = done.value
        return value


async def _nothing_to_reset(con: Connection) -> None:
    """What a connection needs on its way back to the pool besides the rollback of an open
    transaction (which asyncpg always does): nothing. The store sets no session state,
    listens to nothing and takes transaction-scoped locks only, so the default reset query
    would only cost a round trip per use."""


class PostgresStore(SqlStore):
    """A :class:`~sourcery._stores.base.Store` on one PostgreSQL schema."""

    dialect = DIALECT

    def __init__(self, settings: PostgresSettings, url: str) -> None:
        super().__init__()
        self.settings = settings
        self.url = redact(url)
        self._errors = driver_errors.postgres()
        self._pool: asyncpg.Pool | None = None

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        store = cls(parse_postgres_url(url), url)
        try:
            await store._connect()
        except BaseException:
            await store.aclose()
            raise
        return store

    @classmethod
    async def stored_version(cls, url: str) -> int | None:
        settings = parse_postgres_url(url)
        errors = driver_errors.postgres()
        with errors.translated(f"cannot connect to {redact(url)}"):
            con = await asyncpg.connect(settings.dsn)
            try:
                table = f'"{settings.schema}".sourcery_schema'
                if await con.fetchval("SELECT to_regclass($1)", table) is None:
                    return None
                recorded = await con.fetchval(f"SELECT max(version) FROM {table}")
            finally:
                await con.close()
        return checked_version(DIALECT, recorded or 0, f"{redact(url)} schema {settings.schema}")

    async def _connect(self) -> None:
        with self._errors.translated(f"cannot connect to {self.url}"):
            first = await asyncpg.connect(self.settings.dsn)
        with self._errors.translated(f"cannot open {self.url}"):
            try:
                await self._migrate(first)
            finally:
                await first.close()
            self._pool = await asyncpg.create_pool(
                self.settings.dsn,
                min_size=1,
                max_size=self.settings.pool_size,
                # A startup parameter, so no reset on release could undo it.
                server_settings={"search_path": f'"{self.settings.schema}"'},
                reset=_nothing_to_reset,
            )

    async def _migrate(self, con: Connection) -> None:
        schema = self.settings.schema
        async with con.transaction():
            # One migrator at a time, across processes.
            await con.execute("SELECT pg_advisory_xact_lock(hashtext('sourcery-migrate'))")
            await con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await con.execute(f'SET LOCAL search_path TO "{schema}"')
            await con.execute(
                "CREATE TABLE IF NOT EXISTS sourcery_schema (version integer NOT NULL)"
            )
            await _drive(con, migrate(DIALECT, f"{self.url} schema {schema}"))

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        if self._closed or self._pool is None:
            raise ClosedError("the store is closed")
        with self._errors.translated(f"postgresql at {self.url}"):
            async with self._pool.acquire() as con:
                yield con

    # -- SqlStore ------------------------------------------------------------------------

    async def _run(self, plan: Plan[T], *, consistent: bool = False, write: bool = False) -> T:
        async with self._connection() as con:
            if not consistent:
                return await _drive(con, plan)
            async with con.transaction(isolation="repeatable_read"):
                return await _drive(con, plan)

    async def _transact(self, make: Callable[[], Plan[T]]) -> T:
        attempt = 0
        while True:
            try:
                async with self._connection() as con, con.transaction():
                    return await _drive(con, make())
            except StoreUnavailable as exc:
                # Every record is keyed and written idempotently: running the whole
                # transaction again is safe whether or not the lost one committed.
                attempt += 1
                if attempt > self.settings.retries or self._closed:
                    raise
                log.warning("retrying a commit after a lost connection (%s)", exc)
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))

    async def _release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
