"""Where the service-backed tests find their servers, and whether they answer."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import uuid
from urllib.parse import urlsplit

POSTGRES = os.environ.get("SOURCERY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The server the PostgreSQL tests use; every test gets a schema of its own there."""
TEST_SCHEMA_PREFIX = f"sourcery_test_{uuid.uuid4().hex[:6]}_"
"""Schemas of this test session: dropped at its end, and only those (runs may overlap)."""


AMQP = os.environ.get("SOURCERY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
"""The broker the RabbitMQ tests use; every test gets names under a prefix of its own."""
TEST_AMQP_PREFIX = f"sourcery-test-{uuid.uuid4().hex[:6]}"
"""Queues and exchanges of this test session start with this; deleted at its end."""
_prefixes = itertools.count(1)


def amqp_prefix() -> str:
    """A fresh name prefix for one test's queues and exchanges."""
    return f"{TEST_AMQP_PREFIX}-{next(_prefixes)}"


USED_PREFIXES: list[tuple[str, int]] = []
"""Prefixes (and queue counts) handed out since the last cleanup."""


def amqp_url(prefix: str | None = None, **params: object) -> str:
    """The test broker's URL with Sourcery's parameters (a fresh ``prefix`` by default).

    Tests use 2 command queues unless they ask for more: every quorum queue is a Raft
    cluster of its own, and hundreds of them overload a 2-core broker.
    """
    query = {"prefix": prefix or amqp_prefix(), "queues": 2, **params}
    USED_PREFIXES.append((str(query["prefix"]), int(str(query["queues"]))))
    return AMQP + "?" + "&".join(f"{k}={v}" for k, v in query.items())


async def delete_used_amqp_names() -> None:
    """Delete the queues and exchanges of the prefixes handed out since the last call."""
    import aio_pika

    used = list(USED_PREFIXES)
    USED_PREFIXES.clear()
    if not used:
        return
    connection = await aio_pika.connect(AMQP, timeout=10)
    async with connection:
        for prefix, queues in used:
            channel = await connection.channel()
            for name in [f"{prefix}.commands.{i}" for i in range(queues)] + [f"{prefix}.dead"]:
                await channel.queue_delete(name)
            for name in (f"{prefix}.commands", f"{prefix}.dead", f"{prefix}.events"):
                await channel.exchange_delete(name)
            await channel.close()


def memory_queue_url(**params: object) -> str:
    """A fresh in-process command queue; keyword arguments become URL parameters."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"memory://test-{uuid.uuid4().hex}" + (f"?{query}" if query else "")


def amqp_down() -> str | None:
    parts = urlsplit(AMQP)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return None
    except OSError as exc:
        where = f"{parts.hostname}:{parts.port}"
        return f"no RabbitMQ at {where} ({exc}); run scripts/ensure-services.sh"


async def delete_test_amqp_names() -> None:
    """Delete this session's queues and exchanges (quorum queues outlive connections)."""
    import aio_pika

    def listed(what: str) -> list[str]:
        try:
            out = subprocess.run(
                ["rabbitmqctl", "-q", f"list_{what}", "name"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [n for n in out.split() if n.startswith(TEST_AMQP_PREFIX)]

    queues, exchanges = listed("queues"), listed("exchanges")
    if not queues and not exchanges:
        return
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)


REDIS = os.environ.get("SOURCERY_TEST_REDIS", "redis://127.0.0.1:6379/0")
"""The server the Redis tests use; every test gets a key prefix of its own there."""


def redis_down() -> str | None:
    parts = urlsplit(REDIS)
    where = f"{parts.hostname}:{parts.port or 6379}"
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2) as s:
            s.sendall(b"PING\r\n")
            s.settimeout(2)
            answer = s.recv(64)
    except OSError as exc:
        return f"no Redis answers at {where} ({exc}); run scripts/ensure-services.sh"
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        return f"what answers at {where} is not Redis: {answer!r}"
    return None


SKIP_SERVICES = os.environ.get("SOURCERY_TEST_SKIP_SERVICES", "") == "1"
"""A developer's explicit opt-out: tests needing a missing service are skipped."""
REQUIRE_SERVICES = not SKIP_SERVICES and (
    os.environ.get("CI", "").lower() == "true"
    or os.environ.get("SOURCERY_TEST_REQUIRE_SERVICES", "") == "1"
)
"""Under CI and in ``make test``, a missing service fails the run instead of skipping."""
SERVICE_MISSING = (
    "run scripts/ensure-services.sh",
    "what answers at",
    "RabbitMQ is not installed",
    "redis-server is not installed",
)
"""Words that a skip for a missing service carries."""


def services_down() -> list[str]:
    """Why each service the suite needs does not answer (empty when all do)."""
    return [reason for reason in (postgres_down(), redis_down(), amqp_down()) if reason]


def is_service_skip(reason: str) -> bool:
    """Whether a skip's reason is a missing service."""
    return any(words in reason for words in SERVICE_MISSING)


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
