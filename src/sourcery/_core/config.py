"""One URL per service, parsed into typed settings with loud errors.

URLs come from arguments or ``SOURCERY_*`` environment variables; a parameter this code does
not know is an error, never silently ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from sourcery._core.errors import ConfigurationError

__all__ = [
    "AMQP_DRIVER_PARAMS",
    "DEFAULT_STORE_URL",
    "AmqpSettings",
    "SqliteSettings",
    "broker_url",
    "cache_url",
    "parse_amqp_url",
    "parse_sqlite_url",
    "redact",
    "store_url",
    "unique_params",
]

DEFAULT_STORE_URL = "sqlite:///sourcery.db"


def store_url(url: str | None = None) -> str:
    """The store URL: the argument, else ``SOURCERY_STORE``, else a local SQLite file."""
    if url:
        return url
    return os.environ.get("SOURCERY_STORE") or DEFAULT_STORE_URL


def cache_url(url: str | None = None) -> str | None:
    """The cache URL: the argument, else ``SOURCERY_CACHE``, else none (no cache)."""
    if url:
        return url
    return os.environ.get("SOURCERY_CACHE") or None


def broker_url(url: str | None = None) -> str | None:
    """The broker URL: the argument, else ``SOURCERY_BROKER``, else none (in-process)."""
    if url:
        return url
    return os.environ.get("SOURCERY_BROKER") or None


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def unique_params(url: str, query: str) -> list[tuple[str, str]]:
    """A URL's query parameters; one given twice is an error, not a silent last-one-wins."""
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ConfigurationError(
            f"URL parameter(s) {twice} given more than once in {redact(url)!r}"
        )
    return pairs


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    path: str
    """A file path, or ``:memory:``."""
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """FULL survives power loss; NORMAL survives a killed process but not a power cut."""
    busy_timeout_ms: int = 10_000

    @property
    def memory(self) -> bool:
        return self.path == ":memory:"


def parse_sqlite_url(url: str) -> SqliteSettings:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://:memory:``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    if parts.netloc == ":memory:" or (not parts.netloc and parts.path in ("/:memory:", ":memory:")):
        path = ":memory:"
    elif parts.netloc:
        raise ConfigurationError(
            f"sqlite URL {url!r} has a host; use sqlite:///relative.db or sqlite:////abs.db"
        )
    else:
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigurationError(f"sqlite URL {url!r} names no file")
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    busy = 10_000
    for key, value in unique_params(url, parts.query):
        if key == "synchronous":
            upper = value.upper()
            if upper == "FULL":
                synchronous = "FULL"
            elif upper == "NORMAL":
                synchronous = "NORMAL"
            else:
                raise ConfigurationError(f"synchronous must be full or normal, got {value!r}")
        elif key == "busy_timeout_ms":
            try:
                busy = int(value)
            except ValueError:
                raise ConfigurationError(f"busy_timeout_ms must be an int, got {value!r}") from None
            if busy < 0:
                raise ConfigurationError("busy_timeout_ms must not be negative")
        else:
            raise ConfigurationError(f"unknown sqlite URL parameter {key!r} in {url!r}")
    return SqliteSettings(path=path, synchronous=synchronous, busy_timeout_ms=busy)


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """Where and how Sourcery uses a RabbitMQ broker.

    Every name starts with ``prefix``, so that several deployments (or test runs) can share
    one broker without seeing each other's messages.
    """

    url: str
    """The connection URL with Sourcery's own parameters removed."""
    prefix: str = "sourcery"
    queues: int = 16
    """Command queues; fixed for a deployment, since actors are hashed onto them."""
    attempts: int = 5
    """Deliveries of a failing command before it goes to the dead-letter queue."""
    prefetch: int = 256
    """Unacknowledged commands a worker holds per queue."""
    single_active: bool = True
    """One active consumer per command queue: what keeps one actor on one worker at a time.
    ``single_active=0`` breaks that isolation on purpose (tests, experiments): the queues are
    declared without it, so two workers can write one actor at once and siblings appear."""
    share: bool = True
    """Workers share the command queues (``share=1``, the default): each consumes only the
    queues whose lease it holds, and the leases are balanced between the live workers.
    ``share=0``: every worker consumes every queue and the broker's single active consumer
    picks one (the first worker to start is active on all of them, the others stand by).
    Needs ``single_active`` (``single_active=0`` turns it off)."""
    share_interval: float = 1.0
    """Seconds between two presence messages of a sharing worker; a worker not heard of for
    3.5 of them is taken for gone, and its queues are claimed once the broker freed them."""

    def command_queue(self, index: int) -> str:
        return f"{self.prefix}.commands.{index}"

    def lease_queue(self, index: int) -> str:
        """The exclusive queue whose owner alone consumes command queue ``index``."""
        return f"{self.prefix}.lease.{index}"

    @property
    def workers_exchange(self) -> str:
        """Where sharing workers announce themselves and the leases they hold."""
        return f"{self.prefix}.workers"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"


