"""The service store: PostgreSQL through an asyncpg pool.

Every key starts with the actor id, so the tables can be distributed by actor (as Citus
does) without a redesign. Concurrent commands share one transaction (group commit), and
their rows go in with one ``INSERT … SELECT FROM unnest(…)`` per table. Every value is a
bound parameter.

Positions for replication are ``(transaction id, sequence)`` and a reader only takes rows
of transactions older than every transaction still running (``pg_snapshot_xmin``), so a
transaction that commits late can never be skipped — and no writer waits for another.
Every write is idempotent, so a transaction cut by a lost connection is simply retried.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from sourcery._core.clock import VectorClock
from sourcery._core.config import redact, unique_params
from sourcery._core.errors import (
    ClosedError,
    ConfigurationError,
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
)
from sourcery._core.records import (
    BEGINNING,
    ActorRef,
    Checkpoint,
    Chunk,
    CommitBatch,
    Cursor,
    EventRecord,
    MessageRecord,
    PackRecord,
    SnapshotRecord,
    decode_events,
    encode_events,
)
from sourcery._engine.groupcommit import GroupCommitter, LookupBatcher
from sourcery._stores.base import StoreStats
from sourcery._stores.rows import (
    EVENT_COLUMNS,
    MessageKey,
    decode_dots,
    encode_dots,
    encode_parents,
    event_from_row,
    message_check,
    replaced_heads,
    snapshot_check,
    snapshot_from_row,
)

if TYPE_CHECKING:
    Connection = asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]

__all__ = ["SCHEMA_VERSION", "PostgresSettings", "PostgresStore", "parse_postgres_url"]

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        actor_id text NOT NULL,
        actor_type text NOT NULL,
        writer text NOT NULL,
        n bigint NOT NULL,
        id bytea NOT NULL,
        timestamp bigint NOT NULL,
        initiated_by text NOT NULL,
        type text NOT NULL,
        version integer NOT NULL,
        payload bytea NOT NULL,
        tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
        seq bigserial NOT NULL,
        PRIMARY KEY (actor_id, actor_type, writer, n)
    );
    CREATE INDEX events_position ON events (tx, seq);
    CREATE TABLE snapshots (
        actor_id text NOT NULL,
        actor_type text NOT NULL,
        clock bytea NOT NULL,
        total bigint NOT NULL,
        parents bytea NOT NULL,
        state bytea NOT NULL,
        timestamp bigint NOT NULL,
        tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
        seq bigserial NOT NULL,
        PRIMARY KEY (actor_id, actor_type, clock)
    );
    CREATE INDEX snapshots_position ON snapshots (tx, seq);
    CREATE TABLE packs (
        actor_id text NOT NULL,
        actor_type text NOT NULL,
        clock bytea NOT NULL,
        events bytea NOT NULL,
        PRIMARY KEY (actor_id, actor_type, clock)
    );
    CREATE TABLE heads (
        actor_id text NOT NULL,
        actor_type text NOT NULL,
        clock bytea NOT NULL,
        PRIMARY KEY (actor_id, actor_type, clock)
    );
    CREATE TABLE actor_writers (
        actor_id text NOT NULL,
        actor_type text NOT NULL,
        writer text NOT NULL,
        PRIMARY KEY (actor_id, actor_type, writer)
    );
    CREATE TABLE messages (
        actor_id text NOT NULL,
        actor_type text NOT NULL,
        message_id text NOT NULL,
        dots bytea NOT NULL,
        tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
        seq bigserial NOT NULL,
        PRIMARY KEY (actor_id, actor_type, message_id)
    );
    CREATE INDEX messages_position ON messages (tx, seq);
    CREATE TABLE writers (
        writer text PRIMARY KEY,
        started bigint NOT NULL
    );
    CREATE TABLE meta (
        key text PRIMARY KEY,
        value text NOT NULL
    );
    INSERT INTO meta (key, value)
        VALUES ('store_id', md5(random()::text || clock_timestamp()::text));
    CREATE TABLE checkpoints (
        source text PRIMARY KEY,
        events_seq bytea NOT NULL,
        events_check bytea NOT NULL,
        snapshots_seq bytea NOT NULL,
        snapshots_check bytea NOT NULL,
        messages_seq bytea NOT NULL,
        messages_check bytea NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOST = (
    OSError,
    asyncpg.exceptions.InternalClientError,  # e.g. resetting a connection that was cut
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


_EVENT_COLUMNS = (
    "actor_type, actor_id, writer, n, id, timestamp, initiated_by, type, version, payload"
)
_EVENT_ARRAYS = ", ".join(
    f"${i}::{kind}[]"
    for i, kind in enumerate(
        ("text", "text", "text", "bigint", "bytea", "bigint", "text", "text", "integer", "bytea"),
        start=1,
    )
)
_INSERT_MESSAGES = (
    "INSERT INTO messages (actor_id, actor_type, message_id, dots)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])"
    " ON CONFLICT DO NOTHING"
)
_WRITE_EVENTS = (
    # One round trip for what a group commit writes besides snapshots: the index of
    # writers per actor ($11-$13), the message records ($14-$17), and the events, whose
    # inserted dots come back (a dot already taken is checked afterwards, in the same
    # transaction).
    "WITH writers AS (INSERT INTO actor_writers (actor_id, actor_type, writer)"
    " SELECT * FROM unnest($11::text[], $12::text[], $13::text[]) ON CONFLICT DO NOTHING),"
    " messages AS (INSERT INTO messages (actor_id, actor_type, message_id, dots)"
    " SELECT * FROM unnest($14::text[], $15::text[], $16::text[], $17::bytea[])"
    " ON CONFLICT DO NOTHING)"
    f" INSERT INTO events ({_EVENT_COLUMNS}) SELECT * FROM unnest({_EVENT_ARRAYS})"
    " ON CONFLICT DO NOTHING RETURNING actor_id, actor_type, writer, n"
)


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


def _event(row: Any) -> EventRecord:
    return event_from_row(
        [bytes(v) if isinstance(v, memoryview) else v for v in (row[c] for c in _COLUMN_NAMES)]
    )


_COLUMN_NAMES = tuple(c.strip() for c in EVENT_COLUMNS.split(","))


async def _nothing_to_reset(con: Connection) -> None:
    """What a connection needs on its way back to the pool besides the rollback of an open
    transaction (which asyncpg always does): nothing. The store sets no session state,
    listens to nothing and takes transaction-scoped locks only, so the default reset query
    would only cost a round trip per use."""


def _position(tx: int, seq: int) -> int:
    return (tx << 64) | seq


class PostgresStore:
    """A :class:`~sourcery._stores.base.Store` on one PostgreSQL schema."""

    def __init__(self, settings: PostgresSettings, url: str) -> None:
        self.settings = settings
        self.url = redact(url)
        self.stats = StoreStats()
        self._pool: asyncpg.Pool | None = None
        self._committer = GroupCommitter(self._flush)
        self._messages: LookupBatcher[MessageKey, bytes] = LookupBatcher(self._find_messages)
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        store = cls(parse_postgres_url(url), url)
        try:
            await store._connect()
        except BaseException:
            await store.aclose()
            raise
        return store

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _connect(self) -> None:
        try:
            first = await asyncpg.connect(self.settings.dsn)
        except _LOST as exc:
            raise StoreUnavailable(f"cannot connect to {self.url}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"cannot connect to {self.url}: {exc}") from exc
        try:
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
        except _LOST as exc:
            raise StoreUnavailable(f"cannot connect to {self.url}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"cannot open {self.url}: {exc}") from exc

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
            version = await con.fetchval("SELECT max(version) FROM sourcery_schema") or 0
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.url} schema {schema} has version {version}; "
                    f"this code knows up to {SCHEMA_VERSION}"
                )
            for number in range(version, SCHEMA_VERSION):
                await con.execute(MIGRATIONS[number])
                await con.execute("INSERT INTO sourcery_schema (version) VALUES ($1)", number + 1)

    async def schema_version(self) -> int:
        async with self._connection() as con:
            return int(await con.fetchval("SELECT max(version) FROM sourcery_schema") or 0)

    async def aclose(self) -> None:
        if self._closed:
            return
        await self._committer.aclose()
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        if self._closed or self._pool is None:
            raise ClosedError("the store is closed")
        try:
            async with self._pool.acquire() as con:
                yield con
        except _LOST as exc:
            raise StoreUnavailable(f"lost the connection to {self.url}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"postgresql failed: {exc}") from exc

    # -- writing -------------------------------------------------------------------------

    async def register_writer(self, writer: str) -> None:
        async with self._connection() as con:
            try:
                await con.execute(
                    "INSERT INTO writers (writer, started) VALUES ($1, $2)",
                    writer,
                    int(time.time() * 1000),
                )
            except asyncpg.UniqueViolationError as exc:
                raise StoreError(f"writer id {writer!r} was already used on this store") from exc

    def commit(self, batch: CommitBatch) -> asyncio.Future[None]:
        return self._committer.commit(batch)

    async def _flush(self, batches: Sequence[CommitBatch]) -> None:
        attempt = 0
        while True:
            try:
                async with self._connection() as con, con.transaction():
                    await self._write(con, batches)
                break
            except StoreUnavailable as exc:
                # Every record is keyed and written idempotently: running the whole
                # transaction again is safe whether or not the lost one committed.
                attempt += 1
                if attempt > self.settings.retries or self._closed:
                    raise
                log.warning("retrying a commit after a lost connection (%s)", exc)
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        self.stats.transactions += 1
        self.stats.batches += len(batches)

    async def _write(self, con: Connection, batches: Sequence[CommitBatch]) -> None:
        events = [e for b in batches for e in b.events]
        messages = [m for b in batches for m in b.messages]
        message_columns = (
            [m.actor.id for m in messages],
            [m.actor.type for m in messages],
            [m.message_id for m in messages],
            [encode_dots(m.dots) for m in messages],
        )
        if events:
            await self._write_events(con, events, message_columns)
        elif messages:
            await con.execute(_INSERT_MESSAGES, *message_columns)
        # Snapshots take per-actor locks: always in one order, so two processes never wait
        # for each other's locks.
        snapshots = sorted(
            (item for b in batches for item in b.snapshots),
            key=lambda item: (item[0].actor.type, item[0].actor.id, item[0].clock.total()),
        )
        for snapshot, pack in snapshots:
            await self._write_snapshot(con, snapshot, pack)
        for b in batches:
            if b.checkpoint is not None:
                cp = b.checkpoint
                await con.execute(
                    "INSERT INTO checkpoints VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (source) DO UPDATE SET events_seq = excluded.events_seq,"
                    " events_check = excluded.events_check,"
                    " snapshots_seq = excluded.snapshots_seq,"
                    " snapshots_check = excluded.snapshots_check,"
                    " messages_seq = excluded.messages_seq,"
                    " messages_check = excluded.messages_check",
                    cp.source,
                    cp.events.seq.to_bytes(16, "big"),
                    cp.events.check,
                    cp.snapshots.seq.to_bytes(16, "big"),
                    cp.snapshots.check,
                    cp.messages.seq.to_bytes(16, "big"),
                    cp.messages.check,
                )

    async def _write_events(
        self,
        con: Connection,
        events: list[EventRecord],
        message_columns: tuple[list[str], list[str], list[str], list[bytes]],
    ) -> None:
        """The events, the writers-per-actor index and the message records: one statement."""
        columns = list(zip(*(msgspec.structs.astuple(e) for e in events), strict=True))
        pairs = sorted({(e.actor_id, e.actor_type, e.writer) for e in events})
        writer_columns = ([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs])
        inserted = await con.fetch(_WRITE_EVENTS, *columns, *writer_columns, *message_columns)
        if len(inserted) != len(events):
            # Some dots were taken already (or twice in this group): fine only where the
            # stored event is this very event.
            fresh = {(r["actor_id"], r["actor_type"], r["writer"], r["n"]) for r in inserted}
            keys = Counter((e.actor_id, e.actor_type, e.writer, e.n) for e in events)
            for e in events:
                key = (e.actor_id, e.actor_type, e.writer, e.n)
                if key in fresh and keys[key] == 1:
                    continue
                row = await con.fetchrow(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE actor_id = $1"
                    " AND actor_type = $2 AND writer = $3 AND n = $4",
                    *key,
                )
                if row is not None and _event(row) != e:
                    raise StoreError(
                        f"conflict: dot ({e.writer!r}, {e.n}) of {e.actor} is already another event"
                    )

    async def _write_snapshot(
        self, con: Connection, snapshot: SnapshotRecord, pack: PackRecord
    ) -> None:
        actor = snapshot.actor
        key = snapshot.clock.to_bytes()
        # Heads of one actor change under a lock, so concurrent writers cannot both decide
        # that their snapshot is the only head.
        await con.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{actor.type}/{actor.id}"
        )
        status = await con.execute(
            "INSERT INTO snapshots (actor_id, actor_type, clock, total, parents, state, timestamp)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            actor.id,
            actor.type,
            key,
            snapshot.clock.total(),
            encode_parents(snapshot.parents),
            snapshot.state,
            snapshot.timestamp,
        )
        if status.endswith(" 0"):
            return
        await con.execute(
            "INSERT INTO packs (actor_id, actor_type, clock, events) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING",
            actor.id,
            actor.type,
            key,
            encode_events(list(pack.events)),
        )
        heads = await con.fetch(
            "SELECT clock FROM heads WHERE actor_id = $1 AND actor_type = $2",
            actor.id,
            actor.type,
        )
        replaced = replaced_heads([bytes(r["clock"]) for r in heads], snapshot.clock)
        if replaced is None:
            return
        if replaced:
            await con.execute(
                "DELETE FROM heads WHERE actor_id = $1 AND actor_type = $2"
                " AND clock = ANY($3::bytea[])",
                actor.id,
                actor.type,
                replaced,
            )
        await con.execute(
            "INSERT INTO heads (actor_id, actor_type, clock) VALUES ($1, $2, $3)",
            actor.id,
            actor.type,
            key,
        )

    # -- reading -------------------------------------------------------------------------

    async def heads(self, actor: ActorRef) -> list[SnapshotRecord]:
        async with self._connection() as con:
            rows = await con.fetch(
                "SELECT s.clock, s.parents, s.state, s.timestamp FROM heads h JOIN snapshots s"
                " ON s.actor_id = h.actor_id AND s.actor_type = h.actor_type AND s.clock = h.clock"
                " WHERE h.actor_id = $1 AND h.actor_type = $2",
                actor.id,
                actor.type,
            )
        self.stats.snapshots_read += len(rows)
        return [snapshot_from_row(actor, bytes(r[0]), bytes(r[1]), bytes(r[2]), r[3]) for r in rows]

    async def frontier(self, actor: ActorRef) -> VectorClock:
        async with self._connection() as con:
            return await self._frontier(con, actor)

    async def _frontier(self, con: Connection, actor: ActorRef) -> VectorClock:
        rows = await con.fetch(
            "SELECT w.writer, (SELECT max(e.n) FROM events e WHERE e.actor_id = w.actor_id"
            " AND e.actor_type = w.actor_type AND e.writer = w.writer)"
            " FROM actor_writers w WHERE w.actor_id = $1 AND w.actor_type = $2",
            actor.id,
            actor.type,
        )
        return VectorClock((r[0], r[1]) for r in rows)

    async def loose_events(self, actor: ActorRef, clock: VectorClock) -> list[EventRecord]:
        found: list[EventRecord] = []
        async with self._connection() as con:
            for writer, top in (await self._frontier(con, actor)).items():
                seen = clock.get(writer)
                if top > seen:
                    rows = await con.fetch(
                        f"SELECT {_EVENT_COLUMNS} FROM events WHERE actor_id = $1"
                        " AND actor_type = $2 AND writer = $3 AND n > $4 ORDER BY n",
                        actor.id,
                        actor.type,
                        writer,
                        seen,
                    )
                    found.extend(_event(r) for r in rows)
        self.stats.events_read += len(found)
        return found

    async def events(self, actor: ActorRef, dots: Sequence[tuple[str, int]]) -> list[EventRecord]:
        if not dots:
            return []
        async with self._connection() as con:
            rows = await con.fetch(
                "SELECT e.* FROM events e"
                " JOIN unnest($3::text[], $4::bigint[]) AS d(dw, dn)"
                " ON e.writer = d.dw AND e.n = d.dn"
                " WHERE e.actor_id = $1 AND e.actor_type = $2",
                actor.id,
                actor.type,
                [w for w, _ in dots],
                [n for _, n in dots],
            )
        found = {(r["writer"], r["n"]): _event(r) for r in rows}
        ordered = [found[d] for d in dots if d in found]
        self.stats.events_read += len(ordered)
        return ordered

    async def snapshot(self, actor: ActorRef, clock: VectorClock) -> SnapshotRecord | None:
        async with self._connection() as con:
            row = await con.fetchrow(
                "SELECT clock, parents, state, timestamp FROM snapshots"
                " WHERE actor_id = $1 AND actor_type = $2 AND clock = $3",
                actor.id,
                actor.type,
                clock.to_bytes(),
            )
        if row is None:
            return None
        self.stats.snapshots_read += 1
        return snapshot_from_row(actor, bytes(row[0]), bytes(row[1]), bytes(row[2]), row[3])

    async def pack(self, actor: ActorRef, clock: VectorClock) -> PackRecord | None:
        async with self._connection() as con:
            data = await con.fetchval(
                "SELECT events FROM packs WHERE actor_id = $1 AND actor_type = $2 AND clock = $3",
                actor.id,
                actor.type,
                clock.to_bytes(),
            )
        if data is None:
            return None
        self.stats.packs_read += 1
        return PackRecord(actor=actor, clock=clock, events=tuple(decode_events(bytes(data))))

    async def snapshots(self, actor: ActorRef) -> list[SnapshotRecord]:
        async with self._connection() as con:
            rows = await con.fetch(
                "SELECT clock, parents, state, timestamp FROM snapshots"
                " WHERE actor_id = $1 AND actor_type = $2 ORDER BY total, tx, seq",
                actor.id,
                actor.type,
            )
        return [snapshot_from_row(actor, bytes(r[0]), bytes(r[1]), bytes(r[2]), r[3]) for r in rows]

    async def message(self, actor: ActorRef, message_id: str) -> MessageRecord | None:
        if self._closed:
            raise ClosedError("the store is closed")
        data = await self._messages.get((actor.id, actor.type, message_id))
        if data is None:
            return None
        dots = decode_dots(data, f"message record {message_id!r} of {actor}")
        return MessageRecord(actor=actor, message_id=message_id, dots=dots)

    async def _find_messages(self, keys: Sequence[MessageKey]) -> dict[MessageKey, bytes]:
        """The dots of the message records under these keys: one query for them all."""
        self.stats.message_queries += 1
        async with self._connection() as con:
            if len(keys) == 1:
                actor_id, actor_type, message_id = keys[0]
                data = await con.fetchval(
                    "SELECT dots FROM messages WHERE actor_id = $1 AND actor_type = $2"
                    " AND message_id = $3",
                    actor_id,
                    actor_type,
                    message_id,
                )
                return {} if data is None else {keys[0]: bytes(data)}
            rows = await con.fetch(
                "SELECT m.actor_id, m.actor_type, m.message_id, m.dots FROM messages m"
                " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(actor_id, actor_type,"
                " message_id) ON m.actor_id = k.actor_id AND m.actor_type = k.actor_type"
                " AND m.message_id = k.message_id",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
            )
        return {(r[0], r[1], r[2]): bytes(r[3]) for r in rows}

    async def actors(self, limit: int = 100) -> list[ActorRef]:
        async with self._connection() as con:
            rows = await con.fetch(
                "SELECT DISTINCT actor_type, actor_id FROM actor_writers ORDER BY 1, 2 LIMIT $1",
                limit,
            )
        return [ActorRef(r[0], r[1]) for r in rows]

    # -- replication ---------------------------------------------------------------------

    async def identity(self) -> str:
        async with self._connection() as con:
            value = await con.fetchval("SELECT value FROM meta WHERE key = 'store_id'")
        if value is None:
            raise StoreError("the store has no identity; was its schema migrated?")
        return str(value)

    async def checkpoint(self, source: str) -> Checkpoint:
        async with self._connection() as con:
            row = await con.fetchrow("SELECT * FROM checkpoints WHERE source = $1", source)
        if row is None:
            return Checkpoint(source)
        return Checkpoint(
            source,
            Cursor(int.from_bytes(row["events_seq"], "big"), bytes(row["events_check"])),
            Cursor(int.from_bytes(row["snapshots_seq"], "big"), bytes(row["snapshots_check"])),
            Cursor(int.from_bytes(row["messages_seq"], "big"), bytes(row["messages_check"])),
        )

    async def read_since(
        self, events: Cursor, snapshots: Cursor, limit: int, messages: Cursor = BEGINNING
    ) -> Chunk:
        restarted = False
        async with self._connection() as con, con.transaction(isolation="repeatable_read"):
            horizon = "pg_snapshot_xmin(pg_current_snapshot())"
            if messages.seq:
                row = await con.fetchrow(
                    "SELECT actor_type, actor_id, message_id FROM messages"
                    " WHERE tx = $1::text::xid8 AND seq = $2",
                    str(messages.seq >> 64),
                    messages.seq & (2**64 - 1),
                )
                if row is None or message_check(row[0], row[1], row[2]) != messages.check:
                    messages, restarted = Cursor(), True
            message_rows = await con.fetch(
                "SELECT tx::text AS tx, seq, actor_type, actor_id, message_id, dots FROM messages"
                f" WHERE (tx, seq) > ($1::text::xid8, $2) AND tx < {horizon}"
                " ORDER BY tx, seq LIMIT $3",
                str(messages.seq >> 64),
                messages.seq & (2**64 - 1),
                limit,
            )
            if events.seq:
                check = await con.fetchval(
                    "SELECT id FROM events WHERE tx = $1::text::xid8 AND seq = $2",
                    str(events.seq >> 64),
                    events.seq & (2**64 - 1),
                )
                if check is None or bytes(check) != events.check:
                    events, restarted = Cursor(), True
            if snapshots.seq:
                row = await con.fetchrow(
                    "SELECT actor_type, actor_id, clock FROM snapshots"
                    " WHERE tx = $1::text::xid8 AND seq = $2",
                    str(snapshots.seq >> 64),
                    snapshots.seq & (2**64 - 1),
                )
                if row is None or snapshot_check(row[0], row[1], bytes(row[2])) != snapshots.check:
                    snapshots, restarted = Cursor(), True
            event_rows = await con.fetch(
                f"SELECT tx::text AS tx, seq, {_EVENT_COLUMNS} FROM events"
                f" WHERE (tx, seq) > ($1::text::xid8, $2) AND tx < {horizon}"
                " ORDER BY tx, seq LIMIT $3",
                str(events.seq >> 64),
                events.seq & (2**64 - 1),
                limit,
            )
            snapshot_rows = await con.fetch(
                "SELECT s.tx::text AS tx, s.seq, s.actor_type, s.actor_id, s.clock, s.parents,"
                " s.state, s.timestamp, p.events FROM snapshots s JOIN packs p"
                " ON p.actor_id = s.actor_id AND p.actor_type = s.actor_type AND p.clock = s.clock"
                f" WHERE (s.tx, s.seq) > ($1::text::xid8, $2) AND s.tx < {horizon}"
                " ORDER BY s.tx, s.seq LIMIT $3",
                str(snapshots.seq >> 64),
                snapshots.seq & (2**64 - 1),
                limit,
            )
        copied_events = tuple(_event(r) for r in event_rows)
        if event_rows:
            last = event_rows[-1]
            events = Cursor(_position(int(last["tx"]), last["seq"]), copied_events[-1].id)
        copied: list[tuple[SnapshotRecord, PackRecord]] = []
        for r in snapshot_rows:
            actor = ActorRef(r["actor_type"], r["actor_id"])
            clock = bytes(r["clock"])
            snapshot = snapshot_from_row(
                actor, clock, bytes(r["parents"]), bytes(r["state"]), r["timestamp"]
            )
            pack = PackRecord(actor, snapshot.clock, tuple(decode_events(bytes(r["events"]))))
            copied.append((snapshot, pack))
            snapshots = Cursor(
                _position(int(r["tx"]), r["seq"]),
                snapshot_check(r["actor_type"], r["actor_id"], clock),
            )
        self.stats.events_read += len(copied_events)
        self.stats.snapshots_read += len(copied)
        self.stats.packs_read += len(copied)
        copied_messages = tuple(
            MessageRecord(
                ActorRef(r["actor_type"], r["actor_id"]),
                r["message_id"],
                decode_dots(bytes(r["dots"]), "message record"),
            )
            for r in message_rows
        )
        if message_rows:
            last = message_rows[-1]
            messages = Cursor(
                _position(int(last["tx"]), last["seq"]),
                message_check(last["actor_type"], last["actor_id"], last["message_id"]),
            )
        return Chunk(
            copied_events,
            tuple(copied),
            events,
            snapshots,
            restarted,
            copied_messages,
            messages,
        )

    # -- publishing ----------------------------------------------------------------------

    async def read_events(self, after: Cursor, limit: int) -> list[tuple[Cursor, EventRecord]]:
        # The rule of read_since: only rows of transactions older than every one still
        # running, so a transaction that commits late is read after, never skipped.
        async with self._connection() as con:
            rows = await con.fetch(
                f"SELECT tx::text AS tx, seq, {_EVENT_COLUMNS} FROM events"
                " WHERE (tx, seq) > ($1::text::xid8, $2)"
                " AND tx < pg_snapshot_xmin(pg_current_snapshot())"
                " ORDER BY tx, seq LIMIT $3",
                str(after.seq >> 64),
                after.seq & (2**64 - 1),
                limit,
            )
        found: list[tuple[Cursor, EventRecord]] = []
        for r in rows:
            record = _event(r)
            found.append((Cursor(_position(int(r["tx"]), r["seq"]), record.id), record))
        self.stats.events_read += len(found)
        return found
