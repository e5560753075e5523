"""The ``sourcery`` command: ``demo``, ``inspect``, ``sync``, ``replicate``, ``migrate``,
``worker`` and ``send``.

A thin layer: it parses arguments, sets up logging (the only place that does), calls the
library and prints what it returns with rich. Exit codes: 0 ok, 1 error, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
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

from sourcery import __version__
from sourcery._apps.demo import (
    DEFAULT_SNAPSHOT_EVERY,
    DemoResult,
    ReplicatedDemoResult,
    run_demo,
    run_replicated_demo,
)
from sourcery._apps.history_svg import MERGE_WRITER_PREFIX, render
from sourcery._core.actor import ActorType
from sourcery._core.clock import VectorClock
from sourcery._core.config import parse_sqlite_url, redact, store_url
from sourcery._core.errors import (
    CommandFailed,
    ConfigurationError,
    DecodingError,
    SourceryError,
    StoreError,
)
from sourcery._core.ids import format_id, id_from_bytes
from sourcery._core.records import ActorRef, EventRecord, PackRecord, SnapshotRecord
from sourcery._engine.replication import SyncReport, pull, sync
from sourcery._messaging.wire import Reply
from sourcery._stores import Store, open_store

__all__ = ["main"]

DEMO_DB = "sourcery-demo.db"
DEMO_REPLICAS = ("sourcery-demo-a.db", "sourcery-demo-b.db")
DEMO_SVG = "sourcery-demo-history.svg"
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
        if args.command == "inspect" and args.svg and not args.actor:
            parser.error("--svg draws one actor's history: give TYPE/ID")
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

    demo = commands.add_parser(
        "demo",
        help="partition two replicas of a bank under load, heal them, and audit the result",
        description=(
            "Two replicas of a bank (fresh sqlite files "
            f"{DEMO_REPLICAS[0]} and {DEMO_REPLICAS[1]} in this directory): accounts opened"
            " on A and synced to B; then a partition with deposits and withdrawals on both"
            " sides; then the heal. Checks that money is conserved and that the replicas"
            f" agree, and draws the most diverged account's history to {DEMO_SVG}."
        ),
    )
    demo.add_argument(
        "--store",
        metavar="URL",
        help="run the single-replica workload on this (empty) store instead",
    )
    demo.add_argument("--accounts", type=_positive, default=1000, metavar="N")
    demo.add_argument(
        "--commands",
        type=_positive,
        default=20_000,
        metavar="N",
        help="commands in all, counting one Open per account (default: 20000)",
    )
    demo.add_argument(
        "--concurrency",
        type=_positive,
        default=200,
        metavar="N",
        help="commands under way at once, on each replica (default: 200)",
    )
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
    inspect.add_argument(
        "--svg",
        metavar="PATH",
        help="also draw the actor's history (snapshots and parent links) to an SVG file",
    )
    inspect.set_defaults(run=_inspect)

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
        type=_seconds,
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
    _worker_parsers(commands)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
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
        return _single_demo(args, out, _as_url(args.store))
    urls = []
    for name in DEMO_REPLICAS:
        for suffix in ("", "-wal", "-shm"):
            Path(name + suffix).unlink(missing_ok=True)
    for name in DEMO_REPLICAS:
        urls.append(f"sqlite:///{name}")
        log.info("recreated %s", name)
    out.print(
        f"Sourcery demo: a bank of {args.accounts:,} accounts on two replicas, "
        f"{args.commands:,} commands, {args.concurrency:,} at a time on each replica"
    )
    for side, name in zip("AB", DEMO_REPLICAS, strict=True):
        out.print(f"  replica {side}: [bold]{escape(name)}[/bold]")
    with _progress(out, args.commands) as advance:
        result = _run(
            run_replicated_demo(
                urls[0],
                urls[1],
                n_accounts=args.accounts,
                n_commands=args.commands,
                concurrency=args.concurrency,
                snapshot_every=args.snapshot_every,
                seed=args.seed,
                progress=advance,
            )
        )
    svg: str | None = None
    if result.most_diverged is not None:
        Path(DEMO_SVG).write_text(result.history_svg, encoding="utf-8")
        svg = DEMO_SVG
    _print_replicated_demo(out, result, svg)
    return 0 if result.ok else 1


@contextlib.contextmanager
def _progress(out: Console, total: int) -> Iterator[Callable[[int], None]]:
    with Progress(
        TextColumn("commands"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,  # a bar means nothing in a pipe or a file
    ) as bar:
        task = bar.add_task("commands", total=total)

        def advance(done: int) -> None:
            bar.update(task, completed=done)

        yield advance


def _print_replicated_demo(out: Console, r: ReplicatedDemoResult, svg: str | None) -> None:
    a, b = r.a, r.b
    out.print(
        f"phase 1  opened {r.accounts:,} accounts and deposited on A ({r.opening_commands:,} "
        f"commands); sync copied {r.opening.a_to_b:,} records A -> B"
    )
    out.print(
        f"phase 2  partition: {a.commands - r.opening_commands:,} commands on A and "
        f"{b.commands:,} on B at once, no sync; the two sides' accounts diverge"
    )
    out.print(
        f"phase 3  heal: sync copied {r.heal.a_to_b:,} records A -> B and {r.heal.b_to_a:,} "
        f"B -> A; {r.siblings:,} accounts had siblings (divergent heads)"
    )
    out.print(
        "         read every account on both replicas (resolving the siblings), "
        f"sync ({r.settle.records:,} records), read again"
    )
    table = Table(title="Sourcery demo", title_justify="left")
    table.add_column("")
    table.add_column("replica A", justify="right")
    table.add_column("replica B", justify="right")
    table.add_column("both", justify="right")

    def row(label: str, x: int, y: int, both: int | None) -> None:
        table.add_row(label, f"{x:,}", f"{y:,}", "" if both is None else f"{both:,}")

    row("commands", a.commands, b.commands, r.commands)
    row("commands accepted", a.accepted, b.accepted, r.accepted)
    row("commands rejected (insufficient funds)", a.rejected, b.rejected, r.rejected)
    row("deposited", a.deposited, b.deposited, r.deposited)
    row("withdrawn", a.withdrawn, b.withdrawn, r.withdrawn)
    row("divergences healed", a.divergences, b.divergences, r.divergences)
    row("merge snapshots written", a.resolved, b.resolved, a.resolved + b.resolved)
    row("events merged", a.events_merged, b.events_merged, a.events_merged + b.events_merged)
    row("compensations (Overdrawn events recorded)", a.overdrafts, b.overdrafts, None)
    row("snapshots stored", a.snapshots, b.snapshots, None)
    row("merge snapshots stored", a.merges, b.merges, None)
    row("sum of balances", a.balances, b.balances, None)
    out.print(table)
    out.print(
        f"money acknowledged on both sides (deposited - withdrawn): {r.money_in:,}; "
        f"time {r.seconds:,.2f} s (open {r.phase_seconds[0]:,.2f} s, partition "
        f"{r.phase_seconds[1]:,.2f} s, heal {r.phase_seconds[2]:,.2f} s)"
    )
    if r.conserved:
        out.print(
            "[green]money conserved: yes[/green] "
            f"(each replica's balances add up to {r.money_in:,})"
        )
    else:
        out.print(
            f"[red]money conserved: NO[/red] (money in {r.money_in:,}; sum of balances "
            f"{a.balances:,} on A, {b.balances:,} on B)"
        )
    if r.agree:
        out.print("[green]replicas agree: yes[/green] (every account's state and vector clock)")
    else:
        shown = ", ".join(r.disagreements[:5])
        more = f" and {len(r.disagreements) - 5:,} more" if len(r.disagreements) > 5 else ""
        out.print(
            f"[red]replicas agree: NO[/red] ({len(r.disagreements):,} accounts differ: "
            f"{escape(shown)}{more})"
        )
    if svg is not None and r.most_diverged is not None:
        merges = r.most_diverged_merges
        out.print(
            f"history of the most diverged account, {escape(str(r.most_diverged))} "
            f"({r.most_diverged_snapshots:,} snapshots, {merges:,} merge"
            f"{'' if merges == 1 else 's'}): [bold]{escape(svg)}[/bold]"
        )


def _single_demo(args: argparse.Namespace, out: Console, url: str) -> int:
    out.print(
        f"Sourcery demo: {args.accounts} accounts, {args.commands} commands, "
        f"{args.concurrency} at a time, on [bold]{escape(redact(url))}[/bold]"
    )
    with _progress(out, args.commands) as advance:
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
    report, svg = _run(_inspect_store(url, actor, svg=bool(args.svg)))
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif actor is None:
        _print_actors(out, report)
    else:
        _print_actor(out, report)
    if svg is not None:
        Path(args.svg).write_text(svg, encoding="utf-8")
        (err if args.json else out).print(f"history drawn to {escape(args.svg)}")
    return 0


async def _inspect_store(
    url: str, actor: ActorRef | None, *, svg: bool = False
) -> tuple[dict[str, Any], str | None]:
    log.info("inspecting %s", redact(url))
    store = await open_store(url)
    try:
        if actor is None:
            refs = await store.actors(limit=ACTORS_LISTED + 1)
            listing = {
                "store": redact(url),
                "actors": [str(ref) for ref in refs[:ACTORS_LISTED]],
                "more": len(refs) > ACTORS_LISTED,
            }
            return listing, None
        return await _actor_report(store, url, actor, svg=svg)
    finally:
        await store.aclose()


async def _actor_report(
    store: Store, url: str, actor: ActorRef, *, svg: bool = False
) -> tuple[dict[str, Any], str | None]:
    heads = await store.heads(actor)
    frontier = await store.frontier(actor)
    snapshots = await store.snapshots(actor)
    packs = [await store.pack(actor, s.clock) for s in snapshots]
    # The runtime resolves several heads into one clock covering them all; loose events
    # are those that clock does not cover.
    covered = VectorClock.merge_all(h.clock for h in heads)
    loose = await store.loose_events(actor, covered)
    head_clocks = {h.clock for h in heads}
    report = {
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
                "head": s.clock in head_clocks,
                "compensations": _compensations(pack),
            }
            for s, pack in zip(snapshots, packs, strict=True)
        ],
        "loose_events": [_event(e) for e in sorted(loose, key=lambda e: e.order)],
    }
    picture = None
    if svg:
        by_clock = {s.clock: pack for s, pack in zip(snapshots, packs, strict=True)}
        picture = render(
            str(actor), snapshots, by_clock, [h.clock for h in heads], loose_events=len(loose)
        )
    return report, picture


def _compensations(pack: PackRecord | None) -> int:
    """Events a merge hook recorded in this pack (their writer ids start with ``merge-``)."""
    if pack is None:
        return 0
    return sum(1 for e in pack.events if e.writer.startswith(MERGE_WRITER_PREFIX))


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
    if r["siblings"]:
        out.print(
            f"siblings: [bold red]yes, {len(heads)} heads[/bold red] (divergent versions; "
            "the next read resolves them from their latest common ancestor)"
        )
    else:
        out.print(f"siblings: no ({len(heads)} head{'' if len(heads) == 1 else 's'})")
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
        "role",
        "timestamp",
        "state bytes",
        "pack events",
    )
    for i, s in enumerate(snapshots, 1):
        parents = ", ".join(_clock(p) for p in s["parents"]) or "(root)"
        pack = "missing" if s["pack_events"] is None else str(s["pack_events"])
        roles = []
        if s["head"]:
            roles.append("[bold]head[/bold]")
        if len(s["parents"]) > 1:
            roles.append("merge")
        if s["compensations"]:
            roles.append(f"{s['compensations']} compensating")
        table.add_row(
            str(i),
            escape(_clock(s["clock"])),
            escape(parents),
            ", ".join(roles),
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


# -- sync and replicate ------------------------------------------------------------------


def _label(text: str) -> str:
    """How a store is named in output: a path as given, a URL without its password."""
    return redact(text) if "://" in text else text


def _sync(args: argparse.Namespace, out: Console, err: Console) -> int:
    url_a, url_b = _existing_stores(args.a, args.b)
    report = _run(_synced(url_a, url_b))
    a, b = escape(_label(args.a)), escape(_label(args.b))
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


def _replicate(args: argparse.Namespace, out: Console, err: Console) -> int:
    url_a, url_b = _existing_stores(args.a, args.b)
    names = (_label(args.a), _label(args.b))
    return _run(_replicating(url_a, url_b, names, args.interval, out))


async def _replicating(
    url_a: str, url_b: str, names: tuple[str, str], interval: float, out: Console
) -> int:
    """Sync every ``interval`` seconds until SIGINT or SIGTERM; print rounds that copied."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
            continue
        handled.append(sig)
    a_name, b_name = (escape(n) for n in names)
    rounds = copied = failures = 0
    try:
        async with _two_stores(url_a, url_b) as (a, b):
            out.print(
                f"replicating {a_name} <-> {b_name} every {interval:g} s; Ctrl-C or SIGTERM stops"
            )
            _flush(out)
            while not stop.is_set():
                try:
                    a_to_b = await _copy(a, b, stop)
                    b_to_a = await _copy(b, a, stop)
                except StoreError as exc:  # a store went away: try again next round
                    failures += 1
                    log.warning("replication round failed, retrying: %s", _one_line(exc))
                else:
                    rounds += 1
                    copied += a_to_b + b_to_a
                    if a_to_b or b_to_a:
                        now = datetime.now().strftime("%H:%M:%S")
                        out.print(
                            f"{now}  {a_name} -> {b_name}: {a_to_b:,} records, "
                            f"{b_name} -> {a_name}: {b_to_a:,} records"
                        )
                        _flush(out)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
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


