"""Where the boxes of an actor's history picture go: rows, columns, edges and labels,
worked out from the records before any coordinates (:mod:`.history_svg` draws them).

Every snapshot is a node, and so is the virtual root (the initial state that parentless
snapshots grow from); every parent link is an edge, drawn from parent to child. Rows are
ordered by the number of events a node covers (``clock.total()``), so time runs
downwards; a branch keeps its column for as long as it lasts, so divergent branches stand
side by side and merges (two or more parents) join them again.

Writer ids are long and random, so clocks are shown short (``a:3 b:5``) with a legend;
writers whose ids start with ``merge-`` wrote compensating events during a merge and are
shown as ``m1``, ``m2``...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sourcery._core.clock import VectorClock
from sourcery._core.merge import MERGE_WRITER_PREFIX
from sourcery._core.records import PackRecord, SnapshotRecord

__all__ = [
    "Edge",
    "Layout",
    "Node",
    "clock_label",
    "layout",
    "short_names",
    "writer_names",
]


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


def writer_names(
    snapshots: Sequence[SnapshotRecord],
    heads: Iterable[VectorClock] | None,
    others: Iterable[str] = (),
) -> dict[str, str]:
    """The short names the history picture gives an actor's writers, plus names for
    ``others`` (writers of loose events, say) that no snapshot covers yet."""
    names = dict(_Graph.of(snapshots, heads).names)
    for writer in others:
        if writer in names:
            continue
        merge = writer.startswith(MERGE_WRITER_PREFIX)
        taken = set(names.values())
        i = 0
        while (name := f"m{i + 1}" if merge else _letters(i)) in taken:
            i += 1
        names[writer] = name
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
    graph = _Graph.of(snapshots, heads)
    column_of, columns = _columns(graph)
    result = Layout(writers=graph.names, rows=len(graph.row_of_total), columns=columns)
    result.nodes.append(Node("root", None, "root", 0, 0, ("root", "initial state")))
    for clock in graph.clocks:
        result.nodes.append(_node(graph, clock, column_of[clock], packs))
        if clock in graph.by_clock:  # a missing snapshot's parents are unknown
            for p in graph.parents_of(clock):
                result.edges.append(Edge(graph.ids[p], graph.ids[clock]))
    return result


def _age(clock: VectorClock) -> tuple[int, bytes]:
    """Oldest first: fewer events covered, then a fixed order among equals."""
    return (clock.total(), clock.to_bytes())


@dataclass(frozen=True, slots=True)
class _Graph:
    """The clocks to draw, oldest first, and what placing them asks of each."""

    by_clock: dict[VectorClock, SnapshotRecord]
    heads: set[VectorClock]
    clocks: list[VectorClock]
    """Every clock drawn, oldest first (snapshots and missing parents): names, ids and
    rows follow this order."""
    names: dict[str, str]
    row_of_total: dict[int, int]
    ids: dict[VectorClock | None, str]
    """``root`` for the root (``None``), ``n1``, ``n2``... for the clocks."""

    @classmethod
    def of(cls, snapshots: Sequence[SnapshotRecord], heads: Iterable[VectorClock] | None) -> _Graph:
        by_clock: dict[VectorClock, SnapshotRecord] = {}
        for snapshot in snapshots:
            by_clock.setdefault(snapshot.clock, snapshot)
        if heads is None:
            head_set = {c for c in by_clock if not any(c < other for other in by_clock)}
        else:
            head_set = set(heads)
        root = VectorClock()
        missing = {
            p for snap in by_clock.values() for p in snap.parents if p not in by_clock and p != root
        }
        clocks = sorted([*by_clock, *missing], key=_age)
        totals = sorted({0, *(c.total() for c in clocks)})
        ids: dict[VectorClock | None, str] = {None: "root"}
        for i, clock in enumerate(clocks, 1):
            ids[clock] = f"n{i}"
        row_of_total = {t: i for i, t in enumerate(totals)}
        return cls(by_clock, head_set, clocks, short_names(clocks), row_of_total, ids)

    def row_of(self, clock: VectorClock | None) -> int:
        return 0 if clock is None else self.row_of_total[clock.total()]

    def parents_of(self, clock: VectorClock) -> list[VectorClock | None]:
        """A snapshot's parents, ``None`` standing for the root."""
        s = self.by_clock.get(clock)
        if s is None or not s.parents:
            return [None]  # missing snapshots and parentless ones hang off the root
        root = VectorClock()
        return [None if p == root else p for p in s.parents]


def _columns(graph: _Graph) -> tuple[dict[VectorClock | None, int], int]:
    """Every node's column, and how many columns there are.

    Like a commit graph: a child continues the column of its first parent that no sibling
    has continued yet; otherwise it takes the leftmost column whose last node has no
    children left to place, or a new one.
    """
    waiting: dict[VectorClock | None, int] = {None: 0}  # children not placed yet
    for clock in graph.clocks:
        waiting.setdefault(clock, 0)
        for p in graph.parents_of(clock):
            waiting[p] = waiting.get(p, 0) + 1
    column_of: dict[VectorClock | None, int] = {None: 0}
    last_in_column: list[VectorClock | None] = [None]
    continued: set[VectorClock | None] = set()
    for clock in graph.clocks:
        parents = graph.parents_of(clock)
        column: int | None = None
        for p in parents:
            waiting[p] -= 1
        for p in parents:
            if p not in continued and last_in_column[column_of[p]] == p:
                column = column_of[p]
                continued.add(p)
                break
        if column is None:
            # A free column must be empty below the parents too, so that the edges
            # from them can run down it without crossing a node.
            top = min(graph.row_of(p) for p in parents)
            free = [
                i
                for i, last in enumerate(last_in_column)
                if waiting[last] == 0 and graph.row_of(last) < top
            ]
            column = free[0] if free else len(last_in_column)
            if column == len(last_in_column):
                last_in_column.append(clock)
        column_of[clock] = column
        last_in_column[column] = clock
    return column_of, len(last_in_column)


def _node(
    graph: _Graph,
    clock: VectorClock,
    column: int,
    packs: Mapping[VectorClock, PackRecord | None] | None,
) -> Node:
    """The box of one snapshot, or of a parent this history does not hold."""
    s = graph.by_clock.get(clock)
    label = clock_label(clock, graph.names)
    row = graph.row_of(clock)
    if s is None:
        return Node(graph.ids[clock], clock, "missing", row, column, (label, "not in this store"))
    known = packs is not None and clock in packs
    pack = packs.get(clock) if packs is not None else None
    lines, compensations = _pack_lines(s, pack, known)
    merge = len(s.parents) >= 2
    if merge:
        lines.append(f"merge of {len(s.parents)}")
    head = clock in graph.heads
    if head:
        lines.append("HEAD")
    return Node(
        graph.ids[clock],
        clock,
        "snapshot",
        row,
        column,
        (label, *lines),
        head=head,
        merge=merge,
        compensations=compensations,
    )
