"""A picture of one actor's history: its snapshot graph as a hand-written SVG.

Pure functions, records in and text out: :func:`layout` places the nodes, :func:`render`
draws them. Every snapshot is a node, and so is the virtual root (the initial state that
parentless snapshots grow from); every parent link is an edge, drawn from parent to child.
Rows are ordered by the number of events a node covers (``clock.total()``), so time runs
downwards; a branch keeps its column for as long as it lasts, so divergent branches stand
side by side and merges (two or more parents) join them again.

Writer ids are long and random, so clocks are shown short (``a:3 b:5``) with a legend;
writers whose ids start with ``merge-`` wrote compensating events during a merge and are
shown as ``m1``, ``m2``... Every piece of text is escaped: actor and writer ids may hold
any character.

The SVG is meant for people, but its structure is stable enough for tools: each node is a
``<g class="node ...">`` (classes ``root``, ``head``, ``merge``, ``compensating``,
``missing``) with ``id`` and ``data-clock`` attributes, and each edge a
``<path class="edge" data-from=ID data-to=ID>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sourcery._core.clock import VectorClock
from sourcery._core.records import PackRecord, SnapshotRecord

__all__ = [
    "MERGE_WRITER_PREFIX",
    "Edge",
    "Layout",
    "Node",
    "clock_label",
    "escape",
    "layout",
    "render",
    "short_names",
]

MERGE_WRITER_PREFIX = "merge-"
"""Writer ids of the compensating events a merge hook records (see ``resolution``)."""

CHAR_WIDTH = 7.3
"""Roughly the advance of one character of a 12px monospace font."""
LINE_HEIGHT = 16
PAD_X = 12
PAD_Y = 8
GAP_X = 36
GAP_Y = 40
MARGIN = 24
MIN_NODE_WIDTH = 130

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def escape(text: str) -> str:
    """``text`` safe inside an XML element or a double-quoted attribute.

    Characters XML cannot hold at all (most control characters) become ``\\xNN``.
    """
    text = _INVALID_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _letters(i: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa: bijective base 26."""
    name = ""
    i += 1
    while i:
        i, rest = divmod(i - 1, 26)
        name = chr(ord("a") + rest) + name
    return name


def short_names(clocks: Iterable[VectorClock]) -> dict[str, str]:
    """A short name for every writer in ``clocks``, in order of first appearance.

    Ordinary writers are ``a``, ``b``...; merge writers ``m1``, ``m2``... Give the clocks
    in a deterministic order (oldest first) to get the same names every time.
    """
    names: dict[str, str] = {}
    plain = merges = 0
    for clock in clocks:
        for writer in clock.writers():
            if writer in names:
                continue
            if writer.startswith(MERGE_WRITER_PREFIX):
                merges += 1
                names[writer] = f"m{merges}"
            else:
                names[writer] = _letters(plain)
                plain += 1
    return names


def clock_label(clock: VectorClock, names: Mapping[str, str]) -> str:
    """``a:3 b:5``, ordered by short name; ``{}`` for the empty clock."""
    if clock.is_empty():
        return "{}"
    entries = sorted(clock.items(), key=lambda item: _name_order(names.get(item[0], item[0])))
    return " ".join(f"{names.get(w, w)}:{n}" for w, n in entries)


def _name_order(name: str) -> tuple[int, int, str]:
    # a < b < ... < z < aa < ... < m1 < m2 < ... < m10
    if name.startswith("m") and name[1:].isdigit():
        return (1, int(name[1:]), name)
    return (0, len(name), name)


@dataclass(frozen=True, slots=True)
class Node:
    """One box of the picture."""

    id: str
    clock: VectorClock | None
    """None for the root."""
    kind: str
    """``root``, ``snapshot`` or ``missing`` (a parent this history does not hold)."""
    row: int
    column: int
    lines: tuple[str, ...]
    head: bool = False
    merge: bool = False
    compensations: int = 0

    @property
    def classes(self) -> str:
        names = ["node"]
        if self.kind != "snapshot":
            names.append(self.kind)
        if self.head:
            names.append("head")
        if self.merge:
            names.append("merge")
        if self.compensations:
            names.append("compensating")
        return " ".join(names)


@dataclass(frozen=True, slots=True)
class Edge:
    """A parent link, from the parent's node to the child's."""

    parent: str
    child: str


