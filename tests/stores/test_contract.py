"""The store contract (``sourcery.testing.stores``) run against every store of ours: SQLite
in memory and in a file, and PostgreSQL. Only the hook that opens a store is here."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, postgres_down

from sourcery._core.errors import InvalidActorRef
from sourcery._core.records import ActorRef
from sourcery._stores import Store, open_store
from sourcery.testing.stores import StoreContract


class UrlContract(StoreContract):
    """A store named by a URL, made fresh for each test."""

    url = ""

    def fresh_url(self, tmp_path: Path) -> str:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _fresh_url(self, tmp_path: Path) -> None:
        self.url = self.fresh_url(tmp_path)

    async def create_store(self) -> Store:
        return await open_store(self.url)

    async def reopen_store(self) -> Store:
        return await open_store(self.url)


class TestSqliteMemory(UrlContract):
    def fresh_url(self, tmp_path: Path) -> str:
        return "sqlite://:memory:"


class TestSqliteFile(UrlContract):
    persistent = True

    def fresh_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down()))
class TestPostgres(UrlContract):
    persistent = True

    def fresh_url(self, tmp_path: Path) -> str:
        return f"{POSTGRES}?schema={TEST_SCHEMA_PREFIX}{uuid.uuid4().hex[:16]}"


# -- what no store can hold --------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["", "a\x00b", "\x00", "x" * 256, "é" * 128, "🎉" * 64, "\ud800", "ok\udfff"],
    ids=[
        "empty",
        "nul",
        "only-nul",
        "256-ascii",
        "256-bytes-2",
        "256-bytes-4",
        "lone-high",
        "lone-low",
    ],
)
def test_actor_ref_rejects_what_no_store_can_hold(bad: str) -> None:
    with pytest.raises(InvalidActorRef):
        ActorRef("account", bad)
    with pytest.raises(InvalidActorRef):
        ActorRef(bad, "id-1")


@pytest.mark.parametrize("bad", [None, b"id", 1])
def test_actor_ref_rejects_non_strings(bad: object) -> None:
    with pytest.raises(InvalidActorRef):
        ActorRef("account", bad)  # type: ignore[arg-type]


def test_actor_ref_accepts_255_bytes() -> None:
    for s in ("x" * 255, "é" * 127 + "x", "🎉" * 63 + "abc"):
        assert ActorRef(s, s).id == s
