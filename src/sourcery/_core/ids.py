"""K-ordered 128-bit ids in Boundary's *flake* layout.

An id is one unsigned 128-bit integer::

    | 64 bits: milliseconds since the Unix epoch | 48 bits: node | 16 bits: sequence |

so ids sort by creation time, and two generators with different nodes never produce the
same id. Within one generator ids strictly increase, even when the wall clock steps back:
the generator keeps the last millisecond it used and counts the sequence up from there;
when the sequence runs out it borrows the next millisecond.

The module-level generator behind :func:`new_id` takes a fresh random node in a child
process after ``os.fork()``, so a parent and its children never collide.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable

from sourcery._core.errors import ConfigurationError, DecodingError, EncodingError

__all__ = [
    "ID_BYTES",
    "MAX_ID",
    "MAX_NODE",
    "MAX_SEQ",
    "IdGenerator",
    "format_id",
    "id_from_bytes",
    "id_ms",
    "id_node",
    "id_seq",
    "id_to_bytes",
    "new_id",
    "parse_id",
]

ID_BYTES = 16
MAX_ID = (1 << 128) - 1
MAX_NODE = (1 << 48) - 1
MAX_SEQ = (1 << 16) - 1
_MS_SHIFT = 64
_NODE_SHIFT = 16
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

# Every live generator, so a forked child can give each one a fresh lock (and, for the
# generators that drew their node at random, a fresh node).
_generators: weakref.WeakSet[IdGenerator] = weakref.WeakSet()


def _random_node() -> int:
    return secrets.randbits(48)


class IdGenerator:
    """Generates strictly increasing flake ids for one node.

    ``node`` is the 48-bit worker id; ``None`` draws one at random (and draws again in a
    forked child). ``clock`` returns the current time in milliseconds since the epoch; it
    exists for tests, the default reads the wall clock. Thread-safe.
    """

    __slots__ = ("__weakref__", "_clock", "_last_ms", "_lock", "_node", "_random", "_seq")

    def __init__(self, node: int | None = None, clock: Callable[[], int] | None = None) -> None:
        if node is None:
            self._random = True
            node = _random_node()
        else:
            if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node <= MAX_NODE:
                raise ConfigurationError(f"node must be an int in [0, 2**48), got {node!r}")
            self._random = False
        self._node = node << _NODE_SHIFT
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ms = -1
        self._seq = 0
        _generators.add(self)

    @property
    def node(self) -> int:
        """The 48-bit node id this generator stamps into its ids."""
        return self._node >> _NODE_SHIFT

    def new(self) -> int:
        """Return a new id, greater than every id this generator returned before."""
        clock = self._clock
        with self._lock:
            ms = time.time_ns() // 1_000_000 if clock is None else clock()
            last = self._last_ms
            if ms > last:
                self._last_ms = ms
                self._seq = 0
                return (ms << 64) | self._node
            seq = self._seq + 1
            if seq > 0xFFFF:
                last += 1
                self._last_ms = last
                seq = 0
            self._seq = seq
            return (last << 64) | self._node | seq

    def advance_past(self, ms: int) -> None:
        """Make every later id carry a millisecond greater than ``ms``.

        This is the hybrid-logical-clock step: after seeing an event stamped ``ms`` (perhaps
        by a machine whose clock runs ahead), ids made here still sort after it.
        """
        with self._lock:
            if ms >= self._last_ms:
                self._last_ms = ms
                self._seq = 0xFFFF

    def new_many(self, n: int) -> list[int]:
        """Return ``n`` new ids in increasing order; faster than ``n`` calls to :meth:`new`."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"n must be a non-negative int, got {n!r}")
        if n == 0:
            return []
        clock = self._clock
        node = self._node
        with self._lock:
            ms = time.time_ns() // 1_000_000 if clock is None else clock()
            # Count in (ms, seq) space: c = ms * 2**16 + seq.
            last_c = (self._last_ms << 16) + self._seq
            c = ms << 16 if ms > self._last_ms else last_c + 1
            end = c + n
            last = end - 1
            self._last_ms = last >> 16
            self._seq = last & 0xFFFF
        out: list[int] = []
        while c < end:
            ms = c >> 16
            stop = min(end, (ms + 1) << 16)
            base = (ms << 64) | node
            out.extend(range(base + (c & 0xFFFF), base + (c & 0xFFFF) + (stop - c)))
            c = stop
        return out

    def _after_fork_in_child(self) -> None:
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()
        if self._random:
            self._node = _random_node() << _NODE_SHIFT

    def __repr__(self) -> str:
        return f"IdGenerator(node={self.node:#014x})"


_default = IdGenerator()


def _reseed_after_fork() -> None:
    for gen in list(_generators):
        gen._after_fork_in_child()


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_id() -> int:
    """Return a new id from the process-wide generator."""
    return _default.new()


def id_ms(i: int) -> int:
    """The milliseconds-since-epoch part of an id."""
    return i >> _MS_SHIFT


def id_node(i: int) -> int:
    """The 48-bit node part of an id."""
    return (i >> _NODE_SHIFT) & MAX_NODE


def id_seq(i: int) -> int:
    """The 16-bit sequence part of an id."""
    return i & MAX_SEQ


def _check_id(i: int) -> None:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= MAX_ID:
        raise EncodingError(f"an id is an int in [0, 2**128), got {i!r}")


def id_to_bytes(i: int) -> bytes:
    """16 bytes, big-endian: byte order equals numeric order."""
    _check_id(i)
    return i.to_bytes(ID_BYTES, "big")


def id_from_bytes(b: bytes | bytearray | memoryview) -> int:
    """Inverse of :func:`id_to_bytes`; raises DecodingError unless given 16 bytes."""
    if not isinstance(b, bytes | bytearray | memoryview):
        raise DecodingError(f"an id is 16 bytes, got {type(b).__name__}")
    b = bytes(b)
    if len(b) != ID_BYTES:
        raise DecodingError(f"an id is 16 bytes, got {len(b)}")
    return int.from_bytes(b, "big")


def format_id(i: int) -> str:
    """32 lowercase hex digits, zero padded: string order equals numeric order."""
    _check_id(i)
    return f"{i:032x}"


def parse_id(s: str) -> int:
    """Inverse of :func:`format_id` (hex digits of either case are accepted)."""
    if not isinstance(s, str) or len(s) != 32 or not _HEX_DIGITS.issuperset(s):
        raise DecodingError(f"an id is 32 hex digits, got {s!r}")
    return int(s, 16)
