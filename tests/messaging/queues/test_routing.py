"""Which command queue an actor's commands go to: a pure function every sender shares."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sourcery._messaging.queues.base import queue_index

keys = st.text(min_size=1, max_size=60)
counts = st.integers(min_value=1, max_value=4096)


@given(keys, counts)
def test_every_key_gets_a_queue_in_range(key: str, queues: int) -> None:
    assert 0 <= queue_index(key, queues) < queues


@given(keys, st.integers(min_value=1, max_value=512))
def test_one_more_queue_moves_a_key_only_onto_the_new_queue(key: str, queues: int) -> None:
    before, after = queue_index(key, queues), queue_index(key, queues + 1)
    assert after in (before, queues)


def test_the_queues_of_known_keys_never_change() -> None:
    # Senders and workers of different versions must agree forever: a change here would
    # split an actor's commands over two queues, run by two workers at once.
    got = [queue_index(k, 16) for k in ("account/1", "account/2", "log/a9", "order/ü", "x")]
    assert got == [3, 7, 0, 3, 7]
    assert [queue_index("account/1", n) for n in range(1, 10)] == [0, 1, 2, 3, 3, 3, 3, 3, 3]


def test_actors_spread_evenly_over_the_queues() -> None:
    spread = Counter(queue_index(f"account/{i}", 16) for i in range(16_000))
    assert sorted(spread) == list(range(16))
    assert min(spread.values()) > 850 and max(spread.values()) < 1150  # 1,000 each ± 15 %


def test_growing_from_16_to_17_queues_moves_about_one_key_in_17() -> None:
    moved = sum(
        queue_index(f"account/{i}", 16) != queue_index(f"account/{i}", 17) for i in range(17_000)
    )
    assert 800 < moved < 1200


@pytest.mark.parametrize("queues", [0, -1])
def test_no_queue_at_all_is_refused(queues: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        queue_index("account/1", queues)
