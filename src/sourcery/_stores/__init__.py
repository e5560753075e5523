"""Store backends, chosen by URL scheme. Drivers are imported only by their backend."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sourcery._core.config import redact
from sourcery._core.errors import ConfigurationError
from sourcery._stores.base import (
    ActorRecords,
    EventFeed,
    Inspection,
    ReplicationSink,
    ReplicationSource,
    Store,
    StoreResource,
    StoreStats,
)

if TYPE_CHECKING:
    from sourcery._stores.postgres import PostgresStore
    from sourcery._stores.sqlite import SqliteStore

__all__ = [
    "ActorRecords",
    "EventFeed",
    "Inspection",
    "ReplicationSink",
    "ReplicationSource",
    "Store",
    "StoreResource",
    "StoreStats",
    "open_store",
    "stored_version",
]


async def open_store(url: str) -> Store:
    """Open (and migrate) the store a URL names."""
    return await _backend(url).open(url)


async def stored_version(url: str) -> int | None:
    """The schema version the store at ``url`` holds, in today's numbering, read without
    creating or migrating anything; None where there is no store yet (so ``inspect`` can
    refuse a missing store and ``migrate`` can say what it did)."""
    return await _backend(url).stored_version(url)


def _backend(url: str) -> type[SqliteStore] | type[PostgresStore]:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from sourcery._stores.sqlite import SqliteStore

        return SqliteStore
    if scheme in ("postgresql", "postgres"):
        try:
            from sourcery._stores.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "PostgreSQL needs the asyncpg driver: pip install 'sourcery[postgres]'"
            ) from exc
        return PostgresStore
    raise ConfigurationError(f"no store for URL scheme {scheme!r} in {redact(url)!r}")
