"""Hypothesis strategies for Sourcery's value types."""

from __future__ import annotations

from hypothesis import strategies as st

from sourcery._core.clock import VectorClock
from sourcery._core.ids import MAX_ID

# Few writers, so that generated clocks share writers and every relation between them
# (equal, before, after, concurrent) comes up often.
WRITER_IDS = ("a", "b", "c", "d", "w-1")


def writers() -> st.SearchStrategy[str]:
    """A writer id from a small alphabet."""
    return st.sampled_from(WRITER_IDS)


def counters(max_value: int = 6) -> st.SearchStrategy[int]:
    """A counter, small so that clocks often tie."""
    return st.integers(min_value=0, max_value=max_value)


def clocks(max_value: int = 6) -> st.SearchStrategy[VectorClock]:
    """A vector clock over :func:`writers` (zero entries included on purpose)."""
    return st.dictionaries(writers(), counters(max_value)).map(VectorClock)


def event_ids() -> st.SearchStrategy[int]:
    """Any 128-bit id."""
    return st.integers(min_value=0, max_value=MAX_ID)
