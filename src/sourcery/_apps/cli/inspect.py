"""``sourcery inspect``: list a store's actors, or show one actor's heads, snapshots and
loose events, as rich tables (:mod:`.inspect_tables`) or one JSON object (``--json``),
and optionally draw its history to an SVG file.

This module reads the store; :mod:`.inspect_report` turns what it read into the plain
JSON values that both outputs show.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from sourcery._apps.cli.common import existing_store, positive, run
from sourcery._apps.cli.inspect_report import ACTORS_LISTED, actor_report, actors_report
from sourcery._apps.cli.inspect_state import actor_kind, current_state
from sourcery._apps.cli.inspect_tables import SHOWN_CHARS, print_actor, print_actors
from sourcery._apps.history_svg import render
from sourcery._core.actor import ActorType
from sourcery._core.clock import VectorClock
from sourcery._core.config import redact
from sourcery._core.records import ActorRef
from sourcery._stores import Store, open_store

__all__ = ["add_parsers"]

log = logging.getLogger(__name__)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inspect = commands.add_parser(
        "inspect", help="show an actor's heads, snapshots and loose events, or list actors"
    )
    inspect.add_argument("store", metavar="STORE", help="a store URL or a sqlite file path")
    inspect.add_argument(
        "actor", metavar="TYPE/ID", nargs="?", help="the actor (default: list actors)"
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument(
        "--after",
        metavar="TYPE/ID",
        help="list the actors that come after this one (the next page of a listing)",
    )
    inspect.add_argument(
        "--limit",
        type=positive,
        default=ACTORS_LISTED,
        help=f"actors a listing shows at most (default: {ACTORS_LISTED})",
    )
    inspect.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="your actor type(s), to show the actor's current state decoded",
    )
    inspect.add_argument(
        "--full",
        action="store_true",
        help=f"show states and payloads whole (tables cut them at {SHOWN_CHARS} characters)",
    )
    inspect.add_argument(
        "--svg",
        metavar="PATH",
        help="also draw the actor's history (snapshots and parent links) to an SVG file",
    )
    inspect.set_defaults(run=_inspect, check=_check)


def _check(args: argparse.Namespace) -> str | None:
    if args.svg and not args.actor:
        return "--svg draws one actor's history: give TYPE/ID"
    if args.app and not args.actor:
        return "--app decodes one actor's state: give TYPE/ID"
    if args.after and args.actor:
        return "--after pages through the list of actors: give no TYPE/ID"
    return None


def _inspect(args: argparse.Namespace, out: Console, err: Console) -> int:
    url = existing_store(args.store)
    actor = ActorRef.parse(args.actor) if args.actor else None
    after = ActorRef.parse(args.after) if args.after else None
    kind = None
    if args.app and actor is not None:
        from sourcery._apps.loader import load_app

        kind = actor_kind(load_app(args.app), actor)
    report, svg = run(
        _inspect_store(url, actor, svg=bool(args.svg), after=after, limit=args.limit, kind=kind)
    )
    if actor is not None and not (report["heads"] or report["loose_events"]):
        err.print(f"[red]error:[/red] no actor {escape(str(actor))} in {escape(report['store'])}")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif actor is None:
        print_actors(out, report)
    else:
        print_actor(out, report, full=args.full)
    if svg is not None:
        Path(args.svg).write_text(svg, encoding="utf-8")
        (err if args.json else out).print(f"history drawn to {escape(args.svg)}")
    return 0


async def _inspect_store(
    url: str,
    actor: ActorRef | None,
    *,
    svg: bool = False,
    after: ActorRef | None = None,
    limit: int = ACTORS_LISTED,
    kind: ActorType[Any, Any, Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    log.info("inspecting %s", redact(url))
    store = await open_store(url)
    try:
        if actor is None:
            refs = await store.actors(limit=limit + 1, after=after)
            return actors_report(redact(url), refs, limit), None
        return await _read_actor(store, url, actor, svg=svg, kind=kind)
    finally:
        await store.aclose()


async def _read_actor(
    store: Store,
    url: str,
    actor: ActorRef,
    *,
    svg: bool = False,
    kind: ActorType[Any, Any, Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The actor's report, and its history as SVG if asked."""
    heads = await store.heads(actor)
    frontier = await store.frontier(actor)
    snapshots = await store.snapshots(actor)
    packs = [await store.pack(actor, s.clock) for s in snapshots]
    # The runtime resolves several heads into one clock covering them all; loose events
    # are those that clock does not cover.
    covered = VectorClock.merge_all(h.clock for h in heads)
    loose = await store.loose_events(actor, covered)
    report = actor_report(redact(url), actor, heads, frontier, snapshots, packs, loose)
    report["state"] = current_state(kind, heads, loose)
    picture = None
    if svg:
        by_clock = {s.clock: pack for s, pack in zip(snapshots, packs, strict=True)}
        picture = render(
            str(actor), snapshots, by_clock, [h.clock for h in heads], loose_events=len(loose)
        )
    return report, picture
