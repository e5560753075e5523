"""Where the service-backed tests find their servers, and whether they answer."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

POSTGRES = os.environ.get("SOURCERY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The server the PostgreSQL tests use; every test gets a schema of its own there."""
TEST_SCHEMA_PREFIX = "sourcery_test_"


def postgres_down() -> str | None:
    parts = urlsplit(POSTGRES)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return None
    except OSError as exc:
        where = f"{parts.hostname}:{parts.port}"
        return f"no PostgreSQL at {where} ({exc}); run scripts/ensure-services.sh"