def _flush(out: Console) -> None:
    with contextlib.suppress(OSError, ValueError):
        out.file.flush()


# -- migrate -----------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, out: Console, err: Console) -> int:
    url = _as_url(store_url(args.store))
    before = _sqlite_version(url)
    after = _run(_migrated(url))
    if urlsplit(url).scheme != "sqlite":
        note = "ready"
    elif before is None:
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


# -- worker and send --------------------------------------------------------------------


def _worker_parsers(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="run commands from the broker on a store until interrupted (Ctrl-C or SIGTERM)",
        description=(
            "Take commands for the actor types MODULE:ATTR names from the broker's command"
            " queues and run them on the store; on SIGTERM or Ctrl-C, finish the commands"
            " under way and exit."
        ),
    )
    worker.add_argument("app", metavar="MODULE:ATTR", help="the actor type(s) to run")
    worker.add_argument(
        "--store", metavar="URL", help="default: $SOURCERY_STORE, else sqlite:///sourcery.db"
    )
    worker.add_argument("--cache", metavar="URL", help="default: $SOURCERY_CACHE (none)")
    worker.add_argument("--broker", metavar="URL", help="default: $SOURCERY_BROKER")
    worker.add_argument("--name", metavar="NAME", help="the worker's name in its writer id")
    worker.add_argument(
        "--events",
        metavar="URL",
        help="also publish committed events on this bus, e.g. the broker's URL"
        " (default: $SOURCERY_EVENTS, else none)",
    )
    worker.set_defaults(run=_worker)

    send = commands.add_parser(
        "send",
        help="send one command to an actor through the broker",
        description=(
            "Send COMMAND with the fields JSON to ACTOR (type/id), an actor type of"
            " MODULE:ATTR, e.g. sourcery send sourcery.examples.bank:accounts account/a1"
            " Deposit '{\"amount\": 5}' --wait"
        ),
    )
    send.add_argument("app", metavar="MODULE:ATTR", help="the actor type(s) to send to")
    send.add_argument("actor", metavar="TYPE/ID")
    send.add_argument("command_name", metavar="COMMAND", help="the command type's name")
    send.add_argument("fields", metavar="JSON", nargs="?", default="{}", help="default: {}")
    send.add_argument("--broker", metavar="URL", help="default: $SOURCERY_BROKER")
    send.add_argument("--wait", action="store_true", help="wait for the worker's reply")
    send.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="seconds to wait for the reply (default: 5)",
    )
    send.add_argument("--message-id", metavar="ID", help="default: a new id")
    send.set_defaults(run=_send)