_AMQP_INTS = {"queues": (1, 1024), "attempts": (1, 1000), "prefetch": (1, 65535)}
_AMQP_FLAGS = {"0": False, "1": True, "false": False, "true": True}
_SHARE_INTERVAL = (0.05, 60.0)
AMQP_DRIVER_PARAMS = frozenset(
    {
        "heartbeat",
        "timeout",
        "name",
        "auth",
        "cafile",
        "capath",
        "cadata",
        "keyfile",
        "certfile",
        "no_verify_ssl",
        "interleave",
        "happy_eyeballs_delay",
        "reconnect_interval",
        "fail_fast",
    }
)
"""The AMQP client's own URL parameters (aiormq, aio-pika), passed on to it untouched."""


def parse_amqp_url(url: str) -> AmqpSettings:
    """``amqp://user:pass@host:5672/vhost?prefix=…&queues=…&attempts=…&prefetch=…``
    (and ``single_active=``, ``share=``, ``share_interval=``).

    The AMQP client's own parameters (:data:`AMQP_DRIVER_PARAMS`: ``heartbeat``,
    ``timeout``, ``name``, the TLS files …) are passed to it untouched; any other is an
    error, as for every URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError(f"not an amqp URL: {redact(url)!r}")
    prefix = "sourcery"
    numbers = {"queues": 16, "attempts": 5, "prefetch": 256}
    single_active = True
    share: bool | None = None
    share_interval = 1.0
    rest: list[tuple[str, str]] = []
    for key, value in unique_params(url, parts.query):
        if key == "prefix":
            if not value or not all(c.isalnum() or c in "-_." for c in value):
                raise ConfigurationError(
                    f"prefix must be letters, digits, '-', '_' or '.', got {value!r}"
                )
            prefix = value
        elif key == "single_active":
            if value not in ("0", "1", "true", "false"):
                raise ConfigurationError(f"single_active must be 0 or 1, got {value!r}")
            single_active = value in ("1", "true")
        elif key == "share":
            if value not in _AMQP_FLAGS:
                raise ConfigurationError(f"share must be 0 or 1, got {value!r}")
            share = _AMQP_FLAGS[value]
        elif key == "share_interval":
            low_s, high_s = _SHARE_INTERVAL
            try:
                share_interval = float(value)
            except ValueError:
                raise ConfigurationError(
                    f"share_interval must be a number of seconds, got {value!r}"
                ) from None
            if not low_s <= share_interval <= high_s:
                raise ConfigurationError(
                    f"share_interval must be in {low_s:g}..{high_s:g} s, got {value!r}"
                )
        elif key in _AMQP_INTS:
            low, high = _AMQP_INTS[key]
            try:
                number = int(value)
            except ValueError:
                raise ConfigurationError(f"{key} must be an int, got {value!r}") from None
            if not low <= number <= high:
                raise ConfigurationError(f"{key} must be in {low}..{high}, got {number}")
            numbers[key] = number
        elif key in AMQP_DRIVER_PARAMS:
            rest.append((key, value))
        else:
            ours = ["prefix", "single_active", "share", "share_interval", *_AMQP_INTS]
            raise ConfigurationError(
                f"unknown amqp URL parameter {key!r}: Sourcery's are {', '.join(ours)};"
                f" the client's own are {', '.join(sorted(AMQP_DRIVER_PARAMS))}"
            )
    if share and not single_active:
        raise ConfigurationError("share=1 needs single_active=1: the leases rely on it")
    query = "&".join(f"{k}={v}" for k, v in rest)
    plain = parts._replace(query=query).geturl()
    return AmqpSettings(
        url=plain,
        prefix=prefix,
        queues=numbers["queues"],
        attempts=numbers["attempts"],
        prefetch=numbers["prefetch"],
        single_active=single_active,
        share=single_active if share is None else share,
        share_interval=share_interval,
    )
