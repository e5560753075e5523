"""The database a projection writes: one connection, one transaction type on both SQLs.

Handlers write with ``?`` placeholders everywhere; on PostgreSQL they become ``$1, $2…``.
Drivers are imported only by the backend a URL names, and their errors are translated by
the one map in ``sourcery._io.driver_errors``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from sourcery._core.config import parse_sqlite_url, redact
from sourcery._core.errors import ClosedError, ConfigurationError
from sourcery._io import driver_errors

if TYPE_CHECKING:
    import sqlite3

    import asyncpg

__all__ = ["ProjectionTransaction", "Target", "numbered", "open_target"]

Row = tuple[Any, ...]
T = TypeVar("T")


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$n``, leaving quoted text and names alone."""
    out: list[str] = []
    n = 0
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


class ProjectionTransaction(ABC):
    """A transaction on a projection's database, as handlers get it: the same ``?``
    placeholders and the same calls on SQLite and PostgreSQL. It commits with the
    projection's position, or not at all.

    ``add`` queues a write instead of running it: queued writes run in order, those in a
    row with the same SQL as one ``executemany``, before the next ``execute``, ``fetch``
    or the commit. A handler that writes one row per event goes much faster with it.
    """

    dialect: str
    """``"sqlite"`` or ``"postgresql"``, for the rare statement that must differ."""

    def __init__(self) -> None:
        self._queued: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue one write (see above)."""
        self._queued.append((sql, tuple(params)))

    async def flush(self) -> None:
        """Run the queued writes now."""
        queued, self._queued = self._queued, []
        start = 0
        while start < len(queued):
            sql = queued[start][0]
            end = start
            while end < len(queued) and queued[end][0] == sql:
                end += 1
            await self._executemany(sql, [params for _, params in queued[start:end]])
            start = end

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        await self.flush()
        return await self._execute(sql, tuple(params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters."""
        await self.flush()
        await self._executemany(sql, [tuple(r) for r in rows])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """The rows a query returns, as tuples."""
        await self.flush()
        return await self._fetch(sql, tuple(params))

    @abstractmethod
    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int: ...

    @abstractmethod
    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    @abstractmethod
    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Row]: ...


class Target(ABC):
    """An open projection database."""

    dialect: str
    url: str

    @abstractmethod
    async def _open(self) -> None:
        """Connect."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[ProjectionTransaction]:
        """Begin; commit on a clean exit, roll back on an exception."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the connection. Idempotent."""


async def open_target(url: str) -> Target:
    """Open the database a URL names (``sqlite:///file.db`` or ``postgresql://…``)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        target: Target = _SqliteTarget(url)
    elif scheme in ("postgresql", "postgres"):
        target = _PostgresTarget(url)
    else:
        raise ConfigurationError(f"no projection database for URL scheme {scheme!r}")
    try:
        await target._open()
    except BaseException:
        await target.aclose()
        raise
    return target


# -- SQLite ----------------------------------------------------------------------------


class _SqliteTransaction(ProjectionTransaction):
    dialect = "sqlite"

    def __init__(self, target: _SqliteTarget) -> None:
        super().__init__()
        self._target = target

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        return await self._target._call(lambda con: con.execute(sql, params).rowcount)

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._target._call(lambda con: con.executemany(sql, rows))

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        def run(con: sqlite3.Connection) -> list[Row]:
            return [tuple(r) for r in con.execute(sql, params).fetchall()]

        return await self._target._call(run)


class _SqliteTarget(Target):
    """One connection in a thread of its own; ``BEGIN IMMEDIATE`` takes the write lock at
    the start, so a batch never fails half way for a lock another writer holds."""

    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings = parse_sqlite_url(url)
        if self.settings.memory:
            raise ConfigurationError("a projection needs a database file, not :memory:")
        self._errors = driver_errors.sqlite()
        self._thread: ThreadPoolExecutor | None = None
        self._con: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None or self._con is None:
            raise ClosedError("the projection database is closed")
        con = self._con
        with self._errors.translated(f"projection database {self.url}"):
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, con)

    async def _open(self) -> None:
        import sqlite3

        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sourcery-projection")
        settings = self.settings

        def connect() -> sqlite3.Connection:
            con = sqlite3.connect(
                settings.path,
                timeout=settings.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            con.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute(f"PRAGMA synchronous = {settings.synchronous}")
            return con

        with self._errors.translated(f"cannot open {self.url}"):
            loop = asyncio.get_running_loop()
            self._con = await loop.run_in_executor(self._thread, connect)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[ProjectionTransaction]:
        await self._call(lambda con: con.execute("BEGIN IMMEDIATE"))
        tx = _SqliteTransaction(self)
        try:
            yield tx
            await tx.flush()
        except BaseException:
            if self._con is not None:
                await asyncio.shield(self._call(lambda con: con.execute("ROLLBACK")))
            raise
        await self._call(lambda con: con.execute("COMMIT"))

    def transaction(self) -> AbstractAsyncContextManager[ProjectionTransaction]:
        return self._transaction()

    async def aclose(self) -> None:
        con, self._con = self._con, None
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if con is not None:
            await asyncio.get_running_loop().run_in_executor(thread, con.close)
        thread.shutdown(wait=False)


# -- PostgreSQL ------------------------------------------------------------------------


class _PostgresTransaction(ProjectionTransaction):
    dialect = "postgresql"

    def __init__(self, target: _PostgresTarget, con: asyncpg.Connection) -> None:
        super().__init__()
        self._target = target
        self._con = con

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._target._errors.translated(f"projection database {self._target.url}"):
            status = await self._con.execute(numbered(sql), *params)
        last = str(status).rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._target._errors.translated(f"projection database {self._target.url}"):
            await self._con.executemany(numbered(sql), rows)

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        with self._target._errors.translated(f"projection database {self._target.url}"):
            return [tuple(r) for r in await self._con.fetch(numbered(sql), *params)]


class _PostgresTarget(Target):
    """One connection with the URL's schema as its search path (created if missing)."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        from sourcery._stores.postgres import parse_postgres_url

        self.url = redact(url)
        self.settings = parse_postgres_url(url)
        self._errors = driver_errors.postgres()
        self._con: asyncpg.Connection | None = None

    async def _open(self) -> None:
        import asyncpg

        schema = self.settings.schema
        with self._errors.translated(f"cannot open {self.url}"):
            self._con = await asyncpg.connect(
                self.settings.dsn, server_settings={"search_path": f'"{schema}"'}
            )
            await self._con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[ProjectionTransaction]:
        con = self._con
        if con is None:
            raise ClosedError("the projection database is closed")
        with self._errors.translated(f"projection database {self.url}"):
            async with con.transaction():
                tx = _PostgresTransaction(self, con)
                yield tx
                await tx.flush()

    def transaction(self) -> AbstractAsyncContextManager[ProjectionTransaction]:
        return self._transaction()

    async def aclose(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            try:
                await con.close(timeout=5)
            except Exception:  # a connection already cut: nothing left to release
                con.terminate()
