"""Read-side commands: ``project`` (run a projection or a process manager until stopped)
and ``projections status`` / ``projections skip`` (look at them, move one past an event
it is parked at)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sourcery._apps.cli.common import as_url, existing_store, flush, positive, run, stop_signals
from sourcery._apps.loader import load_object
from sourcery._core.errors import ConfigurationError
from sourcery._engine.runtime import Runtime
from sourcery._readside.admin import skip_event, statuses
from sourcery._readside.api import project, react
from sourcery._readside.projection import Projection
from sourcery._readside.reactions import ProcessManager

__all__ = ["add_parsers"]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    project_ = commands.add_parser(
        "project", help="run a projection or process manager until interrupted"
    )
    project_.add_argument("app", metavar="MODULE:ATTR", help="a Projection or ProcessManager")
    project_.add_argument("--store", required=True, help="the store URL or sqlite file path")
    project_.add_argument("--target", help="the database of its tables (default: the store)")
    project_.add_argument("--batch", type=positive, default=500, help="events per transaction")
    project_.set_defaults(run=_project)

    group = commands.add_parser("projections", help="the projections kept in a database")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="position, lag and state of each projection")
    status.add_argument("store", metavar="STORE", help="the store URL or sqlite file path")
    status.add_argument("--target", help="the projections' database (default: the store)")
    status.set_defaults(run=_status)
    skip = actions.add_parser("skip", help="move a parked projection past its failing event")
    skip.add_argument("name", metavar="NAME")
    skip.add_argument("--event", type=int, required=True, help="the id of the parked event")
    skip.add_argument("--store", required=True, help="the store URL or sqlite file path")
    skip.add_argument("--target", help="the projections' database (default: the store)")
    skip.set_defaults(run=_skip)


def _target(args: argparse.Namespace, store: str) -> str:
    return as_url(args.target) if args.target else store


def _project(args: argparse.Namespace, out: Console, err: Console) -> int:
    what = load_object(args.app)
    if not isinstance(what, (Projection, ProcessManager)):
        raise ConfigurationError(f"{args.app} is not a Projection or ProcessManager")
    store = existing_store(args.store)
    return run(_projecting(what, store, _target(args, store), args.batch, out))


async def _projecting(
    what: Projection | ProcessManager, store: str, target: str, batch: int, out: Console
) -> int:
    stop = asyncio.Event()
    with stop_signals(stop.set):
        if isinstance(what, Projection):
            async with project(store, what, target=target, batch=batch):
                await _until(stop, what.name, out)
        else:
            kinds = [codec.kind for codec in what.codecs.values()]
            async with (
                Runtime.open(store, kinds) as runtime,
                react(runtime, what, target=target, batch=batch),
            ):
                await _until(stop, what.name, out)
    out.print(f"stopped {escape(what.name)}")
    return 0


async def _until(stop: asyncio.Event, name: str, out: Console) -> None:
    out.print(f"running {escape(name)}; Ctrl-C or SIGTERM stops")
    flush(out)
    await stop.wait()


def _status(args: argparse.Namespace, out: Console, err: Console) -> int:
    store = existing_store(args.store)
    found = run(statuses(store, _target(args, store)))
    if not found:
        out.print("no projections")
        return 0
    table = Table("name", "state", "events", "lag", "lag s", "failures", "parked at", "error")
    for s in found:
        cells: list[Any] = [
            s.name,
            s.state,
            f"{s.events:,}",
            f"{s.lag:,}",
            f"{s.lag_seconds:.1f}",
            str(s.failures),
            "" if s.failed_event is None else str(s.failed_event),
            s.error,
        ]
        table.add_row(*(escape(str(c)) for c in cells))
    out.print(table)
    return 0


def _skip(args: argparse.Namespace, out: Console, err: Console) -> int:
    store = existing_store(args.store)
    if not run(skip_event(_target(args, store), args.name, args.event)):
        raise ConfigurationError(f"projection {args.name!r} is not parked at event {args.event}")
    out.print(f"{escape(args.name)} moved past event {args.event}")
    return 0
