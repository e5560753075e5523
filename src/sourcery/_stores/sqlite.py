"""The embedded store: one SQLite file in WAL mode, written by one thread, read by another.

Writes go through a group committer into a single writer connection, so concurrent commands
share one transaction (and one fsync). Reads use their own connection, which WAL lets run
while a transaction is being written. A whole plan runs inside the connection's thread, so
a read or a group commit costs one hop to the thread, however many statements it runs.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from sourcery._core.config import SqliteSettings, parse_sqlite_url
from sourcery._core.errors import StoreError
from sourcery._core.records import ActorRef, EventRecord, MessageRecord
from sourcery._io import driver_errors
from sourcery._stores.sql.dialect import Mode, Plan, Positions, Query, WriterKey, run
from sourcery._stores.sql.rows import EVENT_COLUMNS, encode_dots
from sourcery._stores.sql.schema import SCHEMA_VERSION, Table, checked_version
from sourcery._stores.sql.store import SqlStore
from sourcery._stores.sql.writes import SELECT_EVENT, migrate

__all__ = ["DIALECT", "SCHEMA_VERSION", "SqliteDialect", "SqliteStore"]

T = TypeVar("T")

_KEYS_PER_QUERY = 300
"""Message keys looked up by one query: 900 parameters, well under SQLite's limit."""

_TYPES = {"text": "TEXT", "int": "INTEGER", "int32": "INTEGER", "bytes": "BLOB"}
_event_row = msgspec.structs.astuple  # the columns are the struct's fields, in order


class SeqPositions:
    """A row's position is its rowid: one writer at a time (BEGIN IMMEDIATE) takes
    ``max + 1`` inside its transaction, so rowid order is commit order and a committed
    row never appears behind one already read."""

    width = 1

    def columns(self, p: str) -> str:
        return f"{p}seq"

    def after(self, p: str) -> str:
        return f"{p}seq > ?"

    def at(self, p: str) -> str:
        return f"{p}seq = ?"

    def order(self, p: str) -> str:
        return f"{p}seq"

    def args(self, position: int) -> tuple[Any, ...]:
        return (position,)

    def position(self, values: Sequence[Any]) -> int:
        return int(values[0])


class SqliteDialect:
    """SQLite's side of the shared SQL: one writer at a time, so no locks of its own."""

    name = "sqlite"
    positions: Positions = SeqPositions()
    random_id = "lower(hex(randomblob(16)))"
    version_query = "PRAGMA user_version"
    renumbered: dict[int, int] = {}

    def create_table(self, table: Table) -> list[str]:
        columns = [f"{name} {_TYPES[kind]} NOT NULL" for name, kind in table.columns]
        key = ", ".join(table.key)
        if table.compact:
            lines = [*columns, f"PRIMARY KEY ({key})"]
            return [f"CREATE TABLE {table.name} ({', '.join(lines)}) WITHOUT ROWID"]
        lines = ["seq INTEGER PRIMARY KEY", *columns, f"UNIQUE ({key})"]
        return [f"CREATE TABLE {table.name} ({', '.join(lines)})"]

    def record_version(self, version: int) -> Query:
        return Query(f"PRAGMA user_version = {int(version)}", (), Mode.EXECUTE)

    def lock_actor(self, actor: ActorRef) -> Query | None:
        return None

    def write_rows(
        self,
        events: Sequence[EventRecord],
        messages: Sequence[MessageRecord],
        writers: list[WriterKey],
    ) -> Plan[Sequence[EventRecord]]:
        suspects: Sequence[EventRecord] = ()
        if events:
            inserted = yield Query(
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT DO NOTHING",
                [_event_row(e) for e in events],
                Mode.MANY,
            )
            if inserted != len(events):
                suspects = events  # which ones, executemany does not say
        if writers:
            yield Query(
                "INSERT INTO actor_writers (actor_id, actor_type, writer) VALUES (?,?,?)"
                " ON CONFLICT DO NOTHING",
                writers,
                Mode.MANY,
            )
        if messages:
            yield Query(
                "INSERT INTO messages (actor_id, actor_type, message_id, dots) VALUES (?,?,?,?)"
                " ON CONFLICT DO NOTHING",
                [(m.actor.id, m.actor.type, m.message_id, encode_dots(m.dots)) for m in messages],
                Mode.MANY,
            )
        return suspects

    def events_by_dots(self, actor: ActorRef, dots: Sequence[tuple[str, int]]) -> Plan[list[Any]]:
        # In the connection's thread a query per dot costs no round trip.
        rows = []
        for writer, n in dots:
            row = yield Query(SELECT_EVENT, (actor.id, actor.type, writer, n), Mode.ROW)
            if row is not None:
                rows.append(row)
        return rows

    def find_messages(self, keys: Sequence[tuple[str, str, str]]) -> Plan[list[Any]]:
        rows: list[Any] = []
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start : start + _KEYS_PER_QUERY]
            values = ",".join(["(?,?,?)"] * len(chunk))
            rows += yield Query(
                f"WITH k(actor_id, actor_type, message_id) AS (VALUES {values})"
                " SELECT m.actor_id, m.actor_type, m.message_id, m.dots FROM k JOIN messages m"
                " ON m.actor_id = k.actor_id AND m.actor_type = k.actor_type"
                " AND m.message_id = k.message_id",
                [part for key in chunk for part in key],
            )
        return rows


