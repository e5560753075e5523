"""The embedded store: one SQLite file in WAL mode, written by one thread, read by another.

Writes go through a group committer into a single writer connection, so concurrent commands
share one transaction (and one fsync). Reads use their own connection, which WAL lets run
while a transaction is being written.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import msgspec

from sourcery._core.clock import VectorClock
from sourcery._core.config import SqliteSettings, parse_sqlite_url
from sourcery._core.errors import (
    ClosedError,
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

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    # 1: the records, the indexes the store keeps for itself, and claimed writer ids.
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        actor_id TEXT NOT NULL,
        actor_type TEXT NOT NULL,
        writer TEXT NOT NULL,
        n INTEGER NOT NULL,
        id BLOB NOT NULL,
        timestamp INTEGER NOT NULL,
        initiated_by TEXT NOT NULL,
        type TEXT NOT NULL,
        version INTEGER NOT NULL,
        payload BLOB NOT NULL,
        UNIQUE (actor_id, actor_type, writer, n)
    );
    CREATE TABLE snapshots (
        seq INTEGER PRIMARY KEY,
        actor_id TEXT NOT NULL,
        actor_type TEXT NOT NULL,
        clock BLOB NOT NULL,
        total INTEGER NOT NULL,
        parents BLOB NOT NULL,
        state BLOB NOT NULL,
        timestamp INTEGER NOT NULL,
        UNIQUE (actor_id, actor_type, clock)
    );
    CREATE TABLE packs (
        seq INTEGER PRIMARY KEY,
        actor_id TEXT NOT NULL,
        actor_type TEXT NOT NULL,
        clock BLOB NOT NULL,
        events BLOB NOT NULL,
        UNIQUE (actor_id, actor_type, clock)
    );
    CREATE TABLE heads (
        actor_id TEXT NOT NULL,
        actor_type TEXT NOT NULL,
        clock BLOB NOT NULL,
        PRIMARY KEY (actor_id, actor_type, clock)
    ) WITHOUT ROWID;
    CREATE TABLE actor_writers (
        actor_id TEXT NOT NULL,
        actor_type TEXT NOT NULL,
        writer TEXT NOT NULL,
        PRIMARY KEY (actor_id, actor_type, writer)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        actor_id TEXT NOT NULL,
        actor_type TEXT NOT NULL,
        message_id TEXT NOT NULL,
        dots BLOB NOT NULL,
        UNIQUE (actor_id, actor_type, message_id)
    );
    CREATE TABLE writers (
        writer TEXT PRIMARY KEY,
        started INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: replication: this store's identity, and how far it has copied from each source.
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));
    CREATE TABLE checkpoints (
        source TEXT PRIMARY KEY,
        events_seq BLOB NOT NULL,
        events_check BLOB NOT NULL,
        snapshots_seq BLOB NOT NULL,
        snapshots_check BLOB NOT NULL,
        messages_seq BLOB NOT NULL,
        messages_check BLOB NOT NULL
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_KNOWN_WRITERS_LIMIT = 200_000
_KEYS_PER_QUERY = 300
"""Message keys looked up by one query: 900 parameters, well under SQLite's limit."""

_EVENT_COLUMNS = EVENT_COLUMNS
_INSERT_EVENT = f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
_SELECT_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM events"


_event_row = msgspec.structs.astuple  # the columns are the struct's fields, in order
_event = event_from_row


