"""Flake ids: ordering, uniqueness across threads and processes, encodings."""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import event_ids

from sourcery._core.errors import DecodingError, EncodingError
from sourcery._core.ids import (
    ID_BYTES,
    MAX_ID,
    IdGenerator,
    format_id,
    id_from_bytes,
    id_ms,
    id_node,
    id_seq,
    id_to_bytes,
    new_id,
    parse_id,
)


def assert_strictly_increasing(xs: list[int]) -> None:
    for i, (a, b) in enumerate(itertools.pairwise(xs)):
        assert a < b, f"id {i + 1} ({b:#x}) is not greater than id {i} ({a:#x})"


class ScriptedClock:
    """A clock returning the given milliseconds in turn, then the last one forever."""

    def __init__(self, values: list[int]) -> None:
        self._values: Iterator[int] = iter(values)
        self._last = values[0]

    def __call__(self) -> int:
        self._last = next(self._values, self._last)
        return self._last


# -- one generator -----------------------------------------------------------------------


def test_ids_strictly_increase() -> None:
    gen = IdGenerator()
    assert_strictly_increasing([gen.new() for _ in range(200_000)])


def test_layout() -> None:
    gen = IdGenerator(node=0xABCDEF012345, clock=lambda: 1_700_000_000_000)
    first, second = gen.new(), gen.new()
    assert (id_ms(first), id_node(first), id_seq(first)) == (
        1_700_000_000_000,
        0xABCDEF012345,
        0,
    )
    assert (id_ms(second), id_node(second), id_seq(second)) == (
        1_700_000_000_000,
        0xABCDEF012345,
        1,
    )
    assert gen.node == 0xABCDEF012345


def test_sequence_resets_when_the_clock_moves_on() -> None:
    gen = IdGenerator(node=1, clock=ScriptedClock([10, 10, 10, 11]))
    got = [gen.new() for _ in range(4)]
    assert [(id_ms(i), id_seq(i)) for i in got] == [(10, 0), (10, 1), (10, 2), (11, 0)]


def test_clock_stepping_back_keeps_ids_increasing() -> None:
    clock = ScriptedClock([1000, 1001, 1002, 500, 400, 1001, 1002, 999, 1003, 2000, 10])
    gen = IdGenerator(node=7, clock=clock)
    got = [gen.new() for _ in range(11)]
    assert_strictly_increasing(got)
    # While the clock is behind, the generator stays on the last millisecond it used.
    expected_ms = [1000, 1001, 1002, 1002, 1002, 1002, 1002, 1002, 1003, 2000, 2000]
    assert [id_ms(i) for i in got] == expected_ms


@given(st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=200))
def test_any_clock_sequence_gives_increasing_ids(readings: list[int]) -> None:
    gen = IdGenerator(node=3, clock=ScriptedClock(readings))
    assert_strictly_increasing([gen.new() for _ in readings])


def test_sequence_overflow_borrows_the_next_millisecond() -> None:
    gen = IdGenerator(node=5, clock=lambda: 42)
    got = [gen.new() for _ in range(70_000)]
    assert_strictly_increasing(got)
    assert id_ms(got[65_535]) == 42 and id_seq(got[65_535]) == 0xFFFF
    assert id_ms(got[65_536]) == 43 and id_seq(got[65_536]) == 0
    assert {id_node(i) for i in got} == {5}


@pytest.mark.parametrize("n", [0, 1, 2, 65_535, 65_536, 65_537, 200_000])
def test_new_many_continues_the_sequence(n: int) -> None:
    gen = IdGenerator(node=9, clock=ScriptedClock([100, 100, 100, 99]))
    before = gen.new()
    batch = gen.new_many(n)
    after = gen.new()
    assert len(batch) == n
    assert_strictly_increasing([before, *batch, after])
    # Nothing skipped: the batch holds exactly the next n (ms, seq) steps.
    steps = [(id_ms(i) << 16) | id_seq(i) for i in [before, *batch, after]]
    assert steps == list(range(steps[0], steps[0] + n + 2))
    assert {id_node(i) for i in batch} <= {9}


def test_new_many_with_the_wall_clock() -> None:
    gen = IdGenerator()
    got = [*gen.new_many(10), gen.new(), *gen.new_many(100_000), gen.new()]
    assert_strictly_increasing(got)


def test_new_many_rejects_negative() -> None:
    with pytest.raises(ValueError):
        IdGenerator().new_many(-1)


@pytest.mark.parametrize("node", [-1, 1 << 48, True, 1.0, "1"])
def test_bad_node_is_rejected(node: object) -> None:
    with pytest.raises(ValueError):
        IdGenerator(node=node)  # type: ignore[arg-type]


def test_random_nodes_differ() -> None:
    assert len({IdGenerator().node for _ in range(50)}) == 50


def test_new_id_is_near_now() -> None:
    before = time.time() * 1000
    i = new_id()
    after = time.time() * 1000
    # The generator may run ahead of the clock only after many ids in one millisecond.
    assert before - 2 <= id_ms(i) <= after + 1000