DIALECT = SqliteDialect()


def _execute(con: sqlite3.Connection, query: Query) -> Any:
    mode = query.mode
    if mode is Mode.MANY:
        return con.executemany(query.sql, query.args).rowcount
    cursor = con.execute(query.sql, query.args)
    if mode is Mode.ROWS:
        return cursor.fetchall()
    if mode is Mode.ROW:
        return cursor.fetchone()
    return cursor.rowcount if mode is Mode.COUNT else None


def _read_version(path: str) -> int:
    """The file's schema version, opened read-only: looking must not create or change it."""
    with driver_errors.sqlite().translated(f"cannot read {path}"):
        con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            recorded: int = con.execute(DIALECT.version_query).fetchone()[0]
        finally:
            con.close()
    return checked_version(DIALECT, recorded, path)


class SqliteStore(SqlStore):
    """A :class:`~sourcery._stores.base.Store` on one SQLite database."""

    dialect = DIALECT

    def __init__(self, settings: SqliteSettings) -> None:
        super().__init__()
        self.settings = settings
        self._errors = driver_errors.sqlite()
        self._write_exec = ThreadPoolExecutor(1, thread_name_prefix="sourcery-sqlite-w")
        self._read_exec = (
            self._write_exec
            if settings.memory
            else ThreadPoolExecutor(1, thread_name_prefix="sourcery-sqlite-r")
        )
        self._wcon: sqlite3.Connection | None = None
        self._rcon: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, url: str) -> SqliteStore:
        store = cls(parse_sqlite_url(url))
        try:
            await store._call(store._write_exec, store._open_writer)
            if store._read_exec is not store._write_exec:
                await store._call(store._read_exec, store._open_reader)
        except BaseException:
            await store.aclose()
            raise
        return store

    @classmethod
    async def stored_version(cls, url: str) -> int | None:
        settings = parse_sqlite_url(url)
        if settings.memory or not os.path.exists(settings.path):
            return None
        return await asyncio.to_thread(_read_version, settings.path)

    # -- threads and connections ---------------------------------------------------------

    async def _call(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        with self._errors.translated(_cannot_open(self.settings.path)):
            con = sqlite3.connect(
                self.settings.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.settings.busy_timeout_ms / 1000,
            )
            con.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout_ms)}")
            if not self.settings.memory:
                try:
                    self._refuse_foreign(con)
                except BaseException:
                    con.close()
                    raise
                con.execute("PRAGMA journal_mode = WAL")
            con.execute(f"PRAGMA synchronous = {self.settings.synchronous}")
        return con

    def _refuse_foreign(self, con: sqlite3.Connection) -> None:
        """Refuse a newer schema before switching to WAL, which writes to the file; and a
        file that holds tables of something else."""
        version = con.execute(DIALECT.version_query).fetchone()[0]
        checked_version(DIALECT, version, self.settings.path)
        if version == 0 and con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(
                f"{self.settings.path} holds tables but is not a sourcery store;"
                " refusing to add ours to it"
            )

    def _open_writer(self) -> None:
        self._wcon = self._connect()
        self._transaction(migrate(DIALECT, self.settings.path), "migration")
        if self.settings.memory:
            self._rcon = self._wcon

    def _open_reader(self) -> None:
        self._rcon = self._connect()

    def _transaction(self, plan: Plan[T], what: str) -> T:
        con = self._wcon
        assert con is not None
        with self._errors.translated(f"sqlite {what} failed"):
            con.execute("BEGIN IMMEDIATE")
            try:
                result = run(plan, functools.partial(_execute, con))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return result

    def _plain(self, plan: Plan[T], con: sqlite3.Connection | None, what: str) -> T:
        assert con is not None
        with self._errors.translated(f"sqlite {what} failed"):
            return run(plan, functools.partial(_execute, con))

    # -- SqlStore ------------------------------------------------------------------------

    async def _run(self, plan: Plan[T], *, consistent: bool = False, write: bool = False) -> T:
        # Reads see what has committed: one reading connection outside any transaction,
        # and positions that only grow, so no snapshot is needed to read a feed.
        if write:
            return await self._call(
                self._write_exec, lambda: self._plain(plan, self._wcon, "write")
            )
        return await self._call(self._read_exec, lambda: self._plain(plan, self._rcon, "read"))

    async def _transact(self, make: Callable[[], Plan[T]]) -> T:
        return await self._call(self._write_exec, lambda: self._transaction(make(), "commit"))

    async def _release(self) -> None:
        loop = asyncio.get_running_loop()
        for executor, attr in ((self._read_exec, "_rcon"), (self._write_exec, "_wcon")):
            con: sqlite3.Connection | None = getattr(self, attr)
            if con is not None:
                setattr(self, attr, None)
                await loop.run_in_executor(executor, con.close)
        self._read_exec.shutdown(wait=True)
        self._write_exec.shutdown(wait=True)


def _cannot_open(path: str) -> str:
    """What a SQLite file that does not open is called in the error: its path, and the
    likely reason when its folder is missing (sqlite3 says only "unable to open")."""
    folder = os.path.dirname(os.path.abspath(path))
    if path != ":memory:" and not os.path.isdir(folder):
        return f"cannot open the SQLite file {path} (the folder {folder} does not exist)"
    return f"cannot open the SQLite file {path}"
