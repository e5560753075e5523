"""How ``sourcery inspect`` shows its report on a console: a list of actors, or one
actor's heads, snapshots and loose events as compact rich tables."""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sourcery._apps.history_layout import clock_label
from sourcery._core.clock import VectorClock

__all__ = ["SHOWN_CHARS", "print_actor", "print_actors"]

Names = dict[str, str]
"""Writer id -> its short name (``a``, ``b``, ``m1``), as in the history picture."""

SHOWN_CHARS = 200
"""A state or payload longer than this (as JSON) is cut in tables, unless ``--full``."""


def print_actors(out: Console, report: dict[str, Any]) -> None:
    """A store's actors, one a line."""
    actors: list[str] = report["actors"]
    if not actors:
        out.print(f"{escape(report['store'])} holds no actors")
        return
    out.print(f"actors in {escape(report['store'])}:")
    for name in actors:
        out.print(f"  {escape(name)}")
    if report["next"] is not None:
        out.print(f"(more: add --after {escape(report['next'])} for the next page)")


def print_actor(out: Console, r: dict[str, Any], *, full: bool = False) -> None:
    """One actor: whether it has siblings, its frontier, then a table of each part.

    States and payloads are cut at :data:`SHOWN_CHARS` characters unless ``full``."""
    limit = None if full else SHOWN_CHARS
    names: dict[str, str] = r["writers"]
    heads: list[dict[str, Any]] = r["heads"]
    out.print(f"[bold]{escape(r['actor'])}[/bold] in {escape(r['store'])}")
    if r["siblings"]:
        out.print(
            f"siblings: [bold red]yes, {len(heads)} heads[/bold red] (divergent versions; "
            "the next read resolves them from their latest common ancestor)"
        )
    else:
        out.print(f"siblings: no ({len(heads)} head{'' if len(heads) == 1 else 's'})")
    legend = ", ".join(f"{name} = {writer}" for writer, name in names.items())
    out.print(f"writers: {escape(legend) or '(none)'}")
    out.print(f"frontier: {escape(_clock(r['frontier'], names))}")
    out.print(_state_line(r["state"], limit))
    out.print(_heads_table(heads, names, limit))
    out.print(_snapshots_table(r["snapshots"], names))
    out.print(_loose_events_table(r["loose_events"], names, limit))


def _state_line(state: dict[str, Any], limit: int | None) -> str:
    """The current state: the head's plus the loose events, or why it is not shown."""
    if state["note"] is not None:
        return f"state: ({escape(state['note'])})"
    applied = state["loose_events_applied"]
    source = f"head + {applied} loose event{'' if applied == 1 else 's'}"
    return f"state ({source}): {escape(_json(state['value'], limit))}"


def _heads_table(heads: list[dict[str, Any]], names: Names, limit: int | None) -> Table:
    table = _table(f"heads ({len(heads)})", "clock", "timestamp", "state")
    for h in heads:
        table.add_row(
            escape(_clock(h["clock"], names)), h["timestamp"], escape(_json(h["state"], limit))
        )
    return table


def _snapshots_table(snapshots: list[dict[str, Any]], names: Names) -> Table:
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
        parents = ", ".join(_clock(p, names) for p in s["parents"]) or "(root)"
        pack = "missing" if s["pack_events"] is None else str(s["pack_events"])
        table.add_row(
            str(i),
            escape(_clock(s["clock"], names)),
            escape(parents),
            _roles(s),
            s["timestamp"],
            str(s["state_bytes"]),
            pack,
        )
    return table


def _roles(snapshot: dict[str, Any]) -> str:
    """What a snapshot is besides a snapshot: a head, a merge, a holder of compensations."""
    roles = []
    if snapshot["head"]:
        roles.append("[bold]head[/bold]")
    if len(snapshot["parents"]) > 1:
        roles.append("merge")
    if snapshot["compensations"]:
        roles.append(f"{snapshot['compensations']} compensating")
    return ", ".join(roles)


def _loose_events_table(events: list[dict[str, Any]], names: Names, limit: int | None) -> Table:
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
            escape(f"{names.get(writer, writer)}:{n}"),
            e["id"],
            e["timestamp"],
            escape(e["initiated_by"]),
            escape(e["type"]),
            str(e["version"]),
            escape(_json(e["payload"], limit)),
        )
    return table


def _table(title: str, *columns: str) -> Table:
    """A compact table whose cells fold rather than hide what does not fit."""
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _clock(entries: dict[str, int], names: Names) -> str:
    """A clock with the writers' short names, as the history picture shows it: ``a:3 b:5``."""
    return clock_label(VectorClock(entries), names)


def _json(value: Any, limit: int | None = None) -> str:
    """A value as JSON, cut after ``limit`` characters (saying how much was left out)."""
    text = json.dumps(value, ensure_ascii=False)
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters; --full shows all)"
