"""Vector clocks: for one actor, writer id -> highest counter covered.

An event with dot ``(w, n)`` is covered by clock ``vc`` iff ``n <= vc.get(w)``. Clocks are
immutable values; absent writers count as 0 and zero entries are never stored, so equal
clocks compare, hash and encode equal. ``<=`` is the partial order (pointwise), ``|`` the
least upper bound (pointwise max) and ``&`` the greatest lower bound (pointwise min).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn

import msgspec

from sourcery._core.errors import ConfigurationError, DecodingError

__all__ = ["MAX_COUNTER", "Order", "VectorClock"]

# Counters fit a signed 64-bit integer (a PostgreSQL bigint).
MAX_COUNTER = (1 << 63) - 1

_decoder = msgspec.msgpack.Decoder(list[tuple[str, int]])
_encode = msgspec.msgpack.encode


class Order(enum.Enum):
    """How two clocks relate: ``a.compare(b)``."""

    EQUAL = "equal"
    BEFORE = "before"  # a < b: b covers everything a does, and more
    AFTER = "after"  # a > b
    CONCURRENT = "concurrent"  # neither covers the other


def _bad(message: str) -> NoReturn:
    raise DecodingError(message)


def _valid_entry(writer: object, n: object) -> bool:
    return (
        isinstance(writer, str)
        and writer != ""
        and isinstance(n, int)
        and not isinstance(n, bool)
        and 0 <= n <= MAX_COUNTER
    )


class VectorClock:
    """An immutable, hashable vector clock. See the module docstring."""

    __slots__ = ("_d", "_hash", "_items")

    _d: dict[str, int]  # never shared, never mutated after construction
    _items: tuple[tuple[str, int], ...]  # sorted by writer, every n > 0
    _hash: int | None

    def __init__(
        self, entries: Mapping[str, int] | Iterable[tuple[str, int]] | VectorClock = ()
    ) -> None:
        if isinstance(entries, VectorClock):
            d = entries._d
        else:
            pairs: Iterable[Any]
            if isinstance(entries, Mapping):
                pairs = entries.items()
            elif isinstance(entries, str | bytes | bytearray):
                _bad(f"VectorClock entries must be a mapping or pairs, got {entries!r}")
            else:
                pairs = entries
            d = {}
            try:
                for pair in pairs:
                    if not isinstance(pair, tuple | list) or len(pair) != 2:
                        _bad(f"VectorClock entry must be a (writer, n) pair, got {pair!r}")
                    writer, n = pair
                    if not _valid_entry(writer, n):
                        _bad(
                            "VectorClock entry must be a non-empty str writer and an int "
                            f"0 <= n < 2**63, got {writer!r}: {n!r}"
                        )
                    if writer in d:
                        _bad(f"VectorClock writer {writer!r} given twice")
                    if n:
                        d[writer] = n
            except TypeError as exc:  # not iterable at all
                raise DecodingError(f"VectorClock entries not iterable: {entries!r}") from exc
        _init(self, d)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> VectorClock:
        """The clock that covers nothing."""
        return _EMPTY

    @classmethod
    def merge_all(cls, clocks: Iterable[VectorClock]) -> VectorClock:
        """The pointwise maximum of any number of clocks (empty for none)."""
        acc: dict[str, int] | None = None
        first: VectorClock | None = None
        for vc in clocks:
            if first is None:
                first = vc
                continue
            if acc is None:
                acc = dict(first._d)
            get = acc.get
            for w, n in vc._d.items():
                if n > get(w, 0):
                    acc[w] = n
        if acc is None:
            return _EMPTY if first is None else first
        return _make(acc)

    @classmethod
    def from_bytes(cls, b: bytes) -> VectorClock:
        """Decode :meth:`to_bytes` output; anything else raises :class:`DecodingError`."""
        try:
            pairs = _decoder.decode(b)
        except Exception as exc:  # msgspec errors, TypeError for non-buffers, ...
            raise DecodingError(f"malformed vector clock: {exc}") from exc
        d: dict[str, int] = {}
        prev = ""
        for writer, n in pairs:
            if writer <= prev or not 0 < n <= MAX_COUNTER:
                # Only the canonical form is accepted: one clock, one encoding.
                raise DecodingError("malformed vector clock: entries not canonical")
            d[writer] = n
            prev = writer
        vc = _new(cls)
        _set(vc, "_d", d)
        _set(vc, "_items", tuple(pairs))
        _set(vc, "_hash", None)
        return vc

    def to_bytes(self) -> bytes:
        """Canonical msgpack encoding: equal clocks give equal bytes."""
        return _encode(self._items)

    def with_entry(self, writer: str, n: int) -> VectorClock:
        """A copy with ``writer`` set to exactly ``n`` (0 removes it)."""
        if not _valid_entry(writer, n):
            raise ConfigurationError(
                f"writer must be a non-empty str and 0 <= n < 2**63, got {writer!r}: {n!r}"
            )
        if self._d.get(writer, 0) == n:
            return self
        d = dict(self._d)
        if n:
            d[writer] = n
        else:
            del d[writer]
        return _make(d)

    def increment(self, writer: str, by: int = 1) -> VectorClock:
        """A copy with ``writer``'s counter raised by ``by`` (>= 0)."""
        if isinstance(by, bool) or not isinstance(by, int) or by < 0:
            raise ConfigurationError(f"by must be a non-negative int, got {by!r}")
        return self.with_entry(writer, self._d.get(writer, 0) + by)

    # -- lattice -----------------------------------------------------------------------------

    def merge(self, other: VectorClock) -> VectorClock:
        """Pointwise maximum: the least clock that covers both."""
        a, b = self._d, other._d
        if len(b) > len(a):
            self, other, a, b = other, self, b, a
        d: dict[str, int] | None = None
        get = a.get
        for w, n in b.items():
            if n > get(w, 0):
                if d is None:
                    d = dict(a)
                d[w] = n
        return self if d is None else _make(d)

    def meet(self, other: VectorClock) -> VectorClock:
        """Pointwise minimum: the greatest clock both cover."""
        a, b = self._d, other._d
        if len(b) < len(a):
            a, b = b, a
        get = b.get
        d = {}
        for w, n in a.items():
            m = get(w, 0)
            if m:
                d[w] = n if n < m else m
        return _make(d)

    def __or__(self, other: VectorClock) -> VectorClock:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.merge(other)

    def __and__(self, other: VectorClock) -> VectorClock:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.meet(other)

    # -- order -------------------------------------------------------------------------------

    def get(self, writer: str) -> int:
        """The counter for ``writer``; 0 if absent."""
        return self._d.get(writer, 0)

    def covers(self, writer: str, n: int) -> bool:
        """Whether the event with dot ``(writer, n)`` is covered: ``n <= get(writer)``."""
        return n <= self._d.get(writer, 0)

    def dominates(self, other: VectorClock) -> bool:
        """Whether this clock covers every event ``other`` covers (``self >= other``)."""
        a, b = self._d, other._d
        if len(b) > len(a):
            return False  # b has a writer a lacks (every stored counter is > 0)
        get = a.get
        for w, n in b.items():  # noqa: SIM110 - a plain loop beats all() on small clocks
            if n > get(w, 0):
                return False
        return True

    def compare(self, other: VectorClock) -> Order:
        """EQUAL, BEFORE (self < other), AFTER (self > other) or CONCURRENT."""
        ge = self.dominates(other)
        le = other.dominates(self)
        if ge:
            return Order.EQUAL if le else Order.AFTER
        return Order.BEFORE if le else Order.CONCURRENT

    def concurrent_with(self, other: VectorClock) -> bool:
        """Neither clock covers the other."""
        return not self.dominates(other) and not other.dominates(self)

    def __le__(self, other: VectorClock) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return other.dominates(self)

    def __lt__(self, other: VectorClock) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self._items != other._items and other.dominates(self)

    def __ge__(self, other: VectorClock) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.dominates(other)

    def __gt__(self, other: VectorClock) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self._items != other._items and self.dominates(other)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self._items == other._items

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash(self._items)
            _set(self, "_hash", h)
        return h

    # -- inspection --------------------------------------------------------------------------

    def total(self) -> int:
        """The sum of all counters: how many events the clock covers."""
        return sum(self._d.values())

    def writers(self) -> tuple[str, ...]:
        """The writers with a non-zero counter, sorted."""
        return tuple(w for w, _ in self._items)

    def items(self) -> tuple[tuple[str, int], ...]:
        """``(writer, n)`` pairs, sorted by writer, every n > 0."""
        return self._items

    def as_dict(self) -> dict[str, int]:
        """A fresh dict ``writer -> n`` (sorted by writer)."""
        return dict(self._items)

    def is_empty(self) -> bool:
        return not self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return (w for w, _ in self._items)

    def __contains__(self, writer: object) -> bool:
        return writer in self._d

    def __repr__(self) -> str:
        return f"VectorClock({dict(self._items)!r})"

    # -- immutability ------------------------------------------------------------------------

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("VectorClock is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("VectorClock is immutable")

    def __reduce__(self) -> tuple[type[VectorClock], tuple[tuple[tuple[str, int], ...]]]:
        return (VectorClock, (self._items,))

    def __copy__(self) -> VectorClock:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> VectorClock:
        return self


_new = object.__new__
_set = object.__setattr__


def _init(vc: VectorClock, d: dict[str, int]) -> None:
    """Fill a new clock from ``d`` (writer -> n > 0), which the clock then owns."""
    _set(vc, "_d", d)
    _set(vc, "_items", tuple(sorted(d.items())))
    _set(vc, "_hash", None)


def _make(d: dict[str, int]) -> VectorClock:
    vc = _new(VectorClock)
    _init(vc, d)
    return vc


_EMPTY = _make({})