def _worker(args: argparse.Namespace, out: Console, err: Console) -> int:
    from sourcery._apps.loader import load_app

    types = load_app(args.app)
    return _run(_working(args, types, out, err))


def _broker(args: argparse.Namespace) -> str:
    from sourcery._core.config import broker_url

    url = broker_url(args.broker)
    if url is None:
        raise ConfigurationError("no broker: give its URL with --broker URL or SOURCERY_BROKER")
    return url


STARTUP_RETRY_MAX = 10.0
"""Seconds, at most, between two attempts to reach the broker and the store at start."""


async def _working(
    args: argparse.Namespace, types: list[ActorType[Any, Any, Any]], out: Console, err: Console
) -> int:
    from sourcery._core.errors import BrokerUnavailable, StoreUnavailable
    from sourcery._messaging.worker import Worker

    broker = _broker(args)
    url = store_url(args.store)
    events = args.events or os.environ.get("SOURCERY_EVENTS") or None
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    opened: list[Worker] = []

    def stop() -> None:
        stopping.set()
        for worker in opened:
            worker.stop()

    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        handled.append(sig)
    try:
        # A worker started before its broker or store (a reboot, a deployment) waits for
        # them, as a service manager would expect, instead of exiting.
        pause = 0.5
        while True:
            try:
                worker = await Worker.open(
                    types,
                    store=url,
                    broker=broker,
                    cache=args.cache,
                    writer=args.name,
                    events=events,
                )
                break
            except (BrokerUnavailable, StoreUnavailable) as exc:
                if isinstance(exc, StoreUnavailable) and url.startswith("sqlite:"):
                    raise  # a local file that cannot be opened now will not open later
                err.print(f"[yellow]waiting:[/] {escape(str(exc))}; next attempt in {pause:g} s")
                _flush(err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), pause)
            if stopping.is_set():
                out.print("stopped before the broker and the store could be reached")
                _flush(out)
                return 0
            pause = min(pause * 2, STARTUP_RETRY_MAX)
        async with worker:
            opened.append(worker)
            if stopping.is_set():
                worker.stop()
            names = ", ".join(t.name for t in types)
            out.print(
                f"worker {escape(worker.runtime.writer)} running {escape(names)} on "
                f"{escape(redact(url))}, commands from {escape(redact(broker or ''))}"
                + (f", events to {escape(redact(events))}" if events else "")
            )
            _flush(out)
            await worker.run()
            s = worker.stats
            out.print(
                f"stopped: {s.applied:,} applied, {s.duplicates:,} duplicates, "
                f"{s.rejected:,} rejected, {s.retried:,} retried, {s.dead:,} dead letters"
            )
            _flush(out)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0


