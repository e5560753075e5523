"""Where the service-backed tests find their servers, and whether they answer."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

POSTGRES = os.environ.get("SOURCERY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The server the PostgreSQL tests use; every test gets a schema of its own there."""
TEST_SCHEMA_PREFIX = f"sourcery_test_{uuid.uuid4().hex[:6]}_"
"""Schemas of this test session: dropped at its end, and only those (runs may overlap)."""


def postgres_down() -> str | None:
    parts = urlsplit(POSTGRES)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return None
    except OSError as exc:
        where = f"{parts.hostname}:{parts.port}"
        return f"no PostgreSQL at {where} ({exc}); run scripts/ensure-services.sh"


async def drop_test_schemas() -> None:
    import asyncpg

    con = await asyncpg.connect(POSTGRES)
    try:
        names = await con.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", TEST_SCHEMA_PREFIX
        )
        for row in names:
            await con.execute(f'DROP SCHEMA IF EXISTS "{row[0]}" CASCADE')
    finally:
        await con.close()
