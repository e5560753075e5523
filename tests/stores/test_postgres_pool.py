"""The PostgreSQL store's pool skips asyncpg's reset query: a connection must still come
back to the pool clean after whatever a store operation did on it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, postgres_down

from sourcery._core.errors import StoreError
from sourcery._core.ids import id_to_bytes, new_id
from sourcery._core.records import ActorRef, CommitBatch, EventRecord, MessageRecord
from sourcery._stores import open_store

pytestmark = pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down()))

A = ActorRef("account", "a")


def _event(n: int, payload: bytes) -> EventRecord:
    return EventRecord("account", "a", "w1", n, id_to_bytes(new_id()), 1, "m", "T", 1, payload)


async def _states(application: str) -> list[str]:
    con = await asyncpg.connect(POSTGRES)
    try:
        rows = await con.fetch(
            "SELECT state FROM pg_stat_activity WHERE application_name = $1", application
        )
    finally:
        await con.close()
    return [r[0] for r in rows]


async def test_a_failed_transaction_leaves_its_pooled_connection_clean() -> None:
    application = f"sourcery-pool-{uuid.uuid4().hex[:8]}"
    schema = f"{TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES}?schema={schema}&application_name={application}&pool_size=1"
    store = await open_store(url)
    try:
        await store.commit(CommitBatch(events=[_event(1, b"x")]))
        # The same dot as another event: the transaction fails on the only connection.
        with pytest.raises(StoreError):
            await store.commit(CommitBatch(events=[_event(1, b"y")]))
        assert await _states(application) == ["idle"]
        # The connection is usable as new: in the store's schema, outside any transaction.
        await store.commit(
            CommitBatch(events=[_event(2, b"z")], messages=[MessageRecord(A, "m-2", (("w1", 2),))])
        )
        assert await store.message(A, "m-2") == MessageRecord(A, "m-2", (("w1", 2),))
        assert [e.payload for e in await store.events(A, [("w1", 1), ("w1", 2)])] == [b"x", b"z"]
        assert await _states(application) == ["idle"]
    finally:
        await store.aclose()