@dataclass(slots=True)
class Layout:
    """Where everything goes, before any coordinates are worked out."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    writers: dict[str, str] = field(default_factory=dict)
    """Writer id -> short name."""
    rows: int = 0
    columns: int = 0


def _pack_lines(
    snapshot: SnapshotRecord, pack: PackRecord | None, missing_pack: bool
) -> tuple[list[str], int]:
    lines = [f"state {len(snapshot.state)} B"]
    if pack is None:
        lines[0] += ", pack missing" if missing_pack else ""
        return lines, 0
    lines[0] += f", {len(pack.events)} event{'s' if len(pack.events) != 1 else ''}"
    compensating = [e for e in pack.events if e.writer.startswith(MERGE_WRITER_PREFIX)]
    if compensating:
        types = sorted({e.type for e in compensating})
        lines.append(f"{len(compensating)} compensating: {', '.join(types)}")
    return lines, len(compensating)


def layout(
    snapshots: Sequence[SnapshotRecord],
    packs: Mapping[VectorClock, PackRecord | None] | None = None,
    heads: Iterable[VectorClock] | None = None,
) -> Layout:
    """Place the root, every snapshot and every missing parent on rows and columns.

    ``packs`` maps a snapshot's clock to its event pack (None: the store lacks it; a clock
    not in the mapping: not asked for, nothing is said). ``heads`` defaults to the
    snapshots no other snapshot dominates.
    """
    by_clock: dict[VectorClock, SnapshotRecord] = {}
    for snapshot in snapshots:
        by_clock.setdefault(snapshot.clock, snapshot)
    ordered = sorted(by_clock.values(), key=lambda x: (x.clock.total(), x.clock.to_bytes()))
    if heads is None:
        clocks = list(by_clock)
        head_set = {c for c in clocks if not any(c < other for other in clocks)}
    else:
        head_set = set(heads)

    root = VectorClock()
    missing = sorted(
        {p for snap in ordered for p in snap.parents if p not in by_clock and p != root},
        key=lambda c: (c.total(), c.to_bytes()),
    )
    # Every clock drawn, oldest first: names and rows follow this order.
    all_clocks = sorted([*by_clock, *missing], key=lambda c: (c.total(), c.to_bytes()))
    names = short_names(all_clocks)
    totals = sorted({0, *(c.total() for c in all_clocks)})
    row_of_total = {t: i for i, t in enumerate(totals)}

    def row_of(clock: VectorClock | None) -> int:
        return 0 if clock is None else row_of_total[clock.total()]

    ids: dict[VectorClock | None, str] = {None: "root"}
    for i, clock in enumerate(all_clocks, 1):
        ids[clock] = f"n{i}"

    def parents_of(clock: VectorClock) -> list[VectorClock | None]:
        s = by_clock.get(clock)
        if s is None or not s.parents:
            return [None]  # missing snapshots and parentless ones hang off the root
        return [None if p == root else p for p in s.parents]

    children: dict[VectorClock | None, int] = {None: 0}
    for clock in all_clocks:
        children.setdefault(clock, 0)
        for p in parents_of(clock):
            children[p] = children.get(p, 0) + 1

    # Columns, like a commit graph: a child continues the column of its first parent that
    # no sibling has continued yet; otherwise it takes the leftmost column whose last node
    # has no children left to place, or a new one.
    column_of: dict[VectorClock | None, int] = {None: 0}
    last_in_column: list[VectorClock | None] = [None]
    continued: set[VectorClock | None] = set()
    waiting = dict(children)
    for clock in all_clocks:
        column: int | None = None
        for p in parents_of(clock):
            waiting[p] -= 1
        for p in parents_of(clock):
            if p not in continued and last_in_column[column_of[p]] == p:
                column = column_of[p]
                continued.add(p)
                break
        if column is None:
            # A free column must be empty below the parents too, so that the edges
            # from them can run down it without crossing a node.
            top = min(row_of(p) for p in parents_of(clock))
            free = [
                i
                for i, last in enumerate(last_in_column)
                if waiting[last] == 0 and row_of(last) < top
            ]
            column = free[0] if free else len(last_in_column)
            if column == len(last_in_column):
                last_in_column.append(clock)
        column_of[clock] = column
        last_in_column[column] = clock

    result = Layout(writers=names, rows=len(totals), columns=len(last_in_column))
    result.nodes.append(Node("root", None, "root", 0, 0, ("root", "initial state")))
    for clock in all_clocks:
        s = by_clock.get(clock)
        label = clock_label(clock, names)
        if s is None:
            node = Node(
                ids[clock],
                clock,
                "missing",
                row_of_total[clock.total()],
                column_of[clock],
                (label, "not in this store"),
            )
        else:
            known = packs is not None and clock in packs
            pack = packs.get(clock) if packs is not None else None
            lines, compensations = _pack_lines(s, pack, known)
            merge = len(s.parents) >= 2
            if merge:
                lines.append(f"merge of {len(s.parents)}")
            if clock in head_set:
                lines.append("HEAD")
            node = Node(
                ids[clock],
                clock,
                "snapshot",
                row_of_total[clock.total()],
                column_of[clock],
                (label, *lines),
                head=clock in head_set,
                merge=merge,
                compensations=compensations,
            )
        result.nodes.append(node)
        if s is not None:  # a missing snapshot's parents are unknown
            for p in parents_of(clock):
                result.edges.append(Edge(ids[p], ids[clock]))
    return result


_STYLE = """
text { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; fill: #222; }
.title { font-size: 15px; font-weight: bold; }
.legend { fill: #444; }
.node rect { fill: #ffffff; stroke: #666; stroke-width: 1.2; }
.node .clock { font-weight: bold; }
.root rect { fill: #eeeeee; stroke-dasharray: 4 3; }
.missing rect { fill: #fafafa; stroke: #aaa; stroke-dasharray: 2 3; }
.merge rect { fill: #e6efff; stroke: #3a66c4; }
.merge .outline { fill: none; stroke: #3a66c4; stroke-width: 1; }
.compensating rect { fill: #fff1dc; }
.compensating .note { fill: #b35900; font-weight: bold; }
.head rect { stroke: #c2185b; stroke-width: 3; }
.head .badge { fill: #c2185b; font-weight: bold; }
.edge { fill: none; stroke: #888; stroke-width: 1.4; marker-end: url(#arrow); }
"""


def render(
    actor: str,
    snapshots: Sequence[SnapshotRecord],
    packs: Mapping[VectorClock, PackRecord | None] | None = None,
    heads: Iterable[VectorClock] | None = None,
    *,
    loose_events: int | None = None,
) -> str:
    """The SVG document picturing ``actor``'s history (see the module docstring)."""
    plan = layout(snapshots, packs, heads)
    width = max(
        MIN_NODE_WIDTH,
        *(int(len(line) * CHAR_WIDTH) + 2 * PAD_X for n in plan.nodes for line in n.lines),
    )

    def height_of(node: Node) -> int:
        return len(node.lines) * LINE_HEIGHT + 2 * PAD_Y

    row_height = [0] * plan.rows  # a row is as tall as its tallest node
    for n in plan.nodes:
        row_height[n.row] = max(row_height[n.row], height_of(n))
    row_top = [0] * (plan.rows + 1)
    for r in range(plan.rows):
        row_top[r + 1] = row_top[r] + row_height[r] + GAP_Y

    heads_count = sum(1 for n in plan.nodes if n.head)
    merges = sum(1 for n in plan.nodes if n.merge)
    header = [f"history of {actor}"]
    summary = (
        f"{len(plan.nodes) - 1 - sum(1 for n in plan.nodes if n.kind == 'missing')} snapshots, "
        f"{merges} merge{'s' if merges != 1 else ''}, "
        f"{heads_count} head{'s' if heads_count != 1 else ''}"
    )
    if heads_count > 1:
        summary += " (siblings: the next read resolves them)"
    if loose_events is not None:
        summary += f", {loose_events} loose event{'s' if loose_events != 1 else ''}"
    header.append(summary)
    top = MARGIN + len(header) * 20 + 8

    legend = ["writers:"]
    for writer, name in plan.writers.items():
        note = " (compensating events of a merge)" if writer.startswith(MERGE_WRITER_PREFIX) else ""
        legend.append(f"  {name} = {writer}{note}")
    legend.append("pink border: head; blue: merge (2+ parents); orange: compensating events")

    def x_of(column: int) -> float:
        return MARGIN + column * (width + GAP_X)

    def y_of(row: int) -> float:
        return top + row_top[row]

    graph_width = plan.columns * (width + GAP_X) - GAP_X
    graph_bottom = y_of(plan.rows) - GAP_Y
    text_width = max(len(line) for line in [*header, *legend]) * CHAR_WIDTH
    total_width = int(MARGIN * 2 + max(graph_width, text_width))
    total_height = int(graph_bottom + 16 + len(legend) * LINE_HEIGHT + MARGIN)

    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_width}" '
        f'height="{total_height}" viewBox="0 0 {total_width} {total_height}">',
        f"<title>{escape(header[0])}</title>",
        f"<style>{_STYLE}</style>",
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#888"/></marker>',
        "</defs>",
        f'<rect x="0" y="0" width="{total_width}" height="{total_height}" fill="#ffffff"/>',
    ]
    for i, line in enumerate(header):
        cls = "title" if i == 0 else "legend"
        out.append(
            f'<text class="{cls}" x="{MARGIN}" y="{MARGIN + 14 + i * 20}">{escape(line)}</text>'
        )

    where = {n.id: n for n in plan.nodes}
    rows_in_column: dict[int, list[int]] = {}
    for n in plan.nodes:
        rows_in_column.setdefault(n.column, []).append(n.row)

    def clear(column: int, above: int, below: int) -> bool:
        """No node in ``column`` strictly between rows ``above`` and ``below``."""
        return not any(above < r < below for r in rows_in_column.get(column, ()))

    out.append('<g class="edges">')
    for edge in plan.edges:
        parent, child = where[edge.parent], where[edge.child]
        x1 = x_of(parent.column) + width / 2
        y1 = y_of(parent.row) + height_of(parent)
        x2 = x_of(child.column) + width / 2
        y2 = y_of(child.row)
        if x1 == x2:
            d = f"M {x1:.1f} {y1:.1f} L {x2:.1f} {y2:.1f}"
        elif clear(parent.column, parent.row, child.row):
            # Down the parent's column, then over to the child just above it.
            bend = y2 - GAP_Y * 3 / 4
            d = (
                f"M {x1:.1f} {y1:.1f} L {x1:.1f} {bend:.1f} "
                f"C {x1:.1f} {y2 - GAP_Y / 4:.1f}, {x2:.1f} {bend:.1f}, {x2:.1f} {y2:.1f}"
            )
        else:
            # Over to the child's column just below the parent, then down to the child.
            below = y_of(parent.row) + row_height[parent.row]
            bend = below + GAP_Y * 3 / 4
            d = (
                f"M {x1:.1f} {y1:.1f} L {x1:.1f} {below:.1f} "
                f"C {x1:.1f} {bend:.1f}, {x2:.1f} {below:.1f}, "
                f"{x2:.1f} {bend:.1f} L {x2:.1f} {y2:.1f}"
            )
        out.append(f'<path class="edge" data-from="{edge.parent}" data-to="{edge.child}" d="{d}"/>')
    out.append("</g>")

    out.append('<g class="nodes">')
    for node in plan.nodes:
        x, y = x_of(node.column), y_of(node.row)
        clock = "" if node.clock is None else clock_label(node.clock, plan.writers)
        h = height_of(node)
        radius = h / 2 if node.merge else 4
        out.append(f'<g class="{node.classes}" id="{node.id}" data-clock="{escape(clock)}">')
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width}" height="{h}" '
            f'rx="{radius:.1f}" ry="{radius:.1f}"/>'
        )
        if node.merge:
            out.append(
                f'<rect class="outline" x="{x + 3:.1f}" y="{y + 3:.1f}" width="{width - 6}" '
                f'height="{h - 6}" rx="{radius - 3:.1f}" ry="{radius - 3:.1f}"/>'
            )
        for i, line in enumerate(node.lines):
            cls = (
                "clock"
                if i == 0
                else "badge"
                if line == "HEAD"
                else ("note" if "compensating" in line else "info")
            )
            ty = y + PAD_Y + 12 + i * LINE_HEIGHT
            out.append(
                f'<text class="{cls}" x="{x + width / 2:.1f}" y="{ty:.1f}" '
                f'text-anchor="middle">{escape(line)}</text>'
            )
        out.append("</g>")
    out.append("</g>")

    for i, line in enumerate(legend):
        ty = graph_bottom + 16 + (i + 1) * LINE_HEIGHT
        out.append(
            f'<text class="legend" x="{MARGIN}" y="{ty:.1f}" xml:space="preserve">'
            f"{escape(line)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
