"""CacheEntry's bytes: a round trip keeps the entry, and damaged bytes are refused."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import clocks

from sourcery._caches import CacheEntry
from sourcery._caches.base import _digest, _Wire
from sourcery._core.clock import VectorClock
from sourcery._core.errors import DecodingError
from sourcery._core.records import MAX_ID_BYTES, ActorRef

# Ids as stores accept them: 1..255 UTF-8 bytes, no NUL, any other character.
ids = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1
).filter(lambda s: len(s.encode()) <= MAX_ID_BYTES)
actors: st.SearchStrategy[ActorRef] = st.builds(ActorRef, ids, ids)
latests = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def entries(draw: st.DrawFn) -> CacheEntry:
    return CacheEntry(
        actor=draw(actors),
        heads=tuple(draw(st.lists(clocks(), max_size=3))),
        clock=draw(clocks()),
        state=draw(st.binary(max_size=512)),
        latest=draw(latests),
    )


def canonical(entry: CacheEntry) -> CacheEntry:
    """The entry with its heads in the order the encoding keeps them (sorted by bytes)."""
    return CacheEntry(
        actor=entry.actor,
        heads=tuple(sorted(entry.heads, key=lambda h: h.to_bytes())),
        clock=entry.clock,
        state=entry.state,
        latest=entry.latest,
    )


@given(entries())
def test_round_trip_gives_the_same_entry(entry: CacheEntry) -> None:
    decoded = CacheEntry.from_bytes(entry.to_bytes())
    assert decoded == canonical(entry)
    assert CacheEntry.from_bytes(decoded.to_bytes()) == decoded


@given(entries())
def test_heads_order_does_not_change_the_bytes(entry: CacheEntry) -> None:
    assert entry.to_bytes() == canonical(entry).to_bytes()


@given(entries().filter(lambda e: len(e.heads) <= 1))
def test_an_entry_with_at_most_one_head_round_trips_exactly(entry: CacheEntry) -> None:
    assert CacheEntry.from_bytes(entry.to_bytes()) == entry


@given(st.binary())
def test_garbage_raises_decoding_error_only(data: bytes) -> None:
    with contextlib.suppress(DecodingError):  # anything else propagates and fails the test
        CacheEntry.from_bytes(data)


@given(entries(), st.data())
def test_a_changed_byte_is_refused_or_changes_nothing(
    entry: CacheEntry, data: st.DataObject
) -> None:
    """No changed byte yields a different entry (see the next test for "changes nothing")."""
    good = entry.to_bytes()
    at = data.draw(st.integers(0, len(good) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    bad = good[:at] + bytes([good[at] ^ flip]) + good[at + 1 :]
    try:
        decoded = CacheEntry.from_bytes(bad)
    except DecodingError:
        return
    assert decoded == canonical(entry)


def test_another_msgpack_spelling_of_the_same_value_is_the_same_entry() -> None:
    """msgpack has several spellings of some ints (uint16 0xcd, int16 0xd1 for 1000).

    The checksum covers values, not spellings, so such bytes decode to the very same
    entry; that is harmless, and is why "any changed byte is refused" is not a property.
    """
    entry = CacheEntry(
        actor=ActorRef("a", "b"), heads=(), clock=VectorClock(), latest=1000, state=b""
    )
    good = entry.to_bytes()
    at = good.rindex(bytes([0xCD, 0x03, 0xE8]))
    assert CacheEntry.from_bytes(good[:at] + b"\xd1" + good[at + 1 :]) == entry


@given(entries(), st.data())
def test_a_flipped_byte_in_the_state_is_refused_by_the_checksum(
    entry: CacheEntry, data: st.DataObject
) -> None:
    state = entry.state or b"\x00"
    entry = CacheEntry(
        actor=entry.actor, heads=entry.heads, clock=entry.clock, state=state, latest=entry.latest
    )
    good = entry.to_bytes()
    # The wire ends with the state, then ``latest``, then the 16-byte digest (18 encoded).
    end = len(good) - 18 - len(msgspec.msgpack.encode(entry.latest))
    start = end - len(state)
    assert good[start:end] == state
    at = start + data.draw(st.integers(0, len(state) - 1), label="offset in state")
    flip = data.draw(st.integers(1, 255), label="xor")
    bad = good[:at] + bytes([good[at] ^ flip]) + good[at + 1 :]
    with pytest.raises(DecodingError, match="checksum"):
        CacheEntry.from_bytes(bad)


@given(entries())
def test_truncated_bytes_are_refused(entry: CacheEntry) -> None:
    good = entry.to_bytes()
    for cut in range(len(good)):
        with pytest.raises(DecodingError):
            CacheEntry.from_bytes(good[:cut])


# Well-formed wires with a correct checksum but hostile values: what is inside is checked too.
wire_texts = st.text(max_size=300)
wire_bytes = st.binary(max_size=40)
wires = st.builds(
    _Wire,
    wire_texts,
    wire_texts,
    st.lists(wire_bytes, max_size=3),
    wire_bytes,
    wire_bytes,
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)


@given(wires)
def test_a_checksummed_wire_with_bad_values_raises_decoding_error_only(wire: _Wire) -> None:
    try:
        digest = _digest(wire)
    except OverflowError:
        digest = b"\x00" * 16  # latest beyond a signed 64-bit int: no digest can be right
    data = msgspec.msgpack.encode(msgspec.structs.replace(wire, digest=digest))
    with contextlib.suppress(DecodingError):
        CacheEntry.from_bytes(data)


def test_an_empty_actor_id_behind_a_good_checksum_is_refused() -> None:
    wire = _Wire("account", "", [], b"\x90", b"state", 0)
    data = msgspec.msgpack.encode(msgspec.structs.replace(wire, digest=_digest(wire)))
    with pytest.raises(DecodingError):
        CacheEntry.from_bytes(data)


def test_a_good_entry_decodes() -> None:
    """The refusal tests above mean something only if a good entry is accepted."""
    entry = CacheEntry(
        actor=ActorRef("account", "a"), heads=(), clock=VectorClock({"w": 2}), state=b"x"
    )
    assert CacheEntry.from_bytes(entry.to_bytes()) == entry
