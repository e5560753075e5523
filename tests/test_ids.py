"""Flake ids: ordering, uniqueness across threads and processes, encodings."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sourcery.ids import (
    IdGenerator,
    id_ms,
    id_node,
    id_seq,
    new_id,
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
