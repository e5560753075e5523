"""Commands on whole stores: ``sync`` (exchange records once), ``replicate`` (exchange
them every few seconds until stopped) and ``migrate`` (create or upgrade a schema).

``sync`` and ``replicate`` only touch stores that exist already, and refuse to pair a
store with itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from rich.console import Console
from rich.markup import escape

from sourcery._apps.cli.common import (
    as_url,
    existing_stores,
    flush,
    label,
    one_line,
    run,
    seconds,
    stop_signals,
)
from sourcery._core.config import redact, store_url
from sourcery._core.errors import ConfigurationError, StoreError
from sourcery._engine.replication import SyncReport, pull, sync
from sourcery._stores import Store, open_store, stored_version

__all__ = ["add_parsers"]

log = logging.getLogger(__name__)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sync_ = commands.add_parser(
        "sync", help="exchange records between two stores until each holds what the other did"
    )
    sync_.add_argument("a", metavar="A", help="a store URL or a sqlite file path")
    sync_.add_argument("b", metavar="B", help="another store URL or sqlite file path")
    sync_.set_defaults(run=_sync)

    replicate = commands.add_parser(
        "replicate", help="keep two stores in sync until interrupted (Ctrl-C or SIGTERM)"
    )
    replicate.add_argument("a", metavar="A", help="a store URL or a sqlite file path")
    replicate.add_argument("b", metavar="B", help="another store URL or sqlite file path")
    replicate.add_argument(
        "--interval",
        type=seconds,
        default=1.0,
        metavar="S",
        help="seconds between rounds (default: 1)",
    )
    replicate.set_defaults(run=_replicate)

    migrate = commands.add_parser("migrate", help="create or upgrade a store's schema")
    migrate.add_argument(
        "store",
        metavar="URL",
        nargs="?",
        help="a store URL or sqlite path (default: $SOURCERY_STORE)",
    )
    migrate.set_defaults(run=_migrate)


# -- sync --------------------------------------------------------------------------------


def _sync(args: argparse.Namespace, out: Console, err: Console) -> int:
    url_a, url_b = existing_stores(args.a, args.b)
    report = run(_synced(url_a, url_b))
    a, b = escape(label(args.a)), escape(label(args.b))
    out.print(f"{a} -> {b}: {report.a_to_b:,} records")
    out.print(f"{b} -> {a}: {report.b_to_a:,} records")
    out.print("in sync: each store holds every record the other held")
    return 0


@contextlib.asynccontextmanager
async def _two_stores(url_a: str, url_b: str) -> AsyncIterator[tuple[Store, Store]]:
    async with contextlib.AsyncExitStack() as stack:
        a = await open_store(url_a)
        stack.push_async_callback(a.aclose)
        b = await open_store(url_b)
        stack.push_async_callback(b.aclose)
        if await a.identity() == await b.identity():
            raise ConfigurationError("both stores are the same store: nothing to exchange")
        yield a, b


async def _synced(url_a: str, url_b: str) -> SyncReport:
    log.info("syncing %s and %s", redact(url_a), redact(url_b))
    async with _two_stores(url_a, url_b) as (a, b):
        return await sync(a, b)


# -- replicate ---------------------------------------------------------------------------


def _replicate(args: argparse.Namespace, out: Console, err: Console) -> int:
    url_a, url_b = existing_stores(args.a, args.b)
    names = (label(args.a), label(args.b))
    return run(_replicating(url_a, url_b, names, args.interval, out))


async def _replicating(
    url_a: str, url_b: str, names: tuple[str, str], interval: float, out: Console
) -> int:
    """Sync every ``interval`` seconds until SIGINT or SIGTERM; print rounds that copied."""
    stop = asyncio.Event()
    a_name, b_name = (escape(n) for n in names)
    rounds = copied = failures = 0
    with stop_signals(stop.set):
        async with _two_stores(url_a, url_b) as (a, b):
            out.print(
                f"replicating {a_name} <-> {b_name} every {interval:g} s; Ctrl-C or SIGTERM stops"
            )
            flush(out)
            while not stop.is_set():
                try:
                    a_to_b = await _copy(a, b, stop)
                    b_to_a = await _copy(b, a, stop)
                except StoreError as exc:  # a store went away: try again next round
                    failures += 1
                    log.warning("replication round failed, retrying: %s", one_line(exc))
                else:
                    rounds += 1
                    copied += a_to_b + b_to_a
                    if a_to_b or b_to_a:
                        now = datetime.now().strftime("%H:%M:%S")
                        out.print(
                            f"{now}  {a_name} -> {b_name}: {a_to_b:,} records, "
                            f"{b_name} -> {a_name}: {b_to_a:,} records"
                        )
                        flush(out)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    failed = f", {failures:,} failed" if failures else ""
    out.print(f"stopped after {rounds:,} rounds{failed}; {copied:,} records copied")
    return 0


async def _copy(source: Store, destination: Store, stop: asyncio.Event) -> int:
    """Pull chunk by chunk until caught up, or until asked to stop (between chunks: each
    chunk commits with its checkpoint, so stopping anywhere loses nothing)."""
    total = 0
    while not stop.is_set() and (copied := await pull(source, destination)):
        total += copied
    return total


# -- migrate -----------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, out: Console, err: Console) -> int:
    url = as_url(store_url(args.store))
    before = run(stored_version(url))
    after = run(_migrated(url))
    if before is None:
        note = "created"
    elif before == after:
        note = "up to date"
    else:
        note = f"migrated from version {before}"
    out.print(f"{escape(redact(url))}: schema version {after} ({note})")
    return 0


async def _migrated(url: str) -> int:
    store = await open_store(url)
    try:
        return await store.schema_version()
    finally:
        await store.aclose()
