"""Store backends, chosen by URL scheme. Drivers are imported only by their backend."""

from __future__ import annotations

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
]


async def open_store(url: str) -> Store:
    """Open (and migrate) the store a URL names."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from sourcery._stores.sqlite import SqliteStore

        return await SqliteStore.open(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from sourcery._stores.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "PostgreSQL needs the asyncpg driver: pip install 'sourcery[postgres]'"
            ) from exc
        return await PostgresStore.open(url)
    raise ConfigurationError(f"no store for URL scheme {scheme!r} in {redact(url)!r}")
