"""A picture of one actor's history: its snapshot graph as a hand-written SVG.

Pure functions, records in and text out: :func:`~sourcery._apps.history_layout.layout`
places the nodes on rows and columns (see :mod:`.history_layout` for how), :func:`render`
works out the coordinates and draws them. Every piece of text is escaped: actor and writer
ids may hold any character.

The SVG is meant for people, but its structure is stable enough for tools: each node is a
``<g class="node ...">`` (classes ``root``, ``head``, ``merge``, ``compensating``,
``missing``) with ``id`` and ``data-clock`` attributes, and each edge a
``<path class="edge" data-from=ID data-to=ID>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sourcery._apps.history_layout import (
    Layout,
    Node,
    clock_label,
    layout,
)
from sourcery._core.clock import VectorClock
from sourcery._core.merge import MERGE_WRITER_PREFIX
from sourcery._core.records import PackRecord, SnapshotRecord

__all__ = ["escape", "render"]

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
    header = _header(actor, plan, loose_events)
    legend = _legend(plan)
    geometry = _Geometry.of(plan, top=MARGIN + len(header) * 20 + 8)
    text_width = max(len(line) for line in [*header, *legend]) * CHAR_WIDTH
    total_width = int(MARGIN * 2 + max(geometry.graph_width, text_width))
    total_height = int(geometry.bottom + 16 + len(legend) * LINE_HEIGHT + MARGIN)
    out = _opening(header, total_width, total_height)
    out += _edges(plan, geometry)
    out += _nodes(plan, geometry)
    for i, line in enumerate(legend):
        ty = geometry.bottom + 16 + (i + 1) * LINE_HEIGHT
        out.append(
            f'<text class="legend" x="{MARGIN}" y="{ty:.1f}" xml:space="preserve">'
            f"{escape(line)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _header(actor: str, plan: Layout, loose_events: int | None) -> list[str]:
    """The title, and a line that counts snapshots, merges, heads and loose events."""
    heads_count = sum(1 for n in plan.nodes if n.head)
    merges = sum(1 for n in plan.nodes if n.merge)
    summary = (
        f"{len(plan.nodes) - 1 - sum(1 for n in plan.nodes if n.kind == 'missing')} snapshots, "
        f"{merges} merge{'s' if merges != 1 else ''}, "
        f"{heads_count} head{'s' if heads_count != 1 else ''}"
    )
    if heads_count > 1:
        summary += " (siblings: the next read resolves them)"
    if loose_events is not None:
        summary += f", {loose_events} loose event{'s' if loose_events != 1 else ''}"
    return [f"history of {actor}", summary]


def _legend(plan: Layout) -> list[str]:
    """The writers' short names, and what the colours mean."""
    legend = ["writers:"]
    for writer, name in plan.writers.items():
        note = " (compensating events of a merge)" if writer.startswith(MERGE_WRITER_PREFIX) else ""
        legend.append(f"  {name} = {writer}{note}")
    legend.append("pink border: head; blue: merge (2+ parents); orange: compensating events")
    return legend


def _height(node: Node) -> int:
    return len(node.lines) * LINE_HEIGHT + 2 * PAD_Y


@dataclass(frozen=True, slots=True)
class _Geometry:
    """Coordinates: every node is as wide as the widest, every row as tall as its
    tallest node."""

    width: int
    top: float
    row_top: list[int]
    row_height: list[int]
    rows: int
    columns: int

    @classmethod
    def of(cls, plan: Layout, *, top: float) -> _Geometry:
        width = max(
            MIN_NODE_WIDTH,
            *(int(len(line) * CHAR_WIDTH) + 2 * PAD_X for n in plan.nodes for line in n.lines),
        )
        row_height = [0] * plan.rows
        for n in plan.nodes:
            row_height[n.row] = max(row_height[n.row], _height(n))
        row_top = [0] * (plan.rows + 1)
        for r in range(plan.rows):
            row_top[r + 1] = row_top[r] + row_height[r] + GAP_Y
        return cls(width, top, row_top, row_height, plan.rows, plan.columns)

    def x_of(self, column: int) -> float:
        return MARGIN + column * (self.width + GAP_X)

    def y_of(self, row: int) -> float:
        return self.top + self.row_top[row]

    @property
    def graph_width(self) -> int:
        return self.columns * (self.width + GAP_X) - GAP_X

    @property
    def bottom(self) -> float:
        return self.y_of(self.rows) - GAP_Y


