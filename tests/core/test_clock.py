"""Vector clocks: lattice laws, the partial order, encoding, validation."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import clocks, counters, writers

from sourcery._core.clock import MAX_COUNTER, Order, VectorClock
from sourcery._core.errors import DecodingError

VC = VectorClock

# -- the lattice -------------------------------------------------------------------------


@given(clocks(), clocks())
def test_merge_is_commutative(a: VC, b: VC) -> None:
    assert a.merge(b) == b.merge(a)
    assert a | b == b | a


@given(clocks(), clocks(), clocks())
def test_merge_is_associative(a: VC, b: VC, c: VC) -> None:
    assert (a | b) | c == a | (b | c)


@given(clocks())
def test_merge_is_idempotent(a: VC) -> None:
    assert a | a == a
    assert a | VC.empty() == a


@given(clocks(), clocks())
def test_merge_is_pointwise_max(a: VC, b: VC) -> None:
    m = a | b
    for w in set(a) | set(b):
        assert m.get(w) == max(a.get(w), b.get(w))
    assert set(m) == set(a) | set(b)


@given(clocks(), clocks(), clocks())
def test_merge_is_the_least_upper_bound(a: VC, b: VC, c: VC) -> None:
    m = a | b
    assert a <= m
    assert b <= m
    if c >= a and c >= b:
        assert c >= m


@given(clocks(), clocks())
def test_merge_of_an_upper_bound(a: VC, b: VC) -> None:
    # The same law with the upper bound built to exist, so the implication is exercised.
    c = a | b | VC({"z": 1})
    assert c >= a and c >= b and c >= a | b and c != a | b


@given(clocks(), clocks())
def test_meet_is_pointwise_min(a: VC, b: VC) -> None:
    m = a & b
    for w in set(a) | set(b):
        assert m.get(w) == min(a.get(w), b.get(w))
    assert a.meet(b) == b.meet(a) == m


@given(clocks(), clocks(), clocks())
def test_meet_is_the_greatest_lower_bound(a: VC, b: VC, c: VC) -> None:
    m = a & b
    assert m <= a
    assert m <= b
    if c <= a and c <= b:
        assert c <= m
    lower = m.with_entry("a", max(0, m.get("a") - 1))
    assert lower <= a and lower <= b and lower <= m


@given(clocks(), clocks(), clocks())
def test_meet_is_associative_and_idempotent(a: VC, b: VC, c: VC) -> None:
    assert (a & b) & c == a & (b & c)
    assert a & a == a


@given(clocks(), clocks())
def test_absorption(a: VC, b: VC) -> None:
    assert a | (a & b) == a
    assert a & (a | b) == a


@given(st.lists(clocks(), max_size=6))
def test_merge_all_is_a_fold_of_merge(cs: list[VC]) -> None:
    expected = VC.empty()
    for c in cs:
        expected = expected | c
    assert VC.merge_all(cs) == expected
    assert VC.merge_all(iter(cs)) == expected


# -- the partial order -------------------------------------------------------------------


@given(clocks())
def test_dominance_is_reflexive(a: VC) -> None:
    assert a <= a
    assert a >= a
    assert a.dominates(a)
    assert not a < a
    assert not a > a


@given(clocks(), clocks())
def test_dominance_is_antisymmetric(a: VC, b: VC) -> None:
    if a <= b and b <= a:
        assert a == b
    else:
        assert a != b


@given(clocks(), clocks(), clocks())
def test_dominance_is_transitive(a: VC, b: VC, c: VC) -> None:
    if a <= b and b <= c:
        assert a <= c
    # Build a chain so the premise holds every time.
    lo, hi = a & b, a | b | c
    assert lo <= a <= hi
    assert lo <= hi


@given(clocks(), clocks())
def test_order_matches_pointwise_definition(a: VC, b: VC) -> None:
    ws = set(a) | set(b)
    le = all(a.get(w) <= b.get(w) for w in ws)
    assert (a <= b) == le
    assert (b >= a) == le
    assert b.dominates(a) == le
    assert (a < b) == (le and a != b)
    assert (b > a) == (le and a != b)


@given(clocks(), clocks())
def test_compare_is_consistent_with_the_order(a: VC, b: VC) -> None:
    order = a.compare(b)
    expected = {
        (True, True): Order.EQUAL,
        (True, False): Order.BEFORE,
        (False, True): Order.AFTER,
        (False, False): Order.CONCURRENT,
    }[(a <= b, b <= a)]
    assert order is expected
    assert a.concurrent_with(b) == (order is Order.CONCURRENT)
    mirrored = {
        Order.EQUAL: Order.EQUAL,
        Order.BEFORE: Order.AFTER,
        Order.AFTER: Order.BEFORE,
        Order.CONCURRENT: Order.CONCURRENT,
    }
    assert b.compare(a) is mirrored[order]


def test_compare_examples() -> None:
    a = VC({"a": 1})
    assert a.compare(VC({"a": 1})) is Order.EQUAL
    assert a.compare(VC({"a": 2})) is Order.BEFORE
    assert a.compare(VC({})) is Order.AFTER
    assert a.compare(VC({"b": 1})) is Order.CONCURRENT
    assert VC({"a": 2, "b": 1}).compare(VC({"a": 1, "b": 2})) is Order.CONCURRENT


def test_comparison_with_other_types() -> None:
    a = VC({"a": 1})
    assert a != {"a": 1}
    with pytest.raises(TypeError):
        _ = a <= {"a": 1}  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = a | {"a": 1}  # type: ignore[operator]


# -- updates -----------------------------------------------------------------------------


@given(clocks(), writers(), st.integers(min_value=-2, max_value=10))
def test_covers_matches_get(a: VC, w: str, n: int) -> None:
    assert a.covers(w, n) == (n <= a.get(w))


@given(clocks(), writers(), st.integers(min_value=0, max_value=5))
def test_increment(a: VC, w: str, by: int) -> None:
    b = a.increment(w, by)
    assert b.get(w) == a.get(w) + by
    assert b >= a
    assert b.total() == a.total() + by
    for other in set(a) - {w}:
        assert b.get(other) == a.get(other)
    assert a.increment(w).covers(w, a.get(w) + 1)
    assert not a.covers(w, a.get(w) + 1)


@given(clocks(), writers(), counters())
def test_with_entry(a: VC, w: str, n: int) -> None:
    b = a.with_entry(w, n)
    assert b.get(w) == n
    assert (w in b) == (n > 0)
    assert b.with_entry(w, a.get(w)) == a


@pytest.mark.parametrize(
    ("writer", "n"), [("", 1), ("a", -1), ("a", True), ("a", 1.0), (1, 1), ("a", MAX_COUNTER + 1)]
)
def test_with_entry_rejects_bad_values(writer: Any, n: Any) -> None:
    with pytest.raises(ValueError):
        VC().with_entry(writer, n)


@pytest.mark.parametrize("by", [-1, True, 1.0])
def test_increment_rejects_bad_steps(by: Any) -> None:
    with pytest.raises(ValueError):
        VC().increment("a", by)


# -- value semantics ---------------------------------------------------------------------


@given(st.dictionaries(writers(), counters()))
def test_zero_entries_are_dropped(d: dict[str, int]) -> None:
    a = VC(d)
    nonzero = {w: n for w, n in d.items() if n}
    assert a == VC(nonzero)
    assert hash(a) == hash(VC(nonzero))
    assert a.as_dict() == dict(sorted(nonzero.items()))
    assert len(a) == len(nonzero)
    assert a.writers() == tuple(sorted(nonzero))
    assert list(a) == sorted(nonzero)
    assert a.items() == tuple(sorted(nonzero.items()))
    assert a.total() == sum(nonzero.values())
    assert a.is_empty() == (not nonzero)
    for w in d:
        assert (w in a) == (d[w] > 0)
        assert a.get(w) == d[w]


@given(st.dictionaries(writers(), counters()))
def test_mapping_and_pairs_construct_the_same_clock(d: dict[str, int]) -> None:
    items = list(d.items())
    assert VC(d) == VC(items) == VC(reversed(items)) == VC(VC(d))


@given(clocks(), clocks())
def test_equal_iff_same_entries(a: VC, b: VC) -> None:
    assert (a == b) == (a.as_dict() == b.as_dict())
    if a == b:
        assert hash(a) == hash(b)


def test_repr() -> None:
    assert repr(VC({"b": 1, "a": 2})) == "VectorClock({'a': 2, 'b': 1})"
    assert repr(VC()) == "VectorClock({})"


def test_empty() -> None:
    assert VC.empty() == VC() == VC({}) == VC([])
    assert VC.empty().is_empty()
    assert not VC({"a": 1}).is_empty()
    assert VC.merge_all([]) == VC.empty()


def test_immutable() -> None:
    a = VC({"a": 1})
    with pytest.raises(AttributeError):
        a._d = {}
    with pytest.raises(AttributeError):
        a.x = 1
    d = a.as_dict()
    d["a"] = 5
    assert a.get("a") == 1
    source = {"a": 1}
    b = VC(source)
    source["a"] = 7
    assert b.get("a") == 1


@given(clocks())
def test_pickle_and_copy(a: VC) -> None:
    b = pickle.loads(pickle.dumps(a))
    assert b == a and hash(b) == hash(a)
    assert copy.copy(a) == a
    assert copy.deepcopy(a) == a


# -- encoding ----------------------------------------------------------------------------


@given(clocks(max_value=2**40))
def test_bytes_round_trip(a: VC) -> None:
    b = VC.from_bytes(a.to_bytes())
    assert b == a
    assert hash(b) == hash(a)
    assert b.to_bytes() == a.to_bytes()


@given(st.dictionaries(writers(), counters()), st.randoms())
def test_equal_clocks_give_equal_bytes(d: dict[str, int], rnd: Any) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    a, b = VC(d), VC(items)
    assert a.to_bytes() == b.to_bytes()
    assert hash(a) == hash(b)


@given(clocks(), clocks())
def test_different_clocks_give_different_bytes(a: VC, b: VC) -> None:
    assert (a.to_bytes() == b.to_bytes()) == (a == b)


def test_extreme_counter_round_trips() -> None:
    a = VC({"a": MAX_COUNTER})
    assert VC.from_bytes(a.to_bytes()) == a


@given(st.binary())
def test_garbage_bytes_raise_only_decoding_error(b: bytes) -> None:
    try:
        vc = VC.from_bytes(b)
    except DecodingError:
        return
    assert VC.from_bytes(vc.to_bytes()) == vc
    assert vc.to_bytes() == b  # only the canonical encoding decodes


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=3)
    | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=8,
)


@given(_msgpack_values)
def test_wrong_shapes_raise_only_decoding_error(value: object) -> None:
    b = msgspec.msgpack.encode(value)
    try:
        vc = VC.from_bytes(b)
    except DecodingError:
        return
    assert vc.to_bytes() == b


@pytest.mark.parametrize(
    "value",
    [
        [["b", 1], ["a", 1]],  # not sorted
        [["a", 1], ["a", 2]],  # duplicate writer
        [["a", 0]],  # zero entry
        [["a", -1]],
        [["", 1]],
        [["a", True]],
        [["a", 1.0]],
        [["a", 2**63]],
        [["a"]],
        [["a", 1, 2]],
        {"a": 1},
        "a",
        None,
    ],
)
def test_malformed_encodings_are_rejected(value: object) -> None:
    with pytest.raises(DecodingError):
        VC.from_bytes(msgspec.msgpack.encode(value))


@pytest.mark.parametrize("value", [b"", b"\x91", b"\x90\x90", "not bytes", None, 12])
def test_truncated_or_non_bytes_input_is_rejected(value: Any) -> None:
    with pytest.raises(DecodingError):
        VC.from_bytes(value)


# -- constructor validation --------------------------------------------------------------


@pytest.mark.parametrize(
    "entries",
    [
        {"a": -1},
        {"": 1},
        {"a": 1.0},
        {"a": "1"},
        {"a": True},
        {"a": None},
        {"a": MAX_COUNTER + 1},
        {1: 1},
        [("a", 1), ("a", 2)],
        [("a", 1, 2)],
        [("a",)],
        ["a1"],
        [None],
        "ab",
        5,
        None,
    ],
)
def test_constructor_rejects_bad_entries(entries: Any) -> None:
    with pytest.raises(DecodingError):
        VC(entries)


@given(
    st.dictionaries(
        st.text(max_size=2), st.integers(min_value=-3, max_value=3) | st.booleans(), max_size=4
    )
)
def test_constructor_accepts_exactly_valid_entries(d: dict[str, Any]) -> None:
    valid = all(
        w != "" and isinstance(n, int) and not isinstance(n, bool) and n >= 0 for w, n in d.items()
    )
    try:
        VC(d)
    except DecodingError:
        assert not valid
    else:
        assert valid
