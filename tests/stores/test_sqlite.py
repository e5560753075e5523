"""What only the SQLite store promises: its schema versioning and its query plans.

Everything every store promises is in ``test_contract.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from sourcery._core.clock import VectorClock
from sourcery._core.errors import SchemaVersionError
from sourcery._core.ids import id_to_bytes, new_id
from sourcery._core.records import ActorRef, CommitBatch, EventRecord
from sourcery._stores import open_store
from sourcery._stores.sqlite import SCHEMA_VERSION, SqliteStore

A = ActorRef("account", "a-1")


def event(writer: str, n: int, actor: ActorRef = A) -> EventRecord:
    return EventRecord(actor.type, actor.id, writer, n, id_to_bytes(new_id()), n, "m", "T", 1, b"")


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as con:
        version: int = con.execute("PRAGMA user_version").fetchone()[0]
    return version


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


async def test_a_new_file_gets_the_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = await open_store(f"sqlite:///{path}")
    await store.aclose()
    assert user_version(path) == SCHEMA_VERSION
    # Opening it again migrates nothing and keeps the data.
    store = await open_store(f"sqlite:///{path}")
    await store.aclose()
    assert user_version(path) == SCHEMA_VERSION


async def test_a_newer_schema_is_refused_and_the_file_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await open_store(f"sqlite:///{path}")
    await store.commit(CommitBatch(events=[event("w1", 1)]))
    await store.aclose()
    with closing(sqlite3.connect(path)) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = files_of(tmp_path)

    with pytest.raises(SchemaVersionError, match=str(SCHEMA_VERSION + 1)):
        await open_store(f"sqlite:///{path}")

    assert files_of(tmp_path) == before
    assert user_version(path) == SCHEMA_VERSION + 1


async def test_a_newer_file_in_another_journal_mode_is_left_as_it_was(tmp_path: Path) -> None:
    # A newer version of the code might not use WAL; refusing the file must not convert it.
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as con:
        con.execute("CREATE TABLE future (x)")
        con.execute("INSERT INTO future VALUES (1)")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
        con.commit()
    before = files_of(tmp_path)

    with pytest.raises(SchemaVersionError):
        await open_store(f"sqlite:///{path}")

    assert files_of(tmp_path) == before


@contextmanager
def count_steps(con: sqlite3.Connection) -> Iterator[list[int]]:
    """Count the SQLite virtual machine's steps (in hundreds) run on ``con``."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    con.set_progress_handler(tick, 100)
    try:
        yield steps
    finally:
        con.set_progress_handler(None, 0)


async def test_finding_loose_events_does_not_scan_history(tmp_path: Path) -> None:
    """Reading 3 loose events costs about the same behind 10 or 20,000 covered ones."""
    store = await SqliteStore.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        costs = []
        for covered in (10, 20_000):
            actor = ActorRef("account", f"history-{covered}")
            history = [event("w1", n, actor) for n in range(1, covered + 1)]
            await store.commit(CommitBatch(events=history))
            loose = [event("w1", covered + 1, actor), event("w2", 1, actor), event("w3", 1, actor)]
            await store.commit(CommitBatch(events=loose))
            assert store._rcon is not None
            with count_steps(store._rcon) as steps:
                found = await store.loose_events(actor, VectorClock({"w1": covered}))
            assert sorted(e.id for e in found) == sorted(e.id for e in loose)
            costs.append(steps[0])
        small, large = costs
        assert large <= 2 * small + 5, f"{small} vs {large} hundred steps: history is scanned"
    finally:
        await store.aclose()