_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "readonly", "full")
"""Operational errors worth retrying later; the others (a missing table, say) are not."""


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn driver errors into the library's own, keeping the cause."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if any(word in text for word in _TRANSIENT):
            raise StoreUnavailable(f"sqlite {what} failed: {exc}") from exc
        raise StoreError(f"sqlite {what} failed: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"sqlite {what} failed: {exc}") from exc


class SqliteStore:
    """A :class:`~sourcery._stores.base.Store` on one SQLite database."""

    def __init__(self, settings: SqliteSettings) -> None:
        self.settings = settings
        self.stats = StoreStats()
        self._write_exec = ThreadPoolExecutor(1, thread_name_prefix="sourcery-sqlite-w")
        self._read_exec = (
            self._write_exec
            if settings.memory
            else ThreadPoolExecutor(1, thread_name_prefix="sourcery-sqlite-r")
        )
        self._wcon: sqlite3.Connection | None = None
        self._rcon: sqlite3.Connection | None = None
        self._committer = GroupCommitter(self._flush)
        self._messages: LookupBatcher[MessageKey, bytes] = LookupBatcher(self._find_messages)
        self._known_writers: set[tuple[str, str, str]] = set()
        self._new_writers: set[tuple[str, str, str]] = set()
        """Pairs recorded by the transaction under way; known only once it commits."""
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> SqliteStore:
        store = cls(parse_sqlite_url(url))
        try:
            await store._run(store._write_exec, store._open_writer)
            if store._read_exec is not store._write_exec:
                await store._run(store._read_exec, store._open_reader)
        except BaseException:
            await store.aclose()
            raise
        return store

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- threads and connections ---------------------------------------------------------

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ClosedError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        with _translated("open"):
            con = sqlite3.connect(
                self.settings.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.settings.busy_timeout_ms / 1000,
            )
            con.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout_ms)}")
            if not self.settings.memory:
                # Refuse a newer schema before switching to WAL, which writes to the file.
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    con.close()
                    raise SchemaVersionError(
                        f"{self.settings.path} has schema version {version}; "
                        f"this code knows up to {SCHEMA_VERSION}"
                    )
                if version == 0 and con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    con.close()
                    raise StoreError(
                        f"{self.settings.path} holds tables but is not a sourcery store;"
                        " refusing to add ours to it"
                    )
                con.execute("PRAGMA journal_mode = WAL")
            con.execute(f"PRAGMA synchronous = {self.settings.synchronous}")
        return con

    def _open_writer(self) -> None:
        con = self._connect()
        self._wcon = con
        with _translated("migration"):
            con.execute("BEGIN IMMEDIATE")
            try:
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise SchemaVersionError(
                        f"{self.settings.path} has schema version {version}; "
                        f"this code knows up to {SCHEMA_VERSION}"
                    )
                for number in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[number].split(";"):
                        if statement.strip():
                            con.execute(statement)
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        if self.settings.memory:
            self._rcon = con

    def _open_reader(self) -> None:
        self._rcon = self._connect()

    async def aclose(self) -> None:
        if self._closed:
            return
        await self._committer.aclose()
        self._closed = True
        loop = asyncio.get_running_loop()
        for executor, attr in ((self._read_exec, "_rcon"), (self._write_exec, "_wcon")):
            con: sqlite3.Connection | None = getattr(self, attr)
            if con is not None:
                setattr(self, attr, None)
                await loop.run_in_executor(executor, con.close)
        self._read_exec.shutdown(wait=True)
        self._write_exec.shutdown(wait=True)

    @property
    def transactions(self) -> int:
        return self._committer.transactions

    async def schema_version(self) -> int:
        return await self._read(self._schema_version)

    def _schema_version(self) -> int:
        assert self._rcon is not None
        with _translated("read"):
            version: int = self._rcon.execute("PRAGMA user_version").fetchone()[0]
        return version

    # -- writing -------------------------------------------------------------------------

    async def register_writer(self, writer: str) -> None:
        await self._run(self._write_exec, self._register_writer, writer)

    def _register_writer(self, writer: str) -> None:
        assert self._wcon is not None
        with _translated("writer registration"):
            try:
                self._wcon.execute(
                    "INSERT INTO writers (writer, started) VALUES (?, ?)",
                    (writer, int(time.time() * 1000)),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"writer id {writer!r} was already used on this store") from exc

    def commit(self, batch: CommitBatch) -> asyncio.Future[None]:
        return self._committer.commit(batch)

    async def _flush(self, batches: Sequence[CommitBatch]) -> None:
        await self._run(self._write_exec, self._flush_sync, batches)
        self.stats.transactions += 1
        self.stats.batches += len(batches)

    def _flush_sync(self, batches: Sequence[CommitBatch]) -> None:
        con = self._wcon
        assert con is not None
        with _translated("commit"):
            con.execute("BEGIN IMMEDIATE")
            try:
                self._write_events(con, [e for b in batches for e in b.events])
                messages = [m for b in batches for m in b.messages]
                if messages:
                    con.executemany(
                        "INSERT OR IGNORE INTO messages (actor_id, actor_type, message_id, dots)"
                        " VALUES (?,?,?,?)",
                        [
                            (
                                m.actor.id,
                                m.actor.type,
                                m.message_id,
                                encode_dots(m.dots),
                            )
                            for m in messages
                        ],
                    )
                for b in batches:
                    for snapshot, pack in b.snapshots:
                        self._write_snapshot(con, snapshot, pack)
                    if b.checkpoint is not None:
                        self._write_checkpoint(con, b.checkpoint)
                con.execute("COMMIT")
            except BaseException:
                self._new_writers.clear()
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        known = self._known_writers
        if len(known) > _KNOWN_WRITERS_LIMIT:
            known.clear()
        known.update(self._new_writers)
        self._new_writers.clear()

    def _write_events(self, con: sqlite3.Connection, events: list[EventRecord]) -> None:
        if not events:
            return
        rows = [_event_row(e) for e in events]
        inserted = con.executemany(_INSERT_EVENT, rows).rowcount
        if inserted != len(rows):
            self._check_same(con, events)
        # The index of writers per actor: a pair this store recently recorded is skipped,
        # so the hot path pays a set lookup, not a second insert per event.
        known = self._known_writers
        firsts = {key for e in events if (key := (e.actor_id, e.actor_type, e.writer)) not in known}
        if firsts:
            self._new_writers.update(firsts)
            con.executemany(
                "INSERT OR IGNORE INTO actor_writers (actor_id, actor_type, writer) VALUES (?,?,?)",
                firsts,
            )

    def _write_checkpoint(self, con: sqlite3.Connection, cp: Checkpoint) -> None:
        con.execute(
            "INSERT OR REPLACE INTO checkpoints (source, events_seq, events_check,"
            " snapshots_seq, snapshots_check, messages_seq, messages_check)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                cp.source,
                cp.events.seq.to_bytes(16, "big"),
                cp.events.check,
                cp.snapshots.seq.to_bytes(16, "big"),
                cp.snapshots.check,
                cp.messages.seq.to_bytes(16, "big"),
                cp.messages.check,
            ),
        )

    def _check_same(self, con: sqlite3.Connection, events: list[EventRecord]) -> None:
        """Some events were there already: fine if identical, a conflict otherwise."""
        for e in events:
            row = con.execute(
                f"{_SELECT_EVENTS} WHERE actor_id=? AND actor_type=? AND writer=? AND n=?",
                (e.actor_id, e.actor_type, e.writer, e.n),
            ).fetchone()
            if row is not None and _event(row) != e:
                raise StoreError(
                    f"conflict: dot ({e.writer!r}, {e.n}) of {e.actor} is already another event"
                )

    def _write_snapshot(
        self, con: sqlite3.Connection, snapshot: SnapshotRecord, pack: PackRecord
    ) -> None:
        actor = snapshot.actor
        key = snapshot.clock.to_bytes()
        inserted = con.execute(
            "INSERT OR IGNORE INTO snapshots"
            " (actor_id, actor_type, clock, total, parents, state, timestamp)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                actor.id,
                actor.type,
                key,
                snapshot.clock.total(),
                encode_parents(snapshot.parents),
                snapshot.state,
                snapshot.timestamp,
            ),
        ).rowcount
        if not inserted:
            return
        con.execute(
            "INSERT OR IGNORE INTO packs (actor_id, actor_type, clock, events) VALUES (?,?,?,?)",
            (actor.id, actor.type, key, encode_events(list(pack.events))),
        )
        heads = con.execute(
            "SELECT clock FROM heads WHERE actor_id=? AND actor_type=?", (actor.id, actor.type)
        )
        replaced = replaced_heads([row[0] for row in heads], snapshot.clock)
        if replaced is None:
            return
        if replaced:
            con.executemany(
                "DELETE FROM heads WHERE actor_id=? AND actor_type=? AND clock=?",
                [(actor.id, actor.type, old) for old in replaced],
            )
        con.execute(
            "INSERT INTO heads (actor_id, actor_type, clock) VALUES (?,?,?)",
            (actor.id, actor.type, key),
        )

    # -- reading -------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._read_exec, fn, *args)

    async def heads(self, actor: ActorRef) -> list[SnapshotRecord]:
        heads = await self._read(self._heads, actor)
        self.stats.snapshots_read += len(heads)
        return heads

    def _heads(self, actor: ActorRef) -> list[SnapshotRecord]:
        assert self._rcon is not None
        with _translated("read"):
            rows = self._rcon.execute(
                "SELECT s.clock, s.parents, s.state, s.timestamp FROM heads h JOIN snapshots s"
                " ON s.actor_id = h.actor_id AND s.actor_type = h.actor_type AND s.clock = h.clock"
                " WHERE h.actor_id = ? AND h.actor_type = ?",
                (actor.id, actor.type),
            ).fetchall()
        return [snapshot_from_row(actor, *row) for row in rows]

    async def frontier(self, actor: ActorRef) -> VectorClock:
        return await self._read(self._frontier, actor)

    def _frontier(self, actor: ActorRef) -> VectorClock:
        assert self._rcon is not None
        with _translated("read"):
            rows = self._rcon.execute(
                "SELECT w.writer, (SELECT max(e.n) FROM events e WHERE e.actor_id = w.actor_id"
                " AND e.actor_type = w.actor_type AND e.writer = w.writer)"
                " FROM actor_writers w WHERE w.actor_id = ? AND w.actor_type = ?",
                (actor.id, actor.type),
            ).fetchall()
        return VectorClock(rows)

    async def loose_events(self, actor: ActorRef, clock: VectorClock) -> list[EventRecord]:
        events = await self._read(self._loose_events, actor, clock)
        self.stats.events_read += len(events)
        return events

    def _loose_events(self, actor: ActorRef, clock: VectorClock) -> list[EventRecord]:
        assert self._rcon is not None
        found: list[EventRecord] = []
        with _translated("read"):
            for writer, top in self._frontier(actor).items():
                seen = clock.get(writer)
                if top > seen:
                    rows = self._rcon.execute(
                        f"{_SELECT_EVENTS} WHERE actor_id=? AND actor_type=? AND writer=?"
                        " AND n > ? ORDER BY n",
                        (actor.id, actor.type, writer, seen),
                    )
                    found.extend(_event(row) for row in rows)
        return found

    async def events(self, actor: ActorRef, dots: Sequence[tuple[str, int]]) -> list[EventRecord]:
        events = await self._read(self._events, actor, list(dots))
        self.stats.events_read += len(events)
        return events

    def _events(self, actor: ActorRef, dots: list[tuple[str, int]]) -> list[EventRecord]:
        assert self._rcon is not None
        found: list[EventRecord] = []
        with _translated("read"):
            for writer, n in dots:
                row = self._rcon.execute(
                    f"{_SELECT_EVENTS} WHERE actor_id=? AND actor_type=? AND writer=? AND n=?",
                    (actor.id, actor.type, writer, n),
                ).fetchone()
                if row is not None:
                    found.append(_event(row))
        return found

    async def snapshot(self, actor: ActorRef, clock: VectorClock) -> SnapshotRecord | None:
        found = await self._read(self._snapshot_at, actor, clock)
        if found is not None:
            self.stats.snapshots_read += 1
        return found

    def _snapshot_at(self, actor: ActorRef, clock: VectorClock) -> SnapshotRecord | None:
        assert self._rcon is not None
        with _translated("read"):
            row = self._rcon.execute(
                "SELECT clock, parents, state, timestamp FROM snapshots"
                " WHERE actor_id=? AND actor_type=? AND clock=?",
                (actor.id, actor.type, clock.to_bytes()),
            ).fetchone()
        return None if row is None else snapshot_from_row(actor, *row)

    async def pack(self, actor: ActorRef, clock: VectorClock) -> PackRecord | None:
        found = await self._read(self._pack, actor, clock)
        if found is not None:
            self.stats.packs_read += 1
        return found

    def _pack(self, actor: ActorRef, clock: VectorClock) -> PackRecord | None:
        assert self._rcon is not None
        with _translated("read"):
            row = self._rcon.execute(
                "SELECT events FROM packs WHERE actor_id=? AND actor_type=? AND clock=?",
                (actor.id, actor.type, clock.to_bytes()),
            ).fetchone()
        if row is None:
            return None
        return PackRecord(actor=actor, clock=clock, events=tuple(decode_events(row[0])))

    async def snapshots(self, actor: ActorRef) -> list[SnapshotRecord]:
        return await self._read(self._snapshots, actor)

    def _snapshots(self, actor: ActorRef) -> list[SnapshotRecord]:
        assert self._rcon is not None
        with _translated("read"):
            rows = self._rcon.execute(
                "SELECT clock, parents, state, timestamp FROM snapshots"
                " WHERE actor_id=? AND actor_type=? ORDER BY total, seq",
                (actor.id, actor.type),
            ).fetchall()
        return [snapshot_from_row(actor, *row) for row in rows]

    async def message(self, actor: ActorRef, message_id: str) -> MessageRecord | None:
        if self._closed:
            raise ClosedError("the store is closed")
        data = await self._messages.get((actor.id, actor.type, message_id))
        if data is None:
            return None
        dots = decode_dots(data, f"message record {message_id!r} of {actor}")
        return MessageRecord(actor=actor, message_id=message_id, dots=dots)

    async def _find_messages(self, keys: Sequence[MessageKey]) -> dict[MessageKey, bytes]:
        self.stats.message_queries += 1
        return await self._read(self._find_messages_sync, keys)

    def _find_messages_sync(self, keys: Sequence[MessageKey]) -> dict[MessageKey, bytes]:
        """The dots of the message records under these keys: one query per few hundred."""
        con = self._rcon
        assert con is not None
        found: dict[MessageKey, bytes] = {}
        with _translated("read"):
            for start in range(0, len(keys), _KEYS_PER_QUERY):
                chunk = keys[start : start + _KEYS_PER_QUERY]
                values = ",".join(["(?,?,?)"] * len(chunk))
                rows = con.execute(
                    f"WITH k(actor_id, actor_type, message_id) AS (VALUES {values})"
                    " SELECT m.actor_id, m.actor_type, m.message_id, m.dots FROM k JOIN messages m"
                    " ON m.actor_id = k.actor_id AND m.actor_type = k.actor_type"
                    " AND m.message_id = k.message_id",
                    [part for key in chunk for part in key],
                )
                for actor_id, actor_type, message_id, dots in rows:
                    found[(actor_id, actor_type, message_id)] = dots
        return found

    async def actors(self, limit: int = 100) -> list[ActorRef]:
        return await self._read(self._actors, limit)

    def _actors(self, limit: int) -> list[ActorRef]:
        assert self._rcon is not None
        with _translated("read"):
            rows = self._rcon.execute(
                "SELECT DISTINCT actor_type, actor_id FROM actor_writers ORDER BY 1, 2 LIMIT ?",
                (limit,),
            ).fetchall()
        return [ActorRef(kind, ident) for kind, ident in rows]

    # -- replication ---------------------------------------------------------------------

    async def identity(self) -> str:
        return await self._read(self._identity)

    def _identity(self) -> str:
        assert self._rcon is not None
        with _translated("read"):
            row = self._rcon.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        if row is None:
            raise StoreError("the store has no identity; was its schema migrated?")
        return str(row[0])

    async def checkpoint(self, source: str) -> Checkpoint:
        return await self._read(self._checkpoint, source)

    def _checkpoint(self, source: str) -> Checkpoint:
        assert self._rcon is not None
        with _translated("read"):
            row = self._rcon.execute(
                "SELECT events_seq, events_check, snapshots_seq, snapshots_check,"
                " messages_seq, messages_check FROM checkpoints WHERE source = ?",
                (source,),
            ).fetchone()
        if row is None:
            return Checkpoint(source)
        return Checkpoint(
            source,
            Cursor(int.from_bytes(row[0], "big"), row[1]),
            Cursor(int.from_bytes(row[2], "big"), row[3]),
            Cursor(int.from_bytes(row[4], "big"), row[5]),
        )

    async def read_since(
        self, events: Cursor, snapshots: Cursor, limit: int, messages: Cursor = BEGINNING
    ) -> Chunk:
        chunk = await self._read(self._read_since, events, snapshots, limit, messages)
        self.stats.events_read += len(chunk.events)
        self.stats.snapshots_read += len(chunk.snapshots)
        self.stats.packs_read += len(chunk.snapshots)
        return chunk

    def _read_since(self, events: Cursor, snapshots: Cursor, limit: int, messages: Cursor) -> Chunk:
        con = self._rcon
        assert con is not None
        restarted = False
        with _translated("read"):
            if messages.seq:
                row = con.execute(
                    "SELECT actor_type, actor_id, message_id FROM messages WHERE seq = ?",
                    (messages.seq,),
                ).fetchone()
                if row is None or message_check(*row) != messages.check:
                    messages, restarted = Cursor(), True
            message_rows = con.execute(
                "SELECT seq, actor_type, actor_id, message_id, dots FROM messages"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (messages.seq, limit),
            ).fetchall()
        copied_messages = tuple(
            MessageRecord(ActorRef(kind, ident), message_id, decode_dots(dots, "message record"))
            for _, kind, ident, message_id, dots in message_rows
        )
        if message_rows:
            last = message_rows[-1]
            messages = Cursor(last[0], message_check(last[1], last[2], last[3]))
        with _translated("read"):
            if events.seq:
                row = con.execute("SELECT id FROM events WHERE seq = ?", (events.seq,)).fetchone()
                if row is None or row[0] != events.check:
                    events, restarted = Cursor(), True
            if snapshots.seq:
                row = con.execute(
                    "SELECT actor_type, actor_id, clock FROM snapshots WHERE seq = ?",
                    (snapshots.seq,),
                ).fetchone()
                if row is None or snapshot_check(*row) != snapshots.check:
                    snapshots, restarted = Cursor(), True
            event_rows = con.execute(
                f"SELECT seq, {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (events.seq, limit),
            ).fetchall()
            snapshot_rows = con.execute(
                "SELECT s.seq, s.actor_type, s.actor_id, s.clock, s.parents, s.state,"
                " s.timestamp, p.events FROM snapshots s JOIN packs p"
                " ON p.actor_id = s.actor_id AND p.actor_type = s.actor_type AND p.clock = s.clock"
                " WHERE s.seq > ? ORDER BY s.seq LIMIT ?",
                (snapshots.seq, limit),
            ).fetchall()
        copied_events = tuple(_event(row[1:]) for row in event_rows)
        if event_rows:
            events = Cursor(event_rows[-1][0], copied_events[-1].id)
        copied: list[tuple[SnapshotRecord, PackRecord]] = []
        for seq, kind, ident, clock, parents, state, ts, pack in snapshot_rows:
            actor = ActorRef(kind, ident)
            snapshot = snapshot_from_row(actor, clock, parents, state, ts)
            copied.append((snapshot, PackRecord(actor, snapshot.clock, tuple(decode_events(pack)))))
            snapshots = Cursor(seq, snapshot_check(kind, ident, clock))
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
        found = await self._read(self._read_events, after.seq, limit)
        self.stats.events_read += len(found)
        return found

    def _read_events(self, after: int, limit: int) -> list[tuple[Cursor, EventRecord]]:
        # One writer at a time (BEGIN IMMEDIATE) takes seq = max + 1 inside its transaction,
        # so seq order is commit order and a committed row never appears behind a read one.
        assert self._rcon is not None
        with _translated("read"):
            rows = self._rcon.execute(
                f"SELECT seq, {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        found: list[tuple[Cursor, EventRecord]] = []
        for row in rows:
            record = _event(row[1:])
            found.append((Cursor(row[0], record.id), record))
        return found
