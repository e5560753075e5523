"""The ``sourcery`` command: ``demo``, ``inspect`` and ``migrate``.

A thin layer: it parses arguments, sets up logging (the only place that does), calls the
library and prints what it returns with rich. Exit codes: 0 ok, 1 error, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
from rich import box
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .clock import VectorClock
from .config import parse_sqlite_url, redact, store_url
from .demo import DEFAULT_SNAPSHOT_EVERY, DemoResult, run_demo
from .errors import ConfigurationError, SourceryError, StoreError
from .ids import format_id, id_from_bytes
from .records import ActorRef, EventRecord, SnapshotRecord
from .stores import Store, open_store

__all__ = ["main"]

DEMO_DB = "sourcery-demo.db"
ACTORS_LISTED = 50

log = logging.getLogger(__name__)

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "demo" and args.commands < args.accounts:
            parser.error(
                f"--commands ({args.commands}) must be at least --accounts ({args.accounts}):"
                " every account is opened first"
            )
    except SystemExit as exc:  # --help, or a usage error (argparse has printed it)
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    out = _console(stderr=False)
    err = _console(stderr=True)
    logger = logging.getLogger("sourcery")
    level = logger.level
    handler = _logging(logger, err, args.verbose)
    try:
        result: int = args.run(args, out, err)
        return result
    except (SourceryError, OSError) as exc:
        err.print(f"[red]error:[/red] {escape(_one_line(exc))}", soft_wrap=True)
        log.debug("details", exc_info=exc)
        return 1
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        return 130
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- set-up ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sourcery",
        description="Event-sourced actors that stay available under partitions.",
    )
    parser.add_argument("--version", action="version", version=f"sourcery {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser("demo", help="run the bank-account workload and audit the result")
    demo.add_argument(
        "--store",
        metavar="URL",
        help=f"store URL (default: a fresh sqlite file {DEMO_DB} in this directory)",
    )
    demo.add_argument("--accounts", type=_positive, default=1000, metavar="N")
    demo.add_argument(
        "--commands",
        type=_positive,
        default=20_000,
        metavar="N",
        help="commands in all, counting one Open per account (default: 20000)",
    )
    demo.add_argument("--concurrency", type=_positive, default=200, metavar="N")
    demo.add_argument(
        "--snapshot-every",
        type=_positive,
        default=DEFAULT_SNAPSHOT_EVERY,
        metavar="N",
        help=f"events between snapshots of an account (default: {DEFAULT_SNAPSHOT_EVERY})",
    )
    demo.add_argument("--seed", type=int, help="seed of the random workload")
    demo.set_defaults(run=_demo)

    inspect = commands.add_parser(
        "inspect", help="show an actor's heads, snapshots and loose events, or list actors"
    )
    inspect.add_argument("store", metavar="STORE", help="a store URL or a sqlite file path")
    inspect.add_argument(
        "actor", metavar="TYPE/ID", nargs="?", help="the actor (default: list actors)"
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(run=_inspect)

    migrate = commands.add_parser("migrate", help="create or upgrade a store's schema")
    migrate.add_argument(
        "store",
        metavar="URL",
        nargs="?",
        help="a store URL or sqlite path (default: $SOURCERY_STORE)",
    )
    migrate.set_defaults(run=_migrate)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # pipes and files get wider tables than rich's 80 columns
    return console


def _logging(logger: logging.Logger, console: Console, verbose: int) -> logging.Handler:
    """Send the library's logs to stderr through rich; -v shows info, -vv debug.

    Only for the duration of ``main``: it is undone on the way out, so that calling
    ``main`` in-process leaves logging as it found it.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=console, show_path=verbose > 1, rich_tracebacks=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.setLevel(level)
    logger.addHandler(handler)
    return handler


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# -- demo --------------------------------------------------------------------------------


