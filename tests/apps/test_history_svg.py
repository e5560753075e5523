"""The history picture: layout and SVG of an actor's snapshot graph, from records alone."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from sourcery._apps.history_layout import clock_label, layout, short_names
from sourcery._apps.history_svg import escape, render
from sourcery._core.clock import VectorClock
from sourcery._core.records import ActorRef, EventRecord, PackRecord, SnapshotRecord

SVG = "{http://www.w3.org/2000/svg}"
ACTOR = ActorRef("account", "alice")


def vc(**entries: int) -> VectorClock:
    return VectorClock(entries)


def snap(
    clock: VectorClock, *parents: VectorClock, actor: ActorRef = ACTOR, state: bytes = b"xyz"
) -> SnapshotRecord:
    return SnapshotRecord(actor=actor, clock=clock, parents=parents, state=state, timestamp=1)


def event(writer: str, n: int, type_: str = "Deposited", actor: ActorRef = ACTOR) -> EventRecord:
    return EventRecord(
        actor.type, actor.id, writer, n, n.to_bytes(16, "big"), n, "m", type_, 1, b"\x80"
    )


def pack(snapshot: SnapshotRecord, *events: EventRecord) -> PackRecord:
    return PackRecord(actor=snapshot.actor, clock=snapshot.clock, events=events)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode("utf-8"))


def nodes(root: ET.Element) -> dict[str, ET.Element]:
    found = {}
    for g in root.iter(f"{SVG}g"):
        if "node" in g.get("class", "").split():
            found[g.get("id", "")] = g
    return found


def classes(element: ET.Element) -> set[str]:
    return set(element.get("class", "").split())


def edges(root: ET.Element) -> list[tuple[str, str]]:
    return sorted(
        (p.get("data-from", ""), p.get("data-to", ""))
        for p in root.iter(f"{SVG}path")
        if p.get("class") == "edge"
    )


def texts(element: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in element.iter(f"{SVG}text")]


def node_by_clock(root: ET.Element, label: str) -> ET.Element:
    (found,) = [g for g in nodes(root).values() if g.get("data-clock") == label]
    return found


# A history with a partition: a common ancestor, two branches, a merge with a
# compensating event, and a new branch after the merge.
BASE = snap(vc(a=3))
LEFT = snap(vc(a=6), BASE.clock)
RIGHT1 = snap(vc(a=3, b=2), BASE.clock)
RIGHT2 = snap(vc(a=3, b=5), RIGHT1.clock)
MERGE = snap(vc(a=6, b=5, **{"merge-00ff": 1}), LEFT.clock, RIGHT2.clock)
AFTER = snap(vc(a=9, b=5, **{"merge-00ff": 1}), MERGE.clock)
HISTORY = [BASE, LEFT, RIGHT1, RIGHT2, MERGE, AFTER]
PACKS: dict[VectorClock, PackRecord | None] = {
    BASE.clock: pack(BASE, event("a", 1), event("a", 2), event("a", 3)),
    LEFT.clock: pack(LEFT, event("a", 4), event("a", 5), event("a", 6)),
    RIGHT1.clock: pack(RIGHT1, event("b", 1), event("b", 2)),
    RIGHT2.clock: None,  # the store lacks it
    MERGE.clock: pack(MERGE, event("merge-00ff", 1, "Overdrawn")),
    AFTER.clock: pack(AFTER, event("a", 7), event("a", 8), event("a", 9)),
}


def test_empty_history_is_the_root_alone() -> None:
    root = parse(render("account/nobody", []))
    assert list(nodes(root)) == ["root"]
    assert "root" in classes(nodes(root)["root"])
    assert edges(root) == []


def test_one_node_per_snapshot_plus_root_and_one_edge_per_parent_link() -> None:
    root = parse(render(str(ACTOR), HISTORY, PACKS, [AFTER.clock]))
    found = nodes(root)
    assert len(found) == len(HISTORY) + 1
    labels = {g.get("data-clock") for g in found.values()}
    assert labels == {"", "a:3", "a:6", "a:3 b:2", "a:3 b:5", "a:6 b:5 m1:1", "a:9 b:5 m1:1"}
    links = edges(root)
    assert len(links) == sum(max(1, len(s.parents)) for s in HISTORY)
    ids = {g.get("data-clock"): i for i, g in found.items()}
    assert (ids[""], ids["a:3"]) in links  # a parentless snapshot grows from the root
    assert (ids["a:6"], ids["a:6 b:5 m1:1"]) in links
    assert (ids["a:3 b:5"], ids["a:6 b:5 m1:1"]) in links


def test_heads_merges_compensations_and_missing_packs_are_marked() -> None:
    root = parse(render(str(ACTOR), HISTORY, PACKS, [AFTER.clock], loose_events=2))
    heads = [g for g in nodes(root).values() if "head" in classes(g)]
    assert [g.get("data-clock") for g in heads] == ["a:9 b:5 m1:1"]
    assert "HEAD" in texts(heads[0])
    merge = node_by_clock(root, "a:6 b:5 m1:1")
    assert {"merge", "compensating"} <= classes(merge)
    assert "1 compensating: Overdrawn" in texts(merge)
    assert "merge of 2" in texts(merge)
    assert {"merge", "compensating", "head"}.isdisjoint(classes(node_by_clock(root, "a:6")))
    assert "state 3 B, 3 events" in texts(node_by_clock(root, "a:6"))
    assert "state 3 B, pack missing" in texts(node_by_clock(root, "a:3 b:5"))
    everything = " ".join(texts(root))
    assert "6 snapshots, 1 merge, 1 head, 2 loose events" in everything
    assert "m1 = merge-00ff (compensating events of a merge)" in everything


def test_siblings_are_both_heads_side_by_side() -> None:
    plan = layout([BASE, LEFT, RIGHT1, RIGHT2])  # heads worked out: both branch tips
    by_label = {clock_label(n.clock, plan.writers) if n.clock else "": n for n in plan.nodes}
    assert {label for label, n in by_label.items() if n.head} == {"a:6", "a:3 b:5"}
    assert by_label["a:6"].column != by_label["a:3 b:5"].column
    assert by_label["a:3 b:2"].column == by_label["a:3 b:5"].column  # a branch keeps its column
    root = parse(render(str(ACTOR), [BASE, LEFT, RIGHT1, RIGHT2]))
    assert "siblings" in " ".join(texts(root))


def test_rows_follow_the_number_of_events_covered() -> None:
    plan = layout(HISTORY, PACKS)
    rows = {n.clock.total() if n.clock else 0: n.row for n in plan.nodes}
    assert [rows[t] for t in sorted(rows)] == list(range(len(rows)))
    # a:6 and a:3 b:2... do not share a total; a:6 and the merge's parents are on their rows
    by_clock = {n.clock: n for n in plan.nodes}
    for s in HISTORY:
        for p in s.parents:
            assert by_clock[p].row < by_clock[s.clock].row


def test_a_column_is_reused_once_its_branch_ended() -> None:
    again = snap(vc(a=9, b=7, **{"merge-00ff": 1}), MERGE.clock)  # a second divergence
    plan = layout([*HISTORY, again])
    assert plan.columns == 2


def test_a_missing_parent_is_drawn_as_such() -> None:
    orphan = snap(vc(a=5), vc(a=2))
    root = parse(render(str(ACTOR), [orphan]))
    found = nodes(root)
    assert len(found) == 3
    missing = node_by_clock(root, "a:2")
    assert "missing" in classes(missing)
    assert "not in this store" in texts(missing)
    assert edges(root) == [(missing.get("id", ""), node_by_clock(root, "a:5").get("id", ""))]


def test_hostile_text_is_escaped() -> None:
    hostile = ActorRef("acc<&>\"'", "<script>&amp;\"'\x01]]>")
    writer = 'w<&"\x02>'
    s1 = snap(VectorClock({writer: 1}), actor=hostile)
    s2 = snap(VectorClock({writer: 1, "merge-<&>": 1}), s1.clock, actor=hostile)
    packs = {
        s1.clock: pack(s1, event(writer, 1, "T<&>", actor=hostile)),
        s2.clock: pack(s2, event("merge-<&>", 1, 'Over"drawn<', actor=hostile)),
    }
    svg = render(str(hostile), [s1, s2], packs)
    assert "<script>" not in svg
    root = parse(svg)  # well-formed
    title = root.find(f"{SVG}title")
    assert title is not None
    expected = f"history of {hostile}".replace("\x01", "\\x01")
    assert title.text == expected
    everything = " ".join(texts(root))
    assert 'a = w<&"\\x02>' in everything
    assert "m1 = merge-<&>" in everything
    assert '1 compensating: Over"drawn<' in everything


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain", "plain"),
        ('<a href="x">&\'</a>', "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"),
        ("tab\tnew\nline", "tab\tnew\nline"),
        ("bell\x07nul\x00", "bell\\x07nul\\x00"),
        ("\ufffe", "\\xfffe"),
    ],
)
def test_escape(text: str, escaped: str) -> None:
    assert escape(text) == escaped


def test_short_names() -> None:
    clocks = [vc(zed=1), vc(zed=2, alpha=1), vc(**{"merge-1": 1, "zed": 2, "alpha": 1})]
    names = short_names(clocks)
    assert names == {"zed": "a", "alpha": "b", "merge-1": "m1"}
    assert clock_label(clocks[2], names) == "a:2 b:1 m1:1"
    assert clock_label(VectorClock(), names) == "{}"
    many = short_names([VectorClock({f"w{i:02d}": 1}) for i in range(28)])
    assert many["w25"] == "z" and many["w26"] == "aa" and many["w27"] == "ab"


def test_the_picture_does_not_depend_on_record_order() -> None:
    expected = render(str(ACTOR), HISTORY, PACKS, [AFTER.clock])
    shuffled = list(HISTORY)
    random.Random(1).shuffle(shuffled)
    assert render(str(ACTOR), shuffled, PACKS, [AFTER.clock]) == expected