def _opening(header: list[str], total_width: int, total_height: int) -> list[str]:
    """The document up to the graph: the root element, style, arrow marker and header."""
    out = [
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
    return out


def _edges(plan: Layout, geometry: _Geometry) -> list[str]:
    """One path per parent link, bent so that it never crosses a node."""
    where = {n.id: n for n in plan.nodes}
    rows_in_column: dict[int, list[int]] = {}
    for n in plan.nodes:
        rows_in_column.setdefault(n.column, []).append(n.row)

    def clear(column: int, above: int, below: int) -> bool:
        """No node in ``column`` strictly between rows ``above`` and ``below``."""
        return not any(above < r < below for r in rows_in_column.get(column, ()))

    out = ['<g class="edges">']
    for edge in plan.edges:
        parent, child = where[edge.parent], where[edge.child]
        d = _edge_path(parent, child, geometry, clear(parent.column, parent.row, child.row))
        out.append(f'<path class="edge" data-from="{edge.parent}" data-to="{edge.child}" d="{d}"/>')
    out.append("</g>")
    return out


def _edge_path(parent: Node, child: Node, geometry: _Geometry, down_parent_column: bool) -> str:
    """The path from the bottom of ``parent`` to the top of ``child``."""
    x1 = geometry.x_of(parent.column) + geometry.width / 2
    y1 = geometry.y_of(parent.row) + _height(parent)
    x2 = geometry.x_of(child.column) + geometry.width / 2
    y2 = geometry.y_of(child.row)
    if x1 == x2:
        return f"M {x1:.1f} {y1:.1f} L {x2:.1f} {y2:.1f}"
    if down_parent_column:
        # Down the parent's column, then over to the child just above it.
        bend = y2 - GAP_Y * 3 / 4
        return (
            f"M {x1:.1f} {y1:.1f} L {x1:.1f} {bend:.1f} "
            f"C {x1:.1f} {y2 - GAP_Y / 4:.1f}, {x2:.1f} {bend:.1f}, {x2:.1f} {y2:.1f}"
        )
    # Over to the child's column just below the parent, then down to the child.
    below = geometry.y_of(parent.row) + geometry.row_height[parent.row]
    bend = below + GAP_Y * 3 / 4
    return (
        f"M {x1:.1f} {y1:.1f} L {x1:.1f} {below:.1f} "
        f"C {x1:.1f} {bend:.1f}, {x2:.1f} {below:.1f}, "
        f"{x2:.1f} {bend:.1f} L {x2:.1f} {y2:.1f}"
    )


def _nodes(plan: Layout, geometry: _Geometry) -> list[str]:
    """One group per node: its box (a double outline for a merge) and its lines."""
    out = ['<g class="nodes">']
    width = geometry.width
    for node in plan.nodes:
        x, y = geometry.x_of(node.column), geometry.y_of(node.row)
        clock = "" if node.clock is None else clock_label(node.clock, plan.writers)
        h = _height(node)
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
            ty = y + PAD_Y + 12 + i * LINE_HEIGHT
            out.append(
                f'<text class="{_line_class(i, line)}" x="{x + width / 2:.1f}" y="{ty:.1f}" '
                f'text-anchor="middle">{escape(line)}</text>'
            )
        out.append("</g>")
    out.append("</g>")
    return out


def _line_class(i: int, line: str) -> str:
    """The first line is the clock; then the HEAD badge, compensation notes, plain info."""
    if i == 0:
        return "clock"
    if line == "HEAD":
        return "badge"
    return "note" if "compensating" in line else "info"
