"""One schema numbering for every SQL store: stores written by older releases, under their
old numbers, open and upgrade; a newer one is refused."""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, postgres_down

from sourcery._core.clock import VectorClock
from sourcery._core.errors import SchemaVersionError
from sourcery._core.ids import id_to_bytes, new_id
from sourcery._core.records import ActorRef, EventRecord
from sourcery._stores import open_store, stored_version
from sourcery._stores import postgres as pg
from sourcery._stores import sqlite as lite
from sourcery._stores.sql.schema import SCHEMA_VERSION, statements

A = ActorRef("account", "old-1")
EVENT = EventRecord(A.type, A.id, "w1", 1, id_to_bytes(new_id()), 1, "m", "T", 1, b"old")
ROW = (A.type, A.id, "w1", 1, EVENT.id, 1, "m", "T", 1, b"old")
INSERT = (
    "INSERT INTO events (actor_type, actor_id, writer, n, id, timestamp, initiated_by,"
    " type, version, payload) VALUES ({})"
)
INSERT_WRITER = "INSERT INTO actor_writers (actor_id, actor_type, writer) VALUES ({})"

needs_postgres = pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down()))


def test_both_stores_share_one_number() -> None:
    assert lite.SCHEMA_VERSION == pg.SCHEMA_VERSION == SCHEMA_VERSION == 2


def old_sqlite(path: Path, version: int) -> None:
    """A file as the release that numbered it ``version`` left it, holding one event."""
    with closing(sqlite3.connect(path, isolation_level=None)) as con:
        for number in range(1, version + 1):
            for ddl in statements(lite.DIALECT, number):
                con.execute(ddl)
        con.execute(INSERT.format(",".join("?" * 10)), ROW)
        con.execute(INSERT_WRITER.format("?,?,?"), (A.id, A.type, "w1"))
        con.execute(f"PRAGMA user_version = {version}")


@pytest.mark.parametrize("version", [1, 2])
async def test_an_old_sqlite_file_opens_and_upgrades(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.db"
    old_sqlite(path, version)
    store = await open_store(f"sqlite:///{path}")
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.loose_events(A, VectorClock.empty()) == [EVENT]
        assert len(await store.identity()) == 32
    finally:
        await store.aclose()


@pytest.mark.parametrize("version", [1, 2])
async def test_looking_at_an_old_sqlite_file_changes_nothing(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.db"
    old_sqlite(path, version)
    before = path.read_bytes()
    assert await stored_version(f"sqlite:///{path}") == version  # 1 and 2 kept their numbers
    assert path.read_bytes() == before
    assert not (tmp_path / "old.db-wal").exists()


async def test_no_sqlite_store_has_no_version(tmp_path: Path) -> None:
    assert await stored_version(f"sqlite:///{tmp_path / 'absent.db'}") is None
    assert not (tmp_path / "absent.db").exists()
    assert await stored_version("sqlite://:memory:") is None
    with closing(sqlite3.connect(tmp_path / "empty.db")) as con:
        con.execute("CREATE TABLE other (x)")
    assert await stored_version(f"sqlite:///{tmp_path / 'empty.db'}") == 0


async def test_a_newer_sqlite_file_is_refused_by_a_look(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    old_sqlite(path, SCHEMA_VERSION)
    with closing(sqlite3.connect(path)) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaVersionError):
        await stored_version(f"sqlite:///{path}")


@needs_postgres
async def test_a_postgres_schema_is_looked_at_without_being_created() -> None:
    schema = f"{TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES}?schema={schema}"
    assert await stored_version(url) is None
    con = await asyncpg.connect(POSTGRES)
    try:
        found = await con.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)
    finally:
        await con.close()
    assert found == 0
    await (await open_store(url)).aclose()
    assert await stored_version(url) == SCHEMA_VERSION


@needs_postgres
async def test_an_old_postgres_schema_numbered_1_opens_as_version_2() -> None:
    schema = f"{TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"
    con = await asyncpg.connect(POSTGRES)
    try:
        # What the release before one numbering wrote: every table, recorded as version 1.
        await con.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
        await con.execute("CREATE TABLE sourcery_schema (version integer NOT NULL)")
        for number in (1, 2):
            for ddl in statements(pg.DIALECT, number):
                await con.execute(ddl)
        await con.execute("INSERT INTO sourcery_schema (version) VALUES (1)")
        await con.execute(INSERT.format(", ".join(f"${i}" for i in range(1, 11))), *ROW)
        await con.execute(INSERT_WRITER.format("$1, $2, $3"), A.id, A.type, "w1")
        identity = await con.fetchval("SELECT value FROM meta")
    finally:
        await con.close()
    store = await open_store(f"{POSTGRES}?schema={schema}")
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.identity() == identity
        assert await store.loose_events(A, VectorClock.empty()) == [EVENT]
    finally:
        await store.aclose()


@needs_postgres
async def test_a_newer_postgres_schema_is_refused() -> None:
    schema = f"{TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES}?schema={schema}"
    await (await open_store(url)).aclose()
    con = await asyncpg.connect(POSTGRES)
    try:
        await con.execute(
            f'INSERT INTO "{schema}".sourcery_schema (version) VALUES ($1)', SCHEMA_VERSION + 1
        )
    finally:
        await con.close()
    with pytest.raises(SchemaVersionError, match=str(SCHEMA_VERSION + 1)):
        await open_store(url)