def _demo(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.store:
        url = _as_url(args.store)
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(DEMO_DB + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{DEMO_DB}"
        log.info("recreated %s", DEMO_DB)
    out.print(
        f"Sourcery demo: {args.accounts} accounts, {args.commands} commands, "
        f"{args.concurrency} at a time, on [bold]{escape(redact(url))}[/bold]"
    )
    with Progress(
        TextColumn("commands"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        disable=not out.is_terminal,  # a bar means nothing in a pipe or a file
    ) as bar:
        task = bar.add_task("commands", total=args.commands)

        def advance(done: int) -> None:
            bar.update(task, completed=done)

        result = _run(
            run_demo(
                url,
                n_accounts=args.accounts,
                n_commands=args.commands,
                concurrency=args.concurrency,
                snapshot_every=args.snapshot_every,
                seed=args.seed,
                progress=advance,
            )
        )
    _print_demo(out, result)
    if result.conserved:
        out.print("[green]money conserved: yes[/green]")
    else:
        out.print(
            f"[red]money conserved: NO[/red] (money in {result.money_in:,}, "
            f"sum of balances {result.balances:,})"
        )
    if result.events != result.events_stored:
        out.print(
            f"[red]events lost or duplicated:[/red] {result.events:,} written, "
            f"{result.events_stored:,} read back"
        )
    return 0 if result.ok else 1


def _print_demo(out: Console, r: DemoResult) -> None:
    table = Table(title="Sourcery demo", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("accounts", f"{r.accounts:,}"),
        ("commands accepted", f"{r.accepted:,}"),
        ("commands rejected (insufficient funds)", f"{r.rejected:,}"),
        ("events written", f"{r.events:,}"),
        ("events read back", f"{r.events_stored:,}"),
        ("snapshots taken", f"{r.snapshots:,}"),
        ("transactions", f"{r.transactions:,}"),
        ("average batch (commits per transaction)", f"{r.average_batch:,.1f}"),
        ("time", f"{r.seconds:,.2f} s"),
        ("commands/s", f"{r.commands_per_second:,.0f}"),
        ("deposited", f"{r.deposited:,}"),
        ("withdrawn", f"{r.withdrawn:,}"),
        ("money in (deposited - withdrawn)", f"{r.money_in:,}"),
        ("sum of balances after reopening", f"{r.balances:,}"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)


# -- inspect -----------------------------------------------------------------------------


def _inspect(args: argparse.Namespace, out: Console, err: Console) -> int:
    url = _existing_store(args.store)
    actor = ActorRef.parse(args.actor) if args.actor else None
    report = _run(_inspect_store(url, actor))
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif actor is None:
        _print_actors(out, report)
    else:
        _print_actor(out, report)
    return 0


async def _inspect_store(url: str, actor: ActorRef | None) -> dict[str, Any]:
    log.info("inspecting %s", redact(url))
    store = await open_store(url)
    try:
        if actor is None:
            refs = await store.actors(limit=ACTORS_LISTED + 1)
            return {
                "store": redact(url),
                "actors": [str(ref) for ref in refs[:ACTORS_LISTED]],
                "more": len(refs) > ACTORS_LISTED,
            }
        return await _actor_report(store, url, actor)
    finally:
        await store.aclose()


async def _actor_report(store: Store, url: str, actor: ActorRef) -> dict[str, Any]:
    heads = await store.heads(actor)
    frontier = await store.frontier(actor)
    snapshots = await store.snapshots(actor)
    packs = [await store.pack(actor, s.clock) for s in snapshots]
    # The runtime resolves several heads into one clock covering them all; loose events
    # are those that clock does not cover.
    covered = VectorClock.merge_all(h.clock for h in heads)
    loose = await store.loose_events(actor, covered)
    return {
        "store": redact(url),
        "actor": str(actor),
        "heads": [_head(h) for h in heads],
        "siblings": len(heads) > 1,
        "frontier": frontier.as_dict(),
        "snapshots": [
            {
                "clock": s.clock.as_dict(),
                "parents": [p.as_dict() for p in s.parents],
                "timestamp": _iso(s.timestamp),
                "state_bytes": len(s.state),
                "pack_events": None if pack is None else len(pack.events),
            }
            for s, pack in zip(snapshots, packs, strict=True)
        ],
        "loose_events": [_event(e) for e in sorted(loose, key=lambda e: e.order)],
    }


def _head(snapshot: SnapshotRecord) -> dict[str, Any]:
    return {
        "clock": snapshot.clock.as_dict(),
        "timestamp": _iso(snapshot.timestamp),
        "state": _decoded(snapshot.state),
    }


def _event(e: EventRecord) -> dict[str, Any]:
    return {
        "dot": [e.writer, e.n],
        "id": format_id(id_from_bytes(e.id)),
        "timestamp": _iso(e.timestamp),
        "initiated_by": e.initiated_by,
        "type": e.type,
        "version": e.version,
        "payload": _decoded(e.payload),
    }


def _iso(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return when.replace("+00:00", "Z")


def _decoded(data: bytes) -> Any:
    """MessagePack bytes as plain JSON values, without the user's types."""
    try:
        return _plain(msgspec.msgpack.decode(data))
    except msgspec.DecodeError:
        return f"<{len(data)} undecodable bytes>"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _print_actors(out: Console, report: dict[str, Any]) -> None:
    actors: list[str] = report["actors"]
    if not actors:
        out.print(f"{escape(report['store'])} holds no actors")
        return
    out.print(f"actors in {escape(report['store'])}:")
    for name in actors:
        out.print(f"  {escape(name)}")
    if report["more"]:
        out.print(f"(only the first {ACTORS_LISTED} are shown)")


def _print_actor(out: Console, r: dict[str, Any]) -> None:
    heads: list[dict[str, Any]] = r["heads"]
    out.print(f"[bold]{escape(r['actor'])}[/bold] in {escape(r['store'])}")
    siblings = f"yes, {len(heads)} heads" if r["siblings"] else "no"
    out.print(f"siblings: {siblings}")
    out.print(f"frontier: {escape(_clock(r['frontier']))}")

    table = _table(f"heads ({len(heads)})", "clock", "timestamp", "state")
    for h in heads:
        table.add_row(escape(_clock(h["clock"])), h["timestamp"], escape(_json(h["state"])))
    out.print(table)

    snapshots: list[dict[str, Any]] = r["snapshots"]
    table = _table(
        f"snapshots ({len(snapshots)})",
        "#",
        "clock",
        "parents",
        "timestamp",
        "state bytes",
        "pack events",
    )
    for i, s in enumerate(snapshots, 1):
        parents = ", ".join(_clock(p) for p in s["parents"]) or "(root)"
        pack = "missing" if s["pack_events"] is None else str(s["pack_events"])
        table.add_row(
            str(i),
            escape(_clock(s["clock"])),
            escape(parents),
            s["timestamp"],
            str(s["state_bytes"]),
            pack,
        )
    out.print(table)

    events: list[dict[str, Any]] = r["loose_events"]
    table = _table(
        f"loose events ({len(events)})",
        "dot",
        "id",
        "timestamp",
        "initiated by",
        "type",
        "v",
        "payload",
    )
    for e in events:
        writer, n = e["dot"]
        table.add_row(
            escape(f"{writer}:{n}"),
            e["id"],
            e["timestamp"],
            escape(e["initiated_by"]),
            escape(e["type"]),
            str(e["version"]),
            escape(_json(e["payload"])),
        )
    out.print(table)


def _table(title: str, *columns: str) -> Table:
    """A compact table whose cells fold rather than hide what does not fit."""
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _clock(entries: dict[str, int]) -> str:
    return "{" + ", ".join(f"{w}: {n}" for w, n in entries.items()) + "}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- migrate -----------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, out: Console, err: Console) -> int:
    url = _as_url(store_url(args.store))
    before = _sqlite_version(url)
    after = _run(_migrated(url))
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
        version = getattr(store, "schema_version", None)
        if isinstance(version, int):
            return version
        if urlsplit(url).scheme == "sqlite":
            from .stores.sqlite import SCHEMA_VERSION

            return SCHEMA_VERSION
        raise StoreError(f"cannot tell the schema version of {redact(url)}")
    finally:
        await store.aclose()


# -- store locations ---------------------------------------------------------------------


def _as_url(text: str) -> str:
    """A URL as given; anything without a scheme is a sqlite file path."""
    if "://" in text:
        return text
    if "?" in text or "#" in text:
        raise ConfigurationError(f"a file path with '?' or '#' cannot be a sqlite URL: {text!r}")
    return "sqlite:///" + str(Path(text).resolve())


def _sqlite_path(url: str) -> Path | None:
    """The file a sqlite URL names, or None for memory and other schemes."""
    if urlsplit(url).scheme != "sqlite":
        return None
    settings = parse_sqlite_url(url)
    return None if settings.memory else Path(settings.path)


def _sqlite_version(url: str) -> int | None:
    """The schema version of an existing sqlite store, read without writing; None if absent."""
    path = _sqlite_path(url)
    if path is None or not path.exists():
        return None
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            version: int = con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    return version


def _existing_store(text: str) -> str:
    """The URL of a store that must exist already: inspecting never creates one."""
    url = _as_url(text)
    path = _sqlite_path(url)
    if path is not None:
        if not path.is_file():
            raise ConfigurationError(f"no such store file: {path}")
        if _sqlite_version(url) == 0:
            raise ConfigurationError(f"{path} is not a sourcery store (schema version 0)")
    return url
