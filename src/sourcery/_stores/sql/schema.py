"""The schema, described once: its tables and its numbered migrations.

Every dialect renders the same description, so SQLite and PostgreSQL hold the same tables
under one version number. Version 2 is the first that both number alike: SQLite files
already said 2 for it, and PostgreSQL schemas made before said 1 for the very same tables
(see each dialect's ``renumbered``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sourcery._core.errors import SchemaVersionError
from sourcery._stores.sql.dialect import Dialect

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "Table", "checked_version", "statements"]

_ACTOR = (("actor_id", "text"), ("actor_type", "text"))


@dataclass(frozen=True, slots=True)
class Table:
    """One table, rendered by each dialect."""

    name: str
    columns: tuple[tuple[str, str], ...]
    """Name and kind: ``text``, ``int`` (64 bits), ``int32`` or ``bytes``; all NOT NULL."""
    key: tuple[str, ...]
    """The unique key; it starts with the actor id wherever there is one (Citus)."""
    feed: bool = False
    """Rows carry their position in the order they were written (replication, publishing)."""
    compact: bool = False
    """Rows are small: SQLite may keep them in the key's own b-tree (WITHOUT ROWID)."""


@dataclass(frozen=True, slots=True)
class Migration:
    why: str
    tables: tuple[Table, ...]
    identity: bool = False
    """Give the store its random identity (once, when the meta table is made)."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "1: the records, the indexes the store keeps for itself, and claimed writer ids",
        (
            Table(
                "events",
                (
                    *_ACTOR,
                    ("writer", "text"),
                    ("n", "int"),
                    ("id", "bytes"),
                    ("timestamp", "int"),
                    ("initiated_by", "text"),
                    ("type", "text"),
                    ("version", "int32"),
                    ("payload", "bytes"),
                ),
                ("actor_id", "actor_type", "writer", "n"),
                feed=True,
            ),
            Table(
                "snapshots",
                (
                    *_ACTOR,
                    ("clock", "bytes"),
                    ("total", "int"),
                    ("parents", "bytes"),
                    ("state", "bytes"),
                    ("timestamp", "int"),
                ),
                ("actor_id", "actor_type", "clock"),
                feed=True,
            ),
            Table(
                "packs",
                (*_ACTOR, ("clock", "bytes"), ("events", "bytes")),
                ("actor_id", "actor_type", "clock"),
            ),
            Table(
                "heads",
                (*_ACTOR, ("clock", "bytes")),
                ("actor_id", "actor_type", "clock"),
                compact=True,
            ),
            Table(
                "actor_writers",
                (*_ACTOR, ("writer", "text")),
                ("actor_id", "actor_type", "writer"),
                compact=True,
            ),
            Table(
                "messages",
                (*_ACTOR, ("message_id", "text"), ("dots", "bytes")),
                ("actor_id", "actor_type", "message_id"),
                feed=True,
            ),
            Table("writers", (("writer", "text"), ("started", "int")), ("writer",), compact=True),
        ),
    ),
    Migration(
        "2: replication: this store's identity, and how far it has copied from each source",
        (
            Table("meta", (("key", "text"), ("value", "text")), ("key",), compact=True),
            Table(
                "checkpoints",
                (
                    ("source", "text"),
                    *(
                        (f"{stream}_{part}", "bytes")
                        for stream in ("events", "snapshots", "messages")
                        for part in ("seq", "check")
                    ),
                ),
                ("source",),
                compact=True,
            ),
        ),
        identity=True,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def statements(dialect: Dialect, number: int) -> list[str]:
    """The DDL of migration ``number`` (1-based) in ``dialect``."""
    migration = MIGRATIONS[number - 1]
    found = [ddl for table in migration.tables for ddl in dialect.create_table(table)]
    if migration.identity:
        found.append(f"INSERT INTO meta (key, value) VALUES ('store_id', {dialect.random_id})")
    return found


def checked_version(dialect: Dialect, recorded: int, where: str) -> int:
    """The version in today's numbering of a store that records ``recorded``; a store
    newer than this code is refused."""
    version = dialect.renumbered.get(recorded, recorded)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has schema version {recorded}; this code knows up to {SCHEMA_VERSION}"
        )
    return version