# -- encodings ------------------------------------------------------------------------------


@given(event_ids())
def test_bytes_round_trip(i: int) -> None:
    b = id_to_bytes(i)
    assert isinstance(b, bytes) and len(b) == ID_BYTES
    assert id_from_bytes(b) == i
    assert id_from_bytes(bytearray(b)) == i
    assert id_from_bytes(memoryview(b)) == i


@given(event_ids(), event_ids())
def test_bytes_order_is_int_order(a: int, b: int) -> None:
    assert (id_to_bytes(a) < id_to_bytes(b)) == (a < b)
    assert (id_to_bytes(a) == id_to_bytes(b)) == (a == b)


def test_bytes_order_at_the_edges() -> None:
    edges = [0, 1, 255, 256, 1 << 64, (1 << 64) - 1, MAX_ID - 1, MAX_ID]
    assert sorted(edges, key=id_to_bytes) == sorted(edges)


@pytest.mark.parametrize("size", [0, 1, 15, 17, 32])
def test_id_from_bytes_with_a_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(DecodingError):
        id_from_bytes(b"\x01" * size)


@pytest.mark.parametrize("value", ["0" * 16, 1, None, [0] * 16])
def test_id_from_bytes_of_a_non_buffer_is_refused(value: object) -> None:
    with pytest.raises(DecodingError):
        id_from_bytes(value)  # type: ignore[arg-type]


@given(event_ids())
def test_format_parse_round_trip(i: int) -> None:
    s = format_id(i)
    assert len(s) == 32 and s == s.lower()
    assert parse_id(s) == i
    assert parse_id(s.upper()) == i


@given(event_ids(), event_ids())
def test_format_order_is_int_order(a: int, b: int) -> None:
    assert (format_id(a) < format_id(b)) == (a < b)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" * 31,
        "0" * 33,
        "g" * 32,
        "0x" + "0" * 30,
        " " + "0" * 31,
        "0" * 31 + "\n",
        "-" + "0" * 31,
        "+" + "0" * 31,
        "_".join(["0" * 8] * 4)[:32],
        "\u0660" * 32,  # Arabic-Indic zeros: int(s, 16) would take them
        "\uff10" * 32,  # fullwidth zeros
    ],
)
def test_parse_id_refuses_bad_strings(text: str) -> None:
    with pytest.raises(DecodingError):
        parse_id(text)


@pytest.mark.parametrize("value", [None, b"0" * 32, 0])
def test_parse_id_refuses_non_strings(value: object) -> None:
    with pytest.raises(DecodingError):
        parse_id(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, MAX_ID + 1, -(1 << 200), 1 << 200, True, 1.0, "1"])
def test_out_of_range_ids_cannot_be_encoded(value: object) -> None:
    with pytest.raises(EncodingError):
        id_to_bytes(value)  # type: ignore[arg-type]
    with pytest.raises(EncodingError):
        format_id(value)  # type: ignore[arg-type]


# -- uniqueness across threads and processes ---------------------------------------------------


def test_ids_are_unique_across_threads_sharing_a_generator() -> None:
    gen = IdGenerator()
    per_thread = 20_000
    barrier = threading.Barrier(8)
    results: list[list[int]] = [[] for _ in range(8)]

    def work(out: list[int]) -> None:
        barrier.wait()
        for k in range(per_thread):
            out.append(gen.new())
            if k % 1000 == 0:
                out.extend(gen.new_many(10))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to provoke races
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)

    for ids in results:
        assert_strictly_increasing(ids)
    every = [i for ids in results for i in ids]
    assert len(every) == 8 * (per_thread + 10 * 20)
    assert len(set(every)) == len(every)


def _generate_in_child(queue: multiprocessing.Queue[tuple[int, list[int]]], n: int) -> None:
    ids = [new_id() for _ in range(n)]
    queue.put((id_node(ids[0]), ids))


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_ids_are_unique_across_forked_processes() -> None:
    ctx = multiprocessing.get_context("fork")
    per_child = 20_000
    # The parent uses the module-level generator before forking, so its state is inherited.
    parent_ids = [new_id() for _ in range(1000)]
    parent_node = id_node(parent_ids[-1])
    queue: multiprocessing.Queue[tuple[int, list[int]]] = ctx.Queue()
    children = [ctx.Process(target=_generate_in_child, args=(queue, per_child)) for _ in range(4)]
    for child in children:
        child.start()
    try:
        results = [queue.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    parent_ids += [new_id() for _ in range(1000)]

    nodes = [node for node, _ in results]
    assert parent_node not in nodes
    assert len(set(nodes)) == len(nodes)
    assert {id_node(i) for i in parent_ids} == {parent_node}
    for node, ids in results:
        assert len(ids) == per_child
        assert_strictly_increasing(ids)
        assert {id_node(i) for i in ids} == {node}
    every = parent_ids + [i for _, ids in results for i in ids]
    assert len(set(every)) == len(every) == 2000 + 4 * per_child