def _send(args: argparse.Namespace, out: Console, err: Console) -> int:
    from sourcery._apps.loader import load_app

    types = load_app(args.app)
    actor = ActorRef.parse(args.actor)
    command = _command(types, actor, args.command_name, args.fields)
    return _run(_sending(args, actor, command, out, err))


def _command(
    types: list[ActorType[Any, Any, Any]], actor: ActorRef, name: str, fields: str
) -> object:
    """The command ``name`` of ``actor``'s type, with the fields a JSON object gives."""
    spec = next((t for t in types if t.name == actor.type), None)
    if spec is None:
        known = ", ".join(sorted(t.name for t in types))
        raise ConfigurationError(f"no actor type {actor.type!r} here (known: {known})")
    cls = next((c for c in spec.commands if c.__name__ == name), None)
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in spec.commands))
        raise ConfigurationError(f"actor type {spec.name!r} has no command {name!r} ({known})")
    try:
        return msgspec.json.decode(fields.encode(), type=cls)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodingError(f"cannot make a {name} of {fields!r}: {exc}") from exc


async def _sending(
    args: argparse.Namespace, actor: ActorRef, command: object, out: Console, err: Console
) -> int:
    from sourcery._messaging.client import Client

    async with Client.open(_broker(args)) as client:
        if not args.wait:
            message_id = await client.send(actor, command, message_id=args.message_id)
            out.print(f"sent {escape(message_id)} to {escape(str(actor))}")
            return 0
        try:
            reply = await client.request(
                actor, command, timeout=args.timeout, message_id=args.message_id
            )
        except CommandFailed as exc:
            failed = exc.reply
            if isinstance(failed, Reply):
                err.print(
                    f"[red]{failed.status}:[/red] {escape(failed.message_id)} to "
                    f"{escape(str(actor))}: {escape(failed.error_type)}: {escape(failed.error)}",
                    soft_wrap=True,
                )
                return 1
            raise
    events = ", ".join(reply.events) or "no events"
    out.print(f"{reply.status}: {escape(reply.message_id)} to {escape(str(actor))}: {events}")
    return 0


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
    (url,) = _existing_stores(text)
    return url


def _existing_stores(*texts: str) -> list[str]:
    """The URLs of stores that must all exist already; none is touched unless all do."""
    urls = [_as_url(text) for text in texts]
    paths = [_sqlite_path(url) for url in urls]
    for path in paths:
        if path is not None and not path.is_file():
            raise ConfigurationError(f"no such store file: {path}")
    for url, path in zip(urls, paths, strict=True):
        if path is not None and _sqlite_version(url) == 0:
            raise ConfigurationError(f"{path} is not a sourcery store (schema version 0)")
    return urls
