"""Copying records between stores: a plain, idempotent union, resumable after any cut."""

from sourcery._engine.replication import (
    DEFAULT_CHUNK,
    Replicator,
    SyncReport,
    catch_up,
    pull,
    sync,
)

__all__ = ["DEFAULT_CHUNK", "Replicator", "SyncReport", "catch_up", "pull", "sync"]
